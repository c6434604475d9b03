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
    rc = main(["compress", str(tiny_run), "--out", str(out), "--clip-percentile", "99.9", "--set", "quantize.clip_images=16",
               "--calib", "60", "--set", "quantize.selective=false", "--set", "checks.keras_check=false", "--n-boot", "100"])
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
    main(["compress", str(tiny_run), "--out", str(out), "--clip-percentile", "auto", "--set", "quantize.clip_images=8",
          "--calib", "60", "--set", "quantize.selective=false", "--set", "checks.keras_check=false", "--n-boot", "100"])
    search = json.loads((out / "compress.json").read_text())["int8_range_clipping"]
    assert [a["percentile"] for a in search["attempts"]] == list(AUTO_CANDIDATES)
    assert search["split"] == "val" and search["chosen"] in AUTO_CANDIDATES

    def rank(a):
        return (a["passed"], -len(a["failed"]), a["gates"]["agreement"], -a["mean_abs_dp"])

    best = max(search["attempts"], key=rank)
    assert rank(next(a for a in search["attempts"] if a["percentile"] == search["chosen"])) == rank(best)
    card = json.loads((out / "card.json").read_text())["quantization"]
    assert card["activation_ranges"] == ("min/max" if search["chosen"] == 100.0 else
                                         f"clipped to the {search['chosen']}th percentile (chosen on the validation "
                                         "split)")
    assert card["gradcam_branch"].startswith("float32 on the int8 last feature map")


def test_failed_int8_tries_clipped_ranges_before_float_ops(tiny_run, tmp_path):
    """An int8 file that fails a gate (here an impossible one) is first remade with clipped
    ranges chosen on validation, then with ops kept in float; both are recorded; exit 1."""
    from leukedge.cli import main

    out = tmp_path / "tiny-fail"
    rc = main(["compress", str(tiny_run), "--out", str(out), "--calib", "60", "--set", "quantize.clip_images=8",
               "--gate", "min_agreement=1.01", "--set", "checks.keras_check=false", "--n-boot", "100"])
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


def test_gradcam_branch_keeps_its_calibrated_ranges(calibrated, batch):
    """The tensors only the Grad-CAM output depends on are found from the graph and are never
    clipped (their per-image peaks vary too much for a percentile range)."""
    from leukedge.compress.cam_branch import cam_only_tensors
    from leukedge.compress.ranges import activation_tensors, clip_ranges, percentile_ranges

    cam = cam_only_tensors(calibrated)
    assert len(cam) >= 3                       # A @ W1, the mask product, the sum over hidden units...
    acts = {n for n, _, _ in activation_tensors(calibrated).values()}
    assert acts and not (acts & cam)
    # the branch ends in the cam output and never feeds the probability
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=calibrated)
    out = {d["name"] for d in interp.get_output_details()}
    sig = interp.get_signature_runner()
    assert any(n in cam for n in out) and "probability" in sig.get_output_details()
    before = _calibrated_minmax(calibrated, cam)
    after = _calibrated_minmax(clip_ranges(calibrated, percentile_ranges(calibrated, batch[:8], 99.0)), cam)
    assert before == after and before


def _calibrated_minmax(data: bytes, names: set[str]) -> dict[str, tuple[float, float]]:
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    out = {}
    for t in model.subgraphs[0].tensors:
        name = t.name.decode() if isinstance(t.name, bytes) else t.name
        if name in names and t.quantization is not None and t.quantization.min is not None:
            out[name] = (float(t.quantization.min[0]), float(t.quantization.max[0]))
    return out


def test_calibrating_the_float32_file_matches_calibrating_keras(calibrated, tiny_dense_keras, tiny_spec, batch):
    """`calibrate_tflite` (a release's float32 file) records the same activation ranges as the
    converter's own calibration of the Keras model, so a release can be re-quantized without
    its training run."""
    from leukedge.compress.export import calibrate_tflite, convert
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData
    from leukedge.compress.ranges import activation_tensors

    f32 = convert(tiny_dense_keras, tiny_spec, QuantizationConfig.for_float32())
    again = calibrate_tflite(f32, RepresentativeData(batch))
    a = {n: (lo, hi) for n, lo, hi in activation_tensors(calibrated).values()}
    b = {n: (lo, hi) for n, lo, hi in activation_tensors(again).values()}
    assert a.keys() == b.keys() and len(a) >= 10
    for n in a:
        assert a[n] == pytest.approx(b[n], rel=1e-4, abs=1e-5), n


def test_compress_requantizes_a_release_from_its_float32_file(tiny_release, tmp_path):
    """`leukedge compress models/<name> --out ...`: the float32 file is kept byte for byte (same
    sha256), a new int8 file is calibrated from it, the training curves travel on, and parity
    is measured again; what needs the Keras model (pruning, float16) gets it rebuilt from the
    float32 file, and the float32 and int8 files stay the same bytes."""
    from leukedge.cli import main
    from leukedge.fileio import sha256_file

    src, _ = tiny_release
    name = src.name
    out = tmp_path / name
    rc = main(["compress", str(src), "--out", str(out), "--calib", "60", "--clip-percentile", "99.9",
               "--set", "quantize.clip_images=8", "--set", "quantize.selective=false", "--n-boot", "100"])
    summary = json.loads((out / "compress.json").read_text())
    f32 = f"{name}.float32.tflite"
    assert sha256_file(out / f32) == sha256_file(src / f32)
    assert summary["source_release"]["float32_sha256"] == sha256_file(src / f32)
    from ai_edge_litert.interpreter import Interpreter

    int8 = Interpreter(model_path=str(out / f"{name}.int8.tflite"))
    assert int8.get_input_details()[0]["dtype"] == np.int8
    assert (out / f"{name}.int8.tflite").stat().st_size < (out / f32).stat().st_size
    assert summary["int8_range_clipping"]["percentile"] == 99.9
    assert "int8 vs float32" in summary["parity"] and "float32 vs keras" not in summary["parity"]
    before = json.loads((src / "compress.json").read_text())["parity"]["float32 vs keras"]
    assert summary["source_release"]["float32_vs_keras"] == before      # still valid: same float32 bytes
    card = json.loads((out / "card.json").read_text())["quantization"]["rederived_from"]
    assert card["float32_sha256"] == sha256_file(src / f32) and card["float32_vs_keras"] == before
    assert (src / "history.csv").exists() == (out / "history.csv").exists()
    assert rc == (0 if summary["passed"] else 1)
    assert summary["int8_gradcam_branch"]["float_cam"] and summary["int8_gradcam_branch"]["shared_weights"]
    # without --prune the source's pruned file is kept (same bytes), with its record, and re-checked
    pruned = f"{name}.pruned-int8.tflite"
    assert sha256_file(out / pruned) == sha256_file(src / pruned) == summary["pruned_int8_from_source"]["sha256"]
    assert summary["pruning"] == json.loads((src / "compress.json").read_text())["pruning"]
    assert "pruned-int8 vs float32" in summary["parity"]
    assert json.loads((out / "card.json").read_text())["pruning"]["measured_sparsity"] == pytest.approx(0.5, abs=0.02)
    ev = json.loads((out / "evaluation.json").read_text())              # paths inside the release: relative
    assert ev["data"]["split_manifest"] == "split.csv" and ev["model"]["path"] == "." and ev["report"] == "."
    # what needs a Keras model gets it back from the float32 file; float32 and int8 unchanged
    out2 = tmp_path / "again" / name
    rc = main(["compress", str(src), "--out", str(out2), "--calib", "60", "--clip-percentile", "99.9",
               "--set", "quantize.clip_images=8", "--set", "quantize.selective=false", "--n-boot", "100", "--variants", "float32,int8,float16",
               "--prune", "0.5", "--set", "prune.epochs=1", "--set", "prune.min_weights=0"])
    again = json.loads((out2 / "compress.json").read_text())
    assert again["keras_recovered"]["sha256"] == sha256_file(src / f32)
    assert sha256_file(out2 / f32) == sha256_file(src / f32)
    assert sha256_file(out2 / f"{name}.int8.tflite") == sha256_file(out / f"{name}.int8.tflite")
    assert again["pruning"]["overall_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert (out2 / f"{name}.pruned-int8.tflite").exists() and (out2 / f"{name}.float16.tflite").exists()
    assert "pruned-int8 vs float32" in again["parity"] and rc in (0, 1)


def test_reexport_float32_of_a_release(tiny_release, tiny_run, tmp_path, capsys):
    """`--reexport-float32`: the float32 file is made again from the recovered Keras model (the
    same function on real smears), recorded with the old file's hash; a training run refuses it
    with a one-line error before anything is written."""
    from ai_edge_litert.interpreter import Interpreter

    from leukedge.cli import main
    from leukedge.fileio import sha256_file
    from leukedge.preprocess import preprocess_file
    from leukedge.spec import ModelSpec
    from leukedge.split import read_manifest

    src, _ = tiny_release
    name = src.name
    out = tmp_path / name
    rc = main(["compress", str(src), "--out", str(out), "--set", "quantize.reexport_float32=true", "--calib", "60", "--no-parity"])
    assert rc == 0
    summary = json.loads((out / "compress.json").read_text())
    rex = summary["float32_reexported"]
    f32 = f"{name}.float32.tflite"
    assert rex["old_sha256"] == sha256_file(src / f32) and rex["new_bytes"] == (out / f32).stat().st_size
    assert max(rex["worst_relative_error_vs_recovered_keras"].values()) < 1e-3
    assert summary["source_release"]["note"].startswith("float32 re-exported")
    # the source's OOD gate (spec.ood -> its ood.npz) is not inherited: the new files get their own
    assert ModelSpec.load(src).ood.stats_file and not (out / "ood.npz").exists()
    assert ModelSpec.load(out).ood.stats_file is None     # (it kept "ood.npz": the release then refused to load)
    spec = ModelSpec.load(src)
    rows = [r for r in read_manifest(src / "split.csv", json.loads((tiny_run / "config.json").read_text())["data_dir"]) if r["split"] == "test"][:6]
    x = np.stack([preprocess_file(r["abspath"], spec.preprocess) for r in rows]).astype(np.float32)
    probs = []
    for f in (src / f32, out / f32):
        run = Interpreter(model_path=str(f)).get_signature_runner()
        probs.append(np.concatenate([run(image=x[i:i + 1])["probability"] for i in range(len(x))]))
    assert np.abs(probs[0] - probs[1]).max() < 1e-4
    # re-quantizing the re-exported release keeps its float32 bytes and the record of the re-export
    again = tmp_path / "again" / name
    assert main(["compress", str(out), "--out", str(again), "--calib", "60", "--no-parity"]) == 0
    assert sha256_file(again / f32) == sha256_file(out / f32)
    assert json.loads((again / "compress.json").read_text())["float32_reexported"] == rex
    capsys.readouterr()
    rc = main(["compress", str(tiny_run), "--out", str(tmp_path / "y"), "--set", "quantize.reexport_float32=true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "quantize.reexport_float32" in err[0]
    assert not (tmp_path / "y").exists()


def test_rederiving_twice_keeps_where_the_float32_file_came_from(tmp_path):
    """A release re-derived from a re-derived release still names the training run's model."""
    from leukedge.compress.pipeline import Source, inherited_record

    f32 = tmp_path / "m.float32.tflite"
    f32.write_bytes(b"x")
    src = Source(folder=tmp_path, model_file=f32, spec=None, split_csv=None, config={}, float_tflite=f32)
    keras = {"passed": True, "gates": {"agreement": 1.0}}
    first = inherited_record({"source": "runs/r1/best.h5", "parity": {"float32 vs keras": keras}}, src, "abc")
    second = inherited_record({"source": str(tmp_path), "source_release": first}, src, "abc")
    assert first["made_from"] == second["made_from"] == "runs/r1/best.h5"
    assert second["float32_vs_keras"] == keras


def test_binary_logit_range_is_bounded(calibrated, tiny_spec):
    """`bound_logit` narrows the calibrated logit output range (never widens it), and the int8
    file's logit output really gets the finer step."""
    from ai_edge_litert.interpreter import Interpreter

    from leukedge.compress.export import quantize_calibrated
    from leukedge.compress.ranges import bound_logit

    same, info = bound_logit(calibrated, limit=1e6)
    assert same is calibrated and info["used"] == info["calibrated"]
    lo, hi = info["calibrated"]
    lim = max(-lo, hi) / 2
    bounded, info = bound_logit(calibrated, limit=lim)
    assert info["used"] == pytest.approx([max(lo, -lim), min(hi, lim)], abs=1e-4)

    def logit_scale(data):
        return Interpreter(model_content=data).get_signature_runner().get_output_details()["logit"]["quantization"][0]

    plain, narrow = logit_scale(quantize_calibrated(calibrated, tiny_spec)), logit_scale(quantize_calibrated(bounded, tiny_spec))
    u_lo, u_hi = info["used"]
    width = (max(u_hi, 0) - min(u_lo, 0)) / (max(hi, 0) - min(lo, 0))      # int8 ranges always hold 0
    assert narrow == pytest.approx(plain * width, rel=0.05) and narrow < plain


def test_compress_refuses_a_release_folder_without_its_float32_file(tiny_release, tmp_path, capsys):
    """A release folder whose float32 file is missing gives a one-line error and writes nothing."""
    import shutil

    from leukedge.cli import main

    src, _ = tiny_release
    broken = tmp_path / "no-float32"
    shutil.copytree(src, broken)
    for f in broken.glob("*.float32.tflite"):
        f.unlink()
    out = tmp_path / "out"
    rc = main(["compress", str(broken), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and not out.exists()
    assert len(err) == 1 and "float32" in err[0]
