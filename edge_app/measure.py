"""Measure the app's two targets on this machine (a measurement, not a test).

* **Latency**: from a field image being handed to the screening session ("Add this field"
  touched) to the frame that shows the field's result and heatmap (the window's ``on_flip``
  after the sample view was filled, once the renderer has drawn it: ``glFinish``; before
  2026-12-06 the time was taken before the software renderer had drawn the frame), in the real app driven offscreen by
  :mod:`leukedge.edge_app.autopilot` (a new sample every 5 fields); the field is then saved
  (images fsynced, SQLite commit) on the records thread: "handed -> saved" is reported too.
  Plus the inference path per stage (decode, quality, preprocess, inference, heatmap, OOD)
  without the UI.
* **Cold start**: from spawning a fresh ``python`` process to the first frame on screen, and
  to the model being loaded and verified ("ready"), with the stages between (imports done,
  app built, first frame, model ready).

Every stage is reported as wall time and as CPU time (``*_cpu``: the main thread's, the
worker's or the whole process's ``thread_time``/``process_time``). On a machine busy with
other jobs the wall times grow with the waiting; the CPU times show the work itself, which
is what an idle machine's wall time is made of.

Usage::

    SDL_VIDEODRIVER=offscreen python -m leukedge.edge_app.measure --model models/<name> \\
        --images ../shared/data/aria-all/Early/*.jpg --json reports/app-measure.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from leukedge.fileio import atomic_write_text

from .inference import Screener


class AppRunError(RuntimeError):
    """The app, driven by the autopilot, exited with an error (its last stderr line)."""


def _run(args: list[str], timeout: float) -> None:
    """Run the autopilot; a failure raises with the app's own error, not just an exit status."""
    proc = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[INFO")]
        raise AppRunError(f"the app exited with status {proc.returncode}: {lines[-1] if lines else 'no error output'}")


def _env():
    return {**os.environ, "SDL_VIDEODRIVER": os.environ.get("SDL_VIDEODRIVER", "offscreen"),
            "KIVY_NO_ARGS": "1", "KIVY_NO_CONFIG": "1",
            "KIVY_NO_FILELOG": "1", "KIVY_LOG_MODE": "PYTHON", "OPENBLAS_NUM_THREADS": "1"}


def _stats(v) -> dict:
    a = np.asarray(v, float)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "min": float(a.min()), "max": float(a.max())}


STAGES = ("imported", "built", "first_frame", "model_ready")


def cold_start(model, runs: int = 3, threads=None) -> dict:
    first, ready = [], []
    wall, main_cpu, proc_cpu = ({k: [] for k in STAGES} for _ in range(3))
    imported = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.time()
            args = [sys.executable, "-m", "leukedge.edge_app.autopilot", "startup", "--model", str(model),
                    "--db", f"{d}/h.sqlite3", "--out", f"{d}/r.json"]
            if threads:
                args += ["--threads", str(threads)]
            _run(args, 120)
            r = json.loads(Path(d, "r.json").read_text())
            first.append((r["first_frame_unix"] - t0) * 1000)
            ready.append((r["model_loaded_unix"] - t0) * 1000)
            for k, m in r.get("marks", {}).items():
                if k in wall:
                    wall[k].append((m["unix"] - t0) * 1000)
                    main_cpu[k].append(m["main_cpu_s"] * 1000)
                    proc_cpu[k].append(m["process_cpu_s"] * 1000)
            imported = r.get("imported_at_first_frame", imported)
    return {"first_frame_ms": _stats(first), "model_ready_ms": _stats(ready),
            "stages_wall_ms": {k: _stats(v) for k, v in wall.items()},
            "stages_main_thread_cpu_ms": {k: _stats(v) for k, v in main_cpu.items()},
            "stages_process_cpu_ms": {k: _stats(v) for k, v in proc_cpu.items()},
            "imported_at_first_frame": imported}


def ui_latency(model, images, repeat: int = 2, threads=None) -> dict:
    with tempfile.TemporaryDirectory() as d:
        chooser = Path(d, "images")
        chooser.mkdir()
        links = []
        for i, img in enumerate(images):  # a small folder, so the file chooser lists quickly
            link = chooser / f"{i:03d}{Path(img).suffix}"
            link.symlink_to(Path(img).resolve())
            links.append(str(link))
        args = [sys.executable, "-m", "leukedge.edge_app.autopilot", "latency", "--model", str(model),
                "--db", f"{d}/h.sqlite3", "--out", f"{d}/r.json", "--repeat", str(repeat), "--timeout", "600",
                "--images", *links]
        if threads:
            args += ["--threads", str(threads)]
        _run(args, 900)
        r = json.loads(Path(d, "r.json").read_text())
    lat = r["latencies_ms"]
    marks = r.get("marks", {})
    per_field = None
    if "model_ready" in marks and "finish" in marks and lat:    # every thread's CPU (renderer included)
        per_field = (marks["finish"]["process_cpu_s"] - marks["model_ready"]["process_cpu_s"]) * 1000 / len(lat)
    path = r.get("inference_path_ms", [])
    saved = r.get("saved_ms", [])
    return {"image_to_result_on_screen_ms": _stats(lat[1:] if len(lat) > 1 else lat), "first_ms": lat[:1],
            "image_to_field_saved_ms": _stats(saved[1:] if len(saved) > 1 else saved),
            "inference_path_in_app_ms": _stats(path[1:] if len(path) > 1 else path), "all_ms": lat,
            "parts_ms": {k: _stats([p[k] for p in r.get("latency_parts_ms", [])[1:] if k in p])
                         for k in ("worker", "to_main_thread", "fill_and_draw", "worker_cpu", "fill_and_draw_cpu",
                                   "fill_and_draw_process_cpu")},
            "save_cpu_ms": _stats(r.get("save_cpu_ms", [])[1:]),
            "process_cpu_per_field_ms": per_field}


def inference_path(model, images, threads=None) -> dict:
    s = Screener(model, num_threads=threads)
    per, cpu = {}, []
    for img in images:
        c0 = time.thread_time()
        res = s.screen_image(img)
        cpu.append((time.thread_time() - c0) * 1000)
        for k, v in res.timings.items():
            per.setdefault(k, []).append(v)
    return {"load_ms": s.load_ms, "stages_ms": {k: _stats(v) for k, v in per.items()},
            "calling_thread_cpu_ms": _stats(cpu),
            "model_file": s.release.model_path.name, "model_sha256": s.release.model_sha256}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Measure the app's latency and cold start.")
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", nargs="+", required=True)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    try:
        return _measure(args)
    except AppRunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _measure(args) -> int:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    out = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "python": platform.python_version(), "load_avg": list(os.getloadavg())},
           "model": str(args.model), "threads": args.threads, "n_images": len(args.images)}
    out["inference_path"] = inference_path(args.model, args.images, args.threads)
    out["ui"] = ui_latency(args.model, args.images, args.repeat, args.threads)
    out["cold_start"] = cold_start(args.model, args.cold_runs, args.threads)
    out["machine"]["load_avg_after"] = list(os.getloadavg())
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        atomic_write_text(args.json, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
