"""Run a LeukEdge ``.tflite`` on Android through the LiteRT Java library (pyjnius).

python-for-android's ``tflite-runtime`` recipe is stuck at TF 2.8 and fails to build, and
there is no ``ai-edge-litert`` recipe (ENVIRONMENT.md). The APK therefore ships LiteRT's
Java library (``com.google.ai.edge.litert:litert``, declared in ``buildozer.spec`` as a
Gradle dependency) and this module drives ``org.tensorflow.lite.Interpreter`` from Python
with pyjnius. :class:`JavaLiteRunner` has the interface of
:class:`leukedge.runtime.LiteRunner` (``input_shape``, ``outputs``, ``run(x) ->
{name: array}``), so the Screener uses either one unchanged.

Data crosses the bridge as raw bytes in ``java.nio.ByteBuffer`` objects (native byte
order): one copy in, one copy out per tensor, never element by element. The Java calls
used: ``Interpreter(File, Interpreter.Options)``, ``Options.setNumThreads``,
``getSignatureKeys``, ``getSignatureInputs/Outputs``, ``getInputTensorFromSignature``,
``getOutputTensorFromSignature``, ``Tensor.shape/dataType/quantizationParams``,
``runSignature(Map, Map, String)``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from leukedge.errors import ModelError
from leukedge.runtime import LiteRunner, TensorIO, check_tflite_file, probability_from_logit

from .platform import on_android  # noqa: F401  (re-exported: main.py asks it here)

log = logging.getLogger(__name__)

INTERPRETER_CLASS = "org.tensorflow.lite.Interpreter"
#: LiteRT DataType enum names -> numpy dtypes.
DTYPES = {"FLOAT32": np.float32, "INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32,
          "FLOAT16": np.float16, "INT64": np.int64}


def _classes():
    try:
        from jnius import autoclass
    except ImportError as exc:
        raise ModelError(f"the Android LiteRT bridge needs pyjnius ({exc})",
                         "on Android add pyjnius to buildozer.spec requirements; "
                         "elsewhere pip install ai-edge-litert") from None
    try:
        return {n: autoclass(c) for n, c in {
            "Interpreter": INTERPRETER_CLASS, "Options": INTERPRETER_CLASS + "$Options", "File": "java.io.File",
            "ByteBuffer": "java.nio.ByteBuffer", "ByteOrder": "java.nio.ByteOrder", "HashMap": "java.util.HashMap",
        }.items()}
    except Exception as exc:  # jnius raises JavaException for a missing class
        raise ModelError(f"LiteRT Java classes not found ({exc})",
                         "add com.google.ai.edge.litert:litert to android.gradle_dependencies "
                         "in buildozer.spec") from None


def _detail(tensor, name: str) -> dict:
    """A LiteRunner-style tensor detail dict from a Java ``Tensor``."""
    dtype_name = str(tensor.dataType().name())
    if dtype_name not in DTYPES:
        raise ModelError(f"tensor '{name}' has unsupported type {dtype_name}")
    q = tensor.quantizationParams()
    scale, zero = float(q.getScale()), int(q.getZeroPoint())
    return {"name": name, "shape": np.array(list(tensor.shape()), np.int64), "dtype": DTYPES[dtype_name],
            "quantization": (scale, zero)}


class JavaLiteRunner(TensorIO):
    """A ``.tflite`` loaded by LiteRT's Java ``Interpreter`` (Android), LiteRunner-compatible.

    Args:
        model_path: the ``.tflite`` file (checked: exists, TFL3 magic, sha256).
        num_threads: interpreter threads (None: LiteRT's default).
        expected_sha256: refuse the file when its hash differs.
        signature: signature key (default ``serving_default`` or the first one).
    """

    runtime = "litert-java"

    def __init__(self, model_path, num_threads: int | None = None, expected_sha256: str | None = None,
                 signature: str | None = None):
        self.path = check_tflite_file(model_path, expected_sha256)
        self._j = _classes()
        opts = self._j["Options"]()
        if num_threads:
            opts.setNumThreads(int(num_threads))
        try:
            self.interpreter = self._j["Interpreter"](self._j["File"](str(Path(self.path).resolve())), opts)
        except Exception as exc:
            raise ModelError(f"{self.path}: LiteRT (Java) cannot load this model ({exc})",
                             "the file is corrupt or needs a newer LiteRT; re-export it") from None
        keys = [str(k) for k in self.interpreter.getSignatureKeys()]
        if not keys:
            raise ModelError(f"{self.path}: the model has no signature", "re-export it with `leukedge compress`")
        self.signature = signature or ("serving_default" if "serving_default" in keys else keys[0])
        in_names = [str(n) for n in self.interpreter.getSignatureInputs(self.signature)]
        if len(in_names) != 1:
            raise ModelError(f"{self.path}: expected one input, found {in_names}")
        self.input_name = in_names[0]
        self.input = _detail(self.interpreter.getInputTensorFromSignature(self.input_name, self.signature),
                             self.input_name)
        self.outputs = {str(n): _detail(self.interpreter.getOutputTensorFromSignature(str(n), self.signature), str(n))
                        for n in self.interpreter.getSignatureOutputs(self.signature)}
        log.info("LiteRT Java interpreter: %s, input %s %s, outputs %s", self.path.name, self.input_shape,
                 np.dtype(self.input["dtype"]).name, list(self.outputs))

    # the LiteRunner interface ---------------------------------------------------------
    quantize_input = LiteRunner.quantize_input
    dequantize = staticmethod(LiteRunner.dequantize)

    def _buffer(self, nbytes: int, direct: bool):
        bb = self._j["ByteBuffer"]
        buf = bb.allocateDirect(nbytes) if direct else bb.allocate(nbytes)
        return buf.order(self._j["ByteOrder"].nativeOrder())

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run one preprocessed image (S, S, 3) float32; returns dequantized outputs (batch dim dropped)."""
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[None]
        if tuple(x.shape) != self.input_shape:
            raise ModelError(f"input shape {tuple(x.shape)} does not match the model's {self.input_shape}",
                             "preprocess with the model's own spec (input size)")
        data = np.ascontiguousarray(self.quantize_input(x)).tobytes()
        inbuf = self._buffer(len(data), direct=True)
        inbuf.put(data)
        inbuf.rewind()
        inputs, outputs, bufs = self._j["HashMap"](), self._j["HashMap"](), {}
        inputs.put(self.input_name, inbuf)
        for name, d in self.outputs.items():
            n = int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize
            bufs[name] = self._buffer(n, direct=False)   # heap buffer: .array() gives the bytes back in one call
            outputs.put(name, bufs[name])
        self.interpreter.runSignature(inputs, outputs, self.signature)
        result = {}
        for name, d in self.outputs.items():
            raw = bytes(bytearray(bufs[name].array()))
            arr = np.frombuffer(raw, dtype=d["dtype"]).reshape(tuple(int(s) for s in d["shape"]))
            result[name] = self.dequantize(arr, d)[0]
        return probability_from_logit(result)                 # as LiteRunner.get_outputs

    def close(self) -> None:
        try:
            self.interpreter.close()
        except Exception:  # pragma: no cover - best effort
            log.debug("interpreter close failed", exc_info=True)
