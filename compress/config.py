"""The engine's settings of ``leukedge compress`` (users write a
:class:`~leukedge.compress.recipe.CompressRecipe`; :mod:`leukedge.compress.recipe_keys` maps it here).
Its ``prune`` and ``qat`` are the recipe's own sections; ``quantize`` and ``checks`` are flat fields."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .parity import Gates
from .recipe import CompressRecipe, HeatmapRecipe, PruneRecipe, QATRecipe  # the one place the defaults are written


@dataclass
class CompressConfig:
    """Settings of ``leukedge compress`` (saved as ``compress.json`` in the release).

    Attributes:
        source: run folder (``best.h5`` + ``spec.json``) or a ``.h5`` file with spec.json beside it.
        out: release folder ``models/<name>``.
        variants: TFLite variants besides float32 (``int8``, ``int16x8``, ``float16``, ``dynamic``).
        prune: the ``pruned-int8`` file: magnitude pruning (+ optional clustering) with the
            recipe's own :class:`~leukedge.compress.recipe.PruneRecipe` (``sparsity``, ``epochs``,
            ``lr``, ``clusters``, ``select_every``, ...; recipe keys ``prune.*``); None: no pruning.
        qat: make the int8 file from a quantization-aware fine-tuned copy (tfmot; see
            :mod:`leukedge.compress.qat`) instead of the trained weights as they are, with the
            recipe's :class:`~leukedge.compress.recipe.QATRecipe` (recipe keys ``qat.*``); None:
            post-training quantization. float32 stays the trained model, so parity measures int8
            against what was evaluated.
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
        tile_rule: how a photo's tiles combine, written into the spec's ``preprocess.capture``
            (recipe key ``screening.tile_rule``; None: the source's).
        magnification, cell_diameter, scale_tolerance: capture magnification switched on/off in
            the spec, at that red-cell diameter and tolerance (recipe keys ``screening.*``; None:
            the source's / measured / the default, see :class:`leukedge.compress.recipe.ScreeningRecipe`).
        ood_map: add the OOD gate's feature-map output ``ood_map`` to every model file (recipe key
            ``screening.ood_map``; None: when the graph has a residual block; :mod:`leukedge.compress.ood_map`).
        min_sharpness: the photo-sharpness limit written into the spec (recipe key
            ``screening.min_sharpness``; None: the source's).
        rule_in: the over-exposed / blurred photo's "refer anyway" probability written into the
            spec (recipe key ``screening.rule_in``; None: the source's).
        rule_out: the grey zone's lower edge written into the spec: below the threshold and at or
            above it a photo is "borderline, take another field" (recipe key ``screening.rule_out``;
            None: the source's).
        views: rotated / mirrored views averaged per model input, written into the spec (recipe
            key ``screening.views``; None: the source's); a change re-chooses the operating points
            on validation.
        min_scale: the smallest magnification rescale factor written into the spec (recipe key
            ``screening.min_scale``; None: the source's).
        shrink: ``exact`` or ``fewest``, the magnification shrink rule written into the spec (recipe
            key ``screening.shrink``; None: the source's).
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
    prune: PruneRecipe | None = None
    qat: QATRecipe | None = None
    per_tensor: bool = False
    reexport_float32: bool = False
    keep_int8: bool = False
    calib: int = 300
    clip_percentile: float | str | None = None
    clip_images: int = 32
    bn_depthwise: bool = False
    heatmap: str = HeatmapRecipe.method
    heatmap_layer: str | None = HeatmapRecipe.layer
    tile_rule: str | None = None
    magnification: bool | None = None
    cell_diameter: float | None = None
    scale_tolerance: float | None = None
    ood_map: bool | None = None
    min_sharpness: float | None = None
    rule_in: float | None = None
    rule_out: float | None = None
    views: int | None = None
    min_scale: float | None = None
    shrink: str | None = None
    data_dir: str | None = None
    parity: bool = True
    selective: bool = True
    keras_check: bool = True
    n_boot: int = 1000
    gates: Gates = field(default_factory=Gates)
    ood_check_dirs: list[str] = field(default_factory=list)

    @classmethod
    def from_record(cls, d: dict) -> "CompressConfig":
        """The config a release's ``compress.json`` records under ``config``: ``prune`` and ``qat``
        nested, or flat as releases made before they were (``prune`` the sparsity, ``qat`` a bool,
        ``prune_epochs``, ``qat_lr``, ...: see :func:`nested_section`). Unknown keys are ignored."""
        d = dict(d)
        gates = Gates(**d.pop("gates", {}))
        sections = {name: nested_section(d, name) for name in ("prune", "qat")}
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known}, gates=gates, **sections)

    def prune_config(self):
        """The :class:`~leukedge.compress.prune.PruneConfig` of ``prune`` (validates it)."""
        from .prune import PruneConfig

        p = asdict(self.prune)
        p.pop("max_images")  # how many images are loaded, not how they are fine-tuned
        return PruneConfig(target_sparsity=p.pop("sparsity"), learning_rate=p.pop("lr"), **p)

    def qat_config(self):
        """The :class:`~leukedge.compress.qat.QATConfig` of ``qat`` (validates it)."""
        from .qat import QATConfig

        q = asdict(self.qat)
        q.pop("max_images")
        return QATConfig(learning_rate=q.pop("lr"), per_tensor=self.per_tensor, **q)


def nested_section(d: dict, name: str) -> PruneRecipe | QATRecipe | None:
    """Take the ``prune`` / ``qat`` section out of a recorded config ``d`` (popping its keys):
    nested (a JSON object, or null), or flat as compress.json wrote it before (``prune``: the
    sparsity or null, ``qat``: true / false, each field as ``<name>_<field>``; the flat fields
    of a section that was off, and those the section no longer has, are dropped)."""
    value = d.pop(name, None)
    flat = {k[len(name) + 1:]: d.pop(k) for k in list(d) if k.startswith(name + "_")}
    if value is None or value is False:
        return None
    if not isinstance(value, dict):  # the flat form: prune = the sparsity, qat = true
        known = {f.name for f in fields(PruneRecipe if name == "prune" else QATRecipe)}
        value = {k: v for k, v in flat.items() if k in known} | ({"sparsity": value} if name == "prune" else {})
    return getattr(CompressRecipe.from_dict({name: value}, where="compress.json"), name)
