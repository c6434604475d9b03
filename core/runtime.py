"""Run a LeukEdge ``.tflite`` without TensorFlow (LiteRT), LiteRunner-style.

Quantizes the float input and dequantizes every output from the interpreter's own
tensor details, and returns outputs by name (``probability``, ``cam``, ``features``; files
with a ``logit`` output also return it, and their ``probability`` is recomputed in float
from it, see :func:`probability_from_logit`).
The runtime is looked up by name in :data:`RUNTIMES`: LiteRT (``ai-edge-litert``, the
default), ``tflite-runtime`` (legacy fallback) or TensorFlow's own interpreter.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .errors import ConfigError, ModelError, did_you_mean
from .fileio import check_regular, open_regular, sha256_file

log = logging.getLogger(__name__)


def _litert():
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter


def _tflite_runtime():
    from tflite_runtime.interpreter import Interpreter

    return Interpreter


def _tensorflow():
    import tensorflow as tf

    return tf.lite.Interpreter


def max_threads() -> int:
    """The most interpreter threads LeukEdge asks for: 4 x the CPUs (at least 4).

    More threads than that only add contention; far more (``--threads 100000``) make the
    runtime's thread pool crash the process (SIGSEGV) instead of raising.
    """
    return max(4, (os.cpu_count() or 1) * 4)


def batch_threads() -> int:
    """Interpreter threads for batch scoring (parity, evaluation, the OOD fit, ``predict`` on a
    folder): every CPU this process may run on. LiteRT's own default is one thread."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_threads(num_threads, what: str = "--threads") -> int | None:
    """Validate an interpreter thread count: None (the runtime's default) or 1..:func:`max_threads`.

    Counts above the maximum are clamped with a warning.

    Raises:
        ConfigError: not an integer, or below 1.
    """
    if num_threads is None:
        return None
    cpus = os.cpu_count() or 1
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)):
        raise ConfigError(f"{what} {num_threads!r} is not a whole number", f"use 1..{cpus} (this machine has {cpus} CPUs)")
    n = int(num_threads)
    if n < 1:
        raise ConfigError(f"{what} {n}: at least 1 thread is needed",
                          f"use 1..{cpus} (this machine has {cpus} CPUs), or leave it out for the runtime's default")
    top = max_threads()
    if n > top:
        log.warning("%s %d is more than %d (4 x %d CPUs): using %d threads", what, n, top, cpus, top)
        return top
    return n


#: Runtime name -> function returning the Interpreter class.
RUNTIMES = {"litert": _litert, "tflite-runtime": _tflite_runtime, "tensorflow": _tensorflow}


def interpreter_class(runtime: str = "litert"):
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime '{runtime}'", did_you_mean(runtime, RUNTIMES))
    try:
        return RUNTIMES[runtime]()
    except ImportError as exc:
        pkg = {"litert": "ai-edge-litert", "tflite-runtime": "tflite-runtime", "tensorflow": "tensorflow"}[runtime]
        raise ModelError(f"runtime '{runtime}' is not available ({exc})", f"pip install {pkg}") from None


def check_tflite_file(path: str | os.PathLike, expected_sha256: str | None = None) -> Path:
    """Cheap checks before handing a file to the interpreter (which may abort on garbage).

    Raises:
        ModelError: missing, empty, not a TFLite flatbuffer, or sha256 mismatch (tampered).
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such model file", "check the path or run `leukedge compress`")
    if p.is_dir():
        raise ModelError(f"{p}: is a folder", "name a .tflite file or use --model models/<name>")
    size = check_regular(p, ModelError, "model (.tflite)").st_size
    if size < 64:
        raise ModelError(f"{p}: {size} bytes is too small to be a TFLite model", "re-export or re-download it")
    with open_regular(p, ModelError, "model (.tflite)") as fh:
        head = fh.read(8)
    if head[4:8] != b"TFL3":
        raise ModelError(f"{p}: not a TFLite model (no TFL3 identifier)", "name a .tflite file exported by LeukEdge")
    if expected_sha256:
        actual = sha256_file(p, error=ModelError)
        if actual != expected_sha256:
            raise ModelError(f"{p}: sha256 {actual[:12]}... does not match the model card ({expected_sha256[:12]}...)",
                             "the file was modified or corrupted; re-download the release")
    return p


def probability_from_logit(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Recompute ``probability`` in float from the ``logit`` output, when the model has one.

    A full-integer file's sigmoid/softmax output is int8 with the fixed scale 1/256: every
    probability below ~0.004 reads as 0 or 1/256, and subtype probabilities can tie. The
    ``logit`` tensor is calibrated with its own range, so the sigmoid (one output) or softmax
    (several) of the dequantized logit keeps small probabilities and the class order. The
    file's own probability is kept as ``probability_raw``. Outputs without ``logit`` (files
    exported before it existed) are returned unchanged.

    Args:
        outputs: dequantized outputs of one image, by name (batch dimension dropped or kept).
    """
    if "logit" not in outputs:
        return outputs
    z = np.asarray(outputs["logit"], np.float64)
    if z.shape[-1] == 1:
        e = np.exp(-np.abs(z))                                    # stable for either sign
        p = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    else:
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        p = e / e.sum(axis=-1, keepdims=True)
    out = dict(outputs)
    if "probability" in outputs:
        out["probability_raw"] = outputs["probability"]
    out["probability"] = p.astype(np.float32)
    return out


class TensorIO:
    """Input/output tensor handling shared by every interpreter binding.

    Subclasses set ``self.input`` (a tensor detail dict: shape, dtype, quantization).
    """

    input: dict

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input["shape"])

    @property
    def input_dtype(self):
        return self.input["dtype"]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def predict(self, xs: np.ndarray) -> dict[str, np.ndarray]:
        """Run a batch one image at a time (the interpreter has batch 1); stacks each output."""
        outs: dict[str, list] = {}
        for x in xs:
            for k, v in self.run(x).items():
                outs.setdefault(k, []).append(v)
        return {k: np.stack(v) for k, v in outs.items()}


class LiteRunner(TensorIO):
    """A loaded ``.tflite`` model.

    Args:
        model_path: the ``.tflite`` file.
        num_threads: interpreter threads (None: the runtime's default).
        runtime: name in :data:`RUNTIMES`.
        expected_sha256: refuse the file when its hash differs (from the model card).
    """

    def __init__(self, model_path, num_threads: int | None = None, runtime: str = "litert",
                 expected_sha256: str | None = None):
        num_threads = check_threads(num_threads, "num_threads")
        self.path = check_tflite_file(model_path, expected_sha256)
        self.runtime = runtime
        cls = interpreter_class(runtime)
        try:
            self.interpreter = cls(model_path=str(self.path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{self.path}: the runtime cannot load this model ({msg})",
                             "the file is corrupt or needs a newer runtime; re-export or re-download it") from None
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self._named_outputs()

    def _named_outputs(self) -> dict[str, dict]:
        details = {d["index"]: d for d in self.interpreter.get_output_details()}
        named: dict[str, dict] = {}
        try:
            sigs = self.interpreter._get_full_signature_list()  # name -> {inputs, outputs: name -> index}
        except AttributeError:
            sigs = {}
        if sigs:
            sig = sigs.get("serving_default") or next(iter(sigs.values()))
            for name, idx in sig.get("outputs", {}).items():
                if idx in details:
                    named[name] = details[idx]
        if not named:  # no signature: positional names
            for i, d in enumerate(self.interpreter.get_output_details()):
                named["probability" if i == 0 else f"output_{i}"] = d
        return named

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype in (np.float32,):
            return x.astype(np.float32, copy=False)
        scale, zero = self.input["quantization"]
        if dtype == np.float16:
            return x.astype(np.float16)
        info = np.iinfo(dtype)
        q = np.round(x / scale + zero)
        return np.clip(q, info.min, info.max).astype(dtype)

    @staticmethod
    def dequantize(arr: np.ndarray, detail: dict) -> np.ndarray:
        if arr.dtype in (np.int8, np.uint8, np.int16, np.int32) and detail["quantization"][0] != 0:
            scale, zero = detail["quantization"]
            return (arr.astype(np.float32) - zero) * np.float32(scale)
        return arr.astype(np.float32, copy=False)

    def set_input(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[None]
        want = self.input_shape
        if tuple(x.shape[1:]) != want[1:]:
            raise ModelError(f"input shape {tuple(x.shape)} does not match the model's {want}",
                             "preprocess with the model's own spec (input size)")
        self.interpreter.set_tensor(self.input["index"], self.quantize_input(x))

    def invoke(self) -> None:
        self.interpreter.invoke()

    def get_outputs(self) -> dict[str, np.ndarray]:
        """Dequantized outputs by name (batch dim dropped); ``probability`` from ``logit`` when present."""
        return probability_from_logit({name: self.dequantize(self.interpreter.get_tensor(d["index"]), d)[0]
                                       for name, d in self.outputs.items()})

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run one preprocessed image (S, S, 3) float32; returns dequantized outputs by name (batch dim dropped)."""
        self.set_input(x)
        self.invoke()
        return self.get_outputs()

