"""Export a trained classifier to TFLite with Grad-CAM computed inside the graph.

The exported model has one input, ``image`` (float32, (1, S, S, 3), already preprocessed by
:mod:`leukedge.preprocess`), and four named signature outputs:

* ``probability``: (1, 1) sigmoid (binary) or (1, C) softmax (subtype) of ``logit``;
* ``logit``: (1, 1) or (1, C) pre-activation of the output layer (files exported before
  this output existed, e.g. the first releases, have the other three only);
* ``cam``: the heatmap of the positive (binary) or the predicted (subtype) class: (1, h, w)
  Grad-CAM at the last feature map when the spec's ``heatmap.method`` is ``gradcam7``, or
  (1, 2h, 2w) for ``guided7x14`` (that map upsampled and multiplied by the normalised channel
  mean of ``heatmap.layer``, :func:`leukedge.compress.cam_graph.guided_cam`; docs/heatmaps.md);
* ``features``: (1, D) globally pooled features (for the app's out-of-distribution gate).

Why ``logit``: in a full-integer file the sigmoid/softmax output is int8 with the fixed
scale 1/256, so every probability below ~0.004 (or above ~0.996) collapses onto a few
levels, and two subtype probabilities can tie. The converter calibrates ``logit`` with its
own range, and :class:`leukedge.runtime.LiteRunner` recomputes ``probability`` in float from
it. Both come from the same tensor (``logit = relu_hidden @ W2 + b2``; the Keras output
layer's activation is applied to it), so the head's weights are stored once.

TFLite has no gradients, but for ``features -> GAP -> Dense(relu) -> Dense`` the Grad-CAM
weights have a closed form. With feature map ``A`` (h, w, D), pooled features ``p``, hidden
pre-activation ``z = W1^T p + b1`` and logit ``y_c = W2[:, c]^T relu(z) + b2[c]``::

    d y_c / d p = W1 @ (W2[:, c] * 1[z > 0])
    d y_c / d A[i, j, k] = (d y_c / d p_k) / (h * w)          # GAP spreads it evenly
    cam = relu(sum_k alpha_k * A[..., k]),  alpha_k = mean_ij d y_c / d A[i, j, k]

which is exactly what a GradientTape Grad-CAM on the pre-activation logit computes (not
normalised; the app normalises for display). ``1[z > 0]`` equals ``1[relu(z) > 0]``, so the
graph reads the hidden layer's (post-ReLU) output. The sums are taken in the other order,
``cam[i, j] = relu(((A[i, j] @ W1) * 1[z > 0]) @ W2[:, c]) / (h * w)``: ``A @ W1`` is a
fully connected op with the hidden layer's own kernel in its own layout, so the converter
stores ``W1`` once (``alpha = W1 @ g`` needs ``W1`` transposed, which put a second copy of
the largest weight matrix into every file: +0.66 MB int8 / +2.6 MB float32 for
EfficientNet-Lite0), and the sum over hidden units is a fully connected op too (int32
accumulation in the int8 file). The price is ``h * w * D * U`` multiply-adds (32 M for
EfficientNet-Lite0 at 224, about 8% of the network) instead of ``D * U``.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from leukedge.errors import ModelError
from leukedge.spec import ModelSpec
from leukedge.tflite_graph import read_model, read_root, schema, tensor_name, write_model

from .cam_branch import cam_only_tensors, float_cam_branch
from .cam_graph import cam_scores, guide_layer, guided_cam
from .quantization import QuantizationConfig

log = logging.getLogger(__name__)

#: Names of the exported signature outputs (the contract every consumer reads).
OUTPUTS = ("probability", "logit", "cam", "features")
#: The trained model's layers the export reads (see leukedge.train.model).
FEATURE_LAYER, POOL_LAYER, HIDDEN_LAYER, OUTPUT_LAYER = "features", "gap", "head_dense", "probability"
#: Name of the flatbuffer metadata entry holding spec.json.
SPEC_METADATA = "leukedge_spec"


def _layer(model, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        raise ModelError(f"model '{model.name}' has no layer '{name}'",
                         "export needs a model built by leukedge.train.model.build_classifier "
                         "(layers features, gap, head_dense, probability)") from None


def with_heatmap(spec: ModelSpec, model, method: str | None = None) -> ModelSpec:
    """``spec`` with ``heatmap`` set to ``method`` (default: the spec's) and, for ``guided7x14``,
    the guiding layer resolved on ``model`` (a named layer the model lacks is an error).
    The spec the export embeds and releases records both."""
    d = spec.to_dict()
    method = method or spec.heatmap.method
    layer = spec.heatmap.layer if method == spec.heatmap.method else None
    if method == "guided7x14":
        names = {lay.name for lay in model.layers}
        if layer and layer not in names:
            raise ModelError(f"the spec's heatmap layer '{layer}' is not a layer of model '{model.name}'",
                             "set heatmap.layer to one of its layers, or leave it empty to pick it by size")
        layer = layer or guide_layer(model, spec.backbone)
    else:
        layer = None
    d["heatmap"] = {"method": method, "layer": layer}
    return ModelSpec.from_dict(d)


def serving_function(model, spec: ModelSpec):
    """A ``tf.function`` (input ``image``) returning ``{probability, logit, cam, features}``.

    Args:
        model: a tf_keras classifier with layers ``features``, ``gap``, ``head_dense`` and
            ``probability`` (Dropout between the last two is an identity at inference).
        spec: its spec (task decides the Grad-CAM class; ``heatmap`` what ``cam`` is: see
            :func:`with_heatmap`).

    Returns:
        (tf.function, keras sub-model that owns the variables).
    """
    import tensorflow as tf
    import tf_keras as keras

    fmap = _layer(model, FEATURE_LAYER).output
    pooled = _layer(model, POOL_LAYER).output
    hidden = _layer(model, HIDDEN_LAYER)
    out = _layer(model, OUTPUT_LAYER)
    if getattr(hidden, "activation", None) is not keras.activations.relu:
        raise ModelError(f"layer '{HIDDEN_LAYER}' must be a Dense with ReLU for the Grad-CAM closed form")
    activation = getattr(out, "activation", None)
    if activation not in (keras.activations.sigmoid, keras.activations.softmax) or not hasattr(out, "kernel"):
        raise ModelError(f"layer '{OUTPUT_LAYER}' must be a Dense with sigmoid or softmax")
    # ``out.input`` is the hidden output after Dropout (an identity at inference): the logit
    # is computed here from it, so probability and logit share one tensor. ``out.output`` is
    # listed only so that the sub-model owns (and the converter freezes) the head's variables;
    # it is unused, and the converter drops it.
    guided = spec.heatmap.method == "guided7x14"
    extra = [_layer(model, spec.heatmap.layer or guide_layer(model, spec.backbone)).output] if guided else []
    sub = keras.Model(model.input, [fmap, pooled, hidden.output, out.input, out.output, *extra],
                      name=f"{model.name}_export")
    w1 = hidden.kernel                                              # (D, U), the variable itself
    w2, b2 = out.kernel, out.bias                                   # (U, C), (C,)
    h, w = int(fmap.shape[1]), int(fmap.shape[2])
    d = int(fmap.shape[3])
    s = int(model.input.shape[1])
    binary = spec.task == "binary"
    if binary != (int(out.kernel.shape[1]) == 1):
        raise ModelError(f"spec task '{spec.task}' does not match the model's {int(out.kernel.shape[1])} outputs")

    @tf.function(input_signature=[tf.TensorSpec((1, s, s, 3), tf.float32, name="image")])
    def serve(image):
        a, p, hid, head_in, _, *guide = sub(image, training=False)
        logit = tf.matmul(head_in, w2)
        if b2 is not None:
            logit = logit + b2
        prob = activation(logit)
        cams = cam_scores(tf.reshape(a, (h * w, d)), tf.cast(hid > 0.0, tf.float32), w1, w2, h * w)  # (h w, C)
        c = 0 if binary else tf.argmax(logit[0])                    # positive / predicted class
        cam = tf.nn.relu(tf.reshape(tf.gather(cams, c, axis=1), (1, h, w)))
        if guided:
            cam = guided_cam(cam, guide[0])                          # (1, 2h, 2w)
        return {"probability": prob, "logit": logit, "cam": cam, "features": p}

    return serve, sub


def keras_outputs(model, spec: ModelSpec, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run the serving function in TensorFlow (reference outputs for tests and debugging)."""
    serve, _ = serving_function(model, spec)
    outs = [serve(np.asarray(xi[None], np.float32)) for xi in x]
    return {k: np.concatenate([o[k].numpy() for o in outs]) for k in OUTPUTS}


def _converter(model, spec: ModelSpec):
    import tensorflow as tf

    serve, sub = serving_function(model, spec)
    return tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], sub)


def convert(model, spec: ModelSpec, qconfig: QuantizationConfig) -> bytes:
    """Convert ``model`` with the quantization ``qconfig`` to ``.tflite`` bytes (spec embedded)."""
    t0 = time.perf_counter()
    log.info("converting %s to TFLite (%s)...", model.name, qconfig.kind)
    spec = with_heatmap(spec, model)  # the embedded spec names the guiding layer
    conv = _converter(model, spec)
    qconfig.apply(conv)
    try:
        data = conv.convert()
    except Exception as exc:  # the converter raises many types (ConverterError, RuntimeError...)
        raise ModelError(f"TFLite conversion ({qconfig.kind}) failed: {str(exc).strip().splitlines()[0]}") from None
    log.info("converted (%s): %.1f MiB in %.1f s", qconfig.kind, len(data) / 2**20, time.perf_counter() - t0)
    return embed_spec(data, spec)


def calibrate(model, spec: ModelSpec, qconfig: QuantizationConfig) -> bytes:
    """Convert and calibrate only (float model with recorded activation ranges).

    :func:`quantize_calibrated` then makes the int8 file from it, as often as needed (the
    selective quantizer tries several float-kept layer sets from one calibration).
    """
    if qconfig.kind != "int8":
        raise ValueError("calibrate() needs an int8 QuantizationConfig")
    t0 = time.perf_counter()
    log.info("converting and calibrating %s on %d images...", model.name, qconfig.num_samples)
    conv = _converter(model, spec)
    qconfig.apply(conv)
    conv._experimental_calibrate_only = True  # noqa: SLF001 - the documented QuantizationDebugger path
    try:
        data = conv.convert()
    except Exception as exc:
        raise ModelError(f"TFLite calibration failed: {str(exc).strip().splitlines()[0]}") from None
    log.info("calibrated in %.1f s", time.perf_counter() - t0)
    return data


def calibrate_tflite(float_tflite: bytes, representative) -> bytes:
    """:func:`calibrate` from a float32 ``.tflite`` instead of a Keras model.

    This is the converter's own second half (``TFLiteConverter`` converts to a float
    flatbuffer, then calibrates that flatbuffer in the TFLite calibrator), so a released
    float32 file can be re-quantized, and its int8 twin re-derived by anyone, without the
    training run.

    Args:
        float_tflite: a float32 file exported by :func:`convert`.
        representative: callable yielding ``{"image": (1, S, S, 3)}`` samples.
    """
    from tensorflow.lite.python.optimize import calibrator

    t0 = time.perf_counter()
    try:
        cal = calibrator.Calibrator(calibrator.add_intermediate_tensors(bytes(float_tflite)))
        data = cal.calibrate(lambda: ([np.asarray(s["image"], np.float32)] for s in representative()))
    except Exception as exc:
        raise ModelError(f"TFLite calibration of the float32 file failed: {str(exc).strip().splitlines()[0]}",
                         "pass a float32 .tflite exported by `leukedge compress`") from None
    log.info("calibrated the float32 file in %.1f s", time.perf_counter() - t0)
    return data


def quantize_calibrated(calibrated: bytes, spec: ModelSpec, denylisted_nodes: list[str] | None = None,
                        float_cam: bool = True, record: dict | None = None, per_tensor: bool = False) -> bytes:
    """Full-integer int8 model (int8 input, int8 probability/logit/features) from a calibrated model.

    Args:
        calibrated: output of :func:`calibrate` (or :func:`calibrate_tflite`).
        spec: embedded into the result.
        denylisted_nodes: output tensor names of ops to keep in float (dequantize/quantize
            around them); None quantizes everything.
        float_cam: run the Grad-CAM branch (the ops only the ``cam`` output depends on) in float
            on the int8 last feature map, with the head's int8 weights, and return the map in
            float32 (:func:`leukedge.compress.cam_branch.float_cam_branch`: same file size,
            heatmap parity at the level the int8 feature map allows).
        record: filled with what ``float_cam`` did (shared weights, float outputs).
        per_tensor: one scale per weight tensor instead of one per output channel (no
            per-channel scale / zero-point vectors: ~3% of float32 smaller on thin networks,
            less exact; made for weights trained per tensor, ``--qat --per-tensor``).
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert

    deny = list(denylisted_nodes or [])
    cam = sorted(cam_only_tensors(calibrated)) if float_cam else []
    # Fully connected weights per tensor when the branch is float: its hybrid op shares them,
    # and tflite-runtime 2.14's hybrid kernel reads only a per-tensor scale (per-channel gave
    # all-zero maps there; LiteRT reads both). DenseNet201 release, validation: the same
    # parity either way (heatmap r 0.926, agreement 0.9924, mean |dp| 0.0140 vs 0.0141).
    data = tfl_convert.mlir_quantize(calibrated, fully_quantize=True, input_data_type=tf.int8,
                                     output_data_type=tf.int8,
                                     denylisted_nodes=(deny + [c for c in cam if c not in deny]) or None,
                                     disable_per_channel=per_tensor,
                                     disable_per_channel_for_dense_layers=bool(cam))
    if cam:
        try:
            data, info = float_cam_branch(data)
        except ModelError as exc:  # e.g. a file exported before the branch reused W1: all int8 then
            log.warning("Grad-CAM branch left in int8: %s", exc.one_line())
            info = {"float_cam": False, "reason": exc.one_line()}
            data = quantize_calibrated(calibrated, spec, denylisted_nodes, float_cam=False, per_tensor=per_tensor)
            if record is not None:
                record.update(info)
            return data
        if record is not None:
            record.update(info)
    return embed_spec(data, spec)


# ----- spec inside the flatbuffer --------------------------------------------------------------
def embed_spec(tflite: bytes, spec: ModelSpec) -> bytes:
    """Store spec.json in the flatbuffer's ``metadata`` (name :data:`SPEC_METADATA`).

    The runtime ignores metadata; :func:`read_embedded_spec` reads it back. spec.json also
    travels beside the file in the release folder (the app reads that one).
    """
    S = schema()
    model = read_model(tflite)
    model.metadata = [m for m in (model.metadata or []) if tensor_name(m) != SPEC_METADATA]
    buf = S.BufferT()
    buf.data = np.frombuffer(spec.to_json().encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buf)
    meta = S.MetadataT()
    meta.name = SPEC_METADATA
    meta.buffer = len(model.buffers) - 1
    model.metadata.append(meta)
    return write_model(model)


def read_embedded_spec(tflite: bytes) -> ModelSpec | None:
    """The spec stored by :func:`embed_spec`, or None when the file has none."""
    model = read_root(bytearray(tflite))
    for i in range(model.MetadataLength()):
        meta = model.Metadata(i)
        if tensor_name(meta) == SPEC_METADATA:
            raw = model.Buffers(meta.Buffer()).DataAsNumpy()
            return ModelSpec.from_json(bytes(raw).decode("utf-8"))
    return None


def export_spec(spec: ModelSpec, name: str) -> ModelSpec:
    """The release spec: ``spec`` renamed, with the exported output names."""
    d = spec.to_dict()
    d["name"] = name
    d["outputs"] = list(OUTPUTS)
    return ModelSpec.from_dict(d)
