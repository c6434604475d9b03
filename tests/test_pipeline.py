"""The README's main job, end to end on a small real dataset (smoke preset: tiny-cnn)."""
import json

from leukedge.cli import main


def test_pipeline_runs_every_stage_and_writes_the_evaluation(small_dataset, tmp_path):
    out = tmp_path / "pipeline"
    assert main(["pipeline", "--data", str(small_dataset), "--preset", "smoke", "--out", str(out)]) == 0
    for f in ("data_check.json", "split.csv", "eda/eda.md", "evaluation.json"):
        assert (out / f).exists(), f
    assert (out / "runs" / "latest" / "best.h5").exists()
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["n"] > 0
    for key in ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc"):
        lo, hi = ev["metrics"][key]["ci95"]
        assert lo <= ev["metrics"][key]["value"] <= hi


def test_pipeline_stops_with_the_failing_steps_exit_code(tmp_path):
    assert main(["pipeline", "--data", str(tmp_path / "missing"), "--preset", "smoke", "--out", str(tmp_path / "o")]) == 2
