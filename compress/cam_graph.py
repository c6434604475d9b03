"""Grad-CAM's closed form as TensorFlow ops: one builder for the exported graph and the pruning loss.

For the head ``features -> GAP -> Dense(W1, ReLU) -> Dense(W2)``, Grad-CAM of class ``c`` at
cell ``(i, j)`` is ``relu(((A[i, j] @ W1) * 1[z > 0]) @ W2[:, c] / (h w))`` (derivation in
:mod:`leukedge.compress.export`; the numpy reference is :func:`leukedge.heatmap.closed_form_cams`).
:func:`cam_scores` computes the part inside the ReLU with two 2-D matrix products, so the
exported file has two ``FULLY_CONNECTED`` ops that read ``W1`` and ``W2`` in their own
layout (stored once); :func:`leukedge.compress.export.serving_function` and the Grad-CAM
distillation of :mod:`leukedge.compress.prune` both call it.
"""
from __future__ import annotations


def cam_scores(cells, active, w1, w2, cells_per_map: int):
    """Grad-CAM of every class before its ReLU, one row per feature-map cell.

    Args:
        cells: (M, D) feature vectors (the feature map reshaped to rows).
        active: ``1[z > 0]`` of the hidden layer, (M, U) or broadcastable (1, U), float.
        w1: the hidden layer's kernel (D, U); w2: the output layer's kernel (U, C).
        cells_per_map: ``h * w`` (the global average pooling's divisor).

    Returns:
        (M, C) tensor; ``tf.nn.relu`` of a class column is its Grad-CAM map.
    """
    import tensorflow as tf

    za = tf.matmul(cells, w1) * active                      # (M, U): A @ W1 (FULLY_CONNECTED), * 1[z > 0]
    return tf.matmul(za, w2 * (1.0 / cells_per_map))        # (M, C): every class, GAP's 1 / (h w)
