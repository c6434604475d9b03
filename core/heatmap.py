"""The one Grad-CAM heatmap renderer: the app, the reports and the bench draw with it.

A model's ``cam`` output (or a GradientTape map) is a non-negative (h, w) map in the model's
own units. :func:`normalise` turns it into [0, 1] at the display size (ReLU, divide by the
map's own maximum, bilinear resize), :func:`colorize` maps it through OpenCV's JET, and
:func:`blend` lays it over the image; :func:`overlay` does all three. numpy + OpenCV only.

The closed form of Grad-CAM for the ``features -> GAP -> Dense(ReLU) -> Dense`` head is
:func:`closed_form_cams` (numpy; the exported TFLite graph computes the same in TensorFlow
ops, :func:`leukedge.compress.cam_graph.cam_scores`). :func:`guided_map` is the numpy reference
of the ``guided7x14`` map (:func:`leukedge.compress.cam_graph.guided_cam` in the graph).
"""
from __future__ import annotations

import cv2
import numpy as np

#: Weight of the colour map over the image (the app's overlay).
ALPHA = 0.45
#: ``guided7x14``: added to the guide's maximum (an all-zero guide gives an all-zero map).
GUIDE_EPS = 1e-12


def normalise(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """ReLU, scale to [0, 1] by the map's maximum, resize to ``size`` = (w, h) (bilinear).

    An all-zero (or all-negative) map gives zeros. A flat (h*w,) vector of a square map is
    accepted.
    """
    cam = np.maximum(np.asarray(cam, np.float32).squeeze(), 0.0)
    if cam.ndim != 2:
        cam = cam.reshape(int(np.sqrt(cam.size)), -1)
    peak = float(cam.max()) if cam.size else 0.0
    cam = cam / peak if peak > 0 else np.zeros_like(cam)
    return np.clip(cv2.resize(cam, tuple(int(v) for v in size), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def colorize(heat: np.ndarray) -> np.ndarray:
    """A [0, 1] heatmap through OpenCV's JET colour map, as RGB uint8."""
    bgr = cv2.applyColorMap(np.round(np.clip(heat, 0.0, 1.0) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def blend(image_u8: np.ndarray, heat_rgb: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """``heat_rgb`` over ``image_u8`` (both RGB uint8, same size) with weight ``alpha``."""
    return cv2.addWeighted(np.asarray(image_u8, np.uint8), 1.0 - alpha, heat_rgb, alpha, 0.0)


def overlay(image_u8: np.ndarray, cam: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """The heatmap of ``cam`` over an RGB uint8 image: :func:`normalise` at the image's size,
    :func:`colorize`, :func:`blend`."""
    h, w = image_u8.shape[:2]
    return blend(image_u8, colorize(normalise(cam, (w, h))), alpha)


def closed_form_cams(fmap: np.ndarray, hidden: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """Grad-CAM of every class for the head ``features -> GAP -> Dense(W1, ReLU) -> Dense(W2)``.

    The gradient of logit ``c`` with respect to the feature map ``A`` (h, w, D) is the same at
    every cell, ``W1 diag(1[z > 0]) W2[:, c] / (h w)``, so Grad-CAM on the pre-activation logit
    is ``relu(((A @ W1) * 1[z > 0]) @ W2[:, c] / (h w))`` (Selvaraju et al., 2017).

    Args:
        fmap: feature maps (N, h, w, D).
        hidden: the hidden layer's ReLU output z (N, U).
        w1: hidden kernel (D, U). w2: output kernel (U, C).

    Returns:
        (N, h, w, C) float32 maps, ReLU'd, not normalised.
    """
    fmap = np.asarray(fmap, np.float32)
    n, h, w, d = fmap.shape
    za = (fmap.reshape(n, h * w, d) @ np.asarray(w1, np.float32)) * (np.asarray(hidden) > 0)[:, None, :]
    cams = np.maximum(za @ (np.asarray(w2, np.float32) / (h * w)), 0.0)
    return cams.reshape(n, h, w, -1)


def guided_map(cam: np.ndarray, activation: np.ndarray, eps: float = GUIDE_EPS) -> np.ndarray:
    """The ``guided7x14`` heatmap: a class map sharpened by a higher-resolution activation.

    ``resize_bilinear(cam, (H, W)) * g / (max(g) + eps)`` with ``g = relu(mean_c(activation))``
    (half-pixel centres, as ``cv2.resize`` in :func:`normalise` and TFLite's
    ``RESIZE_BILINEAR(half_pixel_centers=True)``). docs/heatmaps.md measures it.

    Args:
        cam: (h, w) class map (e.g. the 7x7 Grad-CAM, ReLU'd).
        activation: (H, W, C) activation of the guiding layer (e.g. 14x14).

    Returns:
        (H, W) float32 map, non-negative, in ``cam``'s units.
    """
    a = np.asarray(activation, np.float32)
    g = np.maximum(a.mean(-1), 0.0)
    up = cv2.resize(np.asarray(cam, np.float32), (a.shape[1], a.shape[0]), interpolation=cv2.INTER_LINEAR)
    return (up * (g / np.float32(float(g.max()) + eps))).astype(np.float32)
