"""The tf.data input pipeline on real smears: same tensors as the app path, real augmentation, balancing."""
from __future__ import annotations

import numpy as np
import pytest

from leukedge.preprocess import PreprocessConfig, preprocess_file, preprocess_uint8
from leukedge.imageio import load_image
from leukedge.spec import ModelSpec


def _rows(small_dataset, per_class=3):
    rows = []
    for c in ("Benign", "Early", "Pre", "Pro"):
        for f in sorted((small_dataset / c).iterdir())[:per_class]:
            rows.append({"path": f"{c}/{f.name}", "class": c, "abspath": str(f), "split": "train"})
    return rows


def _spec(size=48, normalize="lite", task="binary"):
    classes = ["Benign", "Early", "Pre", "Pro"]
    kw = dict(class_names=classes) if task == "subtype" else {}
    return ModelSpec(name="t", backbone="tiny-cnn", task=task, preprocess=PreprocessConfig(input_size=size, normalize=normalize), **kw)


@pytest.mark.parametrize("normalize", ["lite", "torch", "unit"])
def test_eval_pipeline_identical_to_preprocess_file(small_dataset, normalize):
    from leukedge.train.dataset import eval_pipeline

    rows = _rows(small_dataset, 2)
    spec = _spec(normalize=normalize)
    pipe = eval_pipeline(rows, spec, batch_size=3)
    xs, ys = [], []
    for x, y in pipe.dataset:
        xs.append(x.numpy())
        ys.append(y.numpy())
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.shape == (len(rows), 48, 48, 3) and x.dtype == np.float32
    expected = np.stack([preprocess_file(r["abspath"], spec.preprocess) for r in rows])
    assert np.array_equal(x, expected)  # bit-identical: the one preprocessing implementation
    assert y[:, 0].tolist() == [spec.label_of(r["class"]) for r in rows]


def test_training_pipeline_without_augmentation_gives_the_same_tensors(small_dataset):
    from leukedge.train.config import AugmentConfig, TrainConfig
    from leukedge.train.dataset import train_pipeline

    rows = _rows(small_dataset, 2)
    spec = _spec()
    cfg = TrainConfig(backbone="tiny-cnn", weights="none", augment=AugmentConfig(enabled=False))
    pipe = train_pipeline(rows, spec, cfg, batch_size=len(rows))
    x, _ = next(iter(pipe.dataset))
    expected = {r["path"]: preprocess_file(r["abspath"], spec.preprocess) for r in rows}
    for img in x.numpy():
        assert any(np.array_equal(img, e) for e in expected.values())
    assert pipe.steps == 1 and pipe.n == len(rows)


def test_augmentation_quarter_turns_and_flips_are_exact_dihedral_copies(small_dataset):
    import tensorflow as tf

    from leukedge.train.config import AugmentConfig
    from leukedge.train.dataset import augment_batch

    spec = _spec(size=32)
    rows = _rows(small_dataset, 2)
    u8 = np.stack([preprocess_uint8(load_image(r["abspath"]), spec.preprocess) for r in rows])
    aug = AugmentConfig(rotation_degrees=0, zoom=0, brightness=0, rot90=True, hflip=True, vflip=True)
    out = augment_batch(tf.constant(u8), aug, seed=3).numpy()
    assert out.dtype == np.uint8 and out.shape == u8.shape
    changed = 0
    for a, b in zip(u8, out):
        variants = [np.rot90(v, k) for v in (a, a[:, ::-1]) for k in range(4)]
        assert any(np.array_equal(b, v) for v in variants)
        changed += not np.array_equal(a, b)
    assert changed > 0  # 8 images: the chance that all stay untouched is 8^-8


def test_geometric_and_brightness_augmentation_change_pixels_but_keep_range(small_dataset):
    import tensorflow as tf

    from leukedge.train.config import AugmentConfig
    from leukedge.train.dataset import augment_batch

    spec = _spec(size=48)
    rows = _rows(small_dataset, 1)
    u8 = np.stack([preprocess_uint8(load_image(r["abspath"]), spec.preprocess) for r in rows])
    aug = AugmentConfig(rot90=False, hflip=False, vflip=False, rotation_degrees=30, zoom=0.2, brightness=0.2)
    out = augment_batch(tf.constant(u8), aug, seed=1).numpy()
    diffs = np.abs(out.astype(int) - u8.astype(int)).mean(axis=(1, 2, 3))
    assert (diffs > 1.0).all()
    assert out.min() >= 0 and out.max() <= 255
    off = augment_batch(tf.constant(u8), AugmentConfig(enabled=False), seed=1).numpy()
    assert np.array_equal(off, u8)


def test_class_weights_and_oversampling_balance_the_classes(small_dataset):
    from leukedge.train.config import AugmentConfig, TrainConfig
    from leukedge.train.dataset import class_weights, labels_of, train_pipeline

    spec = _spec(size=16)
    rows = _rows(small_dataset, 4)  # binary: 4 negative, 12 positive
    labels = labels_of(rows, spec)
    w = class_weights(labels, 2)
    assert w[0] == pytest.approx(16 / (2 * 4)) and w[1] == pytest.approx(16 / (2 * 12))
    cfg = TrainConfig(backbone="tiny-cnn", weights="none", balance="oversample", augment=AugmentConfig(enabled=False))
    pipe = train_pipeline(rows, spec, cfg, batch_size=16)
    ys = np.concatenate([y.numpy()[:, 0] for _, y in pipe.dataset.take(10)])
    assert len(ys) == 160
    assert 0.38 < ys.mean() < 0.62  # uniform over the two classes instead of 0.75 positive


def test_spec_for_derives_preprocessing_from_the_backbone():
    from leukedge.train.config import TrainConfig
    from leukedge.train.dataset import spec_for

    classes = ["Benign", "Early", "Pre", "Pro"]
    lite = spec_for(TrainConfig(backbone="efficientnet-lite0"), classes)
    assert lite.preprocess.normalize == "lite" and lite.preprocess.input_size == 224
    assert lite.class_names == ["Benign", "ALL"] and lite.label_of("Pre") == 1 and lite.label_of("Benign") == 0
    dn = spec_for(TrainConfig(backbone="densenet201", input_size=128, task="subtype"), classes)
    assert dn.preprocess.normalize == "unit" and dn.preprocess.input_size == 128
    assert dn.num_outputs == 4 and dn.label_of("Pro") == 3
    from leukedge.errors import DataError

    with pytest.raises(DataError):
        spec_for(TrainConfig(backbone="tiny-cnn", negative_class="Normal"), classes)


def test_spec_records_a_local_weights_file_without_the_machine_path(tmp_path, monkeypatch):
    """``--weights /abs/run/best.h5`` (stage 2 of a curriculum) must not put an absolute path into
    spec.json, card.json and evaluation.json of a release (found in session 17)."""
    from leukedge.portable import is_absolute
    from leukedge.train.config import TrainConfig
    from leukedge.train.dataset import spec_for

    classes = ["Benign", "Early", "Pre", "Pro"]
    monkeypatch.chdir(tmp_path)
    inside = (tmp_path / "runs" / "s1" / "best.h5").resolve()
    spec = spec_for(TrainConfig(backbone="densenet201", weights=str(inside)), classes)
    assert spec.weights == "runs/s1/best.h5"
    outside = (tmp_path.parent / "elsewhere" / "best.h5").resolve()
    spec = spec_for(TrainConfig(backbone="densenet201", weights=str(outside)), classes)
    assert spec.weights == "best.h5" and not is_absolute(spec.weights)
    assert spec_for(TrainConfig(backbone="densenet201", weights="imagenet"), classes).weights == "imagenet"
