"""The Grad-CAM branch of an exported model: the tensors only the ``cam`` output depends on.

The exported graph (:mod:`leukedge.compress.export`) computes the Grad-CAM map from the last
feature map ``A`` and the head's weights: ``relu(((A @ W1) * 1[z > 0]) @ W2[:, c]) / (h w)``.

In the int8 file this branch runs in float (:func:`float_cam_branch`): ``A`` is the int8
network's own last feature map, dequantized; ``A @ W1`` uses the head's int8 weights through
TFLite's hybrid fully connected kernel (no float copy of ``W1``), and the map leaves the graph
in float32. A static int8 grid cannot hold these maps: their peaks vary about 150-fold between
images (DenseNet201 release: 0.07 to 10.6 in float32), ``A @ W1`` cancels over 512 hidden units,
and most of the pre-ReLU range is negative. DenseNet201 release, mean heatmap correlation with
the float32 file on the validation split: 0.778 with the branch clipped like the network, 0.890
int8 with calibrated ranges, 0.926 float (= Grad-CAM computed in numpy from the int8 file's own
feature map: what is left is the int8 error of ``A`` itself).

The branch is found from the graph (ops that are ancestors of the ``cam`` signature output
and of no other output), so it also works on files exported before this module existed; its
tensors are also never clipped (:mod:`leukedge.compress.ranges`).
"""
from __future__ import annotations

import numpy as np

from leukedge.errors import ModelError
from leukedge.tflite_graph import (constant, opcode_names, read_model, schema, signature_outputs, tensor_name,
                                   write_model)

CAM_OUTPUT = "cam"


def _ancestors(graph, producers: dict[int, int], tensor: int) -> set[int]:
    """Operator indices the tensor depends on."""
    seen, stack = set(), [tensor]
    while stack:
        t = stack.pop()
        op = producers.get(t)
        if op is None or op in seen:
            continue
        seen.add(op)
        stack.extend(int(i) for i in graph.operators[op].inputs if i >= 0)
    return seen


def cam_only_tensors(data: bytes) -> set[str]:
    """Names of every tensor that only the ``cam`` output depends on (their ranges are not
    clipped: :mod:`leukedge.compress.ranges`)."""
    model = read_model(data)
    graph = model.subgraphs[0]
    outputs = signature_outputs(model)
    if CAM_OUTPUT not in outputs:
        return set()
    producers = {int(o): k for k, op in enumerate(graph.operators) for o in op.outputs}
    cam = _ancestors(graph, producers, outputs[CAM_OUTPUT])
    others = set()
    for name, t in outputs.items():
        if name != CAM_OUTPUT:
            others |= _ancestors(graph, producers, t)
    return {tensor_name(graph.tensors[int(o)]) for k in cam - others for o in graph.operators[k].outputs}


# ----- the float Grad-CAM branch -----------------------------------------------------------------
#: Above this many bytes, a float constant left in the Grad-CAM branch means a weight was copied.
MAX_FLOAT_CONSTANT_BYTES = 64 * 1024


def float_cam_branch(data: bytes, max_float_bytes: int = MAX_FLOAT_CONSTANT_BYTES) -> tuple[bytes, dict]:
    """Make the float Grad-CAM branch of a quantized file cost no size and keep float precision.

    Input: a full-integer file quantized with the Grad-CAM branch's ops denylisted (so they run
    in float: ``dequantize(A) -> A @ W1 -> * mask -> @ W2 -> relu``). The converter then stores a
    float32 copy of the hidden layer's kernel ``W1`` for ``A @ W1`` (DenseNet201: +3.75 MiB).
    This rewrite points that fully connected op at the head's own int8 per-channel ``W1`` (the
    same layout: both compute ``x @ W1``), which makes it TFLite's *hybrid* kernel (float input,
    int8 weights, float output) and drops the float copy; and it removes the final QUANTIZE of
    the ``cam`` output, so the map leaves the graph in float32.

    Why: int8 tensors after ``A`` have one static scale, but the maps' peaks vary ~150-fold
    between images and ``A @ W1`` cancels over 512 hidden units, so a static int8 grid erased
    the low-peak maps (DenseNet201 release, validation: mean heatmap correlation 0.890 in int8,
    0.926 with this branch, the same as Grad-CAM computed in numpy from the int8 file's own
    last feature map). The rest of the network, the probability and the logit stay int8.

    When selective int8 keeps the head's hidden layer in float (:mod:`leukedge.compress.selective`),
    the branch shares that layer's float ``W1`` instead (no int8 twin exists then; no copy either).

    Args:
        data: the quantized file (cam-only ops denylisted).
        max_float_bytes: a float weight larger than this with no int8 twin is an error.

    Returns:
        (rewritten bytes, record: shared weights, float outputs, bytes saved). Raises
        :class:`~leukedge.errors.ModelError` if a float weight was copied and cannot be shared
        (the int8 twin's values must equal it to within half an int8 step per channel).
    """
    T = schema().TensorType
    model = read_model(data)
    graph = model.subgraphs[0]
    ops = opcode_names(model)
    outputs = signature_outputs(model)
    if CAM_OUTPUT not in outputs:
        return data, {"float_cam": False, "reason": "no cam output"}
    producers = {int(o): k for k, op in enumerate(graph.operators) for o in op.outputs}
    branch = _ancestors(graph, producers, outputs[CAM_OUTPUT])
    for name, t in outputs.items():
        if name != CAM_OUTPUT:
            branch -= _ancestors(graph, producers, t)
    int8_weights = {}
    for op in graph.operators:
        if ops[op.opcodeIndex] == "FULLY_CONNECTED" and len(op.inputs) > 1:
            t = graph.tensors[op.inputs[1]]
            q = t.quantization
            if t.type == T.INT8 and q is not None and q.scale is not None and constant(model, t) is not None:
                int8_weights.setdefault(tuple(int(d) for d in t.shape), []).append(int(op.inputs[1]))
    # A head op kept in float (selective int8 denylisted it) holds its own float W1: the branch
    # reads that one (same values, no copy) instead of looking for an int8 twin that is not there.
    outside_float = {}
    used_outside = set()
    for k, op in enumerate(graph.operators):
        if k in branch:
            continue
        used_outside.update(int(i) for i in op.inputs if i >= 0)
        if ops[op.opcodeIndex] == "FULLY_CONNECTED" and len(op.inputs) > 1:
            t = graph.tensors[op.inputs[1]]
            if t.type == T.FLOAT32 and constant(model, t) is not None:
                outside_float.setdefault(tuple(int(d) for d in t.shape), []).append(int(op.inputs[1]))
    shared, freed = [], set()
    for k in sorted(branch):
        op = graph.operators[k]
        if ops[op.opcodeIndex] != "FULLY_CONNECTED" or graph.tensors[op.inputs[0]].type != T.FLOAT32:
            continue
        w_idx = int(op.inputs[1])
        w = constant(model, graph.tensors[w_idx])
        if w is None or graph.tensors[w_idx].type != T.FLOAT32:
            continue
        if w_idx in used_outside:       # already the float head's own weight: nothing copied
            shared.append({"float": tensor_name(graph.tensors[w_idx]), "float_head": tensor_name(graph.tensors[w_idx]),
                           "shape": list(w.shape)})
            continue
        twin = next((c for c in outside_float.get(w.shape, []) if np.array_equal(constant(model, graph.tensors[c]), w)),
                    None)
        if twin is not None:
            op.inputs[1] = twin
            shared.append({"float": tensor_name(graph.tensors[w_idx]), "float_head": tensor_name(graph.tensors[twin]),
                           "shape": list(w.shape)})
            freed.add(w_idx)
            continue
        for cand in int8_weights.get(w.shape, []):
            t = graph.tensors[cand]
            scale = np.asarray(t.quantization.scale, np.float32).reshape(-1, *([1] * (w.ndim - 1)))
            if scale.shape[0] not in (1, w.shape[0]):
                continue
            wq = constant(model, t).astype(np.float32) * scale
            if np.all(np.abs(wq - w) <= 0.51 * scale + 1e-7):
                op.inputs[1] = cand
                op.builtinOptions.asymmetricQuantizeInputs = True
                shared.append({"float": tensor_name(graph.tensors[w_idx]), "int8": tensor_name(t), "shape": list(w.shape)})
                freed.add(w_idx)
                break
        else:
            if w.nbytes <= max_float_bytes:   # e.g. the output layer's W2 column: kept in float
                continue
            raise ModelError(f"the float Grad-CAM branch holds a {w.nbytes / 2**20:.2f} MiB float copy of "
                             f"'{tensor_name(graph.tensors[w_idx])}' with no int8 twin to share",
                             "quantize without the float Grad-CAM branch (float_cam=False)")
    saved = 0
    for w_idx in freed:
        if not any(w_idx in op.inputs for op in graph.operators):
            t = graph.tensors[w_idx]
            saved += len(model.buffers[t.buffer].data)
            model.buffers[t.buffer].data = None
            t.shape = np.array([1], np.int32)
    # the map leaves the graph in float: drop the QUANTIZE in front of the cam output
    float_outputs = []
    cam_idx = outputs[CAM_OUTPUT]
    k = producers.get(cam_idx)
    if k is not None and ops[graph.operators[k].opcodeIndex] == "QUANTIZE":
        src = int(graph.operators[k].inputs[0])
        if graph.tensors[src].type == T.FLOAT32:
            graph.outputs = np.array([src if int(o) == cam_idx else int(o) for o in graph.outputs], np.int32)
            for t in model.signatureDefs[0].outputs:
                if int(t.tensorIndex) == cam_idx:
                    t.tensorIndex = src
            graph.tensors[src].name = graph.tensors[cam_idx].name
            del graph.operators[k]
            float_outputs.append(CAM_OUTPUT)
    out = write_model(model)
    return out, {"float_cam": True, "shared_weights": shared, "float_outputs": float_outputs,
                 "float_bytes_dropped": saved}
