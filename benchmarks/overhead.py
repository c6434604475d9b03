"""The harness's own overhead: its p50 against a bare ``interpreter.invoke()`` loop, same model.

Both run in one fresh process on one loaded interpreter, in interleaved rounds (harness,
bare, harness, bare...) so that load from other processes hits both alike. The harness
side is exactly what latency rows use (:func:`leukedge.benchmarks.runner.time_calls` over the
session's ``invoke``); the bare side times blocks of ``BLOCK`` back-to-back
``interpreter.invoke()`` calls with one clock read per block. Reported: the median per-call
time of each, and ``diff_pct = (harness - bare) / bare * 100`` (target: within 5%).
"""
from __future__ import annotations

import time

import numpy as np

from .runner import time_calls
from .runtimes import Target, get_runtime

BLOCK = 5


def bare_loop(invoke, calls: int, block: int = BLOCK) -> list[float]:
    """Per-call ms of ``calls`` bare invokes, one value per block of ``block`` calls."""
    clock = time.perf_counter
    out = []
    for _ in range(max(1, calls // block)):
        t = clock()
        for _ in range(block):
            invoke()
        out.append((clock() - t) * 1000.0 / block)
    return out


def measure_overhead(job: dict) -> dict:
    """Interleave harness and bare rounds on one interpreter. Runs in a fresh process."""
    rt = get_runtime(job["runtime"])
    if rt.kind != "tflite":
        return {"status": "skipped", "error": "overhead is measured for .tflite runtimes", "rounds": 0}
    target = Target.from_dict(job["target"])
    session, _ = rt.load(target, job["threads"])
    x = np.load(job["input_npy"]) if job.get("input_npy") else None
    if x is None or tuple(x.shape) != tuple(session.input_shape[1:]):
        x = np.random.default_rng(0).random(tuple(session.input_shape[1:]), dtype=np.float32)
    session.set_input(x)
    raw_invoke = session.interpreter.invoke  # the bare call, no wrapper
    for _ in range(max(job.get("warmup", 3), 3)):
        raw_invoke()
    rounds = int(job.get("overhead_rounds") or 12)
    calls = int(job.get("overhead_calls") or 10)
    harness: list[float] = []
    bare: list[float] = []
    for _ in range(rounds):
        harness.extend(time_calls(session.invoke, runs=calls).tolist())
        bare.extend(bare_loop(raw_invoke, calls))
    # What the harness adds per call, measured without the model (immune to other processes' load):
    # the same timing loop around a no-op bound method, i.e. the clock reads, the append and one call.
    noop = _Noop().invoke
    timer_ms = min(float(np.median(time_calls(noop, runs=5000))) for _ in range(3))
    h, b = float(np.median(harness)), float(np.median(bare))
    hm, bm = float(np.mean(harness)), float(np.mean(bare))
    return {"status": "ok", "error": None, "rounds": rounds, "harness_p50_ms": round(h, 6),
            "bare_p50_ms": round(b, 6), "diff_pct": round((h - b) / b * 100.0, 2) if b > 0 else None,
            "harness_mean_ms": round(hm, 6), "bare_mean_ms": round(bm, 6),
            "diff_mean_pct": round((hm - bm) / bm * 100.0, 2) if bm > 0 else None,
            "timer_cost_us": round(timer_ms * 1000.0, 3),
            "timer_cost_pct": round(timer_ms / b * 100.0, 4) if b > 0 else None}


class _Noop:
    def invoke(self) -> None:
        return None
