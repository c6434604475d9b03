"""The one preprocessing and the model spec."""
import json

import numpy as np
import pytest

from leukedge.errors import ConfigError, ModelError
from leukedge.imageio import load_image
from leukedge.preprocess import PreprocessConfig, mask_corners, normalize, preprocess, preprocess_file, preprocess_uint8
from leukedge.spec import ModelSpec, OperatingPoint


def test_preprocess_shape_range_and_determinism(smear_paths):
    cfg = PreprocessConfig(input_size=64)
    x1 = preprocess_file(smear_paths["Benign"][0], cfg)
    x2 = preprocess_file(smear_paths["Benign"][0], cfg)
    assert x1.shape == (64, 64, 3) and x1.dtype == np.float32
    assert 0.0 <= x1.min() and x1.max() <= 1.0
    assert np.array_equal(x1, x2)


def test_each_step_changes_the_image(smear_paths):
    rgb = load_image(smear_paths["Early"][0])
    plain = preprocess(rgb, PreprocessConfig(gaussian_sigma=0, equalize="none"))
    blurred = preprocess(rgb, PreprocessConfig(gaussian_sigma=1.0, equalize="none"))
    equalised = preprocess(rgb, PreprocessConfig(gaussian_sigma=0, equalize="clahe"))
    assert np.allclose(plain, rgb / 255.0, atol=1e-6)  # 224 input: no resize, no filter
    assert np.abs(plain - blurred).mean() > 1e-3
    assert np.abs(plain - equalised).mean() > 1e-3
    # CLAHE raises lightness contrast
    assert equalised.std() > plain.std()


@pytest.mark.parametrize("mode,lo,hi", [("unit", 0, 1), ("torch", -2.2, 2.7), ("lite", -1.0, 1.0)])
def test_normalisations(mode, lo, hi):
    u8 = np.array([[[0, 127, 255]]], np.uint8)
    x = normalize(u8, PreprocessConfig(normalize=mode))
    assert x.dtype == np.float32 and lo - 1e-6 <= x.min() and x.max() <= hi + 1e-6
    if mode == "lite":
        assert x[0, 0, 1] == pytest.approx(0.0)


def test_corner_mask_only_touches_corners(smear_paths):
    rgb = load_image(smear_paths["Pro"][0])
    masked = mask_corners(rgb, 0.15)
    c = int(round(224 * 0.15))
    assert np.array_equal(masked[c:-c, c:-c], rgb[c:-c, c:-c])
    assert len(np.unique(masked[-c:, -c:].reshape(-1, 3), axis=0)) == 1
    cfg = PreprocessConfig(corner_mask=0.15)
    assert any(s["step"] == "corner_mask" for s in cfg.steps())


def test_resize_any_size_input(smear_paths):
    rgb = load_image(smear_paths["Pre"][1])
    big = np.repeat(np.repeat(rgb, 3, axis=0), 2, axis=1)  # 672x448, not square
    assert preprocess_uint8(big, PreprocessConfig(input_size=224)).shape == (224, 224, 3)


def test_bad_config_values_are_refused():
    with pytest.raises(ConfigError, match="equalisation"):
        PreprocessConfig(equalize="magic")
    with pytest.raises(ConfigError, match="normalisation"):
        PreprocessConfig(normalize="x")
    with pytest.raises(ConfigError, match="odd"):
        PreprocessConfig(gaussian_ksize=4)


def test_spec_round_trip_and_labels(tmp_path):
    spec = ModelSpec(name="m", backbone="densenet201", threshold=0.3,
                     operating_points=[OperatingPoint("default", 0.3, "max specificity at sensitivity >= 0.99", 0.99, 0.9)])
    path = spec.save(tmp_path / "spec.json")
    back = ModelSpec.load(tmp_path)
    assert back == spec
    d = json.loads(path.read_text())
    assert [s["step"] for s in d["preprocess_steps"]] == ["decode", "resize", "gaussian", "equalize", "scale"]
    assert back.label_of("Benign") == 0 and back.label_of("Pro") == 1
    assert back.decide(0.31) == "positive" and back.decide(0.29) == "negative"
    sub = ModelSpec(name="s", backbone="x", task="subtype", class_names=["Benign", "Early", "Pre", "Pro"])
    assert sub.label_of("Pre") == 2 and sub.num_outputs == 4
    assert sub.positive_probability([0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.9)


def test_spec_errors(tmp_path):
    with pytest.raises(ModelError, match="no model spec"):
        ModelSpec.load(tmp_path)
    (tmp_path / "spec.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        ModelSpec.load(tmp_path)
    with pytest.raises(ConfigError):
        ModelSpec(name="m", backbone="b", task="regression")
