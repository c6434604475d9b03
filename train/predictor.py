"""The Keras predictor: a training run folder (or a ``.h5`` checkpoint) behind the one predictor interface.

Importing :mod:`leukedge.train` registers :class:`KerasPredictor` with
:func:`leukedge.predictors.register_loader` for ``.h5`` files, so ``evaluate``, ``parity``
and ``bench`` open run folders without core importing this stage. TensorFlow is imported
when a model is loaded, not at import.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from leukedge.predictors import Predictor
from leukedge.spec import ModelSpec

from .gradcam import GradCAM
from .io import load_keras_model


class KerasPredictor(Predictor):
    """A tf_keras checkpoint ``run_dir/checkpoint`` scored with TensorFlow."""

    kind = "keras"
    heatmap_source = "Grad-CAM (TensorFlow GradientTape on the Keras model)"

    def __init__(self, run_dir, spec: ModelSpec, checkpoint: str = "best.h5"):
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.model = load_keras_model(self.run_dir / checkpoint)
        self.name = f"{self.run_dir.name}/{checkpoint}"

    def raw(self, x):
        return {"probability": self.model.predict(x, verbose=0, batch_size=32)}

    def heatmaps(self, x: np.ndarray) -> np.ndarray:
        """GradientTape Grad-CAM, as the spec's ``heatmap.method`` exports it (``guided7x14``: guided
        by ``heatmap.layer``)."""
        hm = self.spec.heatmap
        cams, _ = GradCAM(self.model, guide=hm.layer if hm.method == "guided7x14" else None)(x)
        return cams
