"""Grad-CAM with TensorFlow's GradientTape: the reference the exported in-graph heatmap is checked against.

For a classifier built by :func:`leukedge.train.model.build_classifier` the heatmap of class
``c`` is ``relu(sum_k alpha_k A_k)`` where ``A`` is the ``features`` layer (the last feature
map) and ``alpha_k`` the spatial mean of ``d score_c / d A_k`` (Selvaraju et al., 2017).
The score is the class *logit* (the output layer's pre-activation), as in the paper: for a
sigmoid head ``c`` is the positive class; for a softmax head, by default, the predicted class.
Maps are returned relu'd and not normalised (the same convention as the ``cam`` output of the
exported ``.tflite``). With ``guide`` (a layer name) the map is the ``guided7x14`` heatmap of that
Grad-CAM and the layer's activation (:func:`leukedge.heatmap.guided_map`), as a spec with
``heatmap.method = guided7x14`` exports it.
"""
from __future__ import annotations

import logging

import numpy as np

from leukedge.errors import ModelError
from leukedge.heatmap import guided_map

from .model import FEATURE_LAYER, OUTPUT_LAYER

log = logging.getLogger(__name__)


class GradCAM:
    """Grad-CAM for one tf_keras classifier.

    Args:
        model: a LeukEdge classifier (layers ``features`` and ``probability``).
        feature_layer: name of the last feature map layer.
        output_layer: name of the output (Dense) layer.
        guide: a layer at twice the feature map's size: return the ``guided7x14`` map it guides.
    """

    def __init__(self, model, feature_layer: str = FEATURE_LAYER, output_layer: str = OUTPUT_LAYER,
                 guide: str | None = None):
        import tensorflow as tf
        import tf_keras as keras

        try:
            fmap = model.get_layer(feature_layer).output
            out_layer = model.get_layer(output_layer)
            extra = [model.get_layer(guide).output] if guide else []
        except ValueError:
            raise ModelError(f"model {model.name} has no '{feature_layer}'/'{output_layer}'"
                             f"{'/' + repr(guide) if guide else ''} layer",
                             "Grad-CAM needs a classifier built by leukedge.train.model.build_classifier") from None
        self.activation = getattr(out_layer, "activation", None)
        self.binary = int(out_layer.output.shape[-1]) == 1
        # The output layer's input gives the logits without relying on inverting the activation.
        self._model = keras.Model(model.inputs, [fmap, out_layer.input, out_layer.output, *extra])
        self.guided = bool(guide)
        self._kernel, self._bias = out_layer.kernel, out_layer.bias
        self._tf = tf

    def __call__(self, x: np.ndarray, class_index: int | np.ndarray | None = None, batch_size: int = 16):
        """Heatmaps for a float32 batch (N, S, S, 3) preprocessed with the model's spec.

        Args:
            x: the batch.
            class_index: class to explain (int or one per image); default positive class
                (binary) or the predicted class (softmax).
            batch_size: images per gradient pass.

        Returns:
            (cams (N, h, w) float32 >= 0, probabilities (N, C) float32).
        """
        x = np.asarray(x, dtype=np.float32)
        cams, probs = [], []
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            ci = None
            if class_index is not None:
                ci = np.broadcast_to(np.asarray(class_index), (len(x),))[start:start + batch_size]
            c, p = self._batch(xb, ci)
            cams.append(c)
            probs.append(p)
        if not cams:
            return np.zeros((0, 0, 0), np.float32), np.zeros((0, 0), np.float32)
        return np.concatenate(cams), np.concatenate(probs)

    def _batch(self, xb, class_index):
        tf = self._tf
        xt = tf.convert_to_tensor(xb)
        with tf.GradientTape() as tape:
            fmap, hidden, prob, *guide = self._model(xt, training=False)
            logits = tf.matmul(hidden, self._kernel) + self._bias
            if self.binary:
                idx = np.zeros(len(xb), dtype=np.int32)
            elif class_index is None:
                idx = np.argmax(prob.numpy(), axis=-1).astype(np.int32)
            else:
                idx = np.asarray(class_index, dtype=np.int32)
            score = tf.gather(logits, idx, axis=1, batch_dims=1)
        grads = tape.gradient(score, fmap)  # (N, h, w, K)
        alpha = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(alpha * fmap, axis=-1)).numpy().astype(np.float32)
        if self.guided:
            cam = np.stack([guided_map(c, a) for c, a in zip(cam, guide[0].numpy())])
        return cam, prob.numpy().astype(np.float32)


def gradcam(model, x: np.ndarray, class_index=None, batch_size: int = 16, guide: str | None = None):
    """One-call Grad-CAM: ``(cams (N, h, w), probabilities (N, C))``; see :class:`GradCAM`."""
    return GradCAM(model, guide=guide)(x, class_index, batch_size)
