"""Benchmark reports: one Markdown table per result (Ultralytics style), targets, plots, and the
cross-device merge behind ``leukedge bench compare``. Everything is rebuilt from the JSON files."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from leukedge.errors import ModelError
from leukedge.fileio import read_json

from .schema import SCHEMA_NAME, SCHEMA_VERSION, SchemaError, validate

log = logging.getLogger(__name__)

#: Targets per backbone (reported, never asserted): int8 speed-ups over float32 TFLite and the
#: Keras model at batch 1, and end-to-end ms per image (image file -> probability + heatmap).
TARGETS = {
    "densenet201": {"speedup_vs_float32": 2.5, "speedup_vs_keras": 4.0, "e2e_ms": 60.0},
    "efficientnet-lite0": {"e2e_ms": 15.0},
}
OVERHEAD_TARGET_PCT = 5.0
#: Instructions that multiply-accumulate int8 in one step. Without them (x86 with AVX2 only,
#: Cortex-A72 of the Raspberry Pi 4) int8 kernels widen to 16 bits and run about as fast as
#: float32: measured here, DenseNet201 int8 vs float32 was 2.41x on an Intel Xeon with
#: AVX-512 VNNI and 1.03x on an AMD EPYC with AVX2 only.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
TARGET_THREADS = 2


def _f(v, nd=2) -> str:
    """Fixed decimals, but at least 3 significant digits for small values (tiny models)."""
    if v is None:
        return "-"
    if v != 0 and abs(v) < 10 ** (2 - nd):
        return f"{v:.3g}"
    return f"{v:.{nd}f}"


def _p(row, key):
    lat = row.get("latency_ms") or {}
    return lat.get(key)


def results_table(rows: list[dict], with_device: bool = False) -> str:
    head = (["Device"] if with_device else []) + [
        "Model", "Format", "Runtime", "Threads", "Status", "Size (MB)", "gzip (MB)", "Accuracy",
        "p50 (ms/img)", "p90 (ms)", "p99 (ms)", "Throughput (img/s)", "Mem Δ (MB)", "GMAC/s", "Eff. %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        status = "✅" if r["status"] == "ok" else f"❌ {r.get('error') or r['status']}"[:90]
        metric = r.get("metric") or {}
        mem = (r.get("memory") or {}).get("delta_mb")
        cells = ([r.get("device", "")] if with_device else []) + [
            r["model"], r["variant"], f"{r['runtime']} {r.get('runtime_version') or ''}".strip(), str(r["threads"]),
            status.replace("|", "/"), _f(r.get("size_mb"), 1), _f(r.get("gzip_mb"), 1), _f(metric.get("value"), 4),
            _f(_p(r, "p50")), _f(_p(r, "p90")), _f(_p(r, "p99")), _f(r.get("throughput_ips"), 1), _f(mem, 1),
            _f(r.get("gmacs_per_s"), 1), _f(r.get("efficiency_pct"), 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def e2e_table(rows: list[dict]) -> str:
    head = ["Model", "File", "Runtime", "Threads", "Status", "Images", "decode", "preprocess", "inference",
            "Grad-CAM", "total p50 (ms)", "total mean (ms)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        st = r.get("stages_ms") or {}
        cell = lambda k: _f((st.get(k) or {}).get("p50"), 1)  # noqa: E731
        lines.append("| " + " | ".join([
            r["model"], r["file"], r["runtime"], str(r["threads"]),
            "✅" if r["status"] == "ok" else f"{r['status']}: {r.get('error')}"[:90], str(r.get("images", 0)),
            cell("decode"), cell("preprocess"), cell("inference"),
            cell("gradcam") if r.get("heatmap") else "no cam output", cell("total"),
            _f((st.get("total") or {}).get("mean"), 1)]) + " |")
    return "\n".join(lines)


def overhead_table(rows: list[dict]) -> str:
    lines = ["| Model | File | Threads | Status | harness p50 (ms) | bare invoke p50 (ms) | difference | "
             "difference of means | timing cost per call (µs, % of p50) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        status = "✅" if r["status"] == "ok" else f"{r['status']}: {r.get('error')}"[:90]
        diff = "-" if r.get("diff_pct") is None else f"{r['diff_pct']:+.2f}%"
        dmean = "-" if r.get("diff_mean_pct") is None else f"{r['diff_mean_pct']:+.2f}%"
        lines.append(f"| {r['model']} | {r['file']} | {r['threads']} | {status} | "
                     f"{_f(r.get('harness_p50_ms'), 3)} | {_f(r.get('bare_p50_ms'), 3)} | {diff} | {dmean} | "
                     f"{_f(r.get('timer_cost_us'), 2)} ({_f(r.get('timer_cost_pct'), 3)}%) |")
    return "\n".join(lines)


def _pick(rows, model, variant, runtime, threads):
    for r in rows:
        if (r["model"], r["variant"], r["runtime"], r["threads"], r["status"]) == (model, variant, runtime, threads, "ok"):
            return r
    return None


def int8_dot(device: dict) -> list[str]:
    """The int8 dot-product ISA flags of a result's device (empty: int8 gains little on this CPU)."""
    return [f for f in device.get("isa_flags", []) if f in INT8_DOT_FLAGS]


def target_checks(doc: dict) -> list[dict]:
    """Each target with its measured value: ``{what, target, value, met}`` (met None: not measurable)."""
    rows, out = doc["results"], []
    threads = TARGET_THREADS if any(r["threads"] == TARGET_THREADS for r in rows) else max(
        [r["threads"] for r in rows] or [1])
    for model in dict.fromkeys(r["model"] for r in rows):
        backbone = next((r.get("backbone") for r in rows if r["model"] == model and r.get("backbone")), None)
        tg = TARGETS.get(backbone or "", {})
        i8 = _pick(rows, model, "int8", "litert", threads)
        for key, variant, runtime in (("speedup_vs_float32", "float32", "litert"),
                                      ("speedup_vs_keras", "keras-float32", "keras")):
            ref = _pick(rows, model, variant, runtime, threads)
            if i8 and ref:
                s = ref["latency_ms"]["p50"] / i8["latency_ms"]["p50"]
                goal = tg.get(key)
                dot = int8_dot(doc["device"])
                out.append({"what": f"{model}: int8 speed-up vs {variant} ({runtime}), batch 1, {threads} threads",
                            "target": f">= {goal}x" if goal else "-", "value": f"{s:.2f}x "
                            f"({_f(ref['latency_ms']['p50'], 1)} -> {_f(i8['latency_ms']['p50'], 1)} ms)"
                            + ("" if dot else "; this CPU has no int8 dot-product instructions"),
                            "met": (s >= goal) if goal else None})
        for e in doc.get("e2e", []):
            if e["model"] == model and e["status"] == "ok" and e["file"].endswith(".int8.tflite"):
                tot = e["stages_ms"]["total"]["p50"]
                goal = tg.get("e2e_ms")
                out.append({"what": f"{model}: end to end (file -> probability + heatmap), int8, {e['threads']} threads",
                            "target": f"<= {goal:.0f} ms" if goal else "-", "value": f"{tot:.1f} ms",
                            "met": (tot <= goal) if goal else None})
    for o in doc.get("overhead", []):
        if o["status"] == "ok":
            out.append({"what": f"harness overhead on {o['file']} ({o['threads']} threads)",
                        "target": f"within {OVERHEAD_TARGET_PCT:.0f}%",
                        "value": f"{o['diff_pct']:+.2f}%" + (f" (timing cost alone {o['timer_cost_pct']:.4f}%)"
                                                             if o.get("timer_cost_pct") is not None else ""),
                        "met": abs(o["diff_pct"]) <= OVERHEAD_TARGET_PCT})
    return out


def markdown(doc: dict) -> str:
    """The full report of one result document."""
    d, c = doc["device"], doc["conditions"]
    peak = (doc.get("peak") or {}).get("gmacs_by_threads", {})
    out = [f"# LeukEdge benchmark: {d['id']}", "",
           f"- Device: {d['cpu_model']} ({d['arch']}, {d['cores_available']} cores; "
           f"ISA {', '.join(d['isa_flags']) or 'n/a'}), {d['os']}, Python {d['python']}",
           f"- int8 dot-product instructions: {', '.join(int8_dot(d))}" if int8_dot(d) else
           "- int8 dot-product instructions: **none** (no VNNI / SDOT): int8 kernels widen to 16 bits here, "
           "so expect int8 about as fast as float32 (smaller and less memory, not faster)",
           f"- Runtimes: " + ", ".join(f"{k} {v}" for k, v in d["runtimes"].items() if v),
           f"- Measured {doc['created']}; warm-up {c['warmup']}, "
           + (f"{c['runs']} runs" if c.get("runs") else f"min {c.get('min_time_s')} s") + " per row; batch 1; "
           f"input {c['input_source']}; OPENBLAS_NUM_THREADS={c.get('openblas_num_threads')}",
           f"- Load average {c.get('load_avg_start')} -> {c.get('load_avg_end')}; other processes took a median "
           f"{_f(c.get('cpu_others_pct_median'), 0)}% of the CPU while timing",
           "- float32 matmul peak (efficiency is against threads x the 1-thread value): "
           + ", ".join(f"{k} thread(s) {v} GMAC/s" for k, v in peak.items()) if peak else
           "- float32 matmul peak: not measured"]
    if c.get("under_load"):
        out += ["", "> **Timings were taken under load** (other processes shared the CPU): treat them as upper "
                "bounds and re-run on a quiet machine for final numbers."]
    if c.get("quick"):
        out += ["", "> `--quick` run (few invocations): numbers are rough."]
    out += ["", "## Latency, size, memory", "", results_table(doc["results"])]
    notes = sorted({r["note"] for r in doc["results"] if r.get("note")})
    out += [f"\nNote: {n}." for n in notes]
    if doc.get("e2e"):
        out += ["", "## End to end (ms per image, p50)", "", e2e_table(doc["e2e"])]
    if doc.get("overhead"):
        out += ["", "## Harness overhead", "", overhead_table(doc["overhead"])]
    checks = target_checks(doc)
    if checks:
        out += ["", "## Targets (reported, not asserted)", "", "| what | target | measured | met |", "|---|---|---|---|"]
        for t in checks:
            met = "-" if t["met"] is None else ("yes" if t["met"] else "**no**")
            out.append(f"| {t['what']} | {t['target']} | {t['value']} | {met} |")
    return "\n".join(out) + "\n"


# ----- plots -------------------------------------------------------------------------------------
def plot(rows: list[dict], out: str | Path, title: str = "LeukEdge benchmark") -> Path:
    """Left: p50 latency per model/runtime/threads (and device); right: latency vs accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    labels = [f"{r.get('device', '')} {r['model']} {r['variant']} {r['runtime']} t{r['threads']}".strip() for r in ok]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, max(3.5, 0.35 * len(ok) + 1.5)))
    colours = {"litert": "tab:blue", "tflite-runtime": "tab:orange", "keras": "tab:green"}
    ax1.barh(range(len(ok)), [r["latency_ms"]["p50"] for r in ok],
             xerr=[[0] * len(ok), [r["latency_ms"]["p90"] - r["latency_ms"]["p50"] for r in ok]],
             color=[colours.get(r["runtime"], "tab:gray") for r in ok])
    from matplotlib.patches import Patch

    used = dict.fromkeys(r["runtime"] for r in ok)
    ax1.legend(handles=[Patch(color=colours.get(n, "tab:gray"), label=n) for n in used], fontsize=8, loc="lower right")
    ax1.set_yticks(range(len(ok)), labels, fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xlabel("p50 latency, batch 1 (ms; whisker to p90)")
    ax1.set_title("Latency")
    best: dict[tuple, dict] = {}  # one point per device/model/variant/runtime: its fastest thread count
    for r in ok:
        if r.get("metric"):
            key = (r.get("device", ""), r["model"], r["variant"], r["runtime"])
            if key not in best or r["latency_ms"]["p50"] < best[key]["latency_ms"]["p50"]:
                best[key] = r
    if best:
        markers = dict(zip(dict.fromkeys((k[0], k[1]) for k in best), "osD^vP*X"))
        for i, ((dev, model, variant, runtime), r) in enumerate(sorted(best.items())):
            x, y = r["latency_ms"]["p50"], r["metric"]["value"]
            ax2.scatter(x, y, s=45, color=colours.get(runtime, "tab:gray"), marker=markers[(dev, model)],
                        label=f"{dev} {model}".strip())
            ax2.annotate(f"{variant} t{r['threads']}", (x, y), fontsize=7, xytext=(5, 8 if i % 2 else -10),
                         textcoords="offset points")
        handles, labels = ax2.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax2.legend(uniq.values(), uniq.keys(), fontsize=7, loc="lower right")
        ax2.set_xscale("log")
        ax2.set_xlabel("p50 latency (ms, log)")
        ax2.set_ylabel("accuracy (release parity/evaluation report)")
    else:
        ax2.text(0.5, 0.5, "no accuracy available\n(no parity.json / evaluation.json\nin the release folders)",
                 ha="center", va="center", transform=ax2.transAxes)
        ax2.set_axis_off()
    ax2.set_title("Latency vs accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ----- compare -----------------------------------------------------------------------------------
def load_result(path: str | Path) -> dict:
    """Read and validate one result file.

    Raises:
        ModelError: missing or not JSON. SchemaError: wrong schema or version.
    """
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise ModelError(f"{path}: no such benchmark JSON", "run `leukedge bench MODEL --json OUT` first")
    doc = read_json(p, ModelError, expect=None)  # regular file, bounded, UTF-8 JSON
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_NAME:
        raise SchemaError(f"{path}: not a LeukEdge benchmark result (schema {doc.get('schema') if isinstance(doc, dict) else None!r})",
                          "pass files written by `leukedge bench --json`")
    return validate(doc, str(path))


def merge(docs: list[dict], names: list[str] | None = None) -> dict:
    """One document with every row tagged by its device id (rows: model x runtime x threads x device).

    Raises:
        SchemaError: the files have different schema versions.
    """
    names = names or [f"#{i}" for i in range(len(docs))]
    versions = {d.get("schema_version") for d in docs}
    if len(versions) > 1:
        detail = ", ".join(f"{n}: v{d.get('schema_version')}" for n, d in zip(names, docs))
        raise SchemaError(f"cannot merge benchmark files of different schema versions ({detail})",
                          f"re-run `leukedge bench` with one LeukEdge version (this one writes v{SCHEMA_VERSION})")
    tag = lambda d, r: {**r, "device": d["device"]["id"]}  # noqa: E731
    return {"schema": SCHEMA_NAME + "-merged", "schema_version": SCHEMA_VERSION, "sources": names,
            "devices": [d["device"] for d in docs], "conditions": [d["conditions"] for d in docs],
            "results": [tag(d, r) for d in docs for r in d["results"]],
            "e2e": [tag(d, r) for d in docs for r in d.get("e2e", [])],
            "overhead": [tag(d, r) for d in docs for r in d.get("overhead", [])]}


def compare_markdown(merged: dict) -> str:
    out = ["# LeukEdge benchmark: devices compared", ""]
    for d, c, src in zip(merged["devices"], merged["conditions"], merged["sources"]):
        load = " (**timed under load**)" if c.get("under_load") else ""
        out.append(f"- `{d['id']}`: {d['cpu_model']}, {d['cores_available']} cores, {d['os']} ({src}){load}")
    rows = sorted(merged["results"], key=lambda r: (r["model"], r["variant"], r["runtime"], r["threads"], r["device"]))
    out += ["", results_table(rows, with_device=True)]
    if merged.get("e2e"):
        out += ["", "## End to end", "", "| Device | Model | File | Threads | total p50 (ms) |", "|---|---|---|---|---|"]
        for e in merged["e2e"]:
            tot = ((e.get("stages_ms") or {}).get("total") or {}).get("p50")
            out.append(f"| {e['device']} | {e['model']} | {e['file']} | {e['threads']} | {_f(tot, 1)} |")
    return "\n".join(out) + "\n"
