"""Keras loss and metrics of distillation runs (TensorFlow at import: import it lazily).

A distillation run's training batches carry ``[mixed target | hard label]`` (``2k`` columns,
``train_pipeline(..., with_hard_labels=True)``): the loss is the cross-entropy on the first
``k`` columns, accuracy and AUC compare with the last ``k``, the hard labels (Keras' own
metrics would compare with the soft targets: a binary accuracy against 0.7 is never right).
Validation batches carry the hard labels only (``k`` columns), where both slices are the
whole target, so validation loss and metrics are exactly those of a run without a teacher.
"""
from __future__ import annotations

import tf_keras as keras


class DistillLoss(keras.losses.Loss):
    """Cross-entropy (binary or categorical) with the first ``k`` target columns."""

    def __init__(self, k: int = 1, binary: bool = True, name: str = "distill_crossentropy", **kw):
        super().__init__(name=name, **kw)
        self.k, self.binary = int(k), bool(binary)

    def call(self, y_true, y_pred):
        t = y_true[..., : self.k]
        if self.binary:
            return keras.losses.binary_crossentropy(t, y_pred)
        return keras.losses.categorical_crossentropy(t, y_pred)

    def get_config(self) -> dict:
        return {**super().get_config(), "k": self.k, "binary": self.binary}


class _HardLabels:
    """Mixin: the wrapped metric sees only the last ``k`` target columns (the hard labels)."""

    def __init__(self, k: int = 1, **kw):
        super().__init__(**kw)
        self.k = int(k)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true[..., -self.k:], y_pred, sample_weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "k": self.k}


class HardBinaryAccuracy(_HardLabels, keras.metrics.BinaryAccuracy):
    """Binary accuracy against the hard labels."""


class HardCategoricalAccuracy(_HardLabels, keras.metrics.CategoricalAccuracy):
    """Categorical accuracy against the hard labels."""


class HardAUC(_HardLabels, keras.metrics.AUC):
    """ROC-AUC against the hard labels."""


def distill_loss_and_metrics(binary: bool, k: int) -> tuple[keras.losses.Loss, list]:
    """The loss and the ``accuracy``/``auc`` metrics of a distillation run with ``k`` outputs."""
    acc = HardBinaryAccuracy(k=k, name="accuracy") if binary else HardCategoricalAccuracy(k=k, name="accuracy")
    return DistillLoss(k=k, binary=binary), [acc, HardAUC(k=k, name="auc")]
