"""The paper's logistic-regression baseline: pooled CNN features -> SMOTE -> logistic regression.

Features are the global-average-pooled last feature map (layer ``gap``) of either a
backbone with its pretrained weights (``--backbone efficientnet-lite0 --weights imagenet``)
or a trained run's ``best.h5`` (``--features-from RUN``). The training features are
standardised and oversampled with SMOTE (imbalanced-learn) as in the paper, then a
scikit-learn ``LogisticRegression`` is fitted (C chosen on validation ROC-AUC).

The run folder ``RUNS/<time>-lr-<backbone>-<size>/`` holds ``config.json``, ``split.csv``,
``predictions.csv`` (validation + test, same columns as the CNN runs), ``summary.json``,
``spec.json`` (threshold chosen on validation; ``head.type`` = ``logistic_regression``)
and ``lr_model.npz`` (scaler + coefficients). It is a comparison baseline only: a
scikit-learn model on top of Keras features is **not exportable to TFLite** and is not
meant for release.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from leukedge.data import resolve_data_dir
from leukedge.errors import ConfigError
from leukedge.fileio import atomic_copy, atomic_write_json
from leukedge.spec import ModelSpec
from leukedge.split import make_split, write_manifest

from .config import TrainConfig
from .dataset import eval_pipeline, labels_of, spec_for
from .io import load_keras_model
from .outputs import positive_probs, positive_truth, set_thresholds, write_predictions, write_summary
from .trainer import build_model, load_rows, resolve_weights, setup_runtime

log = logging.getLogger("leukedge.train")
C_GRID = (0.01, 0.1, 1.0)


def feature_model(cfg: TrainConfig, spec, features_from: str | None):
    """A Keras model image -> pooled features (``gap``), from a run or a pretrained backbone."""
    import tf_keras as keras

    if features_from:
        model = load_keras_model(Path(features_from) / "best.h5")
    else:
        model = build_model(cfg, spec, resolve_weights(cfg))
    return keras.Model(model.input, model.get_layer("gap").output, name="features")


def extract(model, rows, spec, batch_size: int) -> np.ndarray:
    pipe = eval_pipeline(rows, spec, batch_size=batch_size, cache=False)
    return model.predict(pipe.dataset, verbose=0).astype(np.float64)


def fit_lr(x_train, y_train, x_val, y_val_pos, spec, seed: int):
    """Standardise, SMOTE the training features, fit LR for each C; keep the best on validation AUC."""
    from imblearn.over_sampling import SMOTE
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    counts = np.bincount(y_train)
    k = int(max(1, min(5, counts[counts > 0].min() - 1)))
    xs, ys = SMOTE(random_state=seed, k_neighbors=k).fit_resample(scaler.transform(x_train), y_train)
    log.info("SMOTE: %d -> %d training feature vectors (class counts %s)", len(y_train), len(ys),
             np.bincount(ys).tolist())
    best = None
    for c in C_GRID:
        clf = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(xs, ys)
        probs = _probs(clf, scaler.transform(x_val), spec)
        auc = roc_auc_score(y_val_pos, positive_probs(probs, spec))
        log.info("logistic regression C=%g: validation ROC-AUC %.4f", c, auc)
        if best is None or auc > best[0]:
            best = (auc, c, clf)
    return scaler, best[2], best[1]


def _probs(clf, x, spec) -> np.ndarray:
    p = clf.predict_proba(x)
    return p[:, 1:2] if spec.task == "binary" else p


def run_baseline(cfg: TrainConfig, features_from: str | None = None) -> Path:
    """Fit the LR + SMOTE baseline and write its run folder; returns it."""
    if features_from:
        src = TrainConfig.load(features_from)
        cfg.backbone, cfg.input_size, cfg.weights = src.backbone, src.input_size, f"run:{Path(features_from).name}"
        if src.task != cfg.task:
            raise ConfigError(f"--features-from {features_from} is a {src.task} run but --task is {cfg.task}")
    cfg.validate()
    cfg.data_dir = str(resolve_data_dir(cfg.data_dir).resolve())
    setup_runtime(cfg)
    run_dir = Path(cfg.runs_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-lr-{cfg.backbone}-{cfg.resolved_input_size()}"
    run_dir.mkdir(parents=True)
    if cfg.split:
        atomic_copy(cfg.split, run_dir / "split.csv")
    else:
        write_manifest(make_split(cfg.data_dir), run_dir / "split.csv")
    atomic_write_json(run_dir / "config.json", {**cfg.to_dict(), "baseline": "logistic_regression+smote",
                                                "features_from": features_from})
    rows = load_rows(cfg, run_dir)
    spec = spec_for(cfg, sorted({r["class"] for s in rows for r in rows[s]}))
    if features_from:
        spec.preprocess = ModelSpec.load(features_from).preprocess
    model = feature_model(cfg, spec, features_from)
    t0 = time.time()
    feats = {s: extract(model, rows[s], spec, cfg.batch_size) for s in ("train", "val", "test")}
    log.info("features %s for %d images in %.0f s", feats["train"].shape[1:], sum(len(f) for f in feats.values()),
             time.time() - t0)
    y_val_pos = positive_truth(rows["val"], spec)
    scaler, clf, c = fit_lr(feats["train"], labels_of(rows["train"], spec), feats["val"], y_val_pos, spec, cfg.seed)
    probs = {s: _probs(clf, scaler.transform(feats[s]), spec) for s in ("val", "test")}
    set_thresholds(spec, y_val_pos, positive_probs(probs["val"], spec))
    spec.name = f"lr-smote-{cfg.backbone}-{cfg.task}"
    spec.head = {"type": "logistic_regression", "smote": True, "C": c, "features": "gap",
                 "exportable": False, "note": "scikit-learn model on pooled Keras features; not exportable to TFLite"}
    spec.save(run_dir / "spec.json")
    np.savez(run_dir / "lr_model.npz", mean=scaler.mean_, scale=scaler.scale_, coef=clf.coef_,
             intercept=clf.intercept_, classes=clf.classes_, C=c)
    write_predictions(run_dir / "predictions.csv", [(s, rows[s], probs[s]) for s in ("val", "test")], spec)
    summary = write_summary(run_dir / "summary.json", spec, {s: (rows[s], probs[s]) for s in ("val", "test")},
                            {"run": run_dir.name, "baseline": "logistic_regression+smote", "C": c,
                             "features": cfg.weights if not features_from else features_from})
    atomic_write_json(run_dir / "state.json", {"finished": True, "baseline": True})
    m = summary["test"]["at_threshold"]
    log.info("LR baseline test: accuracy %.4f ROC-AUC %.4f at threshold %.4f", m["accuracy"], m["roc_auc"] or 0,
             m["threshold"])
    return run_dir
