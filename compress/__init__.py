"""LeukEdge compress stage: TFLite export with in-graph Grad-CAM, quantization, pruning, parity.

Public API (TensorFlow is imported only inside the functions that need it):

* :func:`leukedge.compress.parity.compare` -> :class:`~leukedge.compress.parity.ParityResult`,
  with :class:`~leukedge.compress.parity.Gates` and :class:`~leukedge.compress.parity.ParityData`;
* :class:`leukedge.compress.quantization.QuantizationConfig` (``for_int8``, ``for_float16``,
  ``for_dynamic``, ``for_float32``);
* :func:`leukedge.compress.export.convert` / ``calibrate`` / ``quantize_calibrated``, and
  ``with_heatmap`` (the ``cam`` output's method: ``gradcam7`` or ``guided7x14``,
  :mod:`leukedge.compress.cam_graph`);
* :func:`leukedge.compress.prune.prune_model`;
* :func:`leukedge.compress.qat.qat_finetune` (quantization-aware fine-tuning, experimental) and
  :func:`leukedge.compress.bn_fold.standalone_bn_to_depthwise`;
* :func:`leukedge.compress.selective.selective_quantize`;
* :func:`leukedge.compress.pipeline.run_compress` (``leukedge compress``).
"""
__all__ = ["export", "quantization", "prune", "qat", "bn_fold", "selective", "parity", "parity_report", "release", "pipeline",
           "cam_graph"]
