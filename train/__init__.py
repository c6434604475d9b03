"""LeukEdge train stage.

Importing it registers the Keras checkpoint loader (:class:`~leukedge.train.predictor.KerasPredictor`)
with :func:`leukedge.predictors.register_loader`: core opens training run folders through that
registry and never imports this stage. No TensorFlow at import.
"""
from leukedge.predictors import register_loader

from .predictor import KerasPredictor

register_loader(".h5", KerasPredictor)

__all__ = ["KerasPredictor"]
