"""One answer for a photo screened as tiles: per-tile gates and the field rule.

With ``preprocess.capture.magnification`` on, :class:`leukedge.edge_app.inference.Screener`
cuts the capture-normalised field into model inputs (:func:`leukedge.preprocess.field_tiles`)
and runs the model on each. The field's answer follows these documented rules:

* **quality**: the photo-level quality gate (:func:`leukedge.edge_app.quality.check_quality`
  on the decoded photo: size, field of view, exposure, focus) decides first, as for one
  input. Each tile is then checked for exposure only (:func:`tile_quality`: a tile of empty
  background or of the dark rim is unusable; focus is not judged per tile because the
  rescale interpolates). The field is usable when **at least one tile is usable**; when none
  is, the field's status is the tiles' most frequent status (a retake that, like a one-input
  retake, still carries the hidden score and OOD distance, here over every tile).
* **out-of-distribution**: the image-statistics distance is judged once on the decoded photo
  (as for one input: it sees the photo before colour normalisation); the feature distance is
  judged per usable tile. The field is flagged when the photo's image statistics are, or
  when **more than half** of the usable tiles are (:data:`TILE_OOD_FRACTION`). Its
  feature score is the order statistic with that meaning (the ``floor(n/2)+1``-th largest
  tile ratio), so ``score > 1`` still means flagged.
* **probability**: :func:`leukedge.capture.combine_tiles` with ``capture.tile_rule`` over
  the usable, in-distribution tiles (when the field is not flagged, at least half of them).
* **heatmap and image**: those of the **deciding tile**, the combined tile with the highest
  leukemia probability (no mosaic: the app shows one model input with its Grad-CAM).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from leukedge.capture import combine_tiles

from .quality import OK, QualityConfig, measure

#: The field is flagged out-of-distribution when more than this fraction of its usable tiles are.
TILE_OOD_FRACTION = 0.5


@dataclass
class TileResult:
    """The model's answer on one tile.

    Attributes:
        index: position in the tile list (row-major over the grid).
        box: top-left ``(y, x)`` in the capture-normalised field.
        probability: leukemia probability (the positive class / the positive classes' sum).
        probs: the model's probability vector.
        quality: ``ok`` or the exposure reason (:func:`tile_quality`).
        feature_ratio: OOD feature distance / threshold (None without an OOD gate).
        cam: the model's Grad-CAM output for the tile (None when not asked for).
    """

    index: int
    box: tuple
    probability: float
    probs: np.ndarray
    quality: str = OK
    feature_ratio: float | None = None
    cam: np.ndarray | None = None

    @property
    def usable(self) -> bool:
        return self.quality == OK

    @property
    def ood(self) -> bool:
        return self.feature_ratio is not None and self.feature_ratio > 1.0

    def to_dict(self, used: bool) -> dict:
        return {"index": self.index, "box": [int(v) for v in self.box], "probability": float(self.probability),
                "quality": self.quality,
                "feature_ratio": None if self.feature_ratio is None else round(self.feature_ratio, 4),
                "used": used}


@dataclass
class FieldVerdict:
    """The field's answer from its tiles (module docstring)."""

    quality: str
    ood: bool
    ood_score: float | None
    ood_details: dict = field(default_factory=dict)
    used: list[int] = field(default_factory=list)
    probability: float | None = None
    deciding: int | None = None


def tile_quality(raw: np.ndarray | None, cfg: QualityConfig | None = None) -> str:
    """Exposure check of one tile of the field (``ok``, ``over-exposed``, ``under-exposed``);
    None (the single input of a spec without tiling) is ``ok``."""
    if raw is None:
        return OK
    cfg = cfg or QualityConfig()
    m = measure(raw, cfg, upscale=False)
    if m["mean"] > cfg.max_mean or m["bright_fraction"] > cfg.max_bright_fraction:
        return "over-exposed"
    if m["mean"] < cfg.min_mean or m["dark_fraction"] > cfg.max_dark_fraction:
        return "under-exposed"
    return OK


def feature_score(ratios: list[float]) -> float:
    """The field's feature score: the ``floor(n/2)+1``-th largest tile ratio, which is ``> 1``
    exactly when more than half of the tiles are flagged."""
    r = sorted(ratios, reverse=True)
    return float(r[int(len(r) * TILE_OOD_FRACTION)])


def field_verdict(results: list[TileResult], rule: str, image_ratio: float | None = None) -> FieldVerdict:
    """Apply the field rules (module docstring) to the tiles of one photo.

    Args:
        results: every tile's answer.
        rule: the :func:`leukedge.capture.combine_tiles` rule.
        image_ratio: the photo's image-statistics distance / threshold (None: not checked).
    """
    usable = [t for t in results if t.usable]
    details = {} if image_ratio is None else {"image": float(image_ratio)}
    if not usable:
        # a retake, with the tiles' most frequent reason; like a one-input retake it still carries
        # the model's (hidden) score and OOD distance over every tile, so records keep the same fields
        status = Counter(t.quality for t in results).most_common(1)[0][0]
        ratios = [t.feature_ratio for t in results if t.feature_ratio is not None]
        if ratios:
            details["features"] = feature_score(ratios)
            details["tiles_flagged"] = sum(r > 1.0 for r in ratios)
        score = max((v for k, v in details.items() if k in ("image", "features")), default=None)
        return FieldVerdict(status, score is not None and score > 1.0, score, details, [],
                            combine_tiles([t.probability for t in results], rule),
                            max(results, key=lambda t: t.probability).index)
    ratios = [t.feature_ratio for t in usable if t.feature_ratio is not None]
    if ratios:
        details["features"] = feature_score(ratios)
        details["tiles_flagged"] = sum(r > 1.0 for r in ratios)
    score = max((v for k, v in details.items() if k in ("image", "features")), default=None)
    flagged = score is not None and score > 1.0
    used = [t for t in usable if not t.ood] or usable  # (all OOD: the field is flagged anyway)
    probability = combine_tiles([t.probability for t in used], rule)
    deciding = max(used, key=lambda t: t.probability).index
    return FieldVerdict(OK, flagged, score, details, [t.index for t in used], probability, deciding)


def field_probabilities(results: list[TileResult], verdict: FieldVerdict, rule: str) -> np.ndarray | None:
    """The field's class-probability vector: the mean over the combined tiles for ``mean``,
    else the deciding tile's (its leukemia share is then the tile's, not the combined one)."""
    if verdict.deciding is None:
        return None
    if rule == "mean":
        return np.mean([results[i].probs for i in (verdict.used or range(len(results)))], axis=0)
    return results[verdict.deciding].probs
