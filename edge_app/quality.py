"""Image quality gate: blur, exposure and size, before a score is shown.

A field photo of a smear can be out of focus, over- or under-exposed, or too small to
hold cells at the model's resolution. For those the app shows *retake guidance*
instead of a probability. The checks run on the decoded RGB image with OpenCV
(no model needed) and take about a millisecond.

Thresholds were set from the real smears in ``../shared/data/aria-all`` (300 random
images, measured at 256 px on the long side): the Laplacian variance of real smears
is >= 38 (1st percentile 46), the same smears blurred with a Gaussian of sigma 2 drop
to <= 9; up to 57% of a sharp smear's pixels are near-white background.

A phone photo through an eyepiece shows a bright disc in a black surround, vignetted
towards its rim. The gate finds that field of view first (:func:`leukedge.capture.detect_fov`)
and judges exposure and focus on the largest square inside it, so the surround and the
vignette never read as "too dark"; a disc far from the frame's centre or cut by the frame
edge gets "centre the field". Each status has a short :data:`ADVICE` (``centre the field``,
``focus``, ``more light``, ``less light``) and a sentence (:data:`GUIDANCE`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from leukedge.capture import FieldOfView, detect_fov

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
        max_fov_offset: largest distance of the field of view's centre from the frame's
            centre, as a fraction of its radius.
        min_fov_inside: smallest fraction of the field of view's disc inside the frame.
        rule_in: probability of leukemia at or above which an over-exposed or blurred photo
            (:data:`RULE_IN_STATUSES`) is answered "refer" instead of "retake" (None: never; the
            release's ``preprocess.capture.rule_in``, docs/captures.md 15).
    """

    measure_side: int = 256
    min_side: int = 112
    min_sharpness: float = 15.0
    max_bright_fraction: float = 0.80
    max_mean: float = 248.0
    min_mean: float = 60.0
    max_dark_fraction: float = 0.40
    max_fov_offset: float = 0.35
    min_fov_inside: float = 0.92
    rule_in: float | None = None

    @classmethod
    def for_spec(cls, spec) -> "QualityConfig":
        """The defaults with the limits a release's spec validated for its model
        (``preprocess.capture.min_sharpness`` and ``rule_in``)."""
        cap = getattr(getattr(spec, "preprocess", None), "capture", None)
        if cap is None:
            return cls()
        kw = {"rule_in": getattr(cap, "rule_in", None)}
        if cap.min_sharpness is not None:
            kw["min_sharpness"] = float(cap.min_sharpness)
        return cls(**kw)

    def rules_in(self, status: str, probability: float | None, threshold: float) -> bool:
        """True when a photo of quality ``status`` is answered "refer" anyway: the status only
        washes out or softens the cells (:data:`RULE_IN_STATUSES`) and the probability of leukemia
        is at or above ``rule_in`` and the decision ``threshold``. A photo these statuses could
        clear is never answered: it stays a retake."""
        return (self.rule_in is not None and status in RULE_IN_STATUSES and probability is not None
                and probability >= max(float(self.rule_in), float(threshold)))


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
    fov: bool = False
    fov_offset: float | None = None
    fov_inside: float | None = None

    @property
    def advice(self) -> str:
        """The short advice for the status (empty for ``ok``)."""
        return ADVICE.get(self.status, "")

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
    "off-centre": "The field of view is not centred. Centre the bright circle in the camera view and retake.",
}

#: Statuses a strong leukemia score may answer anyway (:meth:`QualityConfig.rules_in`): over-exposure
#: and blur hide detail, they were not seen to create blasts on validation (docs/captures.md 15).
#: A photo too small, off-centre or too dark is always a retake.
RULE_IN_STATUSES = ("over-exposed", "blurry")

#: Short advice by status: what fixes the problem.
ADVICE = {"too small": "move closer", "blurry": "focus", "over-exposed": "less light",
          "under-exposed": "more light", "off-centre": "centre the field"}


def measure(rgb: np.ndarray, cfg: QualityConfig | None = None, upscale: bool = True) -> dict:
    """Sharpness (Laplacian variance) and exposure statistics of an RGB uint8 image.

    ``upscale=False`` measures an image smaller than ``measure_side`` at its own size (the
    square inside an eyepiece's field of view: interpolating it up would blur it).
    """
    cfg = cfg or QualityConfig()
    h, w = rgb.shape[:2]
    scale = cfg.measure_side / max(h, w)
    if not upscale:
        scale = min(scale, 1.0)
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

    Order: size, field of view (an eyepiece photo: centred and inside the frame), exposure,
    then blur (an over-exposed frame also looks blurred, and the exposure advice is the one
    that fixes it). Exposure and blur are measured on the square inside the field of view
    when there is one, else on the whole image.
    """
    return check_quality_fov(rgb, cfg)[0]


def check_quality_fov(rgb: np.ndarray, cfg: QualityConfig | None = None) -> tuple[QualityReport, FieldOfView | None]:
    """:func:`check_quality` and the field of view it judged (None: no eyepiece disc found); the
    camera preview's framing guide (:mod:`.framing`) draws that circle and its square."""
    cfg = cfg or QualityConfig()
    fov = detect_fov(rgb) if min(rgb.shape[:2]) >= cfg.min_side else None
    region = rgb
    if fov is not None:
        x0, y0, x1, y1 = fov.square(rgb.shape)
        if min(x1 - x0, y1 - y0) >= 16:
            region = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    m = measure(region, cfg, upscale=region is rgb)
    m["width"], m["height"] = int(rgb.shape[1]), int(rgb.shape[0])
    m["fov"] = fov is not None
    m["fov_offset"] = round(fov.offset(rgb.shape), 3) if fov is not None else None
    m["fov_inside"] = round(fov.inside_frame, 3) if fov is not None else None
    if min(m["width"], m["height"]) < cfg.min_side:
        status = "too small"
    elif fov is not None and (m["fov_offset"] > cfg.max_fov_offset or m["fov_inside"] < cfg.min_fov_inside):
        status = "off-centre"
    elif m["mean"] > cfg.max_mean or m["bright_fraction"] > cfg.max_bright_fraction:
        status = "over-exposed"
    elif m["mean"] < cfg.min_mean or m["dark_fraction"] > cfg.max_dark_fraction:
        status = "under-exposed"
    elif m["sharpness"] < cfg.min_sharpness:
        status = "blurry"
    else:
        status = OK
    return QualityReport(status=status, **m), fov


def guidance(status: str) -> str:
    """The sentence shown for a quality status (empty for ``ok``)."""
    return GUIDANCE.get(status, "") if status != OK else ""
