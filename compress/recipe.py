"""A compression recipe: what ``leukedge compress`` does, as nested dataclasses saved with the release.

Like MediaPipe Model Maker's ``HParams`` + ``QuantizationConfig``: one section per concern
(``quantize``, ``heatmap``, ``screening``, ``prune``, ``qat``, ``gates``, ``checks``) plus where the release came from
(``source``: a training run or release by name + the sha256 of its model file; ``data``: a
dataset name + the sha256 of its split manifest). The resolved recipe is saved as
``recipe.json`` in every release, and ``leukedge compress --recipe <release>/recipe.json``
makes the release again. ``--set quantize.per_tensor=true`` changes one key (values are
JSON; a bare word is a string). The engine runs on
:class:`~leukedge.compress.config.CompressConfig`, which holds the ``prune`` and ``qat`` sections
below as they are and the ``quantize`` and ``checks`` fields flat;
:data:`leukedge.compress.recipe_flags.KEYS` is the one table between the two (and the old flags,
for ``docs/compression-recipe.md``).
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from leukedge.errors import ConfigError
from leukedge.spec import HEATMAP_METHODS

from .parity import Gates

SCHEMA = "leukedge.compress-recipe/1"


@dataclass
class QuantizeConfig:
    """How the int8 (and other) files are made from the float model.

    Attributes:
        variants: TFLite files to write (float32 always; int8, int16x8, float16, dynamic).
        calib: calibration images drawn (stratified) from the training split.
        per_tensor: int8 weights with one scale per tensor (QAT learns them that way too).
        clip_percentile: clip activation ranges to this percentile, ``"auto"`` to choose on the
            validation split, None for min/max.
        clip_images: calibration images the percentiles are measured on.
        bn_depthwise: BatchNorms after a Concatenate quantized as per-channel depthwise convs.
        selective: when int8 fails a gate, clip ranges, then keep the worst ops in float.
        keep_int8: a release source's int8 file is kept byte for byte (and re-checked).
        reexport_float32: a release source's float32 file is exported again from its recovered model.
    """

    variants: list[str] = field(default_factory=lambda: ["float32", "int8"])
    calib: int = 300
    per_tensor: bool = False
    clip_percentile: float | str | None = None
    clip_images: int = 32
    bn_depthwise: bool = False
    selective: bool = True
    keep_int8: bool = False
    reexport_float32: bool = False


@dataclass
class HeatmapRecipe:
    """What the exported ``cam`` output computes (recorded in spec.json as ``heatmap``).

    Attributes:
        method: ``guided7x14`` (the default of new recipes: the 7x7 Grad-CAM sharpened by the
            2x-resolution layer, (1, 2h, 2w), docs/heatmaps.md) or ``gradcam7`` (the 7x7 map of the
            first releases; a recipe.json without a ``heatmap`` section means this).
        layer: the guiding layer; None: the backbone registry's, else the last layer at twice the
            feature map's size (:func:`leukedge.compress.cam_graph.guide_layer`).
    """

    method: str = "guided7x14"
    layer: str | None = None

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Refuse an unknown method (one line); ``--set`` and loading call it too."""
        if self.method not in HEATMAP_METHODS:
            raise ConfigError(f"heatmap.method: unknown method '{self.method}'",
                              f"choose one of {', '.join(HEATMAP_METHODS)}")


@dataclass
class ScreeningRecipe:
    """How the app screens a full-field photo (recorded in spec.json's ``preprocess.capture``).

    Attributes:
        tile_rule: how the tiles of a photo combine (``max``, ``mean`` or ``noisy_or``:
            :func:`leukedge.capture.combine_tiles`), chosen on validation with ``leukedge bench
            tiles``; None keeps the training run's. Only for a model whose preprocessing has
            ``capture.magnification`` on (only those are screened as tiles), or that this recipe
            switches on.
        magnification: switch capture magnification on (true) or off (false) in the release's
            spec; None keeps the source's. On for a model trained without it, a photo whose red
            cells are off the training size by more than ``scale_tolerance`` is rescaled and
            screened as tiles, every other photo exactly as before (validate with ``bench tiles``).
        cell_diameter: the training smears' red-cell diameter in px; None: the spec's, else
            measured on up to 200 training smears of the split.
        scale_tolerance: factors within ``1 +- tolerance`` are not applied; None: the spec's
            when it had magnification on, else the default of
            :class:`leukedge.capture.CaptureConfig`.
        ood_map: list the last residual block's map as one more model output, ``ood_map``, which
            the OOD gate then reads instead of the pooled features (:mod:`leukedge.compress.ood_map`;
            no operator or weight changes); null: when the graph has a residual block (EfficientNet,
            not the test suite's tiny CNN); false: the files as before (the gate reads ``features``).
        min_sharpness: the photo-quality gate's "blurry" limit for this model, written into the
            spec's ``preprocess.capture`` (the app asks for a retake below it); None: the source's,
            else the app's default (15). Chosen on validation with ``scripts/experiments/blur_gate.py``.
        rule_in: the probability of leukemia at or above which an over-exposed or blurred photo is
            answered "refer" instead of "retake", written into the spec's ``preprocess.capture``;
            None: the source's, else never. Chosen on validation with ``scripts/experiments/rule_in.py``.
        rule_out: the grey zone's lower edge, written into the spec's ``preprocess.capture``: a
            photo scoring from here up to the decision threshold is "borderline, take another field"
            instead of "no signs"; None: the source's, else no zone. Chosen on validation with
            ``scripts/experiments/rule_out.py`` (docs/captures.md 17).
        views: screen each model input in this many rotated / mirrored views and average the
            probability (1, 2, 4 or 8; :mod:`leukedge.views`), written into the spec's
            ``preprocess.capture``; when it changes the spec's, the operating points are chosen
            again on the validation split with those views (the float32 file). None: the source's.
            Measured with ``scripts/experiments/tta.py`` (docs/captures.md 16).
        min_scale: the smallest magnification rescale factor, written into the spec's
            ``preprocess.capture``: a photo whose red cells are k times the training size is
            shrunk by ``max(1/k, min_scale)``. A phone's full-resolution eyepiece photo has cells
            5-15 times wider in pixels than the lab's (the ``resolution`` capture family); 0.05
            covers every photo under the 40-megapixel input limit. None: the source's (0.5 before
            2026-12-07, which left such photos at 3x the training cell size: docs/captures.md 18).
        shrink: ``exact`` or ``fewest``: how far a photo with larger cells than the training
            smears' is shrunk (:class:`leukedge.capture.CaptureConfig`), written into the spec's
            ``preprocess.capture``; None: the source's (``exact`` before 2026-12-08).
            Measured with ``scripts/experiments/shrink_rule.py`` (docs/captures.md 19).
    """

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

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Refuse an unknown rule or a bad value (one line); ``--set`` and loading call it too."""
        from leukedge.capture import SHRINK_RULES, TILE_RULES
        from leukedge.views import VIEWS

        if self.tile_rule is not None and self.tile_rule not in TILE_RULES:
            raise ConfigError(f"screening.tile_rule: unknown rule '{self.tile_rule}'",
                              f"choose one of {', '.join(TILE_RULES)} (or null: the training run's)")
        if self.shrink is not None and self.shrink not in SHRINK_RULES:
            raise ConfigError(f"screening.shrink: unknown rule {self.shrink!r}",
                              f"choose one of {', '.join(SHRINK_RULES)} (or null: the source's)")
        if self.ood_map is not None and not isinstance(self.ood_map, bool):
            raise ConfigError(f"screening.ood_map must be true, false or null, got {self.ood_map!r}")
        if self.magnification is not None and not isinstance(self.magnification, bool):
            raise ConfigError(f"screening.magnification must be true, false or null, got {self.magnification!r}")
        for key, lo, hi in (("cell_diameter", 2.0, 500.0), ("scale_tolerance", 0.0, 0.9),
                            ("min_sharpness", 0.0, 1000.0), ("rule_in", 0.01, 1.0),
                            ("rule_out", 0.001, 0.99), ("min_scale", 0.01, 1.0)):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi):
                raise ConfigError(f"screening.{key} must be a number in [{lo}, {hi}] or null, got {v!r}")
        if self.views is not None and (isinstance(self.views, bool) or self.views not in VIEWS):
            raise ConfigError(f"screening.views must be one of {', '.join(map(str, VIEWS))} or null, got {self.views!r}")
        if self.magnification is False and (self.cell_diameter is not None or self.scale_tolerance is not None
                                            or self.min_scale is not None or self.shrink is not None):
            raise ConfigError("screening.cell_diameter / scale_tolerance / min_scale / shrink need screening.magnification "
                              "true or null",
                              "drop them, or set screening.magnification=true")


#: What a recipe file without a ``heatmap`` section shipped (the releases before issue 23).
LEGACY_HEATMAP = {"method": "gradcam7"}


@dataclass
class PruneRecipe:
    """Magnitude pruning (+ optional clustering) of the ``pruned-int8`` file (see
    :class:`leukedge.compress.prune.PruneConfig`, which validates these)."""

    sparsity: float = 0.5
    epochs: int = 4
    batch_size: int = 16
    lr: float = 1e-4
    max_images: int | None = None
    distill: bool = True
    min_weights: int = 2048
    feature_distill: float = 0.0
    cam_distill: float = 0.0
    logit_distill: float = 0.0
    block: int = 1
    clusters: int = 0
    cluster_epochs: int = 4
    cluster_lr: float = 1e-5
    select_every: int = 0


@dataclass
class QATRecipe:
    """Quantization-aware fine-tuning the int8 file is made from (see
    :class:`leukedge.compress.qat.QATConfig`)."""

    epochs: int = 1
    lr: float = 1e-5
    batch_size: int = 16
    max_images: int | None = None
    feature_distill: float = 0.0
    cam_distill: float = 0.0
    logit_distill: float = 0.0
    select_every: int = 0


@dataclass
class ChecksConfig:
    """What is checked after the files are written.

    Attributes:
        parity: parity of every file against float32 (then evaluation, OOD gate and card).
        keras_check: also float32 TFLite vs the Keras model (a training-run source).
        n_boot: bootstrap replicates of the confidence intervals.
        ood_dirs: out-of-domain folders whose flagged rate the OOD gate reports.
    """

    parity: bool = True
    keras_check: bool = True
    n_boot: int = 1000
    ood_dirs: list[str] = field(default_factory=list)


@dataclass
class SourceRef:
    """What a release was made from, portably: ``kind`` (run / release), the folder's ``name``,
    the ``model_file`` read and its ``sha256``; ``path`` (relative to the working directory) is
    a hint for finding it again; ``made_from`` names what a release source was itself made from."""

    kind: str = "run"
    name: str = ""
    model_file: str = ""
    sha256: str = ""
    path: str | None = None
    made_from: dict | None = None
    note: str | None = None


@dataclass
class DataRef:
    """The data: a dataset ``name`` (a folder found under ``../shared/data`` or ``data/``) and the
    split ``manifest`` with its ``manifest_sha256``."""

    name: str = ""
    manifest: str = "split.csv"
    manifest_sha256: str = ""


@dataclass
class CompressRecipe:
    """Everything ``leukedge compress`` needs to make a release again (saved as ``recipe.json``)."""

    source: SourceRef | None = None
    data: DataRef | None = None
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    heatmap: HeatmapRecipe = field(default_factory=HeatmapRecipe)
    screening: ScreeningRecipe = field(default_factory=ScreeningRecipe)
    prune: PruneRecipe | None = None
    qat: QATRecipe | None = None
    gates: Gates = field(default_factory=Gates)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    #: the training run's resolved config (its ``config.json``, paths made portable): how the float
    #: model was trained (``leukedge train``); informational, compress does not read it
    training: dict | None = None
    note: str | None = None

    # ----- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"schema": SCHEMA, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, where: str = "recipe") -> "CompressRecipe":
        d = {k: v for k, v in d.items() if k != "schema"}
        d.setdefault("heatmap", dict(LEGACY_HEATMAP))  # older recipes made the 7x7 map
        if d.get("screening") is None or isinstance(d["screening"], dict):  # made before screening.ood_map:
            d["screening"] = {"ood_map": False, **(d.get("screening") or {})}  # files without the output
        recipe = _build(cls, d, where)
        recipe.heatmap.check()
        recipe.screening.check()
        return recipe

    @classmethod
    def load(cls, path) -> "CompressRecipe":
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such recipe file", "pass a recipe.json (every release has one)")
        try:
            d = json.loads(p.read_text())
        except ValueError as exc:
            raise ConfigError(f"{p}: not valid JSON ({exc})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{p}: a recipe is a JSON object")
        return cls.from_dict(d, where=p.name)

    def save(self, path) -> Path:
        from leukedge.fileio import atomic_write_json

        atomic_write_json(Path(path), self.to_dict())
        return Path(path)

    # ----- --set key=value -----------------------------------------------------------------------
    def set(self, item: str) -> None:
        """Apply one ``key=value`` (dotted key, JSON value; a bare word is a string)."""
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"bad --set '{item}'", "use KEY=VALUE, e.g. --set quantize.per_tensor=true")
        set_key(self, key, parse_value(text))
        self.heatmap.check()
        self.screening.check()


def parse_value(text: str):
    """A ``--set`` value: JSON (``true``, ``0.5``, ``null``, ``[...]``, ``{...}``), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()


def all_keys(cls=CompressRecipe, prefix: str = "") -> list[str]:
    """Every settable dotted key (sections and their fields)."""
    out = []
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        out.append(key)
        sub = _dataclass_in(_hints(cls)[f.name])
        if sub is not None:
            out += all_keys(sub, key + ".")
    return out


def set_key(obj, key: str, value) -> None:
    """Set a dotted ``key`` in nested dataclasses; a section that is None (``prune``, ``qat``)
    is created with its defaults when one of its fields is set."""
    parts = key.split(".")
    for depth, name in enumerate(parts):
        names = {f.name for f in dataclasses.fields(obj)}
        if name not in names:
            _unknown(key)
        hint = _hints(type(obj))[name]
        if depth == len(parts) - 1:
            setattr(obj, name, _coerce(value, hint, key))
            return
        sub = getattr(obj, name)
        cls = _dataclass_in(hint)
        if cls is None:
            _unknown(key)
        if sub is None:
            sub = cls()
            setattr(obj, name, sub)
        obj = sub


def _unknown(key: str):
    import difflib

    keys = all_keys()
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else "see docs/compression-recipe.md for the keys"
    raise ConfigError(f"unknown recipe key '{key}'", hint)


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _dataclass_in(hint):
    """The dataclass inside ``hint`` (``X`` or ``X | None``), else None."""
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _coerce(value, hint, key: str):
    """``value`` checked against the field's type (ints for floats are fine, not the reverse)."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} cannot be null")
    sub = _dataclass_in(hint)
    if sub is not None:
        if value is True or value == {}:
            return sub()
        if value is False and optional:
            return None
        if isinstance(value, dict):
            return _build(sub, value, key)
        raise ConfigError(f"{key}: expected a JSON object (or true / null), got {value!r}")
    types = [a for a in args if a is not type(None)] if args and origin is not list else [hint]
    for t in types:
        t_origin = typing.get_origin(t)
        if t_origin is list and isinstance(value, list):
            return [str(v) for v in value]
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is str and isinstance(value, str):
            return value
        if t is dict and isinstance(value, dict):
            return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in types)
    raise ConfigError(f"{key}: expected {names}, got {json.dumps(value)}")


def _build(cls, d: dict, where: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    obj = cls()
    for k, v in d.items():
        key = f"{where}.{k}" if where not in ("recipe",) and not where.endswith(".json") else k
        names = {f.name for f in dataclasses.fields(cls)}
        if k not in names:
            _unknown(key)
        setattr(obj, k, _coerce(v, _hints(cls)[k], key))
    return obj
