"""One schema for ``spec.json`` and ``card.json`` (pydantic 2), checked whenever either is loaded.

Types are strict (a threshold given as the string ``"0.5"`` is refused, an integer where a
float is expected is fine) and ranges are checked (``clahe_tiles >= 1``, thresholds in
[0, 1], a sane input size, unique non-empty class names, paths that stay inside the release
folder). Keys this version does not know are allowed (files written by newer versions still
load). A violation raises :class:`leukedge.errors.ModelError` with one line naming the file,
the field and the value found.
"""
from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ModelError

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_STRICT = ConfigDict(strict=True, extra="allow")


def check_relpath(value: str, what: str = "path") -> str:
    """A release-relative path: non-empty, POSIX, not absolute, no ``..``, no backslash or NUL."""
    if not isinstance(value, str) or not value or value != value.strip():
        raise ValueError(f"{what} must be a non-empty file name inside the release folder")
    if "\\" in value or "\x00" in value or value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"{what} must be a relative path inside the release folder")
    parts = PurePosixPath(value).parts
    if any(p in ("..", ".") for p in parts) or not parts:
        raise ValueError(f"{what} must stay inside the release folder (no '..')")
    return value


def _finite(v: float | None) -> float | None:
    if v is not None and not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


class PreprocessSchema(BaseModel):
    model_config = _STRICT
    input_size: int = Field(224, ge=8, le=1024)
    gaussian_sigma: float = Field(1.0, ge=0.0, le=100.0)
    gaussian_ksize: int = Field(3, ge=1, le=99)
    equalize: Literal["none", "clahe", "global"] = "clahe"
    clahe_clip: float = Field(2.0, gt=0.0, le=1000.0)
    clahe_tiles: int = Field(8, ge=1, le=64)
    normalize: Literal["unit", "torch", "lite"] = "unit"
    corner_mask: float = Field(0.0, ge=0.0, lt=0.5)

    @field_validator("gaussian_ksize")
    @classmethod
    def _odd(cls, v):
        if v % 2 != 1:
            raise ValueError("must be odd")
        return v

    @field_validator("gaussian_sigma", "clahe_clip", "corner_mask")
    @classmethod
    def _fin(cls, v):
        return _finite(v)

    @model_validator(mode="after")
    def _tiles_fit(self):
        if self.clahe_tiles > self.input_size:
            raise ValueError(f"clahe_tiles {self.clahe_tiles} is more than input_size {self.input_size}")
        return self


class OperatingPointSchema(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1)
    threshold: float = Field(ge=0.0, le=1.0)
    rule: str
    sensitivity: float | None = Field(None, ge=0.0, le=1.0)
    specificity: float | None = Field(None, ge=0.0, le=1.0)
    split: str = "validation"

    @field_validator("threshold", "sensitivity", "specificity")
    @classmethod
    def _fin(cls, v):
        return _finite(v)


class DataSchema(BaseModel):
    model_config = _STRICT
    source: str = ""
    doi: str | None = None
    license: str | None = None
    citation: str | None = None
    manifest_sha256: str | None = None
    split_seed: int | None = None


class OODSchema(BaseModel):
    model_config = _STRICT
    method: Literal["none", "mahalanobis"] = "none"
    threshold: float | None = Field(None, ge=0.0)
    rule: str = ""
    stats_file: str | None = None

    @field_validator("threshold")
    @classmethod
    def _fin(cls, v):
        return _finite(v)

    @field_validator("stats_file")
    @classmethod
    def _inside(cls, v):
        return None if v is None else check_relpath(v, "stats_file")


class HeatmapSchema(BaseModel):
    model_config = _STRICT
    method: Literal["gradcam7", "guided7x14"] = "gradcam7"
    layer: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _layer(self):
        if self.method == "guided7x14" and not self.layer:
            raise ValueError("method guided7x14 needs the name of its guiding layer")
        return self


class SpecSchema(BaseModel):
    """``spec.json`` (see :class:`leukedge.spec.ModelSpec` for the meaning of each field)."""

    model_config = _STRICT
    name: str = Field(min_length=1)
    backbone: str = Field(min_length=1)
    task: Literal["binary", "subtype"] = "binary"
    class_names: list[str] = Field(default_factory=lambda: ["Benign", "ALL"], min_length=2, max_length=1000)
    source_classes: list[str] = Field(default_factory=lambda: ["Benign", "Early", "Pre", "Pro"])
    negative_class: str | None = "Benign"
    positive_classes: list[str] = Field(default_factory=lambda: ["Early", "Pre", "Pro"], min_length=1)
    preprocess: PreprocessSchema = Field(default_factory=PreprocessSchema)
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    operating_points: list[OperatingPointSchema] = Field(default_factory=list)
    weights: str = "none"
    version: str = "0.1.0"
    data: DataSchema = Field(default_factory=DataSchema)
    ood: OODSchema = Field(default_factory=OODSchema)
    outputs: list[str] = Field(default_factory=lambda: ["probability"], min_length=1)
    head: dict = Field(default_factory=dict)
    heatmap: HeatmapSchema = Field(default_factory=HeatmapSchema)
    leukedge_version: str = ""
    schema_: int = Field(1, ge=1, alias="schema")

    @field_validator("threshold")
    @classmethod
    def _fin(cls, v):
        return _finite(v)

    @field_validator("class_names", "source_classes", "positive_classes", "outputs")
    @classmethod
    def _names(cls, v):
        if any(not isinstance(n, str) or not n.strip() for n in v):
            raise ValueError("names must be non-empty strings")
        if len(set(v)) != len(v):
            raise ValueError(f"names must be unique, got {v}")
        return v

    @model_validator(mode="after")
    def _classes(self):
        if self.task == "binary" and len(self.class_names) != 2:
            raise ValueError(f"a binary spec needs 2 class_names, got {self.class_names}")
        known = set(self.class_names) | set(self.source_classes)
        missing = [c for c in self.positive_classes if c not in known]
        if missing:
            raise ValueError(f"positive_classes {missing} are not in class_names or source_classes")
        if self.negative_class is not None and self.negative_class in self.positive_classes:
            raise ValueError(f"negative_class '{self.negative_class}' is also a positive class")
        if self.task == "subtype" and not any(c in self.class_names for c in self.positive_classes):
            raise ValueError("a subtype spec needs at least one positive class among class_names")
        return self


def _sha(v: Any, where: str) -> str:
    if not isinstance(v, str) or not SHA256_RE.match(v):
        raise ValueError(f"{where} must be a sha256 (64 lowercase hex digits)")
    return v


class CardSchema(BaseModel):
    """The parts of ``card.json`` the runtime relies on (the rest is for readers, and free)."""

    model_config = _STRICT
    name: str | None = None
    version: str | int | float | None = None
    files: dict[str, Any] = Field(min_length=1)
    file_sizes: dict[str, int] | None = None
    spec_sha256: str | None = None
    parity: dict | None = None
    ood: dict | None = None
    evaluation: dict | None = None

    @field_validator("files")
    @classmethod
    def _files(cls, v):
        for name, entry in v.items():
            check_relpath(name, f"file name '{name}'")
            sha = entry.get("sha256") if isinstance(entry, dict) else entry
            _sha(sha, f"the hash of '{name}'")
        return v

    @field_validator("spec_sha256")
    @classmethod
    def _spec_sha(cls, v):
        return None if v is None else _sha(v, "spec_sha256")


def _one_line(exc: ValidationError, what: str) -> str:
    e = exc.errors()[0]
    loc = ".".join(str(x) for x in e.get("loc", ())) or "(top level)"
    msg = e.get("msg", "invalid").removeprefix("Value error, ")
    value = e.get("input")
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    if e.get("type") == "missing":
        return f"{what}: field '{loc}' is missing"
    return f"{what}: field '{loc}' = {shown}: {msg}"


def validate_spec(d: Any, what: str = "spec.json") -> SpecSchema:
    """Check a spec dict against :class:`SpecSchema`.

    Raises:
        ModelError: one line naming the field and the value.
    """
    if not isinstance(d, dict):
        raise ModelError(f"{what}: a model spec must be a JSON object, got {type(d).__name__}")
    try:
        return SpecSchema.model_validate(d)
    except ValidationError as exc:
        raise ModelError(_one_line(exc, what), "fix the value or re-export the release") from None


def validate_card(d: Any, what: str = "card.json") -> CardSchema:
    """Check a card dict against :class:`CardSchema`.

    Raises:
        ModelError: one line naming the field and the value.
    """
    if not isinstance(d, dict):
        raise ModelError(f"{what}: a model card must be a JSON object, got {type(d).__name__}")
    try:
        return CardSchema.model_validate(d)
    except ValidationError as exc:
        raise ModelError(_one_line(exc, what), "re-make the card with `leukedge release sign` or re-download "
                                               "the release") from None
