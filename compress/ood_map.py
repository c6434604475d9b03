"""The OOD gate's feature map as a model output (``ood_map``): a graph rewrite, no retraining.

The out-of-distribution gate (:mod:`leukedge.edge_app.ood`) measures an image by the
per-channel mean and spread of the network's **last residual block** (EfficientNet-Lite0:
the 7x7x192 output of block 14), not only by the pooled 1280 ``features`` the head reads.
Measured on the released EfficientNet-Lite0 subtype file (docs/captures.md section 14,
``python scripts/experiments/ood_feature_taps.py``): the pooled ``features`` flag 60-96% of
the PBC lymphocyte crops, the block-14 statistics 100% (any of 8-128 PCA directions) while
flagging no validation smear under warm or cool light; earlier blocks see colour (block 4:
14% of warm-light smears flagged), later ones are trained to ignore what is not leukemia.

The tensor is already computed by the graph; this rewrite only lists it as one more output
(signature name :data:`OOD_OUTPUT`), so no operator, weight or other output changes, and
every earlier parity result of the file's other outputs still holds. It works on any
``.tflite`` (float32 or int8) and on every runtime that reads signature outputs (LiteRT in
Python, the LiteRT Java bridge on Android, tflite-runtime).
"""
from __future__ import annotations

from leukedge.errors import ModelError
from leukedge.tflite_graph import builtin_code, read_model, schema, signature_outputs, tensor_name, write_model

#: Signature name of the added output.
OOD_OUTPUT = "ood_map"
#: The op whose 4-D output is tapped, in order of preference: the last residual ADD (EfficientNet,
#: ResNet, MobileNetV2), else the last CONCATENATION (DenseNet's dense blocks; not measured).
TAP_OPS = ("ADD", "CONCATENATION")


def _producers(graph) -> dict[int, int]:
    return {int(t): i for i, op in enumerate(graph.operators or []) for t in (op.outputs if op.outputs is not None else [])}


def find_tap(model, source: str = "features") -> int:
    """Index of the tensor to expose: the output of the last 4-D :data:`TAP_OPS` operator that
    the ``source`` output depends on (graph order).

    Raises:
        ModelError: the file has no ``source`` output, or no such operator feeds it.
    """
    S = schema()
    outs = signature_outputs(model)
    if source not in outs:
        raise ModelError(f"the model has no '{source}' output (outputs: {sorted(outs)})",
                         "re-export it with `leukedge compress` (outputs probability, cam, features)")
    graph = model.subgraphs[0]
    prod = _producers(graph)
    seen, stack = set(), [outs[source]]
    while stack:  # the operators the source output depends on
        op = prod.get(stack.pop())
        if op is None or op in seen:
            continue
        seen.add(op)
        stack.extend(int(i) for i in graph.operators[op].inputs if i >= 0)
    codes = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    for kind in TAP_OPS:
        want = getattr(S.BuiltinOperator, kind)
        for i in sorted(seen, reverse=True):
            op = graph.operators[i]
            if builtin_code(model.operatorCodes[op.opcodeIndex]) != want:
                continue
            t = int(op.outputs[0])
            if len(graph.tensors[t].shape) == 4:
                return t
    raise ModelError(f"no 4-D {' or '.join(TAP_OPS)} operator feeds the '{source}' output "
                     f"(operators: {sorted({codes.get(builtin_code(model.operatorCodes[graph.operators[i].opcodeIndex]), '?') for i in seen})})",
                     "this backbone has no residual block the OOD gate can read; set screening.ood_map=false")


def add_ood_output(data: bytes) -> tuple[bytes, dict]:
    """``data`` with the tapped tensor (:func:`find_tap`) listed as output :data:`OOD_OUTPUT`.

    Returns (bytes, info): unchanged bytes when the file already has the output. ``info`` names
    the tensor and its shape (recorded in compress.json).
    """
    S = schema()
    model = read_model(data)
    outs = signature_outputs(model)
    if not model.signatureDefs:
        raise ModelError("the model has no signature", "re-export it with `leukedge compress`")
    graph = model.subgraphs[0]
    if OOD_OUTPUT in outs:
        t = outs[OOD_OUTPUT]
        return data, {"output": OOD_OUTPUT, "tensor": tensor_name(graph.tensors[t]),
                      "shape": [int(d) for d in graph.tensors[t].shape], "added": False}
    t = find_tap(model)
    graph.outputs = list(graph.outputs) + [t]
    entry = S.TensorMapT()
    entry.name = OOD_OUTPUT
    entry.tensorIndex = t
    model.signatureDefs[0].outputs = list(model.signatureDefs[0].outputs or []) + [entry]
    return write_model(model), {"output": OOD_OUTPUT, "tensor": tensor_name(graph.tensors[t]),
                                "shape": [int(d) for d in graph.tensors[t].shape], "added": True}
