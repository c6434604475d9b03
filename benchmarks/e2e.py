"""End to end as a user feels it: image file -> probability + Grad-CAM overlay, timed per stage.

Stages (each timed per image, on real smears read from disk every time):

1. ``decode``: :func:`leukedge.imageio.load_image` (EXIF, colour handling).
2. ``preprocess``: :func:`leukedge.preprocess.preprocess_uint8` + :func:`~leukedge.preprocess.normalize`
   (exactly :func:`~leukedge.preprocess.preprocess`, split so the uint8 image is kept for the overlay).
3. ``inference``: :meth:`LiteRunner.run` (quantize input, invoke, dequantize outputs).
4. ``gradcam``: the model's ``cam`` output drawn over the preprocessed image by
   :func:`leukedge.heatmap.overlay`, the renderer the app uses (normalise to [0, 1] by the
   map's maximum, resize, OpenCV JET, blend); plus the decision.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from leukedge.heatmap import overlay
from leukedge.imageio import load_image
from leukedge.preprocess import PreprocessConfig, normalize, preprocess_uint8
from leukedge.runtime import LiteRunner
from leukedge.spec import ModelSpec
from leukedge.views import mean_over_views

from .device import OthersCPU

log = logging.getLogger(__name__)


def _stage(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "mean": None}
    arr = np.asarray(values)
    return {"p50": round(float(np.median(arr)), 3), "mean": round(float(arr.mean()), 3)}


def measure_e2e(job: dict) -> dict:
    """Time the four stages on ``job["images"]`` (cycled to ``job["e2e_runs"]``). Runs in a fresh process."""
    images = job.get("images") or []
    if not images:
        return {"status": "skipped", "error": "no images (pass --images DIR)", "images": 0,
                "stages_ms": None, "heatmap": False}
    target = job["target"]
    runner = LiteRunner(target["path"], num_threads=job["threads"], runtime=job["runtime"])
    if target.get("spec_path"):
        spec = ModelSpec.load(target["spec_path"])
        cfg = spec.preprocess
    else:
        spec = None
        cfg = PreprocessConfig(input_size=runner.input_shape[1])
    has_cam = "cam" in runner.outputs
    views = cfg.capture.views if cfg.capture is not None else 1
    n = max(int(job.get("e2e_runs") or 20), 1)
    warm = min(2, len(images))
    times: dict[str, list[float]] = {k: [] for k in ("decode", "preprocess", "inference", "gradcam", "total")}
    clock = time.perf_counter
    others = None
    for i in range(warm + n):
        if i == warm:
            others = OthersCPU().start()
        path = images[i % len(images)]
        t0 = clock()
        rgb = load_image(path)
        t1 = clock()
        u8 = preprocess_uint8(rgb, cfg)
        x = normalize(u8, cfg)
        t2 = clock()
        out = mean_over_views(runner.run, x, views)   # the spec's views, as the app screens
        t3 = clock()
        if has_cam:
            overlay(u8, out["cam"])
        prob = out["probability"]
        if spec is not None:
            spec.decide(spec.positive_probability(prob))
        t4 = clock()
        if i >= warm:
            for k, a, b in (("decode", t0, t1), ("preprocess", t1, t2), ("inference", t2, t3),
                            ("gradcam", t3, t4), ("total", t0, t4)):
                times[k].append((b - a) * 1000.0)
    busy = others.stop() if others else None
    stages = {k: _stage(v) for k, v in times.items()}
    if not has_cam:
        stages["gradcam"] = {"p50": None, "mean": None}
    return {"status": "ok", "error": None, "images": n, "stages_ms": stages, "heatmap": has_cam, "views": views,
            "cpu_others_pct": busy, "distinct_images": len(images)}
