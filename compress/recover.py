"""A trainable Keras model recovered from a released float32 ``.tflite`` (no training run needed).

Pruning and quantization-aware training need a Keras model; a release keeps only TFLite
files, and training runs do not always survive (``runs/`` is not committed). The float32
file holds every weight, so :func:`keras_from_float_tflite` rebuilds the spec's architecture
(:func:`leukedge.train.model.build_classifier`) and copies them in:

* convolutions and depthwise convolutions: the kernel (TFLite ``OHWI`` / ``1HWC`` ->
  Keras ``HWIO`` / ``HWC1``); the converter folded the BatchNormalization after each into
  the kernel and a bias, so that BN becomes ``gamma = 1, mean = 0, var = 1 - eps`` (an
  identity) with ``beta`` = the folded bias;
* a BatchNormalization it could not fold (after a Concatenate: ``MUL`` + ``ADD`` by
  constants ``s``, ``b``) gets ``gamma = s, beta = b`` with the same identity statistics;
* dense layers: ``(out, in)`` -> ``(in, out)`` and the bias.

Layers are matched by the Keras layer name inside the TFLite tensor names, and the result is
**checked**: the rebuilt model's serving outputs must match the float32 file on real images
(else :class:`~leukedge.errors.ModelError`), so a wrong match can never go on to be pruned.
The recovered model is the same function in float; its BatchNorm statistics are not the
trained ones (so fine-tune it with BatchNorm frozen, as pruning does by default).
"""
from __future__ import annotations

import logging
import re

import numpy as np

from leukedge.errors import ModelError
from leukedge.spec import ModelSpec
from leukedge.tflite_graph import opcode_names, read_model, schema, tensor_name
from leukedge.train.model import build_classifier

from .export import serving_function

log = logging.getLogger(__name__)


def _op_weights(data: bytes) -> list[tuple[str, list[str], list[np.ndarray]]]:
    """(op name, names of its constant inputs, their float32 values) for every op with constants."""
    S = schema()
    model = read_model(data)
    graph = model.subgraphs[0]
    codes = opcode_names(model)
    out = []
    for op in graph.operators:
        name = codes[op.opcodeIndex]
        names, values = [], []
        for i in op.inputs:
            if i < 0:
                continue
            t = graph.tensors[int(i)]
            buf = model.buffers[t.buffer].data
            if buf is None or not len(buf):
                continue
            if t.type != S.TensorType.FLOAT32:
                if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and t.type == S.TensorType.INT8:
                    raise ModelError("only a float32 .tflite can be turned back into a Keras model "
                                     "(this one has int8 weights)", "pass the release's <name>.float32.tflite")
                continue  # shapes, indices
            names.append(tensor_name(t))
            values.append(np.frombuffer(bytes(bytearray(buf)), np.float32).reshape([int(d) for d in t.shape]))
        if values:
            out.append((name, names, values))
    return out


def _owner(tensor_names: list[str], layer_names: set[str], suffixes: tuple[str, ...]) -> str | None:
    """The Keras layer named in ``.../<layer>/<suffix>`` inside any of the tensor names (layer
    names may contain ``/``, e.g. DenseNet's ``conv1/conv``: the longest match wins)."""
    for n in tensor_names:
        for part in n.split(";"):
            segs = part.split("/")
            for k, seg in enumerate(segs):
                if not any(re.fullmatch(re.escape(suf) + r"\d*", seg) for suf in suffixes):
                    continue
                for j in range(k):
                    cand = "/".join(segs[j:k])
                    if cand in layer_names:
                        return cand
    return None


def _identity_bn(bn, gamma: np.ndarray, beta: np.ndarray) -> None:
    eps = float(bn.epsilon)
    n = gamma.shape[0]
    weights = {"gamma": gamma, "beta": beta, "moving_mean": np.zeros(n, np.float32),
               "moving_variance": np.full(n, 1.0 - eps, np.float32)}
    bn.set_weights([weights[w.name.split("/")[-1].split(":")[0]] for w in bn.weights])


def _next_layer(model, layer):
    """The single layer consuming ``layer``'s output (None when it is not exactly one)."""
    nodes = [n for n in layer._outbound_nodes]  # noqa: SLF001 (tf_keras has no public accessor)
    outs = {n.outbound_layer.name for n in nodes if n.outbound_layer in model.layers}
    return model.get_layer(outs.pop()) if len(outs) == 1 else None


def keras_from_float_tflite(data: bytes, spec: ModelSpec, check_images: np.ndarray | None = None,
                            tolerance: float = 1e-3, architecture=None):
    """Rebuild ``spec``'s tf_keras classifier with the weights of a float32 ``.tflite``.

    Args:
        data: the float32 file (exported by ``leukedge compress``).
        spec: its spec (backbone, task, head units).
        check_images: normalised images ``(N, S, S, 3)`` on which the rebuilt model must
            reproduce the file's ``logit`` and ``cam`` (relative error <= ``tolerance``);
            None skips the check (tests of the mapping only).
        architecture: the tf_keras model to fill (its weights are overwritten); None builds
            the spec's classifier.

    Returns:
        a tf_keras model (BatchNorms after convolutions hold identity statistics).

    Raises:
        ModelError: a weight with no matching layer, a layer left without weights, a shape
            mismatch, or outputs that differ from the file's.
    """
    head = spec.head or {}
    model = architecture if architecture is not None else build_classifier(
        spec, None, dense_units=int(head.get("dense_units", 512)), dropout=float(head.get("dropout", 0.5)))
    by_type = {}
    for layer in model.layers:
        by_type.setdefault(type(layer).__name__, set()).add(layer.name)
    convs = by_type.get("Conv2D", set())
    dws = by_type.get("DepthwiseConv2D", set())
    dense = by_type.get("Dense", set())
    bns = by_type.get("BatchNormalization", set())
    done: set[str] = set()
    bn_done: set[str] = set()
    pending_mul: dict[str, np.ndarray] = {}

    def put_conv_like(layer, kernel, bias):
        if tuple(layer.kernel.shape if hasattr(layer, "kernel") else layer.depthwise_kernel.shape) != kernel.shape:
            raise ModelError(f"layer '{layer.name}': kernel {kernel.shape} in the file, "
                             f"{tuple((layer.kernel if hasattr(layer, 'kernel') else layer.depthwise_kernel).shape)} "
                             "in the model built from the spec")
        if layer.use_bias:
            layer.set_weights([kernel, bias])
        else:
            layer.set_weights([kernel])
            nxt = _next_layer(model, layer)
            if nxt is not None and type(nxt).__name__ == "BatchNormalization":
                _identity_bn(nxt, np.ones_like(bias), bias)
                bn_done.add(nxt.name)
            elif np.abs(bias).max() > 1e-6:
                raise ModelError(f"layer '{layer.name}' has a bias in the file but none in the model")
        done.add(layer.name)

    for op, names, values in _op_weights(data):
        if op == "CONV_2D":
            name = _owner(names, convs, ("Conv2D", "BiasAdd", "convolution"))
            if name is None:
                raise ModelError(f"no Conv2D layer of '{model.name}' matches the file's weights {names[0]!r}")
            w, b = values[0], (values[1] if len(values) > 1 else np.zeros(values[0].shape[0], np.float32))
            put_conv_like(model.get_layer(name), np.transpose(w, (1, 2, 3, 0)), b)
        elif op == "DEPTHWISE_CONV_2D":
            name = _owner(names, dws, ("depthwise", "BiasAdd"))
            if name is None:
                raise ModelError(f"no DepthwiseConv2D layer of '{model.name}' matches {names[0]!r}")
            w, b = values[0], (values[1] if len(values) > 1 else np.zeros(values[0].shape[-1], np.float32))
            put_conv_like(model.get_layer(name), np.transpose(w, (1, 2, 3, 0)), b)
        elif op == "FULLY_CONNECTED":
            if len(values) < 2:
                continue  # no bias: the Grad-CAM branch's use of a head kernel, not a layer
            w, b = values[0].T, values[1].ravel()
            name = _owner(names, dense - done, ("MatMul", "BiasAdd", "Tensordot"))
            if name is None:  # the converter named the constant after no layer: match by shape
                fits = [n for n in sorted(dense - done) if tuple(model.get_layer(n).kernel.shape) == w.shape]
                if len(fits) != 1:
                    raise ModelError(f"a fully connected op of the file (weights {values[0].shape}) matches "
                                     f"{len(fits)} Dense layers of '{model.name}'")
                name = fits[0]
            layer = model.get_layer(name)
            if tuple(layer.kernel.shape) != w.shape:
                raise ModelError(f"layer '{name}': kernel {w.shape} in the file, {tuple(layer.kernel.shape)} in the model")
            layer.set_weights([w, b] if layer.use_bias else [w])
            done.add(name)
        elif op in ("MUL", "ADD"):
            name = _owner(names, bns, ("FusedBatchNormV3", "FusedBatchNormV31", "batchnorm"))
            if name is None:
                continue  # e.g. the Grad-CAM branch's 1[z > 0] or a scale constant
            if op == "MUL":
                pending_mul[name] = values[0].ravel()
            else:
                if name not in pending_mul:
                    raise ModelError(f"BatchNormalization '{name}': an ADD with no MUL before it")
                _identity_bn(model.get_layer(name), pending_mul.pop(name), values[0].ravel())
                bn_done.add(name)
    missing = sorted((convs | dws | dense) - done) + sorted(bns - bn_done)
    if missing:
        raise ModelError(f"{len(missing)} layer(s) of '{model.name}' got no weights from the file "
                         f"(e.g. {missing[0]})", "the file and the spec's architecture differ")
    if check_images is not None:
        _check(model, spec, data, check_images, tolerance)
    log.info("recovered %s from its float32 file: %d layers, %d BatchNorms", model.name, len(done), len(bn_done))
    return model


def _check(model, spec: ModelSpec, data: bytes, images: np.ndarray, tolerance: float) -> dict[str, float]:
    """Worst relative error of ``model``'s probability and cam against the ``.tflite`` ``data``
    on ``images``; raises :class:`ModelError` above ``tolerance``."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=bytes(data), num_threads=2).get_signature_runner()
    serve, _ = serving_function(model, spec)
    worst = {}
    for i in range(len(images)):
        x = images[i:i + 1].astype(np.float32)
        ref = runner(image=x)
        got = {k: v.numpy() for k, v in serve(x).items()}
        for k in ("probability", "cam"):
            if k in ref and k in got:
                r, g = np.asarray(ref[k], np.float64), np.asarray(got[k], np.float64)
                worst[k] = max(worst.get(k, 0.0), float(np.abs(r - g).max() / max(1e-6, np.abs(r).max())))
    bad = {k: v for k, v in worst.items() if v > tolerance}
    if bad:
        raise ModelError(f"the recovered Keras model differs from the float32 file "
                         f"({', '.join(f'{k} {v:.2g}' for k, v in bad.items())} relative)",
                         "the file and the spec's architecture differ")
    log.info("recovered model matches the float32 file on %d images (worst relative error %s)", len(images),
             ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    return worst
