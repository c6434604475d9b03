"""Image quality gate: blur, exposure and size, before a score is shown.

A field photo of a smear can be out of focus, over- or under-exposed, or too small to
hold cells at the model's resolution. For those the app shows *retake guidance*
instead of a probability. The checks run on the decoded RGB image with OpenCV
(no model needed) and take about a millisecond.

Thresholds were set from the real smears in ``../shared/data/aria-all`` (300 random
images, measured at 256 px on the long side): the Laplacian variance of real smears
is >= 38 (1st percentile 46), the same smears blurred with a Gaussian of sigma 2 drop
to <= 9; up to 57% of a sharp smear's pixels are near-white background.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

OK = "ok"


@dataclass
class QualityConfig:
    """Quality thresholds.

    Attributes:
        measure_side: long side (pixels) the image is resized to before measuring, so the
            blur measure does not depend on the camera resolution.
        min_side: shortest side (pixels) accepted.
        min_sharpness: minimum variance of the Laplacian of the grey image.
        max_bright_fraction: maximum fraction of near-white (>= 250) pixels.
        max_mean: maximum mean grey level (over-exposed above).
        min_mean: minimum mean grey level (under-exposed below).
        max_dark_fraction: maximum fraction of near-black (<= 10) pixels.
    """

    measure_side: int = 256
    min_side: int = 112
    min_sharpness: float = 15.0
    max_bright_fraction: float = 0.80
    max_mean: float = 248.0
    min_mean: float = 60.0
    max_dark_fraction: float = 0.40


@dataclass
class QualityReport:
    """Result of :func:`check_quality`: ``status`` is ``ok`` or a retake reason."""

    status: str
    sharpness: float
    mean: float
    bright_fraction: float
    dark_fraction: float
    width: int
    height: int

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict:
        return asdict(self)


#: Retake guidance shown to the health worker, by reason.
GUIDANCE = {
    "too small": "The image is too small. Take the photo closer or at a higher resolution.",
    "blurry": "The image is blurred. Focus the microscope, hold the phone still and retake.",
    "over-exposed": "The image is too bright. Lower the microscope light or the camera exposure and retake.",
    "under-exposed": "The image is too dark. Increase the microscope light and retake.",
}


def measure(rgb: np.ndarray, cfg: QualityConfig | None = None) -> dict:
    """Sharpness (Laplacian variance) and exposure statistics of an RGB uint8 image."""
    cfg = cfg or QualityConfig()
    h, w = rgb.shape[:2]
    scale = cfg.measure_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    grey = cv2.cvtColor(cv2.resize(rgb, size, interpolation=interp), cv2.COLOR_RGB2GRAY)
    return {
        "sharpness": float(cv2.Laplacian(grey, cv2.CV_64F).var()),
        "mean": float(grey.mean()),
        "bright_fraction": float((grey >= 250).mean()),
        "dark_fraction": float((grey <= 10).mean()),
        "width": int(w),
        "height": int(h),
    }


def check_quality(rgb: np.ndarray, cfg: QualityConfig | None = None) -> QualityReport:
    """Check an RGB uint8 image; ``status`` is ``ok`` or the first failing reason.

    Order: size, exposure, then blur (an over-exposed frame also looks blurred, and the
    exposure advice is the one that fixes it).
    """
    cfg = cfg or QualityConfig()
    m = measure(rgb, cfg)
    if min(m["width"], m["height"]) < cfg.min_side:
        status = "too small"
    elif m["mean"] > cfg.max_mean or m["bright_fraction"] > cfg.max_bright_fraction:
        status = "over-exposed"
    elif m["mean"] < cfg.min_mean or m["dark_fraction"] > cfg.max_dark_fraction:
        status = "under-exposed"
    elif m["sharpness"] < cfg.min_sharpness:
        status = "blurry"
    else:
        status = OK
    return QualityReport(status=status, **m)


def guidance(status: str) -> str:
    """The sentence shown for a quality status (empty for ``ok``)."""
    return GUIDANCE.get(status, "") if status != OK else ""
