"""The paper's comparison table, rebuilt from run folders' ``predictions.csv`` (no TensorFlow).

Every run (logistic regression, VGG16, ResNet50, DenseNet201, the edge backbones) wrote
``predictions.csv`` (``path, split, class, y_true, probability``) for its validation and test
images. This module puts them side by side on the *same* test images: accuracy, precision,
recall, specificity, F1 and ROC-AUC with bootstrap 95% CIs at each run's own threshold (chosen
on validation, from its ``spec.json``), plus one ROC plot with every model. Runs whose split
manifest differs from the first run's, or whose test images differ, are flagged.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from . import metrics as M
from .errors import DataError
from .predictions_csv import read_predictions
from .fileio import atomic_write_json, atomic_write_text, sha256_file
from .report import fig_roc, fmt_ci

log = logging.getLogger(__name__)

KEYS = M.BINARY_KEYS


def _load_run(arg: str, split: str) -> dict:
    """One run: its label, threshold, manifest hash and test rows."""
    p = Path(arg)
    if p.is_dir() and p.is_symlink():
        p = p.resolve()
    pred_file = p / "predictions.csv" if p.is_dir() else p
    folder = pred_file.parent
    if not pred_file.exists():
        raise DataError(f"{arg}: no predictions.csv", "pass run folders of finished `leukedge train` runs")
    rows = [r for r in read_predictions(pred_file) if r.get("split", split) == split]
    missing = {"path", "y_true", "probability"} - set(rows[0] if rows else {})
    if not rows or missing:
        raise DataError(f"{pred_file}: no '{split}' rows with columns path, y_true, probability")
    label, threshold, rule, backbone = folder.name, 0.5, "0.5 (no spec.json)", None
    spec_file = folder / "spec.json"
    if spec_file.exists():
        spec = json.loads(spec_file.read_text())
        backbone = spec.get("backbone")
        threshold = float(spec.get("threshold", 0.5))
        rule = next((o.get("rule", "") for o in spec.get("operating_points", []) if o.get("name") == "default"),
                    "the spec's threshold")
        head = spec.get("head") or {}
        size = spec.get("preprocess", {}).get("input_size", "?")
        if head.get("type") == "logistic_regression":
            label = (f"logistic regression{' + SMOTE' if head.get('smote') else ''} on {backbone} "
                     f"({spec.get('weights', '?')}) features, {size}px")
        else:
            label = (f"{backbone}{' subtype' if spec.get('task') == 'subtype' else ''} "
                     f"({spec.get('weights', '?')} weights, {size}px)")
    cfg = folder / "config.json"
    if cfg.exists() and backbone is None:
        label = json.loads(cfg.read_text()).get("backbone", label)
    label = f"{label} `{folder.name}`"  # the run or release folder tells same-architecture rows apart
    manifest = folder / "split.csv"
    return {"run": str(folder), "label": label, "threshold": threshold, "rule": rule,
            "manifest_sha256": sha256_file(manifest) if manifest.exists() else None,
            "rows": {r["path"]: r for r in rows}}


def compare_runs(runs: list[str], out_dir, split: str = "test", n_boot: int = 1000, seed: int = 0) -> dict:
    """Write ``comparison.json``, ``comparison.md`` and ``roc_all.png`` into ``out_dir``.

    Returns:
        the comparison dict (also has ``markdown``: the table text).
    """
    loaded = [_load_run(r, split) for r in runs]
    ref_manifest = loaded[0]["manifest_sha256"]
    common = sorted(set.intersection(*(set(r["rows"]) for r in loaded)))
    if not common:
        raise DataError("the runs share no test images", "compare runs trained on the same split manifest")
    out = {"split": split, "n": len(common), "n_boot": n_boot, "models": []}
    curves = []
    for r in loaded:
        rows = [r["rows"][p] for p in common]
        y = np.array([int(x["y_true"]) for x in rows])
        p = np.array([float(x["probability"]) for x in rows])
        flags = []
        if r["manifest_sha256"] != ref_manifest:
            flags.append("split manifest differs from the first run's")
        if len(r["rows"]) != len(common):
            flags.append(f"{len(r['rows']) - len(common)} of its {split} images are not in every run")
        entry = {"run": r["run"], "label": r["label"], "threshold": r["threshold"], "rule": r["rule"],
                 "manifest_sha256": r["manifest_sha256"], "flags": flags,
                 "metrics": M.metrics_with_ci(y, p, r["threshold"], n_boot, seed),
                 "metrics_at_0.5": M.binary_metrics(y, p, 0.5),
                 "ece": M.expected_calibration_error(y, p)}
        out["models"].append(entry)
        curves.append((f"{r['label']}: AUC {entry['metrics']['roc_auc']['value']:.4f}", y, p, "-"))
    if len(loaded) > 1:
        base = loaded[0]
        yb = np.array([int(base["rows"][q]["y_true"]) for q in common])
        pb = np.array([float(base["rows"][q]["probability"]) for q in common])
        for r, entry in zip(loaded[1:], out["models"][1:]):
            pc = np.array([float(r["rows"][q]["probability"]) for q in common])
            entry["vs_first"] = {"roc_auc_delta": M.paired_delta(yb, pb, pc, base["threshold"], n_boot, seed,
                                                                 threshold_cand=r["threshold"])["roc_auc"],
                                 "mcnemar": M.mcnemar(yb, (pb >= base["threshold"]).astype(int),
                                                      (pc >= r["threshold"]).astype(int))}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_roc(out_dir / "roc_all.png", curves, title=f"ROC curves, {split} split (n={len(common)})")
    lines = [f"# Model comparison ({split} split, n = {len(common)} images, 95% bootstrap CIs)", "",
             "| model | threshold | accuracy | precision | recall | specificity | F1 | ROC-AUC | flags |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in out["models"]:
        mm = e["metrics"]
        lines.append(f"| {e['label']} | {e['threshold']:.3f} | " + " | ".join(fmt_ci(mm[k], 3) for k in KEYS)
                     + f" | {'; '.join(e['flags']) or '-'} |")
    if len(out["models"]) > 1:
        lines += ["", f"Paired comparison with the first model ({out['models'][0]['label']}) on the same images:", "",
                  "| model | ROC-AUC change [95% CI] | McNemar b / c | McNemar p |", "|---|---|---|---|"]
        for e in out["models"][1:]:
            v = e["vs_first"]
            d, (lo, hi) = v["roc_auc_delta"]["delta"], v["roc_auc_delta"]["ci95"]
            lines.append(f"| {e['label']} | {d:+.4f} [{lo:+.4f}, {hi:+.4f}] | {v['mcnemar']['b']} / "
                         f"{v['mcnemar']['c']} | {v['mcnemar']['p_value']:.3g} |")
    lines += ["", "Each model at its own threshold chosen on the validation split (see its spec.json).",
              "", "![ROC curves](roc_all.png)", ""]
    out["markdown"] = "\n".join(lines)
    atomic_write_text(out_dir / "comparison.md", out["markdown"])
    atomic_write_json(out_dir / "comparison.json", {k: v for k, v in out.items() if k != "markdown"})
    return out
