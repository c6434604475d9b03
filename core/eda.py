"""Exploratory data analysis report: class balance, colour/texture, PCA, samples, stamps.

Writes PNG plots and an ``eda.md`` page that references them.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from .data import class_counts, scan
from .errors import ImageError
from .fileio import atomic_write_json, atomic_write_text
from .imageio import load_image
from .progress import progress

log = logging.getLogger(__name__)


def stamp_kind(rgb: np.ndarray, frac: float = 0.15) -> str:
    """Classify the bottom-right corner: ``red`` / ``dark`` text or scale bar, or ``none``.

    Aria images often carry a scale bar with a text stamp in that corner; its presence and
    colour differ by class, so a model could use it as a shortcut.
    """
    h, w = rgb.shape[:2]
    corner = rgb[int(h * (1 - frac)):, int(w * (1 - frac * 1.6)):].astype(np.int16)
    r, g, b = corner[..., 0], corner[..., 1], corner[..., 2]
    red = int(((r > 140) & (g < 90) & (b < 90)).sum())
    dark = int(((r < 70) & (g < 70) & (b < 70)).sum())
    area = corner.shape[0] * corner.shape[1]
    if red > 0.004 * area:
        return "red"
    if dark > 0.004 * area:
        return "dark"
    return "none"


def image_features(rgb: np.ndarray) -> np.ndarray:
    """Simple colour + texture features: HSV means/stds, Laplacian variance, entropy, edge density."""
    small = cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.float32)
    rgbf = small.reshape(-1, 3).astype(np.float32)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    lap = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    entropy = float(-(p * np.log2(p)).sum())
    edges = float((cv2.Canny(gray, 50, 150) > 0).mean())
    return np.concatenate([rgbf.mean(0), rgbf.std(0), hsv.mean(0), hsv.std(0), [np.log1p(lap), entropy, edges]])


FEATURE_NAMES = ["R mean", "G mean", "B mean", "R std", "G std", "B std", "H mean", "S mean", "V mean",
                 "H std", "S std", "V std", "log Laplacian var", "entropy", "edge density"]


def run_eda(data_dir, out_dir, max_per_class: int | None = None, seed: int = 0) -> Path:
    """Compute features of every image and write the EDA report into ``out_dir``.

    Returns the path of ``eda.md``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = scan(data_dir)
    rng = np.random.default_rng(seed)
    if max_per_class:
        keep = []
        for c in class_counts(records):
            rs = [r for r in records if r.cls == c]
            idx = rng.permutation(len(rs))[:max_per_class]
            keep += [rs[i] for i in sorted(idx)]
        records = keep
    feats, classes, stamps, thumbs = [], [], [], {}
    for r in progress(records, desc="eda: features", unit="img"):
        try:
            img = load_image(r.path)
        except ImageError as exc:
            log.warning("skipping %s", exc.one_line())
            continue
        feats.append(image_features(img))
        classes.append(r.cls)
        stamps.append(stamp_kind(img))
        if len(thumbs.setdefault(r.cls, [])) < 64:
            thumbs[r.cls].append(cv2.resize(img, (96, 96), interpolation=cv2.INTER_AREA))
    X = np.array(feats)
    cls_arr = np.array(classes)
    names = sorted(set(classes))
    colors = plt.cm.tab10(np.arange(len(names)))
    figs = {}

    fig, ax = plt.subplots(figsize=(5, 3.2))
    counts = [int((cls_arr == c).sum()) for c in names]
    ax.bar(names, counts, color=colors)
    for i, n in enumerate(counts):
        ax.text(i, n, str(n), ha="center", va="bottom")
    ax.set_ylabel("images"); ax.set_title("Class distribution")
    figs["class_distribution"] = fig

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for k, (title, cols) in enumerate([("RGB mean", [0, 1, 2]), ("HSV mean (H, S, V)", [6, 7, 8]),
                                       ("texture", [12, 13, 14])]):
        data = [[X[cls_arr == c][:, j] for c in names] for j in cols]
        for j, d in enumerate(data):
            pos = np.arange(len(names)) * (len(cols) + 1) + j
            bp = axes[k].boxplot(d, positions=pos, widths=0.8, patch_artist=True, showfliers=False)
            for patch in bp["boxes"]:
                patch.set_facecolor(plt.cm.Set2(j))
        axes[k].set_xticks(np.arange(len(names)) * (len(cols) + 1) + 1)
        axes[k].set_xticklabels(names)
        axes[k].set_title(title + ": " + ", ".join(FEATURE_NAMES[c] for c in cols), fontsize=8)
    fig.tight_layout()
    figs["colour_texture"] = fig

    Z = PCA(n_components=2, random_state=seed).fit_transform(StandardScaler().fit_transform(X))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for c, col in zip(names, colors):
        m = cls_arr == c
        ax.scatter(Z[m, 0], Z[m, 1], s=6, alpha=0.6, color=col, label=c)
    ax.legend(); ax.set_title("PCA of colour/texture features"); ax.set_xlabel("PC1"); ax.set_ylabel("PC2")
    figs["feature_pca"] = fig

    kinds = ["none", "dark", "red"]
    stamp_tab = {c: {k: int(((cls_arr == c) & (np.array(stamps) == k)).sum()) for k in kinds} for c in names}
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    bottom = np.zeros(len(names))
    for k, col in zip(kinds, ["#bbbbbb", "#333333", "#d62728"]):
        frac = np.array([stamp_tab[c][k] / max(1, sum(stamp_tab[c].values())) for c in names])
        ax.bar(names, frac, bottom=bottom, color=col, label=f"stamp: {k}")
        bottom += frac
    ax.set_ylabel("fraction of images"); ax.set_title("Corner stamp (scale bar) per class"); ax.legend(fontsize=7)
    figs["corner_stamps"] = fig

    for name, fig in figs.items():
        fig.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    for c in names:
        grid = thumbs.get(c, [])[:32]
        while len(grid) < 32:
            grid.append(np.full((96, 96, 3), 255, np.uint8))
        rows = [np.hstack(grid[i:i + 8]) for i in range(0, 32, 8)]
        cv2.imwrite(str(out / f"samples_{c}.png"), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))

    per_class = {c: {FEATURE_NAMES[j]: round(float(X[cls_arr == c][:, j].mean()), 3) for j in range(X.shape[1])}
                 for c in names}
    atomic_write_json(out / "eda.json", {"data_dir": str(data_dir), "n": len(classes),
                                          "counts": dict(zip(names, counts)), "stamps": stamp_tab,
                                          "feature_means": per_class})
    md = [f"# EDA: {data_dir}", "", f"{len(classes)} images.", "", "## Class distribution", "",
          "![class distribution](class_distribution.png)", "",
          "## Colour and texture per class", "",
          "Stain colour differs by class: a model may learn the stain instead of the cells.", "",
          "![colour and texture](colour_texture.png)", "", "## Feature scatter", "", "![PCA](feature_pca.png)", "",
          "## Corner stamp (scale bar / text) per class", "",
          "A stamp whose presence or colour depends on the class is a possible shortcut; "
          "`leukedge evaluate --mask-corners` measures the model with the corners masked.", "",
          "| class | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    md += [f"| {c} | " + " | ".join(str(stamp_tab[c][k]) for k in kinds) + " |" for c in names]
    md += ["", "![stamps](corner_stamps.png)", "", "## Samples", ""]
    md += [f"### {c}\n\n![{c}](samples_{c}.png)\n" for c in names]
    return atomic_write_text(out / "eda.md", "\n".join(md) + "\n")
