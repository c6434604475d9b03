"""Standalone BatchNormalization -> 1x1 depthwise convolution, so int8 keeps it per channel.

The TFLite converter folds a BatchNormalization that follows a convolution into the
convolution's kernel and bias (quantized per output channel). A BatchNormalization that
follows anything else (DenseNet's BN -> ReLU -> Conv after every Concatenate: 98 of them in
DenseNet201, plus the transition layers) cannot be folded and becomes ``MUL`` + ``ADD`` with
constant vectors. In a full-integer file those constants are quantized **per tensor**: one
int8 scale for all of a layer's channels, so a channel whose multiplier is small next to the
largest one rounds to 0 or 1 (measured in the first DenseNet201 release: 4% of the BN
multipliers had |q| <= 4, i.e. >= 12% error, and 1.2% were 0 or +-1), and the ``MUL``
output is requantized once more before the ``ADD``.

The same affine map ``y = x * s + t`` with ``s = gamma / sqrt(var + eps)`` and
``t = beta - mean * s`` is a 1x1 ``DepthwiseConv2D`` with kernel ``s`` and bias ``t``. Its
kernel is quantized per channel (one weight per channel, so each multiplier is exact to
1/254 of itself), its bias is int32, and a following ReLU fuses into it. In float32 the two
are the same function (to rounding). :func:`standalone_bn_to_depthwise` rewrites a trained
model this way; the layer names are kept, so the export still finds ``features``, ``gap``,
``head_dense`` and ``probability``.

Where it is used: quantization-aware training (:mod:`leukedge.compress.qat`), because tfmot
has no quantize config for a standalone BatchNormalization and rejects DenseNet as it is.
It is **not** applied to the default post-training export, because measured on a DenseNet201
checkpoint (1 epoch, test split, 419 images) it bought nothing there and cost size: int8
agreement with float32 0.9475 vs 0.950 without it (mean |dp| 0.0825 vs 0.083, heatmap r
0.86), and the int8 file grew by 1.7 MB (29.4% of float32 instead of 25.9%: per-channel
scale and zero point plus an int32 bias for each of the ~80k BN channels, against 2 bytes per
channel for MUL + ADD). The DenseNet int8 error is not the BN constants' rounding.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

#: Layer types after which the converter folds a BatchNormalization into the kernel.
FOLDS_INTO = ("Conv2D", "DepthwiseConv2D")


def _inbound(layer) -> list:
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1:
        return []
    inbound = nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def _consumers(model) -> dict[str, int]:
    """How many layers read each layer's output."""
    count: dict[str, int] = {}
    for layer in model.layers:
        for src in _inbound(layer):
            count[src.name] = count.get(src.name, 0) + 1
    return count


def standalone_batchnorms(model) -> list[str]:
    """Names of the BatchNormalization layers the converter cannot fold into a convolution.

    A BN folds when its only input is a Conv2D/DepthwiseConv2D with a linear activation whose
    output nothing else reads. Only 4-D, channels-last BNs with one inbound node are listed
    (the ones :func:`standalone_bn_to_depthwise` can rewrite).
    """
    consumers = _consumers(model)
    out = []
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization":
            continue
        src = _inbound(layer)
        if len(src) != 1 or len(layer.input_shape) != 4:
            continue
        axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
        if axis not in (-1, 3):
            continue
        prev = src[0]
        act = getattr(getattr(prev, "activation", None), "__name__", "linear")
        folds = type(prev).__name__ in FOLDS_INTO and act == "linear" and consumers.get(prev.name, 0) == 1
        if not folds:
            out.append(layer.name)
    return out


def bn_affine(layer) -> tuple[np.ndarray, np.ndarray]:
    """``(s, t)`` with ``BN(x) = x * s + t`` in inference mode."""
    var = layer.moving_variance.numpy().astype(np.float64)
    mean = layer.moving_mean.numpy().astype(np.float64)
    gamma = layer.gamma.numpy().astype(np.float64) if layer.scale else np.ones_like(var)
    beta = layer.beta.numpy().astype(np.float64) if layer.center else np.zeros_like(var)
    s = gamma / np.sqrt(var + float(layer.epsilon))
    return s.astype(np.float32), (beta - mean * s).astype(np.float32)


def standalone_bn_to_depthwise(model):
    """A copy of ``model`` whose standalone BatchNormalizations are 1x1 depthwise convolutions.

    Returns ``model`` itself when it has none (e.g. EfficientNet-Lite0, MobileNetV2, ResNet50,
    the tiny CNN: every BN follows a convolution). Weights are copied; inference-mode outputs
    are equal to float32 rounding.
    """
    import tf_keras as keras
    from tf_keras import layers

    names = set(standalone_batchnorms(model))
    if not names:
        return model

    def clone(layer):
        if layer.name in names:
            return layers.DepthwiseConv2D(1, use_bias=True, name=layer.name, dtype=layer.dtype)
        return layer.__class__.from_config(layer.get_config())

    new = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        target = new.get_layer(layer.name)
        if layer.name in names:
            s, t = bn_affine(layer)
            target.set_weights([s.reshape(1, 1, -1, 1), t])
        elif layer.weights:
            target.set_weights(layer.get_weights())
    log.info("%d standalone BatchNormalization layers expressed as 1x1 depthwise convolutions "
             "(per-channel int8 instead of per-tensor MUL/ADD)", len(names))
    return new
