"""`leukedge evaluate` on a tiny real model and real smears; Grad-CAM; the comparison table."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from leukedge import cli
from leukedge.spec import ModelSpec

KEYS = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc")


def _manifest(dataset: Path, out: Path) -> Path:
    """A real split manifest of the small dataset (grouped blocks, perceptual hashes)."""
    from leukedge.split import SplitConfig, make_split, write_manifest

    return write_manifest(make_split(dataset, SplitConfig(block_size=10, seed=1)), out)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_keras, tiny_spec, small_dataset):
    """A run folder as `leukedge train` leaves it: spec.json, best.h5, split.csv, history.csv."""
    d = tmp_path_factory.mktemp("runs") / "20260101-000000-tiny-cnn-32"
    d.mkdir()
    ModelSpec.from_dict(tiny_spec.to_dict()).save(d / "spec.json")
    tiny_keras.save(d / "best.h5")
    _manifest(small_dataset, d / "split.csv")
    (d / "history.csv").write_text("epoch,phase,loss,accuracy,auc,val_loss,val_accuracy,val_auc,lr,seconds,"
                                   "images_per_s\n1,frozen,0.6,0.7,0.7,0.55,0.75,0.8,0.001,1,10\n"
                                   "2,finetune,0.4,0.8,0.85,0.5,0.78,0.85,0.0001,1,10\n")
    return d


@pytest.fixture(scope="module")
def evaluated(run_dir, small_dataset, tmp_path_factory):
    from leukedge.evaluate import run_evaluation

    out = tmp_path_factory.mktemp("eval")
    res = run_evaluation(run_dir, small_dataset, json_out=out / "ev.json", report_dir=out / "report",
                         mask_corners=0.15, gradcam=2, n_boot=300)
    return res, out


def test_evaluate_json_has_interface_keys_and_cis(evaluated, run_dir):
    res, out = evaluated
    on_disk = json.loads((out / "ev.json").read_text())
    assert set(KEYS) <= set(on_disk["metrics"])
    n_test = sum(1 for line in (run_dir / "split.csv").read_text().splitlines()[1:] if ",test," in line)
    assert on_disk["n"] == n_test == res["n"]
    for k in KEYS:
        m = on_disk["metrics"][k]
        lo, hi = m["ci95"]
        assert lo <= m["value"] <= hi, k
    cm = np.array(on_disk["confusion_matrix"])
    assert cm.shape == (2, 2) and cm.sum() == n_test
    assert cm[1].sum() == on_disk["n_positive"]
    assert sum(on_disk["errors_by_group"].values()) == cm[0][1] + cm[1][0]
    # no operating points in the spec: chosen on the validation split at evaluation time
    assert "validation split" in on_disk["threshold_rule"]
    assert {o["name"] for o in on_disk["operating_points"]} == {"default", "youden", "0.5"}
    assert 0 <= on_disk["calibration"]["ece"] <= 1
    assert on_disk["model"]["kind"] == "run" and len(on_disk["model"]["sha256"]) == 64
    assert on_disk["data"]["split_manifest_sha256"]
    assert any("one hospital" in c for c in on_disk["caveats"])
    a = on_disk["shortcut_audit"]
    assert a["corner_mask"] == 0.15 and set(KEYS) <= set(a["delta"])
    # the delta is exactly masked minus unmasked
    for k in KEYS:
        if a["metrics"][k]["value"] is not None and on_disk["metrics"][k]["value"] is not None:
            assert a["delta"][k]["delta"] == pytest.approx(a["metrics"][k]["value"] - on_disk["metrics"][k]["value"])


def test_report_rebuilt_from_files(evaluated):
    from leukedge.evaluate import read_predictions
    from leukedge.report import build_report

    res, out = evaluated
    rep = out / "report"
    rows = read_predictions(rep / "predictions.csv")
    assert len(rows) == res["n"]
    assert {"path", "split", "class", "y_true", "probability", "probability_masked", "group"} <= set(rows[0])
    shutil.rmtree(rep / "figures")
    build_report(rep)
    for f in ("roc.png", "confusion.png", "reliability.png", "probabilities.png", "curves.png",
              "shortcut_audit.png", "gradcam_gallery.png"):
        assert (rep / "figures" / f).stat().st_size > 5000, f
    md = (rep / "evaluation.md").read_text()
    assert "Shortcut audit" in md and "Grad-CAM gallery" in md and "figures/roc.png" in md
    assert "<img" in (rep / "evaluation.html").read_text()
    z = np.load(rep / "cams.npz")
    assert z["cams"].shape[1:] == (8, 8) and (z["cams"] >= 0).all()
    assert "GradientTape" in str(z["source"])
    errs = len(z["sel_errors"])
    assert (rep / "errors.md").exists() and (errs == 0 or (rep / "figures" / "errors_1.png").exists())


def test_evaluate_all_counts_every_image_and_flags_overlap(run_dir, small_dataset):
    from leukedge.evaluate import run_evaluation

    res = run_evaluation(run_dir, small_dataset, use_all=True, n_boot=200, gradcam=0, mask_corners=0)
    assert "shortcut_audit" not in res
    assert res["n"] == 160
    assert res["class_counts"] == {"Benign": 40, "Early": 40, "Pre": 40, "Pro": 40}
    assert res["overlap_with_training"] > 0  # the training images are in the folder too
    assert any("NOT an unbiased" in c for c in res["caveats"])


def test_evaluate_all_on_a_single_class_folder(run_dir, small_dataset, tmp_path):
    from leukedge.evaluate import run_evaluation

    one = tmp_path / "new" / "Benign"
    one.mkdir(parents=True)
    for f in sorted((small_dataset / "Benign").iterdir())[:12]:
        (one / f.name).symlink_to(f.resolve())
    (one / "zz-empty.jpg").write_bytes(b"")  # unreadable: listed, not fatal
    res = run_evaluation(run_dir, one.parent, use_all=True, n_boot=200, gradcam=0, mask_corners=0,
                         report_dir=tmp_path / "rep")
    assert res["n"] == 12 and res["n_positive"] == 0
    assert list(res["unreadable"]) == [str(one / "zz-empty.jpg")]
    assert res["metrics"]["roc_auc"]["value"] is None  # undefined with one class, not a crash
    assert res["metrics"]["specificity"]["value"] is not None
    assert (tmp_path / "rep" / "evaluation.md").exists() and not (tmp_path / "rep" / "figures" / "roc.png").exists()


def test_evaluate_subtype_model(tmp_path, small_dataset, tiny_spec, run_dir):
    from fixtures_models import untrained_subtype
    from leukedge.evaluate import run_evaluation

    spec, model = untrained_subtype(tiny_spec, seed=0)
    d = tmp_path / "run"
    d.mkdir()
    spec.save(d / "spec.json")
    model.save(d / "best.h5")
    shutil.copy(run_dir / "split.csv", d / "split.csv")
    res = run_evaluation(d, small_dataset, n_boot=200, gradcam=0)
    assert "subtype_accuracy" in res["shortcut_audit"]  # the audit runs by default
    sub = res["subtype"]
    assert np.array(sub["confusion_matrix"]).sum() == res["n"]
    assert set(sub["per_class"]) == {"Benign", "Early", "Pre", "Pro"}
    assert sub["accuracy"]["ci95"][0] <= sub["accuracy"]["value"] <= sub["accuracy"]["ci95"][1]
    assert set(KEYS) <= set(res["metrics"])  # binary leukemia-vs-benign metrics derived from the softmax


def test_cli_evaluate_and_errors(run_dir, small_dataset, tmp_path, capsys):
    out = tmp_path / "cli.json"
    rc = cli.main(["evaluate", "--model", str(run_dir), "--data", str(small_dataset), "--json", str(out),
                   "--gradcam", "0", "--n-boot", "200", "--threshold", "0.5"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["threshold"] == 0.5 and "command line" in res["threshold_rule"]
    capsys.readouterr()
    cases = [
        ["evaluate", "--model", str(tmp_path / "nope"), "--data", str(small_dataset)],
        ["evaluate", "--model", str(run_dir), "--data", str(tmp_path / "missing")],
        ["evaluate", "--model", str(run_dir), "--data", str(small_dataset), "--split", str(tmp_path / "x.csv")],
    ]
    for argv in cases:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("leukedge: error:") and "\n" not in err and "Traceback" not in err
    # an unknown class folder with --all
    bad = tmp_path / "bad"
    (bad / "Monocyte").mkdir(parents=True)
    src = next((small_dataset / "Benign").iterdir())
    (bad / "Monocyte" / src.name).symlink_to(src.resolve())
    assert cli.main(["evaluate", "--model", str(run_dir), "--data", str(bad), "--all"]) == 2
    err = capsys.readouterr().err
    assert "Monocyte" in err and err.count("\n") == 1


def test_cli_missing_model_subprocess(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "leukedge.cli", "evaluate", "--model", str(tmp_path / "none"),
                        "--data", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no such model" in r.stderr


def test_gradcam_gradienttape_on_real_smear(tiny_keras, tiny_spec, smear_paths):
    from leukedge.preprocess import preprocess_file
    from leukedge.train.gradcam import GradCAM

    x = np.stack([preprocess_file(smear_paths[c][0], tiny_spec.preprocess) for c in ("Benign", "Pro")])
    cams, probs = GradCAM(tiny_keras)(x)
    assert cams.shape == (2, 8, 8) == (2, *tiny_spec.head["feature_shape"][:2])
    assert (cams >= 0).all()
    assert all(np.ptp(c) > 0 for c in cams)
    np.testing.assert_allclose(probs, tiny_keras.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_compare_runs_table(evaluated, tmp_path, run_dir):
    from leukedge.compare import compare_runs

    res, out = evaluated
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        shutil.copy(out / "report" / "predictions.csv", d / "predictions.csv")
        shutil.copy(run_dir / "spec.json", d / "spec.json")
    shutil.copy(run_dir / "split.csv", a / "split.csv")
    (b / "split.csv").write_text("path,class,split\n")  # a different manifest -> flagged
    cmp = compare_runs([str(a), str(b)], tmp_path / "cmp", n_boot=200)
    assert cmp["n"] == res["n"]
    assert cmp["models"][0]["flags"] == [] and "differs" in cmp["models"][1]["flags"][0]
    # the same predictions: identical metrics, zero AUC change
    assert cmp["models"][1]["vs_first"]["roc_auc_delta"]["delta"] == 0.0
    assert (tmp_path / "cmp" / "roc_all.png").stat().st_size > 5000
    assert "| ROC-AUC |" in (tmp_path / "cmp" / "comparison.md").read_text()
    assert cmp["models"][0]["label"].endswith("`a`") and cmp["models"][1]["label"].endswith("`b`")  # told apart
