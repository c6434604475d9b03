"""Quantization-aware fine-tuning (tfmot) for models whose post-training int8 misses parity.

``tfmot.quantization.keras.quantize_model`` inserts fake-quantization (int8 weights per
channel, int8 activations with moving-average ranges) and the model is fine-tuned with it,
by default towards the float model's own probabilities on the training images
(self-distillation): the objective is then exactly what the parity gates measure, "int8
behaves like the float model that was evaluated", not a new classifier.

DenseNet's standalone BatchNormalization (after every Concatenate) is not in tfmot's
registry; :func:`leukedge.compress.bn_fold.standalone_bn_to_depthwise` first rewrites those
as 1x1 depthwise convolutions, which tfmot quantizes and which is the graph the export
converts anyway. After fine-tuning, the learned float weights are copied back into that
plain model and the usual export runs on it (calibration on training images, full-integer
int8): one export path, with Grad-CAM in the graph, for PTQ and QAT files alike.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from leukedge.errors import ConfigError, ModelError
from leukedge.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class QATConfig:
    """Quantization-aware fine-tuning settings.

    Attributes:
        epochs: passes over the training images.
        batch_size: images per step.
        learning_rate: Adam learning rate (small: the weights should move within a
            quantization step or two, not relearn the task).
        distill: fine-tune towards the float model's probabilities (else the labels).
        seed: shuffling seed.
    """

    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 1e-5
    distill: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("quantization-aware training needs at least 1 epoch and a batch size >= 1")
        if not self.learning_rate > 0:
            raise ConfigError(f"QAT learning rate must be > 0, got {self.learning_rate}", "e.g. --qat-lr 1e-5")


@dataclass
class QATReport:
    """What quantization-aware fine-tuning did."""

    steps: int
    n_images: int
    quantized_layers: int
    bn_rewritten: int
    finetune_loss: list[float] = field(default_factory=list)
    weights_changed: float = 0.0
    seconds: float = 0.0
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def quantize_aware(model):
    """``(plain, qat)``: the export graph (standalone BN as depthwise, BN frozen) and its tfmot QAT model.

    Raises:
        ModelError: a layer tfmot cannot quantize.
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    from .bn_fold import standalone_bn_to_depthwise

    plain = standalone_bn_to_depthwise(model)
    if plain is model:  # never train the caller's model in place
        plain = keras.models.clone_model(model)
        plain.set_weights(model.get_weights())
    for layer in plain.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # inference-mode statistics: small batches would disturb them
    try:
        qat = tfmot.quantization.keras.quantize_model(plain)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"tfmot cannot make '{model.name}' quantization-aware ({str(exc).splitlines()[0][:160]})",
                         "use post-training int8 (without --qat), or add a QuantizeConfig for that layer") from None
    return plain, qat


def copy_back(qat, plain) -> int:
    """Copy the fine-tuned float weights of ``qat``'s wrapped layers into ``plain``; returns the count.

    The wrappers keep each layer's variables under their original names (``conv1/conv/kernel:0``)
    beside their own quantizer variables (``quant_conv1/conv/kernel_min:0``...).

    Raises:
        ModelError: a weight of ``plain`` has no counterpart of the same shape.
    """
    source = {}
    for v in qat.weights:
        source.setdefault(v.name, v)
    n = 0
    for layer in plain.layers:
        for v in layer.weights:
            src = source.get(v.name)
            if src is None or tuple(src.shape) != tuple(v.shape):
                raise ModelError(f"QAT model has no weight '{v.name}' of shape {tuple(v.shape)}",
                                 "the quantize wrappers renamed a variable; report this with the backbone name")
            v.assign(src)
            n += 1
    return n


def qat_finetune(model, spec: ModelSpec, images_u8: np.ndarray, labels: np.ndarray,
                 config: QATConfig | None = None, class_weight: dict | None = None):
    """Fine-tune ``model`` with fake int8 quantization; returns the float model to export and a report.

    Args:
        model: a flat tf_keras classifier (not modified).
        spec: its spec (task; preprocessing normalises the images).
        images_u8: (N, S, S, 3) uint8 training images (:func:`leukedge.preprocess.preprocess_uint8`).
        labels: (N,) integer targets, used when ``config.distill`` is False.
        config: QAT settings.
        class_weight: loss weights per label (label training only).

    Returns:
        (tf_keras model with the QAT-tuned weights, no fake-quant ops; :class:`QATReport`).
    """
    import tf_keras as keras

    from .prune import _Batches, _LogEvery, teacher_targets

    cfg = config or QATConfig()
    t0 = time.perf_counter()
    if cfg.distill:
        targets = teacher_targets(model, images_u8, spec, cfg.batch_size)
        class_weight = None
    else:
        targets = np.asarray(labels)
    plain, qat = quantize_aware(model)
    n_bn = sum(type(a).__name__ == "BatchNormalization" and type(b).__name__ == "DepthwiseConv2D"
               for a, b in zip(model.layers, plain.layers))
    before = [w.copy() for w in plain.get_weights()]
    if spec.task == "binary":
        loss = keras.losses.BinaryCrossentropy()
    else:
        loss = keras.losses.CategoricalCrossentropy() if cfg.distill else keras.losses.SparseCategoricalCrossentropy()
    qat.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=loss)
    seq = _Batches(images_u8, targets, spec, cfg.batch_size, cfg.seed)
    wrapped = sum(type(layer).__name__.startswith("QuantizeWrapper") for layer in qat.layers)
    log.info("quantization-aware fine-tuning: %d wrapped layers, %d epoch(s) x %d batches of %d, lr %.1e, %s "
             "(the first steps trace the graph and are slow)", wrapped, cfg.epochs, len(seq), cfg.batch_size,
             cfg.learning_rate, "towards the float model's probabilities" if cfg.distill else "on the labels")
    hist = qat.fit(seq, epochs=cfg.epochs, verbose=0, class_weight=class_weight, shuffle=False,
                   callbacks=[_LogEvery(max(1, len(seq) // 5), "QAT fine-tune")])
    copy_back(qat, plain)
    after = plain.get_weights()
    changed = sum(float(np.sum(a != b)) for a, b in zip(before, after)) / max(1, sum(a.size for a in after))
    report = QATReport(len(seq) * cfg.epochs, len(images_u8), wrapped, n_bn,
                       [float(v) for v in hist.history.get("loss", [])], changed, time.perf_counter() - t0, asdict(cfg))
    log.info("QAT done in %.0f s: %.1f%% of the weights changed; loss %s", report.seconds, 100 * changed,
             ", ".join(f"{v:.4f}" for v in report.finetune_loss))
    return plain, report
