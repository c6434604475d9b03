"""Plan and run a benchmark: one isolated job per row, assemble the JSON.

:func:`run_benchmark` is what ``leukedge bench`` calls. It finds the models (``.tflite``
files, release folders ``models/<name>``, run folders with ``best.h5``), runs every
(model x runtime x threads) latency job, the end-to-end and overhead jobs in fresh processes
(:func:`leukedge.benchmarks.runner.run_isolated`), adds file facts (sha256, size, gzip size,
MACs) and the accuracy from the release's reports, and returns a document that
:func:`leukedge.benchmarks.schema.validate` accepts.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leukedge import __version__
from leukedge.portable import portable_dir
from leukedge.preprocess import PreprocessConfig, preprocess_file
from leukedge.spec import ModelSpec

from . import cost
from .device import available_cores, device_facts, load_average
from .runner import CHILD_ENV, latency_stats, run_isolated
from .runtimes import REGISTRY, Target, default_runtimes, get_runtime
from .schema import SCHEMA_NAME, SCHEMA_VERSION
from .targets import card_check, discover, file_facts, find_images, find_metric

log = logging.getLogger(__name__)

UNDER_LOAD_PCT = 10.0  # median CPU share taken by other processes above which timings are flagged


@dataclass
class BenchConfig:
    """What to measure and how (``leukedge bench`` options).

    Attributes:
        models: ``.tflite`` files, release folders or run folders.
        runtimes: runtime names (None: LiteRT + those installed).
        threads: thread counts; ``0`` means all available cores.
        runs: fixed number of timed invocations per row (wins over ``min_time``).
        min_time: seconds of timed invocations per row.
        warmup: warm-up invocations.
        images: folder of smears for the input and the end-to-end timing (None: none).
        e2e, overhead, peak: also measure end to end, harness overhead, the matmul peak.
        rounds: repeat every latency job this many times round-robin and pool the samples
            (steadier ratios when other processes' load comes and goes).
        e2e_runs: images timed end to end.
        timeout: seconds allowed per job.
    """

    models: list[str]
    runtimes: list[str] | None = None
    threads: list[int] = field(default_factory=lambda: [1, 2, 0])
    runs: int | None = None
    min_time: float | None = 2.0
    warmup: int = 5
    images: str | None = None
    quick: bool = False
    e2e: bool = True
    overhead: bool = True
    peak: bool = True
    e2e_runs: int = 30
    overhead_rounds: int = 12
    rounds: int = 1
    timeout: float = 900.0

    def resolved_threads(self) -> list[int]:
        cores = available_cores()
        return sorted({cores if t in (0, None) else min(int(t), cores) for t in self.threads})


# ----- inputs ------------------------------------------------------------------------------------
def _input_for(target: Target, image: str | None, tmp: Path, cache: dict) -> str | None:
    """A preprocessed real smear for ``target`` saved as .npy (None: the worker uses random input)."""
    if not image:
        return None

    if target.spec_path:
        cfg = ModelSpec.load(target.spec_path).preprocess
    elif target.path and target.format == "tflite":
        cfg = PreprocessConfig(input_size=int(cost.input_shape_tflite(target.path)[1]))
    else:
        return None
    key = json.dumps(cfg.__dict__, sort_keys=True)
    if key not in cache:
        out = tmp / f"input{len(cache)}.npy"
        np.save(out, preprocess_file(image, cfg))
        cache[key] = str(out)
    return cache[key]


# ----- the run -----------------------------------------------------------------------------------
def _row_base(t: Target, rt_name: str, threads: int, facts: dict, cfg: BenchConfig) -> dict:
    rt = REGISTRY.get(rt_name)
    return {"model": t.model, "model_dir": t.model_dir, "file": t.file, "format": t.format, "variant": t.variant,
            "backbone": t.backbone, **facts, "runtime": rt_name, "runtime_version": rt.version() if rt else None,
            "threads": threads, "status": "error", "error": None, "load_ms": None, "warmup": cfg.warmup,
            "runs": 0, "latency_ms": None, "throughput_ips": None, "memory": None, "macs": facts.pop("macs", None),
            "gmacs_per_s": None, "efficiency_pct": None, "cpu_others_pct": None, "load_avg_1m": None,
            "metric": find_metric(t.model_dir, t.variant, t.file) if t.path else None,  # not for a rebuilt model
            "input_shape": None, "input_dtype": None}


def run_benchmark(cfg: BenchConfig) -> dict:
    """Measure everything ``cfg`` names; returns the result document (see :mod:`.schema`)."""
    runtimes = cfg.runtimes or default_runtimes()
    for r in runtimes:
        get_runtime(r)  # unknown names fail early, with "did you mean"
    threads = cfg.resolved_threads()
    targets: list[Target] = []
    for m in cfg.models:
        targets += discover(m, with_keras="keras" in runtimes)
    images = find_images(cfg.images)
    device = device_facts()
    load_start = load_average()
    jobs = [(t, r, n) for t in targets for r in runtimes
            if (REGISTRY[r].kind == "keras") == (t.format == "keras") for n in threads]
    tfl_rt = next((r for r in runtimes if REGISTRY[r].kind == "tflite" and REGISTRY[r].unavailable() is None), None)
    extra = [t for t in targets if t.format == "tflite"] if tfl_rt else []
    total = len(jobs) * cfg.rounds + (len(extra) if cfg.e2e else 0) + (len(extra) if cfg.overhead else 0)
    log.info("benchmark: %d model file(s), runtimes %s, threads %s: %d jobs", len(targets), ",".join(runtimes),
             ",".join(map(str, threads)), total)
    peak = cost.measure_peak(sorted({1, *threads})) if cfg.peak else None
    facts_cache: dict[str, dict] = {}
    results, e2e, overhead = [], [], []
    t_start = time.perf_counter()
    done = 0

    def progress(label: str, summary: str) -> None:
        nonlocal done
        done += 1
        el = time.perf_counter() - t_start
        eta = el / done * (total - done)
        log.info("[%d/%d] %s: %s | %.0f s elapsed, ETA %.0f s", done, total, label, summary, el, eta)

    with tempfile.TemporaryDirectory(prefix="leukedge-bench-in-") as tmpdir:
        tmp, in_cache = Path(tmpdir), {}
        base_job = {"warmup": cfg.warmup, "runs": cfg.runs, "min_time": None if cfg.runs else cfg.min_time}
        rows: list[dict] = []
        samples: list[list[float]] = []
        rounds_res: list[list[dict]] = []
        for t, r, n in jobs:
            key = t.path or f"{t.model_dir}:rebuilt"
            if key not in facts_cache:
                facts_cache[key] = file_facts(t.path)
                if t.format == "tflite":
                    try:
                        facts_cache[key]["macs"] = cost.count_macs_tflite(t.path)["macs"]
                    except Exception as exc:  # noqa: BLE001 - a corrupt file is reported by its row
                        log.debug("cannot count MACs of %s: %s", t.path, exc)
            row = _row_base(t, r, n, dict(facts_cache[key]), cfg)
            row["sha256_matches_card"] = card_check(t, row["sha256"])
            why = REGISTRY[r].unavailable()
            if row["sha256_matches_card"] is False:
                row.update(error=f"{t.file}: sha256 differs from the model card (card.json); "
                                 "the file was modified or corrupted")
            elif why:
                row.update(error=why)
            rows.append(row)
            samples.append([])
            rounds_res.append([])
        for rnd in range(cfg.rounds):  # round-robin: load that comes and goes hits every row alike
            for i, (t, r, n) in enumerate(jobs):
                row = rows[i]
                if row["error"]:
                    if rnd == 0:
                        progress(f"{t.model} {t.variant} {r} threads={n}", f"error: {row['error']}")
                    else:
                        done += 1
                    continue
                res = run_isolated({**base_job, "task": "latency", "target": t.to_dict(), "runtime": r, "threads": n,
                                    "input_npy": _safe_input(t, images, tmp, in_cache)}, cfg.timeout)
                if res.get("status") != "ok":
                    row.update(status=res.get("status", "error"), error=res.get("error") or "failed")
                    progress(f"{t.model} {t.variant} {r} threads={n}", f"{row['status']}: {row['error']}")
                    continue
                samples[i].extend(res.pop("samples_ms", []))
                rounds_res[i].append(res)
                st = res["latency_ms"]
                progress(f"{t.model} {t.variant} {r} threads={n}" + (f" round {rnd + 1}" if cfg.rounds > 1 else ""),
                         f"p50 {st['p50']:.2f} ms, {1000.0 / st['mean']:.1f} img/s")
        for row, ms, res_list in zip(rows, samples, rounds_res):
            if row["error"] or not res_list:
                row["status"] = "error"
                results.append(row)
                continue
            _merge_rounds(row, res_list, np.asarray(ms, np.float64))
            if row["status"] == "ok":
                row["gmacs_per_s"], row["efficiency_pct"] = cost.achieved(row["macs"], row["latency_ms"]["p50"], peak,
                                                                           row["threads"])
            results.append(row)
        n_e2e = max(threads)
        for t in extra:
            mine = [r for r in results if r["file"] == t.file and r["model"] == t.model and r["runtime"] == tfl_rt]
            if mine and all(r["status"] != "ok" for r in mine):  # it did not load: its rows say why
                skip = {"model": t.model, "file": t.file, "runtime": tfl_rt, "threads": n_e2e, "status": "skipped",
                        "error": "the model failed in the latency run (see results)"}
                if cfg.e2e:
                    e2e.append({**skip, "images": 0, "stages_ms": None, "heatmap": False})
                if cfg.overhead:
                    overhead.append({**skip, "rounds": 0})
                done += int(cfg.e2e) + int(cfg.overhead)
                continue
            common = {"target": t.to_dict(), "runtime": tfl_rt, "threads": n_e2e, "warmup": cfg.warmup,
                      "input_npy": _safe_input(t, images, tmp, in_cache)}
            if cfg.e2e:
                res = run_isolated({**common, "task": "e2e", "images": images, "e2e_runs": cfg.e2e_runs}, cfg.timeout)
                res.pop("distinct_images", None)
                e2e.append({"model": t.model, "file": t.file, "runtime": tfl_rt, "threads": n_e2e,
                            "images": 0, "stages_ms": None, "heatmap": False, **res})
                st = e2e[-1]
                progress(f"{t.model} {t.variant} end-to-end", f"total p50 {st['stages_ms']['total']['p50']:.1f} ms"
                         if st["status"] == "ok" else f"{st['status']}: {st['error']}")
            if cfg.overhead:
                res = run_isolated({**common, "task": "overhead", "overhead_rounds": cfg.overhead_rounds,
                                    "overhead_calls": 5 if cfg.quick else 10}, cfg.timeout)
                overhead.append({"model": t.model, "file": t.file, "runtime": tfl_rt, "threads": n_e2e, "rounds": 0,
                                 **res})
                o = overhead[-1]
                progress(f"{t.model} {t.variant} harness overhead", f"{o['diff_pct']:+.2f}% vs bare invoke"
                         if o["status"] == "ok" else f"{o['status']}: {o['error']}")
    busy = [r["cpu_others_pct"] for r in results + e2e if r.get("cpu_others_pct") is not None]
    busy_med = float(np.median(busy)) if busy else None
    return {
        "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "leukedge_version": __version__, "device": device,
        "conditions": {"openblas_num_threads": CHILD_ENV["OPENBLAS_NUM_THREADS"], "load_avg_start": load_start,
                       "load_avg_end": load_average(), "under_load": bool(busy_med is not None and busy_med >= UNDER_LOAD_PCT),
                       "cpu_others_pct_median": busy_med, "quick": cfg.quick, "runs": cfg.runs,
                       "min_time_s": None if cfg.runs else cfg.min_time, "warmup": cfg.warmup, "rounds": cfg.rounds,
                       "input_source": portable_dir(images[0]) if images else "random"},
        "peak": peak, "results": results, "e2e": e2e, "overhead": overhead,
    }


def _merge_rounds(row: dict, res_list: list[dict], ms: np.ndarray) -> None:
    """Fill ``row`` from one or more rounds of one latency job: samples pooled, stats recomputed."""
    first = dict(res_list[0])
    note = first.pop("note", None)
    if row["macs"] is not None:
        first.pop("macs", None)
    row.update(first)
    if note:
        row["note"] = note
    if len(ms):
        st = latency_stats(ms)
        row.update(latency_ms=st, runs=int(len(ms)), throughput_ips=round(1000.0 / st["mean"], 2))
    if len(res_list) > 1:
        row["load_ms"] = round(float(np.median([r["load_ms"] for r in res_list])), 2)
        row["memory"] = max((r["memory"] for r in res_list), key=lambda m: m["delta_mb"])
        busy = [r["cpu_others_pct"] for r in res_list if r.get("cpu_others_pct") is not None]
        row["cpu_others_pct"] = round(float(np.median(busy)), 1) if busy else None
        row["load_avg_1m"] = res_list[-1].get("load_avg_1m")


def _safe_input(t: Target, images: list[str], tmp: Path, cache: dict) -> str | None:
    try:
        return _input_for(t, images[0] if images else None, tmp, cache)
    except Exception as exc:  # noqa: BLE001 - an unreadable model is reported by its own row
        log.debug("no real input for %s: %s", t.file, exc)
        return None


#: Device facts that must match for a new result to replace a release's earlier record.
SAME_DEVICE_KEYS = ("arch", "cpu_model", "isa_flags", "cores_available", "board")


def _record_path(folder: Path, stem: str, doc: dict) -> Path:
    """``folder/stem.json``, unless that file is a record from another device (or unreadable):
    then ``folder/stem-<created>.json``, so an earlier machine's numbers are never overwritten
    (device ids are short and two machines can share one)."""
    path = folder / f"{stem}.json"
    if not path.exists():
        return path
    try:
        old = json.loads(path.read_text())["device"]
        same = all(old.get(k) == doc["device"].get(k) for k in SAME_DEVICE_KEYS)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        same = False
    if same:
        return path
    stamp = "".join(ch for ch in str(doc.get("created", ""))[:16] if ch.isalnum()) or "new"
    new = folder / f"{stem}-{stamp}.json"
    log.warning("%s holds a record from another device (or is unreadable): kept; writing %s", path, new.name)
    return new


def release_files(doc: dict) -> dict[Path, dict]:
    """Per release folder and runtime: ``models/<name>/bench/<device-id>-<runtime>.json`` -> sub-document."""
    out: dict[Path, dict] = {}
    paths: dict[tuple, Path] = {}
    dev = doc["device"]["id"]
    for row in doc["results"]:
        d = row.get("model_dir")
        if not d or not any(Path(d).glob("*.tflite")):
            continue
        key = (d, row["runtime"])
        if key not in paths:
            paths[key] = _record_path(Path(d) / "bench", f"{dev}-{row['runtime']}", doc)
        path = paths[key]
        sub = out.setdefault(path, {**doc, "results": [], "e2e": [], "overhead": []})
        sub["results"].append(row)
        for key in ("e2e", "overhead"):
            sub[key] += [x for x in doc[key] if x["model"] == row["model"] and x["file"] == row["file"]
                         and x["runtime"] == row["runtime"] and x not in sub[key]]
    return out
