"""Percentile calibration: clipped int8 activation ranges (compress/ranges.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest_plugins = ["fixtures_models"]


@pytest.fixture(scope="module")
def batch(smear_paths, tiny_spec):
    from leukedge.preprocess import preprocess_file

    return np.stack([preprocess_file(p, tiny_spec.preprocess) for ps in smear_paths.values() for p in ps])


@pytest.fixture(scope="module")
def calibrated(tiny_dense_keras, tiny_spec, batch):
    from leukedge.compress.export import calibrate
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData

    return calibrate(tiny_dense_keras, tiny_spec, QuantizationConfig.for_int8(RepresentativeData(batch)))


def _scales(data: bytes) -> dict[str, float]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    return {d["name"]: d["quantization"][0] for d in interp.get_tensor_details() if d["quantization"][0]}


def _output_scales(data: bytes) -> list[float]:
    from ai_edge_litert.interpreter import Interpreter

    return [d["quantization"][0] for d in Interpreter(model_content=data).get_output_details()]


def test_ranges_only_narrow_and_skip_inputs_and_outputs(calibrated, batch):
    from leukedge.compress.ranges import activation_tensors, percentile_ranges, summary

    acts = activation_tensors(calibrated)
    names = {n for n, _, _ in acts.values()}
    assert len(acts) >= 10
    assert not any(n in ("image", "probability", "logit", "cam", "features") or n.startswith("serving_default")
                   for n in names)
    ranges = percentile_ranges(calibrated, batch[:16], 99.9)
    assert {r.name for r in ranges} == names
    for r in ranges:
        assert r.calibrated[0] <= r.clipped[0] < r.clipped[1] <= r.calibrated[1]
    s = summary(ranges, 99.9)
    assert s["min_width_kept"] < 0.9 and s["n_tensors"] == len(ranges)   # some tensor really was clipped
    # a lower percentile clips at least as much, tensor by tensor
    wider = {r.name: r.shrink for r in percentile_ranges(calibrated, batch[:16], 99.999)}
    assert all(r.shrink <= wider[r.name] + 1e-6 for r in ranges)


def test_quantizer_uses_the_clipped_ranges(calibrated, tiny_dense_keras, tiny_spec, batch, tmp_path):
    """The int8 file from the clipped model has finer steps exactly where ranges were clipped,
    and stays close to float32."""
    from leukedge.compress.export import convert, quantize_calibrated
    from leukedge.compress.quantization import QuantizationConfig
    from leukedge.compress.ranges import clip_ranges, percentile_ranges
    from leukedge.runtime import LiteRunner

    ranges = percentile_ranges(calibrated, batch[:16], 99.0)
    plain = quantize_calibrated(calibrated, tiny_spec)
    clipped = quantize_calibrated(clip_ranges(calibrated, ranges), tiny_spec)
    s_plain, s_clip = _scales(plain), _scales(clipped)
    most = min(ranges, key=lambda r: r.shrink)
    assert most.shrink < 0.5
    assert s_clip[most.name] == pytest.approx(s_plain[most.name] * most.shrink, rel=0.05)
    assert _output_scales(clipped) == pytest.approx(_output_scales(plain), rel=0.01)   # outputs keep theirs

    (tmp_path / "f.tflite").write_bytes(convert(tiny_dense_keras, tiny_spec, QuantizationConfig.for_float32()))
    (tmp_path / "q.tflite").write_bytes(clipped)
    ref = LiteRunner(tmp_path / "f.tflite").predict(batch)["features"]
    out = LiteRunner(tmp_path / "q.tflite").predict(batch)["features"]
    assert np.sqrt(np.mean((out - ref) ** 2)) / np.sqrt(np.mean(ref ** 2)) < 0.05


def test_bad_percentile_and_foreign_ranges_are_refused(calibrated, batch):
    from leukedge.compress.ranges import Range, clip_ranges, percentile_ranges
    from leukedge.errors import ConfigError

    with pytest.raises(ConfigError, match="percentile"):
        percentile_ranges(calibrated, batch[:2], 40.0)
    with pytest.raises(ConfigError, match="name no tensor"):
        clip_ranges(calibrated, [Range("not/a/tensor", (0.0, 1.0), (0.0, 0.5))])


def test_compress_cli_clip_percentile(tiny_run, tmp_path):
    """`leukedge compress --clip-percentile 99.9`: the int8 file is quantized from clipped ranges,
    what was clipped is recorded, and parity against float32 is measured as usual."""
    from leukedge.cli import main

    out = tmp_path / "tiny-clip"
    rc = main(["compress", str(tiny_run), "--out", str(out), "--clip-percentile", "99.9", "--clip-images", "16",
               "--calib", "60", "--no-selective", "--no-keras-check", "--n-boot", "100"])
    summary = json.loads((out / "compress.json").read_text())
    clip = summary["int8_range_clipping"]
    assert clip["percentile"] == 99.9 and clip["n_tensors"] > 5 and clip["min_width_kept"] < 1.0
    assert summary["config"]["clip_percentile"] == 99.9 and "int8_clip_ranges" in summary["timings_s"]
    gates = summary["parity"]["int8 vs float32"]["gates"]
    assert gates["agreement"] >= 0.9
    assert rc == (0 if summary["passed"] else 1)


def test_compress_cli_clip_percentile_auto(tiny_run, tmp_path):
    """`--clip-percentile auto`: every candidate (min/max included) is scored on the VALIDATION
    split and the chosen one is the best of them by the documented order."""
    from leukedge.cli import main
    from leukedge.compress.ranges import AUTO_CANDIDATES

    out = tmp_path / "tiny-auto"
    main(["compress", str(tiny_run), "--out", str(out), "--clip-percentile", "auto", "--clip-images", "8",
          "--calib", "60", "--no-selective", "--no-keras-check", "--n-boot", "100"])
    search = json.loads((out / "compress.json").read_text())["int8_range_clipping"]
    assert [a["percentile"] for a in search["attempts"]] == list(AUTO_CANDIDATES)
    assert search["split"] == "val" and search["chosen"] in AUTO_CANDIDATES

    def rank(a):
        return (a["passed"], -len(a["failed"]), a["gates"]["agreement"], -a["mean_abs_dp"])

    best = max(search["attempts"], key=rank)
    assert rank(next(a for a in search["attempts"] if a["percentile"] == search["chosen"])) == rank(best)
    card = json.loads((out / "card.json").read_text())["quantization"]
    assert card["activation_ranges"] == ("min/max" if search["chosen"] == 100.0 else
                                         f"clipped to the {search['chosen']}th percentile (chosen on the validation split)")


def test_failed_int8_tries_clipped_ranges_before_float_ops(tiny_run, tmp_path):
    """An int8 file that fails a gate (here an impossible one) is first remade with clipped
    ranges chosen on validation, then with ops kept in float; both are recorded; exit 1."""
    from leukedge.cli import main

    out = tmp_path / "tiny-fail"
    rc = main(["compress", str(tiny_run), "--out", str(out), "--calib", "60", "--clip-images", "8",
               "--gate", "min_agreement=1.01", "--no-keras-check", "--n-boot", "100"])
    summary = json.loads((out / "compress.json").read_text())
    clip = summary["int8_range_clipping"]
    assert "agreement" in clip["trigger"]["failed_on_test"] and len(clip["attempts"]) == 4
    assert clip.get("replaced_int8_file", False) == (clip["chosen"] < 100.0)
    assert "selective_int8" in summary and summary["passed"] is False and rc == 1


def test_compress_cli_rejects_a_bad_percentile(tiny_run, tmp_path, capsys):
    from leukedge.cli import main

    for bad in ("40", "often"):
        rc = main(["compress", str(tiny_run), "--out", str(tmp_path / "x"), "--clip-percentile", bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc != 0 and len(err) == 1 and "percentile" in err[0]
    assert not (tmp_path / "x").exists()
