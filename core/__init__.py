"""LeukEdge core: the model spec, the one preprocessing, image decoding, data and splits.

This package imports no TensorFlow, so the edge app and the benchmarks can use it on a
phone or a Raspberry Pi. Importing it sets ``TF_USE_LEGACY_KERAS=1`` (unless the user set
it) so that TensorFlow, when a training or compression stage imports it later, builds
Keras 2 models that tensorflow-model-optimization can prune.
"""
import os as _os

_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"

from .errors import ConfigError, DataError, ImageError, LeukEdgeError, ModelError  # noqa: E402

#: Names imported on first use (PEP 562), so that ``import leukedge.<module>`` (the app's first
#: frame) does not pay for numpy, OpenCV, Pillow and pydantic until it needs them.
#: ``leukedge.preprocess`` is the module (the function is ``leukedge.preprocess.preprocess``).
_LAZY = {"decode_image": "imageio", "load_image": "imageio",
         "PreprocessConfig": "preprocess", "preprocess_file": "preprocess", "preprocess_uint8": "preprocess",
         "DataInfo": "spec", "HeatmapConfig": "spec", "ModelSpec": "spec", "OODConfig": "spec",
         "OperatingPoint": "spec"}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__", "LeukEdgeError", "ImageError", "DataError", "ModelError", "ConfigError",
    "load_image", "decode_image", "PreprocessConfig", "preprocess_uint8", "preprocess_file",
    "ModelSpec", "OperatingPoint", "DataInfo", "OODConfig", "HeatmapConfig",
]
