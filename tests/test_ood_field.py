"""The OOD gate's field fit (issue 19): rotated/flipped smears and moderate capture conditions are
fitted, the lymphocyte crops stay flagged, and gates fitted before it load and decide as before."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import pick
from fixtures_app import RELEASE_NAME, tiny_release  # noqa: F401  (fixture)

from leukedge.capture import crop_fov
from leukedge.capture_sim import FAMILIES, apply_capture
from leukedge.edge_app.ood import DIHEDRAL, OODGate, dihedral, image_stats
from leukedge.edge_app.ood_views import FieldViews, capture_views, views_of
from leukedge.errors import ConfigError
from leukedge.imageio import load_image

COMMITTED_GATE = Path(__file__).parent / "data" / "legacy" / "densenet201-binary" / "ood.npz"  # fitted before the field fit existed


def test_views_are_seeded_and_span_orientations_and_moderate_captures(smear_paths):
    rgb = load_image(smear_paths["Pre"][0])
    cfg = FieldViews(n_views=40, seed=3)
    a, b = views_of(rgb, 5, cfg), views_of(rgb, 5, cfg)
    assert len(a) == 41 and a[0][1] == "identity" and a[0][0] is rgb
    assert all(x[1] == y[1] and np.array_equal(x[0], y[0]) for x, y in zip(a, b))      # reproducible
    assert [d for _, d in views_of(rgb, 6, cfg)] != [d for _, d in a]                    # per image
    orient = {d.split("+")[0].split(":")[1] for _, d in a[1:]}
    assert len(orient) >= 6 and orient <= set(DIHEDRAL)
    for _, d in a[1:]:
        if "+" in d:
            name, sev = d.split("+")[1].split("@")
            assert name in cfg.families and float(sev) in [float(s) for s in FAMILIES[name].moderate]
    assert sum("+" in d for _, d in a[1:]) >= 20                                         # capture_p 0.75
    assert all("+" not in d for _, d in views_of(rgb, 5, FieldViews(n_views=8, capture_p=0.0)))
    with pytest.raises(ConfigError, match="unknown capture families"):
        FieldViews(families=("sunburn",))


def test_capture_views_cover_every_family_at_its_moderate_severities(smear_paths):
    rgb = load_image(smear_paths["Early"][1])
    views = capture_views(["white_balance", "jpeg"])(rgb, 0)
    assert [d for _, d in views] == [f"white_balance@{s:g}" for s in FAMILIES["white_balance"].moderate] + \
        [f"jpeg@{s:g}" for s in FAMILIES["jpeg"].moderate]
    assert all(v.shape == rgb.shape and not np.array_equal(v, rgb) for v, _ in views)


def _field_copy(tiny_release, tmp_path, aria_dir, lymph_dir, **kw):
    from leukedge.edge_app.calibrate import calibrate_release

    copy = tmp_path / RELEASE_NAME
    shutil.copytree(tiny_release, copy)
    train = [str(f) for c in ("Benign", "Early", "Pre", "Pro") for f in pick(aria_dir, c, 20, step=19)]
    val = [str(f) for c in ("Benign", "Early", "Pre", "Pro") for f in pick(aria_dir, c, 8, step=43)]
    test = [str(f) for c in ("Benign", "Early", "Pre", "Pro") for f in pick(aria_dir, c, 3, step=71)]
    lymph = [str(f) for f in sorted(lymph_dir.glob("*/*.jpg"))[::97]]
    report = calibrate_release(copy, train, val, {"test": test, "lymph": lymph}, n_components=8, **kw)
    return copy, report


def test_field_fit_includes_the_views_and_reports_views_and_captures(tiny_release, tmp_path, aria_dir, lymph_dir):
    copy, report = _field_copy(tiny_release, tmp_path, aria_dir, lymph_dir, views=FieldViews(n_views=2),
                               capture_limit=2)
    assert report["fit"]["method"] == "field" and report["fit"]["views"]["n_views"] == 2
    assert report["rates"]["train"]["n"] == 3 * 80          # each training image and 2 views of it
    assert report["rates"]["val"]["n"] == 32 and report["rates"]["val_views"]["n"] == 3 * 32
    assert set(report["dihedral"]["test"]) == set(DIHEDRAL)
    assert all(r["n"] == 12 for r in report["dihedral"]["test"].values())
    assert report["rates"]["test"] == report["dihedral"]["test"]["identity"]
    assert set(report["captures"]["families"]) == set(FAMILIES)
    assert report["captures"]["families"]["jpeg"]["n"] == 2 * len(FAMILIES["jpeg"].moderate)
    assert report["rates"]["lymph"]["flagged"] >= 0.9
    gate = OODGate.load(copy / "ood.npz")
    assert gate.fit_method == "field" and gate.image_input == "field"
    spec = json.loads((copy / "spec.json").read_text())
    assert spec["ood"]["rule"].startswith("field fit: 80 training images, each with 2 random views")
    assert json.loads((copy / "ood.json").read_text()) == json.loads(json.dumps(report))
    assert json.loads((copy / "card.json").read_text())["ood"]["fit"] == "field"


def test_a_rotated_or_flipped_smear_gets_the_same_decision(tiny_release, tmp_path, aria_dir, lymph_dir):
    """Through the Screener (as `predict` and the app run it): every smear, in all 8 views, is
    scored; every lymphocyte crop, in all 8 views, is flagged. (The tiny gate's thresholds are the
    largest validation distances: at the 99th percentile of its 128 validation views, about 1% of
    smear views would be flagged by design, as measured on the releases.)"""
    from leukedge.edge_app.inference import Screener

    copy, _ = _field_copy(tiny_release, tmp_path, aria_dir, lymph_dir, capture_limit=0, percentile=100.0)
    screener = Screener(copy, num_threads=1, allow_unsigned=True)
    assert screener.release.ood.fit_method == "field"
    smears = [f for c in ("Benign", "Early", "Pre", "Pro") for f in pick(aria_dir, c, 2, step=83)]
    lymphs = sorted(lymph_dir.glob("*/*.jpg"))[5::211][:4]
    for path, expect in [(p, False) for p in smears] + [(p, True) for p in lymphs]:
        rgb = load_image(path)
        flags = [screener.screen_image(dihedral(rgb, k), heatmap=False).ood for k in DIHEDRAL]
        assert flags == [expect] * 8, (path.name, flags)


def test_field_image_input_measures_the_field_of_view_not_the_black_surround(smear_paths):
    rgb = load_image(smear_paths["Pro"][0])
    photo = apply_capture("eyepiece", rgb, 2, seed=1)
    gate = OODGate(np.zeros(2), np.eye(2)[:1], np.ones(1), 1.0, 1.0, image_input="field")
    field, fov = crop_fov(photo)
    assert fov is not None and field.shape[0] < photo.shape[0]
    assert np.allclose(gate.stats(photo), image_stats(field))
    assert not np.allclose(gate.stats(photo), image_stats(photo))      # the surround would darken L
    assert np.allclose(gate.stats(rgb), image_stats(rgb))              # a lab smear has no surround


def test_a_gate_fitted_before_the_field_fit_loads_and_decides_as_before(smear_paths, lymph_dir, tmp_path):
    raw = COMMITTED_GATE.read_bytes()
    with np.load(io.BytesIO(raw)) as z:
        assert "fit_method" not in z.files and "image_input" not in z.files       # really the old format
        old = {k: z[k] for k in z.files}
    gate = OODGate.load(COMMITTED_GATE)
    assert gate.fit_method == "plain" and gate.image_input == "photo"
    photo = apply_capture("eyepiece", load_image(smear_paths["Pre"][3]), 2, seed=0)
    assert np.allclose(gate.stats(photo), image_stats(photo))          # old gates measure the raw photo
    s = image_stats(photo) - old["img_mean"]
    _, _, details = gate.check(None, photo)
    assert details["image"] == pytest.approx(float(np.sqrt(s @ old["img_precision"] @ s)) / float(old["img_threshold"]))
    lymph = load_image(sorted(lymph_dir.glob("*/*.jpg"))[0])
    assert gate.check(None, lymph)[0]                                  # still flagged by its colours
    gate.save(tmp_path / "again.npz")                                  # saved again: no new keys for old readers
    with np.load(tmp_path / "again.npz") as z:
        assert set(z.files) == set(old)


def test_calibrate_ood_cli_default_is_the_field_fit(tiny_release, small_dataset, lymph_dir, tmp_path):
    """`leukedge app calibrate-ood` (the plain fit: tests/test_predict_cli.py) defaults to the field fit."""
    import subprocess
    import sys

    from leukedge.split import SplitConfig, make_split, write_manifest

    copy = tmp_path / RELEASE_NAME
    shutil.copytree(tiny_release, copy)
    manifest = write_manifest(make_split(small_dataset, SplitConfig(block_size=5)), tmp_path / "small.split.csv")
    ood_dir = tmp_path / "lymph"
    ood_dir.mkdir()
    for f in sorted(lymph_dir.glob("*/*.jpg"))[:12]:
        (ood_dir / f.name).symlink_to(f)
    base = [sys.executable, "-m", "leukedge.cli", "app", "calibrate-ood", str(copy), "--data", str(small_dataset),
            "--split", str(manifest), "--ood-data", str(ood_dir), "--components", "8", "--capture-limit", "1"]
    r = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "(field fit, reads features)" in r.stdout and "test flip_rot270" in r.stdout and "test + jpeg" in r.stdout
    report = json.loads((copy / "ood.json").read_text())
    # the tiny CNN has no residual block, so no ood_map output: the gate reads the pooled features
    assert report["fit"]["method"] == "field" and report["fit"]["feature_input"] == "features"
    assert report["image_margin"] == 1.25
    assert report["rates"]["val_views"]["n"] == 4 * report["rates"]["val"]["n"]
    assert report["rates"]["lymph"]["flagged"] > report["rates"]["test"]["flagged"] + 0.5
    assert OODGate.load(copy / "ood.npz").fit_method == "field"
    before = (copy / "ood.npz").read_bytes()
    r = subprocess.run(base + ["--feature-input", "ood_map"], capture_output=True, text=True, timeout=120)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode != 0 and "Traceback" not in r.stderr and last.startswith("leukedge: error:")
    assert "cannot read 'ood_map'" in last and (copy / "ood.npz").read_bytes() == before
    r = subprocess.run(base + ["--fit", "rotated"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "invalid choice" in r.stderr and "Traceback" not in r.stderr
    before = (copy / "ood.npz").read_bytes()
    r = subprocess.run(base + ["--view-families", "jpeg,sunburn"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown capture families ['sunburn']" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and (copy / "ood.npz").read_bytes() == before
