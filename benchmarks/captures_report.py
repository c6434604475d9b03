"""Markdown table and plot of a ``leukedge bench captures`` result (rebuilt from its JSON)."""
from __future__ import annotations

import json
from pathlib import Path

from leukedge.errors import DataError

from .captures import OUTCOMES, SCHEMA


def load(path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable captures result ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise DataError(f"{path}: not a {SCHEMA} result")
    return doc


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def markdown(doc: dict) -> str:
    m, d = doc["model"], doc["data"]
    lines = [f"# Capture robustness: {m['name']} ({m['variant']})", "",
             f"{d['n_smears']} {d['split']}-split smears ({', '.join(f'{k} {v}' for k, v in d['classes'].items())}), "
             f"normalisation before screening: `{doc['normalize']}`, seed {doc['seed']}. "
             + ("Lower-magnification photos: mosaics of each smear and up to 8 neighbouring smears of its split "
                "group (`--field mosaic`). " if doc.get("field") == "mosaic" else "")
             + "Each smear perturbed and screened like `leukedge predict` (quality gate, OOD gate, the spec's "
             f"threshold {m['threshold']:.4g}). *moderate* marks the severities issue 19's targets cover. "
             "*referred anyway*: photos the quality gate found over-exposed or blurred, answered \"refer\" for a "
             "strong score (the release's rule_in; counted as answers). "
             + (f"*borderline*: photos of good quality scoring in the grey zone ({m['rule_out']:g} up to the "
                "threshold: the release's rule_out), answered \"take another field\" (counted as retakes). "
                if m.get("rule_out") is not None else "")
             + "*caused by the capture*: wrong answers "
             "(missed leukemia) on smears whose clean photo was answered correctly, i.e. not the model's own "
             "errors on the lab's photos. Brackets: exact 95% interval of the correct rate.", "",
             "| family | severity | moderate | correct | retake | flagged | wrong | missed leukemia "
             "| caused by the capture | retake advice | median OOD score |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        rt = r["rates"]
        adv = ", ".join(f"{k} {v}" for k, v in sorted(r["advice"].items())) or ""
        if r.get("rule_in"):
            adv = "; ".join(x for x in (adv, "referred anyway: " + ", ".join(
                f"{k} {v}" for k, v in sorted(r["rule_in"].items()))) if x)
        ci = r.get("ci", {}).get("correct")
        correct = _pct(rt["correct"]) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "")
        new = f"{r['wrong_new']} ({r['missed_new']})" if "wrong_new" in r and r["family"] != "none" else ""
        lines.append(f"| {r['family']} | {r['severity']} | {'yes' if r['moderate'] else ''} | {correct} | "
                     f"{_pct(rt['retake'])} | {_pct(rt['flagged'])} | {_pct(rt['wrong'])} | {r['missed']} | {new} | {adv} | "
                     f"{'' if r.get('ood_score_median') is None else format(r['ood_score_median'], '.2f')} |")
    s = doc["summary"]
    lines += ["", f"Moderate severities: lowest correct {_pct(s['moderate_min_correct'] or 0)}, highest wrong "
              f"{_pct(s['moderate_max_wrong'] or 0)}, missed leukemia {s['moderate_missed']} "
              "(targets: >= 90% correct, <= 1% wrong, 0 missed)"
              + (f"; caused by the capture: highest wrong {_pct(s['moderate_max_wrong_new'] or 0)}, missed leukemia "
                 f"{s['moderate_missed_new']}" if "moderate_missed_new" in s else "")
              + (f"; borderline (take another field): {s['moderate_borderline']} of {s['moderate_photos']} photos, "
                 f"{s['clean_borderline']} clean" if m.get("rule_out") is not None and "moderate_borderline" in s
                 else "") + "."]
    if s.get("compound"):
        lines += ["", compound_sentence(s["compound"]) + " The moderate summary above covers the single families "
                  "(issue 19's targets, one family at a time); compound rows are several families in one photo."]
    wrong = {}
    for r in doc["results"]:
        for path in r.get("wrong_smears", []):
            wrong.setdefault(path, []).append(r)
    if wrong:
        lines += ["", "Smears answered wrongly (rows, of " + str(len(doc["results"])) + "):", ""]
        for path, rows in sorted(wrong.items(), key=lambda kv: -len(kv[1])):
            clean = any(r["family"] == "none" for r in rows)
            lines.append(f"* `{path}`: {len(rows)}" + (" (also clean: the model's own error)" if clean else ""))
    return "\n".join(lines) + "\n"


def compound_sentence(compound: dict) -> str:
    """One sentence of the compound rows (``summary["compound"]``): per family and level, correct /
    flagged / wrong and missed leukemia (caused by the capture)."""
    parts = []
    for fam, levels in compound.items():
        rows = "; ".join(f"level {sev}{' (moderate)' if v['moderate'] else ''}: {_pct(v['correct'])} correct, "
                         f"{_pct(v['retake'])} retake, {_pct(v['flagged'])} flagged, {_pct(v['wrong'])} wrong, "
                         f"{v['missed']} missed leukemia ({v.get('missed_new', 0)} caused by the capture)"
                         for sev, v in levels.items())
        parts.append(f"`{fam}` ({rows})")
    return "Compound field photos (several capture families at once, docs/captures.md 18): " + ", ".join(parts) + "."


def plot(doc: dict, out) -> Path:
    """Stacked bars of the outcome rates per family and severity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["results"]
    labels = [f"{r['family']} {r['severity']}" if r["family"] != "none" else "clean" for r in rows]
    colours = {"correct": "#2e7d32", "retake": "#f9a825", "flagged": "#8e8e8e", "wrong": "#c62828"}
    fig, ax = plt.subplots(figsize=(max(8, 0.32 * len(rows)), 4.2))
    bottom = [0.0] * len(rows)
    for k in OUTCOMES[:4]:
        vals = [r["rates"][k] for r in rows]
        ax.bar(range(len(rows)), vals, bottom=bottom, color=colours[k], label=k, width=0.85)
        bottom = [b + v for b, v in zip(bottom, vals)]
    for i, r in enumerate(rows):
        if r["missed"]:
            ax.text(i, 1.01, str(r["missed"]), ha="center", va="bottom", fontsize=7, color="#c62828")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("fraction of smears")
    ax.set_title(f"{doc['model']['name']} ({doc['model']['variant']}), normalize={doc['normalize']}: "
                 "red numbers = missed leukemia", fontsize=9)
    ax.legend(ncol=4, fontsize=8, loc="lower left")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def compare_markdown(docs: list[dict], labels: list[str] | None = None) -> str:
    """One table over several results (releases or normalisations): per family and severity,
    ``correct / retake / flagged / wrong (missed)`` in percent and counts of missed leukemia."""
    labels = labels or [f"{d['model']['name']} ({d['normalize']})" for d in docs]
    keys = [(r["family"], r["severity"], r["moderate"]) for r in docs[0]["results"]]
    lines = ["| family | severity | moderate | " + " | ".join(labels) + " |",
             "|---|---|---|" + "---|" * len(labels)]
    index = [{(r["family"], r["severity"]): r for r in d["results"]} for d in docs]
    for fam, sev, mod in keys:
        cells = []
        for idx in index:
            r = idx.get((fam, sev))
            if r is None:
                cells.append("")
                continue
            rt = r["rates"]
            cells.append(f"{100 * rt['correct']:.0f} / {100 * rt['retake']:.0f} / {100 * rt['flagged']:.0f} / "
                         f"{100 * rt['wrong']:.0f} ({r['missed']})")
        lines.append(f"| {fam} | {sev} | {'yes' if mod else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nCells: % correct / % retake / % flagged / % wrong (missed leukemia, count).\n"
