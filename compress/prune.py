"""Magnitude pruning with tensorflow-model-optimization, sparsity measured and asserted.

``prune_low_magnitude`` wraps every prunable layer (Conv2D, DepthwiseConv2D, Dense) with a
:class:`PolynomialDecay` schedule that reaches the target sparsity on the last fine-tuning
step; ``UpdatePruningStep`` advances the schedule; after fine-tuning on the TRAINING split,
``strip_pruning`` removes the wrappers. The sparsity of every pruned kernel is then measured
on the stripped model and checked against the target (tfmot's own integration tests do the
same instead of trusting the schedule). tfmot needs Keras 2 models (``tf_keras``).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from leukedge.errors import ConfigError, ModelError
from leukedge.preprocess import normalize
from leukedge.spec import ModelSpec

from .block_prune import block_conv, block_runs, blockable, unblock
from .cam_graph import cam_scores
from .cluster import check_clusters, cluster_pruned, clustered_copy, current_kernel, distinct_values, strip
from .parity import closest
from .recipe import PruneRecipe

log = logging.getLogger(__name__)

#: Layer types whose kernels tfmot prunes (its prune_registry), with the kernel attribute.
#: DepthwiseConv2D is supported by tfmot but has no prunable weights (left dense).
PRUNED_KERNELS = {"Conv1D": "kernel", "Conv2D": "kernel", "Conv2DTranspose": "kernel", "Conv3D": "kernel",
                  "Dense": "kernel", "SeparableConv1D": "pointwise_kernel", "SeparableConv2D": "pointwise_kernel"}


@dataclass
class PruneConfig:
    """Pruning and fine-tuning settings.

    Attributes:
        target_sparsity: fraction of zeros in every pruned kernel at the end (0 < s < 1).
        epochs: fine-tuning epochs over the training images.
        end_fraction: the schedule reaches the target sparsity after this fraction of the
            steps; the rest fine-tunes with the masks fixed (recovers accuracy).
        batch_size: images per step.
        learning_rate: Adam learning rate of the fine-tuning.
        frequency: steps between mask updates (None: ~10 updates over the schedule).
        freeze_batchnorm: keep BatchNormalization statistics fixed (inference mode) while
            fine-tuning: small batches would otherwise disturb them.
        distill: fine-tune towards the unpruned model's own probabilities on the training
            images (self-distillation) instead of the labels: the pruned model should stay the
            same function (threshold, calibration, parity), not become a new classifier.
        feature_distill: with ``distill``, also match the unpruned model's last feature map
            (mean squared error relative to its mean square, times this weight): the Grad-CAM
            heatmap is computed from that map, so matching only the probabilities lets the
            pruned model find other features and the heatmaps drift. It is a trade-off,
            measured on EfficientNet-Lite0 at 50% (4 epochs, test split, threshold 0.94):
            weight 0 -> |delta accuracy| 0.010, agreement 0.976, heatmap r 0.67; weight 1 ->
            0.038, 0.948, 0.81. The default 0 keeps the decisions closest.
        cam_distill: with ``distill``, also pull the pruned model's Grad-CAM map (the head's
            closed form on the feature map, the same the exported file computes) towards the
            unpruned one's, with weight ``cam_distill`` on ``1 - per-image Pearson
            correlation`` (the heatmap parity gate's own measure; attention transfer,
            Zagoruyko & Komodakis 2017). The class is the unpruned model's (positive class for
            binary, its predicted class for subtype). Feature distillation matches the map's
            values; this matches what the heatmap shows.
        logit_distill: with ``distill``, also match the unpruned model's logits (mean squared
            error; subtype logits centred, softmax ignores a common shift), times this weight.
            Decisions are thresholds on the logit: the probability loss barely notices a logit
            error far from 0.5 (binary EfficientNet-Lite0, threshold 0.94: a validation image at
            p 0.986 -> 0.927, logit 4.3 -> 2.5, costs 0.04 of cross-entropy), this term does.
        tolerance: allowed |measured - target| sparsity per layer (plus rounding of tiny layers).
        min_weights: kernels with fewer weights than this stay dense (the stem convolution
            and the narrowest 1x1 projections: a negligible share of the file, but pruning
            them costs the most accuracy); 0 prunes every prunable layer.
        block: prune whole blocks of this many consecutive input weights of one output
            (tfmot's block sparsity, ranked by mean |w|; Conv2D kernels through
            :mod:`leukedge.compress.block_prune`); 1 prunes weight by weight. Blocks are
            contiguous in the TFLite file, so the pruned file gzips smaller; a layer whose
            input size is not a multiple of ``block`` is pruned weight by weight. Measured on
            the EfficientNet-Lite0 subtype model at 50% (gzip of the pruned int8 file, % of
            float32; test heatmap r): weight by weight 18.1, 0.909; blocks of 4: 16.1, 0.859;
            blocks of 8: 15.0, 0.816 (and agreement 0.952). Smaller, but the heatmaps drift.
        clusters: after pruning, tie each pruned kernel to this many shared values (tfmot's
            sparsity-preserving weight clustering, :mod:`leukedge.compress.cluster`), fine-tuned
            with the same distillation losses; 0 = no clustering. Makes the pruned int8 file
            gzip smaller (each channel then holds <= clusters + 1 int8 values). Measured on the
            EfficientNet-Lite0 subtype model (8/30/32, 8 clustering epochs): gzip 18.1% of
            float32 -> 16.1% with 32 clusters, every parity gate passing on validation and test.
        cluster_epochs: fine-tuning epochs of the clustering.
        cluster_lr: Adam learning rate of the clustering fine-tune (tfmot's examples: 1e-5;
            a centroid's gradient sums over every weight it stands for).
        seed: shuffling seed.
        select_every: every this many epochs of the last fine-tune (clustering when
            ``clusters``, else pruning once the sparsity target is reached) and after its last
            epoch, score the int8 file the weights make on the validation split and keep the
            closest checkpoint (0 = the last epoch's). Needs a ``select`` function (the compress
            pipeline passes one); validation parity then becomes a selection criterion, so the
            test split is the one that measures the file.
    """

    target_sparsity: float = 0.5
    epochs: int = PruneRecipe.epochs
    end_fraction: float = 0.5
    batch_size: int = PruneRecipe.batch_size
    learning_rate: float = PruneRecipe.lr
    frequency: int | None = None
    freeze_batchnorm: bool = True
    distill: bool = PruneRecipe.distill
    feature_distill: float = PruneRecipe.feature_distill
    cam_distill: float = PruneRecipe.cam_distill
    logit_distill: float = PruneRecipe.logit_distill
    tolerance: float = 0.01
    min_weights: int = PruneRecipe.min_weights
    block: int = PruneRecipe.block
    clusters: int = PruneRecipe.clusters
    cluster_epochs: int = PruneRecipe.cluster_epochs
    cluster_lr: float = PruneRecipe.cluster_lr
    seed: int = 0
    select_every: int = PruneRecipe.select_every

    def __post_init__(self):
        if not 0.0 < float(self.target_sparsity) < 1.0:
            raise ConfigError(f"target sparsity must be in (0, 1), got {self.target_sparsity}", "e.g. --prune 0.5")
        if not 0.0 < float(self.end_fraction) <= 1.0:
            raise ConfigError(f"end_fraction must be in (0, 1], got {self.end_fraction}")
        if self.feature_distill < 0:
            raise ConfigError(f"feature_distill must be >= 0, got {self.feature_distill}")
        if self.cam_distill < 0:
            raise ConfigError(f"cam_distill must be >= 0, got {self.cam_distill}")
        if self.logit_distill < 0:
            raise ConfigError(f"logit_distill must be >= 0, got {self.logit_distill}")
        if self.min_weights < 0:
            raise ConfigError(f"min_weights must be >= 0, got {self.min_weights}")
        if int(self.block) != self.block or self.block < 1:
            raise ConfigError(f"block must be a whole number >= 1, got {self.block}", "e.g. --set prune.block=8")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("pruning needs at least 1 epoch and a batch size >= 1")
        if int(self.clusters) != self.clusters or self.clusters == 1 or self.clusters < 0 or self.clusters > 256:
            raise ConfigError(f"clusters must be 0 (off) or a whole number in 2..256, got {self.clusters}",
                              "e.g. --set prune.clusters=16")
        if self.select_every < 0:
            raise ConfigError(f"pruning checkpoint selection interval must be >= 0 epochs, got {self.select_every}",
                              "e.g. --set prune.select_every=2 (0 = keep the last epoch)")
        if self.clusters and self.cluster_epochs < 1:
            raise ConfigError("clustering needs at least 1 fine-tuning epoch (prune.cluster_epochs)")


@dataclass(kw_only=True)
class FinetuneReport:
    """What every fine-tune of compression (pruning, QAT) reports, beside its own fields."""

    steps: int
    n_images: int = 0
    finetune_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)
    selection: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(kw_only=True)
class PruneReport(FinetuneReport):
    """What pruning did: per-layer sparsity of the stripped model, and the fine-tuning."""

    target_sparsity: float
    begin_step: int
    end_step: int
    frequency: int
    layers: dict[str, dict] = field(default_factory=dict)
    overall_sparsity: float = 0.0
    kept_dense: dict[str, int] = field(default_factory=dict)
    all_kernels_sparsity: float = 0.0
    clustering: dict = field(default_factory=dict)


class _Batches:
    """A keras Sequence over preprocessed uint8 images, normalised per batch (saves memory)."""

    def __new__(cls, *a, **k):  # built lazily so importing this module needs no TensorFlow
        import tf_keras as keras

        class Seq(keras.utils.Sequence):
            def __init__(self, images_u8, labels, spec, batch_size, seed, extra=()):
                super().__init__()
                self.x, self.y, self.spec, self.bs = images_u8, labels, spec, batch_size
                self.extra = [e for e in extra if e is not None]
                self.rng = np.random.default_rng(seed)
                self.order = self.rng.permutation(len(self.x))

            def __len__(self):
                return math.ceil(len(self.x) / self.bs)

            def __getitem__(self, i):
                idx = self.order[i * self.bs:(i + 1) * self.bs]
                x = normalize(self.x[idx], self.spec.preprocess)
                if not self.extra:
                    return x, self.y[idx]
                return x, (self.y[idx], *(e[idx].astype(np.float32) for e in self.extra))

            def on_epoch_end(self):
                self.order = self.rng.permutation(len(self.x))

        return Seq(*a, **k)


def teacher_targets(model, images_u8: np.ndarray, spec: ModelSpec, batch_size: int = 32) -> np.ndarray:
    """The unpruned model's probabilities on the training images (soft targets), (N, outputs)."""
    log.info("self-distillation: scoring %d training images with the unpruned model", len(images_u8))
    out = [model.predict(normalize(images_u8[i:i + batch_size], spec.preprocess), verbose=0)
           for i in range(0, len(images_u8), batch_size)]
    return np.concatenate(out).astype(np.float32)


def teacher_feature_maps(model, images_u8: np.ndarray, spec: ModelSpec, batch_size: int = 32) -> np.ndarray:
    """The unpruned model's last feature map (layer ``features``) on the training images, float16."""
    import tf_keras as keras

    try:
        fmodel = keras.Model(model.input, model.get_layer("features").output)
    except ValueError:
        raise ModelError(f"model '{model.name}' has no layer 'features' for feature distillation",
                         "build it with leukedge.train.model.build_classifier, or set feature_distill=0") from None
    out = [fmodel.predict(normalize(images_u8[i:i + batch_size], spec.preprocess), verbose=0).astype(np.float16)
           for i in range(0, len(images_u8), batch_size)]
    return np.concatenate(out)


def _own_layer(model, name: str):
    """Layer ``name`` of ``model``, or the pruning wrapper around it."""
    for layer in model.layers:
        if layer.name == name or getattr(getattr(layer, "layer", None), "name", None) == name:
            return layer
    raise ModelError(f"model '{model.name}' has no layer '{name}' for distillation",
                     "build it with leukedge.train.model.build_classifier, or turn distillation off")


def _gradcam_layer(hidden, out, fmap_shape):
    """A keras layer ``[feature map, hidden ReLU output] -> (B, classes, h*w)`` Grad-CAM maps.

    The closed form of the exported ``cam`` output, built by the same
    :func:`leukedge.compress.cam_graph.cam_scores`. The kernels are read at call time, so a
    pruning wrapper's masked kernel is the one used.
    """
    import tensorflow as tf
    import tf_keras as keras

    h, w, d = int(fmap_shape[1]), int(fmap_shape[2]), int(fmap_shape[3])
    kernels = lambda: (current_kernel(hidden), current_kernel(out))  # noqa: E731

    class GradCam(keras.layers.Layer):
        def call(self, inputs):
            a, hid = inputs
            w1, w2 = kernels()
            active = tf.cast(hid > 0.0, a.dtype)                               # (B, U)
            active = tf.reshape(tf.repeat(active[:, None, :], h * w, axis=1), (-1, active.shape[-1]))
            cams = cam_scores(tf.reshape(a, (-1, d)), active, w1, w2, h * w)  # (B hw, C)
            cams = tf.reshape(tf.nn.relu(cams), (-1, h * w, cams.shape[-1]))
            # (B, C, hw): classes before cells, so keras never squeezes a binary map's last axis
            return tf.transpose(cams, (0, 2, 1))

    return GradCam(name="gradcam_distill")


def _logit_layer(out):
    """A keras layer ``hidden ReLU output -> logits`` of the output layer ``out`` (its kernel
    and bias read at call time, so a pruning wrapper's masked kernel is the one used); subtype
    logits centred per image."""
    import tensorflow as tf
    import tf_keras as keras

    class Logit(keras.layers.Layer):
        def call(self, hid):
            z = tf.matmul(hid, current_kernel(out)) + getattr(out, "layer", out).bias
            return z if z.shape[-1] == 1 else z - tf.reduce_mean(z, axis=1, keepdims=True)

    return Logit(name="logit_distill")


def teacher_logits(model, images_u8: np.ndarray, spec: ModelSpec, batch_size: int = 32) -> np.ndarray:
    """The unpruned model's logits (subtype: centred) on the training images, (N, outputs)."""
    import tf_keras as keras

    hidden, out = _own_layer(model, "head_dense"), _own_layer(model, "probability")
    lmodel = keras.Model(model.input, _logit_layer(out)(hidden.output))
    return np.concatenate([lmodel.predict(normalize(images_u8[i:i + batch_size], spec.preprocess), verbose=0)
                           for i in range(0, len(images_u8), batch_size)]).astype(np.float32)


def _cam_correlation_loss(hw: int):
    """Keras loss ``1 - Pearson(student map, teacher map)`` per image.

    ``y_true`` is ``[teacher map (hw), one-hot class (C)]``; ``y_pred`` every class's map.
    """
    import tensorflow as tf

    def cam_correlation_loss(y_true, y_pred):
        t, onehot = y_true[:, :hw], y_true[:, hw:]
        s = tf.reduce_sum(y_pred * onehot[:, :, None], axis=1)
        s = s - tf.reduce_mean(s, axis=1, keepdims=True)
        t = t - tf.reduce_mean(t, axis=1, keepdims=True)
        den = tf.sqrt(tf.reduce_sum(s * s, axis=1) * tf.reduce_sum(t * t, axis=1) + 1e-12)
        return 1.0 - tf.reduce_sum(s * t, axis=1) / den

    return cam_correlation_loss


def teacher_cams(model, images_u8: np.ndarray, spec: ModelSpec, targets: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The unpruned model's Grad-CAM maps and their class, ``(N, h*w + C)`` (map, one-hot).

    The class is the positive one (binary) or the unpruned model's predicted one (subtype,
    from its probabilities ``targets``), as in the exported ``cam`` output.
    """
    import tf_keras as keras

    fmap = _own_layer(model, "features").output
    hidden, out = _own_layer(model, "head_dense"), _own_layer(model, "probability")
    cmodel = keras.Model(model.input, _gradcam_layer(hidden, out, fmap.shape)([fmap, hidden.output]))
    maps = np.concatenate([cmodel.predict(normalize(images_u8[i:i + batch_size], spec.preprocess), verbose=0)
                           for i in range(0, len(images_u8), batch_size)])
    n_cls = maps.shape[1]
    cls = np.zeros(len(maps), int) if n_cls == 1 else np.argmax(np.asarray(targets).reshape(len(maps), -1), axis=1)
    chosen = maps[np.arange(len(maps)), cls, :]
    return np.concatenate([chosen, np.eye(n_cls, dtype=np.float32)[cls]], axis=1).astype(np.float32)


def schedule_steps(total_steps: int, frequency: int | None, end_fraction: float = 1.0) -> tuple[int, int, int]:
    """(begin_step, end_step, frequency) so that a mask update lands exactly on ``end_step``.

    tfmot's wrapper increments its step before masking, so training steps are 1..total and a
    mask update happens when ``(step - begin) % frequency == 0`` and ``begin <= step <= end``.
    ``end_step`` is ``end_fraction`` of the steps (at least 1).
    """
    total = max(1, int(total_steps))
    end = max(1, min(total, int(round(total * float(end_fraction)))))
    freq = int(frequency) if frequency else max(1, end // 10)
    freq = min(freq, end)
    begin = end % freq  # (end - begin) is a multiple of freq
    return begin, end, freq


def measure_sparsity(model, names=None) -> dict[str, dict]:
    """Fraction of exact zeros in every prunable kernel of a (stripped) model.

    Args:
        model: a tf_keras model.
        names: only these layers (e.g. the ones tfmot wrapped); None = every prunable type.
    """
    out = {}
    for layer in model.layers:
        attr = PRUNED_KERNELS.get(type(layer).__name__)
        if attr is None or not hasattr(layer, attr) or (names is not None and layer.name not in names):
            continue
        w = getattr(layer, attr).numpy()
        out[layer.name] = {"type": type(layer).__name__, "size": int(w.size),
                           "zeros": int(np.sum(w == 0)), "sparsity": float(np.mean(w == 0))}
    return out


def check_sparsity(layers: dict[str, dict], target: float, tolerance: float = 0.01) -> None:
    """Raise when a pruned kernel's sparsity is off target (half an element of rounding allowed).

    Raises:
        ModelError: a layer whose measured sparsity differs from the target.
    """
    if not layers:
        raise ModelError("no prunable (Conv2D/Dense) layers found to measure")
    bad = {n: d["sparsity"] for n, d in layers.items()
           if abs(d["sparsity"] - target) > tolerance + 1.0 / d["size"]}
    if bad:
        first = next(iter(bad.items()))
        raise ModelError(f"pruning missed the target sparsity {target:.2f} in {len(bad)} layer(s) "
                         f"(e.g. {first[0]}: {first[1]:.3f})", "fine-tune for more steps or check the schedule")


def prune_model(model, spec: ModelSpec, images_u8: np.ndarray, labels: np.ndarray,
                config: PruneConfig | None = None, class_weight: dict | None = None, select=None):
    """Prune ``model`` to the target sparsity while fine-tuning on training images.

    Args:
        model: a flat tf_keras classifier (not modified; a pruned copy is returned).
        spec: its spec (task, preprocessing used to normalise the images).
        images_u8: (N, S, S, 3) uint8 training images from :func:`leukedge.preprocess.preprocess_uint8`.
        labels: (N,) integer targets (``spec.label_of``).
        config: pruning settings.
        class_weight: loss weights per label (e.g. inverse frequency).
        select: ``fn(float_model) -> dict`` scoring the int8 file a checkpoint makes (a
            :func:`leukedge.compress.parity.candidate_record`, on the validation split); used
            when ``config.select_every`` > 0.

    Returns:
        (stripped pruned tf_keras model, :class:`PruneReport`).

    Raises:
        ModelError: the stripped model's sparsity is off target.
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    cfg = config or PruneConfig()
    t0 = time.perf_counter()
    if cfg.distill:
        targets = teacher_targets(model, images_u8, spec, cfg.batch_size)
        class_weight = None  # the teacher's probabilities already carry the balance it learned
    else:
        targets = np.asarray(labels)
    feats = cams = logits = None
    if cfg.distill and cfg.feature_distill > 0:
        log.info("feature distillation: the unpruned model's feature maps of %d training images", len(images_u8))
        feats = teacher_feature_maps(model, images_u8, spec, cfg.batch_size)
    if cfg.distill and cfg.cam_distill > 0:
        log.info("Grad-CAM distillation: the unpruned model's heatmaps of %d training images", len(images_u8))
        cams = teacher_cams(model, images_u8, spec, targets, cfg.batch_size)
    if cfg.distill and cfg.logit_distill > 0:
        log.info("logit distillation: the unpruned model's logits of %d training images", len(images_u8))
        logits = teacher_logits(model, images_u8, spec, cfg.batch_size)
    seq = _Batches(images_u8, targets, spec, cfg.batch_size, cfg.seed, (feats, cams, logits))
    steps = len(seq) * cfg.epochs
    begin, end, freq = schedule_steps(steps, cfg.frequency, cfg.end_fraction)
    schedule = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=float(cfg.target_sparsity),
                                                    begin_step=begin, end_step=end, frequency=freq)
    base = keras.models.clone_model(model)
    base.set_weights(model.get_weights())
    if cfg.freeze_batchnorm:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    kept_dense = {layer.name: _kernel_size(layer) for layer in base.layers
                  if 0 < _kernel_size(layer) < cfg.min_weights}

    if not any(_kernel_size(layer) for layer in base.layers if layer.name not in kept_dense):
        raise ModelError(f"no layer of '{model.name}' has a prunable kernel of >= {cfg.min_weights} weights",
                         "lower prune.min_weights (0 prunes every Conv/Dense layer)")

    blocked: set[str] = set()

    def wrap(layer):
        if _kernel_size(layer) == 0 or layer.name in kept_dense:
            return layer
        if cfg.block > 1:
            # (tfmot squeezes the kernel: a single output column would not stay 2-D)
            dense = (type(layer).__name__ == "Dense" and int(layer.kernel.shape[0]) % cfg.block == 0
                     and int(layer.kernel.shape[1]) > 1)
            if dense or blockable(layer, cfg.block):
                blocked.add(layer.name)
                return tfmot.sparsity.keras.prune_low_magnitude(layer if dense else block_conv(layer),
                                                                pruning_schedule=schedule, block_size=(cfg.block, 1))
        return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)

    try:
        # tfmot's documented way to prune a subset of layers: clone with a wrapping function.
        pruned = keras.models.clone_model(base, clone_function=wrap)
    except ValueError as exc:
        raise ModelError(f"tfmot cannot prune this model ({str(exc).splitlines()[0]})",
                         "build it with tf_keras (TF_USE_LEGACY_KERAS=1 before importing TensorFlow)") from None
    trainee = _trainee(pruned, spec, cfg, feats, cams, logits, cfg.learning_rate)
    wrapped = {l.layer.name for l in pruned.layers if _is_pruning_wrapper(l) and getattr(l, "prunable_weights", None)}
    log.info("pruning %d layers to %.0f%% sparsity: %d steps (%d epoch(s) x %d batches of %d), mask update every %d "
             "steps from step %d to %d, then fine-tuning with fixed masks (the first steps trace the graph and are slow)",
             len(wrapped),
             100 * cfg.target_sparsity, steps, cfg.epochs, len(seq), cfg.batch_size, freq, begin, end)
    if cfg.select_every and select is None:
        raise ConfigError("pruning checkpoint selection needs a scoring function",
                          "run it through `leukedge compress --set prune.select_every=N`")
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep(), _LogEvery(max(1, len(seq) // 5))]
    chk = None
    if cfg.select_every and not cfg.clusters:  # with clustering, the clustering fine-tune's epochs are scored
        chk = Checkpoints(lambda: _strip_pruned(_snapshot(pruned), blocked), select, cfg.select_every,
                          first=-(-end // len(seq)), label="pruned")  # from the epoch the target sparsity is reached
        callbacks.append(chk)
    hist = trainee.fit(seq, epochs=cfg.epochs, verbose=0, class_weight=class_weight, shuffle=False,
                       callbacks=callbacks)
    stripped = chk.best_model if chk else _strip_pruned(pruned, blocked)
    layers = measure_sparsity(stripped, wrapped)
    for name in blocked & set(layers):
        runs = block_runs(getattr(stripped.get_layer(name), "kernel").numpy(), cfg.block)
        layers[name].update(block=int(cfg.block), zero_blocks=runs["zero_blocks"], mixed_blocks=runs["mixed_blocks"])
    if cfg.block > 1:
        log.info("block pruning (blocks of %d input weights): %d of %d pruned layers", cfg.block, len(blocked),
                 len(wrapped))
    if len(layers) != len(wrapped):
        raise ModelError(f"{len(wrapped)} layers were pruned but {len(layers)} kernels could be measured")
    total = sum(d["size"] for d in layers.values())
    overall = sum(d["zeros"] for d in layers.values()) / max(1, total)
    every = measure_sparsity(stripped)
    all_sparsity = sum(d["zeros"] for d in every.values()) / max(1, sum(d["size"] for d in every.values()))
    check_sparsity(layers, cfg.target_sparsity, cfg.tolerance)
    clustering = {}
    if cfg.clusters:
        stripped, clustering, chk = _cluster_phase(stripped, set(layers), spec, cfg, seq, feats, cams, logits,
                                                   class_weight, select)
        after = measure_sparsity(stripped, wrapped)
        for name, d in after.items():  # the zeros must survive the clustering
            layers[name]["sparsity_after_clustering"] = d["sparsity"]
        check_sparsity(after, cfg.target_sparsity, cfg.tolerance)
    report = PruneReport(target_sparsity=float(cfg.target_sparsity), steps=steps, begin_step=begin, end_step=end,
                         frequency=freq, layers=layers, overall_sparsity=float(overall), kept_dense=kept_dense,
                         all_kernels_sparsity=float(all_sparsity),
                         finetune_loss=[float(v) for v in hist.history.get("loss", [])],
                         seconds=time.perf_counter() - t0, n_images=len(images_u8), config=asdict(cfg),
                         clustering=clustering, selection=chk.selection() if chk else None)
    log.info("pruned %d layers: their kernel sparsity %.3f (target %.2f); %d small layer(s) kept dense "
             "(< %d weights); sparsity over every prunable kernel %.3f; %.0f s",
             len(layers), overall, cfg.target_sparsity, len(kept_dense), cfg.min_weights, all_sparsity, report.seconds)
    return stripped, report


def _trainee(student, spec: ModelSpec, cfg: PruneConfig, feats, cams, logits, learning_rate: float):
    """``student`` (pruning-, clustering- or QAT-wrapped) compiled with the distillation outputs.

    Extra outputs on the same (wrapped) layers: clone_model re-calls unwrapped layers, so they
    have a node per graph; the latest one (-1) is the student's.
    """
    import tf_keras as keras

    if spec.task == "binary":
        loss = keras.losses.BinaryCrossentropy()
    else:
        loss = keras.losses.CategoricalCrossentropy() if cfg.distill else keras.losses.SparseCategoricalCrossentropy()
    outputs, losses, weights = [student.output], [loss], [1.0]
    fmap = _own_layer(student, "features").get_output_at(-1)
    if feats is not None:
        # the feature map, pulled towards the teacher's with MSE scaled by 1 / mean square
        # (so the weight is scale-free)
        mean_sq = float(np.mean(np.square(feats.astype(np.float32)))) or 1.0
        outputs, losses, weights = outputs + [fmap], losses + ["mse"], weights + [cfg.feature_distill / mean_sq]
    if cams is not None:
        hidden, out = _own_layer(student, "head_dense"), _own_layer(student, "probability")
        cam = _gradcam_layer(hidden, out, fmap.shape)([fmap, hidden.get_output_at(-1)])
        outputs, losses, weights = outputs + [cam], losses + [_cam_correlation_loss(int(fmap.shape[1] * fmap.shape[2]))], \
            weights + [cfg.cam_distill]
    if logits is not None:
        out = _own_layer(student, "probability")
        z = _logit_layer(out)(_own_layer(student, "head_dense").get_output_at(-1))
        outputs, losses, weights = outputs + [z], losses + ["mse"], weights + [cfg.logit_distill]
    trainee = keras.Model(student.input, outputs) if len(outputs) > 1 else student
    trainee.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=losses if len(losses) > 1 else loss,
                    loss_weights=weights if len(weights) > 1 else None)
    return trainee


def _snapshot(model):
    """An independent copy of a (wrapped) model with its current weights: stripping it leaves
    the model being fine-tuned alone (tfmot's strip functions reuse and modify the inner layers)."""
    import tf_keras as keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _strip_pruned(pruned, blocked: set[str]):
    """tfmot's ``strip_pruning``, then a clean model (one graph, plain layers)."""
    import tensorflow_model_optimization as tfmot

    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    # strip_pruning reuses the original layer objects (they keep their nodes in the pre-pruning
    # graph, so ``layer.output`` would point there): a clean clone has one graph only.
    if blocked:
        return unblock(stripped)  # BlockConv2D -> Conv2D (same names and weights)
    return _snapshot(stripped)


def _cluster_phase(stripped, names: set[str], spec: ModelSpec, cfg: PruneConfig, seq, feats, cams, logits,
                   class_weight, select=None) -> tuple[object, dict, object]:
    """Sparsity-preserving clustering of the pruned layers, fine-tuned with the same losses
    (and the checkpoint chosen on validation with ``cfg.select_every``)."""
    t0 = time.perf_counter()
    clustered = cluster_pruned(stripped, names, cfg.clusters, cfg.freeze_batchnorm)
    trainee = _trainee(clustered, spec, cfg, feats, cams, logits, cfg.cluster_lr)
    log.info("clustering %d pruned layers to %d values each (zeros kept): %d epoch(s) x %d batches",
             len(names), cfg.clusters, cfg.cluster_epochs, len(seq))
    callbacks = [_LogEvery(max(1, len(seq) // 5), "clustering fine-tune")]
    chk = None
    if cfg.select_every:
        chk = Checkpoints(lambda: clustered_copy(clustered, stripped), select, cfg.select_every,
                          label="pruned + clustered")
        callbacks.append(chk)
    hist = trainee.fit(seq, epochs=cfg.cluster_epochs, verbose=0, class_weight=class_weight, shuffle=False,
                       callbacks=callbacks)
    clean = chk.best_model if chk else strip(clustered)
    layers = distinct_values(clean, names, lambda layer: PRUNED_KERNELS[type(layer).__name__])
    check_clusters(layers, cfg.clusters)
    return clean, {"clusters": int(cfg.clusters), "epochs": int(cfg.cluster_epochs), "learning_rate": cfg.cluster_lr,
                   "layers": layers, "finetune_loss": [float(v) for v in hist.history.get("loss", [])],
                   "seconds": time.perf_counter() - t0}, chk


def _kernel_size(layer) -> int:
    """Weights in a prunable layer's kernel (0: not a type tfmot prunes)."""
    attr = PRUNED_KERNELS.get(type(layer).__name__)
    w = getattr(layer, attr, None) if attr else None
    return int(np.prod(w.shape)) if w is not None else 0


def _is_pruning_wrapper(layer) -> bool:
    return type(layer).__name__ == "PruneLowMagnitude"


class _LogEvery:
    """A keras callback logging fine-tuning progress every ``n`` batches (rate, ETA)."""

    def __new__(cls, n: int, label: str = "pruning fine-tune"):
        import tf_keras as keras

        class Cb(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.t0 = time.perf_counter()
                self.done = 0

            def on_train_batch_end(self, batch, logs=None):
                self.done += 1
                total = self.params.get("steps", 0) * self.params.get("epochs", 1)
                if self.done % n == 0 or self.done == total:
                    el = time.perf_counter() - self.t0
                    eta = el / self.done * (total - self.done) if total else float("nan")
                    log.info("%s step %d/%d loss %.4f (%.1f s elapsed, ETA %.0f s)", label,
                             self.done, total, (logs or {}).get("loss", float("nan")), el, eta)

        return Cb()


class Checkpoints:
    """A keras callback choosing a fine-tune's checkpoint on validation parity.

    Every ``every`` epochs from epoch ``first`` (and after the last), ``make()`` returns the
    float model the int8 file would be made from, ``select(model)`` scores that file (a
    :func:`leukedge.compress.parity.candidate_record`), and the closest one
    (:func:`leukedge.compress.parity.closest`) is kept: ``keep(model)`` (default: the model
    itself) as ``best_model``. :meth:`selection` is the record for ``compress.json``.
    """

    def __new__(cls, make, select, every: int, first: int = 1, keep=None, label: str = "int8", split: str = "val"):
        import tf_keras as keras

        class Cb(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.attempts, self.best, self.best_model = [], None, None

            def on_epoch_end(self, epoch, logs=None):
                n = epoch + 1
                if n != self.params.get("epochs") and (n < first or n % every):
                    return
                model = make()
                a = {"epoch": n, **select(model)}
                self.attempts.append(a)
                if closest([self.best, a] if self.best else [a]) is a:
                    self.best, self.best_model = a, keep(model) if keep else model
                heat = (a.get("gates") or {}).get("heatmap_correlation")
                log.info("epoch %d: %s file on %s %s (agreement %.4f, heatmap r %s, mean |dp| %.4f%s)%s", n, label,
                         split, "PASS" if a["passed"] else "fail", a["agreement"],
                         "n/a" if heat is None else f"{heat:.3f}", a["mean_abs_dp"],
                         "; failed: " + ", ".join(a["failed"]) if a["failed"] else "",
                         " <- best so far" if self.best is a else "")

            def selection(self) -> dict:
                return {"every_epochs": every, "from_epoch": first, "chosen_epoch": self.best["epoch"], "split": split,
                        "attempts": self.attempts}

        return Cb()
