"""The timing harness and the fresh-process isolation every measurement runs in.

Each job (latency, end-to-end or overhead of one model x runtime x threads) runs in its own
``python -m leukedge.benchmarks.runner JOB.json OUT.json`` process:

* memory numbers do not contaminate each other (peak RSS is per process);
* ``OPENBLAS_NUM_THREADS=1`` is set in the child's environment before numpy loads (numpy's
  BLAS threads otherwise compete with the interpreter's and double LiteRT latency);
* a runtime that raises, aborts or segfaults becomes a row with ``status: "error"`` and the
  message instead of taking the benchmark down.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .device import OthersCPU, load_average, proc_kib
from .runtimes import Target, get_runtime

log = logging.getLogger(__name__)

#: Environment for measuring processes.
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "TF_CPP_MIN_LOG_LEVEL": "2", "LEUKEDGE_PROGRESS": "0"}
MIN_RUNS = 5
MAX_RUNS = 5000


# ----- the harness (runs inside the child) ----------------------------------------------------
def time_calls(fn, runs: int | None = None, min_time: float | None = None,
               min_runs: int = MIN_RUNS, max_runs: int = MAX_RUNS) -> np.ndarray:
    """Call ``fn()`` repeatedly, timing each call; returns milliseconds per call.

    Args:
        runs: a fixed number of calls (wins over ``min_time``).
        min_time: keep calling until this many seconds have passed (and ``min_runs`` calls).
    """
    if not runs and not min_time:
        runs = 50
    clock = time.perf_counter
    ts: list[float] = []
    append = ts.append
    start = clock()
    while True:
        t0 = clock()
        fn()
        append(clock() - t0)
        n = len(ts)
        if runs:
            if n >= runs:
                break
        elif (n >= min_runs and clock() - start >= min_time) or n >= max_runs:
            break
    return np.asarray(ts, np.float64) * 1000.0


def latency_stats(ms: np.ndarray) -> dict:
    """p50/p90/p99, mean, std, min, max of per-call milliseconds."""
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50": round(float(p50), 4), "p90": round(float(p90), 4), "p99": round(float(p99), 4),
            "mean": round(float(ms.mean()), 4), "std": round(float(ms.std()), 4),
            "min": round(float(ms.min()), 4), "max": round(float(ms.max()), 4)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB).

    Linux: ``VmHWM`` from /proc/self/status, the high-water mark of this program's own
    memory. Not ``ru_maxrss``: the kernel carries the parent's high-water mark over
    fork + exec into it, so a child of a big parent would report the parent's peak.
    Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    kib = proc_kib("/proc/self/status", "VmHWM:")
    if kib is not None:
        return round(kib / 1024, 2)
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(r / (1024 * 1024) if sys.platform == "darwin" else r / 1024, 2)


def one_line(exc: BaseException) -> str:
    """An exception as one line (the LeukEdge one-liner when it is one)."""
    text = getattr(exc, "one_line", None)
    msg = text() if callable(text) else (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {msg}" if not callable(text) else msg


def measure_latency(job: dict) -> dict:
    """Load a model, warm up, time batch-1 invocations. Runs in a fresh process."""
    rt = get_runtime(job["runtime"])
    target = Target.from_dict(job["target"])
    rt.preload()
    x = np.load(job["input_npy"]) if job.get("input_npy") else None
    baseline = peak_rss_mb()
    session, load_ms = rt.load(target, job["threads"])
    if x is None or tuple(x.shape) != tuple(session.input_shape[1:]):
        x = _synthetic_input(session.input_shape)
    session.set_input(x)
    for _ in range(job["warmup"]):
        session.invoke()
    others = OthersCPU().start()
    ms = time_calls(session.invoke, job.get("runs"), job.get("min_time"))
    busy = others.stop()
    peak = peak_rss_mb()
    st = latency_stats(ms)
    return {"status": "ok", "error": None, "load_ms": round(load_ms, 2), "runs": int(len(ms)),
            "latency_ms": st, "throughput_ips": round(1000.0 / st["mean"], 2),
            "memory": {"baseline_rss_mb": baseline, "peak_rss_mb": peak, "delta_mb": round(peak - baseline, 2)},
            "macs": session.macs, "cpu_others_pct": busy, "load_avg_1m": (load_average() or [None])[0],
            "input_shape": [int(d) for d in session.input_shape], "input_dtype": session.input_dtype,
            "note": session.note, "samples_ms": [round(float(v), 4) for v in ms]}


def _synthetic_input(shape) -> np.ndarray:
    """A fixed random input in [0, 1] when no real smear was given (or its size does not fit)."""
    return np.random.default_rng(0).random(tuple(int(d) for d in shape[1:]), dtype=np.float32)


TASKS = {"latency": "leukedge.benchmarks.runner:measure_latency",
         "e2e": "leukedge.benchmarks.e2e:measure_e2e",
         "overhead": "leukedge.benchmarks.overhead:measure_overhead"}


def worker_main(job_path: str, out_path: str) -> int:
    """Child entry point: run one job, write its result JSON (errors included)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    job = json.loads(Path(job_path).read_text())
    try:
        # a registered task name, or any "module:function" taking the job (pluggable measurements)
        mod, fn = TASKS.get(job["task"], job["task"]).split(":")
        result = getattr(importlib.import_module(mod), fn)(job)
    except Exception as exc:  # noqa: BLE001 - any runtime failure becomes an error row
        log.debug("job failed", exc_info=True)
        result = {"status": "error", "error": one_line(exc)}
    Path(out_path).write_text(json.dumps(result, default=_json_default))
    return 0


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


# ----- isolation (runs in the parent) ---------------------------------------------------------
def run_isolated(job: dict, timeout: float = 900.0) -> dict:
    """Run ``job`` in a fresh Python process; never raises for a failing runtime.

    Returns:
        The job's result dict, or ``{"status": "error", "error": ...}`` when the process
        crashed (signal), timed out or wrote nothing.
    """
    env = dict(os.environ, **CHILD_ENV)
    with tempfile.TemporaryDirectory(prefix="leukedge-bench-") as tmp:
        jp, op = Path(tmp, "job.json"), Path(tmp, "out.json")
        jp.write_text(json.dumps(job))
        cmd = [sys.executable, "-m", "leukedge.benchmarks.runner", str(jp), str(op)]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": "error", "error": f"timed out after {timeout:.0f} s"}
        if op.exists():
            try:
                return json.loads(op.read_text())
            except json.JSONDecodeError:
                pass
        if proc.returncode < 0:
            try:
                sig = signal.Signals(-proc.returncode).name
            except ValueError:
                sig = str(-proc.returncode)
            msg = f"runtime crashed ({sig})"
        else:
            msg = f"measuring process exited with code {proc.returncode}"
        tail = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()][-1:]
        if tail:
            msg += f": {tail[0][:300]}"
        return {"status": "error", "error": msg}


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1], sys.argv[2]))
