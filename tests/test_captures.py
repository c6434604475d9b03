"""Capture families, capture normalisation, the quality gate on field photos and `bench captures`."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.color import rgb2hed

from leukedge.capture import (CaptureConfig, combine_tiles, crop_fov, detect_fov, estimate_cell_diameter,
                              prepare_field, tiles)
from leukedge.capture_sim import BENCH_ONLY, COMPOUND, FAMILIES, apply_capture, get_family, mirror_field
from leukedge.colornorm import fit_targets, lab_stats, normalize_color
from leukedge.errors import ConfigError
from leukedge.imageio import load_image
from leukedge.preprocess import PreprocessConfig, preprocess
from leukedge.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
RELEASES = ("efficientnet-lite0-binary", "efficientnet-lite0-subtype", "densenet201-binary")


@pytest.fixture(scope="module")
def smears(smear_paths):
    return [load_image(smear_paths[c][i]) for c in ("Benign", "Pre", "Pro") for i in (0, 1)]


def _sharpness(rgb):
    return cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()


# ----- families -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_is_deterministic_and_changes_the_image(name, smears):
    fam = FAMILIES[name]
    rgb = smears[2]
    for sev in fam.severities:
        a = fam.apply(rgb, sev, np.random.default_rng(7))
        b = fam.apply(rgb, sev, np.random.default_rng(7))
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[-1] == 3
        assert np.array_equal(a, b), (name, sev)
        assert a.shape != rgb.shape or not np.array_equal(a, rgb), (name, sev)


def test_random_families_depend_on_the_seed(smears):
    for name, sev in (("noise", 2), ("motion", 7), ("eyepiece", 2)):
        a, b = apply_capture(name, smears[0], sev, seed=1), apply_capture(name, smears[0], sev, seed=2)
        assert not np.array_equal(a, b), name


def test_the_stain_families_change_the_stain_and_nothing_else(smears):
    """Gains of 1 return the photo (skimage's rgb2hed -> hed2rgb does not: it clips negative
    concentrations and moved these smears by ~5-8 grey levels, docs/captures.md 15), and a gain
    scales exactly that stain's optical density."""
    from skimage.color import hed_from_rgb, rgb2hed as clipped, hed2rgb

    from leukedge.capture_sim import _hed

    rgb = smears[1]
    assert np.abs(_hed(rgb, 1.0, 1.0).astype(int) - rgb).max() <= 1
    assert np.abs(np.round(hed2rgb(clipped(rgb)) * 255) - rgb).mean() > 2     # what the old family did at 0
    od = lambda im: -np.log(np.maximum(im.astype(float) / 255, 1e-6)) @ hed_from_rgb  # noqa: E731
    keep = (rgb > 20).all(-1) & (rgb < 235).all(-1)          # no clipping at 0 / 255 either way
    h0, h1 = od(rgb)[keep], od(_hed(rgb, 1.3, 1.0))[keep]
    big = np.abs(h0[:, 0]) > 0.05
    assert abs(np.median(h1[big, 0] / h0[big, 0]) - 1.3) < 0.05
    assert np.abs(h1[:, 1:] - h0[:, 1:]).mean() < 0.02                  # eosin and DAB untouched


def test_families_change_the_image_in_the_expected_direction(smears):
    rgb = smears[1]
    ratio = lambda im: im[..., 0].astype(float).mean() / im[..., 2].astype(float).mean()  # noqa: E731
    assert ratio(apply_capture("white_balance", rgb, 0.3)) > ratio(rgb) + 0.1
    assert ratio(apply_capture("white_balance", rgb, -0.3)) < ratio(rgb) - 0.1
    assert apply_capture("exposure", rgb, 0.5).mean() < rgb.mean() - 30
    assert apply_capture("exposure", rgb, 1.5).mean() > rgb.mean() + 5
    hed = rgb2hed(rgb)[..., :2].mean((0, 1))
    strong, weak = rgb2hed(apply_capture("stain_intensity", rgb, 0.4))[..., :2].mean((0, 1)), \
        rgb2hed(apply_capture("stain_intensity", rgb, -0.4))[..., :2].mean((0, 1))
    assert (strong > hed * 1.2).all() and (weak < hed * 0.8).all()
    bal = rgb2hed(apply_capture("stain_balance", rgb, 0.4))[..., :2].mean((0, 1))
    assert bal[0] > hed[0] * 1.2 and bal[1] < hed[1] * 0.8
    errs = [np.abs(apply_capture("jpeg", rgb, q).astype(int) - rgb).mean() for q in (50, 20, 10)]
    assert 0 < errs[0] < errs[1] < errs[2]
    noise = [np.abs(apply_capture("noise", rgb, lv).astype(int) - rgb).mean() for lv in (1, 2, 3)]
    assert 0 < noise[0] < noise[1] < noise[2]
    blur = [_sharpness(apply_capture("defocus", rgb, r)) for r in (1, 2, 3, 5)]
    assert _sharpness(rgb) > blur[0] > blur[1] > blur[2] > blur[3]
    motion = [_sharpness(apply_capture("motion", rgb, n)) for n in (3, 7, 13)]
    assert _sharpness(rgb) > motion[0] > motion[1] > motion[2]
    assert np.array_equal(apply_capture("rotation", rgb, 90), np.rot90(rgb))
    assert np.array_equal(apply_capture("flip", rgb, 1), rgb[:, ::-1])
    assert np.array_equal(apply_capture("flip", rgb, 3), np.transpose(rgb, (1, 0, 2)))
    rot = apply_capture("rotation", rgb, 45)
    assert rot.shape == rgb.shape and abs(rot.mean() - rgb.mean()) < 6   # mirror padding: no empty corners


def test_magnification_makes_cells_smaller(smears):
    ratios = []
    for rgb in smears:
        d0 = estimate_cell_diameter(rgb)
        d1 = estimate_cell_diameter(apply_capture("magnification", rgb, 0.5))
        if d0 and d1:
            ratios.append(d1 / d0)
    assert len(ratios) >= 4 and 0.4 < np.median(ratios) < 0.75, ratios


def test_unknown_family_and_bad_severity_are_one_line_errors(smears):
    with pytest.raises(ConfigError, match="did you mean 'jpeg'"):
        get_family("jpg")
    with pytest.raises(ConfigError, match="flip severity"):
        apply_capture("flip", smears[0], 4)


def test_the_phone_composite_is_its_parts_in_capture_order(smears):
    """The compound ``phone`` family is exactly its drawn parts applied in order (same rng stream),
    its parts grow with the level, and it stays out of training and the OOD fit."""
    from leukedge.capture_sim import PHONE_LEVELS, phone_parts
    from leukedge.edge_app.ood_views import FIT_FAMILIES
    from leukedge.train.augment import check_captures

    rgb = smears[3]
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    out = FAMILIES["phone"].apply(rgb, 2, rng_a)
    ref = rgb
    for name, sev in phone_parts(2, rng_b):
        ref = FAMILIES[name].fn(ref, sev, rng_b)
    assert np.array_equal(out, ref)
    for level in (1, 2, 3):
        parts = dict(phone_parts(level, np.random.default_rng(level)))
        assert parts["eyepiece"] == level and parts["noise"] == level
        lo, hi = PHONE_LEVELS[level]["exposure"]
        assert lo <= parts["exposure"] <= hi and abs(parts["white_balance"]) <= PHONE_LEVELS[level]["white_balance"]
        assert ("motion" in parts) == (level == 3) and ("stain_intensity" in parts) == (level > 1)
    qual = [dict(phone_parts(lv, np.random.default_rng(k)))["jpeg"] for lv in (1, 3) for k in range(20)]
    assert min(qual[:20]) > max(qual[20:])                                  # level 3 compresses harder
    assert detect_fov(out) is not None                                     # an eyepiece photo: a circular field
    assert "phone" in COMPOUND and "phone" not in FIT_FAMILIES
    with pytest.raises(ConfigError, match="composite"):
        check_captures({"phone": 0.3})


# ----- field of view --------------------------------------------------------------------------
def test_fov_detection_finds_a_simulated_circle_within_a_few_pixels(smears):
    frame = np.full((480, 640, 3), 5, np.uint8)
    field = mirror_field(smears[0], 400, 400)
    mask = np.zeros((480, 640), np.uint8)
    cx, cy, r = 350, 230, 190
    cv2.circle(mask, (cx, cy), r, 1, -1)
    big = np.zeros_like(frame)
    big[30:430, 150:550] = field
    frame[mask == 1] = big[mask == 1]
    fov = detect_fov(frame)
    assert fov is not None
    assert abs(fov.cx - cx) < 3 and abs(fov.cy - cy) < 3 and abs(fov.radius - r) < 3
    cropped, _ = crop_fov(frame)
    side = int(0.97 * r * np.sqrt(2))   # the square keeps a 3% margin from the rim
    assert abs(cropped.shape[0] - side) <= 4 and abs(cropped.shape[1] - side) <= 4
    grey = cv2.cvtColor(cropped, cv2.COLOR_RGB2GRAY).astype(float)
    assert min(grey[0].mean(), grey[-1].mean(), grey[:, 0].mean(), grey[:, -1].mean()) > 100  # no surround left


def test_fov_on_the_eyepiece_family_and_none_on_lab_smears(smears):
    for i, rgb in enumerate(smears):
        assert detect_fov(rgb) is None
        photo = apply_capture("eyepiece", rgb, 1, seed=i)
        fov = detect_fov(photo)
        d = round(1.25 * max(rgb.shape[:2]))
        h, w = photo.shape[:2]
        assert fov is not None and abs(fov.radius - d / 2) < 3
        # level 1 puts the circle up to 3% of the frame height off-centre
        assert np.hypot(fov.cx - (w - 1) / 2, fov.cy - (h - 1) / 2) < 0.03 * h + 3


# ----- normalisation off = the old tensors ----------------------------------------------------
#: sha256 of preprocess() output from the code before capture normalisation existed (commit 507e91b)
GOLDEN = {
    "Benign/WBC-Benign-013.jpg": "f889bcc5f443e73b8d100625e730147696f617c4df5a0cab019e35e8554ced61",
    "Pre/WBC-Malignant-Pre-010.jpg": "dba5791b5ec8d69706b947cd0af1d83be6362f0c18d1de814f39750b588d6fb4",
}


def _reference(rgb, cfg):
    """The preprocessing as it was before capture normalisation, step by step."""
    s = cfg.input_size
    img = rgb if rgb.shape[:2] == (s, s) else cv2.resize(rgb, (s, s), interpolation=cv2.INTER_AREA)
    img = cv2.GaussianBlur(img, (cfg.gaussian_ksize,) * 2, cfg.gaussian_sigma)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(cfg.clahe_clip, (cfg.clahe_tiles,) * 2).apply(np.ascontiguousarray(lab[..., 0]))
    x = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).astype(np.float32) / np.float32(255.0)
    if cfg.normalize == "lite":
        x = (x * np.float32(255.0) - np.float32(127.0)) / np.float32(128.0)
    return x.astype(np.float32)


#: specs without capture steps: the DenseNet201 release and the EfficientNet-Lite0 binary spec
#: as released before 2026-12-06 (tests/data/legacy), whose tensors GOLDEN pins.
NO_CAPTURE_SPECS = {"legacy-densenet201-binary": ROOT / "tests" / "data" / "legacy" / "densenet201-binary",
                    "legacy-efficientnet-lite0-binary": ROOT / "tests" / "data" / "legacy" / "efficientnet-lite0-binary"}


@pytest.mark.parametrize("name", sorted(NO_CAPTURE_SPECS))
def test_specs_without_capture_give_byte_identical_tensors(name, aria_dir, smears):
    import hashlib

    spec = ModelSpec.load(NO_CAPTURE_SPECS[name])
    assert spec.preprocess.capture is None
    assert not any(s["step"] in ("fov_crop", "magnification", "color") for s in spec.preprocess.steps())
    off = spec.preprocess.replace(capture=CaptureConfig())
    for rgb in smears[:3] + [cv2.resize(smears[3], (300, 260))]:
        x = preprocess(rgb, spec.preprocess)
        assert x.tobytes() == preprocess(rgb, off).tobytes()
        if spec.preprocess.normalize in ("lite", "unit") and spec.preprocess.equalize == "clahe":
            assert x.tobytes() == _reference(rgb, spec.preprocess).tobytes()
    if name == "legacy-efficientnet-lite0-binary":
        for rel, sha in GOLDEN.items():
            x = preprocess(load_image(aria_dir / rel), spec.preprocess)
            assert hashlib.sha256(x.tobytes()).hexdigest() == sha, rel


@pytest.mark.parametrize("release", ["efficientnet-lite0-binary", "efficientnet-lite0-subtype"])
def test_field_releases_record_their_capture_steps(release, smears):
    """The field-capture releases crop the eyepiece field and white-balance on the plasma background
    (`color: background`, since session 15; Reinhard before: docs/captures.md 9), and say so in
    spec.json: the steps run in that order, and they change the tensor of a real smear. Since
    session 20 they also measure the red-cell size and screen photos off the training size by
    more than 30% as tiles (docs/captures.md 12)."""
    spec = ModelSpec.load(ROOT / "models" / release)
    cap = spec.preprocess.capture
    assert cap.fov_crop and cap.color == "background" and cap.color_target
    assert cap.magnification and 10 < cap.cell_diameter < 22 and cap.scale_tolerance == 0.3
    steps = [s["step"] for s in spec.preprocess.steps()]
    assert steps.index("fov_crop") < steps.index("magnification") < steps.index("color")
    assert next(s for s in spec.preprocess.steps() if s["step"] == "magnification")["estimator"] == "granulometry"
    plain = spec.preprocess.replace(capture=None)
    assert preprocess(smears[0], spec.preprocess).tobytes() != preprocess(smears[0], plain).tobytes()


def test_capture_steps_are_recorded_in_the_spec_and_read_back(smears):
    target = fit_targets(smears)
    cap = CaptureConfig(fov_crop=True, color="reinhard", color_target=target)
    spec = ModelSpec(name="x", backbone="tiny-cnn", preprocess=PreprocessConfig(input_size=64, capture=cap))
    again = ModelSpec.from_json(spec.to_json())
    assert again.preprocess.capture == cap
    steps = [s["step"] for s in again.preprocess.steps()]
    assert steps[:4] == ["decode", "fov_crop", "color", "cut"]
    photo = apply_capture("eyepiece", smears[0], 2, seed=3)
    from leukedge.preprocess import preprocess_uint8

    u = preprocess_uint8(photo, again.preprocess)
    corners = np.concatenate([u[:6, :6], u[:6, -6:], u[-6:, :6], u[-6:, -6:]]).reshape(-1, 3)
    assert u.shape == (64, 64, 3) and corners.mean() > 100   # the black surround is cropped away
    assert preprocess_uint8(photo, PreprocessConfig(input_size=64))[:4, :4].mean() < 40  # without: it is there
    with pytest.raises(ConfigError, match="color_target"):
        CaptureConfig(color="macenko")
    with pytest.raises(ConfigError, match="cell_diameter"):
        CaptureConfig(magnification=True)


def test_colour_normalisation_pulls_shifted_smears_back(smears):
    target = fit_targets(smears)
    tm = np.array(target["lab_mean"])
    for name, sev in (("white_balance", 0.3), ("exposure", 0.5), ("stain_intensity", 0.4)):
        shifted = apply_capture(name, smears[2], sev)
        before = np.abs(lab_stats(shifted)[0] - tm).sum()
        for method in ("background", "reinhard", "macenko"):
            after = np.abs(lab_stats(normalize_color(shifted, method, target))[0] - tm).sum()
            assert after < before, (name, method, before, after)


def test_magnification_rescales_and_tiles(smears):
    d = estimate_cell_diameter(smears[0])
    small = apply_capture("magnification", smears[0], 0.5)
    cap = CaptureConfig(magnification=True, cell_diameter=d)
    field, info = prepare_field(small, cap, 224)
    assert 1.4 < info["scale"] < 2.6 and field.shape[0] > 300
    ts = tiles(field, 224)
    assert len(ts) == min(3, int(np.ceil(field.shape[0] / 224))) ** 2 and all(t.shape == (224, 224, 3) for t in ts)
    assert combine_tiles([0.1, 0.9, 0.2], "max") == pytest.approx(0.9)
    assert combine_tiles([0.2, 0.4], "mean") == pytest.approx(0.3)
    assert combine_tiles([0.5, 0.5], "noisy_or") == pytest.approx(0.75)


# ----- quality gate on field photos -----------------------------------------------------------
def test_quality_gate_judges_the_field_of_view(smears):
    from leukedge.edge_app.quality import check_quality

    for i, rgb in enumerate(smears):
        q = check_quality(apply_capture("eyepiece", rgb, 1, seed=i))
        assert q.fov and q.status == "ok", q       # never "too dark" for the surround or the vignette
        dark = check_quality(apply_capture("exposure", apply_capture("eyepiece", rgb, 1, seed=i), 0.03))
        assert dark.status == "under-exposed" and dark.advice == "more light"
    rgb = smears[0]
    assert check_quality(apply_capture("exposure", rgb, 0.03)).advice == "more light"
    assert check_quality(apply_capture("exposure", rgb, 3.0)).advice == "less light"
    assert check_quality(apply_capture("defocus", rgb, 5)).advice == "focus"
    # the eyepiece disc pushed to the frame's edge
    photo = apply_capture("eyepiece", rgb, 1, seed=0)
    h, w = photo.shape[:2]
    shifted = np.full_like(photo, 6)
    shifted[:, : w - 150] = photo[:, 150:]
    q = check_quality(shifted)
    assert q.status == "off-centre" and q.advice == "centre the field", q


# ----- the benchmark CLI ----------------------------------------------------------------------
def test_bench_captures_cli_writes_the_result(tmp_path, aria_dir):
    from leukedge.cli import main

    out = tmp_path / "cap.json"
    rc = main(["-q", "bench", "captures", "--model", str(ROOT / "models" / "efficientnet-lite0-binary"),
               "--data", str(aria_dir), "--limit", "4", "--families", "flip,eyepiece",
               "--json", str(out), "--md", str(tmp_path / "cap.md"), "--plot", str(tmp_path / "cap.png")])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == "leukedge-captures v1" and doc["data"]["n_smears"] == 4
    assert {"model", "data", "families", "results", "summary"} <= set(doc)
    fams = {(r["family"], r["severity"]) for r in doc["results"]}
    assert ("none", 0) in fams and ("flip", 3) in fams and ("eyepiece", 2) in fams
    for r in doc["results"]:
        assert {"correct", "retake", "flagged", "wrong", "missed", "rates", "advice", "n"} <= set(r)
        assert r["n"] == 4 and r["correct"] + r["retake"] + r["flagged"] + r["wrong"] + r["error"] == 4
        # which smears were wrong, and how many of those the capture caused (the clean photo was right)
        assert len(r["wrong_smears"]) == r["wrong"] and 0 <= r["missed_new"] <= r["wrong_new"] <= r["wrong"]
        assert r["missed_new"] <= r["missed"]
        lo, hi = r["ci"]["correct"]
        assert lo <= r["rates"]["correct"] <= hi and 0 <= lo < hi <= 1
    clean = doc["results"][0]
    assert clean["family"] == "none" and clean["wrong_new"] == 0   # nothing to compare the clean photo with
    assert doc["summary"]["moderate_missed_new"] <= doc["summary"]["moderate_missed"]
    mod = [r for r in doc["results"] if r["moderate"]]
    assert doc["summary"]["moderate_rows"] == len(mod) == 5                 # flip 1-3, eyepiece 1-2
    assert doc["summary"]["moderate_rows_90"] == sum(r["rates"]["correct"] >= 0.9 for r in mod)
    from leukedge.card import capture_sentence                              # the card's paragraph

    sentence = capture_sentence(doc)
    assert f"{doc['summary']['moderate_rows_90']} of 5 rows >= 90% correct" in sentence
    assert f"missed leukemia summed over the rows {doc['summary']['moderate_missed']}" in sentence
    assert (tmp_path / "cap.png").stat().st_size > 1000 and "| flip |" in (tmp_path / "cap.md").read_text()


def test_bench_captures_separates_the_capture_errors_from_the_model_errors(monkeypatch):
    """A smear wrong in the clean row and under a condition is the model's error; one wrong only
    under the condition is counted as caused by the capture, and the Markdown lists both."""
    from types import SimpleNamespace

    from leukedge.benchmarks import captures as cap
    from leukedge.benchmarks.captures_report import markdown

    class Release:
        folder = ROOT / "models" / "efficientnet-lite0-binary"
        name, version, variant, model_sha256 = "fake", "0", "int8", "0" * 64
        spec = SimpleNamespace(name="fake", task="binary", preprocess=SimpleNamespace(input_size=8),
                               label_of=lambda c: int(c != "Benign"))

    rows = [{"path": f"{c}/{i}.jpg", "class": c, "split": "test", "abspath": ""} for i, c in
            enumerate(["Early", "Benign", "Pre", "Pro"])]
    wrong_when = {("none", 0): {0}, ("flip", 1): {0, 1, 2}}   # smear 0: the model's; 1 and 2: the capture's

    class Screener:
        threshold, rule_out = 0.5, 0.2

        def __init__(self, *a, **k):
            self.calls = 0

        def screen_image(self, img, heatmap=False):
            i, cond = divmod(self.calls, 4)
            self.calls += 1
            cond = [("none", 0), ("flip", 1), ("flip", 2), ("flip", 3)][cond]
            positive = rows[i]["class"] != "Benign"
            wrong = i in wrong_when.get(cond, set())
            if (i, cond) == (3, ("flip", 3)):                     # a score in the grey zone: "take another field"
                return SimpleNamespace(error=None, decision="retake", borderline=True, ood_score=0.5, quality="ok",
                                       rule_in=False, probabilities=None)
            return SimpleNamespace(error=None, decision="positive" if positive != wrong else "negative",
                                   ood_score=0.5, quality="ok", rule_in=False, probabilities=None)

    # the counting only: a scripted screener (the CLI test above screens real smears with the release)
    monkeypatch.setattr(cap, "load_release", lambda *a, **k: Release())
    monkeypatch.setattr(cap, "_manifest", lambda cfg, folder: rows)
    monkeypatch.setattr(cap, "Screener", Screener)
    monkeypatch.setattr(cap, "smears", lambda rs, spec, desc: ((i, r, np.zeros((8, 8, 3), np.uint8),
                                                                r["class"] != "Benign") for i, r in enumerate(rs)))
    doc = cap.run_captures(cap.CaptureBenchConfig(model="x", data="x", families=["flip"]))
    row = {(r["family"], r["severity"]): r for r in doc["results"]}
    assert row[("none", 0)]["wrong"] == 1 and row[("none", 0)]["missed"] == 1
    f1 = row[("flip", 1)]
    assert (f1["wrong"], f1["missed"], f1["wrong_new"], f1["missed_new"]) == (3, 2, 2, 1)
    assert f1["wrong_smears"] == ["Early/0.jpg", "Benign/1.jpg", "Pre/2.jpg"]
    assert row[("flip", 2)]["wrong"] == 0 and row[("flip", 2)]["ci"]["correct"][1] == 1.0
    assert row[("flip", 3)]["retake"] == 1 and row[("flip", 3)]["advice"] == {"borderline": 1}
    assert doc["model"]["rule_out"] == 0.2
    assert (doc["summary"]["moderate_borderline"], doc["summary"]["moderate_photos"], doc["summary"]["clean_borderline"]) \
        == (1, 12, 0)
    from leukedge.card import capture_sentence

    assert "borderline, take another field\" (scores in the grey zone from 0.2 up to the threshold): 1 of the " \
           "moderate rows' 12 photos and 0 of the clean ones" in capture_sentence(doc)
    md = markdown(doc)
    assert "`Early/0.jpg`: 2 (also clean: the model's own error)" in md and "`Benign/1.jpg`: 1" in md
    assert "*borderline*: photos of good quality scoring in the grey zone (0.2 up to the threshold" in md


def test_compound_rows_are_summarised_apart_from_the_single_family_targets():
    """The ``moderate_*`` summary stays the single families' (issue 19's targets); the compound
    ``phone`` rows get their own summary, Markdown sentence and card sentence."""
    from leukedge.benchmarks.captures import summarize
    from leukedge.benchmarks.captures_report import markdown
    from leukedge.card import capture_sentence

    def row(fam, sev, moderate, correct, flagged, missed, missed_new=0, n=100):
        wrong = 100 - correct - flagged
        return {"family": fam, "severity": sev, "moderate": moderate, "n": n, "correct": correct, "retake": 0,
                "flagged": flagged, "wrong": wrong, "missed": missed, "error": 0, "wrong_new": missed_new,
                "missed_new": missed_new, "wrong_smears": [], "advice": {}, "rule_in": {}, "ood_score_median": 0.5,
                "rates": {"correct": correct / n, "retake": 0.0, "flagged": flagged / n, "wrong": wrong / n,
                          "missed": missed / n}}

    results = [row("none", 0, False, 99, 0, 1), row("jpeg", 20, True, 95, 3, 2, 1),
               row("phone", 1, True, 97, 2, 1), row("phone", 2, True, 80, 18, 2, 1), row("phone", 3, False, 30, 69, 1)]
    s = summarize(results)
    assert s["moderate_rows"] == 1 and s["moderate_min_correct"] == 0.95 and s["moderate_missed"] == 2
    assert s["moderate_photos"] == 100
    assert list(s["compound"]["phone"]) == ["1", "2", "3"]
    assert s["compound"]["phone"]["2"] == {"moderate": True, "n": 100, "correct": 0.8, "retake": 0.0,
                                           "flagged": 0.18, "wrong": 0.02, "missed": 2, "missed_new": 1,
                                           "borderline": 0}
    assert "phone" not in summarize(results[:2]).get("compound", {})
    doc = {"schema": "leukedge-captures v1", "model": {"name": "m", "variant": "int8", "threshold": 0.5},
           "data": {"n_smears": 100, "split": "val", "classes": {}}, "normalize": "none", "seed": 0,
           "results": results, "summary": s}
    assert "level 2 (moderate): 80% correct, 0% retake, 18% flagged, 2% wrong, 2 missed leukemia (1 caused by " \
           "the capture)" in markdown(doc)
    assert "1 of 1 rows >= 90% correct" in capture_sentence(doc)
    assert "Compound field photos (`phone`: several capture families in one photo, not counted in the rows " \
           "above): level 1 97.0% correct, 2.0% flagged, 1.0% wrong, 1 missed leukemia" in capture_sentence(doc)
    # a bench of the compound family alone (the releases' bench/captures-phone.json): no single-family rows
    only = dict(doc, results=[results[0]] + results[2:], families={"phone": {}},
                data={"n_smears": 100, "split": "test", "limit": 100, "classes": {}})
    only["summary"] = summarize(only["results"])
    assert only["summary"]["moderate_min_correct"] is None
    text = capture_sentence(only, "captures-phone.json")
    assert text.startswith("Capture robustness (`leukedge bench captures`, 100 test-split smears (`--limit 100`, "
                           "spread evenly over the split), the families phone): the clean photos 99.0% correct. "
                           "Per level: bench/captures-phone.md.")
    assert "level 2 (moderate)" not in text and "level 2 80.0% correct, 18.0% flagged" in text
    assert "every capture family but resolution, phone" in capture_sentence(
        dict(doc, families={f: {} for f in FAMILIES if f not in BENCH_ONLY}))


def test_bench_captures_can_make_lower_power_photos_from_neighbouring_smears(tmp_path, aria_dir):
    """--field mosaic: the magnification rows are mosaics of each smear and its split-group
    neighbours (real, different cells), and the result says so; a mirror field is the default."""
    from leukedge.cli import main

    out = {}
    for field in ("mirror", "mosaic"):
        out[field] = tmp_path / f"{field}.json"
        assert main(["-q", "bench", "captures", "--model", str(ROOT / "models" / "efficientnet-lite0-binary"),
                     "--data", str(aria_dir), "--limit", "3", "--families", "magnification", "--field", field,
                     "--json", str(out[field]), "--md", str(tmp_path / f"{field}.md")]) == 0
    docs = {k: json.loads(v.read_text()) for k, v in out.items()}
    assert docs["mirror"]["field"] == "mirror" and docs["mosaic"]["field"] == "mosaic"
    assert "mosaics of each smear" in (tmp_path / "mosaic.md").read_text()
    assert "mosaics of each smear" not in (tmp_path / "mirror.md").read_text()
    medians = {k: [r["ood_score_median"] for r in d["results"] if r["family"] == "magnification"] for k, d in docs.items()}
    assert medians["mirror"] != medians["mosaic"]                  # other photos were screened


def test_bench_captures_counts_the_blurred_photos_referred_anyway(tmp_path, aria_dir):
    """A release with rule_in: strongly blurred leukemia smears are answered (scored) and counted
    under ``rule_in`` by quality status, and the Markdown says so."""
    from leukedge.cli import main

    out = tmp_path / "cap.json"
    rc = main(["-q", "bench", "captures", "--model", str(ROOT / "models" / "efficientnet-lite0-binary"),
               "--data", str(aria_dir), "--limit", "4", "--families", "defocus", "--json", str(out),
               "--md", str(tmp_path / "cap.md")])
    assert rc == 0
    rows = {r["severity"]: r for r in json.loads(out.read_text())["results"] if r["family"] == "defocus"}
    assert sum(rows[5]["rule_in"].values()) >= 1 and set(rows[5]["rule_in"]) == {"blurry"}
    for r in rows.values():
        assert sum(r["rule_in"].values()) <= r["correct"] + r["wrong"] - r["missed"]   # only ever a "refer"
    assert "referred anyway: blurry" in (tmp_path / "cap.md").read_text()


def test_bench_captures_bad_input_is_a_one_line_error(capsys, aria_dir):
    from leukedge.cli import main

    assert main(["bench", "captures", "--model", str(ROOT / "models" / "efficientnet-lite0-binary"),
                 "--data", str(aria_dir), "--families", "jpg"]) != 0
    err = capsys.readouterr().err
    assert "unknown capture family 'jpg'" in err and "Traceback" not in err


# ----- training augmentations -------------------------------------------------------------------
def test_capture_augmentations_run_in_the_tf_data_pipeline_deterministically(smear_paths):
    from leukedge.train.augment import random_captures
    from leukedge.train.config import AugmentConfig, from_preset
    from leukedge.train.dataset import spec_for, train_pipeline

    rows = [{"abspath": str(p), "class": c, "path": p.name} for c in ("Benign", "Pre") for p in smear_paths[c][:3]]
    geometry_off = dict(rotation_degrees=0.0, rot90=False, hflip=False, vflip=False, zoom=0.0, brightness=0.0)

    def first_batch(captures, seed=3):
        cfg = from_preset("smoke", seed=seed, balance="none", augment=AugmentConfig(captures=captures, **geometry_off))
        spec = spec_for(cfg, ["Benign", "Pre"])
        x, _ = next(iter(train_pipeline(rows, spec, cfg, batch_size=6).dataset))
        return x.numpy()

    caps = {"white_balance": 1.0, "stain_intensity": 0.5, "jpeg": 1.0, "noise": 0.5}
    a, b = first_batch(caps), first_batch(caps)
    plain = first_batch({})
    assert a.shape == plain.shape == (6, 32, 32, 3)
    assert np.array_equal(a, b)                                  # same seed: same images
    assert not np.array_equal(a, plain)                          # the families changed them
    rgb = load_image(smear_paths["Pre"][0])
    out, applied = random_captures(rgb, {"white_balance": 1.0, "flip": 0.0}, np.random.default_rng(0))
    assert [n for n, _ in applied] == ["white_balance"] and not np.array_equal(out, rgb)
    with pytest.raises(ConfigError, match="probability"):
        from leukedge.train.augment import check_captures

        check_captures({"jpeg": 2.0})


def test_robust_preset_switches_the_capture_augmentations_on_and_old_presets_keep_them_off():
    from leukedge.train.config import PRESETS, ROBUST_CAPTURES, TrainConfig, from_preset

    robust = from_preset("robust").validate()
    assert robust.augment.captures == ROBUST_CAPTURES and set(ROBUST_CAPTURES) == set(FAMILIES) - set(BENCH_ONLY)
    for name in set(PRESETS) - {"robust"}:
        assert from_preset(name).augment.captures == {}
    old = TrainConfig.from_dict({"augment": {"rotation_degrees": 10.0}})   # a config.json from before
    assert old.augment.captures == {} and old.augment.rotation_degrees == 10.0
    with pytest.raises(ConfigError, match="unknown capture family"):
        from_preset("smoke", augment={"captures": {"blur": 0.5}}).validate()


def test_bench_normalizer_crops_the_field_and_refuses_unknown_names(aria_dir, smears):
    from leukedge.benchmarks.captures import CaptureBenchConfig, normalizer
    from leukedge.split import read_manifest

    rows = read_manifest(ROOT / "models" / "efficientnet-lite0-binary" / "split.csv", aria_dir)
    cfg = CaptureBenchConfig(model="unused", data=str(aria_dir), normalize="fov+reinhard", fit_n=4)
    fn = normalizer(cfg, rows, 224)
    out = fn(apply_capture("white_balance", apply_capture("eyepiece", smears[1], 1, seed=0), 0.3))
    assert detect_fov(out) is None and out.shape[0] == out.shape[1] < 300
    ratio = out[..., 0].astype(float).mean() / out[..., 2].astype(float).mean()
    ref = smears[1][..., 0].astype(float).mean() / smears[1][..., 2].astype(float).mean()
    assert abs(ratio - ref) < 0.08            # the warm cast is gone
    assert normalizer(CaptureBenchConfig(model="m", data="d"), rows, 224) is None
    with pytest.raises(ConfigError, match="--normalize"):
        normalizer(CaptureBenchConfig(model="m", data="d", normalize="grey"), rows, 224)


def test_a_large_phone_photo_is_normalised_at_bounded_size(smears):
    photo = cv2.resize(apply_capture("eyepiece", smears[0], 1, seed=0), None, fx=5, fy=5,
                       interpolation=cv2.INTER_LINEAR)           # ~2200 x 1650, like a phone camera
    field, info = prepare_field(photo, CaptureConfig(fov_crop=True), 224)
    assert info["fov"] is not None and max(field.shape[:2]) <= 4 * 224
    x = preprocess(photo, PreprocessConfig(capture=CaptureConfig(fov_crop=True)))
    assert x.shape == (224, 224, 3)
