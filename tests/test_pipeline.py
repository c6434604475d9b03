"""The README's main job, end to end on a small real dataset (smoke preset: tiny-cnn), ending in
a release folder; and the wiring of its stages."""
import json
from pathlib import Path

import pytest

from leukedge.cli import main
from leukedge.errors import ConfigError
from leukedge.pipeline import StageBar, _refuse_committed, plan
from leukedge.portable import absolute_paths
from leukedge.quiet import NOISE

ALL = {"data", "train", "evaluate", "compress", "bench", "release", "app"}


def test_plan_ends_in_a_release_from_the_trained_run(tmp_path):
    run = tmp_path / "p" / "runs" / "latest"
    run.mkdir(parents=True)
    (run / "spec.json").write_text(json.dumps({"name": "x", "backbone": "tiny-cnn", "task": "binary",
                                               "preprocess": {"input_size": 32}}))
    key = tmp_path / "k.key"
    steps = plan("D", "smoke", str(tmp_path / "p"), recipe="r.json", key=str(key), available=ALL)
    assert [s.name for s in steps] == ["check", "split", "eda", "train", "evaluate", "compress", "bench"]
    by = {s.name: s.resolve() for s in steps}
    rel = f"{tmp_path / 'p'}/release/tiny-cnn-binary"           # named after the run's spec
    assert by["compress"] == ["compress", f"{tmp_path / 'p'}/runs/latest", "--out", rel, "--data", "D",
                              "--recipe", "r.json"]
    assert by["bench"][:2] == ["bench", rel] and "--save-release" in by["bench"]
    assert "--allow-unsigned" not in by["bench"]
    key.write_text("a key")                                      # the key is there: the release is signed
    steps = plan("D", "smoke", str(tmp_path / "p"), key=str(key), available=ALL,
                 allow_unsigned=frozenset({"bench"}), release_out=str(tmp_path / "rel"))
    by = {s.name: s.resolve() for s in steps}
    assert by["sign"] == ["release", "sign", f"{tmp_path / 'rel'}/tiny-cnn-binary", "--key", str(key)]
    assert "--allow-unsigned" in by["bench"] and [s.name for s in steps][-2:] == ["bench", "sign"]
    assert "sign" not in [s.name for s in plan("D", "smoke", "o", key=str(key), available=ALL - {"release"})]
    assert [s.name for s in plan("D", "smoke", "o", available={"data"})] == ["check", "split", "eda"]


def test_the_committed_releases_are_never_overwritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError):
        _refuse_committed("models")
    _refuse_committed("runs/release")


def test_native_log_lines_are_recognised_and_python_lines_are_not():
    assert NOISE.match(b"E0000 00:00:1796527578.528935   24471 cuda_platform.cc:52] failed call to cuInit: INTERNAL")
    assert NOISE.match(b"I0000 00:00:1796527559.527443   24471 port.cc:153] oneDNN custom operations are on.")
    assert NOISE.match(b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert NOISE.match(b"fully_quantize: 1, inference_type: 6, input_inference_type: INT8, output_inference_type: INT8")
    assert NOISE.match(b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    assert not NOISE.match(b"leukedge: error: data: no such folder")
    assert not NOISE.match(b"WARNING leukedge.compress: int8 failed a gate")


def test_stage_bar_reports_the_outcome(capsys):
    bar = StageBar(2, 8, "split", ticking=False)
    bar.close("done")
    err = capsys.readouterr().err
    assert "[2/8] split" in err and "done" in err


@pytest.mark.slow
def test_pipeline_runs_every_stage_and_ends_in_a_release(small_dataset, tmp_path, capfd):
    out = tmp_path / "pipeline"
    assert main(["pipeline", "--data", str(small_dataset), "--preset", "smoke", "--out", str(out),
                 "--key", str(tmp_path / "no.key")]) == 0
    captured = capfd.readouterr()
    for f in ("data_check.json", "split.csv", "eda/eda.md", "evaluation.json"):
        assert (out / f).exists(), f
    assert (out / "runs" / "latest" / "best.h5").exists()
    ev = json.loads((out / "evaluation.json").read_text())
    for key in ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc"):
        lo, hi = ev["metrics"][key]["ci95"]
        assert lo <= ev["metrics"][key]["value"] <= hi
    rel = out / "release" / "tiny-cnn-binary"
    for f in ("spec.json", "card.json", "recipe.json", "parity.json", "tiny-cnn-binary.float32.tflite",
              "tiny-cnn-binary.int8.tflite"):
        assert (rel / f).exists(), f
    assert list((rel / "bench").glob("*.json")), "no benchmark saved into the release"
    recipe = json.loads((rel / "recipe.json").read_text())
    assert recipe["source"]["kind"] == "run" and recipe["data"]["name"] == small_dataset.name
    for f in rel.rglob("*.json"):  # the bench records too (their timed smear by file name)
        assert absolute_paths(json.loads(f.read_text())) == [], f
    assert f"open it in the app:  leukedge app --model {rel}" in captured.out
    assert "unsigned" in captured.out
    for stage in ("check", "split", "eda", "train", "evaluate", "compress", "bench"):
        assert f"] {stage}" in captured.err, stage
    assert "cuInit" not in captured.err and "absl::InitializeLog" not in captured.err and "XNNPACK" not in captured.err
    assert "INFO" not in captured.err  # stage logs go to OUT/logs and the run's train.log
    assert (out / "logs" / "compress.log").read_text().startswith("release ")
    assert not any(NOISE.match(line.encode()) for line in captured.err.splitlines())


def test_pipeline_stops_with_the_failing_steps_exit_code(tmp_path, capsys):
    import logging

    key = tmp_path / "release.key"
    key.write_text("not read: the pipeline stops before signing")   # a key is there: a sign stage is planned
    before = [list(h.filters) for h in logging.getLogger().handlers]
    assert main(["pipeline", "--data", str(tmp_path / "missing"), "--preset", "smoke", "--out", str(tmp_path / "o"),
                 "--key", str(key)]) == 2
    assert "step `check`" in capsys.readouterr().out
    # the console filter of the pipeline's stages is gone afterwards (a later command logs as usual)
    assert [list(h.filters) for h in logging.getLogger().handlers] == before


def test_a_stage_runs_under_the_noise_filter_when_stderr_is_a_log_file(tmp_path):
    """`make run > log 2>&1`: Python saw a seekable file on fd 2 before the filter put a pipe
    there; each stage's CLI must still start (it once died with 'Illegal seek')."""
    import subprocess
    import sys

    code = ("from leukedge.quiet import native_noise_filtered\n"
            "from leukedge.cli import main\n"
            "with native_noise_filtered(True):\n"
            "    rc = main(['data', 'check', 'no-such-folder'])\n"
            "print('rc', rc)\n")
    log = tmp_path / "run.log"
    with open(log, "w") as fh:
        subprocess.run([sys.executable, "-c", code], stdout=fh, stderr=fh, timeout=120, cwd=tmp_path)
    text = log.read_text()
    assert "rc 2" in text and "no such folder" in text
    assert "Illegal seek" not in text and "Traceback" not in text


def test_unsigned_warnings_before_the_sign_stage_go_to_the_stage_log_not_the_console(capsys):
    """compress and bench meet the release before the pipeline signs it: their "unsigned"
    warnings are expected there, so they land in the stage's log (stdout, redirected to
    OUT/logs/<stage>.log by the pipeline) while every other warning still reaches the console."""
    import logging

    from leukedge.pipeline import UnsignedUntilSigned

    handler = logging.StreamHandler()          # writes to the console (stderr)
    handler.addFilter(UnsignedUntilSigned())
    rc = logging.getLogger("leukedge.release_check")
    bench = logging.getLogger("leukedge.benchmarks.cli")
    other = logging.getLogger("leukedge.evaluate")
    comp = logging.getLogger("leukedge.compress.cli")
    for lg in (rc, bench, other, comp):
        lg.addHandler(handler)
        lg.propagate = False
    try:
        rc.warning("runs/x: NOT VERIFIED (unsigned release (no card.sig)); running it only because --allow-unsigned was given")
        bench.warning("runs/x: UNSIGNED (not a signed release; its numbers say so)")
        comp.warning("runs/x is not signed: predict and the app refuse it until `leukedge release sign`")
        rc.warning("runs/x: the signature does not match")   # a real problem: stays on the console
        other.warning("unsigned? no, another stage")          # another logger: stays on the console
    finally:
        for lg in (rc, bench, other, comp):
            lg.removeHandler(handler)
            lg.propagate = True
    out, err = capsys.readouterr()
    assert "NOT VERIFIED" in out and "UNSIGNED (not a signed release" in out
    assert "NOT VERIFIED" not in err and "its numbers say so" not in err
    assert "refuse it until" in out and "refuse it until" not in err
    assert "the signature does not match" in err and "another stage" in err
