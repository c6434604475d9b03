"""Runtimes the benchmark can measure, looked up by name.

* ``litert``: ``ai-edge-litert`` through :class:`leukedge.runtime.LiteRunner` (the edge runtime).
* ``tflite-runtime``: the legacy ``tflite-runtime`` package, when importable.
* ``keras``: the float tf_keras model through TensorFlow (the reference): the run's
  ``best.h5`` when the release/run folder has one, else rebuilt from ``spec.json`` with
  untrained weights (same architecture, so the same cost; recorded in the row).

A :class:`Session` is what the timing harness drives: ``set_input`` once, then ``invoke``
repeatedly (the timed call), ``run`` for a full call with outputs.
"""
from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from leukedge.errors import ConfigError, ModelError, did_you_mean
from leukedge.runtime import LiteRunner
from leukedge.spec import ModelSpec
from leukedge.train.io import load_keras_model
from leukedge.train.model import build_classifier

from .cost import count_macs_keras
from .device import dist_version

log = logging.getLogger(__name__)


@dataclass
class Target:
    """One model to measure.

    Attributes:
        model: model name (release folder name or file stem).
        variant: ``int8``, ``float32``, ``pruned-int8``... or ``keras-float32``.
        path: the ``.tflite`` file, the Keras ``.h5`` file, or None (Keras rebuilt from the spec).
        model_dir: the release or run folder it came from (None for a bare file).
        spec_path: ``spec.json`` that describes it (None when there is none).
        backbone: from the spec.
    """

    model: str
    variant: str
    path: str | None
    model_dir: str | None = None
    spec_path: str | None = None
    backbone: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def format(self) -> str:
        return "keras" if self.variant.startswith("keras") else "tflite"

    @property
    def file(self) -> str:
        return Path(self.path).name if self.path else "(rebuilt from spec.json)"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Target":
        return cls(**d)


class Session:
    """A loaded model ready for timing."""

    input_shape: tuple[int, ...]
    input_dtype: str
    macs: int | None = None
    note: str | None = None

    def set_input(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def invoke(self) -> None:
        raise NotImplementedError

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError


class LiteSession(Session):
    def __init__(self, path: str, threads: int, runtime: str):
        self.runner = LiteRunner(path, num_threads=threads, runtime=runtime)
        self.interpreter = self.runner.interpreter
        self.input_shape = self.runner.input_shape
        self.input_dtype = np.dtype(self.runner.input_dtype).name
        self.invoke = self.runner.invoke  # bound once: the timed call is the interpreter's invoke

    def set_input(self, x):
        self.runner.set_input(x)

    def run(self, x):
        return self.runner.run(x)


class KerasSession(Session):
    def __init__(self, target: Target, threads: int):
        import tensorflow as tf

        try:  # must happen before TensorFlow runs anything in this (fresh) process
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError as exc:
            log.warning("could not set TensorFlow threads: %s", exc)
        if target.path:
            self.model = load_keras_model(target.path)
        else:
            if not target.spec_path:
                raise ModelError(f"{target.model}: no Keras model and no spec.json to rebuild one from",
                                 "name a release or run folder, or leave 'keras' out of --runtimes")
            spec = ModelSpec.load(target.spec_path)
            self.model = build_classifier(spec, weights=None)
            self.note = "Keras model rebuilt from spec.json with untrained weights (same architecture and cost)"

        self.macs = count_macs_keras(self.model)
        shape = tuple(int(d) if d else 1 for d in self.model.input_shape)
        self.input_shape = shape
        self.input_dtype = "float32"
        self._fn = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
        self._tf = tf
        self._x = None

    def set_input(self, x):
        x = np.asarray(x, np.float32)
        self._x = self._tf.constant(x[None] if x.ndim == 3 else x)

    def invoke(self):
        out = self._fn(self._x)
        (out[0] if isinstance(out, (list, tuple)) else out).numpy()

    def run(self, x):
        self.set_input(x)
        out = self._fn(self._x)
        out = out if isinstance(out, dict) else {"probability": out}
        return {k: np.asarray(v)[0] for k, v in out.items()}


@dataclass
class Runtime:
    """A registered runtime.

    Attributes:
        name: registry name.
        kind: ``tflite`` (measures .tflite files) or ``keras`` (one float model per folder).
        module: import name checked for availability.
        dist: PyPI distribution (for the version and the install hint).
    """

    name: str
    kind: str
    module: str
    dist: str

    def unavailable(self) -> str | None:
        """Why this runtime cannot run here (None when it can)."""
        try:
            found = importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            found = False
        return None if found else f"{self.dist} is not installed (pip install {self.dist})"

    def version(self) -> str | None:
        return dist_version(self.dist)

    def preload(self) -> None:
        """Import the runtime's module (done before the memory baseline)."""
        if self.kind == "tflite":
            importlib.import_module(self.module + ".interpreter")
            importlib.import_module("leukedge.runtime")
        else:
            importlib.import_module("tensorflow")
            importlib.import_module("tf_keras")

    def load(self, target: Target, threads: int) -> tuple[Session, float]:
        """Load ``target``; returns the session and the load time in ms."""
        t = time.perf_counter()
        if self.kind == "keras":
            session: Session = KerasSession(target, threads)
        else:
            session = LiteSession(target.path, threads, self.name)
        return session, (time.perf_counter() - t) * 1000.0


REGISTRY: dict[str, Runtime] = {
    "litert": Runtime("litert", "tflite", "ai_edge_litert", "ai-edge-litert"),
    "tflite-runtime": Runtime("tflite-runtime", "tflite", "tflite_runtime", "tflite-runtime"),
    "keras": Runtime("keras", "keras", "tf_keras", "tensorflow"),
}


def get_runtime(name: str) -> Runtime:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown runtime '{name}'", did_you_mean(name, REGISTRY)) from None


def default_runtimes() -> list[str]:
    """LiteRT, plus tflite-runtime and the Keras reference when they are installed."""
    return [n for n, r in REGISTRY.items() if n == "litert" or r.unavailable() is None]
