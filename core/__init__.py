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
from .imageio import decode_image, load_image  # noqa: E402
from .preprocess import PreprocessConfig, preprocess, preprocess_file, preprocess_uint8  # noqa: E402
from .spec import DataInfo, HeatmapConfig, ModelSpec, OODConfig, OperatingPoint  # noqa: E402

__all__ = [
    "__version__", "LeukEdgeError", "ImageError", "DataError", "ModelError", "ConfigError",
    "load_image", "decode_image", "PreprocessConfig", "preprocess", "preprocess_uint8", "preprocess_file",
    "ModelSpec", "OperatingPoint", "DataInfo", "OODConfig", "HeatmapConfig",
]
