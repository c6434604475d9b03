"""The benchmark result JSON: fixed, documented keys and a dependency-free validator.

One file names the device, the conditions it was measured under and one row per
(model file, runtime, threads). Keys may be added in later versions; none is renamed or
removed without bumping :data:`SCHEMA_VERSION`. ``leukedge bench compare`` refuses to merge
files of different versions.

Layout (``?`` = may be null)::

    schema          "leukedge-bench"
    schema_version  int (this module's SCHEMA_VERSION)
    created         ISO-8601 UTC time
    leukedge_version str
    device          {id, arch, cpu_model, cores_logical, cores_available, isa_flags[], os,
                     kernel, python, memory_total_mb?, board?, runtimes{name: version?}}
    conditions      {openblas_num_threads?, load_avg_start[3]?, load_avg_end[3]?, under_load,
                     quick, runs?, min_time_s?, warmup, input_source}
    peak            {probe, gmacs_by_threads{"1": x, "2": y}}   (numpy float32 matmul)
    results[]       rows: model, model_dir?, file, format, variant, backbone?, sha256?,
                    size_mb?, gzip_mb?, runtime, runtime_version?, threads, status ("ok" |
                    "error" | "skipped"), error?, load_ms?, warmup, runs, latency_ms
                    {p50, p90, p99, mean, std, min, max}?, throughput_ips?, memory
                    {baseline_rss_mb, peak_rss_mb, delta_mb}?, macs?, gmacs_per_s?,
                    efficiency_pct?, cpu_others_pct?, load_avg_1m?, metric
                    {name, value, source}?, input_shape?, input_dtype?
    e2e[]           per .tflite: model, file, runtime, threads, status, error?, images,
                    stages_ms{decode, preprocess, inference, gradcam, total: {p50, mean}},
                    heatmap (bool), cpu_others_pct?
    overhead[]      per .tflite: model, file, runtime, threads, status, error?,
                    harness_p50_ms?, bare_p50_ms?, diff_pct?, rounds
"""
from __future__ import annotations

from leukedge.errors import LeukEdgeError

SCHEMA_NAME = "leukedge-bench"
SCHEMA_VERSION = 1
STATUSES = ("ok", "error", "skipped")

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))
_STATS = {"p50": _NUM, "p90": _NUM, "p99": _NUM, "mean": _NUM, "std": _NUM, "min": _NUM, "max": _NUM}
_STAGE = {"p50": (_OPT_NUM, True, None, "median ms"), "mean": (_OPT_NUM, True, None, "mean ms")}

#: key -> (types, required, nested spec or None, description). Used to validate and to document.
DEVICE = {
    "id": (str, True, None, "short device id, e.g. x86_64-amd-epyc-2c"),
    "arch": (str, True, None, "platform.machine()"),
    "cpu_model": (str, True, None, "CPU model name from /proc/cpuinfo (or the board model)"),
    "cores_logical": (int, True, None, "os.cpu_count()"),
    "cores_available": (int, True, None, "cores this process may run on (affinity)"),
    "isa_flags": (list, True, None, "SIMD features seen: sse4_2, avx2, fma, avx512f, avx512_vnni, asimd/neon, asimddp, i8mm, sve..."),
    "os": (str, True, None, "OS name and version"),
    "kernel": (str, True, None, "kernel release"),
    "python": (str, True, None, "Python version"),
    "memory_total_mb": (_OPT_NUM, False, None, "RAM"),
    "board": (_OPT_STR, False, None, "board model (Raspberry Pi ...) when the device tree names one"),
    "runtimes": (dict, True, None, "installed versions: ai-edge-litert, tflite-runtime, tensorflow, numpy, opencv"),
}
CONDITIONS = {
    "openblas_num_threads": (_OPT_STR, True, None, "OPENBLAS_NUM_THREADS given to the measuring processes"),
    "load_avg_start": ((list, type(None)), True, None, "1/5/15-minute load average before the run"),
    "load_avg_end": ((list, type(None)), True, None, "load average after the run"),
    "under_load": (bool, True, None, "other processes used CPU while measuring (timings are pessimistic)"),
    "cpu_others_pct_median": (_OPT_NUM, False, None, "median CPU share other processes took while timing"),
    "quick": (bool, True, None, "--quick (CI) mode: few runs"),
    "runs": ((int, type(None)), True, None, "--runs (fixed count) or null"),
    "min_time_s": (_OPT_NUM, True, None, "--min-time (seconds per row) or null"),
    "warmup": (int, True, None, "warm-up invocations before timing"),
    "rounds": (int, False, None, "latency jobs repeated round-robin, samples pooled"),
    "input_source": (str, True, None, "the timed input: a real smear path or 'random'"),
}
PEAK = {
    "probe": (str, True, None, "how the peak was measured"),
    "gmacs_by_threads": (dict, True, None, "thread count (string) -> float32 matmul GMAC/s"),
}
LATENCY = {k: (v, True, None, "milliseconds") for k, v in _STATS.items()}
MEMORY = {
    "baseline_rss_mb": (_NUM, True, None, "peak RSS after imports, before loading the model"),
    "peak_rss_mb": (_NUM, True, None, "peak RSS of the measuring process"),
    "delta_mb": (_NUM, True, None, "peak RSS added by loading and running the model"),
}
METRIC = {
    "name": (str, True, None, "accuracy"),
    "value": (_NUM, True, None, "metric value"),
    "source": (str, True, None, "file it was read from (parity.json / evaluation.json)"),
}
ROW = {
    "model": (str, True, None, "model name (release folder name or file stem)"),
    "model_dir": (_OPT_STR, False, None, "release/run folder, when one was named"),
    "file": (str, True, None, "file name measured (.tflite, .h5, or '(rebuilt)')"),
    "format": (str, True, None, "tflite or keras"),
    "variant": (str, True, None, "int8, float32, pruned-int8, ... or keras-float32"),
    "backbone": (_OPT_STR, False, None, "from spec.json"),
    "sha256": (_OPT_STR, False, None, "sha256 of the file"),
    "sha256_matches_card": ((bool, type(None)), False, None, "sha256 agrees with the release's card.json (null: no card)"),
    "size_mb": (_OPT_NUM, False, None, "file size (MiB)"),
    "gzip_mb": (_OPT_NUM, False, None, "gzip -6 size (MiB)"),
    "runtime": (str, True, None, "litert, tflite-runtime or keras"),
    "runtime_version": (_OPT_STR, False, None, "package version"),
    "threads": (int, True, None, "interpreter / TensorFlow intra-op threads"),
    "status": (str, True, None, "ok, error or skipped"),
    "error": (_OPT_STR, False, None, "one-line message when status is not ok"),
    "load_ms": (_OPT_NUM, False, None, "model load (+ allocate) time"),
    "warmup": (int, True, None, "warm-up invocations"),
    "runs": (int, True, None, "timed invocations"),
    "latency_ms": ((dict, type(None)), False, LATENCY, "batch-1 invoke latency"),
    "throughput_ips": (_OPT_NUM, False, None, "images/s = 1000 / mean latency"),
    "memory": ((dict, type(None)), False, MEMORY, "resident memory (MiB)"),
    "macs": ((int, type(None)), False, None, "multiply-accumulates per inference counted from the model"),
    "gmacs_per_s": (_OPT_NUM, False, None, "macs / p50"),
    "efficiency_pct": (_OPT_NUM, False, None, "gmacs_per_s / (threads x single-thread float32 matmul peak); "
                       "int8 can exceed 100% (VNNI / dot-product instructions)"),
    "cpu_others_pct": (_OPT_NUM, False, None, "CPU used by other processes while timing (% of the machine)"),
    "load_avg_1m": (_OPT_NUM, False, None, "1-minute load average when the row finished"),
    "metric": ((dict, type(None)), False, METRIC, "accuracy from the release's parity/evaluation report"),
    "input_shape": ((list, type(None)), False, None, "model input shape"),
    "input_dtype": (_OPT_STR, False, None, "model input dtype"),
    "note": (_OPT_STR, False, None, "e.g. the Keras model was rebuilt with untrained weights"),
}
STAGES = {k: (dict, True, _STAGE, "ms per image") for k in ("decode", "preprocess", "inference", "gradcam", "total")}
E2E = {
    "model": (str, True, None, ""), "file": (str, True, None, ""), "runtime": (str, True, None, ""),
    "threads": (int, True, None, ""), "status": (str, True, None, ""), "error": (_OPT_STR, False, None, ""),
    "images": (int, True, None, "timed images (real smears, decoded from disk each time)"),
    "stages_ms": ((dict, type(None)), False, STAGES, "decode -> preprocess -> inference -> Grad-CAM overlay"),
    "heatmap": (bool, True, None, "the model has a cam output and the overlay was made"),
    "cpu_others_pct": (_OPT_NUM, False, None, ""),
}
OVERHEAD = {
    "model": (str, True, None, ""), "file": (str, True, None, ""), "runtime": (str, True, None, ""),
    "threads": (int, True, None, ""), "status": (str, True, None, ""), "error": (_OPT_STR, False, None, ""),
    "harness_p50_ms": (_OPT_NUM, False, None, "the harness's p50 (per-call timing through LiteRunner)"),
    "bare_p50_ms": (_OPT_NUM, False, None, "median per-call time of a bare interpreter.invoke() loop"),
    "diff_pct": (_OPT_NUM, False, None, "(harness - bare) / bare * 100"),
    "harness_mean_ms": (_OPT_NUM, False, None, "mean per-call time through the harness"),
    "bare_mean_ms": (_OPT_NUM, False, None, "mean per-call time of the bare loop"),
    "diff_mean_pct": (_OPT_NUM, False, None, "the same difference on means"),
    "timer_cost_us": (_OPT_NUM, False, None, "harness cost per call around a no-op (immune to load)"),
    "timer_cost_pct": (_OPT_NUM, False, None, "timer_cost_us relative to bare_p50_ms"),
    "rounds": (int, True, None, "interleaved harness/bare rounds"),
}
DOCUMENT = {
    "schema": (str, True, None, f"always '{SCHEMA_NAME}'"),
    "schema_version": (int, True, None, "bumped when a key is renamed or removed"),
    "created": (str, True, None, "ISO-8601 UTC"),
    "leukedge_version": (str, True, None, ""),
    "device": (dict, True, DEVICE, "the machine"),
    "conditions": (dict, True, CONDITIONS, "how it was measured"),
    "peak": ((dict, type(None)), True, PEAK, "machine peak from a matmul probe"),
    "results": (list, True, ROW, "one row per model file x runtime x threads"),
    "e2e": (list, True, E2E, "end to end per .tflite"),
    "overhead": (list, True, OVERHEAD, "harness overhead per .tflite"),
}


class SchemaError(LeukEdgeError):
    """A benchmark JSON that does not follow the schema (or has another version)."""


def _check(obj, spec: dict, where: str, problems: list[str]) -> None:
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected an object, got {type(obj).__name__}")
        return
    for key, (types, required, nested, _doc) in spec.items():
        if key not in obj:
            if required:
                problems.append(f"{where}.{key}: missing")
            continue
        val = obj[key]
        types_t = types if isinstance(types, tuple) else (types,)
        if isinstance(val, bool) and bool not in types_t:  # bool is an int subclass
            problems.append(f"{where}.{key}: expected {'/'.join(t.__name__ for t in types_t)}, got bool")
            continue
        if not isinstance(val, types_t):
            problems.append(f"{where}.{key}: expected {'/'.join(t.__name__ for t in types_t)}, got {type(val).__name__}")
            continue
        if nested is not None and val is not None:
            items = val if isinstance(val, list) else [val]
            for i, item in enumerate(items):
                _check(item, nested, f"{where}.{key}[{i}]" if isinstance(val, list) else f"{where}.{key}", problems)


def problems(obj) -> list[str]:
    """All schema violations of ``obj`` (empty when valid)."""
    out: list[str] = []
    _check(obj, DOCUMENT, "$", out)
    if isinstance(obj, dict):
        if obj.get("schema") not in (None, SCHEMA_NAME):
            out.append(f"$.schema: expected '{SCHEMA_NAME}', got {obj.get('schema')!r}")
        for section in ("results", "e2e", "overhead"):
            for i, row in enumerate(obj.get(section) or []):
                if isinstance(row, dict) and row.get("status") not in STATUSES:
                    out.append(f"$.{section}[{i}].status: expected one of {STATUSES}, got {row.get('status')!r}")
        for i, row in enumerate(obj.get("results") or []):
            lat = row.get("latency_ms") if isinstance(row, dict) else None
            if isinstance(row, dict) and row.get("status") == "ok" and not lat:
                out.append(f"$.results[{i}]: status ok without latency_ms")
    return out


def validate(obj, name: str = "benchmark JSON") -> dict:
    """Raise :class:`SchemaError` unless ``obj`` is a valid result of this schema version.

    Returns:
        ``obj`` itself, for chaining.
    """
    if isinstance(obj, dict) and isinstance(obj.get("schema_version"), int) and obj["schema_version"] != SCHEMA_VERSION:
        raise SchemaError(f"{name}: schema version {obj['schema_version']}, this LeukEdge reads version {SCHEMA_VERSION}",
                          "re-run `leukedge bench` with this LeukEdge version (or upgrade LeukEdge)")
    found = problems(obj)
    if found:
        more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
        raise SchemaError(f"{name}: not a valid {SCHEMA_NAME} v{SCHEMA_VERSION} file: {'; '.join(found[:3])}{more}")
    return obj


def describe() -> str:
    """The schema as Markdown (one table per object), for the README."""
    sections = [("document", DOCUMENT), ("device", DEVICE), ("conditions", CONDITIONS), ("peak", PEAK),
                ("results[] row", ROW), ("latency_ms", LATENCY), ("memory", MEMORY), ("metric", METRIC),
                ("e2e[]", E2E), ("overhead[]", OVERHEAD)]
    out = [f"Benchmark JSON `{SCHEMA_NAME}` version {SCHEMA_VERSION}.", ""]
    for title, spec in sections:
        out += [f"### {title}", "", "| key | type | required | meaning |", "|---|---|---|---|"]
        for key, (types, req, _n, doc) in spec.items():
            ts = types if isinstance(types, tuple) else (types,)
            tname = " / ".join("null" if t is type(None) else t.__name__ for t in ts)
            out.append(f"| `{key}` | {tname} | {'yes' if req else 'no'} | {doc} |")
        out.append("")
    return "\n".join(out)
