"""leukedge.metrics against hand-computed values and scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pytest

from leukedge import metrics as M

# 10 images: 4 negatives, 6 positives. At t=0.5: TP=5 (0.9,0.8,0.7,0.6,0.55), FN=1 (0.3),
# FP=1 (0.65), TN=3 (0.1,0.2,0.4).
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
P = np.array([0.1, 0.2, 0.4, 0.65, 0.9, 0.8, 0.7, 0.6, 0.55, 0.3])


def test_binary_metrics_hand_computed():
    m = M.binary_metrics(Y, P, 0.5)
    assert m["accuracy"] == pytest.approx(8 / 10)
    assert m["precision"] == pytest.approx(5 / 6)
    assert m["recall"] == pytest.approx(5 / 6)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(5 / 6)
    # AUC by pair counting: positive/negative pairs ranked correctly.
    pairs = [(a > b) + 0.5 * (a == b) for a in P[Y == 1] for b in P[Y == 0]]
    assert m["roc_auc"] == pytest.approx(np.mean(pairs))  # 20/24
    assert m["roc_auc"] == pytest.approx(20 / 24)


def test_binary_metrics_one_class_auc_is_nan():
    m = M.binary_metrics([1, 1, 1], [0.2, 0.9, 0.7], 0.5)
    assert math.isnan(m["roc_auc"]) and math.isnan(m["specificity"])
    assert m["recall"] == pytest.approx(2 / 3)


def test_vectorised_bootstrap_matches_sklearn_per_replicate():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    p = np.round(rng.random(60), 1)  # many ties
    idx = M.stratified_bootstrap_indices(y, 20, seed=3)
    boot = M._binary_metric_matrix(y, p, 0.5, idx)
    for r in range(20):
        ref = M.binary_metrics(y[idx[r]], p[idx[r]], 0.5)
        for k in M.BINARY_KEYS:
            assert boot[k][r] == pytest.approx(ref[k]), k


def test_ci_contains_estimate_and_narrows_with_n():
    rng = np.random.default_rng(0)

    def data(n):
        y = rng.integers(0, 2, n)
        p = np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(0, 0.25, n), 0, 1)
        return y, p

    small = M.metrics_with_ci(*data(80), threshold=0.5, n_boot=400)
    large = M.metrics_with_ci(*data(2000), threshold=0.5, n_boot=400)
    for k in M.BINARY_KEYS:
        lo, hi = small[k]["ci95"]
        assert lo <= small[k]["value"] <= hi, k
        lo2, hi2 = large[k]["ci95"]
        assert lo2 <= large[k]["value"] <= hi2, k
        assert (hi2 - lo2) < (hi - lo), k


def test_perfect_proportion_gets_an_exact_interval_not_zero_width():
    y = np.r_[np.zeros(67, int), np.ones(100, int)]
    p = np.r_[np.full(67, 0.1), np.linspace(0.2, 0.99, 100)]  # every benign image correct at 0.5
    m = M.metrics_with_ci(y, p, 0.5, n_boot=200)
    assert m["specificity"]["value"] == 1.0
    lo, hi = m["specificity"]["ci95"]
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 67))  # Clopper-Pearson for 67/67
    assert m["specificity"]["ci_method"].startswith("Clopper-Pearson")
    assert m["recall"]["ci_method"].startswith("percentile") and m["recall"]["ci95"][0] < m["recall"]["value"]


def test_cluster_bootstrap_is_wider_when_errors_cluster_in_one_group():
    # 20 groups of 10 positives; all 8 errors sit in one group -> resampling groups shows the uncertainty
    y = np.r_[np.zeros(100, int), np.ones(200, int)]
    p = np.r_[np.full(100, 0.1), np.full(200, 0.9)]
    p[100:108] = 0.2
    groups = np.r_[np.arange(100) // 10, 100 + np.arange(200) // 10]
    flat = M.metrics_with_ci(y, p, 0.5, n_boot=400)
    clus = M.metrics_with_ci(y, p, 0.5, n_boot=400, groups=groups)
    assert clus["recall"]["value"] == flat["recall"]["value"] == pytest.approx(192 / 200)
    w = lambda m: m["recall"]["ci95"][1] - m["recall"]["ci95"][0]  # noqa: E731
    assert w(clus) > 1.5 * w(flat)
    assert clus["recall"]["ci_method"].startswith("percentile cluster")
    lo, hi = clus["recall"]["ci95"]
    assert lo <= 0.96 <= hi


def test_stratified_resampling_keeps_class_counts():
    idx = M.stratified_bootstrap_indices(Y, 50, seed=0)
    assert idx.shape == (50, 10)
    assert (Y[idx].sum(axis=1) == 6).all()


def test_paired_delta_identical_is_zero():
    d = M.paired_delta(Y, P, P, 0.5, n_boot=200)
    for k in M.BINARY_KEYS:
        assert d[k]["delta"] == 0.0
        assert d[k]["ci95"] == [0.0, 0.0]
        assert d[k]["reference"] == d[k]["candidate"]


def test_paired_delta_detects_a_worse_candidate():
    worse = P.copy()
    worse[Y == 1] -= 0.3  # positives drop below the threshold
    d = M.paired_delta(Y, P, worse, 0.5, n_boot=300)
    assert d["recall"]["delta"] < 0
    assert d["recall"]["ci95"][1] <= 0


def test_mcnemar_known_values():
    from scipy.stats import binomtest, chi2

    y = np.zeros(100, int)
    ref = np.zeros(100, int)
    cand = np.zeros(100, int)
    ref[:3] = 1     # ref wrong, cand right: c = 3
    cand[3:10] = 1  # ref right, cand wrong: b = 7
    r = M.mcnemar(y, ref, cand)
    assert (r["b"], r["c"]) == (7, 3)
    assert r["p_value"] == pytest.approx(binomtest(7, 10, 0.5).pvalue)
    assert r["p_value"] == pytest.approx(0.34375)  # 2 * P(X <= 3), X ~ Bin(10, 0.5) = 2*176/1024
    cand[10:40] = 1  # b = 37, c = 3 -> chi-square with continuity correction
    r = M.mcnemar(y, ref, cand)
    assert (r["b"], r["c"]) == (37, 3)
    assert r["statistic"] == pytest.approx((34 - 1) ** 2 / 40)
    assert r["p_value"] == pytest.approx(chi2.sf((33 ** 2) / 40, 1))
    assert M.mcnemar(y, ref, ref)["p_value"] == 1.0


def test_calibration_hand_computed():
    y = np.array([0, 1, 1, 1])
    p = np.array([0.05, 0.95, 0.95, 0.55])
    # bins (10): 0.05 -> bin 0 (obs 0, conf .05), 0.95 x2 -> bin 9 (obs 1, conf .95), 0.55 -> bin 5 (obs 1, conf .55)
    ece = M.expected_calibration_error(y, p, 10)
    assert ece == pytest.approx((0.05 + 2 * 0.05 + 0.45) / 4)
    centers, frac, counts = M.reliability_curve(y, p, 10)
    assert counts.tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert frac[9] == 1.0 and frac[0] == 0.0 and np.isnan(frac[3])
    assert centers[0] == pytest.approx(0.05)
    assert M.expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0


def test_choose_threshold_meets_sensitivity_on_validation():
    rng = np.random.default_rng(5)
    y = np.r_[np.zeros(80, int), np.ones(300, int)]
    p = np.clip(np.r_[rng.beta(2, 5, 80), rng.beta(5, 2, 300)], 0, 1)
    pts = {op.name: op for op in M.choose_threshold(y, p, min_sensitivity=0.99)}
    assert set(pts) == {"default", "youden", "0.5"}
    d = pts["default"]
    sens, spec = M._sens_spec(y, p, d.threshold)
    assert sens >= 0.99 and d.sensitivity == pytest.approx(sens) and d.specificity == pytest.approx(spec)
    # no threshold with sensitivity >= 0.99 has a better specificity
    for t in np.unique(p):
        se, sp = M._sens_spec(y, p, t)
        if se >= 0.99:
            assert sp <= spec + 1e-12
    assert "sensitivity >= 0.99" in d.rule
    yj = pts["youden"]
    assert yj.sensitivity + yj.specificity >= d.sensitivity + d.specificity - 1e-12
    assert pts["0.5"].threshold == 0.5


def test_choose_threshold_breaks_specificity_ties_towards_sensitivity():
    # 0.2 and 0.95 both give specificity 1.0; the lower one also catches the positive at 0.6
    y = np.array([0, 0, 0] + [1] * 100)
    p = np.array([0.05, 0.1, 0.2] + [0.6] + [0.97] * 99)
    d = {op.name: op for op in M.choose_threshold(y, p, min_sensitivity=0.99)}["default"]
    assert d.specificity == 1.0 and d.sensitivity == 1.0
    assert 0.2 < d.threshold <= 0.6


def test_choose_threshold_perfect_separation_sits_between_classes():
    pts = {op.name: op for op in M.choose_threshold([0, 0, 1, 1], [0.1, 0.3, 0.7, 0.9])}
    assert pts["default"].threshold == pytest.approx(0.5)  # midway between 0.3 and 0.7
    assert pts["default"].sensitivity == 1.0 and pts["default"].specificity == 1.0


def test_multiclass_metrics():
    names = ["Benign", "Early", "Pre", "Pro"]
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    probs = np.eye(4)[[0, 1, 1, 1, 2, 2, 3, 0]] * 0.7 + 0.075  # rows sum to 1
    m = M.multiclass_metrics(y, probs, names, n_boot=200)
    assert m["accuracy"]["value"] == pytest.approx(6 / 8)
    assert m["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [1, 0, 0, 1]]
    assert m["per_class"]["Early"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["Pro"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["Benign"]["specificity"] == pytest.approx(5 / 6)
    # F1 per class: Benign P=1/2 R=1/2; Early P=2/3 R=1; Pre 1; Pro P=1 R=1/2
    f1s = [0.5, 0.8, 1.0, 2 / 3]
    assert m["macro_f1"]["value"] == pytest.approx(np.mean(f1s))
    lo, hi = m["accuracy"]["ci95"]
    assert lo <= 0.75 <= hi
    assert 0 <= m["roc_auc_ovr"] <= 1
    assert M.confusion([0, 1, 1], [1, 1, 0], [0, 1]) == [[0, 1], [1, 1]]
