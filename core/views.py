"""Screening each model input in several orientations and averaging (test-time augmentation).

A smear has no "up": a photo rotated by 90 degrees or mirrored shows the same cells, but a CNN's
answer is not exactly invariant to it, and for a smear near the decision threshold the
orientation a health worker happens to hold the phone in can flip the answer. With
``preprocess.capture.views = k`` every model input is run in the first ``k`` of the 8 dihedral
views (:data:`ORDER`: k = 2 the input and its mirror image, 4 the four 90-degree rotations, 8
those and their mirror images) and the **probability is the mean over the views**; every other
output (the heatmap ``cam``, the OOD gate's features) is the unrotated input's, so the heatmap
lines up with the photo and the OOD gate sees what it was fitted on. With 8 views a photo turned
by 90 degrees or mirrored gets nearly the same probability (not exactly: OpenCV's CLAHE in the
preprocessing is not exactly rotation-equivariant; tests/test_views.py measures ~10x less spread
than one view). Measured on the capture bench in docs/captures.md 16: not switched on in the
releases (``views`` 1).

One function for every place a model runs (:meth:`leukedge.predictors.Predictor.predict` for
evaluation and parity, :class:`leukedge.edge_app.inference.Screener` for ``predict`` and the app).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

VIEWS = (1, 2, 4, 8)
#: The dihedral views in the order they are used: (quarter turns, mirrored).
ORDER = ((0, False), (0, True), (1, False), (1, True), (2, False), (2, True), (3, False), (3, True))
# k=4 must be the four rotations, not rotation+mirror pairs
_FIRST = {1: (0,), 2: (0, 1), 4: (0, 2, 4, 6), 8: tuple(range(8))}


def view(x: np.ndarray, i: int, axes=(0, 1)) -> np.ndarray:
    """View ``i`` of :data:`ORDER` of an image (``axes`` are its row and column axes)."""
    turns, mirrored = ORDER[i]
    out = np.rot90(x, turns, axes=axes)
    if mirrored:
        out = np.flip(out, axis=axes[1])
    return np.ascontiguousarray(out)


def view_indices(k: int) -> tuple[int, ...]:
    """Which of :data:`ORDER` the first ``k`` views are."""
    if k not in _FIRST:
        raise ValueError(f"views must be one of {VIEWS}, got {k!r}")
    return _FIRST[k]


def mean_over_views(run: Callable[[np.ndarray], dict], x: np.ndarray, k: int, axes=(0, 1)) -> dict:
    """``run(x)``'s outputs with ``probability`` replaced by its mean over ``k`` views of ``x``.

    ``run`` takes an image (``axes=(0, 1)``) or a batch (``axes=(1, 2)``) and returns named
    arrays; the outputs other than ``probability`` are the first (unrotated) view's.
    """
    first = dict(run(x))
    if k == 1:
        return first
    probs = [np.asarray(first["probability"], np.float64)]
    for i in view_indices(k)[1:]:
        probs.append(np.asarray(run(view(x, i, axes))["probability"], np.float64))
    first["probability"] = np.mean(probs, axis=0)
    return first
