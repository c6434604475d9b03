"""The model spec: the one object that travels from training to the app.

Train creates it, export writes it as ``spec.json`` next to the ``.tflite`` files (and
embeds it in them), evaluation, benchmarks, ``predict`` and the app read it back. This
module imports no TensorFlow.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .errors import ConfigError, ModelError
from .fileio import read_limited
from .preprocess import PreprocessConfig
from .schema import validate_spec

SPEC_SCHEMA = 1
TASKS = ("binary", "subtype")
#: The ``cam`` output's methods (see :class:`HeatmapConfig`); a spec without ``heatmap`` is ``gradcam7``.
HEATMAP_METHODS = ("gradcam7", "guided7x14")


@dataclass
class OperatingPoint:
    """A validated decision threshold and how it was chosen.

    Attributes:
        name: short name (``default``, ``high-sensitivity``, ...).
        threshold: probability of the positive class at or above which the decision is positive.
        rule: the rule that chose it, in words.
        sensitivity: sensitivity measured on the split that chose it.
        specificity: specificity measured on the split that chose it.
        split: the split it was chosen on (``validation``).
    """

    name: str
    threshold: float
    rule: str
    sensitivity: float | None = None
    specificity: float | None = None
    split: str = "validation"


@dataclass
class DataInfo:
    """Where the training data came from."""

    source: str = "Aria et al., Acute Lymphoblastic Leukemia (ALL) image dataset, Kaggle (2021)"
    doi: str = "10.34740/KAGGLE/DSV/2175623"
    license: str = "CC BY 4.0"
    citation: str = (
        "M. Aria, M. Ghaderzadeh, D. Bashash, H. Abolghasemi, F. Asadi, A. Hosseini, "
        "\"Acute Lymphoblastic Leukemia (ALL) image dataset\", Kaggle (2021), "
        "DOI 10.34740/KAGGLE/DSV/2175623; Ghaderzadeh et al., Int. J. Intelligent Systems 37 (2022) 5113-5133"
    )
    manifest_sha256: str | None = None
    split_seed: int | None = None


@dataclass
class OODConfig:
    """Out-of-distribution gate on the model's pooled features (Mahalanobis distance).

    Attributes:
        method: ``mahalanobis`` on a low-rank (PCA) model of training features, or ``none``.
        threshold: distance above which an input is flagged (chosen on validation data).
        rule: how the threshold was chosen.
        stats_file: ``.npz`` file beside the spec with ``mean``, ``components``, ``variances``.
    """

    method: str = "none"
    threshold: float | None = None
    rule: str = ""
    stats_file: str | None = None


@dataclass
class HeatmapConfig:
    """What the exported ``cam`` output computes (issue 23, docs/heatmaps.md).

    Attributes:
        method: ``gradcam7``: the closed-form Grad-CAM at the last feature map (``features``,
            7x7 at 224), shape (1, h, w); ``guided7x14``: that map bilinearly upsampled to the
            ``layer``'s size (2h, 2w) times ``relu(mean_c(layer)) / (max + eps)``
            (:func:`leukedge.heatmap.guided_map`), shape (1, 2h, 2w).
        layer: the model layer whose activation guides the map (``guided7x14`` only), e.g.
            ``lite_b11_expand_relu`` (EfficientNet-Lite0), ``pool4_relu`` (DenseNet201).
    """

    method: str = "gradcam7"
    layer: str | None = None

    def __post_init__(self):
        if self.method not in HEATMAP_METHODS:
            raise ConfigError(f"unknown heatmap method '{self.method}'", f"choose one of {HEATMAP_METHODS}")


@dataclass
class ModelSpec:
    """Everything needed to run a model the way it was trained.

    Attributes:
        name: release name (folder name under ``models/``).
        backbone: registry name of the backbone (``densenet201``, ``efficientnet-lite0``...).
        task: ``binary`` (negative class vs the rest) or ``subtype`` (all classes).
        class_names: the model's output labels, in output order.
        source_classes: the data folder names the model was trained on.
        negative_class: binary task: the folder that is negative (e.g. ``Benign``).
        positive_classes: folders that count as positive (leukemia).
        preprocess: the preprocessing steps and their parameters.
        threshold: the decision threshold used by default.
        operating_points: the validated thresholds (the app offers only these).
        weights: where the backbone's initial weights came from.
        version: model version.
        data: data source, licence and split manifest hash.
        ood: the out-of-distribution gate.
        outputs: names of the model outputs in output order (``probability``, ``features``...).
        head: facts the Grad-CAM closed form needs (pooled-feature size, head layers).
        heatmap: what the ``cam`` output computes (absent in older specs: ``gradcam7``).
    """

    name: str
    backbone: str
    task: str = "binary"
    class_names: list[str] = field(default_factory=lambda: ["Benign", "ALL"])
    source_classes: list[str] = field(default_factory=lambda: ["Benign", "Early", "Pre", "Pro"])
    negative_class: str | None = "Benign"
    positive_classes: list[str] = field(default_factory=lambda: ["Early", "Pre", "Pro"])
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    threshold: float = 0.5
    operating_points: list[OperatingPoint] = field(default_factory=list)
    weights: str = "none"
    version: str = "0.1.0"
    data: DataInfo = field(default_factory=DataInfo)
    ood: OODConfig = field(default_factory=OODConfig)
    outputs: list[str] = field(default_factory=lambda: ["probability"])
    head: dict = field(default_factory=dict)
    heatmap: HeatmapConfig = field(default_factory=HeatmapConfig)
    leukedge_version: str = __version__
    schema: int = SPEC_SCHEMA

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"unknown task '{self.task}'", f"choose one of {TASKS}")
        if self.task == "binary" and len(self.class_names) != 2:
            raise ConfigError(f"a binary spec needs 2 class names, got {self.class_names}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ConfigError(f"threshold must be within [0, 1], got {self.threshold}")

    # ----- labels -------------------------------------------------------------------
    @property
    def num_outputs(self) -> int:
        """1 for a sigmoid (binary) head, else the number of classes."""
        return 1 if self.task == "binary" else len(self.class_names)

    def label_of(self, folder_class: str) -> int:
        """The model's target index for an image from data folder ``folder_class``."""
        if self.task == "binary":
            return 0 if folder_class == self.negative_class else 1
        try:
            return self.class_names.index(folder_class)
        except ValueError:
            raise ConfigError(f"class '{folder_class}' is not one of the model's classes {self.class_names}") from None

    def positive_probability(self, probs) -> float:
        """Probability of leukemia (any positive class) from the model's output vector."""
        import numpy as np

        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        if self.task == "binary":
            return float(probs[0])
        idx = [self.class_names.index(c) for c in self.positive_classes if c in self.class_names]
        return float(probs[idx].sum())

    def decide(self, p_positive: float, threshold: float | None = None) -> str:
        """'positive' or 'negative' at ``threshold`` (default: the spec's)."""
        t = self.threshold if threshold is None else threshold
        return "positive" if p_positive >= t else "negative"

    # ----- (de)serialisation ------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["preprocess_steps"] = self.preprocess.steps()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict, what: str = "spec.json") -> "ModelSpec":
        """Build a spec from its dict, checked against :class:`leukedge.schema.SpecSchema` first.

        Raises:
            ModelError: a newer schema, or a field of the wrong type or out of range (one line).
        """
        if not isinstance(d, dict):
            raise ModelError(f"{what}: a model spec must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        d.pop("preprocess_steps", None)
        schema = d.get("schema", SPEC_SCHEMA)
        if isinstance(schema, int) and schema > SPEC_SCHEMA:
            raise ModelError(f"spec schema {schema} is newer than this LeukEdge understands ({SPEC_SCHEMA})",
                             "upgrade LeukEdge")
        validate_spec(d, what)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        for key in unknown:  # forward compatible: keys added by newer versions are kept out
            d.pop(key)
        try:
            d["preprocess"] = PreprocessConfig(**d.get("preprocess", {}))
            d["operating_points"] = [OperatingPoint(**o) for o in d.get("operating_points", [])]
            d["data"] = DataInfo(**d.get("data", {}))
            d["ood"] = OODConfig(**d.get("ood", {}))
            d["heatmap"] = HeatmapConfig(**(d.get("heatmap") or {}))
            return cls(**d)
        except TypeError as exc:
            raise ModelError(f"invalid model spec ({exc})", "re-export the model with `leukedge compress`") from None

    @classmethod
    def from_json(cls, text: str, what: str = "spec.json") -> "ModelSpec":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{what}: model spec is not valid JSON ({exc})") from None
        return cls.from_dict(d, what)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``spec.json`` atomically."""
        from .fileio import atomic_write_text

        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelSpec":
        """Read a spec from a ``spec.json`` file or a folder that holds one."""
        p = Path(path)
        if p.is_dir():
            p = p / "spec.json"
        if not p.exists():
            raise ModelError(f"{p}: no model spec found", "point at a release folder (models/<name>) or a run folder")
        try:
            text = read_limited(p, "json", ModelError).decode("utf-8")  # regular file, bounded
        except UnicodeDecodeError as exc:
            raise ModelError(f"{p}: unreadable model spec ({type(exc).__name__})") from None
        return cls.from_json(text, str(p))


def with_magnification(spec: ModelSpec, cell_diameter: float, scale_tolerance: float | None = None) -> ModelSpec:
    """A copy of ``spec`` with capture magnification on at ``cell_diameter`` and
    ``scale_tolerance`` (None: :class:`leukedge.capture.CaptureConfig`'s default, since a spec with
    magnification off never used its own); other capture steps kept; a spec without capture
    normalisation also gets ``fov_crop``. Used by ``bench tiles`` and the recipe key
    ``screening.magnification``."""
    from .capture import CaptureConfig

    tol = CaptureConfig.scale_tolerance if scale_tolerance is None else float(scale_tolerance)
    pre = spec.preprocess
    cap = pre.capture
    if cap is None:
        new = CaptureConfig(fov_crop=True, magnification=True, cell_diameter=float(cell_diameter), scale_tolerance=tol)
    else:
        new = dataclasses.replace(cap, magnification=True, cell_diameter=float(cell_diameter), scale_tolerance=tol)
    return dataclasses.replace(spec, preprocess=pre.replace(capture=new))
