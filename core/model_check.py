"""Check a loaded ``.tflite`` against its spec before any image is scored.

A model file and a spec that do not belong together give silently wrong answers (a 4-class
subtype file run under a binary spec reads the first class's probability as "leukemia").
:func:`check_model_io` compares the interpreter's own tensor details with the spec: input
shape ``(1, S, S, 3)`` with ``S`` the spec's input size, a supported input dtype, and a
``probability`` (and ``logit``, when present) output with one value per model output of the
spec's task (1 for binary, the number of classes for subtype).
"""
from __future__ import annotations

import numpy as np

from .errors import ModelError
from .spec import ModelSpec

#: Input dtypes LeukEdge quantizes to (float files, full-integer files).
INPUT_DTYPES = (np.float32, np.float16, np.int8, np.uint8, np.int16)


def _width(detail: dict) -> int:
    shape = [int(s) for s in np.asarray(detail.get("shape", ())).reshape(-1)]
    return int(np.prod(shape[1:])) if len(shape) > 1 else (shape[0] if shape else 0)


def check_model_io(runner, spec: ModelSpec, path) -> None:
    """Raise :class:`ModelError` when ``runner``'s tensors do not match ``spec``.

    Args:
        runner: a :class:`leukedge.runtime.TensorIO` (``input`` and ``outputs`` tensor details).
        spec: the spec the file is run with.
        path: the model file (for the message).
    """
    s = spec.preprocess.input_size
    shape = tuple(int(d) for d in runner.input["shape"])
    if len(shape) != 4 or shape[1:] != (s, s, 3):
        raise ModelError(f"{path}: input shape {shape} does not match the spec's (1, {s}, {s}, 3)",
                         "use the spec.json released with this file")
    dtype = np.dtype(runner.input["dtype"])
    if not any(dtype == np.dtype(t) for t in INPUT_DTYPES):
        raise ModelError(f"{path}: input dtype {dtype.name} is not one LeukEdge feeds "
                         f"({', '.join(np.dtype(t).name for t in INPUT_DTYPES)})", "re-export the model")
    outputs = getattr(runner, "outputs", {}) or {}
    if "probability" not in outputs:
        raise ModelError(f"{path}: no 'probability' output (outputs: {sorted(outputs)})",
                         "re-export the model with `leukedge compress`")
    want = spec.num_outputs
    for name in ("probability", "logit"):
        if name in outputs and _width(outputs[name]) != want:
            raise ModelError(f"{path}: output '{name}' has {_width(outputs[name])} values but the {spec.task} spec "
                             f"'{spec.name}' expects {want} ({', '.join(spec.class_names)})",
                             "this model file belongs to another release; use the spec.json released with it")
