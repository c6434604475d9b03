"""Per-channel scale-and-shift as a 1x1 depthwise convolution in a float TFLite file.

A BatchNormalization that follows a Concatenate (DenseNet: every dense layer starts with one)
cannot be folded into a convolution, so the converter writes it as ``MUL(x, s)`` then
``ADD(., b)`` with constant per-channel vectors ``s`` and ``b``. Full-integer quantization
then stores ``s`` as an int8 constant with **one** scale for all channels, and rounds twice
(after the MUL and after the ADD). The same function as a ``DEPTHWISE_CONV_2D`` with a 1x1
filter ``s`` and bias ``b`` gets per-channel int8 filter scales, an int32 bias and a single
requantization: the int8 file is more faithful, the float function is the same (to float
rounding), and the op count drops.

:func:`mul_add_to_depthwise` does this on the float32 file that int8 is calibrated from (the
released float32 file is unchanged, and parity is measured against it). It is the TFLite
counterpart of :func:`leukedge.compress.bn_fold` (which does the same on Keras models for QAT).
"""
from __future__ import annotations

import numpy as np

from leukedge.errors import ModelError
from leukedge.tflite_graph import constant, opcode_index, opcode_names, read_model, schema, write_model


def _float_constant(model, graph, i: int) -> np.ndarray | None:
    """A float32 constant tensor's values (None: not a float constant)."""
    return constant(model, graph.tensors[i], {schema().TensorType.FLOAT32: np.float32})


def _drop_unused_opcodes(model) -> None:
    """Remove operator codes no operator uses (TensorFlow's calibrator refuses a file listing
    an op it then cannot find, e.g. ADD once every ADD became a convolution)."""
    used = sorted({op.opcodeIndex for g in model.subgraphs for op in g.operators})
    remap = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[k] for k in used]
    for g in model.subgraphs:
        for op in g.operators:
            op.opcodeIndex = remap[op.opcodeIndex]


def mul_add_to_depthwise(data: bytes) -> tuple[bytes, int]:
    """Rewrite every ``ADD(MUL(x, s), b)`` with per-channel constants into a 1x1 depthwise conv.

    Only a MUL whose output feeds that ADD alone, with a 4-D input ``x`` of ``C`` channels, no
    fused activation on the MUL, and ``s``, ``b`` of shape ``(C,)``. The ADD's fused activation
    (e.g. ReLU) moves to the convolution. A float file only (an int8 file is rejected).

    Returns:
        (rewritten .tflite bytes, number of pairs rewritten).

    Raises:
        ModelError: not a float model.
    """
    S = schema()
    model = read_model(data)
    graph = model.subgraphs[0]
    names = opcode_names(model)
    if any(graph.tensors[int(i)].type != S.TensorType.FLOAT32 for i in graph.inputs):
        raise ModelError("mul_add_to_depthwise needs a float model (this file's input is not float32)")
    consumers: dict[int, list[int]] = {}
    for k, op in enumerate(graph.operators):
        for i in op.inputs:
            if i >= 0:
                consumers.setdefault(int(i), []).append(k)
    graph_outputs = {int(o) for o in graph.outputs}
    tensor_users: dict[int, int] = {}
    for k, op in enumerate(graph.operators):
        for i in op.inputs:
            if i >= 0:
                tensor_users[int(i)] = tensor_users.get(int(i), 0) + 1
    buffer_users: dict[int, int] = {}
    for t in graph.tensors:
        buffer_users[t.buffer] = buffer_users.get(t.buffer, 0) + 1

    def op_name(k):
        return names[graph.operators[k].opcodeIndex]

    replace: dict[int, object] = {}
    drop: set[int] = set()
    dw = None
    for k, op in enumerate(graph.operators):
        if op_name(k) != "MUL" or (op.builtinOptions is not None and op.builtinOptions.fusedActivationFunction):
            continue
        ins = [int(i) for i in op.inputs]
        consts = [_float_constant(model, graph, i) for i in ins]
        if len(ins) != 2 or sum(c is not None for c in consts) != 1:
            continue
        xi, si = (ins[0], ins[1]) if consts[1] is not None else (ins[1], ins[0])
        s = consts[1] if consts[1] is not None else consts[0]
        shape = [int(d) for d in graph.tensors[xi].shape]
        out = int(op.outputs[0])
        users = consumers.get(out, [])
        if len(shape) != 4 or s.shape != (shape[3],) or out in graph_outputs or len(users) != 1:
            continue
        a = users[0]
        if op_name(a) != "ADD" or a in drop:
            continue
        add = graph.operators[a]
        bi = [int(i) for i in add.inputs if int(i) != out]
        b = _float_constant(model, graph, bi[0]) if len(bi) == 1 else None
        if b is None or b.shape != s.shape or tensor_users.get(si) != 1 or buffer_users.get(graph.tensors[si].buffer) != 1:
            continue
        if dw is None:
            dw = opcode_index(model, S.BuiltinOperator.DEPTHWISE_CONV_2D)
        graph.tensors[si].shape = np.array([1, 1, 1, shape[3]], np.int32)  # s becomes the 1x1 filter
        opts = S.DepthwiseConv2DOptionsT()
        opts.padding, opts.strideW, opts.strideH = S.Padding.VALID, 1, 1
        opts.depthMultiplier, opts.dilationWFactor, opts.dilationHFactor = 1, 1, 1
        opts.fusedActivationFunction = add.builtinOptions.fusedActivationFunction if add.builtinOptions else 0
        conv = S.OperatorT()
        conv.opcodeIndex = dw
        conv.inputs = np.array([xi, si, bi[0]], np.int32)
        conv.outputs = np.array([int(add.outputs[0])], np.int32)
        conv.builtinOptionsType = S.BuiltinOptions.DepthwiseConv2DOptions
        conv.builtinOptions = opts
        replace[k] = conv
        drop.add(a)
    if not replace:
        return data, 0
    graph.operators = [replace.get(k, op) for k, op in enumerate(graph.operators) if k not in drop]
    _drop_unused_opcodes(model)
    # the MUL outputs stay behind as unused tensors (no data, a few bytes of metadata each)
    return write_model(model), len(replace)
