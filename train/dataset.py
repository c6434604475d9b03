"""tf.data input pipelines over a split manifest.

Per image: decode + the one preprocessing (:func:`leukedge.preprocess.preprocess_uint8`, via
``tf.numpy_function``) in parallel, then ``cache()`` of the deterministic uint8 result.
Training batches are then augmented on the fly in TensorFlow ops (rotation incl. quarter
turns, flips, zoom, brightness), and every batch is normalised by
:func:`leukedge.preprocess.normalize` (again the one implementation), so without
augmentation a batch is bit-identical to :func:`leukedge.preprocess.preprocess_file`.
Class balancing: class weights from the training counts and/or oversampling (uniform
sampling over per-class streams with ``sample_from_datasets``), both keyed on the hard label.
Targets are float32 per row: the hard labels (one-hot for subtype), or any probabilities
given as ``targets=`` (knowledge distillation, :mod:`leukedge.train.distill`); evaluation
pipelines always carry the hard labels.

With capture augmentations (``AugmentConfig.captures``, :mod:`leukedge.train.augment`) the
training pipeline caches the *decoded* image instead (resized to the input size when it is
larger, so the cache stays small), and each drawn image goes through the capture families
and then the one preprocessing, seeded per image from a ``tf.data`` random stream.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from leukedge.errors import DataError
from leukedge.imageio import load_image
from leukedge.portable import portable_dir
from leukedge.preprocess import PreprocessConfig, normalize, preprocess_uint8
from leukedge.spec import ModelSpec

from .augment import capture_map
from .config import AugmentConfig, TrainConfig

log = logging.getLogger(__name__)


def spec_for(cfg: TrainConfig, source_classes: list[str]) -> ModelSpec:
    """The model spec a config trains: classes, labels and the backbone's preprocessing.

    The normalisation comes from the backbone registry and the input size from the config
    (default: the backbone's), so the spec always matches the weights.
    """
    from .backbones import get_backbone

    bb = get_backbone(cfg.backbone)
    pcfg = PreprocessConfig(**{**cfg.preprocess, "input_size": cfg.resolved_input_size(), "normalize": bb.normalize})
    classes = sorted(source_classes)
    if cfg.task == "binary":
        if cfg.negative_class not in classes:
            raise DataError(f"negative class '{cfg.negative_class}' is not a class of the data {classes}",
                            "pass --negative-class with one of the data's class folders")
        positives = [c for c in classes if c != cfg.negative_class]
        if not positives:
            raise DataError(f"the binary task needs a class besides '{cfg.negative_class}' (found {classes})")
        class_names = [cfg.negative_class, "ALL" if set(positives) == {"Early", "Pre", "Pro"} else "+".join(positives)]
        return ModelSpec(name=f"{cfg.backbone}-{cfg.task}", backbone=cfg.backbone, task="binary",
                         class_names=class_names, source_classes=classes, negative_class=cfg.negative_class,
                         positive_classes=positives, preprocess=pcfg, weights=portable_dir(cfg.weights))
    positives = [c for c in classes if c != cfg.negative_class]
    return ModelSpec(name=f"{cfg.backbone}-{cfg.task}", backbone=cfg.backbone, task="subtype",
                     class_names=classes, source_classes=classes,
                     negative_class=cfg.negative_class if cfg.negative_class in classes else None,
                     positive_classes=positives, preprocess=pcfg, weights=portable_dir(cfg.weights))


def limit_rows(rows: list[dict], limit_per_class: int | None) -> list[dict]:
    """At most ``limit_per_class`` rows of each class (first ones, deterministic)."""
    if not limit_per_class:
        return list(rows)
    seen: Counter = Counter()
    out = []
    for r in rows:
        if seen[r["class"]] < limit_per_class:
            seen[r["class"]] += 1
            out.append(r)
    return out


def labels_of(rows: list[dict], spec: ModelSpec) -> np.ndarray:
    return np.array([spec.label_of(r["class"]) for r in rows], dtype=np.int64)


def class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Inverse-frequency class weights ``n / (C * n_c)`` (sklearn's "balanced")."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    if (counts == 0).any():
        missing = [i for i, c in enumerate(counts) if c == 0]
        raise DataError(f"the training split has no images of label(s) {missing}",
                        "check the split manifest and the class folders")
    return {i: float(len(labels) / (num_classes * c)) for i, c in enumerate(counts)}


def hard_targets(labels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The model's float32 targets of integer labels: ``(N, 1)`` 0/1 (binary) or ``(N, C)`` one-hot."""
    labels = np.asarray(labels, dtype=np.int64)
    if spec.task == "binary":
        return labels.reshape(-1, 1).astype(np.float32)
    return np.eye(len(spec.class_names), dtype=np.float32)[labels]


def _check_targets(targets, n: int, spec: ModelSpec) -> np.ndarray:
    t = np.asarray(targets, dtype=np.float32)
    if spec.task == "binary" and t.ndim == 1:
        t = t.reshape(-1, 1)
    want = (n, spec.num_outputs)
    if t.shape != want or not np.isfinite(t).all() or t.min(initial=0.0) < 0.0 or t.max(initial=0.0) > 1.0:
        raise DataError(f"training targets must be {want} probabilities in [0, 1], got shape {t.shape}",
                        "pass one target per training row (train_pipeline(targets=...))")
    return t


def _decode_fn(pcfg: PreprocessConfig):
    import tensorflow as tf

    s = int(pcfg.input_size)

    def _np_load(path: bytes) -> np.ndarray:
        return preprocess_uint8(load_image(path.decode("utf-8")), pcfg)

    def decode(path, *target):
        img = tf.numpy_function(_np_load, [path], tf.uint8, stateful=False)
        img.set_shape((s, s, 3))
        return (img, *target)

    return decode


def _raw_fn(pcfg: PreprocessConfig):
    """Decode only (down to the input size when larger): capture augmentations act on this."""
    import cv2
    import tensorflow as tf

    s = int(pcfg.input_size)

    def _np_load(path: bytes) -> np.ndarray:
        rgb = load_image(path.decode("utf-8"))
        h, w = rgb.shape[:2]
        if min(h, w) > s:
            f = s / min(h, w)
            rgb = cv2.resize(rgb, (max(s, round(w * f)), max(s, round(h * f))), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(rgb)

    def decode(path, *target):
        img = tf.numpy_function(_np_load, [path], tf.uint8, stateful=False)
        img.set_shape((None, None, 3))
        return (img, *target)

    return decode


def _capture_fn(captures: dict, pcfg: PreprocessConfig):
    import tensorflow as tf

    s = int(pcfg.input_size)
    fn = capture_map(captures, pcfg)

    def aug(item, seed):
        raw, *target = item
        img = tf.numpy_function(fn, [raw, seed], tf.uint8, stateful=False)
        img.set_shape((s, s, 3))
        return (img, *target)

    return aug


def _normalize_fn(spec: ModelSpec):
    import tensorflow as tf

    pcfg = spec.preprocess
    s = int(pcfg.input_size)

    def norm(images_u8, *target):
        x = tf.numpy_function(lambda a: normalize(a, pcfg), [images_u8], tf.float32, stateful=False)
        x.set_shape((None, s, s, 3))
        return (x, *target)

    return norm


def augment_batch(images_u8, aug: AugmentConfig, seed: int):
    """Random per-image geometry and brightness on a uint8 batch; returns a uint8 batch.

    One projective transform per image combines rotation and zoom (reflect padding, bilinear);
    quarter turns and flips are exact. Works in [0, 255] so the normalisation stays the
    one in :mod:`leukedge.preprocess`.
    """
    import tensorflow as tf

    x = tf.cast(images_u8, tf.float32)
    if not aug.enabled:
        return images_u8
    b = tf.shape(x)[0]
    h = tf.cast(tf.shape(x)[1], tf.float32)
    w = tf.cast(tf.shape(x)[2], tf.float32)
    if aug.rot90:
        k = tf.random.uniform([b], 0, 4, dtype=tf.int32, seed=seed + 1)
        turns = tf.stack([x, tf.image.rot90(x, 1), tf.image.rot90(x, 2), tf.image.rot90(x, 3)])  # (4, B, S, S, 3)
        x = tf.gather_nd(turns, tf.stack([k, tf.range(b)], axis=1))
    if aug.hflip:
        flip = tf.random.uniform([b, 1, 1, 1], seed=seed + 2) < 0.5
        x = tf.where(flip, tf.reverse(x, axis=[2]), x)
    if aug.vflip:
        flip = tf.random.uniform([b, 1, 1, 1], seed=seed + 3) < 0.5
        x = tf.where(flip, tf.reverse(x, axis=[1]), x)
    if aug.rotation_degrees > 0 or aug.zoom > 0:
        rad = aug.rotation_degrees * math.pi / 180.0
        theta = tf.random.uniform([b], -rad, rad, seed=seed + 4)
        scale = tf.random.uniform([b], 1.0 - aug.zoom, 1.0 + aug.zoom, seed=seed + 5)
        cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
        c, s = tf.cos(theta) * scale, tf.sin(theta) * scale
        # output pixel (x, y) samples the input at A @ (x - cx, y - cy) + (cx, cy)
        transforms = tf.stack([c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy,
                               tf.zeros([b]), tf.zeros([b])], axis=1)
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=transforms, output_shape=tf.shape(x)[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="REFLECT")
    if aug.brightness > 0:
        delta = tf.random.uniform([b, 1, 1, 1], -aug.brightness, aug.brightness, seed=seed + 6) * 255.0
        x = x + delta
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


@dataclass
class Pipeline:
    """A built input pipeline.

    Attributes:
        dataset: the tf.data dataset of (normalised float batch, float32 target batch), plus a
            per-row sample-weight batch when built with ``class_weight``.
        steps: steps per epoch (training) or to cover the split once (evaluation).
        n: images in the split.
        rows: the manifest rows, in dataset order for evaluation pipelines.
    """

    dataset: object
    steps: int
    n: int
    rows: list


def _decoded(paths, targets: tuple, pcfg, raw: bool = False):
    """(image, *targets) per row: ``targets`` are per-row arrays (float targets, sample weights)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((np.asarray(paths), *targets))
    fn = _raw_fn(pcfg) if raw else _decode_fn(pcfg)
    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()


def train_pipeline(rows: list[dict], spec: ModelSpec, cfg: TrainConfig, batch_size: int | None = None,
                   augment: bool = True, targets: np.ndarray | None = None,
                   class_weight: dict[int, float] | None = None, with_hard_labels: bool = False) -> Pipeline:
    """Shuffled, balanced (``cfg.balance``), augmented, repeating training batches.

    Args:
        rows: the training rows.
        spec: the model spec (labels, preprocessing).
        cfg: shuffling/oversampling seed, augmentation, step cap.
        batch_size: images per batch (default ``cfg.batch_size``).
        augment: False turns augmentation off (whatever the config says).
        targets: float32 targets per row, in ``rows`` order (``(N,)``/``(N, 1)`` binary,
            ``(N, C)`` subtype; e.g. distillation's mixed soft targets); None = the hard
            labels (:func:`hard_targets`). Oversampling is keyed on the hard labels either way.
        class_weight: loss weight per hard label; given, batches are ``(x, target, weight)``
            with each row's weight from its hard label (Keras' ``class_weight`` would key
            it on the rounded/argmax target instead, which soft targets can flip).
        with_hard_labels: batches' targets are ``[target | hard label]`` (``2k`` columns) for
            a loss and metrics that need both (:mod:`leukedge.train.distill_keras`).
    """
    import tensorflow as tf

    if not rows:
        raise DataError("the training split is empty", "check the split manifest (`leukedge data split`)")
    bs = int(batch_size or cfg.batch_size)
    paths = [r["abspath"] for r in rows]
    labels = labels_of(rows, spec)
    hard = hard_targets(labels, spec)
    per_row = [hard if targets is None else _check_targets(targets, len(rows), spec)]
    if with_hard_labels:
        per_row[0] = np.concatenate([per_row[0], hard], axis=1)
    if class_weight is not None:
        per_row.append(np.array([class_weight[int(v)] for v in labels], dtype=np.float32))
    captures = {k: v for k, v in (cfg.augment.captures or {}).items() if v} if augment and cfg.augment.enabled else {}
    if cfg.balance in ("oversample", "both"):
        streams = []
        for lab in sorted(set(labels.tolist())):
            idx = np.flatnonzero(labels == lab)
            streams.append(_decoded([paths[i] for i in idx], tuple(a[idx] for a in per_row), spec.preprocess,
                                    raw=bool(captures))
                           .shuffle(len(idx), seed=cfg.seed + lab, reshuffle_each_iteration=True).repeat())
        ds = tf.data.Dataset.sample_from_datasets(streams, weights=[1.0 / len(streams)] * len(streams),
                                                  seed=cfg.seed)
    else:
        ds = (_decoded(paths, tuple(per_row), spec.preprocess, raw=bool(captures))
              .shuffle(len(rows), seed=cfg.seed, reshuffle_each_iteration=True).repeat())
    if captures:
        seeds = tf.data.Dataset.random(seed=cfg.seed + 11)
        ds = tf.data.Dataset.zip((ds, seeds)).map(_capture_fn(captures, spec.preprocess),
                                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(bs, drop_remainder=False)
    if augment and cfg.augment.enabled:
        aug, seed = cfg.augment, cfg.seed
        ds = ds.map(lambda x, *t: (augment_batch(x, aug, seed), *t), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(_normalize_fn(spec), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    steps = math.ceil(len(rows) / bs)
    if cfg.max_steps_per_epoch:
        steps = min(steps, int(cfg.max_steps_per_epoch))
    return Pipeline(ds, steps, len(rows), list(rows))


def eval_pipeline(rows: list[dict], spec: ModelSpec, batch_size: int = 32, cache: bool = True) -> Pipeline:
    """Deterministic, un-augmented batches in manifest order (validation, test, features)."""
    import tensorflow as tf

    if not rows:
        raise DataError("an evaluation split is empty", "check the split manifest (`leukedge data split`)")
    paths = [r["abspath"] for r in rows]
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(paths), hard_targets(labels_of(rows, spec), spec)))
    ds = ds.map(_decode_fn(spec.preprocess), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    ds = ds.batch(batch_size).map(_normalize_fn(spec), num_parallel_calls=tf.data.AUTOTUNE,
                                  deterministic=True).prefetch(tf.data.AUTOTUNE)
    return Pipeline(ds, math.ceil(len(rows) / batch_size), len(rows), list(rows))
