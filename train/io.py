"""Loading and saving tf_keras models (``.h5``: loads in seconds, ``.keras`` took 47 s for DenseNet201)."""
from __future__ import annotations

from pathlib import Path

from leukedge.errors import ModelError


def custom_objects() -> dict:
    """Custom layers that saved LeukEdge models may contain (none yet; extend here)."""
    return {}


def load_keras_model(path, compile: bool = False):
    """Load a tf_keras model saved by LeukEdge.

    Raises:
        ModelError: missing or unreadable file.
    """
    import tf_keras as keras

    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such Keras checkpoint", "train first (`leukedge train`) or pass the run folder")
    try:
        return keras.models.load_model(str(p), compile=compile, custom_objects=custom_objects())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{p}: cannot load Keras model ({str(exc).splitlines()[0]})",
                         "the checkpoint is corrupt; use last.h5 or retrain") from None
