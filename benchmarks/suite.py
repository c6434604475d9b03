"""Plan and run a benchmark: discover models, one isolated job per row, assemble the JSON.

:func:`run_benchmark` is what ``leukedge bench`` calls. It finds the models (``.tflite``
files, release folders ``models/<name>``, run folders with ``best.h5``), runs every
(model x runtime x threads) latency job, the end-to-end and overhead jobs in fresh processes
(:func:`leukedge.benchmarks.runner.run_isolated`), adds file facts (sha256, size, gzip size,
MACs) and the accuracy from the release's reports, and returns a document that
:func:`leukedge.benchmarks.schema.validate` accepts.
"""
from __future__ import annotations

import datetime as _dt
import gzip
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leukedge import __version__
from leukedge.errors import ConfigError, ModelError
from leukedge.fileio import sha256_file

from . import cost
from .device import available_cores, device_facts, load_average
from .runner import CHILD_ENV, run_isolated
from .runtimes import REGISTRY, Target, default_runtimes, get_runtime
from .schema import SCHEMA_NAME, SCHEMA_VERSION

log = logging.getLogger(__name__)

KNOWN_VARIANTS = ("pruned-int8", "int8", "float32", "float16", "dynamic")
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
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
    timeout: float = 900.0

    def resolved_threads(self) -> list[int]:
        cores = available_cores()
        return sorted({cores if t in (0, None) else min(int(t), cores) for t in self.threads})


# ----- discovery --------------------------------------------------------------------------------
def _split_name(path: Path) -> tuple[str, str]:
    stem = path.name[: -len(".tflite")]
    for v in KNOWN_VARIANTS:
        if stem.endswith("." + v):
            return stem[: -len(v) - 1], v
    return stem, "tflite"


def _backbone(spec_path: Path | None) -> str | None:
    if spec_path and spec_path.exists():
        try:
            return json.loads(spec_path.read_text()).get("backbone")
        except (OSError, json.JSONDecodeError):
            return None
    return None


def _keras_source(folder: Path) -> Path | None:
    """The trained Keras model of a run folder (best.h5) or of a release (compress.json's source)."""
    if (folder / "best.h5").exists():
        return folder / "best.h5"
    record = _read_json(folder / "compress.json")
    src = Path(str(record.get("source"))) if isinstance(record, dict) and record.get("source") else None
    return src if src and src.suffix == ".h5" and src.exists() else None


def discover(arg: str, with_keras: bool) -> list[Target]:
    """Targets named by one MODEL argument.

    Raises:
        ModelError: the path does not exist or holds no model.
    """
    p = Path(arg)
    if not p.exists():
        raise ModelError(f"{arg}: no such file or folder", "name .tflite files or release folders (models/<name>)")
    if p.is_file():
        spec = p.parent / "spec.json"
        spec_path = str(spec) if spec.exists() else None
        if p.suffix == ".tflite":
            name, variant = _split_name(p)
            return [Target(name, variant, str(p), str(p.parent) if spec_path else None, spec_path, _backbone(spec))]
        if p.suffix == ".h5":
            return [Target(p.parent.name if spec_path else p.stem, "keras-float32", str(p),
                           str(p.parent) if spec_path else None, spec_path, _backbone(spec))]
        raise ModelError(f"{arg}: not a model file (expected .tflite or .h5)", "name .tflite files or release folders")
    spec = p / "spec.json"
    spec_path = str(spec) if spec.exists() else None
    targets = []
    tflites = sorted(p.glob("*.tflite"), key=lambda f: (KNOWN_VARIANTS.index(_split_name(f)[1])
                                                       if _split_name(f)[1] in KNOWN_VARIANTS else 99, f.name))
    for f in tflites:
        _, variant = _split_name(f)
        targets.append(Target(p.name, variant, str(f), str(p), spec_path, _backbone(spec)))
    h5 = _keras_source(p)
    if with_keras and (h5 or spec_path):
        targets.append(Target(p.name, "keras-float32", str(h5) if h5 else None, str(p), spec_path, _backbone(spec)))
    if not targets:
        raise ModelError(f"{arg}: no .tflite, best.h5 or spec.json in this folder",
                         "name a release folder (models/<name>), a run folder or .tflite files")
    return targets


def find_images(folder: str | None, limit: int = 16) -> list[str]:
    """Up to ``limit`` image files spread over ``folder`` (recursively; classes interleaved by sorting)."""
    if not folder:
        return []
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{folder}: no such image folder", "pass --images DIR with smear images")
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_EXTS and f.is_file())
    if not files:
        raise ConfigError(f"{folder}: no images found", "pass --images DIR with .jpg/.png smears")
    step = max(1, len(files) // limit)
    return [str(f) for f in files[::step][:limit]]


# ----- file facts and metrics --------------------------------------------------------------------
def file_facts(path: str | None) -> dict:
    if not path:
        return {"sha256": None, "size_mb": None, "gzip_mb": None}
    data = Path(path).read_bytes()
    mb = 1024 * 1024
    return {"sha256": sha256_file(path), "size_mb": round(len(data) / mb, 3),
            "gzip_mb": round(len(gzip.compress(data, compresslevel=6)) / mb, 3)}


def _metric_in(obj, variant: str, file: str):
    """Accuracy for ``variant``/``file`` anywhere in a parity/evaluation JSON (tolerant of layout)."""
    if isinstance(obj, dict):
        acc = obj.get("accuracy")
        if isinstance(acc, dict) and isinstance(acc.get("value"), (int, float)):
            return float(acc["value"])
        if isinstance(acc, (int, float)) and not isinstance(acc, bool):
            return float(acc)
        if "metrics" in obj:
            v = _metric_in(obj["metrics"], variant, file)
            if v is not None:
                return v
    return None


def find_metric(model_dir: str | None, variant: str, file: str) -> dict | None:
    """Accuracy of one release file from ``parity.json`` (per variant) or ``evaluation.json``.

    parity.json (``leukedge compress``): the ``metrics_ci`` of the comparison side whose ``file``
    is this file (or whose ``kind`` is ``keras`` for the Keras reference); other layouts: the
    first object keyed by the variant or naming the file that holds ``accuracy``;
    evaluation.json (``{"metrics": {"accuracy": {"value": v}}}``) applies to the file it names
    (``model``/``file`` key) or, when it names none, to the release's default int8 file.
    """
    if not model_dir:
        return None
    d = Path(model_dir)
    parity = _read_json(d / "parity.json")
    if isinstance(parity, dict) and isinstance(parity.get("comparisons"), dict):
        # leukedge compress: {"comparisons": {label: {"reference": {file, kind}, "candidate": {...},
        #                                          "metrics_ci": {"reference": {accuracy: {value}}, ...}}}}
        for comp in parity["comparisons"].values():
            for role in ("candidate", "reference"):
                who = (comp.get(role) or {}) if isinstance(comp, dict) else {}
                hit = (str(who.get("file", "")).endswith(file) if who.get("file")
                       else variant.startswith("keras") and who.get("kind") == "keras")
                v = _metric_in((comp.get("metrics_ci") or {}).get(role), variant, file) if hit else None
                if v is not None:
                    return {"name": "accuracy", "value": v, "source": "parity.json"}
    if parity is not None:
        for node in _walk(parity):
            for key, val in node.items():
                named = key == variant or (isinstance(val, dict) and str(val.get("file", val.get("model", ""))).endswith(file))
                if named and isinstance(val, dict):
                    v = _metric_in(val, variant, file)
                    if v is not None:
                        return {"name": "accuracy", "value": v, "source": "parity.json"}
    ev = _read_json(d / "evaluation.json")
    if ev is not None:
        names = str(ev.get("model") or ev.get("file") or "")
        if (names and names.endswith(file)) or (not names and variant == "int8"):
            v = _metric_in(ev, variant, file)
            if v is not None:
                return {"name": "accuracy", "value": v, "source": "evaluation.json"}
    return None


def _card_check(t: Target, sha256: str | None) -> bool | None:
    """Does the file's sha256 match the release's ``card.json["files"]``? (None: no card entry)."""
    if not (t.model_dir and sha256):
        return None
    card = _read_json(Path(t.model_dir) / "card.json")
    want = (card.get("files") or {}).get(t.file) if isinstance(card, dict) else None
    return None if not want else want == sha256


def _read_json(p: Path):
    try:
        return json.loads(p.read_text()) if p.exists() else None
    except (OSError, json.JSONDecodeError):
        log.warning("%s: not valid JSON, ignored", p)
        return None


def _walk(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


# ----- inputs ------------------------------------------------------------------------------------
def _input_for(target: Target, image: str | None, tmp: Path, cache: dict) -> str | None:
    """A preprocessed real smear for ``target`` saved as .npy (None: the worker uses random input)."""
    if not image:
        return None
    from leukedge.preprocess import PreprocessConfig, preprocess_file
    from leukedge.spec import ModelSpec

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
    total = len(jobs) + (len(extra) if cfg.e2e else 0) + (len(extra) if cfg.overhead else 0)
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
            row["sha256_matches_card"] = _card_check(t, row["sha256"])
            why = REGISTRY[r].unavailable()
            if row["sha256_matches_card"] is False:
                row.update(status="error", error=f"{t.file}: sha256 differs from the model card (card.json); "
                                                 "the file was modified or corrupted")
            elif why:
                row.update(status="error", error=why)
            else:
                res = run_isolated({**base_job, "task": "latency", "target": t.to_dict(), "runtime": r, "threads": n,
                                    "input_npy": _safe_input(t, images, tmp, in_cache)}, cfg.timeout)
                note = res.pop("note", None)
                if row["macs"] is not None:
                    res.pop("macs", None)
                row.update(res)
                if note:
                    row["note"] = note
                if row["status"] == "ok":
                    row["gmacs_per_s"], row["efficiency_pct"] = cost.achieved(row["macs"], row["latency_ms"]["p50"], peak, n)
            results.append(row)
            summ = (f"p50 {row['latency_ms']['p50']:.2f} ms, {row['throughput_ips']:.1f} img/s"
                    if row["status"] == "ok" else f"{row['status']}: {row['error']}")
            progress(f"{t.model} {t.variant} {r} threads={n}", summ)
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
                       "min_time_s": None if cfg.runs else cfg.min_time, "warmup": cfg.warmup,
                       "input_source": images[0] if images else "random"},
        "peak": peak, "results": results, "e2e": e2e, "overhead": overhead,
    }


def _safe_input(t: Target, images: list[str], tmp: Path, cache: dict) -> str | None:
    try:
        return _input_for(t, images[0] if images else None, tmp, cache)
    except Exception as exc:  # noqa: BLE001 - an unreadable model is reported by its own row
        log.debug("no real input for %s: %s", t.file, exc)
        return None


def release_files(doc: dict) -> dict[Path, dict]:
    """Per release folder and runtime: ``models/<name>/bench/<device-id>-<runtime>.json`` -> sub-document."""
    out: dict[Path, dict] = {}
    dev = doc["device"]["id"]
    for row in doc["results"]:
        d = row.get("model_dir")
        if not d or not any(Path(d).glob("*.tflite")):
            continue
        path = Path(d) / "bench" / f"{dev}-{row['runtime']}.json"
        sub = out.setdefault(path, {**doc, "results": [], "e2e": [], "overhead": []})
        sub["results"].append(row)
        for key in ("e2e", "overhead"):
            sub[key] += [x for x in doc[key] if x["model"] == row["model"] and x["file"] == row["file"]
                         and x["runtime"] == row["runtime"] and x not in sub[key]]
    return out
