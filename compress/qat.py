"""Quantization-aware fine-tuning (tfmot) for models whose post-training int8 misses parity.

``tfmot.quantization.keras.quantize_model`` inserts fake-quantization (int8 weights per
channel, int8 activations with moving-average ranges) and the model is fine-tuned with it,
by default towards the float model's own probabilities on the training images
(self-distillation): the objective is then exactly what the parity gates measure, "int8
behaves like the float model that was evaluated", not a new classifier.

DenseNet's standalone BatchNormalization (after every Concatenate) is not in tfmot's
registry; :func:`leukedge.compress.bn_fold.standalone_bn_to_depthwise` first rewrites those
as 1x1 depthwise convolutions, which tfmot quantizes and which is the graph the export
converts for a QAT model. After fine-tuning, the learned float weights are copied back into
that plain model and the usual export runs on it (calibration on training images,
full-integer int8): one export path, with Grad-CAM in the graph, for PTQ and QAT files alike.

Measured (experimental option, off by default): on a DenseNet201 checkpoint (1 epoch from
scratch, threshold 0.019; test split, 419 images), 800 training images, 50 steps, lr 1e-5:

=====================================  =========  ===========  ==========  ===========
int8 file vs the float32 file          agreement  mean |dp|    heatmap r   int8 AUC
=====================================  =========  ===========  ==========  ===========
post-training int8                     0.9475     0.083        0.86        0.962
QAT, tfmot's initial ranges            0.940      0.100        0.59        0.944
QAT, ranges from the float model       0.843      0.261        0.43        0.988
=====================================  =========  ===========  ==========  ===========

(the float model's AUC is 0.958). A short fine-tune moves a from-scratch DenseNet201 to a
different classifier (the last one ranks better but is calibrated differently, so decisions
at the validated threshold change), which parity rightly rejects. The fix for that model is
not here yet: longer QAT with the file converted from the QAT graph's own ranges is the
next thing to try. Use ``--qat`` when parity is measured afterwards, as ``compress`` does.

**Per-tensor QAT** (``QATConfig.per_tensor``, ``--qat --per-tensor``) is where it pays: one
scale per weight tensor removes the per-channel scale and zero-point vectors (3.1% of
float32 on EfficientNet-Lite0, enough to miss a 26% size target), which post-training
quantization cannot do (subtype EfficientNet-Lite0, validation: agreement 0.972, heatmap r
0.78). Fine-tuned 12 epochs (lr 5e-5) with the pruning fine-tune's feature (8) and Grad-CAM
(30) distillation terms (:func:`leukedge.compress.prune._trainee`), the per-tensor file
passes every gate: validation agreement 0.9975, heatmap r 0.973; test 1.000 / 0.978, at
25.7% of float32 (README, "Quantization-aware training").
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from leukedge.errors import ConfigError, ModelError
from leukedge.preprocess import normalize
from leukedge.spec import ModelSpec

from .bn_fold import standalone_bn_to_depthwise
from .recipe import QATRecipe
from .prune import (Checkpoints, FinetuneReport, _Batches, _LogEvery, _trainee, teacher_cams, teacher_feature_maps,
                    teacher_logits, teacher_targets)

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
        range_images: training images whose float activations set the initial quantizer
            ranges (see :func:`init_ranges`).
        seed: shuffling seed.
        per_tensor: fake-quantize every weight with one scale per tensor (tfmot's scheme with
            ``disable_per_axis``), for a file converted per tensor (``--per-tensor``): no
            per-channel scale and zero-point vectors, which on thin networks are ~3% of the
            float32 file (see :mod:`leukedge.compress.sizes`).
        feature_distill: weight of the feature-map distillation term (as
            :attr:`leukedge.compress.prune.PruneConfig.feature_distill`; 0 = off).
        cam_distill: weight of the Grad-CAM distillation term (as ``PruneConfig.cam_distill``).
        logit_distill: weight of the logit distillation term (as ``PruneConfig.logit_distill``).
        select_every: every this many epochs (and after the last), score the int8 file the
            weights would make on the validation split and keep the closest checkpoint's
            weights (0 = keep the last epoch's). Needs a ``select`` function (the compress
            pipeline passes one); it makes validation parity a selection criterion, so the
            test split is the one that measures the released file.
    """

    epochs: int = QATRecipe.epochs
    batch_size: int = QATRecipe.batch_size
    learning_rate: float = QATRecipe.lr
    distill: bool = True
    range_images: int = 64
    seed: int = 0
    per_tensor: bool = False
    feature_distill: float = QATRecipe.feature_distill
    cam_distill: float = QATRecipe.cam_distill
    logit_distill: float = QATRecipe.logit_distill
    select_every: int = QATRecipe.select_every

    def __post_init__(self):
        for name in ("feature_distill", "cam_distill", "logit_distill"):
            if getattr(self, name) < 0:
                raise ConfigError(f"QAT {name.replace('_', ' ')} weight must be >= 0, got {getattr(self, name)}",
                                  f"e.g. --set qat.{name}=8")
            if getattr(self, name) > 0 and not self.distill:
                raise ConfigError(f"QAT {name.replace('_', ' ')} needs distillation from the float model")
        if self.range_images < 1:
            raise ConfigError("QAT range initialisation needs at least 1 image")
        if self.select_every < 0:
            raise ConfigError(f"QAT checkpoint selection interval must be >= 0 epochs, got {self.select_every}",
                              "e.g. --set qat.select_every=2 (0 = keep the last epoch)")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("quantization-aware training needs at least 1 epoch and a batch size >= 1")
        if not self.learning_rate > 0:
            raise ConfigError(f"QAT learning rate must be > 0, got {self.learning_rate}", "e.g. --set qat.lr=1e-5")


@dataclass(kw_only=True)
class QATReport(FinetuneReport):
    """What quantization-aware fine-tuning did."""

    quantized_layers: int
    bn_rewritten: int
    ranges_initialised: int = 0
    weights_changed: float = 0.0


def quantize_aware(model, per_tensor: bool = False):
    """``(plain, qat)``: the export graph (standalone BN as depthwise, BN frozen) and its tfmot QAT model
    (weights fake-quantized per output channel, or per tensor with ``per_tensor``).

    Raises:
        ModelError: a layer tfmot cannot quantize.
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    plain = standalone_bn_to_depthwise(model)
    if plain is model:  # never train the caller's model in place
        plain = keras.models.clone_model(model)
        plain.set_weights(model.get_weights())
    for layer in plain.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # inference-mode statistics: small batches would disturb them
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit.default_8bit_quantize_scheme import (  # noqa: E501
        Default8BitQuantizeScheme)

    try:
        annotated = tfmot.quantization.keras.quantize_annotate_model(plain)
        qat = tfmot.quantization.keras.quantize_apply(annotated,
                                                      scheme=Default8BitQuantizeScheme(disable_per_axis=per_tensor))
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"tfmot cannot make '{model.name}' quantization-aware ({str(exc).splitlines()[0][:160]})",
                         "use post-training int8 (without --qat), or add a QuantizeConfig for that layer") from None
    return plain, qat


#: Activation-range variables of tfmot's wrappers, by what they observe.
_RANGE_SUFFIXES = ("output", "post_activation", "pre_activation")


def init_ranges(qat, plain, images: np.ndarray, batch_size: int = 4) -> int:
    """Start every activation quantizer at the range the float model really has.

    tfmot initialises activation ranges to [-6, 6] (the input's to [0, 0]) and moves them by
    an exponential moving average with decay 0.999: a short fine-tune (tens to hundreds of
    steps) would train against clipping at 6 that the exported file never has (the converter
    calibrates real ranges). Here each range starts at the min/max of the float tensor it
    quantizes over ``images`` (normalised), like the converter's calibration; the moving
    average then continues from there. With them the fake-quantized model computes what the
    exported file computes (tiny CNN: feature error 0.83 -> 0.10 before any training). On a
    DenseNet201 checkpoint it did not make the short fine-tune's parity better (see the
    module docstring): it is correct, not sufficient.

    Returns:
        the number of range variable pairs set.
    """
    import tf_keras as keras

    targets = []  # (min var, max var, kind, inner layer)
    for layer in qat.layers:
        inner = getattr(layer, "layer", None)
        if inner is None:
            continue
        by_name = {v.name.split("/")[-1].split(":")[0]: v for v in layer.weights}
        for kind in _RANGE_SUFFIXES:
            lo, hi = by_name.get(f"{kind}_min"), by_name.get(f"{kind}_max")
            if lo is not None and hi is not None:
                targets.append((lo, hi, kind, plain.get_layer(inner.name)))
    tensors = [t[3].input if t[2] == "pre_activation" else t[3].output for t in targets]
    probe = keras.Model(plain.input, tensors) if tensors else None
    mins = np.full(len(targets), np.inf)
    maxs = np.full(len(targets), -np.inf)
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        outs = probe(x, training=False) if probe is not None else []
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for j, (out, (_, _, kind, layer)) in enumerate(zip(outs, targets)):
            v = out.numpy()
            if kind == "pre_activation":  # a Dense/Conv's pre-activation = its input through kernel and bias
                v = v @ layer.kernel.numpy() + (layer.bias.numpy() if layer.use_bias else 0.0)
            mins[j], maxs[j] = min(mins[j], float(v.min())), max(maxs[j], float(v.max()))
    for (lo, hi, _, _), a, b in zip(targets, mins, maxs):
        lo.assign(min(a, 0.0))
        hi.assign(max(b, 0.0))
    quant_in = [layer for layer in qat.layers if type(layer).__name__ == "QuantizeLayer"]
    for layer in quant_in:  # the input quantizer
        by_name = {v.name.split("/")[-1].split(":")[0]: v for v in layer.weights}
        lo = next((v for k, v in by_name.items() if k.endswith("_min")), None)
        hi = next((v for k, v in by_name.items() if k.endswith("_max")), None)
        if lo is not None and hi is not None:
            lo.assign(min(float(images.min()), 0.0))
            hi.assign(max(float(images.max()), 0.0))
    return len(targets) + len(quant_in)


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
                 config: QATConfig | None = None, class_weight: dict | None = None, select=None):
    """Fine-tune ``model`` with fake int8 quantization; returns the float model to export and a report.

    Args:
        model: a flat tf_keras classifier (not modified).
        spec: its spec (task; preprocessing normalises the images).
        images_u8: (N, S, S, 3) uint8 training images (:func:`leukedge.preprocess.preprocess_uint8`).
        labels: (N,) integer targets, used when ``config.distill`` is False.
        config: QAT settings.
        class_weight: loss weights per label (label training only).
        select: ``fn(float_model) -> dict`` scoring the int8 file a checkpoint's weights make
            (a :func:`leukedge.compress.parity.candidate_record`, on the validation split);
            used when ``config.select_every`` > 0.

    Returns:
        (tf_keras model with the QAT-tuned weights, no fake-quant ops; :class:`QATReport`).
    """
    cfg = config or QATConfig()
    t0 = time.perf_counter()
    if cfg.distill:
        targets = teacher_targets(model, images_u8, spec, cfg.batch_size)
        class_weight = None
    else:
        targets = np.asarray(labels)
    feats = teacher_feature_maps(model, images_u8, spec, cfg.batch_size) if cfg.feature_distill else None
    cams = teacher_cams(model, images_u8, spec, targets, cfg.batch_size) if cfg.cam_distill else None
    logits = teacher_logits(model, images_u8, spec, cfg.batch_size) if cfg.logit_distill else None
    plain, qat = quantize_aware(model, cfg.per_tensor)

    calib = normalize(images_u8[np.random.default_rng(cfg.seed).permutation(len(images_u8))[:cfg.range_images]],
                      spec.preprocess)
    n_ranges = init_ranges(qat, plain, calib)
    log.info("QAT: %d activation ranges initialised from the float model on %d training images", n_ranges, len(calib))
    n_bn = sum(type(a).__name__ == "BatchNormalization" and type(b).__name__ == "DepthwiseConv2D"
               for a, b in zip(model.layers, plain.layers))
    before = [w.copy() for w in plain.get_weights()]
    # the same losses as the pruning fine-tune (probabilities, then feature / Grad-CAM / logit terms)
    trainee = _trainee(qat, spec, cfg, feats, cams, logits, cfg.learning_rate)
    seq = _Batches(images_u8, targets, spec, cfg.batch_size, cfg.seed, (feats, cams, logits))
    wrapped = sum(type(layer).__name__.startswith("QuantizeWrapper") for layer in qat.layers)
    terms = [f"{k} {getattr(cfg, k + '_distill'):g}" for k in ("feature", "cam", "logit") if getattr(cfg, k + "_distill")]
    log.info("quantization-aware fine-tuning (weights per %s): %d wrapped layers, %d epoch(s) x %d batches of %d, "
             "lr %.1e, %s%s (the first steps trace the graph and are slow)", "tensor" if cfg.per_tensor else "channel",
             wrapped, cfg.epochs, len(seq), cfg.batch_size, cfg.learning_rate,
             "towards the float model's probabilities" if cfg.distill else "on the labels",
             f" + distillation {', '.join(terms)}" if terms else "")
    callbacks = [_LogEvery(max(1, len(seq) // 5), "QAT fine-tune")]
    if cfg.select_every:
        if select is None:
            raise ConfigError("QAT checkpoint selection needs a scoring function",
                              "run it through `leukedge compress --qat-select-every N`")
        def tuned():
            copy_back(qat, plain)
            return plain

        callbacks.append(Checkpoints(tuned, select, cfg.select_every, keep=lambda m: m.get_weights(), label="QAT int8"))
    hist = trainee.fit(seq, epochs=cfg.epochs, verbose=0, class_weight=class_weight, shuffle=False,
                       callbacks=callbacks)
    copy_back(qat, plain)
    selection = None
    if cfg.select_every:
        chk = callbacks[-1]
        plain.set_weights(chk.best_model)
        selection = chk.selection()
        log.info("QAT: kept the weights of epoch %d of %d (closest int8 file on validation)",
                 chk.best["epoch"], cfg.epochs)
    after = plain.get_weights()
    changed = sum(float(np.sum(a != b)) for a, b in zip(before, after)) / max(1, sum(a.size for a in after))
    report = QATReport(steps=len(seq) * cfg.epochs, n_images=len(images_u8), quantized_layers=wrapped,
                       bn_rewritten=n_bn, ranges_initialised=n_ranges,
                       finetune_loss=[float(v) for v in hist.history.get("loss", [])], weights_changed=changed,
                       seconds=time.perf_counter() - t0, config=asdict(cfg), selection=selection)
    log.info("QAT done in %.0f s: %.1f%% of the weights changed; loss %s", report.seconds, 100 * changed,
             ", ".join(f"{v:.4f}" for v in report.finetune_loss))
    return plain, report
