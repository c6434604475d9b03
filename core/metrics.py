"""Classification metrics with bootstrap confidence intervals (numpy + scikit-learn, no TensorFlow).

Point estimates come from :mod:`sklearn.metrics`. Confidence intervals are percentile
bootstrap intervals with *stratified* resampling (each class is resampled with replacement
within itself, so every replicate has the test set's class counts and every metric stays
defined). The bootstrap replicates are computed vectorised (confusion counts and the
Mann-Whitney form of ROC-AUC) and agree with scikit-learn on every replicate.

When a proportion is observed at exactly 0 or 1 (say 67 of 67 benign images correct) every
bootstrap replicate agrees and the percentile interval has zero width; the exact
Clopper-Pearson interval is reported instead (``ci_method`` says which). Stratified
resampling conditions on the test set's class counts.

Conventions: ``y_true`` is 0/1 (1 = positive = leukemia); ``p`` the positive-class
probability; the decision is positive when ``p >= threshold``.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from .spec import OperatingPoint

log = logging.getLogger(__name__)

#: The binary metrics, in report order (the keys of :func:`binary_metrics`).
BINARY_KEYS = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc")


def _as_arrays(y_true, p):
    y = np.asarray(y_true).astype(int).reshape(-1)
    s = np.asarray(p, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but p has {s.size}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("binary metrics need y_true in {0, 1}")
    return y, s


def _div(a, b):
    """a / b elementwise, NaN where b == 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _nan_to_none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


# --------------------------------------------------------------------------------------------
# Point estimates
# --------------------------------------------------------------------------------------------
def roc_auc(y_true, p) -> float:
    """ROC-AUC (scikit-learn); NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    y, s = _as_arrays(y_true, p)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, s))


def binary_metrics(y_true, p, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision, recall (sensitivity), specificity, F1 and ROC-AUC at ``threshold``.

    Args:
        y_true: 0/1 labels (1 = positive).
        p: positive-class probabilities.
        threshold: decision is positive when ``p >= threshold``.

    Returns:
        dict with the keys of :data:`BINARY_KEYS` (floats; precision is 0 when nothing is
        predicted positive, specificity NaN without negatives, roc_auc NaN with one class).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

    y, s = _as_arrays(y_true, p)
    pred = (s >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "specificity": float(_div(tn, tn + fp)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "roc_auc": roc_auc(y, s),
    }


def confusion(y_true, y_pred, labels) -> list[list[int]]:
    """Confusion matrix as a nested list: rows = true label, columns = predicted (label order)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=list(labels)).astype(int).tolist()


# --------------------------------------------------------------------------------------------
# Bootstrap machinery
# --------------------------------------------------------------------------------------------
def stratified_bootstrap_indices(y, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) indices: each class resampled with replacement within itself."""
    y = np.asarray(y).reshape(-1)
    rng = np.random.default_rng(seed)
    cols = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        cols.append(idx[rng.integers(0, idx.size, size=(n_boot, idx.size))])
    return np.concatenate(cols, axis=1) if cols else np.zeros((n_boot, 0), dtype=int)


def _binary_metric_matrix(y, s, threshold: float, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every binary metric for each bootstrap replicate (rows of ``idx``), vectorised."""
    from scipy.stats import rankdata

    yb = y[idx]
    sb = s[idx]
    pred = sb >= threshold
    tp = np.sum(pred & (yb == 1), axis=1)
    fp = np.sum(pred & (yb == 0), axis=1)
    fn = np.sum(~pred & (yb == 1), axis=1)
    tn = np.sum(~pred & (yb == 0), axis=1)
    n = yb.shape[1]
    precision = np.nan_to_num(_div(tp, tp + fp), nan=0.0)
    recall = np.nan_to_num(_div(tp, tp + fn), nan=0.0)
    f1 = np.nan_to_num(_div(2 * tp, 2 * tp + fp + fn), nan=0.0)
    n_pos = np.sum(yb == 1, axis=1)
    n_neg = n - n_pos
    ranks = rankdata(sb, axis=1)  # average ranks for ties = sklearn's AUC with ties
    auc = _div(np.sum(np.where(yb == 1, ranks, 0.0), axis=1) - n_pos * (n_pos + 1) / 2.0, n_pos * n_neg)
    return {"accuracy": (tp + tn) / max(n, 1), "precision": precision, "recall": recall,
            "specificity": _div(tn, tn + fp), "f1": f1, "roc_auc": auc}


def _percentile_ci(values: np.ndarray, level: float = 0.95) -> list:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return [None, None]
    a = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(v, [a, 100.0 - a])
    return [float(lo), float(hi)]


def cluster_bootstrap_metrics(y, s, threshold: float, groups, n_boot: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Binary metrics over bootstrap replicates that resample whole groups (patients, or their proxy).

    Groups are resampled with replacement within each class (a group that mixes classes is
    assigned to its majority class), so images of one group are never split between draws.
    """
    g = np.asarray(groups).reshape(-1)
    rng = np.random.default_rng(seed)
    members: dict = {}
    for i, key in enumerate(g):
        members.setdefault(key, []).append(i)
    by_class: dict[int, list] = {}
    for key, idx in members.items():
        by_class.setdefault(int(round(np.mean(y[idx]))), []).append(np.array(idx))
    out = {k: np.empty(n_boot) for k in BINARY_KEYS}
    for b in range(n_boot):
        parts = []
        for cls_groups in by_class.values():
            pick = rng.integers(0, len(cls_groups), len(cls_groups))
            parts.extend(cls_groups[j] for j in pick)
        idx = np.concatenate(parts)[None, :]
        row = _binary_metric_matrix(y, s, threshold, idx)
        for k in BINARY_KEYS:
            out[k][b] = row[k][0]
    return out


def metrics_with_ci(y_true, p, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95, groups=None) -> dict[str, dict]:
    """:func:`binary_metrics` with percentile-bootstrap confidence intervals.

    Args:
        groups: optional group of each image (e.g. the split manifest's ``group``, a proxy for
            the patient): the bootstrap then resamples whole groups (cluster bootstrap), which
            accounts for images of one patient being correlated. Default: resample images.

    Returns:
        ``{"accuracy": {"value": v, "ci95": [lo, hi]}, ...}`` for every key of
        :data:`BINARY_KEYS` (NaN values become ``None`` so the result is valid JSON).
    """
    y, s = _as_arrays(y_true, p)
    point = binary_metrics(y, s, threshold)
    out: dict[str, dict] = {}
    if y.size == 0:
        return {k: {"value": None, "ci95": [None, None]} for k in BINARY_KEYS}
    if groups is None:
        boot = _binary_metric_matrix(y, s, threshold, stratified_bootstrap_indices(y, n_boot, seed))
        method = "percentile bootstrap (stratified)"
    else:
        boot = cluster_bootstrap_metrics(y, s, threshold, groups, n_boot, seed)
        method = "percentile cluster bootstrap over groups (stratified)"
    counts = _proportion_counts(y, s, threshold)
    for k in BINARY_KEYS:
        out[k] = {"value": _nan_to_none(point[k]), "ci95": _percentile_ci(boot[k], level), "ci_method": method}
        lo, hi = out[k]["ci95"]
        if k in counts and lo is not None and lo == hi and point[k] in (0.0, 1.0):
            # All resamples agree when the observed proportion is 0 or 1 (e.g. 67/67 benign correct):
            # a zero-width interval would claim certainty. Use the exact binomial interval instead.
            out[k]["ci95"] = clopper_pearson(*counts[k], level)
            out[k]["ci_method"] = "Clopper-Pearson exact (bootstrap degenerate at {:g})".format(point[k])
    return out


def _proportion_counts(y, s, threshold) -> dict[str, tuple[int, int]]:
    pred = s >= threshold
    tp, fp = int(np.sum(pred & (y == 1))), int(np.sum(pred & (y == 0)))
    fn, tn = int(np.sum(~pred & (y == 1))), int(np.sum(~pred & (y == 0)))
    out = {"accuracy": (tp + tn, y.size), "recall": (tp, tp + fn), "specificity": (tn, tn + fp),
           "precision": (tp, tp + fp)}
    return {k: v for k, v in out.items() if v[1] > 0}


def clopper_pearson(k: int, n: int, level: float = 0.95) -> list[float]:
    """Exact (Clopper-Pearson) confidence interval of a proportion k/n."""
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return [float(ci.low), float(ci.high)]


def paired_delta(y_true, p_ref, p_cand, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95, threshold_cand: float | None = None) -> dict[str, dict]:
    """Candidate minus reference for every binary metric, with a paired bootstrap CI.

    Both models are scored on the *same* resampled images in every replicate, so the CI is
    that of the difference (much narrower than comparing two separate CIs).

    Args:
        threshold_cand: the candidate's threshold when it differs (default: ``threshold``).

    Returns:
        ``{metric: {"reference": v, "candidate": v, "delta": d, "ci95": [lo, hi]}}``.
    """
    y, a = _as_arrays(y_true, p_ref)
    _, b = _as_arrays(y_true, p_cand)
    tc = threshold if threshold_cand is None else threshold_cand
    ref, cand = binary_metrics(y, a, threshold), binary_metrics(y, b, tc)
    idx = stratified_bootstrap_indices(y, n_boot, seed)
    ba, bb = _binary_metric_matrix(y, a, threshold, idx), _binary_metric_matrix(y, b, tc, idx)
    out = {}
    for k in BINARY_KEYS:
        d = cand[k] - ref[k]
        out[k] = {"reference": _nan_to_none(ref[k]), "candidate": _nan_to_none(cand[k]),
                  "delta": _nan_to_none(float(d)), "ci95": _percentile_ci(bb[k] - ba[k], level)}
    return out


def mcnemar(y_true, pred_ref, pred_cand) -> dict:
    """McNemar's test on paired decisions of two models.

    ``b`` = images the reference gets right and the candidate wrong, ``c`` = the reverse.
    Exact two-sided binomial test when ``b + c < 25``, else chi-square with continuity
    correction (1 degree of freedom).
    """
    from scipy.stats import binomtest, chi2

    y = np.asarray(y_true).reshape(-1)
    ra = np.asarray(pred_ref).reshape(-1) == y
    rb = np.asarray(pred_cand).reshape(-1) == y
    b = int(np.sum(ra & ~rb))
    c = int(np.sum(~ra & rb))
    if b + c == 0:
        return {"b": 0, "c": 0, "statistic": 0.0, "p_value": 1.0, "method": "none (no discordant pairs)"}
    if b + c < 25:
        return {"b": b, "c": c, "statistic": float(min(b, c)),
                "p_value": float(binomtest(b, b + c, 0.5).pvalue), "method": "exact binomial"}
    stat = (abs(b - c) - 1.0) ** 2 / (b + c)
    return {"b": b, "c": c, "statistic": float(stat), "p_value": float(chi2.sf(stat, 1)),
            "method": "chi-square with continuity correction"}


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------
def _bins(p, n_bins):
    s = np.clip(np.asarray(p, dtype=np.float64).reshape(-1), 0.0, 1.0)
    # equal-width bins on [0, 1]; p == 1 falls into the last bin
    return np.minimum((s * n_bins).astype(int), n_bins - 1), s


def reliability_curve(y_true, p, n_bins: int = 10):
    """Reliability diagram data on equal-width bins of ``p``.

    Returns:
        ``(bin_centers, frac_pos, counts)``: arrays of length ``n_bins``; ``frac_pos`` is
        the observed fraction of positives per bin (NaN for empty bins).
    """
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    b, _ = _bins(p, n_bins)
    counts = np.bincount(b, minlength=n_bins)
    pos = np.bincount(b, weights=y, minlength=n_bins)
    centers = (np.arange(n_bins) + 0.5) / n_bins
    return centers, _div(pos, counts), counts.astype(int)


def expected_calibration_error(y_true, p, n_bins: int = 10) -> float:
    """ECE: count-weighted mean of |observed positive rate - mean predicted probability| per bin."""
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    if y.size == 0:
        return float("nan")
    b, s = _bins(p, n_bins)
    counts = np.bincount(b, minlength=n_bins)
    pos = np.bincount(b, weights=y, minlength=n_bins)
    conf = np.bincount(b, weights=s, minlength=n_bins)
    nz = counts > 0
    return float(np.sum(np.abs(pos[nz] - conf[nz])) / y.size)


def calibration_summary(y_true, p, n_bins: int = 10) -> dict:
    """ECE, Brier score and the reliability-diagram data as a JSON-ready dict."""
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    s = np.asarray(p, dtype=np.float64).reshape(-1)
    centers, frac, counts = reliability_curve(y, s, n_bins)
    b, sc = _bins(s, n_bins)
    mean_pred = _div(np.bincount(b, weights=sc, minlength=n_bins), counts)
    return {
        "ece": _nan_to_none(expected_calibration_error(y, s, n_bins)),
        "brier": float(np.mean((s - y) ** 2)) if y.size else None,
        "n_bins": n_bins,
        "bin_centers": centers.tolist(),
        "frac_positive": [_nan_to_none(float(v)) for v in frac],
        "mean_predicted": [_nan_to_none(float(v)) for v in mean_pred],
        "counts": counts.tolist(),
    }


# --------------------------------------------------------------------------------------------
# Operating thresholds
# --------------------------------------------------------------------------------------------
def _sens_spec(y, s, t):
    pred = s >= t
    sens = float(np.mean(pred[y == 1])) if np.any(y == 1) else float("nan")
    spec = float(np.mean(~pred[y == 0])) if np.any(y == 0) else float("nan")
    return sens, spec


def _between(scores_desc: np.ndarray, k: int) -> float:
    """A threshold between the k-th distinct score (descending) and the next lower one.

    Every threshold in (next, score_k] gives the same decisions on the data that chose it;
    the midpoint leaves margin on both sides instead of sitting on a validation image.
    """
    hi = scores_desc[k]
    lo = scores_desc[k + 1] if k + 1 < scores_desc.size else 0.0
    return float(np.clip((hi + lo) / 2.0, 0.0, 1.0))


def choose_threshold(y_val, p_val, min_sensitivity: float = 0.99) -> list:
    """Operating points chosen on validation data.

    * ``default``: the highest specificity whose sensitivity is >= ``min_sensitivity``,
      ties broken towards the higher sensitivity (falls back to Youden's J when that sensitivity cannot be reached; the rule says so);
    * ``youden``: maximum sensitivity + specificity - 1;
    * ``0.5``: the plain 0.5 threshold, for reference.

    Thresholds sit midway between adjacent distinct validation scores.

    Returns:
        list of :class:`leukedge.spec.OperatingPoint` (sensitivity/specificity measured on
        the validation data).
    """
    y, s = _as_arrays(y_val, p_val)
    if y.size == 0 or len(np.unique(y)) < 2:
        raise ValueError("choose_threshold needs validation data with both classes")
    distinct = np.unique(s)[::-1]  # descending; threshold = distinct[k] makes the top k+1 scores positive
    sens = np.array([np.mean(s[y == 1] >= t) for t in distinct])
    spec = np.array([np.mean(s[y == 0] < t) for t in distinct])
    j = sens + spec - 1.0
    k_youden = int(np.argmax(j))  # first (highest threshold) maximiser
    t_youden = _between(distinct, k_youden)
    ok = np.flatnonzero(sens >= min_sensitivity - 1e-12)
    n_pos, n_neg = int(np.sum(y == 1)), int(np.sum(y == 0))
    if ok.size:
        # highest specificity; among equally specific thresholds the lowest (highest sensitivity)
        best = spec[ok].max()
        k = int(ok[spec[ok] >= best - 1e-12][-1])
        t_default = _between(distinct, k)
        rule = (f"highest specificity with sensitivity >= {min_sensitivity:g} (then highest sensitivity) "
                f"on the validation split "
                f"({n_pos} positive, {n_neg} negative images); threshold midway between adjacent validation scores")
    else:
        t_default = t_youden
        rule = (f"sensitivity >= {min_sensitivity:g} is not reachable on the validation split; "
                "fell back to Youden's J (max sensitivity + specificity - 1)")
    points = []
    for name, t, r in (("default", t_default, rule),
                       ("youden", t_youden, "maximum Youden's J (sensitivity + specificity - 1) on the validation split"),
                       ("0.5", 0.5, "fixed 0.5 (reference only)")):
        se, sp = _sens_spec(y, s, t)
        points.append(OperatingPoint(name=name, threshold=float(t), rule=r, sensitivity=se, specificity=sp,
                                     split="validation"))
    return points


# --------------------------------------------------------------------------------------------
# Multiclass (subtype) metrics
# --------------------------------------------------------------------------------------------
def _macro_f1_from_pairs(yb: np.ndarray, pb: np.ndarray, n_cls: int) -> np.ndarray:
    out = np.empty(yb.shape[0])
    for r in range(yb.shape[0]):
        cm = np.bincount(yb[r] * n_cls + pb[r], minlength=n_cls * n_cls).reshape(n_cls, n_cls)
        tp = np.diag(cm).astype(float)
        denom = cm.sum(0) + cm.sum(1)
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
        out[r] = f1[cm.sum(1) > 0].mean()
    return out


def multiclass_metrics(y_true, probs, class_names, n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> dict:
    """Metrics of a C-class classifier (argmax decision).

    Returns:
        dict with ``accuracy`` and ``macro_f1`` (``{"value", "ci95"}``, stratified bootstrap),
        ``macro_precision``, ``macro_recall``, ``roc_auc_ovr`` (macro one-vs-rest),
        ``per_class`` {name: precision, recall, specificity, f1, support, roc_auc},
        ``confusion_matrix`` (rows true, columns predicted, in ``class_names`` order),
        ``classification_report`` (scikit-learn's dict), ``class_names``, ``n``.
    """
    from sklearn.metrics import (accuracy_score, classification_report, f1_score, precision_recall_fscore_support,
                                 roc_auc_score)

    y = np.asarray(y_true).astype(int).reshape(-1)
    P = np.asarray(probs, dtype=np.float64).reshape(len(y), -1)
    C = len(class_names)
    if P.shape[1] != C:
        raise ValueError(f"probs has {P.shape[1]} columns but {C} class names")
    pred = P.argmax(1)
    labels = list(range(C))
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    cm = np.asarray(confusion(y, pred, labels))
    per_class = {}
    for i, name in enumerate(class_names):
        yi = (y == i).astype(int)
        tn = cm.sum() - cm[i].sum() - cm[:, i].sum() + cm[i, i]
        fp = cm[:, i].sum() - cm[i, i]
        per_class[name] = {"precision": float(prec[i]), "recall": float(rec[i]),
                           "specificity": _nan_to_none(float(_div(tn, tn + fp))), "f1": float(f1[i]),
                           "support": int(sup[i]), "roc_auc": _nan_to_none(roc_auc(yi, P[:, i]))}
    present = sorted(set(y.tolist()))
    try:
        auc_ovr = float(roc_auc_score(y, P, multi_class="ovr", average="macro", labels=labels)) \
            if len(present) == C else float("nan")
    except ValueError:
        auc_ovr = float("nan")
    idx = stratified_bootstrap_indices(y, n_boot, seed)
    yb, pb = y[idx], pred[idx]
    acc_boot = np.mean(yb == pb, axis=1)
    f1_boot = _macro_f1_from_pairs(yb, pb, C)
    macro_f1 = float(f1_score(y, pred, labels=present, average="macro", zero_division=0))
    return {
        "accuracy": {"value": float(accuracy_score(y, pred)), "ci95": _percentile_ci(acc_boot, level)},
        "macro_f1": {"value": macro_f1, "ci95": _percentile_ci(f1_boot, level)},
        "macro_precision": float(np.mean(prec[present])) if present else None,
        "macro_recall": float(np.mean(rec[present])) if present else None,
        "roc_auc_ovr": _nan_to_none(auc_ovr),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "classification_report": classification_report(y, pred, labels=labels, target_names=list(class_names),
                                                        output_dict=True, zero_division=0),
        "class_names": list(class_names),
        "n": int(y.size),
    }


def binary_classification_report(y_true, p, threshold: float, class_names=("Benign", "ALL")) -> dict:
    """scikit-learn's classification report (dict) for the binary decision at ``threshold``."""
    from sklearn.metrics import classification_report

    y, s = _as_arrays(y_true, p)
    return classification_report(y, (s >= threshold).astype(int), labels=[0, 1], target_names=list(class_names),
                                 output_dict=True, zero_division=0)
