"""Exposure and colour normalisation of smear photos (numpy + OpenCV, no TensorFlow).

Three candidates, each split into *estimate* (statistics of the source image, measured on
a downscaled copy of the whole field) and *apply* (to the field or any crop of it), so
tiles of one photo share one transform. Each maps the source towards target statistics
fitted on the training smears (:func:`fit_targets`), which the spec records:

* ``background``: white balance and exposure from the plasma background (a white patch):
  the median linear-light colour of the bright, unsaturated pixels is scaled to the
  training smears' background colour, channel by channel.
* ``reinhard``: Reinhard et al. (2001) colour transfer: per-channel mean and standard
  deviation in CIE-Lab matched to the training smears'.
* ``macenko``: Macenko et al. (2009) stain normalisation: optical density against the
  image's own background (so exposure and white balance are absorbed too), the two stain
  vectors from the angular extremes in the plane of the top two eigenvectors, the stain
  concentrations' 99th percentile matched and the image rebuilt with the training smears'
  stain matrix.
"""
from __future__ import annotations

import cv2
import numpy as np

COLOR_METHODS = ("none", "background", "reinhard", "macenko")
_EST_SIDE = 256


def _small(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = _EST_SIDE / max(h, w)
    if s >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _lin(rgb: np.ndarray) -> np.ndarray:
    x = rgb.astype(np.float32) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _srgb(lin: np.ndarray) -> np.ndarray:
    x = np.clip(lin, 0.0, 1.0)
    s = np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.clip(np.round(s * 255.0), 0, 255).astype(np.uint8)


def valid_pixels(rgb: np.ndarray) -> np.ndarray:
    """Flat (N, 3) pixels that are not the black surround of an eyepiece photo."""
    px = rgb.reshape(-1, 3)
    keep = px.max(1) > 25
    return px[keep] if keep.sum() >= 64 else px


# ----- background (white patch on the plasma) --------------------------------------------------
def background_color(rgb: np.ndarray) -> np.ndarray:
    """Median linear-light RGB of the plasma background: among the non-black pixels, the
    brightest 30% of those with low saturation (the 50% least saturated)."""
    px = valid_pixels(_small(rgb)).astype(np.float32)
    sat = (px.max(1) - px.min(1)) / np.maximum(px.max(1), 1.0)
    low = px[sat <= np.percentile(sat, 50)]
    grey = low.mean(1)
    bright = low[grey >= np.percentile(grey, 70)]
    return _lin(np.median(bright, axis=0).reshape(1, 1, 3).astype(np.uint8)).reshape(3)


def apply_background(rgb: np.ndarray, source_bg: np.ndarray, target_bg) -> np.ndarray:
    gains = np.asarray(target_bg, np.float32) / np.maximum(np.asarray(source_bg, np.float32), 1e-4)
    return _srgb(_lin(rgb) * gains.astype(np.float32))


# ----- Reinhard ---------------------------------------------------------------------------------
def lab_stats(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the CIE-Lab channels (float Lab: L 0-100) of non-black pixels."""
    px = valid_pixels(_small(rgb))
    lab = cv2.cvtColor(px.reshape(-1, 1, 3).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3)
    return lab.mean(0), np.maximum(lab.std(0), 1e-3)


def apply_reinhard(rgb: np.ndarray, source: tuple, target_mean, target_std) -> np.ndarray:
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    mu, sd = (np.asarray(v, np.float32) for v in source)
    lab = (lab - mu) / sd * np.asarray(target_std, np.float32) + np.asarray(target_mean, np.float32)
    out = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


# ----- Macenko ----------------------------------------------------------------------------------
def _od(px: np.ndarray, io: np.ndarray) -> np.ndarray:
    return -np.log(np.clip((px.astype(np.float64) + 1.0) / io, 1e-6, 1.0))


def macenko_stains(rgb: np.ndarray, beta: float = 0.15, alpha: float = 1.0) -> dict:
    """Stain matrix (2 x 3 rows H, E, unit optical-density vectors), the 99th percentile of
    each stain's concentration and the background intensity ``io`` (per channel)."""
    px = valid_pixels(_small(rgb)).astype(np.float64)
    io = np.maximum(np.percentile(px, 95, axis=0) + 1.0, 30.0)
    od = _od(px, io)
    odhat = od[(od > beta).all(1)]
    if len(odhat) < 32:  # almost no stained pixels: nothing to estimate
        odhat = od[od.sum(1) > np.percentile(od.sum(1), 80)]
    _, vecs = np.linalg.eigh(np.cov(odhat.T))
    plane = vecs[:, 1:3]
    proj = odhat @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, alpha), np.percentile(phi, 100 - alpha)
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    he = np.array([v1, v2] if v1[0] > v2[0] else [v2, v1])   # haematoxylin absorbs red most
    he = he * np.sign(he.sum(1, keepdims=True))
    he /= np.linalg.norm(he, axis=1, keepdims=True)
    conc = np.linalg.lstsq(he.T, od.T, rcond=None)[0]
    return {"stains": he, "max_conc": np.maximum(np.percentile(conc, 99, axis=1), 1e-3), "io": io}


def apply_macenko(rgb: np.ndarray, source: dict, target_stains, target_max_conc, target_io) -> np.ndarray:
    h, w = rgb.shape[:2]
    od = _od(rgb.reshape(-1, 3), source["io"])
    conc = np.linalg.lstsq(source["stains"].T, od.T, rcond=None)[0]
    conc *= (np.asarray(target_max_conc) / source["max_conc"])[:, None]
    out = np.asarray(target_io, np.float64) * np.exp(-(np.asarray(target_stains, np.float64).T @ conc)).T - 1.0
    return np.clip(np.round(out), 0, 255).astype(np.uint8).reshape(h, w, 3)


# ----- dispatch ---------------------------------------------------------------------------------
def estimate(rgb: np.ndarray, method: str):
    """The source statistics ``method`` needs, measured on (a downscaled copy of) ``rgb``."""
    if method == "background":
        return background_color(rgb)
    if method == "reinhard":
        return lab_stats(rgb)
    if method == "macenko":
        return macenko_stains(rgb)
    return None


def apply(rgb: np.ndarray, method: str, source, target: dict) -> np.ndarray:
    """Map ``rgb`` (with source statistics ``source`` from :func:`estimate`) to ``target``."""
    if method == "background":
        return apply_background(rgb, source, target["background"])
    if method == "reinhard":
        return apply_reinhard(rgb, source, target["lab_mean"], target["lab_std"])
    if method == "macenko":
        return apply_macenko(rgb, source, target["stains"], target["max_conc"], target["io"])
    return rgb


def normalize_color(rgb: np.ndarray, method: str, target: dict) -> np.ndarray:
    """Estimate on ``rgb`` and apply in one go."""
    return apply(rgb, method, estimate(rgb, method), target)


def fit_targets(images) -> dict:
    """Target statistics of every method from training smears (RGB uint8 arrays): medians of
    the per-image statistics, plain lists so the spec can record them."""
    bgs, means, stds, stains, concs, ios = [], [], [], [], [], []
    for rgb in images:
        bgs.append(background_color(rgb))
        m, s = lab_stats(rgb)
        means.append(m)
        stds.append(s)
        mk = macenko_stains(rgb)
        stains.append(mk["stains"])
        concs.append(mk["max_conc"])
        ios.append(mk["io"])
    if not bgs:
        raise ValueError("fit_targets needs at least one image")
    st = np.median(np.stack(stains), axis=0)
    st /= np.linalg.norm(st, axis=1, keepdims=True)
    r = lambda a, n=5: [round(float(v), n) for v in np.asarray(a).reshape(-1)]  # noqa: E731
    return {"background": r(np.median(bgs, axis=0)), "lab_mean": r(np.median(means, axis=0), 3),
            "lab_std": r(np.median(stds, axis=0), 3), "stains": [r(row) for row in st],
            "max_conc": r(np.median(concs, axis=0)), "io": r(np.median(ios, axis=0), 2), "n": len(bgs)}
