"""Parity: compare() numbers and gates, the `leukedge parity` CLI, bad quantization and bad files."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest_plugins = ["fixtures_models"]  # tiny_run, tiny_release (session-scoped, built once)


def test_release_parity_numbers_present(tiny_release):
    out, summary = tiny_release
    d = json.loads((out / "parity.json").read_text())
    assert set(d["comparisons"]) == {"int8 vs float32", "pruned-int8 vs float32", "float32 vs keras"}
    for label, c in d["comparisons"].items():
        assert c["n"] == 32 and c["data"]["split"] == "test"
        for k in ("accuracy", "recall", "specificity", "roc_auc"):
            m = c["metrics"][k]
            assert m["delta"] == pytest.approx(m["candidate"] - m["reference"])
            assert m["ci95"][0] <= m["delta"] + 1e-9 and m["delta"] - 1e-9 <= m["ci95"][1]
        assert 0 <= c["agreement"] <= 1 and {"b", "c", "p_value"} <= set(c["mcnemar"])
        assert c["probability_diff"]["max_abs"] >= c["probability_diff"]["mean_abs"] >= 0
        assert {"reference_ece", "candidate_ece"} <= set(c["calibration"])
        assert c["heatmap"]["available"] and -1 <= c["heatmap"]["mean_correlation"] <= 1
        assert [g["name"] for g in c["gates"]] == ["delta_accuracy", "delta_sensitivity", "delta_roc_auc",
                                                   "agreement", "heatmap_correlation"]
        assert all(g["evaluated"] for g in c["gates"])
        assert c["passed"] == all(g["passed"] for g in c["gates"])
        assert len(c["per_image"]) == 32
    # the float32 export reproduces the Keras model and its GradientTape Grad-CAM
    fk = d["comparisons"]["float32 vs keras"]
    assert fk["passed"] and fk["probability_diff"]["max_abs"] < 1e-4 and fk["heatmap"]["mean_correlation"] > 0.999
    md = (out / "parity.md").read_text()
    assert "| delta_roc_auc |" in md and "heatmap correlation" in md
    for label in ("int8_vs_float32", "pruned-int8_vs_float32"):
        for kind in ("scatter", "deltas", "heatmap"):
            assert (out / "figures" / f"parity_{label}_{kind}.png").stat().st_size > 1000


def _bad_int8(tiny_keras, tiny_spec) -> bytes:
    """int8 calibrated on blank (constant grey) images instead of training smears."""
    from leukedge.compress.export import calibrate, quantize_calibrated
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData

    blank = np.full((20, 32, 32, 3), 0.5, np.float32)
    return quantize_calibrated(calibrate(tiny_keras, tiny_spec, QuantizationConfig.for_int8(RepresentativeData(blank))),
                               tiny_spec)


@pytest.fixture(scope="module")
def bad_model_dir(tmp_path_factory, tiny_release, tiny_keras, tiny_spec):
    out, _ = tiny_release
    d = tmp_path_factory.mktemp("bad")
    shutil.copy(out / "spec.json", d / "spec.json")
    shutil.copy(out / f"{out.name}.float32.tflite", d / "ref.float32.tflite")
    (d / "bad.int8.tflite").write_bytes(_bad_int8(tiny_keras, tiny_spec))
    return d


def test_bad_quantization_fails_a_gate_and_cli_exits_1(bad_model_dir, tiny_run, small_dataset, tmp_path, capsys):
    from leukedge.cli import main

    out_json = tmp_path / "parity.json"
    rc = main(["parity", "--reference", str(bad_model_dir / "ref.float32.tflite"),
               "--candidate", str(bad_model_dir / "bad.int8.tflite"), "--data", str(small_dataset),
               "--split", str(tiny_run / "split.csv"), "--json", str(out_json), "--report", str(tmp_path / "rep"),
               "--n-boot", "100"])
    printed = capsys.readouterr().out
    assert rc == 1
    assert "FAIL" in printed and "gate" in printed and "limit" in printed
    d = json.loads(out_json.read_text())
    (c,) = d["comparisons"].values()
    assert not c["passed"] and [g for g in c["gates"] if not g["passed"]]
    assert (tmp_path / "rep" / "parity.md").exists()


def test_same_model_passes_with_zero_deltas(tiny_release, tiny_run, small_dataset):
    from leukedge.compress.parity import Gates, ParityData, compare
    from leukedge.predictors import load_predictor
    from leukedge.split import read_manifest

    out, _ = tiny_release
    data = ParityData.from_manifest(read_manifest(tiny_run / "split.csv", small_dataset), "val")
    f = out / f"{out.name}.int8.tflite"
    res = compare(load_predictor(f), load_predictor(f), data, Gates(), n_boot=50)
    assert res.passed and res.agreement == 1.0 and res.probability_diff["max_abs"] == 0.0
    assert all(m["delta"] == 0 for m in res.metrics.values() if m["delta"] is not None)
    assert res.heatmap["mean_correlation"] == pytest.approx(1.0)
    strict = compare(load_predictor(out, variant="float32"), load_predictor(f), data,
                     Gates.parse(["min_heatmap_correlation=1.01"]), n_boot=50)
    assert not strict.passed and "heatmap_correlation" in [g.name for g in strict.failed]


def test_cli_release_folders_default_to_float32_vs_int8(tiny_release, small_dataset, capsys):
    from leukedge.cli import main

    out, _ = tiny_release
    rc = main(["parity", "--reference", str(out), "--candidate", str(out), "--data", str(small_dataset),
               "--n-boot", "50", "--gate", "delta_roc_auc=1", "--gate", "min_agreement=0"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert f"{out.name}.int8.tflite vs {out.name}.float32.tflite" in printed


def test_cli_subset_val_scores_the_validation_rows(tiny_release, small_dataset, tmp_path):
    import csv

    from leukedge.cli import main

    out, _ = tiny_release
    with open(out / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    n = {s: sum(r["split"] == s for r in rows) for s in ("val", "test")}
    for subset in ("test", "val"):
        rc = main(["parity", "--reference", str(out), "--candidate", str(out), "--data", str(small_dataset),
                   "--subset", subset, "--n-boot", "20", "--json", str(tmp_path / f"{subset}.json"),
                   "--gate", "min_agreement=0", "--gate", "max_delta_roc_auc=1", "--gate", "max_delta_accuracy=1",
                   "--gate", "max_delta_sensitivity=1", "--gate", "min_heatmap_correlation=0"])
        assert rc == 0
        res = next(iter(json.loads((tmp_path / f"{subset}.json").read_text())["comparisons"].values()))
        assert res["n"] == n[subset] and res["data"]["split"] == subset


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_tflite_is_a_one_line_error(damage, tiny_release, small_dataset, tmp_path, capsys):
    from leukedge.cli import main

    out, _ = tiny_release
    good = (out / f"{out.name}.int8.tflite").read_bytes()
    bad = {"truncate": good[: len(good) // 2], "garbage": good[:8] + bytes(range(256)) * 8, "empty": b""}[damage]
    shutil.copy(out / "spec.json", tmp_path / "spec.json")
    (tmp_path / "broken.tflite").write_bytes(bad)
    rc = main(["parity", "--reference", str(out), "--candidate", str(tmp_path / "broken.tflite"),
               "--data", str(small_dataset), "--split", str(out / "split.csv")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("leukedge: error:") and "\n" not in err and "broken.tflite" in err


def test_parity_cli_unusable_inputs_exit_2(tiny_release, small_dataset, tmp_path, capsys):
    from leukedge.cli import main

    out, _ = tiny_release
    base = ["parity", "--reference", str(out), "--candidate", str(out), "--data", str(small_dataset)]
    assert main(base + ["--gate", "max_delta_acuracy=0.1"]) == 2
    assert "did you mean 'max_delta_accuracy'" in capsys.readouterr().err
    assert main(["parity", "--reference", str(tmp_path / "none"), "--candidate", str(out)]) == 2
    f = tmp_path / "lonely.tflite"
    shutil.copy(out / f"{out.name}.int8.tflite", f)
    assert main(["parity", "--reference", str(f), "--candidate", str(out), "--data", str(small_dataset)]) == 2
    assert "spec" in capsys.readouterr().err


def test_heatmap_helpers():
    from leukedge.compress.parity import cam_correlation, heatmap_parity, top_iou

    rng = np.random.default_rng(0)
    a = rng.random((7, 7))
    assert cam_correlation(a, 3 * a) == pytest.approx(1.0)
    assert cam_correlation(a, -a) == pytest.approx(-1.0)
    assert cam_correlation(a, np.zeros((7, 7))) is None
    assert top_iou(a, a) == 1.0
    b = np.zeros((7, 7))
    b[:2, :] = 1 + np.arange(14).reshape(2, 7)   # 14 distinct cells > the top 20% (10 cells)
    c = np.zeros((7, 7))
    c[-2:, :] = 1 + np.arange(14).reshape(2, 7)
    assert top_iou(b, c) == 0.0
    summary, corr, iou = heatmap_parity(np.stack([a, b, np.zeros((7, 7))]), np.stack([a, c, np.zeros((7, 7))]))
    assert summary["n_defined"] == 2 and summary["n_both_zero"] == 1 and corr[2] is None
    # the mean's bootstrap CI brackets it, and narrows with more images
    few = heatmap_parity(np.stack([a, b, a, b]), np.stack([a, c, a, c]))[0]
    lo, hi = few["mean_correlation_ci95"]
    assert lo <= few["mean_correlation"] <= hi and lo < hi
    many = heatmap_parity(np.stack([a, b] * 50), np.stack([a, c] * 50))[0]
    assert many["mean_correlation_ci95"][1] - many["mean_correlation_ci95"][0] < hi - lo


def test_gates_parse():
    from leukedge.compress.parity import Gates
    from leukedge.errors import ConfigError

    g = Gates.parse(["max_delta_accuracy=0.02", "agreement=0.95"])
    assert g.max_delta_accuracy == 0.02 and g.min_agreement == 0.95 and g.max_delta_roc_auc == 0.005
    with pytest.raises(ConfigError):
        Gates.parse(["min_agreement"])
    with pytest.raises(ConfigError):
        Gates.parse(["min_agreement=high"])
