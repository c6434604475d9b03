"""Cost model: multiply-accumulates per inference and the machine's measured peak.

MACs are counted from the ``.tflite`` flatbuffer itself (parsed with the schema module that
ships with LiteRT, or TensorFlow's: :mod:`leukedge.tflite_graph`), so no interpreter and no TensorFlow is needed:

* ``CONV_2D``: out_h * out_w * out_c * k_h * k_w * in_c_per_group (the filter's last dim)
* ``DEPTHWISE_CONV_2D``: out_h * out_w * out_c * k_h * k_w
* ``FULLY_CONNECTED``: rows * out_units * in_units
* ``TRANSPOSE_CONV``: in_h * in_w * in_c * k_h * k_w * out_c
* ``BATCH_MATMUL``: batch * m * n * k
* everything else (add, pooling, activations, concat) is counted as negligible.

The peak is a float32 numpy matrix multiply (OpenBLAS/MKL) at a given number of BLAS
threads, reported in GMAC/s (GFLOP/s / 2); efficiency at N threads is measured against
N x the single-thread peak (see :func:`peak_at`). An int8 model's MACs can run faster than that
float peak on cores with int8 dot-product instructions (VNNI, Arm dotprod), so an int8
efficiency above 100% is possible and not an error.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from leukedge.tflite_graph import opcode_names, read_root, tensor_shape

log = logging.getLogger(__name__)

PROBE_SIZE = 512
PROBE = (f"numpy float32 matmul {PROBE_SIZE}x{PROBE_SIZE}, best of >= 10 calls over >= 1 s, "
         "OPENBLAS_NUM_THREADS=threads, one process per thread count")


def count_macs_tflite(path: str | os.PathLike) -> dict:
    """MACs of one inference of a ``.tflite`` file (main subgraph).

    Returns:
        ``{"macs": int, "by_op": {op_name: macs}, "ops": n_operators}``.
    """
    model = read_root(Path(path).read_bytes())
    codes = opcode_names(model)
    sg = model.Subgraphs(0)
    by_op: dict[str, int] = {}
    total = 0
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        name = codes[op.OpcodeIndex()]
        ins = [sg.Tensors(j) if j >= 0 else None for j in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [sg.Tensors(j) for j in op.OutputsAsNumpy()] if op.OutputsLength() else []
        macs = _op_macs(name, ins, outs)
        if macs:
            by_op[name] = by_op.get(name, 0) + macs
            total += macs
    return {"macs": int(total), "by_op": by_op, "ops": int(sg.OperatorsLength())}


def input_shape_tflite(path: str | os.PathLike) -> tuple[int, ...]:
    """Shape of the first input of the main subgraph, read from the flatbuffer (no interpreter)."""
    sg = read_root(Path(path).read_bytes()).Subgraphs(0)
    return tensor_shape(sg.Tensors(int(sg.InputsAsNumpy()[0])))


def _op_macs(name: str, ins: list, outs: list) -> int:
    try:
        if name == "CONV_2D":
            _, oh, ow, oc = tensor_shape(outs[0])
            _, kh, kw, ic = tensor_shape(ins[1])
            return oh * ow * oc * kh * kw * ic
        if name == "DEPTHWISE_CONV_2D":
            _, oh, ow, oc = tensor_shape(outs[0])
            _, kh, kw, _ = tensor_shape(ins[1])
            return oh * ow * oc * kh * kw
        if name == "FULLY_CONNECTED":
            out_units, in_units = tensor_shape(ins[1])
            rows = int(np.prod(tensor_shape(outs[0]))) // max(out_units, 1)
            return rows * out_units * in_units
        if name == "TRANSPOSE_CONV":
            _, kh, kw, _ = tensor_shape(ins[1])  # (out_c, kh, kw, in_c)
            _, ih, iw, ic = tensor_shape(ins[2])
            oc = tensor_shape(ins[1])[0]
            return ih * iw * ic * kh * kw * oc
        if name == "BATCH_MATMUL":
            a, o = tensor_shape(ins[0]), tensor_shape(outs[0])
            k = a[-1]
            return int(np.prod(o)) * k
    except (ValueError, IndexError, AttributeError):
        return 0
    return 0


def count_macs_keras(model) -> int:
    """MACs of a tf_keras model at batch 1 (Conv2D, DepthwiseConv2D, Dense; others negligible)."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        try:
            out = layer.output_shape
        except AttributeError:
            continue
        if isinstance(out, list):
            out = out[0]
        if kind == "Conv2D":
            kh, kw, ic, oc = layer.kernel.shape
            total += int(out[1]) * int(out[2]) * int(oc) * int(kh) * int(kw) * int(ic)
        elif kind == "DepthwiseConv2D":
            kh, kw, _ic, _m = layer.depthwise_kernel.shape
            total += int(out[1]) * int(out[2]) * int(out[3]) * int(kh) * int(kw)
        elif kind == "Dense":
            i, o = layer.kernel.shape
            rows = int(np.prod([d for d in out[1:-1] if d])) if len(out) > 2 else 1
            total += rows * int(i) * int(o)
    return int(total)


def matmul_gmacs(n: int = PROBE_SIZE, repeats: int = 10, min_time: float = 1.0) -> float:
    """Best float32 ``n x n`` matmul speed of this process's numpy, in GMAC/s.

    The best call (not the mean) is the peak: calls slowed by other processes do not count.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up (thread pool start, page faults)
    best = float("inf")
    start, calls = time.perf_counter(), 0
    while calls < repeats or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
        calls += 1
    return n ** 3 / best / 1e9


def measure_peak(threads: list[int], timeout: float = 120.0) -> dict:
    """The ``peak`` object: matmul GMAC/s at each BLAS thread count, each in a fresh process.

    BLAS reads its thread count only at start-up, hence one subprocess per count.
    """
    out: dict[str, float | None] = {}
    for t in sorted(set(threads)):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(t), OMP_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t))
        code = "from leukedge.benchmarks.cost import matmul_gmacs; print(matmul_gmacs())"
        try:
            proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
            out[str(t)] = round(float(proc.stdout.strip().splitlines()[-1]), 2) if proc.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
            log.warning("peak probe at %d threads failed: %s", t, exc)
            out[str(t)] = None
    return {"probe": PROBE, "gmacs_by_threads": out}


def peak_at(peak: dict | None, threads: int) -> float | None:
    """The peak GMAC/s efficiency is measured against at ``threads``: ``threads`` x the
    single-thread probe (linear scaling, the usual per-core-peak x cores), or the measured
    multi-thread probe when that is higher. A multi-thread BLAS probe collapses when another
    process holds a core, so it alone would make efficiencies meaningless on a shared machine.
    """
    by = (peak or {}).get("gmacs_by_threads", {})
    one = by.get("1")
    cands = [v for v in (one * threads if one else None, by.get(str(threads))) if v]
    return max(cands) if cands else None


def achieved(macs: int | None, p50_ms: float | None, peak: dict | None, threads: int) -> tuple[float | None, float | None]:
    """(achieved GMAC/s at the p50 latency, efficiency % of :func:`peak_at` ``threads``)."""
    if not macs or not p50_ms:
        return None, None
    g = macs / (p50_ms / 1000.0) / 1e9
    pk = peak_at(peak, threads)
    return round(g, 2), (round(g / pk * 100.0, 1) if pk else None)


if __name__ == "__main__":  # python -m leukedge.benchmarks.cost MODEL.tflite
    for p in sys.argv[1:]:
        print(p, json.dumps(count_macs_tflite(p)))
