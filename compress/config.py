"""The engine's flat settings of ``leukedge compress`` (users write a
:class:`~leukedge.compress.recipe.CompressRecipe`; :mod:`leukedge.compress.recipe_keys` maps it here)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .parity import Gates
from .recipe import HeatmapRecipe, PruneRecipe, QATRecipe  # the one place the defaults are written


@dataclass
class CompressConfig:
    """Settings of ``leukedge compress`` (saved as ``compress.json`` in the release).

    Attributes:
        source: run folder (``best.h5`` + ``spec.json``) or a ``.h5`` file with spec.json beside it.
        out: release folder ``models/<name>``.
        variants: TFLite variants besides float32 (``int8``, ``int16x8``, ``float16``, ``dynamic``).
        prune: target sparsity for the ``pruned-int8`` file (None: no pruning).
        prune_epochs: fine-tuning epochs while pruning.
        prune_batch_size: fine-tuning batch size.
        prune_lr: fine-tuning learning rate.
        prune_max_images: cap on training images used for fine-tuning (None: all).
        prune_distill: fine-tune towards the unpruned model's probabilities (else the labels).
        prune_min_weights: kernels smaller than this stay dense (see PruneConfig.min_weights).
        prune_feature_distill: weight of the feature-map distillation (see PruneConfig.feature_distill).
        prune_cam_distill: weight of the Grad-CAM distillation (see PruneConfig.cam_distill).
        prune_logit_distill: weight of the logit distillation (see PruneConfig.logit_distill).
        prune_block: prune blocks of this many consecutive input weights (see PruneConfig.block).
        prune_clusters: then cluster each pruned kernel to this many values, zeros kept (see
            PruneConfig.clusters; 0 = off).
        prune_cluster_epochs: fine-tuning epochs of the clustering.
        prune_cluster_lr: learning rate of the clustering fine-tune.
        qat: make the int8 file from a quantization-aware fine-tuned copy (tfmot; see
            :mod:`leukedge.compress.qat`) instead of the trained weights as they are; float32
            stays the trained model, so parity measures int8 against what was evaluated.
        qat_epochs: QAT fine-tuning epochs.
        qat_lr: QAT learning rate.
        qat_batch_size: QAT batch size.
        qat_max_images: cap on training images used for QAT (None: all).
        qat_feature_distill: weight of QAT's feature-map distillation (see QATConfig).
        qat_cam_distill: weight of QAT's Grad-CAM distillation.
        qat_logit_distill: weight of QAT's logit distillation.
        prune_select_every: every N epochs of the pruned model's last fine-tune (clustering with
            ``prune_clusters``, else pruning once at the target sparsity) make the pruned int8
            file, score it on the validation split, keep the closest checkpoint (0 = the last).
        qat_select_every: every N QAT epochs (and after the last) make the int8 file from the
            weights, score it against float32 on the validation split, and keep the closest
            checkpoint (0 = the last epoch's weights).
        per_tensor: quantize the int8 file's weights with one scale per tensor instead of one
            per output channel (and QAT, with ``qat``, fake-quantizes them that way): no
            per-channel scale / zero-point vectors (EfficientNet-Lite0: 28.8% -> 25.7% of
            float32), parity decides whether the coarser weights are good enough. The pruned
            int8 file stays per channel (it is not QAT-tuned: per tensor it failed every gate).
        keep_int8: a release source's int8 file is kept byte for byte (with the record of how it
            was made: QAT, range clipping, ops kept in float) and checked again, instead of
            re-derived from the float32 file; e.g. to try another pruning recipe on a release
            whose int8 file came from quantization-aware training.
        reexport_float32: a release source's float32 file is made again by the current exporter
            from its recovered Keras model (same function, checked) instead of kept byte for
            byte; every other file and check is then against the new one.
        calib: calibration images drawn from the training split.
        clip_percentile: clip each int8 activation range to this percentile of the activations
            (percentile calibration, :mod:`leukedge.compress.ranges`) instead of its min/max;
            ``"auto"`` tries :data:`~leukedge.compress.ranges.AUTO_CANDIDATES` (min/max included)
            and keeps the closest to float32 on the validation split; None keeps TFLite's min/max.
        clip_images: calibration images the percentiles are measured on.
        bn_depthwise: quantize from a float file in which every per-channel ``MUL`` + ``ADD``
            (a BatchNorm after a Concatenate) is a 1x1 depthwise conv
            (:func:`leukedge.compress.bn_depthwise.mul_add_to_depthwise`): per-channel int8 and
            one rounding instead of two, at ~24 bytes of per-channel scales and zero points per
            channel (DenseNet201: +2.6 MiB, see the README).
        heatmap: what the ``cam`` output computes (``guided7x14`` or ``gradcam7``, recipe key
            ``heatmap.method``; recorded in spec.json).
        heatmap_layer: the layer guiding ``guided7x14`` (None: the backbone's, else by size).
        data_dir: data folder (None: the run's config.json, else the default).
        parity: run parity (and evaluation/card) after writing the files.
        selective: when int8 fails a gate, keep the worst ops in float until it passes.
        keras_check: also compare float32 TFLite with the Keras model (GradientTape Grad-CAM).
        n_boot: bootstrap replicates of the parity CIs.
        gates: parity gates.
        ood_check_dirs: out-of-domain image folders whose flagged rate the OOD gate reports
            (e.g. ``../shared/data/pbc-lymphocytes``).
    """

    source: str
    out: str
    variants: list[str] = field(default_factory=lambda: ["float32", "int8"])
    prune: float | None = None
    prune_epochs: int = PruneRecipe.epochs
    prune_batch_size: int = PruneRecipe.batch_size
    prune_lr: float = PruneRecipe.lr
    prune_max_images: int | None = PruneRecipe.max_images
    prune_distill: bool = PruneRecipe.distill
    prune_min_weights: int = PruneRecipe.min_weights
    prune_feature_distill: float = PruneRecipe.feature_distill
    prune_cam_distill: float = PruneRecipe.cam_distill
    prune_logit_distill: float = PruneRecipe.logit_distill
    prune_block: int = PruneRecipe.block
    prune_clusters: int = PruneRecipe.clusters
    prune_cluster_epochs: int = PruneRecipe.cluster_epochs
    prune_cluster_lr: float = PruneRecipe.cluster_lr
    qat: bool = False
    qat_epochs: int = QATRecipe.epochs
    qat_lr: float = QATRecipe.lr
    qat_batch_size: int = QATRecipe.batch_size
    qat_max_images: int | None = QATRecipe.max_images
    qat_feature_distill: float = QATRecipe.feature_distill
    qat_cam_distill: float = QATRecipe.cam_distill
    qat_logit_distill: float = QATRecipe.logit_distill
    qat_select_every: int = QATRecipe.select_every
    prune_select_every: int = PruneRecipe.select_every
    per_tensor: bool = False
    reexport_float32: bool = False
    keep_int8: bool = False
    calib: int = 300
    clip_percentile: float | str | None = None
    clip_images: int = 32
    bn_depthwise: bool = False
    heatmap: str = HeatmapRecipe.method
    heatmap_layer: str | None = HeatmapRecipe.layer
    data_dir: str | None = None
    parity: bool = True
    selective: bool = True
    keras_check: bool = True
    n_boot: int = 1000
    gates: Gates = field(default_factory=Gates)
    ood_check_dirs: list[str] = field(default_factory=list)

    def prune_config(self):
        """The :class:`~leukedge.compress.prune.PruneConfig` of ``--prune`` (validates it)."""
        from .prune import PruneConfig

        return PruneConfig(target_sparsity=self.prune, epochs=self.prune_epochs, batch_size=self.prune_batch_size,
                           learning_rate=self.prune_lr, distill=self.prune_distill,
                           min_weights=self.prune_min_weights, feature_distill=self.prune_feature_distill,
                           cam_distill=self.prune_cam_distill, logit_distill=self.prune_logit_distill,
                           block=self.prune_block, clusters=self.prune_clusters,
                           cluster_epochs=self.prune_cluster_epochs, cluster_lr=self.prune_cluster_lr,
                           select_every=self.prune_select_every)

    def qat_config(self):
        """The :class:`~leukedge.compress.qat.QATConfig` of ``--qat`` (validates it)."""
        from .qat import QATConfig

        return QATConfig(epochs=self.qat_epochs, batch_size=self.qat_batch_size, learning_rate=self.qat_lr,
                         per_tensor=self.per_tensor, feature_distill=self.qat_feature_distill,
                         cam_distill=self.qat_cam_distill, logit_distill=self.qat_logit_distill,
                         select_every=self.qat_select_every)
