"""Quantization settings for TFLite export (MediaPipe Model Maker's QuantizationConfig pattern).

Use the named constructors::

    QuantizationConfig.for_int8(representative_data)   # full integer: int8 weights, activations, I/O
    QuantizationConfig.for_float16()                    # float16 weights
    QuantizationConfig.for_dynamic()                    # int8 weights, float activations
    QuantizationConfig.for_float32()                    # no quantization (the parity reference)

The int8 representative set comes from the TRAINING split through the one preprocessing
(:func:`leukedge.preprocess.preprocess`), stratified by class: calibrating on the test split
would leak it, calibrating on anything else (other preprocessing, blank images) breaks the
activation ranges.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from leukedge.errors import ConfigError, DataError, ImageError, did_you_mean
from leukedge.imageio import load_image
from leukedge.preprocess import preprocess
from leukedge.progress import progress
from leukedge.spec import ModelSpec

log = logging.getLogger(__name__)

#: Variant name -> what it is (the table `leukedge compress --variants` accepts).
VARIANTS = {
    "float32": "no quantization (parity reference)",
    "int8": "full integer: int8 weights and activations, int8 input/output (the edge file)",
    "float16": "float16 weights, float compute",
    "dynamic": "dynamic range: int8 weights, float activations",
    "int16x8": "int8 weights, int16 activations (float input/output): int8 size, near-float accuracy, "
               "no XNNPACK kernels (slower)",
}
#: Below this many calibration images the activation ranges get unreliable.
MIN_CALIBRATION = 300


class RepresentativeData:
    """Preprocessed calibration images; calling it yields ``{"image": (1, S, S, 3)}`` samples."""

    def __init__(self, images: np.ndarray, paths: list[str] | None = None):
        self.images = np.asarray(images, dtype=np.float32)
        if self.images.ndim != 4 or len(self.images) == 0:
            raise DataError(f"representative data must be a non-empty (N, S, S, 3) batch, got {self.images.shape}")
        self.paths = list(paths or [])

    def __len__(self) -> int:
        return len(self.images)

    def __call__(self):
        for x in self.images:
            yield {"image": x[None]}


@dataclass
class QuantizationConfig:
    """How to quantize a model for TFLite.

    Attributes:
        kind: one of :data:`VARIANTS`.
        representative_data: int8 only: the calibration set (a :class:`RepresentativeData`
            or any callable yielding ``{"image": batch}`` dicts).
        num_samples: number of calibration images (for logs and reports).
    """

    kind: str = "float32"
    representative_data: Callable | None = field(default=None, repr=False)
    num_samples: int = 0

    def __post_init__(self):
        if self.kind not in VARIANTS:
            raise ConfigError(f"unknown quantization '{self.kind}'", did_you_mean(self.kind, VARIANTS))
        if self.kind in ("int8", "int16x8") and self.representative_data is None:
            raise ConfigError(f"{self.kind} quantization needs representative data (training images)")

    @classmethod
    def for_int8(cls, representative_data) -> "QuantizationConfig":
        n = len(representative_data) if hasattr(representative_data, "__len__") else 0
        if n and n < MIN_CALIBRATION:
            log.warning("only %d calibration images (fewer than %d): int8 activation ranges may be unreliable",
                        n, MIN_CALIBRATION)
        return cls("int8", representative_data, n)

    @classmethod
    def for_int16x8(cls, representative_data) -> "QuantizationConfig":
        """int8 weights with 16-bit activations (TFLite's 16x8 mode), calibrated like int8."""
        n = len(representative_data) if hasattr(representative_data, "__len__") else 0
        return cls("int16x8", representative_data, n)

    @classmethod
    def for_float16(cls) -> "QuantizationConfig":
        return cls("float16")

    @classmethod
    def for_dynamic(cls) -> "QuantizationConfig":
        return cls("dynamic")

    @classmethod
    def for_float32(cls) -> "QuantizationConfig":
        return cls("float32")

    def apply(self, converter) -> None:
        """Set the converter's options for this kind."""
        import tensorflow as tf

        if self.kind == "float32":
            return
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if self.kind == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif self.kind == "int8":
            converter.representative_dataset = self.representative_data
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        elif self.kind == "int16x8":
            converter.representative_dataset = self.representative_data
            # TFLITE_BUILTINS: ops without a 16x8 kernel (Grad-CAM's GREATER mask) stay float.
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS]


def parse_variants(text: str) -> list[str]:
    """``"int8,float32"`` -> ``["float32", "int8"]`` (float32 always first: it is the reference)."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    for v in names:
        if v not in VARIANTS:
            raise ConfigError(f"unknown variant '{v}'", did_you_mean(v, VARIANTS))
    names = list(dict.fromkeys(["float32"] + names))
    return names


def stratified_sample(rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    """``n`` rows drawn per class in proportion to the class sizes (deterministic)."""
    if n >= len(rows):
        return list(rows)
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[dict]] = {}
    for r in rows:
        by_class.setdefault(r["class"], []).append(r)
    out = []
    for cls, items in sorted(by_class.items()):
        k = max(1, round(n * len(items) / len(rows)))
        idx = rng.choice(len(items), size=min(k, len(items)), replace=False)
        out.extend(items[i] for i in sorted(idx))
    return out[:n] if len(out) > n else out


def load_images(paths: list[str], spec: ModelSpec, desc: str = "preprocessing") -> tuple[np.ndarray, list[str]]:
    """Decode and preprocess image files with the spec's preprocessing; unreadable files are skipped."""
    xs, ok = [], []
    for p in progress(paths, desc=desc, unit="img"):
        try:
            xs.append(preprocess(load_image(p), spec.preprocess))
            ok.append(str(p))
        except ImageError as exc:
            log.warning("skipping %s", exc.one_line())
    if not xs:
        raise DataError("none of the images could be read")
    return np.stack(xs), ok


def representative_from_split(rows: list[dict], spec: ModelSpec, n: int = MIN_CALIBRATION,
                              seed: int = 0) -> RepresentativeData:
    """Calibration images from a manifest's TRAINING rows (``rows`` from ``read_manifest`` with
    ``abspath``), stratified by class and preprocessed exactly like training."""
    train = [r for r in rows if r.get("split") == "train"]
    if not train:
        raise DataError("the split manifest has no training rows to calibrate on")
    picked = stratified_sample(train, n, seed)
    if len(picked) < MIN_CALIBRATION:
        log.warning("calibrating int8 on %d training images (fewer than %d recommended)", len(picked), MIN_CALIBRATION)
    images, paths = load_images([r["abspath"] for r in picked], spec, desc="calibration set")
    log.info("representative set: %d training images", len(images))
    return RepresentativeData(images, paths)
