"""`leukedge train --search`: the paper's grid search with grouped k-fold cross-validation.

A small grid over dropout, batch size and learning rate (any numeric :class:`TrainConfig`
field may be an axis) is evaluated with scikit-learn's ``StratifiedGroupKFold`` on the
training + validation images of the manifest, grouped by its ``group`` column so that
images of one patient block never sit on both sides of a fold. The test split is not
touched. Results: ``search.csv`` (one row per setting and fold) and ``search.md`` (mean
+/- std of validation ROC-AUC and accuracy per setting, best first) in
``RUNS/<time>-search-<backbone>-<size>/``.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import logging
import time
from pathlib import Path

import numpy as np

from leukedge.data import resolve_data_dir
from leukedge.errors import ConfigError, DataError
from leukedge.fileio import atomic_copy, atomic_write_json, atomic_write_text
from leukedge.split import make_split, read_manifest, write_manifest

from .config import TrainConfig
from .dataset import class_weights, eval_pipeline, labels_of, limit_rows, spec_for, train_pipeline
from .outputs import positive_probs, positive_truth
from .trainer import (bn_recalibrate_steps, build_model, compile_model, plan_phases, resolve_weights, set_trainable,
                      setup_runtime)

log = logging.getLogger("leukedge.train")
NUMERIC_FIELDS = {f.name for f in dataclasses.fields(TrainConfig) if f.type in ("int", "float", "int | None")}


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["dropout=0.3,0.5", "lr=1e-3"]`` -> ``{"dropout": [0.3, 0.5], "lr": [0.001]}``."""
    grid: dict[str, list] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid expects NAME=V1,V2,..., got '{item}'")
        name, values = item.split("=", 1)
        name = name.strip().replace("-", "_")
        if name not in NUMERIC_FIELDS:
            raise ConfigError(f"cannot search over '{name}'", f"choose numeric settings such as dropout, batch_size, lr")
        try:
            grid[name] = [json.loads(v) for v in values.split(",") if v.strip()]
        except json.JSONDecodeError:
            raise ConfigError(f"--grid {name}: values must be numbers, got '{values}'") from None
        if not grid[name]:
            raise ConfigError(f"--grid {name}: no values")
    return grid


def settings_of(grid: dict[str, list]) -> list[dict]:
    keys = sorted(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _fold_score(cfg: TrainConfig, spec, weights, train_rows, val_rows) -> dict:
    """Train one fold with the config's phases; validation ROC-AUC and accuracy."""
    import tf_keras as keras
    from sklearn.metrics import roc_auc_score

    from .callbacks import BNRecalibrate  # a Keras callback class: TensorFlow at import

    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    tr = train_pipeline(train_rows, spec, cfg)
    va = eval_pipeline(val_rows, spec, batch_size=cfg.batch_size)
    cw = None
    if cfg.balance in ("class_weight", "both"):
        cw = class_weights(labels_of(train_rows, spec), spec.num_outputs if spec.task == "subtype" else 2)
    model = build_model(cfg, spec, weights)
    for phase in plan_phases(cfg):
        set_trainable(model, phase, cfg)
        compile_model(model, spec, phase.lr)
        model.fit(tr.dataset, steps_per_epoch=tr.steps, epochs=phase.end, initial_epoch=phase.start,
                  class_weight=cw, verbose=0)
    recal = bn_recalibrate_steps(cfg)
    if recal:  # from scratch: BatchNorm statistics of the final weights (see BNRecalibrate)
        cb = BNRecalibrate(eval_pipeline(train_rows[: recal * cfg.batch_size], spec, cfg.batch_size).dataset, recal)
        cb.set_model(model)
        cb.recalibrate()
    probs = model.predict(va.dataset, verbose=0)
    y, p = positive_truth(val_rows, spec), positive_probs(probs, spec)
    if spec.task == "binary":
        acc = float(np.mean((p >= 0.5) == (y == 1)))
    else:
        truth = np.array([spec.class_names.index(r["class"]) for r in val_rows])
        acc = float(np.mean(np.argmax(probs, axis=1) == truth))
    auc = float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else float("nan")
    return {"val_auc": auc, "val_accuracy": acc}


def is_search_folder(folder) -> bool:
    """True for a folder written by :func:`run_search`: ``search.csv`` (written, header only, when
    the search starts) beside ``config.json`` and ``split.csv``. A training run folder has no
    ``search.csv`` (its config.json carries the default ``search_grid`` too)."""
    f = Path(folder)
    return all((f / n).is_file() for n in ("search.csv", "config.json", "split.csv"))


def _csv_fields(grid: dict) -> list[str]:
    return sorted(grid) + ["fold", "val_auc", "val_accuracy", "seconds"]


def _key(setting: dict, fold: int) -> tuple:
    return tuple(f"{k}={float(v):g}" for k, v in sorted(setting.items())) + (int(fold),)


def _done_fits(out: Path, grid: dict) -> list[dict]:
    """The fits already in ``out/search.csv`` (a search stopped part-way), values as numbers."""
    path = out / "search.csv"
    if not path.is_file():
        return []
    rows = []
    for r in csv.DictReader(io.StringIO(path.read_text())):
        row = {k: json.loads(r[k]) for k in sorted(grid)}
        row.update(fold=int(r["fold"]), val_auc=float(r["val_auc"]), val_accuracy=float(r["val_accuracy"]),
                   seconds=float(r["seconds"]))
        rows.append(row)
    return rows


def run_search(cfg: TrainConfig | None = None, resume: str | Path | None = None) -> Path:
    """Run the grid search; returns the results folder (``search.csv``, ``search.md``).

    Results are written after every fit, so a stopped search keeps what it finished;
    ``resume`` (a search folder) continues it with its own config, split and folds and skips the
    fits already in its ``search.csv`` (``leukedge train --resume <search folder>``).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if resume is not None:
        out = Path(resume)
        if not is_search_folder(out):
            raise DataError(f"{out}: not a search folder (no search.csv, config.json and split.csv)",
                            "pass the folder `leukedge train --search` printed")
        cfg = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    cfg.validate()
    grid = cfg.search_grid or {}
    settings = settings_of(grid)
    if not settings:
        raise ConfigError("the search grid is empty", "pass --grid NAME=V1,V2 (dropout, batch_size, lr)")
    cfg.data_dir = str(resolve_data_dir(cfg.data_dir).resolve())
    weights = resolve_weights(cfg)
    setup_runtime(cfg)
    if resume is None:
        root = Path(cfg.runs_dir)
        out = root / f"{time.strftime('%Y%m%d-%H%M%S')}-search-{cfg.backbone}-{cfg.resolved_input_size()}"
        out.mkdir(parents=True, exist_ok=False)
        if cfg.split:
            atomic_copy(cfg.split, out / "split.csv")
        else:
            write_manifest(make_split(cfg.data_dir), out / "split.csv")
        atomic_write_json(out / "config.json", cfg.to_dict())
        atomic_write_text(out / "search.csv", ",".join(_csv_fields(grid)) + "\n")  # marks a search folder
    rows = read_manifest(out / "split.csv", cfg.data_dir)
    pool = [r for r in rows if r["split"] in ("train", "val")]
    by_class: dict = {}
    for r in pool:
        by_class.setdefault(r["class"], []).append(r)
    pool = [r for c in sorted(by_class) for r in limit_rows(by_class[c], cfg.limit_per_class)]
    spec = spec_for(cfg, sorted(by_class))
    y = np.array([r["class"] for r in pool])
    groups = np.array([r.get("group") or r["path"] for r in pool])
    k = int(cfg.search_folds)
    if k < 2 or len(set(groups.tolist())) < k:
        raise DataError(f"grouped {k}-fold CV needs >= {max(k, 2)} groups (found {len(set(groups.tolist()))})",
                        "use fewer --folds or more images")
    folds = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=cfg.seed).split(np.zeros(len(y)), y, groups))
    results = _done_fits(out, grid)
    done = {_key({n: r[n] for n in grid}, r["fold"]) for r in results}
    if done:
        log.info("search %s: %d of %d fits done already, continuing", out, len(done), len(settings) * k)
    total = len(settings) * k
    # fold by fold (every setting on fold 1, then on fold 2, ...): a search stopped part-way has
    # compared every setting on the same folds, not some settings on all folds
    for f, (tr_idx, va_idx) in enumerate(folds):
        for i, setting in enumerate(settings):
            if _key(setting, f) in done:
                continue
            c = dataclasses.replace(cfg, **setting)
            t0 = time.time()
            log.info("search %d/%d: %s fold %d/%d (%d train, %d val)", f * len(settings) + i + 1, total, setting,
                     f + 1, k, len(tr_idx), len(va_idx))
            score = _fold_score(c, spec, weights, [pool[j] for j in tr_idx], [pool[j] for j in va_idx])
            results.append({**setting, "fold": f, **score, "seconds": round(time.time() - t0, 1)})
            log.info("  val AUC %.4f accuracy %.4f (%.0f s)", score["val_auc"], score["val_accuracy"], results[-1]["seconds"])
            write_results(out, grid, results, cfg)  # after every fit: a stopped search keeps its fits
    write_results(out, grid, results, cfg)
    return out


def summarize(grid: dict, results: list[dict]) -> list[dict]:
    """Mean and std of the fold scores per setting, best validation AUC first."""
    keys = sorted(grid)
    table = []
    for setting in settings_of(grid):
        rs = [r for r in results if all(r[k] == setting[k] for k in keys)]
        if not rs:  # not reached yet (a search stopped part-way)
            continue
        aucs = np.array([r["val_auc"] for r in rs], dtype=float)
        accs = np.array([r["val_accuracy"] for r in rs], dtype=float)
        table.append({**setting, "folds": len(rs), "val_auc_mean": float(np.nanmean(aucs)),
                      "val_auc_std": float(np.nanstd(aucs)), "val_accuracy_mean": float(np.mean(accs)),
                      "val_accuracy_std": float(np.std(accs))})
    return sorted(table, key=lambda r: (-r["val_auc_mean"], -r["val_accuracy_mean"]))


def write_results(out: Path, grid: dict, results: list[dict], cfg: TrainConfig) -> list[dict]:
    keys = sorted(grid)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_csv_fields(grid), lineterminator="\n")
    w.writeheader()
    w.writerows(results)
    atomic_write_text(out / "search.csv", buf.getvalue())
    table = summarize(grid, results)
    n_all = len(settings_of(grid)) * int(cfg.search_folds)
    partial = [] if len(results) >= n_all else [
        f"**Partial: {len(results)} of {n_all} fits done** (continue with `leukedge train --resume <this folder>`).", ""]
    lines = [f"# Hyperparameter search: {cfg.backbone} ({cfg.weights}), {cfg.task}, input {cfg.resolved_input_size()}",
             "", f"Grouped {cfg.search_folds}-fold cross-validation (StratifiedGroupKFold on the manifest's `group` "
             f"column) over the train + validation images; {cfg.epochs} epoch(s) per fold; test split untouched.", "",
             *partial,
             "| " + " | ".join(keys) + " | val ROC-AUC (mean ± std) | val accuracy (mean ± std) | folds |",
             "|" + "---|" * (len(keys) + 3)]
    for r in table:
        lines.append("| " + " | ".join(f"{r[k]:g}" for k in keys) +
                     f" | {r['val_auc_mean']:.4f} ± {r['val_auc_std']:.4f} | {r['val_accuracy_mean']:.4f} ± "
                     f"{r['val_accuracy_std']:.4f} | {r['folds']} |")
    best = table[0]
    lines += ["", "Best setting: " + ", ".join(f"{k}={best[k]:g}" for k in keys), ""]
    atomic_write_text(out / "search.md", "\n".join(lines))
    atomic_write_json(out / "search.json", {"grid": grid, "folds": cfg.search_folds, "table": table, "best": best})
    return table
