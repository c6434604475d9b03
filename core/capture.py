"""Capture normalisation: make a field photo look like the lab's camera image.

Optional steps of the one preprocessing (:mod:`leukedge.preprocess`), configured by
:class:`CaptureConfig` inside ``PreprocessConfig.capture`` and recorded in the spec; all off
by default, so specs without them preprocess exactly as before. In the order they run:

1. **field of view** (:func:`detect_fov`): an eyepiece photo shows a bright disc in a dark
   surround. Otsu threshold of the grey image (downscaled to 512 px), the largest bright
   component, a least-squares circle fitted to its outline (points on the frame edge left
   out, so a disc cut by the frame is still fitted), accepted when the surround is dark and
   the disc fills its circle; the photo is cropped to the largest square inside it.
2. **magnification** (:func:`estimate_cell_diameter`): the median red-cell diameter in
   pixels (granulometry of the cell mask); the photo is rescaled so cells have the training
   smears' diameter (``cell_diameter``), within ``[min_scale, max_scale]``, unless the factor is
   within ``1 +- scale_tolerance`` (lab photos are left as they are).
3. **colour** (:mod:`leukedge.colornorm`): ``background``, ``reinhard`` or ``macenko`` to the
   training smears' statistics (``color_target``), estimated on the whole field.
4. the field is then cut to the model input: the centre ``input_size`` square for one
   input (:func:`centre_crop`), or tiles covering it (:func:`tiles`) whose probabilities
   :func:`combine_tiles` combines.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from . import colornorm
from .errors import ConfigError
from .views import VIEWS

TILE_RULES = ("max", "mean", "noisy_or")
SHRINK_RULES = ("exact", "fewest")


@dataclass
class CaptureConfig:
    """Capture-normalisation steps (all off by default).

    Attributes:
        fov_crop: detect an eyepiece's circular field of view and crop to the largest
            square inside it (no-op when no dark surround is found).
        magnification: rescale so the median red-cell diameter is ``cell_diameter`` px.
        cell_diameter: red-cell diameter (px) of the training smears at model-input scale.
        min_scale: smallest rescale factor applied.
        max_scale: largest rescale factor applied.
        scale_tolerance: factors within ``1 +- tolerance`` are not applied (estimate noise and
            the lab's own spread: 0.3 leaves ~99% of validation smears as they are, docs/captures.md 12).
        shrink: how far a photo with larger cells than the training smears' is shrunk. ``exact``:
            to ``cell_diameter`` (a field a little larger than one input is then screened as
            overlapping tiles); ``fewest``: only as far as the tolerance needs (cells at
            ``cell_diameter / (1 + scale_tolerance)``, the smallest size a lab photo is left at),
            so the field holds the fewest model inputs (docs/captures.md 19).
        color: ``none``, ``background``, ``reinhard`` or ``macenko``.
        color_target: target statistics (:func:`leukedge.colornorm.fit_targets`).
        tile_rule: how tile probabilities combine (:func:`combine_tiles`).
        max_tiles: at most this many tiles per photo (a grid of up to sqrt(max_tiles) per side).
        min_sharpness: the photo-quality gate's "blurry" limit validated for this model (variance
            of the Laplacian; None: the app's default, ``QualityConfig.min_sharpness``). Not a
            preprocessing step: how sharp a photo must be before this model answers it, chosen on
            validation (``scripts/experiments/blur_gate.py``, docs/captures.md 14).
        rule_in: the probability of leukemia at or above which a photo the quality gate finds
            over-exposed or blurred is still answered "refer" instead of "retake" (a washed-out
            or soft photo can still show leukemia signs, but it can never clear a patient: below
            this it stays a retake); None: every such photo is a retake. Chosen on validation
            (``scripts/experiments/rule_in.py``, docs/captures.md 15); never below the decision
            threshold in use.
        rule_out: the grey zone's lower edge: a photo the gates pass is answered "no signs" only
            when its probability of leukemia is below this; from here up to the decision threshold
            it is *borderline*, no answer: "take another field of view" (a field the sample verdict
            does not count). Like the rule-out / observe / rule-in zones of a two-threshold
            diagnostic test. None: every probability below the threshold is "no signs". Chosen on
            validation photos under the capture families (``scripts/experiments/rule_out.py``,
            docs/captures.md 17); no zone when the threshold in use is at or below it.
        views: each model input is run in this many orientations (1, 2, 4 or 8 dihedral views:
            rotations by 90 degrees and mirror images) and the probability averaged
            (:mod:`leukedge.views`); 1: the input as it is. The threshold is chosen on validation
            with the same views.
    """

    fov_crop: bool = False
    magnification: bool = False
    cell_diameter: float | None = None
    min_scale: float = 0.5
    max_scale: float = 3.0
    scale_tolerance: float = 0.3
    color: str = "none"
    color_target: dict = field(default_factory=dict)
    tile_rule: str = "max"
    max_tiles: int = 9
    min_sharpness: float | None = None
    rule_in: float | None = None
    rule_out: float | None = None
    views: int = 1
    shrink: str = "exact"

    def __post_init__(self):
        if self.shrink not in SHRINK_RULES:
            raise ConfigError(f"capture shrink must be one of {SHRINK_RULES}, got {self.shrink!r}",
                              "exact (to the training cell size) or fewest (only as far as the tolerance needs)")
        if isinstance(self.views, bool) or self.views not in VIEWS:
            raise ConfigError(f"capture views must be one of {VIEWS}, got {self.views!r}",
                              "1 (the input as it is), 2 (and its mirror image), 4 (the 90-degree rotations) or 8")
        if self.rule_in is not None and (isinstance(self.rule_in, bool) or not isinstance(self.rule_in, (int, float))
                                         or not 0 < self.rule_in <= 1):
            raise ConfigError(f"capture rule_in must be a probability in (0, 1] or null, got {self.rule_in!r}")
        if self.rule_out is not None and (isinstance(self.rule_out, bool) or not isinstance(self.rule_out, (int, float))
                                          or not 0 < self.rule_out < 1):
            raise ConfigError(f"capture rule_out must be a probability in (0, 1) or null, got {self.rule_out!r}")
        if self.rule_in is not None and self.rule_out is not None and self.rule_out >= self.rule_in:
            raise ConfigError(f"capture rule_out ({self.rule_out}) must be below rule_in ({self.rule_in})")
        if self.min_sharpness is not None and (isinstance(self.min_sharpness, bool) or not
                                               isinstance(self.min_sharpness, (int, float)) or
                                               not 0 <= self.min_sharpness <= 1000):
            raise ConfigError(f"capture min_sharpness must be a number in [0, 1000] or null, got {self.min_sharpness!r}")
        if self.color not in colornorm.COLOR_METHODS:
            raise ConfigError(f"unknown colour normalisation '{self.color}'", f"choose one of {colornorm.COLOR_METHODS}")
        if self.tile_rule not in TILE_RULES:
            raise ConfigError(f"unknown tile rule '{self.tile_rule}'", f"choose one of {TILE_RULES}")
        if self.magnification and not self.cell_diameter:
            raise ConfigError("capture magnification needs cell_diameter (the training smears' red-cell diameter)",
                              "measure it with leukedge.capture.estimate_cell_diameter on training smears")
        if self.color != "none" and not self.color_target:
            raise ConfigError(f"colour normalisation '{self.color}' needs color_target",
                              "fit it with leukedge.colornorm.fit_targets on training smears")
        if not 0 < self.min_scale <= 1 <= self.max_scale:
            raise ConfigError(f"need 0 < min_scale <= 1 <= max_scale, got {self.min_scale}, {self.max_scale}")

    @property
    def enabled(self) -> bool:
        return self.fov_crop or self.magnification or self.color != "none"

    def steps(self) -> list[dict]:
        out = []
        if self.fov_crop:
            out.append({"step": "fov_crop", "detect": "Otsu + largest component + circle fit",
                        "crop": "largest square inside the circle"})
        if self.magnification:
            out.append({"step": "magnification", "cell_diameter": self.cell_diameter,
                        "estimator": "granulometry",
                        "scale_range": [self.min_scale, self.max_scale], "tolerance": self.scale_tolerance})
            if self.shrink != "exact":
                out[-1]["shrink"] = self.shrink
        if self.color != "none":
            out.append({"step": "color", "method": self.color, "target": self.color_target})
        out.append({"step": "cut", "single": "centre square", "tiles": self.tile_rule, "max_tiles": self.max_tiles})
        if self.views > 1:
            out.append({"step": "views", "n": self.views, "combine": "mean probability over the dihedral views; "
                        "heatmap and OOD features from the unrotated input"})
        return out

    def to_dict(self) -> dict:
        return asdict(self)


# ----- field of view ----------------------------------------------------------------------------
@dataclass
class FieldOfView:
    """A circular field of view in image pixels."""

    cx: float
    cy: float
    radius: float
    inside_frame: float   # fraction of the circle's area inside the image

    def square(self, shape, margin: float = 0.03) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the largest square inside the circle shrunk by ``margin`` (the
        soft field stop and the darkest vignetting), clipped to the image."""
        h, w = shape[:2]
        half = (1.0 - margin) * self.radius / np.sqrt(2.0)
        x0, x1 = int(round(max(0, self.cx - half))), int(round(min(w, self.cx + half)))
        y0, y1 = int(round(max(0, self.cy - half))), int(round(min(h, self.cy + half)))
        return x0, y0, x1, y1

    def offset(self, shape) -> float:
        """Distance of the circle's centre from the frame's centre, as a fraction of its radius."""
        h, w = shape[:2]
        return float(np.hypot(self.cx - (w - 1) / 2, self.cy - (h - 1) / 2) / max(self.radius, 1.0))


def _fit_circle(pts: np.ndarray) -> tuple[float, float, float]:
    """Algebraic (Kasa) least-squares circle through points (N, 2)."""
    x, y = pts[:, 0].astype(np.float64), pts[:, 1].astype(np.float64)
    a = np.stack([x, y, np.ones_like(x)], 1)
    b = x ** 2 + y ** 2
    c = np.linalg.lstsq(a, b, rcond=None)[0]
    cx, cy = c[0] / 2, c[1] / 2
    return cx, cy, float(np.sqrt(max(c[2] + cx ** 2 + cy ** 2, 0.0)))


def detect_fov(rgb: np.ndarray, min_dark: float = 0.08, max_surround: float = 40.0) -> FieldOfView | None:
    """The circular field of view of an eyepiece photo, or None (no dark surround).

    Args:
        min_dark: the surround (outside the circle, inside the frame) must be at least this
            fraction of the frame.
        max_surround: the surround's median grey level must be below this.
    """
    h, w = rgb.shape[:2]
    s = min(1.0, 512.0 / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else rgb
    grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), (5, 5), 0)
    dark = grey <= 20
    if dark.mean() < min_dark:  # quick exit: a lab smear has no dark surround
        return None
    thr, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bright = (grey > min(thr, 60)).astype(np.uint8)
    bright = cv2.morphologyEx(bright, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    if n < 2:
        return None
    big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask = (labels == big).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = max(contours, key=len).reshape(-1, 2)
    sh, sw = small.shape[:2]
    inner = pts[(pts[:, 0] > 1) & (pts[:, 0] < sw - 2) & (pts[:, 1] > 1) & (pts[:, 1] < sh - 2)]
    if len(inner) < 20:
        return None
    cx, cy, r = _fit_circle(inner)
    if r < 0.1 * min(sh, sw):
        return None
    circle = np.zeros_like(mask)
    cv2.circle(circle, (int(round(cx)), int(round(cy))), int(round(r)), 1, -1)
    area = circle.sum()
    if area == 0 or (mask & circle).sum() / area < 0.85:     # the bright region must fill its circle
        return None
    surround = grey[(circle == 0)]
    if surround.size < min_dark * grey.size or float(np.median(surround)) > max_surround:
        return None
    inside = float(area / (np.pi * r * r))
    return FieldOfView(cx / s, cy / s, r / s, min(1.0, inside))


def crop_fov(rgb: np.ndarray) -> tuple[np.ndarray, FieldOfView | None]:
    """Crop to the largest square inside the detected field of view (unchanged when none)."""
    fov = detect_fov(rgb)
    if fov is None:
        return rgb, None
    x0, y0, x1, y1 = fov.square(rgb.shape)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return rgb, fov
    return np.ascontiguousarray(rgb[y0:y1, x0:x1]), fov


# ----- magnification ----------------------------------------------------------------------------
def cell_mask(rgb: np.ndarray) -> np.ndarray:
    """Cells (red and white) against the plasma: Otsu on the grey image, holes filled
    (red cells' pale centres), opened to split touching cells."""
    grey = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (3, 3), 0)
    valid = grey > 25
    thr, _ = cv2.threshold(grey[valid].reshape(-1, 1) if valid.any() else grey, 0, 255,
                           cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fg = ((grey < thr) & valid).astype(np.uint8)
    # fill holes: background reachable from the border stays background
    inv = (1 - fg).astype(np.uint8)
    n, lab = cv2.connectedComponents(inv, connectivity=4)
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    holes = (inv == 1) & ~np.isin(lab, border)
    area = np.bincount(lab.reshape(-1), minlength=n)
    small_hole = holes & (area[lab] < 0.01 * fg.size)
    fg = fg | small_hole.astype(np.uint8)
    return cv2.morphologyEx(fg, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))


def _granulometry_diameter(rgb: np.ndarray) -> float | None:
    """Median cell diameter (px of ``rgb``) by granulometry of :func:`cell_mask`: the mask is
    opened with discs of growing radius r (an opening by a disc = the discs of radius r that fit
    inside the mask, computed with two distance transforms); the radius at which half the cell
    area has gone is the median cell radius by area. Touching red cells (a dense smear has few
    single ones) still hold their own disc, so no cell has to be isolated. None: no cells."""
    fg = cell_mask(rgb)
    a0 = int(fg.sum())
    if a0 < 50:
        return None
    dt = cv2.distanceTransform(fg, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    radii = [float(r) for r in range(1, 13)]
    while radii[-1] < min(fg.shape) / 4:
        radii.append(radii[-1] * 1.08)
    removed = [0.0]
    for r in radii:
        seeds = dt >= r
        if not seeds.any():
            removed.append(1.0)
            break
        near = cv2.distanceTransform((~seeds).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        removed.append(1.0 - float(((near <= r) & (fg > 0)).sum()) / a0)
    removed = np.maximum.accumulate(np.asarray(removed))
    if removed[-1] < 0.5:
        return None
    return 2.0 * float(np.interp(0.5, removed, [0.0] + radii[:len(removed) - 1]))


def estimate_cell_diameter(rgb: np.ndarray, max_side: int = 1024, analysis_diameter: float = 32.0,
                           max_upsample: float = 3.0, min_diameter: float = 4.0) -> float | None:
    """Median red-cell diameter in pixels of ``rgb``, or None when no cells are found (no
    foreground, or "cells" under ``min_diameter`` px: sensor noise, not cells).

    Granulometry of the cell mask (:func:`_granulometry_diameter`) on the photo brought to at
    most ``max_side`` px; when the cells there are smaller than ``analysis_diameter`` px, a second
    pass on the photo upsampled (bicubic, at most ``max_upsample`` x) to that size, because the
    mask's smoothing merges cells of a few pixels and would overestimate them (measured on
    validation smears shrunk 0.5x: median log error +0.20 in one pass, +0.08 in two). Red cells
    outnumber white cells ~500:1 in blood, so the median by area is the red cells' size.
    Replaces (session 20) a median over round *single* cells, which on dense smears found only
    fragments (13% of validation smears unmeasurable, 21% off by more than 40%; docs/captures.md 12).
    """
    h, w = rgb.shape[:2]
    s = min(1.0, max_side / max(h, w))
    img = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else rgb
    d = _granulometry_diameter(img)
    if not d:
        return None
    if d < analysis_diameter:
        up = min(max_upsample, analysis_diameter / d)
        big = cv2.resize(img, (round(img.shape[1] * up), round(img.shape[0] * up)), interpolation=cv2.INTER_CUBIC)
        d2 = _granulometry_diameter(big)
        d = d2 / up if d2 else d
    return float(d / s) if d >= min_diameter else None


def magnification_estimate(rgb: np.ndarray, cfg: CaptureConfig) -> tuple[float, float | None]:
    """(rescale factor, measured red-cell diameter or None). The factor brings the photo's
    cells to ``cfg.cell_diameter``; it is 1.0 when the estimate fails (diameter None) or is
    within the tolerance."""
    d = estimate_cell_diameter(rgb)
    if not d:
        return 1.0, None
    f = float(np.clip(cfg.cell_diameter / d, cfg.min_scale, cfg.max_scale))
    if abs(f - 1.0) <= cfg.scale_tolerance:
        return 1.0, float(d)
    if f < 1.0 and cfg.shrink == "fewest":
        f = max(cfg.cell_diameter / (d * (1.0 + cfg.scale_tolerance)), cfg.min_scale)
    return f, float(d)


def magnification_scale(rgb: np.ndarray, cfg: CaptureConfig) -> float:
    """The rescale factor that brings the photo's cells to ``cfg.cell_diameter`` (1.0 when
    the estimate fails or is within the tolerance)."""
    return magnification_estimate(rgb, cfg)[0]


# ----- the field and its cuts -------------------------------------------------------------------
def prepare_field(rgb: np.ndarray, cfg: CaptureConfig, input_size: int) -> tuple[np.ndarray, dict]:
    """Field-of-view crop, magnification and colour normalisation; returns (field, info).

    A photo larger than the model input is first brought to at most 4x the input side
    (INTER_AREA) when magnification is off, so the statistics do not depend on the camera's
    resolution; with magnification on, the cell size decides the scale.
    """
    info: dict = {}
    img = rgb
    if cfg.fov_crop:
        img, fov = crop_fov(img)
        info["fov"] = None if fov is None else {"cx": round(fov.cx, 1), "cy": round(fov.cy, 1),
                                                "radius": round(fov.radius, 1)}
    if not cfg.magnification and max(img.shape[:2]) > 4 * input_size:
        h, w = img.shape[:2]
        f = 4 * input_size / max(h, w)
        img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    if cfg.magnification:
        f, d = magnification_estimate(img, cfg)
        info["cell_diameter"] = None if d is None else round(d, 2)
        # the field never shrinks below the model input
        f = max(f, input_size / min(img.shape[:2])) if f < 1 else f
        info["scale"] = round(f, 4)
        if f != 1.0:
            h, w = img.shape[:2]
            img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))),
                             interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    if cfg.color != "none":
        img = colornorm.apply(img, cfg.color, colornorm.estimate(img, cfg.color), cfg.color_target)
    return np.ascontiguousarray(img), info


def centre_crop(img: np.ndarray, side: int) -> np.ndarray:
    """The centre ``side`` square (the whole image when smaller in a dimension)."""
    h, w = img.shape[:2]
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return np.ascontiguousarray(img[y0:y0 + min(side, h), x0:x0 + min(side, w)])


def tile_boxes(shape, side: int, max_tiles: int = 9) -> list[tuple[int, int]]:
    """Top-left corners ``(y, x)`` of the :func:`tiles` of a field of ``shape``: an evenly
    spaced grid of ``side`` squares (overlapping where the field is not a multiple of
    ``side``), at most ``floor(sqrt(max_tiles))`` per side, centred. A field up to that many
    inputs per side is covered completely; a larger one only in its centre."""
    h, w = shape[:2]
    if h <= side and w <= side:
        return [(0, 0)]
    per = max(1, int(np.floor(np.sqrt(max_tiles))))
    ny = min(per, int(np.ceil(h / side))) if h > side else 1
    nx = min(per, int(np.ceil(w / side))) if w > side else 1
    span_y, span_x = min(h, max(side, ny * side)), min(w, max(side, nx * side))
    oy, ox = (h - span_y) // 2, (w - span_x) // 2
    ys = np.linspace(oy, oy + span_y - min(side, h), ny).round().astype(int) if ny > 1 else [max(0, (h - side) // 2)]
    xs = np.linspace(ox, ox + span_x - min(side, w), nx).round().astype(int) if nx > 1 else [max(0, (w - side) // 2)]
    return [(int(y), int(x)) for y in ys for x in xs]


def tiles(img: np.ndarray, side: int, max_tiles: int = 9) -> list[np.ndarray]:
    """Square ``side`` tiles covering the field on an evenly spaced grid (overlapping where
    the field is not a multiple of ``side``); at most ``max_tiles``, the grid centred
    (:func:`tile_boxes`)."""
    h, w = img.shape[:2]
    if h <= side and w <= side:
        return [img]
    return [np.ascontiguousarray(img[y:y + side, x:x + side]) for y, x in tile_boxes(img.shape, side, max_tiles)]


def combine_tiles(probs, rule: str = "max") -> float:
    """Combine the positive-class probabilities of one photo's tiles.

    ``max``: the photo is positive when any tile is (sensitivity first: one blast in one
    tile is enough); ``mean``: average; ``noisy_or``: ``1 - prod(1 - p)`` (independent
    evidence; grows with the number of tiles, so it needs its own threshold). Chosen per
    release on validation photos by ``leukedge bench tiles`` at the spec's threshold
    (docs/captures.md section 6.1: ``max`` on the committed subtype model; ``mean`` missed
    leukemia at 0.5x).
    """
    p = np.clip(np.asarray(probs, np.float64).reshape(-1), 0.0, 1.0)
    if p.size == 0:
        raise ValueError("combine_tiles needs at least one probability")
    if rule == "max":
        return float(p.max())
    if rule == "mean":
        return float(p.mean())
    if rule == "noisy_or":
        return float(1.0 - np.prod(1.0 - p))
    raise ConfigError(f"unknown tile rule '{rule}'", f"choose one of {TILE_RULES}")
