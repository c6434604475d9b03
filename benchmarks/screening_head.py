"""Screening head comparison on the VALIDATION split: a 4-class head used as a screen vs a binary head.

For each pair (binary release, subtype release of the same backbone, same split manifest) and
each file variant, both models score the ``val`` rows of the binary release's ``split.csv``.
A subtype model's screening score is ``P(leukemia) = 1 - P(negative class)``
(:meth:`leukedge.spec.ModelSpec.positive_probability`, the same score ``leukedge evaluate`` and
the app use). Per model: ROC-AUC with a 95% CI (stratified bootstrap over images and, when the
manifest has groups, over groups), and sensitivity/specificity at the threshold chosen on the
same validation images by :func:`leukedge.metrics.choose_threshold` (highest specificity with
sensitivity >= 0.99). Those are in-sample operating points: they rank the heads, they are not
an estimate of held-out performance. Log-loss and Brier score of the screening probability
(lower is better) separate heads that tie on the thresholded numbers. Per pair: the paired bootstrap difference subtype - binary
(:func:`leukedge.metrics.paired_delta`, the same resampled images for both models).

Usage::

    python -m leukedge.benchmarks.screening_head --binary models/efficientnet-lite0-binary \
        --subtype models/efficientnet-lite0-subtype --variant float32 --variant int8 \
        --csv docs/results/screening-head.csv --json screening-head.json
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import log_loss

from leukedge import metrics as M
from leukedge.data import resolve_data_dir
from leukedge.errors import DataError, LeukEdgeError
from leukedge.evaluate import binary_truth, load_model, score, select_items

log = logging.getLogger("leukedge.benchmarks.screening_head")

COLUMNS = ["model", "variant", "head", "n", "n_positive", "n_groups", "roc_auc", "roc_auc_ci95",
           "roc_auc_group_ci95", "threshold", "sensitivity", "sensitivity_ci95", "specificity", "specificity_ci95",
           "specificity_group_ci95", "log_loss", "brier", "missed_positives", "delta_vs_binary_roc_auc", "delta_roc_auc_ci95", "delta_vs_binary_specificity",
           "delta_specificity_ci95", "delta_vs_binary_sensitivity", "delta_sensitivity_ci95", "delta_vs_binary_log_loss",
           "delta_log_loss_ci95", "delta_log_loss_group_ci95"]


def score_val(model: Path, variant: str, data_dir: Path, split_csv: Path, allow_unsigned: bool = False):
    """(items, y, screening probability) of a release on the ``val`` rows of ``split_csv``."""
    pred, _ = load_model(model, variant=variant, allow_unsigned=allow_unsigned)
    items, _ = select_items(data_dir, pred.spec, split_csv, split="val")
    kept, sc = score(pred, items, spec=pred.spec, desc=f"{Path(model).name} {variant}: val", keep=())
    if len(kept) != len(items):
        raise DataError(f"{len(items) - len(kept)} validation image(s) could not be read", "check the data folder")
    return kept, binary_truth(kept, pred.spec), np.asarray(sc.probability, dtype=np.float64), pred.spec.task


def _fmt_ci(ci) -> str:
    return "" if ci is None or ci[0] is None else f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def model_row(name: str, variant: str, task: str, items, y, p, n_boot: int, seed: int) -> dict:
    op = next(o for o in M.choose_threshold(y, p, 0.99) if o.name == "default")
    q = np.clip(p, 1e-7, 1 - 1e-7)  # 1 - P(Benign) can exceed 1 by float rounding
    m = M.metrics_with_ci(y, p, op.threshold, n_boot, seed)
    groups = [it.group for it in items]
    mg = M.metrics_with_ci(y, p, op.threshold, n_boot, seed, groups=groups) if all(groups) else None
    return {"model": name, "variant": variant, "head": "4-class as screen" if task == "subtype" else "binary",
            "n": len(y), "n_positive": int(y.sum()), "n_groups": len(set(groups)) if all(groups) else "",
            "roc_auc": round(m["roc_auc"]["value"], 6), "roc_auc_ci95": _fmt_ci(m["roc_auc"]["ci95"]),
            "roc_auc_group_ci95": _fmt_ci(mg["roc_auc"]["ci95"]) if mg else "",
            "threshold": round(op.threshold, 6), "sensitivity": round(m["recall"]["value"], 4),
            "sensitivity_ci95": _fmt_ci(m["recall"]["ci95"]), "specificity": round(m["specificity"]["value"], 4),
            "specificity_ci95": _fmt_ci(m["specificity"]["ci95"]),
            "specificity_group_ci95": _fmt_ci(mg["specificity"]["ci95"]) if mg else "",
            "log_loss": round(float(log_loss(y, q)), 5), "brier": round(float(np.mean((q - y) ** 2)), 5),
            "missed_positives": " ".join(it.path for it, yi, pi in zip(items, y, p) if yi == 1 and pi < op.threshold),
            "_threshold": op.threshold}


def _image_log_loss(y, p) -> np.ndarray:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(q) + (1 - y) * np.log(1 - q))


def paired_log_loss_delta(y, p_ref, p_cand, groups, n_boot: int, seed: int) -> tuple[float, list, list]:
    """Mean per-image log-loss, candidate - reference, with paired bootstrap CIs over images and over groups."""
    d = _image_log_loss(y, p_cand) - _image_log_loss(y, p_ref)
    rng = np.random.default_rng(seed)
    over_images = [float(d[rng.integers(0, d.size, d.size)].mean()) for _ in range(n_boot)]
    ids = np.unique(groups, return_inverse=True)[1]
    n_g = ids.max() + 1
    sums, counts = np.bincount(ids, d, n_g), np.bincount(ids, minlength=n_g)
    over_groups = []
    for _ in range(n_boot):
        pick = np.bincount(rng.integers(0, n_g, n_g), minlength=n_g)
        over_groups.append(float((pick * sums).sum() / (pick * counts).sum()))
    ci = lambda v: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]  # noqa: E731
    return float(d.mean()), ci(over_images), ci(over_groups)


def compare(binary: Path, subtype: Path, variants: list[str], data_dir: Path, n_boot: int, seed: int,
            allow_unsigned: bool = False) -> list[dict]:
    split_csv = binary / "split.csv"
    if (subtype / "split.csv").read_bytes() != split_csv.read_bytes():
        raise DataError(f"{binary.name} and {subtype.name} were trained on different split manifests",
                        "the comparison needs the same validation images")
    rows = []
    for variant in variants:
        got = {}
        for model in (binary, subtype):
            items, y, p, task = score_val(model, variant, data_dir, split_csv, allow_unsigned)
            got[task] = (items, y, p)
            rows.append(model_row(model.name, variant, task, items, y, p, n_boot, seed))
        (ib, yb, pb), (is_, ys, ps) = got["binary"], got["subtype"]
        if [it.path for it in ib] != [it.path for it in is_]:
            raise DataError("the two models scored different validation images")
        tb, ts = rows[-2]["_threshold"], rows[-1]["_threshold"]
        d = M.paired_delta(yb, pb, ps, threshold=tb, threshold_cand=ts, n_boot=n_boot, seed=seed)
        rows[-1].update({"delta_vs_binary_roc_auc": round(d["roc_auc"]["delta"], 6),
                         "delta_roc_auc_ci95": _fmt_ci(d["roc_auc"]["ci95"]),
                         "delta_vs_binary_specificity": round(d["specificity"]["delta"], 4),
                         "delta_specificity_ci95": _fmt_ci(d["specificity"]["ci95"]),
                         "delta_vs_binary_sensitivity": round(d["recall"]["delta"], 4),
                         "delta_sensitivity_ci95": _fmt_ci(d["recall"]["ci95"])})
        groups = np.array([it.group or it.path for it in ib])
        dl, ci_i, ci_g = paired_log_loss_delta(yb, pb, ps, groups, n_boot, seed)
        rows[-1].update({"delta_vs_binary_log_loss": round(dl, 5), "delta_log_loss_ci95": _fmt_ci(ci_i),
                         "delta_log_loss_group_ci95": _fmt_ci(ci_g)})
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True, help="binary release folder")
    ap.add_argument("--subtype", required=True, help="subtype release folder of the same backbone and manifest")
    ap.add_argument("--variant", action="append", help="file variant(s): float32, int8, pruned-int8 (default int8)")
    ap.add_argument("--also", action="append", default=[],
                    help="another release scored on the same validation rows, unpaired (e.g. a backbone without a "
                         "subtype release)")
    ap.add_argument("--data", help="data folder (default $LEUKEDGE_DATA or ../shared/data/aria-all)")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", help="write the table here")
    ap.add_argument("--json", help="write the rows as JSON here")
    ap.add_argument("--allow-unsigned", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        rows = compare(Path(args.binary), Path(args.subtype), args.variant or ["int8"], resolve_data_dir(args.data),
                       args.n_boot, args.seed, args.allow_unsigned)
        split_csv = Path(args.binary) / "split.csv"
        for model in args.also:
            if (Path(model) / "split.csv").read_bytes() != split_csv.read_bytes():
                raise DataError(f"{model} was trained on another split manifest", "its validation rows differ")
            for variant in args.variant or ["int8"]:
                items, y, p, task = score_val(Path(model), variant, resolve_data_dir(args.data), split_csv,
                                              args.allow_unsigned)
                rows.append(model_row(Path(model).name, variant, task, items, y, p, args.n_boot, args.seed))
    except LeukEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.csv:
        write_csv(rows, Path(args.csv))
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
                                              indent=2))
    w = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
