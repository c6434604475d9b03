"""Measure a model's heatmaps on a scored image set (the ``heatmap_quality`` block of an evaluation).

:func:`measure_heatmaps` takes the model's own ``cam`` outputs, computes the localisation numbers
of :mod:`leukedge.heatmap_quality` for every image (cheap: one mask per image) and, when asked,
the deletion/insertion curves of ``faithfulness`` leukemia-positive images (costly: about
``2 * (steps + 1) * (1 + n_random)`` model calls per image).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from . import heatmap_quality as HQ
from .imageio import load_image
from .preprocess import field_tiles, normalize, preprocess_uint8
from .progress import progress

log = logging.getLogger(__name__)

#: Side of the maps compared by the genericity measure (correlation with the average map).
GENERIC_SIZE = 56
CSV_COLUMNS = ("path", "y_true", "group", *HQ.LOCALISATION_KEYS, *HQ.FAITHFULNESS_KEYS, *HQ.CLASS_FAITHFULNESS_KEYS)
METHOD = {
    "mask": "purple-stained white cells and blasts: Otsu on (R+B)/2 - G of the preprocessed image (a second "
            "Otsu above the first threshold when the first mask exceeds 30% of the image), 3x3 opening, 5x5 "
            "closing, holes filled, components < 0.2% of the image dropped",
    "lift": "heatmap mass on the mask / mask area share (1 = chance)",
    "pointing": f"heatmap peak inside the mask dilated by {HQ.POINTING_TOLERANCE:g} x image side "
                "(chance = the dilated mask's area share, pointing_chance)",
    "generic_r": "Pearson r of each map with the average map of the evaluated set (itself included)",
    "faithfulness": f"{HQ.GRID}x{HQ.GRID} blocks ranked by mean heat; deletion replaces the top 0..100% "
                    f"(in {HQ.STEPS} steps) by a Gaussian blur (sigma {HQ.BLUR_SIGMA:g} x side), insertion reveals "
                    f"them on the blurred image; the probability recorded is the screening probability the app shows "
                    f"with the map (binary: P(leukemia); subtype: P(leukemia) = 1 - P(negative class)); a "
                    f"subtype model's class_* keys record the predicted subtype's probability on the same "
                    f"images; AUC over the area fraction; random = mean of {HQ.N_RANDOM} random block orders",
    "ci": "95% percentile bootstrap of the mean (cluster bootstrap over split groups when every image has one)",
}


def faithfulness_target(predictor, cfg, cls: int | None):
    """uint8 batch -> the faithfulness targets: binary, (B,) P(leukemia); subtype, (B, 2) columns
    P(leukemia) = 1 - P(negative class) (the screening score shown with the map) and P(``cls``)."""
    def predict(batch_u8: np.ndarray) -> np.ndarray:
        out = predictor.predict(normalize(batch_u8, cfg))
        if cls is None:
            return out["probability"]
        probs = np.asarray(out["probabilities"], np.float64)
        return np.stack([probs[:, positive].sum(1), probs[:, cls]], axis=1)
    spec = predictor.spec
    positive = [spec.class_names.index(c) for c in spec.positive_classes if c in spec.class_names]
    return predict


def image_curves(predictor, cfg, image_u8: np.ndarray, heat: np.ndarray, probabilities=None, seed: int = 0) -> dict:
    """Deletion/insertion curves of one image (:func:`leukedge.heatmap_quality.perturbation_curves`)
    on the screening probability, plus the ``class_*`` curves of the predicted subtype (the argmax
    of ``probabilities``) for a subtype model."""
    cls = None if predictor.spec.task == "binary" else int(np.argmax(probabilities))
    return HQ.perturbation_curves(faithfulness_target(predictor, cfg, cls), image_u8, heat, seed=seed,
                                  extra_prefixes=() if cls is None else (HQ.CLASS_PREFIX,))


def faithfulness_indices(y_true, n: int) -> list[int]:
    """``n`` leukemia-positive images spread evenly over the set (deterministic)."""
    pos = np.flatnonzero(np.asarray(y_true) == 1)
    if n <= 0 or pos.size == 0:
        return []
    return sorted({int(pos[int(i)]) for i in np.linspace(0, pos.size - 1, min(n, pos.size))})


def measure_heatmaps(predictor, rows: list[dict], data_dir, cams: np.ndarray, faithfulness: int = 0,
                     n_boot: int = 1000, seed: int = 0, probabilities: np.ndarray | None = None,
                     tile: np.ndarray | None = None):
    """Localisation (every image) and faithfulness (``faithfulness`` positive images) of ``cams``.

    Args:
        predictor: the model (its ``predict`` runs the deletion/insertion batches).
        rows: per-image rows of the evaluation (``path`` relative to ``data_dir``, ``y_true``, ``group``).
        cams: (N, h, w) maps in ``rows`` order (the model's ``cam`` output).
        probabilities: (N, C) outputs of a subtype model (the explained class is the argmax).
        tile: (N,) the deciding tile of each image when the spec screens photos as tiles
            (:func:`leukedge.predictors.score_paths`): its ``cam`` is that tile's, so the map is
            measured on that tile's input (None: the single input of ``preprocess_uint8``).

    Returns:
        (summary dict for the evaluation JSON, per-image rows).
    """
    cfg = predictor.spec.preprocess
    data_dir = Path(data_dir)
    per: list[dict] = []
    small = np.empty((len(rows), GENERIC_SIZE, GENERIC_SIZE), np.float32)
    faith = set(faithfulness_indices([int(r["y_true"]) for r in rows], faithfulness))
    for i, r in enumerate(progress(rows, desc="heatmap quality", unit="img")):
        rgb = load_image(data_dir / r["path"])
        u8 = preprocess_uint8(rgb, cfg) if tile is None else field_tiles(rgb, cfg).inputs[int(tile[i])]
        rec = {"path": r["path"], "y_true": int(r["y_true"]), "group": r.get("group", ""),
               **HQ.localisation(u8, cams[i])}
        small[i] = HQ.heat_at(cams[i], (GENERIC_SIZE, GENERIC_SIZE))
        if i in faith:
            curves = image_curves(predictor, cfg, u8, HQ.heat_at(cams[i], u8.shape[:2]),
                                  None if probabilities is None else probabilities[i], seed=seed + i)
            rec.update({k: curves[k] for k in HQ.FAITHFULNESS_KEYS + HQ.CLASS_FAITHFULNESS_KEYS if k in curves})
            rec["_curves"] = {k: curves[k] for k in ("deletion", "insertion", "deletion_random", "insertion_random")}
        per.append(rec)
    for rec, r in zip(per, HQ.generic_correlation(small)):
        rec["generic_r"] = float(r)
    return summarise_records(per, n_boot, seed), per


def summarise_records(per: list[dict], n_boot: int = 1000, seed: int = 0) -> dict:
    """The ``heatmap_quality`` block: method, summaries (all / leukemia-positive), faithfulness, best/worst."""
    def block(sel):
        recs = [per[i] for i in sel]
        groups = [r["group"] for r in recs] if recs and all(r["group"] for r in recs) else None
        out = HQ.summarise(recs, HQ.LOCALISATION_KEYS + HQ.FAITHFULNESS_KEYS + HQ.CLASS_FAITHFULNESS_KEYS, n_boot, seed,
                           groups)
        out["n"] = len(recs)
        return out

    everything = list(range(len(per)))
    positive = [i for i, r in enumerate(per) if r["y_true"] == 1]
    curves = [r["_curves"] for r in per if "_curves" in r]
    out = {"method": METHOD, "pointing_tolerance": HQ.POINTING_TOLERANCE, "all": block(everything),
           "leukemia_positive": block(positive),
           "faithfulness_n": len(curves)}
    if curves:
        out["mean_curves"] = {k: np.mean([c[k] for c in curves], axis=0).round(6).tolist() for k in curves[0]}
    bw = HQ.best_worst(per, "lift")
    out["best"] = [per[i]["path"] for i in bw["best"]]
    out["worst"] = [per[i]["path"] for i in bw["worst"]]
    return out


def write_csv(path, per: list[dict]) -> None:
    """Per-image numbers (one row per image; faithfulness columns empty where not measured)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in per:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k, "")) for k in CSV_COLUMNS})


def card_summary(ev: dict) -> dict | None:
    """What a model card shows of an evaluation's ``heatmap_quality`` (None when it has none)."""
    hq = (ev or {}).get("heatmap_quality")
    if not hq:
        return None
    pos = hq.get("leukemia_positive") or {}
    keys = ("lift", "pointing", "pointing_chance", "generic_r", "deletion_auc", "deletion_auc_random",
            "insertion_auc", "insertion_auc_random", "deletion_vs_random", "insertion_vs_random",
            "class_deletion_vs_random", "class_insertion_vs_random")
    return {"images": "leukemia-positive images of the evaluation", "n": pos.get("n"),
            "faithfulness_n": hq.get("faithfulness_n"), **{k: pos[k] for k in keys if k in pos},
            "method": hq.get("method")}
