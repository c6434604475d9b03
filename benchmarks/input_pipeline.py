"""Benchmark: is the tf.data input pipeline fast enough to feed DenseNet201 training on this CPU?

Measures images/s of decode + preprocess (+ augmentation) through
:func:`leukedge.train.dataset.train_pipeline` in its first (uncached) and a cached epoch,
and of the DenseNet201 training step (whole network trainable, random init, batch 32),
then prints and writes JSON with the ratio pipeline / training step (> 1: the pipeline is
not the bottleneck). A benchmark, not a test: run it on an otherwise idle machine.

    python -m leukedge.benchmarks.input_pipeline --split splits/aria-all.split.csv --json reports/bench/input_pipeline.json
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from leukedge.data import resolve_data_dir  # noqa: E402
from leukedge.split import read_manifest, rows_of  # noqa: E402
from leukedge.train.config import TrainConfig  # noqa: E402
from leukedge.train.dataset import spec_for, train_pipeline  # noqa: E402
from leukedge.train.model import build_classifier  # noqa: E402
from leukedge.train.trainer import setup_runtime  # noqa: E402


def pipeline_rate(rows, spec, cfg, batch: int) -> dict:
    """Images/s of the training pipeline: first epoch (decode + preprocess + augment) and cached."""
    pipe = train_pipeline(rows, spec, cfg, batch_size=batch)
    it = iter(pipe.dataset)
    steps = math.ceil(len(rows) / batch)
    out = {}
    for epoch in ("first_epoch_uncached", "cached_epoch"):
        t0 = time.perf_counter()
        n = 0
        for _ in range(steps):
            x, _ = next(it)
            n += int(x.shape[0])
        out[epoch] = {"images": n, "seconds": round(time.perf_counter() - t0, 3),
                      "images_per_s": round(n / (time.perf_counter() - t0), 2)}
    return out


def train_step_rate(spec, batch: int, steps: int) -> dict:
    """Images/s of DenseNet201 ``train_on_batch`` (untrained weights, whole net trainable)."""
    import tf_keras as keras

    model = build_classifier(spec, weights=None)
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    s = spec.preprocess.input_size
    rng = np.random.default_rng(0)
    x = rng.random((batch, s, s, 3), dtype=np.float32)
    y = (rng.random((batch, 1)) > 0.5).astype(np.float32)
    model.train_on_batch(x, y)  # warm-up: graph tracing
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    dt = time.perf_counter() - t0
    return {"backbone": spec.backbone, "batch": batch, "steps": steps, "seconds": round(dt, 2),
            "images_per_s": round(batch * steps / dt, 2)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="data folder (default ../shared/data/aria-all)")
    ap.add_argument("--split", default="splits/aria-all.split.csv")
    ap.add_argument("--images", type=int, default=320, help="training images to push through the pipeline")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3, help="timed DenseNet201 training steps")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args(argv)

    cfg = TrainConfig(backbone="densenet201", weights="none", input_size=args.size)
    setup_runtime(cfg)
    rows = rows_of(read_manifest(args.split, resolve_data_dir(args.data)), "train")
    rows = rows[:: max(1, len(rows) // args.images)][: args.images]  # spread over all classes
    spec = spec_for(cfg, sorted({r["class"] for r in rows}))
    pipe = pipeline_rate(rows, spec, cfg, args.batch)
    step = train_step_rate(spec, args.batch, args.steps)
    result = {
        "benchmark": "input_pipeline", "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "input_size": args.size, "preprocess": spec.preprocess.steps(), "augment": vars(cfg.augment),
        "pipeline": pipe, "densenet201_train_step": step,
        "ratio_first_epoch": round(pipe["first_epoch_uncached"]["images_per_s"] / step["images_per_s"], 2),
        "ratio_cached": round(pipe["cached_epoch"]["images_per_s"] / step["images_per_s"], 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "note": "ratio > 1 means the input pipeline outpaces the training step (it is not the bottleneck)",
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
