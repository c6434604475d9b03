"""The export's ``logit`` output and its weight sharing.

The int8 sigmoid output has the fixed scale 1/256; the exported ``logit`` is calibrated with
its own range and :class:`leukedge.runtime.LiteRunner` recomputes ``probability`` from it, so
probabilities below one int8 step survive full-integer export. Files exported before
``logit`` existed (the committed releases) must read exactly as before. The in-graph
Grad-CAM reuses the hidden layer's kernel, so each file stores it once.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

#: the first EfficientNet-Lite0 release's files (before ``logit`` and the shared head kernel)
RELEASE = Path(__file__).parent / "data" / "legacy" / "efficientnet-lite0-binary"


def _batch(paths, spec):
    from leukedge.preprocess import preprocess_file

    return np.stack([preprocess_file(p, spec.preprocess) for p in paths])


def _keras_logit(model, x):
    """The output layer's pre-activation, from Keras (the reference for ``logit``)."""
    import tf_keras as keras

    out = model.get_layer("probability")
    head_in = keras.Model(model.input, out.input).predict(x, verbose=0)
    return head_in @ out.kernel.numpy() + out.bias.numpy()


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def _export(model, spec, calib, folder: Path, name: str) -> tuple[Path, Path]:
    from leukedge.compress.export import calibrate, convert, quantize_calibrated
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData

    f32, i8 = folder / f"{name}.float32.tflite", folder / f"{name}.int8.tflite"
    f32.write_bytes(convert(model, spec, QuantizationConfig.for_float32()))
    i8.write_bytes(quantize_calibrated(calibrate(model, spec, QuantizationConfig.for_int8(RepresentativeData(calib))),
                                       spec))
    return f32, i8


@pytest.fixture(scope="module")
def calib(small_dataset, tiny_spec):
    """40 real training-like smears at 32x32 (the calibration set)."""
    return _batch(sorted(small_dataset.glob("*/*.jpg"))[::4], tiny_spec)


@pytest.fixture(scope="module")
def smears(smear_paths, tiny_spec):
    """32 real smears (8 per class) at 32x32, not used for calibration ranges."""
    return _batch([p for ps in smear_paths.values() for p in ps], tiny_spec)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory, tiny_keras, tiny_spec, calib):
    return _export(tiny_keras, tiny_spec, calib, tmp_path_factory.mktemp("logit"), "tiny")


def test_int8_file_has_a_calibrated_logit_and_probability_is_its_sigmoid(tiny_files, smears):
    from leukedge.runtime import LiteRunner

    runner = LiteRunner(tiny_files[1])
    logit, prob = runner.outputs["logit"], runner.outputs["probability"]
    assert np.dtype(logit["dtype"]) == np.int8 and tuple(logit["shape"]) == (1, 1)
    assert prob["quantization"][0] == pytest.approx(1 / 256)            # the sigmoid's fixed int8 scale
    assert logit["quantization"][0] != pytest.approx(1 / 256)           # calibrated with its own range
    out = runner.predict(smears)
    assert set(out) == {"probability", "probability_raw", "logit", "cam", "features"}
    np.testing.assert_allclose(out["probability"], _sigmoid(out["logit"]), rtol=1e-6, atol=1e-7)
    raw = out["probability_raw"]
    np.testing.assert_allclose(raw * 256, np.round(raw * 256), atol=1e-3)  # the file's own output: 1/256 steps
    assert np.abs(out["probability"] - raw).max() <= 1 / 256 + 0.02      # and both describe the same number


def test_float32_logit_and_probability_match_keras(tiny_files, tiny_keras, smears):
    from leukedge.runtime import LiteRunner

    out = LiteRunner(tiny_files[0]).predict(smears)
    np.testing.assert_allclose(out["probability"], tiny_keras.predict(smears, verbose=0), atol=1e-5)
    np.testing.assert_allclose(out["logit"], _keras_logit(tiny_keras, smears), atol=1e-4)
    np.testing.assert_allclose(out["probability_raw"], out["probability"], atol=1e-6)  # float graph: same sigmoid


def test_int8_probability_resolves_values_below_one_int8_step(tmp_path, tiny_keras, tiny_spec, calib, smears):
    """A model whose probabilities all lie below 0.004: the old int8 output could only say 0 or 1/256.

    The tiny model's output layer is rescaled and shifted (same ranking of the images): its
    logits then span 4 units, all below logit(0.003), like the negatives of a release whose
    validation-chosen threshold is 0.0057.
    """
    import tf_keras as keras

    from leukedge.runtime import LiteRunner

    model = keras.models.clone_model(tiny_keras)
    model.set_weights(tiny_keras.get_weights())
    out_layer = model.get_layer("probability")
    z = _keras_logit(model, np.concatenate([calib, smears])).ravel() - out_layer.bias.numpy()
    assert z.max() - z.min() > 0.05, "the tiny model scores every image alike: the check would be vacuous"
    k = 4.0 / (z.max() - z.min())
    out_layer.kernel.assign(out_layer.kernel.numpy() * k)
    out_layer.bias.assign(np.full_like(out_layer.bias.numpy(), np.log(0.003 / 0.997) - k * z.max()))
    pf = model.predict(smears, verbose=0).ravel()
    assert pf.max() <= 0.0031 and pf.max() / pf.min() > 5

    _, i8 = _export(model, tiny_spec, calib, tmp_path, "low")
    out = LiteRunner(i8).predict(smears)
    p = out["probability"].ravel()
    assert len(np.unique(p)) >= len(p) // 2 and p.min() > 0              # what the logit says
    assert len(np.unique(out["probability_raw"])) <= 2                   # what the file's sigmoid output says
    err = np.abs(np.log(p) - np.log(pf))
    assert err.max() < 0.5                                               # within a factor 1.65 of the float model
    assert np.corrcoef(np.log(p), np.log(pf))[0, 1] > 0.95               # and ranks the images like it


def test_subtype_logits_give_the_softmax(tmp_path, smear_paths):
    import tensorflow as tf

    from leukedge.compress.export import convert
    from leukedge.compress.quantization import QuantizationConfig
    from leukedge.preprocess import PreprocessConfig
    from leukedge.runtime import LiteRunner
    from leukedge.spec import ModelSpec
    from leukedge.train.model import build_classifier

    spec = ModelSpec(name="tiny-subtype", backbone="tiny-cnn", task="subtype",
                     class_names=["Benign", "Early", "Pre", "Pro"], preprocess=PreprocessConfig(input_size=32))
    tf.keras.utils.set_random_seed(5)
    model = build_classifier(spec, dense_units=16, dropout=0.0)
    x = _batch([p for ps in smear_paths.values() for p in ps[:2]], spec)
    f = tmp_path / "sub.float32.tflite"
    f.write_bytes(convert(model, spec, QuantizationConfig.for_float32()))
    out = LiteRunner(f).predict(x)
    assert out["logit"].shape == out["probability"].shape == (len(x), 4)
    z = out["logit"].astype(np.float64)
    soft = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(out["probability"], soft / soft.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["probability"], model.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_allclose(out["logit"], _keras_logit(model, x), atol=1e-4)


def constant_copies(tflite: Path, shape) -> int:
    """How many constant buffers of ``shape`` (either orientation) the flatbuffer holds."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(tflite.read_bytes()), 0))
    shapes = {tuple(shape), tuple(shape[::-1])}
    return len({t.buffer for g in model.subgraphs for t in g.tensors
                if tuple(int(d) for d in t.shape) in shapes and model.buffers[t.buffer].data is not None})


def test_hidden_kernel_is_stored_once(tiny_files, tiny_keras):
    kernel = tuple(tiny_keras.get_layer("head_dense").kernel.shape)        # (D, U) = (32, 16)
    for f in tiny_files:
        assert constant_copies(f, kernel) == 1, f.name
    # the first release (exported before the Grad-CAM reused the kernel) has two copies, the
    # re-exported one in models/ one
    assert constant_copies(RELEASE / f"{RELEASE.name}.int8.tflite", (1280, 512)) == 2
    current = Path("models") / RELEASE.name
    for v in ("float32", "int8"):
        assert constant_copies(current / f"{RELEASE.name}.{v}.tflite", (1280, 512)) == 1, v


def test_probability_from_logit_is_stable_and_leaves_old_outputs_alone():
    from leukedge.runtime import probability_from_logit

    old = {"probability": np.array([0.5], np.float32), "cam": np.zeros((2, 2))}
    assert probability_from_logit(old) is old
    big = probability_from_logit({"logit": np.array([[-1000.0], [0.0], [1000.0], [-20.0]])})
    assert np.all(np.isfinite(big["probability"]))
    np.testing.assert_allclose(big["probability"].ravel(), [0.0, 0.5, 1.0, 2.0611537e-09], rtol=1e-6)
    soft = probability_from_logit({"logit": np.array([1000.0, 999.0, -1000.0, 0.0]), "probability": np.ones(4)})
    assert np.isfinite(soft["probability"]).all() and soft["probability"].sum() == pytest.approx(1.0)
    assert soft["probability"][0] / soft["probability"][1] == pytest.approx(np.e, rel=1e-5)
    np.testing.assert_array_equal(soft["probability_raw"], np.ones(4))


def test_release_file_without_logit_reads_as_before(aria_dir):
    """The first release's int8 file predates ``logit``: same outputs, same probabilities as its evaluation."""
    from leukedge.preprocess import preprocess_file
    from leukedge.runtime import LiteRunner
    from leukedge.spec import ModelSpec

    spec = ModelSpec.load(RELEASE)
    runner = LiteRunner(RELEASE / f"{RELEASE.name}.int8.tflite")
    assert set(runner.outputs) == {"probability", "cam", "features"}
    with open(RELEASE / "predictions.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    picked = [r for c in ("Benign", "Early", "Pro") for r in [r for r in rows if r["class"] == c][:2]]
    for r in picked:
        out = runner.run(preprocess_file(aria_dir / r["path"], spec.preprocess))
        assert set(out) == {"probability", "cam", "features"}            # no logit, no probability_raw
        d = runner.outputs["probability"]
        q = runner.interpreter.get_tensor(d["index"]).astype(np.float32)
        assert out["probability"][0] == (q[0, 0] - d["quantization"][1]) * np.float32(d["quantization"][0])
        assert out["probability"][0] == pytest.approx(float(r["probability"]), abs=1e-6), r["path"]
