"""Clipped activation ranges for int8 (percentile calibration).

TFLite calibrates each activation tensor on its min and max over the representative set.
One outlier activation then sets the int8 step for the whole tensor: in DenseNet201, whose
Concatenate outputs hold every earlier feature map of the block, most channels end up with a
handful of int8 levels (the int8 file's error is activation resolution: its int16x8 twin
passes every parity gate). Percentile calibration, as TensorRT and most PTQ toolkits offer it,
clips each range to a high percentile of the values instead, trading a few saturated
outliers for a finer step everywhere else.

Between :func:`leukedge.compress.export.calibrate` and
:func:`leukedge.compress.export.quantize_calibrated`::

    calibrated = export.calibrate(model, spec, QuantizationConfig.for_int8(rep))
    ranges = percentile_ranges(calibrated, rep.images[:64], percentile=99.99)
    int8 = export.quantize_calibrated(clip_ranges(calibrated, ranges), spec)

Only activations are clipped: model inputs and outputs (probability, logit, Grad-CAM map and
features) and the Grad-CAM branch keep their calibrated ranges, and ranges only ever narrow.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukedge.errors import ConfigError
from leukedge.predictors import TFLitePredictor
from leukedge.progress import progress
from leukedge.tflite_graph import read_model, signature_outputs, tensor_name, write_model

from .cam_branch import cam_only_tensors
from .export import quantize_calibrated
from .parity import candidate_record, closest, compare

log = logging.getLogger(__name__)

#: How the Grad-CAM branch's activations are treated (:func:`leukedge.compress.cam_branch.float_cam_branch`).
GRADCAM_BRANCH = "float on the int8 feature map (not clipped, not quantized)"


@dataclass(frozen=True)
class Range:
    """A tensor's calibrated range and the clipped one."""

    name: str
    calibrated: tuple[float, float]
    clipped: tuple[float, float]

    @property
    def shrink(self) -> float:
        """Clipped width / calibrated width (1 = unchanged)."""
        w = self.calibrated[1] - self.calibrated[0]
        return (self.clipped[1] - self.clipped[0]) / w if w > 0 else 1.0


def activation_tensors(calibrated: bytes) -> dict[int, tuple[str, float, float]]:
    """Index -> (name, min, max) of every calibrated activation of the main graph, except the
    graph's inputs and outputs, the Grad-CAM branch (:mod:`leukedge.compress.cam_branch`:
    its per-image peaks vary too much for a clipped range) and constants."""
    model = read_model(calibrated)
    graph = model.subgraphs[0]
    io = set(int(i) for i in graph.inputs) | set(int(i) for i in graph.outputs)
    cam = cam_only_tensors(calibrated)
    out = {}
    for i, t in enumerate(graph.tensors):
        q = t.quantization
        if i in io or q is None or q.min is None or q.max is None or len(q.min) != 1 or tensor_name(t) in cam:
            continue
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        if buf is not None and buf.data is not None and len(buf.data):
            continue
        out[i] = (tensor_name(t), float(q.min[0]), float(q.max[0]))
    return out


def check_percentile(percentile) -> float:
    """``percentile`` as a float if it is a usable upper percentile, else a ConfigError."""
    try:
        value = float(percentile)
    except (TypeError, ValueError):
        value = float("nan")
    if not 50.0 < value <= 100.0:
        raise ConfigError(f"clip percentile must be in (50, 100], got {percentile}",
                          "use a high percentile such as 99.99 (100 keeps min/max), or auto")
    return value


def percentile_ranges(calibrated: bytes, images: np.ndarray, percentile: float = 99.99) -> list[Range]:
    """Per-tensor ``[q(100 - p), q(p)]`` of the activations on ``images``, averaged over images.

    Args:
        calibrated: output of :func:`leukedge.compress.export.calibrate` (a float model).
        images: preprocessed training images ``(N, S, S, 3)``; 32-64 are plenty.
        percentile: upper percentile kept (the lower one is ``100 - percentile``).
    """
    return percentile_ranges_multi(calibrated, images, [percentile])[float(percentile)]


def percentile_ranges_multi(calibrated: bytes, images: np.ndarray, percentiles) -> dict[float, list[Range]]:
    """:func:`percentile_ranges` for several percentiles from one pass over the images."""
    ps = [check_percentile(p) for p in percentiles]
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    targets = activation_tensors(calibrated)
    if not targets:
        return {p: [] for p in ps}
    interp = Interpreter(model_content=bytes(calibrated), experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    qs = sorted({q for p in ps for q in ((100.0 - p) / 100.0, p / 100.0)})
    sums = {i: np.zeros(len(qs)) for i in targets}
    t0 = time.perf_counter()
    images = np.asarray(images, np.float32)
    for x in progress(images, desc="activation percentiles", unit="img"):
        interp.set_tensor(inp, x[None])
        interp.invoke()
        for i in targets:
            sums[i] += np.quantile(interp.get_tensor(i).ravel(), qs)
    log.info("activation percentiles of %d tensors on %d images in %.1f s",
             len(targets), len(images), time.perf_counter() - t0)
    out = {}
    for p in ps:
        lo_k, hi_k = qs.index((100.0 - p) / 100.0), qs.index(p / 100.0)
        ranges = []
        for i, (name, mn, mx) in targets.items():
            lo, hi = sums[i][lo_k] / len(images), sums[i][hi_k] / len(images)
            a, b = max(mn, min(0.0, float(lo))), min(mx, max(0.0, float(hi)))
            if b <= a:          # a constant tensor: keep what calibration saw
                a, b = mn, mx
            ranges.append(Range(name, (mn, mx), (a, b)))
        out[p] = ranges
    return out


def clip_ranges(calibrated: bytes, ranges: list[Range]) -> bytes:
    """A copy of the calibrated model with the ``ranges``' clipped min/max written in."""
    model = read_model(calibrated)
    graph = model.subgraphs[0]
    by_name = {r.name: r for r in ranges}
    n = 0
    for t in graph.tensors:
        r = by_name.get(tensor_name(t))
        if r is None or t.quantization is None or t.quantization.min is None:
            continue
        t.quantization.min = np.asarray([r.clipped[0]], np.float32)
        t.quantization.max = np.asarray([r.clipped[1]], np.float32)
        n += 1
    if n != len(by_name):
        raise ConfigError(f"{len(by_name) - n} of {len(by_name)} clipped ranges name no tensor of this model")
    return write_model(model)


def summary(ranges: list[Range], percentile: float) -> dict:
    """What the clipping did, for the compress report."""
    s = np.array([r.shrink for r in ranges]) if ranges else np.ones(1)
    worst = sorted(ranges, key=lambda r: r.shrink)[:5]
    return {"percentile": percentile, "n_tensors": len(ranges), "gradcam_branch": GRADCAM_BRANCH,
            "median_width_kept": round(float(np.median(s)), 4), "min_width_kept": round(float(s.min()), 4),
            "n_clipped_below_half": int((s < 0.5).sum()),
            "most_clipped": [{"tensor": r.name, "calibrated": [round(v, 4) for v in r.calibrated],
                              "clipped": [round(v, 4) for v in r.clipped]} for r in worst]}


#: Percentiles ``--clip-percentile auto`` tries (100: TFLite's min/max, unclipped).
AUTO_CANDIDATES = (100.0, 99.999, 99.99, 99.9)


def choose_percentile(calibrated: bytes, spec, reference, val_data, images: np.ndarray,
                      candidates=AUTO_CANDIDATES, gates=None, n_boot: int = 200,
                      per_tensor: bool = False) -> tuple[float, bytes, dict]:
    """Quantize with each candidate percentile and keep the one closest to float32 on the
    VALIDATION split (choosing on the test split would flatter the report).

    Best = passes the gates, then fewest failed gates, then highest agreement, then lowest mean
    ``|p_float - p_int8|``.

    Args:
        calibrated: output of :func:`leukedge.compress.export.calibrate`.
        spec: release spec (embedded into the int8 bytes).
        reference: the float32 predictor.
        val_data: :class:`leukedge.compress.parity.ParityData` of the validation split.
        images: preprocessed training images the percentiles are measured on.
        per_tensor: quantize the candidates' weights per tensor (``--per-tensor``).

    Returns:
        (chosen percentile, its calibrated model with clipped ranges, report dict).
    """
    t0 = time.perf_counter()
    clipped = [p for p in candidates if p < 100.0]
    all_ranges = percentile_ranges_multi(calibrated, images, clipped) if clipped else {}
    attempts, models = [], {}
    with tempfile.TemporaryDirectory(prefix="leukedge-clip-") as tmp:
        for p in candidates:
            p = check_percentile(p)
            models[p] = calibrated if p >= 100.0 else clip_ranges(calibrated, all_ranges[p])
            path = Path(tmp) / f"int8-p{p}.tflite"
            path.write_bytes(quantize_calibrated(models[p], spec, per_tensor=per_tensor))
            res = compare(reference, TFLitePredictor(path, spec), val_data, gates, n_boot=n_boot, keep_per_image=False)
            attempts.append(candidate_record(res, percentile=p))
            log.info("int8 with activation ranges at percentile %s: %s on validation (agreement %.4f, mean |dp| %.4f)",
                     p, "PASS" if res.passed else "fail", res.agreement, res.probability_diff["mean_abs"])
    chosen = closest(attempts)["percentile"]
    report = {"chosen": chosen, "split": val_data.split, "attempts": attempts,
              "gradcam_branch": GRADCAM_BRANCH, "seconds": round(time.perf_counter() - t0, 1)}
    if chosen < 100.0:
        report.update({k: v for k, v in summary(all_ranges[chosen], chosen).items() if k != "percentile"})
    log.info("activation ranges: percentile %s chosen on the %s split", chosen, val_data.split)
    return chosen, models[chosen], report


#: |logit| beyond which a binary model's int8 ``logit`` output saturates (sigmoid(12) = 1 - 6e-6).
LOGIT_LIMIT = 12.0


def bound_logit(calibrated: bytes, limit: float = LOGIT_LIMIT) -> tuple[bytes, dict | None]:
    """Narrow a binary model's calibrated ``logit`` output range to ``[-limit, limit]``.

    The logit is calibrated on its min and max like any tensor. An over-confident model (the
    DenseNet201 release: training-image logits from -23 to +471) then gets an int8 step of
    1.9 logits, so probabilities near a low operating threshold (0.008: logit -4.8) jump
    between 0.001 and 0.05 and decisions flip. Beyond +-12 the probability is 0 or 1 to
    within 6e-6, so saturating there loses nothing a threshold can use and gives a step of
    0.094. Only narrows; a model whose range is already inside is returned unchanged. Softmax
    (subtype) logits are left alone: their differences, not their values, decide.

    Returns:
        (model bytes, ``{"calibrated": [lo, hi], "used": [lo, hi], "limit": limit}`` or None
        when there is no single-logit output).
    """
    model = read_model(calibrated)
    idx = signature_outputs(model).get("logit")
    if idx is None:
        return calibrated, None
    t = model.subgraphs[0].tensors[idx]
    q = t.quantization
    if q is None or q.min is None or len(q.min) != 1 or int(np.prod(t.shape)) != 1:
        return calibrated, None
    lo, hi = float(q.min[0]), float(q.max[0])
    new_lo, new_hi = max(lo, -limit), min(hi, limit)
    info = {"calibrated": [round(lo, 4), round(hi, 4)], "used": [round(new_lo, 4), round(new_hi, 4)], "limit": limit}
    if (new_lo, new_hi) == (lo, hi):
        return calibrated, info
    q.min = np.asarray([new_lo], np.float32)
    q.max = np.asarray([new_hi], np.float32)
    log.info("logit range %.2f..%.2f bounded to %.2f..%.2f", lo, hi, new_lo, new_hi)
    return write_model(model), info
