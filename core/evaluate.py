"""Evaluate a model honestly: metrics with bootstrap CIs, calibration, operating points, shortcut audit.

The library behind ``leukedge evaluate`` (no TensorFlow at import: Keras models load it
lazily through :mod:`leukedge.predictors`). :func:`run_evaluation` scores the test split of
a manifest (or every image of a folder) with any predictor, writes the result JSON, the
per-image ``predictions.csv`` and the heatmaps of the gallery images, then
:mod:`leukedge.report` rebuilds figures and pages from those files.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import metrics as M
from .data import scan
from .errors import DataError, ModelError, did_you_mean
from .fileio import atomic_write_json, atomic_write_text, sha256_file
from .heatmap_eval import measure_heatmaps, write_csv as write_heatmap_csv
from .predictions_csv import PRED_COLUMNS, read_predictions, write_predictions  # noqa: F401 (public here too)
from .predictors import load_predictor, score_paths
from .preprocess import preprocess_file
from .report import build_report
from .spec import ModelSpec
from .split import read_manifest

log = logging.getLogger(__name__)

SCHEMA = 1
SMALL_CLASS_N = 100
#: Corner fraction masked by the shortcut audit unless told otherwise (0 turns the audit off).
DEFAULT_CORNER_MASK = 0.15
#: Caveats that hold for every evaluation on this dataset (the card lists them once as limitations).
GENERIC_CAVEATS = (
    "All images come from one hospital (Taleqani Hospital, Tehran; 89 patients, one stain protocol and "
    "microscope): these numbers say nothing about other labs, stains, microscopes or phone cameras.",
    "No patient IDs are published: the split groups blocks of consecutive file numbers and near-duplicate "
    "images, an approximation of patient grouping; images of one patient may still fall into two splits, "
    "which would flatter the numbers.",
    "Stain colour differs between classes and many images carry a scale-bar/text stamp in a corner: "
    "the model may rely on such shortcuts (see the corner-mask audit and the Grad-CAM gallery).",
)


@dataclass
class Item:
    """One image to score: ``path`` relative to the data folder, ``abspath``, folder ``cls``."""

    path: str
    abspath: str
    cls: str
    split: str = "all"
    sha256: str = ""
    group: str = ""


@dataclass
class ModelInfo:
    """What was evaluated: ``kind`` (run, release, tflite, keras-file), ``folder`` and ``file``."""

    path: Path
    kind: str
    folder: Path
    file: Path | None = None
    sha256: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self, predictor) -> dict:
        return {"path": str(self.path), "kind": self.kind, "predictor": getattr(predictor, "kind", None),
                "file": self.file.name if self.file else None, "sha256": self.sha256,
                "name": predictor.spec.name, "backbone": predictor.spec.backbone, "task": predictor.spec.task,
                "version": predictor.spec.version, "weights": predictor.spec.weights,
                "signature": getattr(predictor, "signature", "unverified")}


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def load_model(model: str | os.PathLike, variant: str | None = None, allow_unsigned: bool = False):
    """Load a predictor and describe what it is. Returns ``(predictor, ModelInfo)``.

    A release folder must be signed by a trusted key and complete (``allow_unsigned``
    accepts an unsigned one); a lone ``.tflite`` or a run folder loads ``unverified``.
    """
    p = Path(model)
    if not p.exists():
        raise ModelError(f"{p}: no such model", "pass models/<name>, a .tflite file (spec.json beside it) or a run folder")
    pred = load_predictor(p, variant=variant, allow_unsigned=allow_unsigned)
    folder = (p if p.is_dir() else p.parent).resolve()
    if pred.kind == "keras":
        f = pred.run_dir / pred.name.split("/")[-1]
        kind = "run" if p.is_dir() else "keras-file"
    else:
        f = Path(pred.runner.path)
        kind = "release" if p.is_dir() else "tflite"
    return pred, ModelInfo(p, kind, folder, f, sha256_file(f))


def default_split(info: ModelInfo) -> Path | None:
    """The manifest that travels with the model: ``split.csv`` in its run or release folder."""
    for cand in (info.folder / "split.csv", info.folder / "split.manifest.csv"):
        if cand.exists():
            return cand
    return None


def check_classes(classes, spec: ModelSpec, where: str) -> None:
    """Every folder class must mean something to the model (else a clear error)."""
    if spec.task == "binary":
        known = [spec.negative_class] + list(spec.positive_classes)
    else:
        known = list(spec.class_names)
    unknown = sorted(set(classes) - set(known))
    if unknown:
        raise DataError(f"{where}: class folder(s) {unknown} are not classes of model '{spec.name}'",
                        f"the model knows {known}; rename or remove the folder ({did_you_mean(unknown[0], known)})")


def select_items(data_dir, spec: ModelSpec, split_csv=None, use_all: bool = False,
                 split: str = "test") -> tuple[list[Item], list[dict] | None]:
    """The images to score: ``split`` rows of the manifest, or every image with ``use_all``.

    Returns:
        (items, manifest rows or None).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder", "pass --data DIR (one subfolder per class)")
    if use_all:
        recs = scan(data_dir)
        check_classes({r.cls for r in recs}, spec, str(data_dir))
        return [Item(r.relpath, r.path, r.cls, "all") for r in recs], None
    if split_csv is None:
        raise DataError("no split manifest for this model",
                        "pass --split CSV (e.g. splits/aria-all.split.csv), or --all to score every image in --data")
    rows = read_manifest(split_csv, data_dir)
    chosen = [r for r in rows if r["split"] == split]
    if not chosen:
        raise DataError(f"{split_csv}: has no '{split}' rows")
    check_classes({r["class"] for r in chosen}, spec, str(split_csv))
    return [Item(r["path"], r["abspath"], r["class"], r["split"], r.get("sha256", ""), r.get("group", ""))
            for r in chosen], rows


def binary_truth(items: list[Item], spec: ModelSpec) -> np.ndarray:
    return np.array([0 if it.cls == spec.negative_class else 1 for it in items], dtype=int)


# --------------------------------------------------------------------------------------------
# Scoring and metrics
# --------------------------------------------------------------------------------------------
def score(predictor, items: list[Item], spec: ModelSpec | None = None, desc: str = "evaluate", keep=("cam",)):
    """Score items; returns (kept items, Scores) with unreadable images dropped (listed in Scores.errors)."""
    sc = score_paths(predictor, [it.abspath for it in items], keep=keep, desc=desc, spec=spec)
    by_path = {it.abspath: it for it in items}
    return [by_path[p] for p in sc.paths], sc


def threshold_and_rule(spec: ModelSpec, threshold: float | None) -> tuple[float, str]:
    if threshold is not None:
        return float(threshold), "given on the command line (--threshold)"
    for op in spec.operating_points:
        if op.name == "default" and abs(op.threshold - spec.threshold) < 1e-12:
            return float(spec.threshold), op.rule
    return float(spec.threshold), "the spec's threshold (no rule recorded in spec.json)"


def binary_block(y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int, seed: int) -> dict:
    pred = (p >= threshold).astype(int)
    return {"metrics": M.metrics_with_ci(y, p, threshold, n_boot, seed),
            "confusion_matrix": M.confusion(y, pred, [0, 1])}


def caveats(spec: ModelSpec, y: np.ndarray, use_all: bool, audit: dict | None, overlap: int | None,
            threshold_from_val: bool) -> list[str]:
    """Plain-language reasons the numbers may not transfer (written into the JSON and the card)."""
    n_neg, n_pos = int(np.sum(y == 0)), int(np.sum(y == 1))
    out = list(GENERIC_CAVEATS)
    if min(n_neg, n_pos) < SMALL_CLASS_N:
        out.append(f"Small evaluation set ({n_pos} positive, {n_neg} negative images): the 95% intervals are wide; "
                   f"specificity rests on {n_neg} benign images.")
    if spec.task == "subtype":
        out.append("Subtype labels are per patient (flow cytometry), and images of one patient share a subtype: "
                   "subtype accuracy is the number most inflated by any patient overlap between splits.")
    if audit is not None:
        d = audit["delta"]
        out.append("Corner-mask audit (fraction {:.2f}): accuracy {:+.4f}, ROC-AUC {:+.4f}, sensitivity {:+.4f}, "
                   "specificity {:+.4f} when the corners are masked.".format(
                       audit["corner_mask"], *(d[k]["delta"] or 0.0 for k in ("accuracy", "roc_auc", "recall",
                                                                              "specificity"))))
    if use_all:
        msg = "Scored every image of the folder (--all), not a held-out test split."
        if overlap:
            msg += (f" {overlap} of them are byte-identical to training/validation images of this model's split "
                    "manifest: those numbers are NOT an unbiased estimate.")
        out.append(msg)
    if not threshold_from_val:
        out.append("The decision threshold was not chosen on a validation split of this model.")
    return out


def _overlap_with_training(items: list[Item], manifest: Path | None, data_dir: Path) -> int | None:
    """How many scored images are byte-identical to the model's train/val images (None: unknown)."""
    if manifest is None or not Path(manifest).exists():
        return None
    seen = {r.get("sha256") for r in read_manifest(manifest) if r["split"] in ("train", "val") and r.get("sha256")}
    if not seen:
        return None
    n = 0
    for it in items:
        try:
            it.sha256 = it.sha256 or sha256_file(it.abspath)
        except DataError:  # unreadable: scoring reports it
            continue
        n += it.sha256 in seen
    return n


def evaluate_predictor(predictor, items: list[Item], *, threshold: float | None = None, n_boot: int = 1000,
                       seed: int = 0, mask_corners: float = 0.0, val_items: list[Item] | None = None,
                       use_all: bool = False, overlap: int | None = None) -> tuple[dict, list[dict], dict]:
    """Score ``items`` and compute every number of the evaluation.

    Args:
        predictor: from :func:`leukedge.predictors.load_predictor`.
        items: images to score.
        threshold: decision threshold (default: the spec's, chosen on validation at training).
        n_boot: bootstrap replicates for the CIs.
        mask_corners: > 0 re-scores with the corners masked (shortcut audit) and reports the change.
        val_items: validation images, scored to choose operating points when the spec has none.

    Returns:
        (result dict, per-image prediction rows, extra arrays {"cam": (N, h, w)} if the model has them).
    """
    spec = predictor.spec
    kept, sc = score(predictor, items, desc="evaluate: all images" if use_all else "evaluate: test split")
    if not kept:
        raise DataError("no image could be read", "check the data folder (see the unreadable files)")
    y = binary_truth(kept, spec)
    p = np.asarray(sc.probability, dtype=np.float64)
    ops = list(spec.operating_points)
    threshold_from_val = bool(ops)
    t, rule = None, None
    if not ops and val_items:
        vkept, vsc = score(predictor, val_items, desc="evaluate: val", keep=())
        ops = M.choose_threshold(binary_truth(vkept, spec), vsc.probability)
        threshold_from_val = True
        if threshold is None:
            default = next(o for o in ops if o.name == "default")
            t, rule = float(default.threshold), default.rule + " (chosen at evaluation time)"
    if t is None:
        t, rule = threshold_and_rule(spec, threshold)
    block = binary_block(y, p, t, n_boot, seed)
    pred = (p >= t).astype(int)
    result: dict = {
        "schema": SCHEMA,
        "metrics": block["metrics"],
        "confusion_matrix": block["confusion_matrix"],
        "confusion_labels": list(spec.class_names) if spec.task == "binary" else [spec.negative_class or "negative",
                                                                                  "leukemia"],
        "n": int(len(y)),
        "n_positive": int(y.sum()), "n_negative": int((1 - y).sum()),
        "class_counts": {c: int(sum(it.cls == c for it in kept)) for c in sorted({it.cls for it in kept})},
        "threshold": t, "threshold_rule": rule,
        "operating_points": [],
        "calibration": M.calibration_summary(y, p),
        "classification_report": M.binary_classification_report(
            y, p, t, spec.class_names if spec.task == "binary" else [spec.negative_class or "negative", "leukemia"]),
        "unreadable": sc.errors,
        "n_boot": n_boot, "seed": seed,
    }
    if kept and all(it.group for it in kept):
        result["metrics_group_ci"] = M.metrics_with_ci(y, p, t, n_boot, seed, groups=[it.group for it in kept])
        result["n_groups"] = len({it.group for it in kept})
    for op in ops:
        b = binary_block(y, p, op.threshold, n_boot, seed)
        result["operating_points"].append({"name": op.name, "threshold": op.threshold, "rule": op.rule,
                                           "validation": {"sensitivity": op.sensitivity,
                                                          "specificity": op.specificity},
                                           **b})
    rows = []
    for i, it in enumerate(kept):
        row = {"path": it.path, "split": it.split, "class": it.cls, "y_true": int(y[i]),
               "probability": f"{p[i]:.9g}", "prediction": int(pred[i]), "correct": int(pred[i] == y[i]),
               "group": it.group}
        rows.append(row)
    if spec.task == "subtype":
        lab = np.array([spec.class_names.index(it.cls) for it in kept])
        result["subtype"] = M.multiclass_metrics(lab, sc.probabilities, spec.class_names, n_boot, seed)
        for i, row in enumerate(rows):
            row["label"] = int(lab[i])
            row["predicted_label"] = int(np.argmax(sc.probabilities[i]))
            row.update({f"p_{c}": f"{v:.9g}" for c, v in zip(spec.class_names, sc.probabilities[i])})
    audit = None
    if mask_corners and mask_corners > 0:
        masked_spec = ModelSpec.from_dict(spec.to_dict())
        masked_spec.preprocess = spec.preprocess.replace(corner_mask=float(mask_corners))
        mkept, msc = score(predictor, kept, spec=masked_spec, desc="evaluate: corners masked", keep=())
        if len(mkept) != len(kept):
            raise DataError("an image became unreadable during the corner-mask pass")
        pm = np.asarray(msc.probability, dtype=np.float64)
        audit = {"corner_mask": float(mask_corners),
                 "metrics": M.metrics_with_ci(y, pm, t, n_boot, seed),
                 "confusion_matrix": M.confusion(y, (pm >= t).astype(int), [0, 1]),
                 "delta": M.paired_delta(y, p, pm, t, n_boot, seed),
                 "mcnemar": M.mcnemar(y, pred, (pm >= t).astype(int)),
                 "decisions_changed": int(np.sum((pm >= t) != (p >= t))),
                 "mean_abs_probability_change": float(np.mean(np.abs(pm - p)))}
        if spec.task == "subtype":
            lab = np.array([spec.class_names.index(it.cls) for it in kept])
            audit["subtype_accuracy"] = M.multiclass_metrics(lab, msc.probabilities, spec.class_names,
                                                             n_boot, seed)["accuracy"]
        result["shortcut_audit"] = audit
        for i, row in enumerate(rows):
            row["probability_masked"] = f"{pm[i]:.9g}"
    result["caveats"] = caveats(spec, y, use_all, audit, overlap, threshold_from_val)
    err_groups: dict[str, int] = {}
    for it, ok in zip(kept, pred == y):
        if not ok:
            err_groups[it.group or "(no group)"] = err_groups.get(it.group or "(no group)", 0) + 1
    result["errors_by_group"] = dict(sorted(err_groups.items(), key=lambda kv: -kv[1]))
    n_err = int(np.sum(pred != y))
    if n_err >= 3 and any(it.group for it in kept):
        g, k = next(iter(result["errors_by_group"].items()))
        if k >= n_err / 2:
            result["caveats"].append(f"{k} of the {n_err} errors come from one split group ({g}: consecutive file "
                                     "numbers, probably one patient): errors cluster by patient, so the effective "
                                     "sample size is smaller than n and the CIs are optimistic.")
    if overlap is not None:
        result["overlap_with_training"] = overlap
    if "tiles" in sc.extra:  # the spec screens photos as tiles (score_paths): say how many were
        n_tiles = np.asarray(sc.extra["tiles"])
        result["tiling"] = {"rule": spec.preprocess.capture.tile_rule, "images": int(len(n_tiles)),
                            "tiled": int((n_tiles > 1).sum()), "max_tiles": int(n_tiles.max()),
                            "note": "each photo scored as the app screens it: cut into tiles at the training "
                                    "cell size, every tile combined by the rule (no per-tile gates)"}
    extra = {k: v for k, v in sc.extra.items() if k in ("cam", "tile")}
    if "cam" in extra and spec.task == "subtype":
        extra["probabilities"] = np.asarray(sc.probabilities)
    return result, rows, extra


# --------------------------------------------------------------------------------------------
# The whole evaluation (files written: predictions.csv via leukedge.predictions_csv)
# --------------------------------------------------------------------------------------------
def run_evaluation(model, data_dir, *, split_csv=None, use_all: bool = False, json_out=None, report_dir=None,
                   mask_corners: float = DEFAULT_CORNER_MASK, threshold: float | None = None, gradcam: int = 4,
                   variant: str | None = None, n_boot: int = 1000, seed: int = 0,
                   allow_unsigned: bool = False, heatmap_quality: bool = True, faithfulness: int = 0) -> dict:
    """Everything ``leukedge evaluate`` does; returns the result dict (also written to ``json_out``).

    With ``report_dir``: ``evaluation.json``, ``predictions.csv``, ``cams.npz`` (heatmaps of
    the gallery and error images), ``history.csv`` (a run's training curves) and then the
    figures and pages built by :func:`leukedge.report.build_report` from those files.

    When the model has a ``cam`` output and ``heatmap_quality`` is on, the result gets a
    ``heatmap_quality`` block (:mod:`leukedge.heatmap_eval`: lift, pointing game, genericity for
    every image; deletion/insertion curves for ``faithfulness`` leukemia-positive images) and the
    report folder ``heatmap_quality.csv`` + ``heatmap_quality.npz`` (maps of the best/worst images).
    """
    predictor, info = load_model(model, variant, allow_unsigned)
    spec = predictor.spec
    data_dir = Path(data_dir)
    model_split = default_split(info)
    split_path = Path(split_csv) if split_csv else model_split
    if not use_all and split_path is None:
        raise DataError(f"{info.path}: no split.csv beside the model",
                        "pass --split CSV (the manifest the model was trained with), or --all to score every image")
    items, rows = select_items(data_dir, spec, split_path, use_all)
    val_items = None
    if rows is not None and not spec.operating_points:
        val_items = [Item(r["path"], r["abspath"], r["class"], "val") for r in rows if r["split"] == "val"] or None
    overlap = _overlap_with_training(items, model_split or split_path, data_dir) if use_all else None
    result, pred_rows, extra = evaluate_predictor(predictor, items, threshold=threshold, n_boot=n_boot, seed=seed,
                                                  mask_corners=mask_corners, val_items=val_items,
                                                  use_all=use_all, overlap=overlap)
    if use_all:  # entries scan() left out (broken links, FIFOs, folders named x.jpg) are unreadable too
        from .data import scan_folder

        for s in scan_folder(data_dir)[1]:
            result["unreadable"][str(data_dir / s["path"])] = s["reason"]
    hq_per = None
    if heatmap_quality and "cam" in extra:
        result["heatmap_quality"], hq_per = measure_heatmaps(
            predictor, pred_rows, data_dir, extra["cam"], faithfulness=faithfulness, n_boot=n_boot, seed=seed,
            probabilities=extra.get("probabilities"), tile=extra.get("tile"))
    elif faithfulness:
        log.warning("this model has no 'cam' output: no heatmap quality measured")
    result["model"] = info.to_dict(predictor)
    result["spec"] = {"preprocess": spec.to_dict()["preprocess"], "class_names": spec.class_names,
                      "negative_class": spec.negative_class, "positive_classes": spec.positive_classes,
                      "spec_threshold": spec.threshold}
    # a dataset name and a manifest hash, never this machine's paths (the record travels with the release)
    result["data"] = {"name": data_dir.resolve().name, "mode": "all" if use_all else "test split",
                      "split_manifest": Path(split_path).name if split_path and not use_all else None,
                      "split_manifest_sha256": sha256_file(split_path) if split_path and not use_all else None}
    if model_split and split_path and not use_all and sha256_file(model_split) != sha256_file(split_path):
        result["caveats"].append(f"The split manifest given ({Path(split_path).name}, sha256 "
                                 f"{sha256_file(split_path)[:12]}) differs from the model's own "
                                 f"({Path(model_split).name}, sha256 {sha256_file(model_split)[:12]}): "
                                 "test images may have been used in training.")
    if report_dir:
        report_dir = Path(report_dir)
        report_dir.mkdir(parents=True, exist_ok=True)
        _paths_relative_to(result, report_dir)
        write_predictions(report_dir / "predictions.csv", pred_rows)
        hist = find_history(info)
        if hist is not None:
            atomic_write_text(report_dir / "history.csv", hist.read_text())
        if gradcam and gradcam > 0:
            _write_cams(predictor, pred_rows, data_dir, extra, report_dir / "cams.npz", gradcam)
        if hq_per is not None:
            _write_heatmap_quality(report_dir, hq_per, pred_rows, extra["cam"], result["heatmap_quality"],
                                   extra.get("tile"))
        result["report"] = "."
        atomic_write_json(report_dir / "evaluation.json", result)
        build_report(report_dir, data_dir)
    if json_out:
        atomic_write_json(json_out, result)
    return result


def _write_heatmap_quality(report_dir: Path, per: list[dict], rows: list[dict], cams, hq: dict,
                           tile=None) -> None:
    """Per-image numbers (CSV) and the maps of the best/worst images (for the report's gallery)."""
    write_heatmap_csv(report_dir / "heatmap_quality.csv", per)
    index = {r["path"]: i for i, r in enumerate(rows)}
    idx = [index[p] for p in hq["best"] + hq["worst"]]
    np.savez_compressed(report_dir / "heatmap_quality.npz", paths=np.array([rows[i]["path"] for i in idx]),
                        cams=np.asarray(cams, np.float32)[idx] if idx else np.zeros((0, 1, 1), np.float32),
                        lift=np.array([per[i]["lift"] for i in idx], np.float64),
                        group=np.array(["best"] * len(hq["best"]) + ["worst"] * len(hq["worst"])),
                        **({"tile": np.asarray(tile, int)[idx]} if tile is not None and idx else {}))


def _paths_relative_to(result: dict, folder: Path) -> None:
    """A report written into the model's own folder (a release) names that folder's files
    relative to it, so the record stays true after the folder is moved (releases are staged in a
    temporary folder and renamed into place)."""
    folder = folder.resolve()
    for section, key in (("model", "path"), ("data", "split_manifest")):
        value = result.get(section, {}).get(key)
        if value:
            try:
                result[section][key] = str(Path(value).resolve().relative_to(folder)) or "."
            except ValueError:
                pass


def find_history(info: ModelInfo) -> Path | None:
    """The training curves: ``history.csv`` of the run folder, or of the run a release was made from
    (``compress.json`` records its source model file)."""
    if (info.folder / "history.csv").exists():
        return info.folder / "history.csv"
    cj = info.folder / "compress.json"
    if cj.exists():
        try:
            src = Path(json.loads(cj.read_text()).get("source", ""))
        except (ValueError, AttributeError):
            return None
        for cand in (src.parent / "history.csv", src / "history.csv"):
            if str(src) and cand.exists():
                return cand
    return None


def gallery_selection(rows: list[dict], n_per_group: int, max_errors: int = 60) -> dict[str, list[int]]:
    """Row indices for the Grad-CAM gallery (TP/FP/FN/TN, most confident first) and the error page."""
    groups: dict[str, list[tuple[float, int]]] = {"TP": [], "FP": [], "FN": [], "TN": []}
    for i, r in enumerate(rows):
        y, pr, p = int(r["y_true"]), int(r["prediction"]), float(r["probability"])
        g = ("T" if y == pr else "F") + ("P" if pr == 1 else "N")
        groups[g].append((-p if pr == 1 else p, i))  # most confident decisions first
    sel = {g: [i for _, i in sorted(v)[:n_per_group]] for g, v in groups.items()}
    errors = sorted(groups["FP"] + groups["FN"])
    sel["errors"] = [i for _, i in errors[:max_errors]]
    return sel


def _write_cams(predictor, rows, data_dir: Path, extra: dict, out: Path, n_per_group: int) -> None:
    """Heatmaps of the gallery + error images: the model's own ``cam`` output, else the predictor's
    :meth:`~leukedge.predictors.Predictor.heatmaps` (Keras: GradientTape)."""
    sel = gallery_selection(rows, n_per_group)
    idx = sorted({i for v in sel.values() for i in v})
    if not idx:
        return
    if "cam" in extra:
        hm = predictor.spec.heatmap
        cams, source = extra["cam"][idx], (f"tflite cam output (in-graph closed form, {hm.method}"
                                           f"{', guided by ' + hm.layer if hm.layer else ''})")
    elif getattr(predictor, "heatmap_source", None):
        x = np.stack([preprocess_file(data_dir / rows[i]["path"], predictor.spec.preprocess) for i in idx])
        cams, source = predictor.heatmaps(x), predictor.heatmap_source
    else:
        log.warning("this model has no 'cam' output: no Grad-CAM gallery")
        return
    tiles = {"tile": np.asarray(extra["tile"])[idx].astype(int)} if "cam" in extra and "tile" in extra else {}
    np.savez_compressed(out, index=np.array(idx), paths=np.array([rows[i]["path"] for i in idx]),
                        cams=np.asarray(cams, np.float32), source=np.array(source), **tiles,
                        **{f"sel_{k}": np.array(v, dtype=int) for k, v in sel.items()})
