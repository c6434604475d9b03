"""The heatmap's closed forms as TensorFlow ops: one builder for the exported graph and the pruning loss.

For the head ``features -> GAP -> Dense(W1, ReLU) -> Dense(W2)``, Grad-CAM of class ``c`` at
cell ``(i, j)`` is ``relu(((A[i, j] @ W1) * 1[z > 0]) @ W2[:, c] / (h w))`` (derivation in
:mod:`leukedge.compress.export`; the numpy reference is :func:`leukedge.heatmap.closed_form_cams`).
:func:`cam_scores` computes the part inside the ReLU with two 2-D matrix products, so the
exported file has two ``FULLY_CONNECTED`` ops that read ``W1`` and ``W2`` in their own
layout (stored once); :func:`leukedge.compress.export.serving_function` and the Grad-CAM
distillation of :mod:`leukedge.compress.prune` both call it.

:func:`guided_cam` is the ``guided7x14`` map (docs/heatmaps.md): that Grad-CAM upsampled to
the guiding layer's size (2x the feature map's) times the layer's normalised channel mean;
the numpy reference is :func:`leukedge.heatmap.guided_map`. :func:`guide_layer` names the
guiding layer: the backbone registry's ``guide_layer``, else the last layer at twice the
feature map's size.
"""
from __future__ import annotations

from leukedge.errors import ConfigError, ModelError
from leukedge.heatmap import GUIDE_EPS
from leukedge.train.backbones import get_backbone

#: The trained model's last feature map (leukedge.train.model.FEATURE_LAYER).
FEATURES = "features"


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


def guided_cam(cam, activation, eps: float = GUIDE_EPS):
    """The ``guided7x14`` map in TensorFlow ops (TFLite builtins: MEAN, RELU, REDUCE_MAX, ADD,
    DIV, RESIZE_BILINEAR, MUL; no weights).

    Args:
        cam: (1, h, w) class map (ReLU'd Grad-CAM).
        activation: (1, H, W, C) activation of the guiding layer.

    Returns:
        (1, H, W) map: ``resize_bilinear(cam, (H, W)) * g / (max(g) + eps)``,
        ``g = relu(mean_c(activation))`` (half-pixel centres, as ``cv2.resize``).
    """
    import tensorflow as tf

    size = (int(activation.shape[1]), int(activation.shape[2]))
    g = tf.nn.relu(tf.reduce_mean(activation, axis=-1))                        # (1, H, W)
    g = g / (tf.reduce_max(g) + eps)
    up = tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]      # half_pixel_centers=True
    return up * g


def _side(layer) -> int | None:
    shape = getattr(layer, "output_shape", None)
    if isinstance(shape, tuple) and len(shape) == 4 and shape[1] is not None and shape[1] == shape[2]:
        return int(shape[1])
    return None


def last_layer_at(model, side: int) -> str | None:
    """Name of the last layer (graph order) with a square (side, side) output, not ``features``."""
    found = None
    for layer in model.layers:
        if layer.name != FEATURES and _side(layer) == side:
            found = layer.name
    return found


def feature_side(model) -> int:
    """The ``features`` layer's spatial side (7 for EfficientNet-Lite0 / DenseNet201 at 224)."""
    try:
        side = _side(model.get_layer(FEATURES))
    except ValueError:
        side = None
    if side is None:
        raise ModelError(f"model '{model.name}' has no square '{FEATURES}' layer",
                         "heatmaps need a classifier built by leukedge.train.model.build_classifier")
    return side


def guide_layer(model, backbone: str | None = None) -> str:
    """The layer that guides ``guided7x14``: the backbone registry's ``guide_layer`` when the
    model has it at twice the feature map's size, else the last layer of that size.

    Raises:
        ModelError: no layer of twice the feature map's size.
    """
    side = 2 * feature_side(model)
    if backbone:
        try:
            name = get_backbone(backbone).guide_layer
        except ConfigError:  # an unknown backbone name: the size rule still applies
            name = None
        if name and name in {lay.name for lay in model.layers} and _side(model.get_layer(name)) == side:
            return name
    name = last_layer_at(model, side)
    if name is None:
        raise ModelError(f"model '{model.name}' has no {side}x{side} layer to guide the heatmap",
                         "use heatmap.method=gradcam7")
    return name
