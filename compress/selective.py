"""Accuracy-controlled (selective) int8 quantization.

When the full-integer file fails a parity gate, TFLite's ``QuantizationDebugger`` measures
every quantized op's error against the float op run on the same (quantized) input
(``NumericVerify``). Ops are ranked by RMSE in units of their own quantization step
(``rmse / scale``: the TFLite debugger guide's criterion), and the worst are kept in float
(``denylisted_nodes``: dequantize -> float op -> quantize) in growing sets 1, 2, 4, ... until
the gates pass on the VALIDATION split (choosing on the test split would overfit the report).
One calibration serves every attempt. The report lists the kept ops and what they cost in
file size and latency.
"""
from __future__ import annotations

import csv
import io
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from leukedge.predictors import TFLitePredictor
from leukedge.runtime import LiteRunner
from leukedge.spec import ModelSpec

from .export import quantize_calibrated
from .parity import Gates, ParityData, compare

log = logging.getLogger(__name__)


@dataclass
class SelectiveReport:
    """Outcome of the search."""

    passed: bool
    kept_float: list[str] = field(default_factory=list)
    kept_ops: list[str] = field(default_factory=list)
    ranking: list[dict] = field(default_factory=list)
    attempts: list[dict] = field(default_factory=list)
    int8_bytes: int = 0
    selective_bytes: int = 0
    int8_ms: float | None = None
    selective_ms: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def layer_errors(calibrated: bytes, representative, max_samples: int = 64) -> list[dict]:
    """Per-op quantization error from TFLite's QuantizationDebugger, worst first.

    Args:
        calibrated: output of :func:`leukedge.compress.export.calibrate`.
        representative: callable yielding ``{"image": (1, S, S, 3)}`` (training images).
        max_samples: images to run through the debug model.

    Returns:
        ``[{"tensor_name", "op_name", "rmse_over_scale", "mean_squared_error", "max_abs_error", "scale"}]``.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert

    debug_model = tfl_convert.mlir_quantize(calibrated, enable_numeric_verify=True)

    def dataset():
        for i, sample in enumerate(representative()):
            if i >= max_samples:
                break
            yield [np.asarray(sample["image"], np.float32)]

    t0 = time.perf_counter()
    dbg = tf.lite.experimental.QuantizationDebugger(quant_debug_model_content=debug_model, debug_dataset=dataset)
    dbg.run()
    buf = io.StringIO()
    dbg.layer_statistics_dump(buf)
    rows = []
    for r in csv.DictReader(io.StringIO(buf.getvalue())):
        scale = float(r["scale"]) if r.get("scale") else 0.0
        mse = float(r["mean_squared_error"])
        rows.append({"tensor_name": r["tensor_name"], "op_name": r["op_name"], "scale": scale,
                     "mean_squared_error": mse, "max_abs_error": float(r["max_abs_error"]),
                     "rmse_over_scale": float(np.sqrt(mse) / scale) if scale > 0 else float("inf")})
    rows.sort(key=lambda d: -d["rmse_over_scale"])
    log.info("quantization debugger: %d ops measured in %.1f s; worst: %s", len(rows), time.perf_counter() - t0,
             ", ".join(f"{d['tensor_name']} ({d['rmse_over_scale']:.2f})" for d in rows[:3]))
    return rows


def latency_ms(path, x: np.ndarray, runs: int = 20, threads: int | None = 2) -> float:
    """Median ms per image of a .tflite with LiteRT (after 3 warm-up runs)."""
    r = LiteRunner(path, num_threads=threads)
    for _ in range(3):
        r.run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r.run(x)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def selective_quantize(calibrated: bytes, spec: ModelSpec, reference, val_data: ParityData, representative,
                       gates: Gates | None = None, max_rounds: int = 7, n_boot: int = 200,
                       debugger_samples: int = 64, per_tensor: bool = False) -> tuple[bytes | None, SelectiveReport]:
    """Find the smallest ranked set of ops to keep in float so the int8 file passes ``gates``.

    Args:
        calibrated: calibrated float model (:func:`leukedge.compress.export.calibrate`).
        spec: release spec (embedded in the result).
        reference: the float32 predictor the candidates are compared with.
        val_data: the validation images (the gates are checked on them).
        representative: the calibration images (for the debugger).
        gates: parity gates.
        max_rounds: tries with 1, 2, 4, ... 2**(max_rounds-1) float ops.
        n_boot: bootstrap replicates per attempt (only point estimates gate).
        debugger_samples: images the debugger runs.
        per_tensor: quantize weights per tensor (``--per-tensor``).

    Returns:
        (model bytes that pass, or None; :class:`SelectiveReport`).
    """
    t0 = time.perf_counter()
    gates = gates or Gates()
    ranking = layer_errors(calibrated, representative, debugger_samples)
    report = SelectiveReport(passed=False, ranking=ranking[:50])
    names = [d["tensor_name"] for d in ranking]
    base = quantize_calibrated(calibrated, spec, per_tensor=per_tensor)
    report.int8_bytes = len(base)
    best = None
    with tempfile.TemporaryDirectory(prefix="leukedge-selective-") as tmp:
        x0 = val_data.images(spec)[0][:1][0]
        base_path = Path(tmp) / "int8.tflite"
        base_path.write_bytes(base)
        report.int8_ms = latency_ms(base_path, x0)
        k = 1
        for _ in range(max_rounds):
            k = min(k, len(names))
            keep = names[:k]
            data = quantize_calibrated(calibrated, spec, denylisted_nodes=keep, per_tensor=per_tensor)
            path = Path(tmp) / f"selective-{k}.tflite"
            path.write_bytes(data)
            cand = TFLitePredictor(path, spec)
            res = compare(reference, cand, val_data, gates, n_boot=n_boot, keep_per_image=False)
            attempt = {"n_float": k, "bytes": len(data), "passed": res.passed,
                       "gates": {g.name: g.value for g in res.gates}, "failed": [g.name for g in res.failed]}
            report.attempts.append(attempt)
            log.info("selective int8: %d op(s) kept in float -> %s (%s)", k, "PASS" if res.passed else "fail",
                     ", ".join(f"{n}={v:.4f}" for n, v in attempt["gates"].items() if v is not None))
            if res.passed:
                best = data
                report.passed = True
                report.kept_float = keep
                report.kept_ops = [d["op_name"] for d in ranking[:k]]
                report.selective_bytes = len(data)
                report.selective_ms = latency_ms(path, x0)
                break
            if k >= len(names):
                break
            k *= 2
    report.seconds = time.perf_counter() - t0
    if not report.passed:
        log.warning("selective int8: gates still fail with %d ops kept in float", k)
    return best, report
