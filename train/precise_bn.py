"""Precise BatchNorm: re-estimate BatchNorm moving statistics from training batches.

Trained from scratch with few steps per epoch (DenseNet201 here: 61 steps of 32 images),
the BatchNorm moving averages lag far behind the weights, so the model in inference mode
predicts a constant: measured on DenseNet201 after 3 epochs from scratch, validation
ROC-AUC 0.54 with the moving averages, 0.996 after re-estimating them from 320 training
images (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021). Re-estimation changes no
trained weight, only the statistics inference uses.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def batchnorm_layers(model) -> list:
    import tf_keras as keras

    return [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]


def recalibrate_batchnorm(model, batches, max_batches: int = 10, trainable_only: bool = False) -> int:
    """Set every BatchNorm's moving mean/variance to the average over ``batches``.

    Args:
        model: a tf_keras model (modified in place).
        batches: iterable of input batches (numpy or tensors), or of (x, y[, w]) tuples,
            preprocessed like training (no augmentation needed).
        max_batches: use at most this many batches.
        trainable_only: leave frozen BatchNorm layers (a frozen pretrained backbone) alone.

    Returns:
        The number of batches used (0: nothing changed).
    """
    bns = [l for l in batchnorm_layers(model) if l.trainable or not trainable_only]
    if not bns:
        return 0
    saved = [l.momentum for l in bns]
    used = 0
    try:
        for k, batch in enumerate(batches):
            if k >= max_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in bns:  # cumulative mean: batch k gets weight 1/(k+1)
                layer.momentum = k / (k + 1)
            model(x, training=True)
            used += 1
    finally:
        for layer, m in zip(bns, saved):
            layer.momentum = m
    log.info("re-estimated %d BatchNorm layers from %d batches", len(bns), used)
    return used
