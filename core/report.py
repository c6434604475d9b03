"""Evaluation report (Markdown + HTML + PNG figures), rebuilt from the files of a report folder.

:func:`build_report` reads only files: ``evaluation.json``, ``predictions.csv``, optional
``cams.npz`` (heatmaps of gallery/error images), ``history.csv`` (training curves), and the
images named in the predictions (from the data folder recorded in the JSON). So a report can
be re-made at any time, and what it shows is what was saved. matplotlib runs with Agg.
"""
from __future__ import annotations

import csv
import html
import json
import logging
import math
import re
from pathlib import Path

import numpy as np

from .fileio import atomic_write_text
from .heatmap import overlay
from .imageio import load_image
from .portable import find_dataset
from .predictions_csv import read_predictions
from .preprocess import PreprocessConfig, field_tiles, preprocess_uint8

log = logging.getLogger(__name__)

METRIC_LABELS = {"accuracy": "Accuracy", "precision": "Precision", "recall": "Recall (sensitivity)",
                 "specificity": "Specificity", "f1": "F1", "roc_auc": "ROC-AUC"}
CLASS_COLORS = {"Benign": "#1b9e77", "Early": "#d95f02", "Pre": "#7570b3", "Pro": "#e7298a"}


def _plt():
    # matplotlib (the `data` extra) is imported when a figure is drawn: it is optional and slow to import
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 10, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _fmt(v, digits=4):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def fmt_ci(m: dict, digits: int = 4) -> str:
    """``0.9876 [0.9700, 0.9950]`` from ``{"value", "ci95"}``."""
    lo, hi = (m.get("ci95") or [None, None])
    return f"{_fmt(m.get('value'), digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


class Page:
    """A report page as blocks, rendered both to Markdown and to a simple HTML file."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple] = []

    def h(self, text, level=2):
        self.blocks.append(("h", level, text))

    def p(self, text):
        self.blocks.append(("p", text))

    def bullets(self, items):
        self.blocks.append(("ul", list(items)))

    def table(self, header, rows):
        self.blocks.append(("table", list(header), [list(map(str, r)) for r in rows]))

    def img(self, src, alt):
        self.blocks.append(("img", src, alt))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if b[0] == "h":
                out += ["#" * b[1] + " " + b[2], ""]
            elif b[0] == "p":
                out += [b[1], ""]
            elif b[0] == "ul":
                out += [f"- {x}" for x in b[1]] + [""]
            elif b[0] == "table":
                out += ["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
                out += ["| " + " | ".join(r) + " |" for r in b[2]] + [""]
            elif b[0] == "img":
                out += [f"![{b[2]}]({b[1]})", ""]
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(self.title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
               "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
               "img{max-width:100%}</style></head><body>", f"<h1>{e(self.title)}</h1>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_links(e(b[1]))}</p>")
            elif b[0] == "ul":
                out.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b[1]) + "</ul>")
            elif b[0] == "table":
                out.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in b[1]) + "</tr>"
                           + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2])
                           + "</table>")
            elif b[0] == "img":
                out.append(f"<p><img src='{e(b[1])}' alt='{e(b[2])}'></p>")
        out.append("</body></html>")
        return "\n".join(out)


def _links(text: str) -> str:
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r"<a href='\2'>\1</a>", text)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def _arrays(rows):
    y = np.array([int(r["y_true"]) for r in rows])
    p = np.array([float(r["probability"]) for r in rows])
    return y, p


def fig_roc(path, curves: list[tuple[str, np.ndarray, np.ndarray, str]], points=(), title="ROC curve"):
    """ROC curves: ``curves`` = (label, y, p, style); ``points`` = (label, fpr, tpr)."""
    from sklearn.metrics import roc_curve

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    floor = 1.0
    for _, y, p, _ in curves:
        fpr, tpr, _ = roc_curve(y, p)
        floor = min(floor, float(np.interp(0.0, fpr, tpr, left=0.0)))
    zoom_lo = float(np.clip(np.floor((floor - 0.03) * 20) / 20, 0.0, 0.95))  # a multiple of 0.05 below the curves
    for ax, zoom in zip(axes, (False, True)):
        for label, y, p, style in curves:
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, style, lw=1.8, label=label)
        for label, fx, ty in points:
            ax.plot([fx], [ty], "o", ms=7, mfc="none", mew=2, label=label)
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
        ax.set_xlabel("False positive rate (1 - specificity)")
        ax.set_ylabel("True positive rate (sensitivity)")
        if zoom:
            ax.set_xlim(-0.005, 0.3)
            ax.set_ylim(zoom_lo, 1.005)
            ax.set_title("zoom: top-left corner")
        else:
            ax.set_xlim(-0.01, 1.01)
            ax.set_ylim(-0.01, 1.01)
            ax.set_title(title)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fig_confusion(path, cm, labels, title="Confusion matrix"):
    plt = _plt()
    cm = np.asarray(cm)
    k = len(labels)
    fig, ax = plt.subplots(figsize=(2.2 + 1.1 * k, 1.8 + 1.0 * k))
    rows = cm.sum(1, keepdims=True).clip(min=1)
    ax.imshow(cm / rows, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    for i in range(k):
        for j in range(k):
            frac = cm[i, j] / rows[i, 0]
            ax.text(j, i, f"{cm[i, j]}\n{frac:.1%}", ha="center", va="center",
                    color="white" if frac > 0.6 else "black", fontsize=10)
    ax.set_xticks(range(k), labels)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fig_reliability(path, cal: dict):
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    c = np.array(cal["bin_centers"])
    frac = np.array([np.nan if v is None else v for v in cal["frac_positive"]])
    mp = np.array([np.nan if v is None else v for v in cal["mean_predicted"]])
    width = 1.0 / cal["n_bins"]
    ax.bar(c, np.nan_to_num(frac), width=width * 0.9, alpha=0.6, label="observed fraction positive")
    ax.plot(mp, frac, "o", color="C3", ms=7, label="observed vs mean predicted (per bin)")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.set_ylabel("fraction positive")
    ax.set_title(f"Reliability diagram (ECE {_fmt(cal['ece'])}, Brier {_fmt(cal['brier'])})")
    ax.legend(loc="upper left", fontsize=8)
    ax2.bar(c, cal["counts"], width=width * 0.9, color="grey")
    ax2.set_yscale("log")
    ax2.set_ylabel("images")
    ax2.set_xlabel("predicted probability of leukemia")
    ax2.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fig_probabilities(path, rows, threshold):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    classes = sorted({r["class"] for r in rows})
    bins = np.linspace(0, 1, 41)
    for c in classes:
        pc = [float(r["probability"]) for r in rows if r["class"] == c]
        ax.hist(pc, bins=bins, histtype="step", lw=2, label=f"{c} (n={len(pc)})", color=CLASS_COLORS.get(c))
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("predicted probability of leukemia")
    ax.set_ylabel("images (log scale)")
    ax.set_title("Predicted probability by true class")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fig_history(path, hist_csv) -> bool:
    with open(hist_csv, newline="") as fh:
        h = list(csv.DictReader(fh))
    if not h:
        return False

    def col(name):
        return np.array([float(r[name]) if r.get(name) not in (None, "") else np.nan for r in h])

    plt = _plt()
    ep = col("epoch")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("accuracy", "loss")):
        for name, style in ((key, "-o"), (f"val_{key}", "-s")):
            if name in h[0]:
                ax.plot(ep, col(name), style, ms=3, label=name.replace("val_", "validation ") if "val_" in name
                        else f"training {name}")
        phases = [r.get("phase") for r in h]
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(ep[i] - 0.5, color="grey", ls=":", lw=1)
                ax.text(ep[i] - 0.4, ax.get_ylim()[1], f" {phases[i]}", va="top", fontsize=8, color="grey")
        ax.set_xlabel("epoch")
        ax.set_title(f"Training vs validation {key}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def fig_shortcut(path, ev: dict):
    a = ev["shortcut_audit"]
    plt = _plt()
    keys = list(METRIC_LABELS)
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(8, 4))
    for off, (lab, m) in zip((-0.2, 0.2), (("as trained", ev["metrics"]),
                                             (f"corners masked ({a['corner_mask']:.2f})", a["metrics"]))):
        v = np.array([m[k]["value"] or np.nan for k in keys])
        lo = np.array([(m[k]["ci95"][0] if m[k]["ci95"][0] is not None else np.nan) for k in keys])
        hi = np.array([(m[k]["ci95"][1] if m[k]["ci95"][1] is not None else np.nan) for k in keys])
        ax.bar(x + off, v, width=0.38, label=lab)
        ax.errorbar(x + off, v, yerr=[v - lo, hi - v], fmt="none", color="k", capsize=3, lw=1)
    ax.set_xticks(x, [METRIC_LABELS[k].split(" ")[0] for k in keys])
    lo_all = min((ev["metrics"][k]["ci95"][0] or 1) for k in keys) if keys else 0
    lo_all = min(lo_all, min((a["metrics"][k]["ci95"][0] or 1) for k in keys))
    ax.set_ylim(max(0.0, lo_all - 0.05), 1.0)
    ax.set_title("Shortcut audit: metrics with the corner stamp regions masked (95% CI)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _display_image(data_dir: Path, relpath: str, pre: dict, tile: int | None = None):
    """The model input a heatmap belongs to: the single input, or tile ``tile`` of a photo the
    spec screens as tiles (its ``cam`` is that tile's)."""
    cfg = PreprocessConfig(**pre)
    rgb = load_image(data_dir / relpath)
    if tile is not None and tile >= 0:
        return field_tiles(rgb, cfg).inputs[int(tile)]
    return preprocess_uint8(rgb, cfg.replace(input_size=max(cfg.input_size, 160)))


def fig_gallery(path, panels: list[tuple[str, list]], data_dir: Path, pre: dict, title: str, ncols: int):
    """Grid of (image, heatmap overlay) pairs; ``panels`` = [(row label, [(relpath, caption, cam[, tile])])]
    (``tile``: the deciding tile of a photo screened as tiles, -1 or absent for a single input)."""
    plt = _plt()
    nrows = len(panels)
    fig, axes = plt.subplots(nrows, 2 * ncols, figsize=(2.0 * 2 * ncols, 2.35 * nrows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, (label, entries) in enumerate(panels):
        axes[r, 0].text(-0.08, 0.5, label, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right",
                        fontsize=11, fontweight="bold")
        for j, (rel, cap, cam, *tile) in enumerate(entries[:ncols]):
            try:
                img = _display_image(data_dir, rel, pre, tile[0] if tile else None)
            except Exception as exc:  # an image moved since evaluation: show why instead of failing the report
                axes[r, 2 * j].text(0.5, 0.5, f"missing\n{Path(rel).name}\n{type(exc).__name__}", ha="center",
                                    fontsize=7)
                continue
            axes[r, 2 * j].imshow(img)
            axes[r, 2 * j].set_title(f"{Path(rel).parent.name}/{Path(rel).stem}", fontsize=7)
            axes[r, 2 * j + 1].imshow(overlay(img, cam))
            axes[r, 2 * j + 1].set_title(cap, fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# The pages
# --------------------------------------------------------------------------------------------
def _metrics_table(page: Page, metrics: dict, other: dict | None = None, other_label: str = "",
                   grouped: dict | None = None):
    header = ["metric", "value [95% CI]"] + (["95% CI resampling groups"] if grouped else []) \
        + ([other_label, "change [95% CI]"] if other else [])
    rows = []
    for k, lab in METRIC_LABELS.items():
        row = [lab, fmt_ci(metrics[k])]
        if grouped:
            lo, hi = grouped[k]["ci95"]
            row.append(f"[{_fmt(lo)}, {_fmt(hi)}]")
        if other:
            d = other["delta"][k]
            row += [fmt_ci(other["metrics"][k]), f"{_fmt(d['delta'], 4)} [{_fmt(d['ci95'][0])}, {_fmt(d['ci95'][1])}]"]
        rows.append(row)
    page.table(header, rows)


def build_report(report_dir, data_dir=None) -> Path:
    """(Re)build ``evaluation.md``, ``evaluation.html``, ``errors.md``/``errors.html`` and ``figures/``.

    ``data_dir`` holds the images of the galleries (default: the dataset the record names,
    found by :func:`leukedge.portable.find_dataset`).

    Returns:
        the path of ``evaluation.md``.
    """
    d = Path(report_dir)
    ev = json.loads((d / "evaluation.json").read_text())
    rows = read_predictions(d / "predictions.csv")
    figs = d / "figures"
    figs.mkdir(exist_ok=True)
    y, p = _arrays(rows)
    t = float(ev["threshold"])
    m = ev["metrics"]
    model = ev.get("model", {})
    data_dir = Path(data_dir or find_dataset(ev.get("data", {}).get("dir") or ev.get("data", {}).get("name")) or ".")
    pre = ev.get("spec", {}).get("preprocess", {})
    neg_lab, pos_lab = ev.get("confusion_labels", ["negative", "positive"])

    page = Page(f"Evaluation: {model.get('name', '?')} ({model.get('backbone', '?')}, {model.get('task', '?')})")
    page.p(f"Model: `{model.get('path')}` ({model.get('kind')}, file `{model.get('file')}`, sha256 "
           f"`{(model.get('sha256') or '')[:16]}...`). Data: `{ev['data'].get('name') or ev['data'].get('dir')}` ({ev['data']['mode']}; "
           f"manifest sha256 `{(ev['data'].get('split_manifest_sha256') or 'n/a')[:16]}`). "
           f"n = {ev['n']} ({ev['n_positive']} leukemia, {ev['n_negative']} benign; by folder: "
           f"{', '.join(f'{k} {v}' for k, v in ev['class_counts'].items())}).")
    page.p(f"Decision threshold {t:.4f}: {ev['threshold_rule']}. 95% CIs: percentile bootstrap, "
           f"{ev['n_boot']} stratified resamples of the evaluation images.")
    page.h("Metrics (leukemia vs benign)")
    _metrics_table(page, m, grouped=ev.get("metrics_group_ci"))
    if ev.get("metrics_group_ci"):
        page.p(f"The second interval resamples whole split groups ({ev.get('n_groups')} blocks of consecutive file "
               "numbers, a proxy for patients) instead of images: images of one patient are correlated, so this "
               "interval is the more honest one when errors cluster. A proportion observed at 0 or 1 gets the "
               "exact Clopper-Pearson interval (the bootstrap would have zero width).")
    curves = [(f"{model.get('name', 'model')} (AUC {fmt_ci(m['roc_auc'])})", y, p, "-")]
    audit = ev.get("shortcut_audit")
    if audit and rows and "probability_masked" in rows[0]:
        pm = np.array([float(r["probability_masked"]) for r in rows])
        curves.append((f"corners masked (AUC {fmt_ci(audit['metrics']['roc_auc'])})", y, pm, "--"))
    spec_pt = (f"threshold {t:.3f}", 1 - (m["specificity"]["value"] or 0), m["recall"]["value"] or 0)
    if len(set(y.tolist())) == 2:
        fig_roc(figs / "roc.png", curves, [spec_pt])
        page.img("figures/roc.png", "ROC curve")
    else:
        page.p("Only one class in this evaluation: no ROC curve (ROC-AUC is undefined).")
    fig_confusion(figs / "confusion.png", ev["confusion_matrix"], [neg_lab, pos_lab],
                  f"Confusion matrix at threshold {t:.3f}")
    page.img("figures/confusion.png", "confusion matrix")
    if ev.get("operating_points"):
        page.h("Operating points (chosen on the validation split)")
        page.table(["name", "threshold", "rule", "val sens / spec", "test sensitivity [CI]", "test specificity [CI]",
                    "test accuracy [CI]"],
                   [[o["name"], f"{o['threshold']:.4f}", o["rule"],
                     f"{_fmt(o['validation']['sensitivity'], 3)} / {_fmt(o['validation']['specificity'], 3)}",
                     fmt_ci(o["metrics"]["recall"]), fmt_ci(o["metrics"]["specificity"]),
                     fmt_ci(o["metrics"]["accuracy"])] for o in ev["operating_points"]])
    cr = ev.get("classification_report", {})
    if cr:
        page.h("Classification report")
        page.table(["class", "precision", "recall", "f1", "support"],
                   [[k, _fmt(v["precision"]), _fmt(v["recall"]), _fmt(v["f1-score"]), int(v["support"])]
                    for k, v in cr.items() if isinstance(v, dict)])
    sub = ev.get("subtype")
    if sub:
        page.h("Subtypes (4 classes, argmax)")
        page.p(f"Accuracy {fmt_ci(sub['accuracy'])}; macro F1 {fmt_ci(sub['macro_f1'])}; "
               f"macro one-vs-rest ROC-AUC {_fmt(sub['roc_auc_ovr'])}.")
        page.table(["class", "precision", "recall", "specificity", "f1", "ROC-AUC (OvR)", "support"],
                   [[c, _fmt(v["precision"]), _fmt(v["recall"]), _fmt(v["specificity"]), _fmt(v["f1"]),
                     _fmt(v["roc_auc"]), v["support"]] for c, v in sub["per_class"].items()])
        fig_confusion(figs / "confusion_subtype.png", sub["confusion_matrix"], sub["class_names"],
                      "Subtype confusion matrix")
        page.img("figures/confusion_subtype.png", "subtype confusion matrix")
    page.h("Calibration")
    cal = ev["calibration"]
    page.p(f"Expected calibration error (10 equal-width bins) {_fmt(cal['ece'])}; Brier score {_fmt(cal['brier'])}.")
    fig_reliability(figs / "reliability.png", cal)
    page.img("figures/reliability.png", "reliability diagram")
    fig_probabilities(figs / "probabilities.png", rows, t)
    page.img("figures/probabilities.png", "probability histogram per class")
    if audit:
        page.h("Shortcut audit: corner stamps masked")
        page.p(f"The same images re-scored with the four corners (side {audit['corner_mask']:.2f} of the image) "
               f"painted with the median colour. {audit['decisions_changed']} decisions changed; mean |change in "
               f"probability| {audit['mean_abs_probability_change']:.4f}; McNemar p = {audit['mcnemar']['p_value']:.3g} "
               f"(b={audit['mcnemar']['b']}, c={audit['mcnemar']['c']}). Changes are masked minus as trained, "
               "with paired-bootstrap 95% CIs.")
        _metrics_table(page, m, audit, "corners masked [95% CI]")
        fig_shortcut(figs / "shortcut_audit.png", ev)
        page.img("figures/shortcut_audit.png", "shortcut audit")
    if (d / "history.csv").exists() and fig_history(figs / "curves.png", d / "history.csv"):
        page.h("Training curves")
        page.img("figures/curves.png", "training vs validation accuracy and loss")
    cams_file = d / "cams.npz"
    if cams_file.exists():
        _gallery_pages(page, d, figs, rows, cams_file, data_dir, pre, ev)
    if ev.get("heatmap_quality"):
        _heatmap_quality_section(page, d, figs, ev["heatmap_quality"], data_dir, pre)
    if ev.get("errors_by_group"):
        page.h("Errors by split group")
        page.p("Groups are blocks of consecutive file numbers (a proxy for patients) from the split manifest.")
        page.table(["group", "errors"], [[g, k] for g, k in ev["errors_by_group"].items()])
    if ev.get("unreadable"):
        page.h("Unreadable files")
        page.bullets(f"{k}: {v}" for k, v in ev["unreadable"].items())
    page.h("Caveats")
    page.bullets(ev.get("caveats", []))
    atomic_write_text(d / "evaluation.md", page.markdown())
    atomic_write_text(d / "evaluation.html", page.html().replace("href='errors.md'", "href='errors.html'"))
    return d / "evaluation.md"


HQ_ROWS = (("lift", "lift (mass on stained cells / their area share; 1 = chance)"),
           ("pointing", "pointing game (peak on a stained cell)"), ("pointing_chance", "pointing chance level"),
           ("generic_r", "correlation with the average map"), ("deletion_auc", "deletion AUC"),
           ("deletion_auc_random", "deletion AUC, random order"), ("deletion_vs_random", "deletion - random"),
           ("insertion_auc", "insertion AUC"), ("insertion_auc_random", "insertion AUC, random order"),
           ("insertion_vs_random", "insertion - random"),
           ("class_deletion_vs_random", "predicted subtype: deletion - random"),
           ("class_insertion_vs_random", "predicted subtype: insertion - random"))


def _heatmap_quality_section(page: Page, d: Path, figs: Path, hq: dict, data_dir: Path, pre: dict) -> None:
    """Localisation and faithfulness of the heatmaps: table, mean curves, best/worst gallery."""
    page.h("Heatmap quality: does the map point at the cells?")
    page.bullets(f"{k}: {v}" for k, v in hq.get("method", {}).items())
    a, pos = hq.get("all", {}), hq.get("leukemia_positive", {})
    page.table(["measure", f"all images (n={a.get('n')})", f"leukemia-positive (n={pos.get('n')})"],
               [[label, fmt_ci(a[k], 3) if k in a else "-", fmt_ci(pos[k], 3) if k in pos else "-"]
                for k, label in HQ_ROWS if k in a or k in pos])
    curves = hq.get("mean_curves")
    if curves:
        plt = _plt()
        fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
        x = np.linspace(0, 1, len(curves["deletion"]))
        for j, kind in enumerate(("deletion", "insertion")):
            ax[j].plot(x, curves[kind], "-o", ms=3, label="heatmap order")
            ax[j].plot(x, curves[f"{kind}_random"], "--", label="random order")
            ax[j].set_title(f"{kind} (mean of {hq.get('faithfulness_n')} images)", fontsize=9)
            ax[j].set_xlabel("area fraction blurred" if kind == "deletion" else "area fraction revealed")
            ax[j].set_ylim(0, 1.02)
            ax[j].legend(fontsize=7)
        ax[0].set_ylabel("probability of the explained class")
        fig.tight_layout()
        fig.savefig(figs / "heatmap_faithfulness.png", dpi=90)
        plt.close(fig)
        page.img("figures/heatmap_faithfulness.png", "deletion and insertion curves")
    z_path = d / "heatmap_quality.npz"
    if z_path.exists():
        z = np.load(z_path)
        panels = []
        for grp, label in (("best", "highest lift"), ("worst", "lowest lift")):
            tiles = z["tile"] if "tile" in z.files else np.full(len(z["paths"]), -1)
            ent = [(str(p), f"lift {lf:.2f}", c, int(t))
                   for p, c, lf, g, t in zip(z["paths"], z["cams"], z["lift"], z["group"], tiles) if g == grp]
            if ent:
                panels.append((label, ent))
        if panels:
            fig_gallery(figs / "heatmap_quality.png", panels, data_dir, pre, "Heatmaps with the highest and lowest lift",
                        max(len(e) for _, e in panels))
            page.img("figures/heatmap_quality.png", "best and worst heatmaps by lift")


def _gallery_pages(page: Page, d: Path, figs: Path, rows, cams_file: Path, data_dir: Path, pre: dict, ev: dict):
    z = np.load(cams_file)
    cam_of = {int(i): c for i, c in zip(z["index"], z["cams"])}
    tile_of = {int(i): int(t) for i, t in zip(z["index"], z["tile"])} if "tile" in z.files else {}
    source = str(z["source"])

    names_sub = (ev.get("subtype") or {}).get("class_names")

    def entry(i):
        r = rows[i]
        cap = f"p={float(r['probability']):.3f}  cam max {float(np.max(cam_of[i])):.2g}"
        if names_sub and r.get("predicted_label") not in (None, ""):
            cap = f"pred {names_sub[int(r['predicted_label'])]}, p(ALL)={float(r['probability']):.3f}, " \
                  f"max {float(np.max(cam_of[i])):.2g}"
        return r["path"], cap, cam_of[i], tile_of.get(i, -1)

    names = {"TP": "true positives", "FP": "false positives", "FN": "false negatives", "TN": "true negatives"}
    panels = [(f"{g} ({len(z['sel_' + g])})", [entry(i) for i in z[f"sel_{g}"]]) for g in names
              if len(z[f"sel_{g}"])]
    page.h("Grad-CAM gallery")
    target = ("the predicted subtype's score" if ev.get("model", {}).get("task") == "subtype"
              else "the leukemia (positive) class score")
    page.p(f"Heatmaps: {source}; the explained score is {target}, each map scaled to its own "
           "maximum (its raw maximum is printed: a map of a confident negative is near zero, so its colours "
           "show noise). Rows: the most confident true/false positives/negatives. Look for heat on the "
           "lymphoblasts, not on the background or the corner stamps. Errors: [errors.md](errors.md).")
    ncols = max((len(e) for _, e in panels), default=1)
    if panels:
        fig_gallery(figs / "gradcam_gallery.png", panels, data_dir, pre, "Grad-CAM gallery", min(ncols, 6))
        page.img("figures/gradcam_gallery.png", "Grad-CAM gallery")
    err = [int(i) for i in z["sel_errors"]]
    ep = Page("Error analysis: misclassified images")
    ep.p(f"{len(err)} misclassified image(s) shown (false positives and false negatives, most confident first), "
         f"with the probability of leukemia and the heatmap ({source}).")
    if err:
        by_group: dict[str, list[int]] = {}
        for i in err:
            by_group.setdefault(rows[i].get("group") or "(no group)", []).append(i)
        if len(by_group) < len(err):
            sizes = {}
            for r in rows:
                sizes[r.get("group") or "(no group)"] = sizes.get(r.get("group") or "(no group)", 0) + 1
            ep.p(f"The {len(err)} errors come from {len(by_group)} split group(s) (blocks of consecutive file "
                 "numbers, a proxy for patients): errors that cluster in one group point to one patient or one "
                 "capture session the model fails on, and mean the effective sample size is smaller than n.")
            ep.table(["group", "errors", "images of the group in this evaluation"],
                     [[g, len(v), sizes.get(g, "?")] for g, v in sorted(by_group.items(), key=lambda kv: -len(kv[1]))])
        ep.table(["#", "image", "true class", "probability", "error"],
                 [[n + 1, rows[i]["path"], rows[i]["class"], f"{float(rows[i]['probability']):.4f}",
                   "false positive" if int(rows[i]["prediction"]) == 1 else "false negative"]
                  for n, i in enumerate(err)])
        per = 12
        for k in range(0, len(err), per):
            chunk = err[k:k + per]
            pan = [(f"#{k + 1 + j * 3}-", [entry(i) for i in chunk[j * 3:(j + 1) * 3]])
                   for j in range((len(chunk) + 2) // 3)]
            name = f"errors_{k // per + 1}.png"
            fig_gallery(figs / name, pan, data_dir, pre, f"Misclassified images {k + 1}-{k + len(chunk)}", 3)
            ep.img(f"figures/{name}", name)
    else:
        ep.p("No misclassified images.")
    atomic_write_text(d / "errors.md", ep.markdown())
    atomic_write_text(d / "errors.html", ep.html().replace(".md'", ".html'"))
