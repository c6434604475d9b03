"""Quantizing DenseNet-shaped models: standalone BatchNorm -> 1x1 depthwise conv, and the int16x8 variant."""
from __future__ import annotations

import numpy as np
import pytest

pytest_plugins = ["fixtures_models"]


@pytest.fixture(scope="module")
def batch(smear_paths, tiny_spec):
    from leukedge.preprocess import preprocess_file

    return np.stack([preprocess_file(p, tiny_spec.preprocess) for ps in smear_paths.values() for p in ps[:6]])


def test_finds_only_the_batchnorms_the_converter_cannot_fold(tiny_dense_keras, tiny_keras):
    from leukedge.compress.bn_fold import standalone_batchnorms, standalone_bn_to_depthwise

    assert standalone_batchnorms(tiny_dense_keras) == ["block0_bn", "block1_bn", "final_bn"]
    assert standalone_batchnorms(tiny_keras) == []            # tiny-cnn: every BN follows a conv
    assert standalone_bn_to_depthwise(tiny_keras) is tiny_keras


def test_rewrite_is_the_same_function(tiny_dense_keras, batch):
    from leukedge.compress.bn_fold import standalone_bn_to_depthwise

    new = standalone_bn_to_depthwise(tiny_dense_keras)
    kinds = {layer.name: type(layer).__name__ for layer in new.layers}
    assert kinds["block0_bn"] == kinds["final_bn"] == "DepthwiseConv2D"
    assert kinds["stem_bn"] == "BatchNormalization"
    feats = [m.get_layer("features").output for m in (tiny_dense_keras, new)]
    import tf_keras as keras

    a = keras.Model(tiny_dense_keras.input, feats[0])(batch, training=False).numpy()
    b = keras.Model(new.input, feats[1])(batch, training=False).numpy()
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max())
    assert new.count_params() == tiny_dense_keras.count_params() - 2 * sum(   # 4 BN vectors -> kernel + bias
        tiny_dense_keras.get_layer(n).gamma.shape[0] for n in ("block0_bn", "block1_bn", "final_bn"))


def _ops(f) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    return [o["op_name"] for o in Interpreter(model_path=str(f))._get_ops_details()]  # noqa: SLF001


def test_int8_keeps_bn_per_channel_and_is_closer_to_float(tiny_dense_keras, tiny_spec, batch, tmp_path):
    """Rewritten, the int8 file has no per-tensor MUL for a BN, and its features are closer to
    float32 than those of the default export (BN -> MUL + ADD with per-tensor constants)."""
    from leukedge.compress.bn_fold import standalone_bn_to_depthwise
    from leukedge.compress.export import calibrate, convert, quantize_calibrated
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData
    from leukedge.runtime import LiteRunner

    rep = RepresentativeData(batch)
    files = {"rewritten.tflite": standalone_bn_to_depthwise(tiny_dense_keras), "default.tflite": tiny_dense_keras}
    for name, model in files.items():
        q = quantize_calibrated(calibrate(model, tiny_spec, QuantizationConfig.for_int8(rep)), tiny_spec)
        (tmp_path / name).write_bytes(q)
    ops = _ops(tmp_path / "rewritten.tflite")
    assert ops.count("MUL") == 1 and ops.count("DEPTHWISE_CONV_2D") == 3   # the one MUL: Grad-CAM's 1[z > 0]
    assert _ops(tmp_path / "default.tflite").count("MUL") == 4

    (tmp_path / "f.tflite").write_bytes(convert(tiny_dense_keras, tiny_spec, QuantizationConfig.for_float32()))
    ref = LiteRunner(tmp_path / "f.tflite").predict(batch)["features"]
    err = {}
    for name in files:
        out = LiteRunner(tmp_path / name).predict(batch)["features"]
        err[name] = float(np.sqrt(np.mean((out - ref) ** 2)) / np.sqrt(np.mean(ref ** 2)))
    assert err["rewritten.tflite"] < 0.05
    assert err["rewritten.tflite"] < err["default.tflite"]


def test_int16x8_variant_is_int8_sized_and_closer_to_float(tiny_dense_keras, tiny_spec, batch, tmp_path):
    """`--variants int16x8`: int8 weights, 16-bit activations, float I/O; much closer to float32 than
    int8 on the DenseNet-shaped model, at (about) the int8 file's size."""
    from leukedge.compress.export import calibrate, convert, quantize_calibrated
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData
    from leukedge.runtime import LiteRunner

    rep = RepresentativeData(batch)
    files = {"f32": convert(tiny_dense_keras, tiny_spec, QuantizationConfig.for_float32()),
             "i16": convert(tiny_dense_keras, tiny_spec, QuantizationConfig.for_int16x8(rep)),
             "i8": quantize_calibrated(calibrate(tiny_dense_keras, tiny_spec, QuantizationConfig.for_int8(rep)),
                                       tiny_spec)}
    out = {}
    for k, data in files.items():
        (tmp_path / f"{k}.tflite").write_bytes(data)
        runner = LiteRunner(tmp_path / f"{k}.tflite")
        out[k] = runner.predict(batch)
    assert np.dtype(LiteRunner(tmp_path / "i16.tflite").input_dtype) == np.float32
    assert len(files["i16"]) < len(files["f32"]) and len(files["i16"]) < 1.25 * len(files["i8"])

    def err(k, name):
        return float(np.sqrt(np.mean((out[k][name] - out["f32"][name]) ** 2) / np.mean(out["f32"][name] ** 2)))

    assert err("i16", "features") < err("i8", "features") / 3
    assert err("i16", "logit") < 0.05


def test_compress_cli_int16x8_variant(tiny_run, tmp_path):
    """`leukedge compress --variants int8,int16x8`: both files, parity of each against float32; the
    release's pass/fail is the int8 file's (int16x8 is the fallback beside it)."""
    import json

    from leukedge.benchmarks.targets import _split_name
    from leukedge.cli import main

    out = tmp_path / "tiny-i16"
    rc = main(["compress", str(tiny_run), "--out", str(out), "--variants", "int8,int16x8", "--calib", "60",
               "--set", "quantize.selective=false", "--n-boot", "100"])
    summary = json.loads((out / "compress.json").read_text())
    assert (out / "tiny-i16.int16x8.tflite").exists()
    assert set(summary["parity"]) >= {"int8 vs float32", "int16x8 vs float32"}
    i16 = summary["parity"]["int16x8 vs float32"]["gates"]
    assert i16["agreement"] >= summary["parity"]["int8 vs float32"]["gates"]["agreement"] - 0.02
    assert summary["passed"] == summary["parity"]["int8 vs float32"]["passed"]
    assert rc == (0 if summary["passed"] else 1)
    assert _split_name(out / "tiny-i16.int16x8.tflite") == ("tiny-i16", "int16x8")


def test_float_file_rewrite_is_the_keras_rewrite(tiny_dense_keras, tiny_spec, batch, tmp_path):
    """`--bn-depthwise` on a float32 .tflite (release sources have no Keras model): the same
    function, the same ops as the Keras-level rewrite, and a closer int8 file."""
    from leukedge.compress.bn_depthwise import mul_add_to_depthwise
    from leukedge.compress.export import calibrate_tflite, convert, quantize_calibrated
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData
    from leukedge.errors import ModelError
    from leukedge.runtime import LiteRunner

    f32 = convert(tiny_dense_keras, tiny_spec, QuantizationConfig.for_float32())
    new, n = mul_add_to_depthwise(f32)
    assert n == 3 and mul_add_to_depthwise(new)[1] == 0
    for name, data in (("f.tflite", f32), ("dw.tflite", new)):
        (tmp_path / name).write_bytes(data)
    ops, before = _ops(tmp_path / "dw.tflite"), _ops(tmp_path / "f.tflite")
    assert ops.count("DEPTHWISE_CONV_2D") == 3 and ops.count("MUL") == 1     # the one MUL: Grad-CAM's 1[z > 0]
    assert ops.count("ADD") == before.count("ADD") - 3 and len(ops) == len(before) - 3
    ref, out = LiteRunner(tmp_path / "f.tflite").predict(batch), LiteRunner(tmp_path / "dw.tflite").predict(batch)
    for k in ("features", "logit", "cam"):
        assert np.abs(out[k] - ref[k]).max() <= 1e-5 * max(1.0, np.abs(ref[k]).max()), k

    rep = RepresentativeData(batch)
    err = {}
    for name, data in (("i8.tflite", f32), ("i8dw.tflite", new)):
        (tmp_path / name).write_bytes(quantize_calibrated(calibrate_tflite(data, rep), tiny_spec))
        q = LiteRunner(tmp_path / name).predict(batch)["features"]
        err[name] = float(np.sqrt(np.mean((q - ref["features"]) ** 2)) / np.sqrt(np.mean(ref["features"] ** 2)))
    assert _ops(tmp_path / "i8dw.tflite").count("DEPTHWISE_CONV_2D") == 3
    assert err["i8dw.tflite"] < err["i8.tflite"], err
    with pytest.raises(ModelError, match="float model"):
        mul_add_to_depthwise((tmp_path / "i8.tflite").read_bytes())


def test_compress_cli_bn_depthwise_is_recorded(tiny_run, tmp_path):
    """`leukedge compress --bn-depthwise` records how many pairs it rewrote (tiny-cnn: none, every
    BatchNorm follows a conv and is folded), and the int8 file is still written."""
    import json

    from leukedge.cli import main

    out = tmp_path / "tiny-dw"
    assert main(["compress", str(tiny_run), "--out", str(out), "--set", "quantize.bn_depthwise=true", "--calib", "60", "--no-parity"]) == 0
    summary = json.loads((out / "compress.json").read_text())
    assert summary["int8_bn_depthwise"] == {"rewritten": 0} and summary["config"]["bn_depthwise"] is True
    assert (out / "tiny-dw.int8.tflite").stat().st_size > 0


def test_keras_model_recovered_from_a_float32_file(tiny_dense_keras, tiny_keras, tiny_spec, batch, tmp_path):
    """A release keeps only .tflite files: its Keras model is rebuilt from the float32 file
    (BatchNorm after Concatenate included) and reproduces it; a mismatched spec or an int8
    file is refused with a clear error."""
    import copy

    from leukedge.compress.export import calibrate, convert, keras_outputs, quantize_calibrated
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData
    from leukedge.compress.recover import keras_from_float_tflite
    from leukedge.errors import ModelError

    from fixtures_models import dense_block_model

    for model, arch in ((tiny_dense_keras, dense_block_model(tiny_spec, seed=5)), (tiny_keras, None)):
        spec = tiny_spec
        f32 = convert(model, spec, QuantizationConfig.for_float32())
        back = keras_from_float_tflite(f32, spec, check_images=batch[:4], architecture=arch)
        a = keras_outputs(model, spec, batch[:1])
        b = keras_outputs(back, spec, batch[:1])
        for k in ("probability", "cam"):
            assert np.abs(a[k] - b[k]).max() <= 1e-4 * max(1.0, np.abs(a[k]).max()), k
        assert back.count_params() == model.count_params()
    wrong = copy.deepcopy(tiny_spec)
    wrong.head = {**(wrong.head or {}), "dense_units": 8}
    with pytest.raises(ModelError, match="kernel"):
        keras_from_float_tflite(convert(tiny_keras, tiny_spec, QuantizationConfig.for_float32()), wrong)
    q = quantize_calibrated(calibrate(tiny_keras, tiny_spec, QuantizationConfig.for_int8(RepresentativeData(batch))),
                            tiny_spec)
    with pytest.raises(ModelError, match="float32"):
        keras_from_float_tflite(q, tiny_spec)
