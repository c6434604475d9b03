"""`leukedge predict` and `leukedge app calibrate-ood` on a tiny real release and real smears."""
from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import textwrap

import pytest

from fixtures_app import RELEASE_NAME, tiny_release  # noqa: F401  (fixture)


def run_cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "leukedge.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


def test_predict_json_scores_flags_and_reports_errors(tiny_release, smear_paths, lymph_dir, tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    lymph = sorted(lymph_dir.glob("*/*.jpg"))[3]
    smear = smear_paths["Early"][2]
    r = run_cli("predict", smear, lymph, bad, "--model", tiny_release, "--json", "--threads", 1)
    assert r.returncode == 2, r.stderr          # one input unreadable
    out = json.loads(r.stdout)
    assert [o["path"] for o in out] == [str(smear), str(lymph), str(bad)]
    for o in out:
        assert {"path", "probability", "decision", "ood", "quality", "probabilities", "error"} <= set(o)
    s, ly, b = out
    assert s["error"] is None and 0 <= s["probability"] <= 1 and s["quality"] == "ok" and s["ood"] is False
    assert s["decision"] in ("positive", "negative")
    assert ly["ood"] is True and ly["decision"] == "out-of-distribution" and ly["error"] is None
    assert ly["probability"] is None and ly["probabilities"] is None  # a score the gate hid is not handed on
    assert b["error"] and "not an image" in b["error"] and b["probability"] is None
    assert "Traceback" not in r.stderr


def test_predict_table_exit_0_when_all_scored(tiny_release, smear_paths):
    r = run_cli("predict", *smear_paths["Benign"][:2], "--model", tiny_release)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[0].split()[:3] == ["image", "prob", "decision"]


def test_bad_model_and_tampered_model_are_one_line_errors(tiny_release, smear_paths, tmp_path):
    r = run_cli("predict", smear_paths["Pre"][0], "--model", tmp_path / "nope")
    assert r.returncode == 2 and r.stderr.strip().startswith("leukedge: error:") and "Traceback" not in r.stderr
    copy = tmp_path / RELEASE_NAME
    shutil.copytree(tiny_release, copy)
    f = copy / f"{RELEASE_NAME}.int8.tflite"
    f.write_bytes(f.read_bytes()[:-1] + b"\x00")
    r = run_cli("predict", smear_paths["Pre"][0], "--model", copy, "--json")
    assert r.returncode == 2 and r.stdout == ""
    assert "does not match the model card" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_app_and_predict_path_import_no_tensorflow(tiny_release, smear_paths):
    code = textwrap.dedent(f"""
        import json, sys, os
        os.environ["KIVY_NO_ARGS"] = "1"
        from leukedge.cli import main
        rc = main(["predict", {str(smear_paths['Pre'][0])!r}, "--model", {str(tiny_release)!r}, "--json"])
        import leukedge.edge_app.app, leukedge.edge_app.controller, leukedge.edge_app.autopilot  # noqa
        heavy = ('tensorflow', 'tf_keras', 'keras', 'sklearn', 'matplotlib', 'scipy')  # not in the `app` extra
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []
    assert "ai_edge_litert" in subprocess.run(
        [sys.executable, "-c", "import sys; from leukedge.edge_app.inference import Screener; "
                               f"Screener({str(tiny_release)!r}); print(' '.join(sys.modules))"],
        capture_output=True, text=True, timeout=120).stdout


def test_calibrate_ood_cli_writes_gate_and_reports_rates(tiny_release, small_dataset, lymph_dir, tmp_path,
                                                         release_key):
    from leukedge.edge_app.inference import load_release
    from leukedge.errors import ModelError
    from leukedge.release_sign import sign_release
    from leukedge.split import SplitConfig, make_split, write_manifest

    copy = tmp_path / RELEASE_NAME
    shutil.copytree(tiny_release, copy)
    before = (copy / "ood.npz").read_bytes()
    manifest = write_manifest(make_split(small_dataset, SplitConfig(block_size=5)), tmp_path / "small.split.csv")
    ood_dir = tmp_path / "lymph"
    ood_dir.mkdir()
    for f in sorted(lymph_dir.glob("*/*.jpg"))[:12]:
        (ood_dir / f.name).symlink_to(f)
    r = run_cli("app", "calibrate-ood", copy, "--data", small_dataset, "--split", manifest,
                "--ood-data", ood_dir, "--components", 8, "--fit", "plain", "--capture-limit", 0)
    assert r.returncode == 0, r.stderr
    assert "lymph" in r.stdout and "val" in r.stdout
    report = json.loads((copy / "ood.json").read_text())
    assert report["rates"]["lymph"]["flagged"] >= 0.9
    assert report["rates"]["test"]["flagged"] <= 0.3
    assert report["fit"]["method"] == "plain" and report["image_margin"] == 1.5 and "val_views" not in report["rates"]
    assert len(report["dihedral"]["test"]) == 8 and "captures" not in report   # the views are measured either way
    assert (copy / "ood.npz").read_bytes() != before   # refitted on the new splits
    with pytest.raises(ModelError, match="signature does not match"):
        load_release(copy)            # the card changed after signing: refused until re-signed
    assert load_release(copy, allow_unsigned=True).signature_status == "unsigned"
    sign_release(copy, release_key)
    rel = load_release(copy)          # spec.ood + card hashes updated consistently
    assert rel.signature_status == "verified"
    assert rel.ood is not None and rel.spec.ood.stats_file == "ood.npz" and "ood.npz" in rel.verified
    card = json.loads((copy / "card.json").read_text())
    assert card["ood"]["rates"]["lymph"] == report["rates"]["lymph"]["flagged"]


@pytest.mark.parametrize("argv", [["predict", "--help"], ["app", "--help"], ["app", "calibrate-ood", "--help"]])
def test_help(argv):
    r = run_cli(*argv)
    assert r.returncode == 0 and "usage: leukedge" in r.stdout


def _with_failed_pruned_file(tiny_release, folder, release_key):
    """A copy of the tiny release that ships a ``pruned-int8`` file whose card records a failed
    parity comparison (agreement and heatmap gates), re-signed with the session's key. The
    committed releases ship no failed file any more, so the card is written here; what is tested
    is how predict and the app treat such a card."""
    from leukedge.fileio import sha256_file
    from leukedge.release_sign import sign_release

    shutil.copytree(tiny_release, folder)
    pruned = folder / f"{RELEASE_NAME}.pruned-int8.tflite"
    shutil.copyfile(folder / f"{RELEASE_NAME}.int8.tflite", pruned)
    card = json.loads((folder / "card.json").read_text())
    card["files"][pruned.name] = sha256_file(pruned)
    comps = card.setdefault("parity", {}).setdefault("comparisons", {})
    def gate(name, value, rule, limit):
        return {"name": name, "value": value, "rule": rule, "limit": limit,
                "passed": value >= limit if rule == ">=" else value <= limit}

    comps["int8 vs float32"] = {"passed": True, "n": 32, "agreement": 1.0, "failed": [],
                                "gates": [gate("agreement", 1.0, ">=", 0.99), gate("heatmap_correlation", 0.97, ">=", 0.9)]}
    comps["pruned-int8 vs float32"] = {"passed": False, "n": 32, "agreement": 0.94, "failed": ["agreement", "heatmap_correlation"],
                                       "gates": [gate("agreement", 0.94, ">=", 0.99), gate("heatmap_correlation", 0.71, ">=", 0.9)]}
    (folder / "card.json").write_text(json.dumps(card, indent=2))
    (folder / "card.sig").unlink(missing_ok=True)
    sign_release(folder, release_key)
    return folder


def test_a_file_that_failed_parity_is_flagged(tiny_release, smear_paths, tmp_path, release_key):
    """A release whose card records that its pruned int8 file failed parity against float32:
    choosing it warns on stderr, and every result says so; its int8 file passed and runs
    without a warning."""
    from leukedge.edge_app.inference import Screening, load_release
    from leukedge.edge_app.presenter import present

    release = _with_failed_pruned_file(tiny_release, tmp_path / RELEASE_NAME, release_key)
    card = json.loads(Path(release, "card.json").read_text())
    failed = card["parity"]["comparisons"]["pruned-int8 vs float32"]["failed"]
    smear = smear_paths["Pro"][0]
    r = run_cli("predict", smear, "--model", release, "--variant", "pruned-int8", "--json", "--threads", 1)
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if "FAILED parity" in ln]
    assert len(warn) == 1 and "pruned-int8 vs float32" in warn[0] and all(g in warn[0] for g in failed)
    (o,) = json.loads(r.stdout)
    assert o["parity"] == "fail" and o["model_variant"] == "pruned-int8"
    r = run_cli("predict", smear, "--model", release, "--json", "--threads", 1)
    (o,) = json.loads(r.stdout)
    assert r.returncode == 0 and o["parity"] == "pass" and o["model_variant"] == "int8"
    assert "FAILED parity" not in r.stderr
    rel = load_release(release, "pruned-int8")
    assert rel.parity_status == "fail" and load_release(release).parity_status == "pass"
    shown = present(Screening(path=None, decision="positive", probability=0.9, threshold=0.5, model_name="m",
                              model_sha256="0" * 64, model_variant=rel.variant, parity=rel.parity_status), rel)
    assert "FAILED parity" in shown["model"]
