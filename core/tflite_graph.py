"""Read (and rewrite) a ``.tflite`` file's graph from its flatbuffer: no interpreter, no TensorFlow.

The one place that knows the TFLite schema's quirks: an operator code's builtin is
``max(builtin_code, deprecated_builtin_code)`` (old files fill only the deprecated byte, new
ones only the int32), tensor names come back as ``bytes``, large files keep buffers after the
flatbuffer. Both flatbuffer APIs are served:

* read-only accessors (``schema().Model.GetRootAs(data, 0)``: cheap, used by the cost model
  and the size breakdown), and
* the mutable object API (:func:`read_model` -> ``ModelT``, :func:`write_model` -> bytes: used
  by the compress stage's graph rewrites).

The schema module is LiteRT's (a superset of TensorFlow's), else TensorFlow's; both are
imported on first use only, so ``import leukedge.tflite_graph`` is free.
"""
from __future__ import annotations

import functools
import sys

import numpy as np

from .errors import ModelError

_FILE_IDENTIFIER = b"TFL3"


@functools.lru_cache(maxsize=None)
def schema():
    """The generated TFLite schema module (``Model``, ``ModelT``, ``BuiltinOperator``, ``TensorType``...)."""
    try:
        from ai_edge_litert import schema_py_generated as s
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as s  # the train install's fallback
    return s


@functools.lru_cache(maxsize=None)
def op_names() -> dict[int, str]:
    """Builtin operator code -> name (``{3: "CONV_2D", ...}``)."""
    ops = schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)}


@functools.lru_cache(maxsize=None)
def tensor_type_names() -> dict[int, str]:
    """Tensor type code -> name (``{0: "FLOAT32", 9: "INT8", ...}``)."""
    types = schema().TensorType
    return {v: k for k, v in vars(types).items() if not k.startswith("_") and isinstance(v, int)}


def builtin_code(code) -> int:
    """The builtin operator of an operator code (an accessor ``OperatorCode`` or an ``OperatorCodeT``)."""
    if hasattr(code, "BuiltinCode"):
        return int(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
    return int(max(code.builtinCode, code.deprecatedBuiltinCode))


def opcode_names(model) -> list[str]:
    """Operator name of each operator code of ``model`` (accessor ``Model`` or ``ModelT``), in
    order, so ``opcode_names(model)[op.opcodeIndex]`` names an operator; ``"CUSTOM"`` for
    custom and unknown codes."""
    names = op_names()
    if hasattr(model, "OperatorCodesLength"):
        codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    else:
        codes = list(model.operatorCodes or [])
    return [names.get(builtin_code(c), "CUSTOM") for c in codes]


def opcode_index(model, builtin: int) -> int:
    """Index of ``builtin``'s operator code in a ``ModelT``, appending the code when it is missing."""
    for k, c in enumerate(model.operatorCodes):
        if builtin_code(c) == builtin:
            return k
    code = schema().OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def tensor_name(tensor) -> str:
    """A tensor's name as ``str`` (accessor ``Tensor`` or ``TensorT``)."""
    name = tensor.Name() if hasattr(tensor, "Name") else tensor.name
    return name.decode() if isinstance(name, bytes) else str(name)


def tensor_shape(tensor) -> tuple[int, ...]:
    """A tensor's shape (accessor ``Tensor`` or ``TensorT``); ``()`` for a scalar."""
    if hasattr(tensor, "ShapeAsNumpy"):
        arr = tensor.ShapeAsNumpy()
        return tuple(int(d) for d in arr) if not isinstance(arr, int) else ()
    return tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ()))


def constant(model, tensor, dtypes: dict | None = None) -> np.ndarray | None:
    """A ``ModelT`` tensor's constant values (None: no data, or a type not in ``dtypes``).

    Args:
        dtypes: TFLite tensor type -> numpy dtype to accept (default float32 and int8).
    """
    s = schema()
    dtypes = dtypes or {s.TensorType.FLOAT32: np.float32, s.TensorType.INT8: np.int8}
    buf = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
    dtype = dtypes.get(tensor.type)
    if buf is None or buf.data is None or not len(buf.data) or dtype is None:
        return None
    return np.frombuffer(bytes(bytearray(buf.data)), dtype).reshape(tensor_shape(tensor))


def signature_outputs(model) -> dict[str, int]:
    """Output name -> tensor index of a ``ModelT``'s first signature (empty when it has none)."""
    sigs = model.signatureDefs or []
    if not sigs:
        return {}
    return {tensor_name_of(t): int(t.tensorIndex) for t in (sigs[0].outputs or [])}


def tensor_name_of(item) -> str:
    """``name`` of a signature's tensor map entry as ``str``."""
    return item.name.decode() if isinstance(item.name, bytes) else str(item.name)


def read_root(data: bytes):
    """The read-only accessor ``Model`` of a ``.tflite`` file's bytes."""
    return schema().Model.GetRootAs(data, 0)


def read_model(data: bytes):
    """A ``.tflite`` file's bytes as a mutable ``ModelT`` (buffers kept after the flatbuffer are read in).

    Raises:
        ModelError: not a TFLite flatbuffer, or a big-endian machine (the file is little-endian).
    """
    if sys.byteorder != "little":
        raise ModelError("rewriting a .tflite file needs a little-endian machine")
    buf = bytearray(data)
    try:
        model = schema().ModelT.InitFromPackedBuf(buf, 0)
    except Exception as exc:  # flatbuffers raises assorted errors on garbage
        raise ModelError(f"not a TFLite flatbuffer ({type(exc).__name__})", "pass a .tflite file") from None
    for b in model.buffers or []:
        if b.offset:  # models > 2 GB keep buffers after the flatbuffer
            b.data = buf[b.offset:b.offset + b.size]
            b.offset = 0
            b.size = 0
    return model


def write_model(model) -> bytes:
    """A ``ModelT`` as ``.tflite`` bytes."""
    import flatbuffers  # ships with LiteRT and TensorFlow

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())
