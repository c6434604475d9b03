"""Sparsity-preserving weight clustering after pruning (tfmot collaborative optimization).

A 50%-pruned int8 file still stores each surviving weight as one of ~250 int8 values, so gzip
gets little beyond the zeros. tfmot's weight clustering (``cluster_weights``) ties every kernel
to ``K`` shared values (centroids, fine-tuned by gradient descent) and, with
``preserve_sparsity=True``, keeps the pruned zeros zero (tfmot's sparsity masks and zero
centroid, the "pruning-clustering" stage of its collaborative optimization pipeline). After
per-channel int8 quantization each output channel then holds at most ``K + 1`` distinct
values, which gzip stores in a few bits each. Measured offline on the released 50%-pruned
EfficientNet-Lite0 subtype file (k-means of each kernel's int8 weights, no fine-tuning): gzip
18.1% of float32 -> 16.0% (K=16) / 17.1% (K=32); without fine-tuning the K=16 file fails every
parity gate on the validation split (agreement 0.944, heatmap r 0.78), so the centroids are
fine-tuned with the same distillation losses as the pruning (:func:`leukedge.compress.prune.prune_model`).
Fine-tuned (8 epochs at 1e-5, after the 8/30/32 pruning recipe), the subtype file gzips to
13.7% (K=16: validation agreement 0.9898, fails by one image) and 16.1% (K=32: every gate
passes on validation and test, heatmap r 0.901 / 0.910): the released file is K=32.

DepthwiseConv2D kernels are not clusterable in tfmot (its registry lists no weights for them)
and stay as they are; only the layers that were pruned are clustered.
"""
from __future__ import annotations

import numpy as np

from leukedge.errors import ModelError


def cluster_pruned(model, names: set[str], clusters: int, freeze_batchnorm: bool = True):
    """A copy of ``model`` whose layers ``names`` are wrapped by tfmot's ``ClusterWeights``
    (``clusters`` centroids per kernel, k-means++ initialised, pruned zeros preserved)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    cl = tfmot.clustering.keras

    def wrap(layer):
        if layer.name not in names:
            return layer
        # a layer frozen in training (e.g. an early backbone block) still gets its centroids
        # fine-tuned: tfmot refuses to cluster a layer without trainable weights
        layer.trainable = True
        return cl.cluster_weights(layer, number_of_clusters=int(clusters),
                                  cluster_centroids_init=cl.CentroidInitialization.KMEANS_PLUS_PLUS,
                                  preserve_sparsity=True)

    try:
        wrapped = keras.models.clone_model(model, clone_function=wrap)
    except ValueError as exc:
        raise ModelError(f"tfmot cannot cluster this model ({str(exc).splitlines()[0]})",
                         "tfmot clusters the Conv2D/Dense kernels of a tf_keras model; run without --prune-clusters "
                         "to keep the pruned file unclustered") from None
    if freeze_batchnorm:
        for layer in wrapped.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return wrapped


def is_cluster_wrapper(layer) -> bool:
    return hasattr(layer, "update_clustered_weights_associations")


def current_kernel(layer):
    """The kernel ``layer`` computes with now: a pruning wrapper's masked variable, a QAT
    wrapper's float variable, or a clustering wrapper's clustered weight (recomputed in the caller's graph: tfmot's wrapper
    swaps the inner layer's kernel attribute for a tensor when it is called)."""
    if is_cluster_wrapper(layer):
        layer.update_clustered_weights_associations()
    if type(layer).__name__.startswith("QuantizeWrapper"):
        # a QAT wrapper swaps the attribute for its fake-quantized tensor of another graph:
        # the float variable (the file's Grad-CAM branch runs in float on the head's weights)
        for weight, _, _ in layer._weight_vars:  # noqa: SLF001 - tfmot keeps (weight, quantizer, vars) here
            if weight.name.split("/")[-1].startswith("kernel"):
                return weight
    return getattr(layer, "layer", layer).kernel


def strip(model):
    """tfmot's ``strip_clustering``, then a clean clone (one graph, plain layers)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    stripped = tfmot.clustering.keras.strip_clustering(model)
    clean = keras.models.clone_model(stripped)
    clean.set_weights(stripped.get_weights())
    return clean


def clustered_copy(clustered, template):
    """A plain model (``template``'s architecture: the pruned model that was clustered) with
    the weights ``clustered`` computes with now, leaving ``clustered`` and its training alone
    (tfmot's ``strip_clustering`` writes into the wrapped layers; cloning a wrapper re-runs its
    centroid initialisation)."""
    import tf_keras as keras

    copy = keras.models.clone_model(template)  # every layer's weights are set below
    for layer in clustered.layers:
        target = copy.get_layer(getattr(layer, "layer", layer).name)
        if not is_cluster_wrapper(layer):
            target.set_weights(layer.get_weights())
            continue
        layer.update_clustered_weights_associations()  # the inner layer's kernel: the clustered tensor
        target.set_weights([np.asarray(getattr(layer.layer, w.name.split("/")[-1].split(":")[0]))
                            for w in target.weights])
    return copy


def distinct_values(model, names: set[str], attr_of) -> dict[str, dict]:
    """Per clustered layer: distinct kernel values (including 0) and its sparsity."""
    out = {}
    for layer in model.layers:
        if layer.name not in names:
            continue
        w = getattr(layer, attr_of(layer)).numpy()
        out[layer.name] = {"distinct_values": int(np.unique(w).size), "sparsity": float(np.mean(w == 0)),
                           "size": int(w.size)}
    return out


def check_clusters(layers: dict[str, dict], clusters: int) -> None:
    """Raise when a clustered kernel holds more than ``clusters`` distinct values (+ the zero).

    Raises:
        ModelError: a layer that is not clustered.
    """
    bad = {n: d["distinct_values"] for n, d in layers.items() if d["distinct_values"] > clusters + 1}
    if bad:
        first = next(iter(bad.items()))
        raise ModelError(f"clustering left {len(bad)} kernel(s) with more than {clusters} values "
                         f"(e.g. {first[0]}: {first[1]})", "check that tfmot wrapped these layers")
