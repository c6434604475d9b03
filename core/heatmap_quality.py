"""Does a heatmap point at the cells, and does the model need what it points at? (issue 23)

numpy + OpenCV + scikit-image only (no TensorFlow); the model enters through a
``predict(batch_u8) -> target probability`` callable, so any predictor can be measured.

**Stained-cell mask** (:func:`stained_cell_mask`): the purple-stained white cells and blasts of a
Wright/Giemsa-type smear (their nuclei and most of their cytoplasm). Score ``(R + B) / 2 - G``
(purple is red + blue with little green; the pale background and the pink red cells score lower),
Otsu's threshold on it (when that takes more than 30% of the image, the red cells were blue-tinted
enough to pass: a second Otsu on the pixels above the first threshold splits them from the white
cells), then a 3x3 opening (specks), a 5x5 closing (ragged borders), filled holes
and components smaller than 0.2% of the image dropped.

**Localisation** (per image, the heatmap bilinearly resized to the image, ReLU, scaled to [0, 1]):

- ``lift`` = heatmap mass on the mask / mask area share (1 = chance, >1 = on the cells);
- ``pointing`` = 1 when the heatmap's peak pixel lies in the mask dilated by
  :data:`POINTING_TOLERANCE` of the image side (chance = that dilated area share, reported too);
- ``generic_r`` = Pearson correlation of each map with the average map of the set (the average
  includes the map itself): close to 1 means every image gets the same map.

**Faithfulness** (:func:`perturbation_curves`; Petsiuk et al., RISE, 2018): the image is cut into
a ``grid x grid`` block grid; blocks are ranked by their mean heatmap. *Deletion*: the top 0, 10,
..., 100% of blocks are replaced by a heavily blurred copy of the image (Gaussian, sigma = 1/8 of
the side; keeps colour and stain, removes the cells' detail) and the probability of the class the
map explains is recorded; *insertion*: start from the blurred image and reveal blocks in the same
order. The same is done in ``n_random`` random block orders. AUC = trapezoid over the area
fraction [0, 1]. A faithful map has deletion AUC below random and insertion AUC above random.
"""
from __future__ import annotations

import logging
from typing import Callable

import cv2
import numpy as np
from scipy import ndimage
from skimage import morphology

from . import metrics as M
from .heatmap import normalise

log = logging.getLogger(__name__)

#: A first Otsu mask above this area share took the red cells too: Otsu again on its pixels.
MAX_SHARE = 0.3
#: Smallest kept mask component, as a fraction of the image area.
MIN_COMPONENT = 0.002
#: Pointing-game tolerance: the mask is dilated by this fraction of the image side (224 px -> 7 px).
POINTING_TOLERANCE = 0.03
#: Faithfulness defaults: 10 steps of 10% of the area, 14 x 14 blocks, 3 random orders.
STEPS, GRID, N_RANDOM = 10, 14, 3
#: Blur of the deleted regions (sigma as a fraction of the image side).
BLUR_SIGMA = 1.0 / 8.0
#: Per-image keys summarised by :func:`summarise`.
LOCALISATION_KEYS = ("lift", "pointing", "pointing_chance", "mask_share", "generic_r")
FAITHFULNESS_KEYS = ("deletion_auc", "deletion_auc_random", "deletion_vs_random",
                     "insertion_auc", "insertion_auc_random", "insertion_vs_random")
#: A subtype model's second faithfulness target (the predicted subtype's probability): its keys
#: carry this prefix (the unprefixed keys explain the screening probability; docs/heatmaps.md).
CLASS_PREFIX = "class_"
CLASS_FAITHFULNESS_KEYS = tuple(CLASS_PREFIX + k for k in FAITHFULNESS_KEYS)


def stained_cell_mask(rgb_u8: np.ndarray) -> np.ndarray:
    """Boolean (h, w) mask of the purple-stained white cells and blasts (see the module docstring)."""
    img = np.asarray(rgb_u8, np.float32)
    score = (img[..., 0] + img[..., 2]) / 2.0 - img[..., 1]
    u8 = np.clip(score + 128.0, 0, 255).astype(np.uint8)
    t, th = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if (th > 0).mean() > MAX_SHARE:  # Otsu split background from (blue-tinted) red cells: split again above it
        t2, _ = cv2.threshold(u8[u8 > t].reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        th = np.where(u8 > t2, 255, 0).astype(np.uint8)
    mask = cv2.morphologyEx(th, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    mask = ndimage.binary_fill_holes(mask > 0)
    return morphology.remove_small_objects(mask, max_size=max(1, int(MIN_COMPONENT * mask.size)))


def heat_at(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The display heatmap at ``shape`` = (h, w): the one normalisation of :mod:`leukedge.heatmap`."""
    return normalise(cam, (shape[1], shape[0]))


def lift(heat: np.ndarray, mask: np.ndarray) -> float:
    """Heatmap mass on the mask / mask area share (NaN for an empty mask or an all-zero map)."""
    share = float(mask.mean())
    total = float(heat.sum())
    if share == 0 or total <= 0:
        return float("nan")
    return float(heat[mask].sum()) / total / share


def pointing(heat: np.ndarray, mask: np.ndarray, tolerance: float = POINTING_TOLERANCE) -> tuple[float, float]:
    """(hit, chance): is the peak pixel inside the mask dilated by ``tolerance`` x side; chance = its share.

    A flat map has no peak: it counts as the chance level (the expected hit of a random pixel).
    """
    r = int(round(tolerance * max(mask.shape)))
    dil = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
    chance = float(dil.mean())
    if heat.max() <= heat.min():
        return chance, chance
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return float(dil[y, x]), chance


def generic_correlation(heats: np.ndarray) -> np.ndarray:
    """Pearson r of each (h, w) map with the average map of the set (N,)."""
    h = np.asarray(heats, np.float64).reshape(len(heats), -1)
    mean = h.mean(axis=0)
    hc, mc = h - h.mean(axis=1, keepdims=True), mean - mean.mean()
    den = np.linalg.norm(hc, axis=1) * np.linalg.norm(mc)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, hc @ mc / np.where(den > 0, den, 1.0), np.nan)


def localisation(image_u8: np.ndarray, cam: np.ndarray) -> dict:
    """lift, pointing, its chance and the mask share of one image and its raw map."""
    mask = stained_cell_mask(image_u8)
    heat = heat_at(cam, mask.shape)
    hit, chance = pointing(heat, mask)
    return {"lift": lift(heat, mask), "pointing": hit, "pointing_chance": chance, "mask_share": float(mask.mean())}


# --------------------------------------------------------------------------------------------
# Faithfulness: deletion / insertion
# --------------------------------------------------------------------------------------------
def block_ranking(heat: np.ndarray, grid: int = GRID) -> np.ndarray:
    """Block indices (grid*grid,) from the most to the least highlighted (mean heat per block)."""
    blocks = cv2.resize(np.asarray(heat, np.float32), (grid, grid), interpolation=cv2.INTER_AREA)
    return np.argsort(-blocks.ravel(), kind="stable")


def _block_masks(order: np.ndarray, shape: tuple[int, int], grid: int, steps: int) -> np.ndarray:
    """(steps+1, h, w) bool: pixels of the first k/steps of ``order`` (block grid upsampled)."""
    n = grid * grid
    out = np.zeros((steps + 1, *shape), bool)
    for k in range(steps + 1):
        sel = np.zeros(n, np.uint8)
        sel[order[: int(round(k * n / steps))]] = 1
        out[k] = cv2.resize(sel.reshape(grid, grid), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return out


def blurred(image_u8: np.ndarray) -> np.ndarray:
    """The 'removed' version of an image: Gaussian blur with sigma = :data:`BLUR_SIGMA` x side."""
    return cv2.GaussianBlur(image_u8, (0, 0), BLUR_SIGMA * max(image_u8.shape[:2]))


def auc(curve) -> float:
    """Trapezoid area under a curve sampled at equal steps of the area fraction in [0, 1]."""
    c = np.asarray(curve, np.float64)
    return float(((c[:-1] + c[1:]) / 2.0).mean()) if c.size > 1 else float("nan")


def perturbation_curves(predict: Callable[[np.ndarray], np.ndarray], image_u8: np.ndarray, heat: np.ndarray,
                        steps: int = STEPS, grid: int = GRID, n_random: int = N_RANDOM, seed: int = 0,
                        extra_prefixes: tuple[str, ...] = ()) -> dict:
    """Deletion and insertion curves of one image in saliency order and in ``n_random`` random orders.

    Args:
        predict: uint8 batch (B, h, w, 3) -> (B,) probability of the class the map explains, or
            (B, 1 + len(extra_prefixes)): column 0 that probability, the others further targets
            scored on the same perturbed images (no extra model calls).
        image_u8: the model's view of the image (preprocessed uint8, before normalisation).
        heat: (h, w) heatmap at the image's size.
        extra_prefixes: key prefix of each further target (e.g. ``("class_",)``).

    Returns:
        {"deletion": [...], "insertion": [...], "deletion_random": [...], "insertion_random": [...]}
        (random curves averaged over the orders) and the AUCs and differences to random; for a
        further target the same keys with its prefix.
    """
    rng = np.random.default_rng(seed)
    shape = image_u8.shape[:2]
    base = blurred(image_u8)
    orders = [block_ranking(heat, grid)] + [rng.permutation(grid * grid) for _ in range(n_random)]
    batch = []
    for order in orders:
        m = _block_masks(order, shape, grid, steps)[..., None]
        batch.append(np.where(m, base, image_u8))   # deletion: chosen blocks blurred
        batch.append(np.where(m, image_u8, base))   # insertion: chosen blocks revealed
    raw = np.asarray(predict(np.concatenate(batch).astype(np.uint8)), np.float64)
    cols = raw.reshape(len(orders) * 2 * (steps + 1), -1)
    if cols.shape[1] != 1 + len(extra_prefixes):
        raise ValueError(f"predict returned {cols.shape[1]} target(s) per image, expected {1 + len(extra_prefixes)}")
    out = {}
    for k, prefix in enumerate(("", *extra_prefixes)):
        out.update({prefix + key: v for key, v in _curve_stats(cols[:, k].reshape(len(orders), 2, steps + 1)).items()})
    return out


def _curve_stats(probs: np.ndarray) -> dict:
    """Curves and AUCs of one target from its (orders, 2, steps + 1) probabilities (order 0 = the map's)."""
    out = {"deletion": probs[0, 0].tolist(), "insertion": probs[0, 1].tolist(),
           "deletion_random": probs[1:, 0].mean(0).tolist(), "insertion_random": probs[1:, 1].mean(0).tolist()}
    out["deletion_auc"] = auc(probs[0, 0])
    out["insertion_auc"] = auc(probs[0, 1])
    out["deletion_auc_random"] = float(np.mean([auc(c) for c in probs[1:, 0]]))
    out["insertion_auc_random"] = float(np.mean([auc(c) for c in probs[1:, 1]]))
    out["deletion_vs_random"] = out["deletion_auc"] - out["deletion_auc_random"]
    out["insertion_vs_random"] = out["insertion_auc"] - out["insertion_auc_random"]
    return out


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------
def mean_with_ci(values, n_boot: int = 1000, seed: int = 0, groups=None, level: float = 0.95) -> dict:
    """Mean with a percentile bootstrap CI; with ``groups``, whole groups are resampled (cluster bootstrap)."""
    v = np.asarray(values, np.float64)
    keep = ~np.isnan(v)
    v = v[keep]
    if v.size == 0:
        return {"value": None, "ci95": [None, None], "n": 0}
    rng = np.random.default_rng(seed)
    if groups is not None:
        g = np.asarray(groups)[keep]
        members = [np.flatnonzero(g == k) for k in np.unique(g)]
        sums = np.array([v[i].sum() for i in members])
        counts = np.array([len(i) for i in members])
        pick = rng.integers(0, len(members), size=(n_boot, len(members)))
        boot = sums[pick].sum(1) / counts[pick].sum(1)
        method = "percentile cluster bootstrap over groups"
    else:
        boot = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
        method = "percentile bootstrap"
    return {"value": float(v.mean()), "ci95": M._percentile_ci(boot, level), "n": int(v.size), "ci_method": method}


def summarise(per_image: list[dict], keys, n_boot: int = 1000, seed: int = 0, groups=None) -> dict:
    """{key: mean_with_ci} over the images that have the key."""
    out = {}
    for k in keys:
        idx = [i for i, r in enumerate(per_image) if r.get(k) is not None]
        if idx:
            g = None if groups is None else [groups[i] for i in idx]
            out[k] = mean_with_ci([per_image[i][k] for i in idx], n_boot, seed, g)
    return out


def best_worst(per_image: list[dict], key: str = "lift", n: int = 4) -> dict[str, list[int]]:
    """Indices of the ``n`` highest and lowest ``key`` images (NaN left out)."""
    idx = [i for i, r in enumerate(per_image) if r.get(key) is not None and not np.isnan(r[key])]
    idx.sort(key=lambda i: per_image[i][key])
    return {"best": idx[::-1][:n], "worst": idx[:n]}
