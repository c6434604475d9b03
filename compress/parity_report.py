"""Parity reports: ``parity.json`` (one or more comparisons), ``parity.md`` and figures.

Figures (PNG, matplotlib Agg): probability scatter reference vs candidate, the paired
deltas with their bootstrap 95% CIs against the gate limits, and the per-image heatmap
correlation histogram.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from leukedge.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

from .parity import ParityResult

log = logging.getLogger(__name__)

_GATE_METRIC = {"accuracy": "max_delta_accuracy", "recall": "max_delta_sensitivity", "roc_auc": "max_delta_roc_auc"}


def _fmt(v, d=4):
    if v is None:
        return "n/a"
    if isinstance(v, float) and not np.isfinite(v):
        return "n/a"
    return f"{v:.{d}f}" if isinstance(v, float) else str(v)


def _ci(ci, d=4):
    if not ci or ci[0] is None:
        return "n/a"
    return f"[{ci[0]:+.{d}f}, {ci[1]:+.{d}f}]"


def markdown(results: dict[str, ParityResult], title: str = "Parity") -> str:
    """Markdown for one or more comparisons (``{label: result}``)."""
    out = [f"# {title}", ""]
    out.append("Each candidate is compared with the reference on the same images (binary leukemia decision at the "
               "spec's threshold). Deltas are candidate minus reference with a paired stratified bootstrap 95% CI. "
               "Heatmap parity: per-image Pearson correlation of the Grad-CAM maps and IoU of their top-20% cells.")
    out.append("")
    for label, r in results.items():
        status = "**PASS**" if r.passed else "**FAIL** (" + ", ".join(g.name for g in r.failed) + ")"
        out += [f"## {label}: {status}", ""]
        out.append(f"- reference: `{Path(r.reference.get('file', r.reference['name'])).name}` "
                   f"({_size(r.reference)}), candidate: `{Path(r.candidate.get('file', r.candidate['name'])).name}` "
                   f"({_size(r.candidate)})")
        out.append(f"- images: {r.n} ({r.data.get('split')} split; {r.data.get('n_positive')} leukemia, "
                   f"{r.data.get('n_negative')} benign); threshold {r.threshold['reference']:.4f}")
        if r.errors:
            out.append(f"- unreadable images skipped: {len(r.errors)}")
        out += ["", "| gate | value | rule | limit | result |", "|---|---:|:---:|---:|:---:|"]
        for g in r.gates:
            res = "n/a" if not g.evaluated else ("pass" if g.passed else "**FAIL**")
            out.append(f"| {g.name} | {_fmt(g.value)} | {g.rule} | {g.limit:.4f} | {res} |")
        out += ["", "| metric | reference | candidate | delta | 95% CI of delta |", "|---|---:|---:|---:|---|"]
        for k, m in r.metrics.items():
            out.append(f"| {k} | {_fmt(m['reference'])} | {_fmt(m['candidate'])} | {_fmt(m['delta'])} | {_ci(m['ci95'])} |")
        mc = r.mcnemar
        pdiff = r.probability_diff
        h = r.heatmap
        out += ["",
                f"- agreement of decisions: {r.agreement:.4f} ({pdiff['n_disagree']} of {r.n} differ); "
                f"McNemar b={mc['b']} c={mc['c']}, p={_fmt(mc['p_value'])} ({mc.get('method', '')})",
                f"- |p_ref - p_cand|: mean {pdiff['mean_abs']:.5f}, 95th percentile {pdiff['p95_abs']:.5f}, "
                f"max {pdiff['max_abs']:.5f}",
                f"- expected calibration error: reference {_fmt(r.calibration['reference_ece'])}, "
                f"candidate {_fmt(r.calibration['candidate_ece'])}"]
        if h.get("available"):
            ci = h.get("mean_correlation_ci95")
            ci_text = f" [95% CI {_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
            out.append(f"- heatmap correlation: mean {_fmt(h['mean_correlation'])}{ci_text}, median "
                       f"{_fmt(h['median_correlation'])}, 5th percentile {_fmt(h['p05_correlation'])}, min "
                       f"{_fmt(h['min_correlation'])} over {h['n_defined']} images ({h['n_both_zero']} both all-zero, "
                       f"{h['n_one_constant']} with one map constant); top-20% IoU mean {_fmt(h['mean_top20_iou'])}")
        else:
            out.append(f"- heatmap parity not available: {h.get('reason')}")
        if r.per_class:
            pc = r.per_class
            out += ["", f"Subtype (argmax) agreement {pc['argmax_agreement']:.4f}; accuracy delta "
                    f"{pc['delta_accuracy']:+.4f}", "", "| class | recall ref | recall cand | delta |", "|---|---:|---:|---:|"]
            for n, d in pc["delta_recall"].items():
                out.append(f"| {n} | {pc['reference']['per_class'][n]['recall']:.4f} | "
                           f"{pc['candidate']['per_class'][n]['recall']:.4f} | {d:+.4f} |")
        out.append("")
    return "\n".join(out) + "\n"


def _size(d: dict) -> str:
    b = d.get("bytes")
    return f"{b / 2**20:.2f} MiB" if b else d.get("kind", "")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def fig_scatter(r: ParityResult, path: Path, label: str) -> Path:
    plt = _plt()
    pr = np.array([d["p_reference"] for d in r.per_image])
    pc = np.array([d["p_candidate"] for d in r.per_image])
    y = np.array([d["y"] for d in r.per_image])
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for cls, color, name in ((0, "tab:blue", "benign"), (1, "tab:red", "leukemia")):
        m = y == cls
        ax.scatter(pr[m], pc[m], s=9, alpha=0.6, color=color, label=f"{name} (n={int(m.sum())})")
    ax.plot([0, 1], [0, 1], color="gray", lw=0.8)
    t = r.threshold["reference"]
    ax.axvline(t, color="k", lw=0.6, ls="--")
    ax.axhline(r.threshold["candidate"], color="k", lw=0.6, ls="--")
    ax.set(xlabel="reference probability", ylabel="candidate probability", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
           title=f"{label}: agreement {r.agreement:.3f}")
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def fig_deltas(r: ParityResult, path: Path, label: str) -> Path:
    plt = _plt()
    keys = list(r.metrics)
    fig, ax = plt.subplots(figsize=(5.6, 3.2))
    for i, k in enumerate(keys):
        m = r.metrics[k]
        if m["delta"] is None:
            continue
        lo, hi = m["ci95"] if m["ci95"] and m["ci95"][0] is not None else (m["delta"], m["delta"])
        ax.errorbar([m["delta"]], [i], xerr=[[m["delta"] - lo], [hi - m["delta"]]], fmt="o", color="tab:blue", capsize=3)
        lim = r.gate_settings.get(_GATE_METRIC.get(k, ""), None)
        if lim is not None:
            ax.plot([-lim, lim], [i, i], "|", color="tab:red", ms=12)
    ax.axvline(0, color="gray", lw=0.8)
    ax.set_yticks(range(len(keys)), keys)
    ax.set(xlabel="candidate - reference (95% CI; red: gate limits)", title=f"{label}: metric deltas")
    return _save(fig, path)


def fig_heatmap_corr(r: ParityResult, path: Path, label: str) -> Path | None:
    vals = [d["cam_correlation"] for d in r.per_image if d.get("cam_correlation") is not None]
    if not vals:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    ax.hist(vals, bins=30, range=(min(0.5, min(vals)), 1.0), color="tab:green")
    ax.axvline(r.gate_settings["min_heatmap_correlation"], color="tab:red", ls="--", lw=0.8)
    ax.set(xlabel="per-image Grad-CAM correlation", ylabel="images",
           title=f"{label}: mean {np.mean(vals):.3f}")
    return _save(fig, path)


def write_reports(results: dict[str, ParityResult], out_dir, json_name: str = "parity.json",
                  md_name: str = "parity.md", extra: dict | None = None) -> dict[str, Path]:
    """Write ``parity.json``, ``parity.md`` and ``figures/parity_<label>_*.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"json": write_json(results, out_dir / json_name, extra)}
    written["md"] = atomic_write_text(out_dir / md_name, markdown(results))
    fig_dir = out_dir / "figures"
    for label, r in results.items():
        slug = label.replace(" ", "_").replace("/", "_")
        if r.per_image:
            written[f"{label}_scatter"] = fig_scatter(r, fig_dir / f"parity_{slug}_scatter.png", label)
            p = fig_heatmap_corr(r, fig_dir / f"parity_{slug}_heatmap.png", label)
            if p:
                written[f"{label}_heatmap"] = p
        written[f"{label}_deltas"] = fig_deltas(r, fig_dir / f"parity_{slug}_deltas.png", label)
    log.info("parity reports written to %s", out_dir)
    return written


def write_json(results: dict[str, ParityResult], path, extra: dict | None = None) -> Path:
    """JSON: ``{"schema", "passed" (every comparison passed), "comparisons": {label: result}}``."""
    body = {"schema": 1, "passed": all(r.passed for r in results.values()),
            "comparisons": {k: r.to_dict() for k, r in results.items()}}
    body.update(extra or {})
    return atomic_write_json(path, body)
