"""What a finished run leaves for evaluation: ``predictions.csv``, thresholds and ``summary.json``.

``predictions.csv`` has one row per validation and test image: ``path`` (relative to the data
folder, as in the manifest), ``split``, ``class`` (its folder), ``y_true`` (1 = leukemia, i.e.
any positive class; 0 = the negative class), ``probability`` (the model's probability of
leukemia) and, for subtype models, ``label`` (the true class index) and ``p_<class>`` per
class. The evaluation stage builds its comparison table and ROC plot from these files.
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from leukedge.fileio import atomic_write_json, atomic_write_text
from leukedge.metrics import choose_threshold
from leukedge.spec import ModelSpec

log = logging.getLogger(__name__)


def positive_truth(rows: list[dict], spec: ModelSpec) -> np.ndarray:
    """1 for images of a positive (leukemia) class, 0 for the negative class."""
    return np.array([0 if r["class"] == spec.negative_class else 1 for r in rows], dtype=np.int64)


def positive_probs(probs: np.ndarray, spec: ModelSpec) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64).reshape(len(probs), -1)
    if spec.task == "binary":
        return probs[:, 0]
    return np.array([spec.positive_probability(p) for p in probs])


def write_predictions(path: Path, parts: list[tuple[str, list[dict], np.ndarray]], spec: ModelSpec) -> Path:
    """Write ``predictions.csv`` from (split name, rows, raw model outputs) parts."""
    cols = ["path", "split", "class", "y_true", "probability"]
    if spec.task == "subtype":
        cols += ["label"] + [f"p_{c}" for c in spec.class_names]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for split, rows, probs in parts:
        probs = np.asarray(probs, dtype=np.float64).reshape(len(rows), -1)
        pos = positive_probs(probs, spec)
        truth = positive_truth(rows, spec)
        for r, p, y, vec in zip(rows, pos, truth, probs):
            row = {"path": r["path"], "split": split, "class": r["class"], "y_true": int(y), "probability": f"{p:.9g}"}
            if spec.task == "subtype":
                row["label"] = spec.class_names.index(r["class"])
                row.update({f"p_{c}": f"{v:.9g}" for c, v in zip(spec.class_names, vec)})
            w.writerow(row)
    return atomic_write_text(path, buf.getvalue())


def set_thresholds(spec: ModelSpec, y_val: np.ndarray, p_val: np.ndarray) -> ModelSpec:
    """Choose the operating points on validation data (``leukedge.metrics.choose_threshold``):
    ``default`` = highest specificity with sensitivity >= 0.99 (fallback Youden's J),
    ``youden`` and ``0.5``; the spec's threshold becomes ``default``."""
    points = choose_threshold(y_val, p_val, min_sensitivity=0.99)
    spec.operating_points = points
    spec.threshold = float(next(p.threshold for p in points if p.name == "default"))
    return spec


def quick_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Accuracy, sensitivity, specificity at ``threshold`` and ROC-AUC (for logs and status;
    the evaluation stage computes the reported metrics with confidence intervals)."""
    from sklearn.metrics import roc_auc_score

    pred = (p >= threshold).astype(int)
    pos, neg = y == 1, y == 0
    return {"n": int(len(y)), "accuracy": float(np.mean(pred == y)),
            "sensitivity": float(np.mean(pred[pos] == 1)) if pos.any() else None,
            "specificity": float(np.mean(pred[neg] == 0)) if neg.any() else None,
            "roc_auc": float(roc_auc_score(y, p)) if pos.any() and neg.any() else None,
            "threshold": float(threshold)}


def subtype_accuracy(rows: list[dict], probs: np.ndarray, spec: ModelSpec) -> float | None:
    if spec.task != "subtype":
        return None
    truth = np.array([spec.class_names.index(r["class"]) for r in rows])
    return float(np.mean(np.argmax(np.asarray(probs).reshape(len(rows), -1), axis=1) == truth))


def write_summary(path: Path, spec: ModelSpec, parts: dict[str, tuple[list[dict], np.ndarray]], extra: dict) -> dict:
    """``summary.json``: quick metrics per split at the chosen threshold and at 0.5."""
    out = dict(extra)
    for split, (rows, probs) in parts.items():
        y, p = positive_truth(rows, spec), positive_probs(probs, spec)
        out[split] = {"at_threshold": quick_metrics(y, p, spec.threshold), "at_0.5": quick_metrics(y, p, 0.5)}
        acc = subtype_accuracy(rows, probs, spec)
        if acc is not None:
            out[split]["subtype_accuracy"] = acc
    atomic_write_json(path, out)
    return out
