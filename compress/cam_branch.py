"""The Grad-CAM branch of an exported model: the tensors only the ``cam`` output depends on.

The exported graph (:mod:`leukedge.compress.export`) computes the Grad-CAM map from the last
feature map ``A`` and the head's weights: ``relu(((A @ W1) * 1[z > 0]) @ W2[:, c]) / (h w)``.
Its tensors must keep their calibrated (min/max) int8 ranges: the maps' peaks vary about
150-fold between images (DenseNet201 release: 0.07 to 10.6 in float32) and most of the
pre-ReLU range is negative, so a percentile-clipped range (:mod:`leukedge.compress.ranges`)
saturates most maps. On the DenseNet201 release, clipping this branch with the rest of the
network took the mean heatmap correlation on the validation split from 0.890 to 0.778
(agreement 0.9949 either way). Keeping the branch's ops in float instead of int8 did not
help (0.885): what is left is the int8 error of ``A`` itself and of ``A @ W1``.

The branch is found from the graph (ops that are ancestors of the ``cam`` signature output
and of no other output), so it also works on files exported before this module existed.
"""
from __future__ import annotations

CAM_OUTPUT = "cam"


def _model(data: bytes):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(data))


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _signature_outputs(model) -> dict[str, int]:
    sigs = model.signatureDefs or []
    if not sigs:
        return {}
    return {_s(t.name): int(t.tensorIndex) for t in (sigs[0].outputs or [])}


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
    model = _model(data)
    graph = model.subgraphs[0]
    outputs = _signature_outputs(model)
    if CAM_OUTPUT not in outputs:
        return set()
    producers = {int(o): k for k, op in enumerate(graph.operators) for o in op.outputs}
    cam = _ancestors(graph, producers, outputs[CAM_OUTPUT])
    others = set()
    for name, t in outputs.items():
        if name != CAM_OUTPUT:
            others |= _ancestors(graph, producers, t)
    return {_s(graph.tensors[int(o)].name) for k in cam - others for o in graph.operators[k].outputs}
