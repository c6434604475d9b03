"""`leukedge bench tiles`: validate the rule that combines a full-field photo's tiles.

Full-field photos are made from VALIDATION smears with the ``magnification`` capture family
(factors 0.5, 0.7, 0.85 and 1.0; each also with an ``eyepiece`` photo on top) and screened
through the release's :class:`leukedge.edge_app.inference.Screener` with magnification on,
i.e. cut into tiles at the training cell size (:func:`leukedge.preprocess.field_tiles`) with
the per-tile gates and the field rule of :mod:`leukedge.edge_app.tiling`. Each photo is
screened once; every rule of :data:`leukedge.capture.TILE_RULES` is then applied to the same
per-tile probabilities (the gates do not depend on the rule), at the spec's threshold.

A release whose spec has magnification off is screened with a copy of its spec, in memory,
with magnification on and ``cell_diameter`` measured on (up to ``fit_n``) TRAINING smears of
the split by :func:`leukedge.train.augment.fit_capture_config` (or the ``cell_diameter`` the
spec's capture settings already record, when training fitted it and switched magnification off) (a spec without capture
normalisation also gets ``fov_crop``, a no-op on lab smears, so the eyepiece photos are cropped
to their field of view). The release folder is not changed.

Reported per rule and condition: sensitivity and specificity with exact 95% CIs among the
scored photos, retakes, flags, correct (of all photos), missed leukemia; and the same without
the gates (all tiles combined) to judge the rule on every photo. The rule chosen is the one
with pooled sensitivity >= 0.99 and then the highest specificity (else the highest
sensitivity), pooled over every condition.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leukedge import __version__
from leukedge.capture import TILE_RULES, combine_tiles
from leukedge.capture_sim import FAMILIES, get_family, mosaic_field
from leukedge.edge_app.inference import Screener, load_release
from leukedge.errors import ConfigError, DataError
from leukedge.imageio import load_image
from leukedge.metrics import clopper_pearson
from leukedge.spec import with_magnification
from leukedge.split import read_manifest
from leukedge.train.augment import fit_capture_config

from .captures import FIELDS, OUTCOMES, neighbours_of, outcome, pick_rows, smears

log = logging.getLogger(__name__)

SCHEMA = "leukedge-tiles v1"
#: The sensitivity the chosen rule must reach first (then the highest specificity).
MIN_SENSITIVITY = 0.99


@dataclass
class TileRuleConfig:
    """What ``leukedge bench tiles`` runs.

    Attributes:
        model: release folder.
        data: data folder the split manifest's paths are relative to.
        split: split manifest CSV (default: the release's ``split.csv``).
        limit: at most this many validation smears, spread evenly (None: all).
        factors: magnification factors of the full-field photos (1.0: the smear as it is).
        eyepiece_level: also each factor with an eyepiece photo of this level on top (0: none).
        seed: base seed of the perturbations.
        fit_n: training smears the red-cell diameter is measured on (spec with magnification off).
        variant: model file variant (default int8).
        threads: interpreter threads.
        allow_unsigned: development only.
        field_kind: how a lower-magnification photo is made: ``mirror`` (the ``magnification`` capture
            family: the smear tiled with its mirror images) or ``mosaic`` (the smear and eight
            neighbours of its split group, :func:`leukedge.capture_sim.mosaic_field`).
    """

    model: str
    data: str
    split: str | None = None
    limit: int | None = 100
    factors: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.85, 1.0])
    eyepiece_level: int = 2
    seed: int = 0
    fit_n: int = 200
    variant: str | None = None
    threads: int | None = None
    allow_unsigned: bool = False
    field_kind: str = "mirror"


def _conditions(cfg: TileRuleConfig) -> list[tuple[str, float]]:
    for f in cfg.factors:
        if not 0.1 <= float(f) <= 1.0:
            raise ConfigError(f"magnification factor must be in [0.1, 1], got {f}")
    if cfg.eyepiece_level and cfg.eyepiece_level not in FAMILIES["eyepiece"].severities:
        raise ConfigError(f"--eyepiece-level must be 0 or one of {FAMILIES['eyepiece'].severities}, "
                          f"got {cfg.eyepiece_level}")
    if cfg.field_kind not in FIELDS:
        raise ConfigError(f"unknown field '{cfg.field_kind}'", "choose one of " + ", ".join(FIELDS))
    if cfg.field_kind == "mosaic" and any(float(f) < 1 / 3 for f in cfg.factors):
        raise ConfigError("--field mosaic needs magnification factors >= 1/3 (a 3 x 3 mosaic)")
    out = [("magnification", float(f)) for f in cfg.factors]
    if cfg.eyepiece_level:
        out += [("magnification+eyepiece", float(f)) for f in cfg.factors]
    return out


def make_photo(rgb: np.ndarray, kind: str, factor: float, eyepiece_level: int, seed: list[int],
               neighbours: list[np.ndarray] | None = None) -> np.ndarray:
    """The full-field photo of one smear: magnification ``factor`` (with ``neighbours``: a mosaic of
    the smear and them, :func:`leukedge.capture_sim.mosaic_field`; else the mirror-tiled family),
    then the eyepiece."""
    rng = np.random.default_rng(seed)
    if neighbours is not None:
        img = mosaic_field([rgb] + list(neighbours), factor, rng)
    else:
        img = get_family("magnification").apply(rgb, factor, rng)
    if kind == "magnification+eyepiece":
        img = get_family("eyepiece").apply(img, eyepiece_level, rng)
    return img


def cell_diameter_for(spec, train_paths: list, fit_n: int = 200) -> tuple[float, str]:
    """(red-cell diameter, where it comes from) for switching magnification on: the value the
    spec's capture settings record (training fitted it, then switched magnification off), else
    the median over up to ``fit_n`` training smears
    (:func:`leukedge.train.augment.fit_capture_config`)."""
    cap = spec.preprocess.capture
    if cap is not None and cap.cell_diameter:
        log.info("red-cell diameter %.2f px from the spec's capture settings", cap.cell_diameter)
        return float(cap.cell_diameter), "spec (recorded at training)"
    if not train_paths:
        raise DataError("the split has no training rows to measure the red-cell diameter on")
    d = fit_capture_config(train_paths, color="none", fov_crop=False, magnification=True, limit=fit_n).cell_diameter
    if not d:
        raise DataError("the red-cell diameter could not be measured on the training smears")
    return float(d), f"measured on up to {fit_n} training smears"


def _prepare(cfg: TileRuleConfig):
    release = load_release(cfg.model, cfg.variant, allow_unsigned=cfg.allow_unsigned)
    split = Path(cfg.split) if cfg.split else release.folder / "split.csv"
    if not split.is_file():
        raise DataError(f"{split}: no split manifest", "pass --split CSV (e.g. splits/aria-all.split.csv)")
    rows = read_manifest(split, cfg.data)
    val = [r for r in rows if r["split"] == "val"]
    if not val:
        raise DataError(f"{split}: no validation rows", "the rule is chosen on the validation split")
    cap = release.spec.preprocess.capture
    measured = source = None
    if cap is None or not cap.magnification:
        measured, source = cell_diameter_for(release.spec, [r["abspath"] for r in rows if r["split"] == "train"],
                                             cfg.fit_n)
        off, release = release, dataclasses.replace(release, spec=with_magnification(release.spec, measured))
    else:
        off = dataclasses.replace(release, spec=dataclasses.replace(
            release.spec, preprocess=release.spec.preprocess.replace(capture=dataclasses.replace(cap, magnification=False))))
    return release, off, pick_rows(val, cfg.limit), measured, source, val


def _rates(group: list[dict], rule: str, threshold: float, gated: bool) -> dict:
    tp = fn = tn = fp = retake = flagged = 0
    for p in group:
        if gated and p["quality"] != "ok":
            retake += 1
            continue
        if gated and p["ood"]:
            flagged += 1
            continue
        probs = p["used_probs"] if gated else p["all_probs"]
        pos = combine_tiles(probs, rule) >= threshold
        if p["positive"]:
            tp, fn = tp + pos, fn + (not pos)
        else:
            fp, tn = fp + pos, tn + (not pos)
    n = len(group)
    out = {"n": n, "tp": tp, "fn": fn, "tn": tn, "fp": fp,
           "sensitivity": tp / (tp + fn) if tp + fn else None,
           "sensitivity_ci95": clopper_pearson(tp, tp + fn) if tp + fn else None,
           "specificity": tn / (tn + fp) if tn + fp else None,
           "specificity_ci95": clopper_pearson(tn, tn + fp) if tn + fp else None,
           "correct": round((tp + tn) / n, 4) if n else None, "missed": fn}
    if gated:
        out.update(retake=retake, flagged=flagged)
    return out


def _off(group: list[dict]) -> dict:
    """Outcome counts of the photos screened with magnification off (one input, no tiles)."""
    out = {k: sum(p["off"] == k for p in group) for k in OUTCOMES + ("error",)}
    out["missed"] = sum(p["off"] == "wrong" and p["positive"] for p in group)
    out["n"] = len(group)
    out["correct_rate"] = round(out["correct"] / len(group), 4) if group else None
    return out


def choose_rule(pooled: dict[str, dict]) -> tuple[str, str]:
    """(rule, why): sensitivity >= :data:`MIN_SENSITIVITY` first, then the highest specificity;
    when none reaches it, the highest sensitivity (then specificity)."""
    def key(r):
        m = pooled[r]
        return (m["sensitivity"] or 0.0, m["specificity"] or 0.0)

    ok = [r for r in TILE_RULES if (pooled[r]["sensitivity"] or 0.0) >= MIN_SENSITIVITY]
    if ok:
        best = max(ok, key=lambda r: (pooled[r]["specificity"] or 0.0, pooled[r]["sensitivity"] or 0.0))
        return best, f"sensitivity >= {MIN_SENSITIVITY} ({', '.join(ok)}), then the highest specificity"
    best = max(TILE_RULES, key=key)
    return best, f"no rule reaches sensitivity {MIN_SENSITIVITY}: the highest sensitivity, then specificity"


def run_tile_rule(cfg: TileRuleConfig) -> dict:
    """Run the validation; returns the result document (schema :data:`SCHEMA`)."""
    conditions = _conditions(cfg)
    release, off, chosen, measured, source, val_rows = _prepare(cfg)
    spec = release.spec
    screener = Screener(release, num_threads=cfg.threads)
    single = Screener(off, num_threads=cfg.threads)  # the same photos with magnification off: one input
    threshold = screener.threshold
    photos: dict[tuple[str, float], list[dict]] = {c: [] for c in conditions}
    t0 = time.perf_counter()
    short = 0
    for i, r, rgb, positive in smears(chosen, spec, "tiles"):
        near = None
        if cfg.field_kind == "mosaic":
            near = [load_image(x["abspath"]) for x in neighbours_of(r, val_rows)]
            short += len(near) < 8
        for ci, (kind, factor) in enumerate(conditions):
            img = make_photo(rgb, kind, factor, cfg.eyepiece_level, [cfg.seed, i, ci], near)
            res = screener.screen_image(img, heatmap=False)
            if res.error:
                log.warning("%s: %s", r["path"], res.error)
                continue
            tl = res.tiling or {}
            per = tl.get("per_tile") or []
            photos[(kind, factor)].append({
                "positive": positive, "quality": res.quality, "ood": res.ood,
                "used_probs": [t["probability"] for t in per if t["used"]],
                "all_probs": [t["probability"] for t in per], "tiles": res.tiles or 0,
                "fallback": tl.get("fallback") is not None, "scale": tl.get("scale"),
                "by": sorted(k for k in ("image", "features") if (res.ood_details or {}).get(k, 0) > 1.0),
                "off": outcome(res_off := single.screen_image(img, heatmap=False), positive),
                "ms": res.timings.get("total", 0.0), "ms_off": res_off.timings.get("total", 0.0)})
    results = []
    for kind, factor in conditions:
        group = photos[(kind, factor)]
        row = {"photo": kind, "factor": factor, "n": len(group),
               "tiles_mean": round(float(np.mean([p["tiles"] for p in group])), 2) if group else None,
               "fallback": sum(p["fallback"] for p in group),
               # the cell-size estimate at work: photos rescaled (outside the tolerance) and the median factor
               "rescaled": sum(1 for p in group if p.get("scale") not in (None, 1.0)),
               "scale_median": _median([p["scale"] for p in group if p.get("scale") is not None]),
               "flagged_by_image": sum("image" in p["by"] for p in group),
               "flagged_by_features": sum("features" in p["by"] for p in group),
               "magnification_off": _off(group),
               "ms_per_photo": {"on": round(float(np.mean([p["ms"] for p in group])), 1) if group else None,
                                "off": round(float(np.mean([p["ms_off"] for p in group])), 1) if group else None},
               "rules": {rule: {"gated": _rates(group, rule, threshold, True),
                                "ungated": _rates(group, rule, threshold, False)} for rule in TILE_RULES}}
        results.append(row)
    everything = [p for g in photos.values() for p in g]
    pooled = {rule: _rates(everything, rule, threshold, True) for rule in TILE_RULES}
    pooled_ungated = {rule: _rates(everything, rule, threshold, False) for rule in TILE_RULES}
    rule, why = choose_rule(pooled)
    pooled_off = _off(everything)
    cap = spec.preprocess.capture
    return {
        "schema": SCHEMA, "leukedge_version": __version__,
        "model": {"name": spec.name, "version": release.version, "variant": release.variant,
                  "sha256": release.model_sha256, "task": spec.task, "threshold": threshold},
        "capture": {**cap.to_dict(), "color_target": "(from the spec)" if cap.color_target else {},
                    "magnification_in_release": measured is None,
                    "cell_diameter_measured_on_training": measured,
                    "cell_diameter_from": source},
        "data": {"folder": Path(cfg.data).name, "split": "val", "n_smears": len(chosen), "limit": cfg.limit,
                 "classes": {k: sum(1 for r in chosen if r["class"] == k) for k in sorted({r["class"] for r in chosen})}},
        "factors": list(cfg.factors), "eyepiece_level": cfg.eyepiece_level, "seed": cfg.seed,
        "field": cfg.field_kind, "mosaic_short_groups": short if cfg.field_kind == "mosaic" else None,
        "min_sensitivity": MIN_SENSITIVITY,
        "results": results, "pooled": pooled, "pooled_ungated": pooled_ungated, "pooled_magnification_off": pooled_off,
        "chosen": {"rule": rule, "why": why},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _f(v, ci=None) -> str:
    if v is None:
        return "-"
    s = f"{v:.3f}"
    return s + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _median(values: list) -> float | None:
    return round(float(np.median(values)), 3) if values else None


def markdown(doc: dict) -> str:
    """The result as Markdown (rebuilt from the JSON document)."""
    m, d, c = doc["model"], doc["data"], doc["capture"]
    src = ("the release's spec" if c["magnification_in_release"] else
           f"a copy of the spec with magnification on, cell diameter {c['cell_diameter']} px "
           f"({c.get('cell_diameter_from') or 'measured on training smears'})")
    lines = [f"# Tile rule validation: {m['name']} ({m['variant']})", "",
             f"{d['n_smears']} validation smears ({', '.join(f'{k} {v}' for k, v in d['classes'].items())}); "
             f"full-field photos at magnification {', '.join(str(f) for f in doc['factors'])}"
             + (f", each also through an eyepiece (level {doc['eyepiece_level']})" if doc["eyepiece_level"] else "")
             + f"; screened as tiles with {src}; threshold {m['threshold']:.4g}; seed {doc['seed']}."
             + (" Lower-magnification photos: mosaics of each smear and 8 neighbouring smears of its split group "
                "(`--field mosaic`)." if doc.get("field") == "mosaic" else
                " Lower-magnification photos: the smear tiled with its mirror images (`--field mirror`)."), "",
             "Gated: among the photos the quality and OOD gates let through (what a user sees). "
             "Ungated: every tile combined, every photo (the rule alone). Sensitivity and specificity with exact "
             "95% CIs.", "",
             "| photo | factor | n | tiles (mean; centre-input fallbacks) | rule | retake | flagged (image / features) | sensitivity "
             "| specificity | missed | correct (of all) | ungated sensitivity | ungated specificity |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        for rule, v in r["rules"].items():
            g, u = v["gated"], v["ungated"]
            lines.append(f"| {r['photo']} | {r['factor']} | {r['n']} | {r['tiles_mean']}; {r['fallback']} | {rule} | {g['retake']} | "
                         f"{g['flagged']} ({r['flagged_by_image']} / {r['flagged_by_features']}) | {_f(g['sensitivity'], g['sensitivity_ci95'])} | "
                         f"{_f(g['specificity'], g['specificity_ci95'])} | {g['missed']} | "
                         f"{_pct(g['correct'])} | "
                         f"{_f(u['sensitivity'], u['sensitivity_ci95'])} | {_f(u['specificity'], u['specificity_ci95'])} |")
    lines += ["", "The same photos with magnification OFF (one input: the whole photo resized, as the release ships "
              "without tiling) against ON with the chosen rule:", "",
              "| photo | factor | off: correct | off: flagged | off: retake | off: missed | on: correct | on: flagged "
              "| on: retake | on: missed | ms per photo (off / on) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        o, g = r["magnification_off"], r["rules"][doc["chosen"]["rule"]]["gated"]
        ms = r.get("ms_per_photo") or {}
        lines.append(f"| {r['photo']} | {r['factor']} | {_pct(o['correct_rate'])} | {o['flagged']} | {o['retake']} | "
                     f"{o['missed']} | {_pct(g['correct'])} | {g['flagged']} | {g['retake']} | {g['missed']} | "
                     f"{ms.get('off', '-')} / {ms.get('on', '-')} |")
    o, g = doc["pooled_magnification_off"], doc["pooled"][doc["chosen"]["rule"]]
    lines.append(f"| **pooled** | | {_pct(o['correct_rate'])} | {o['flagged']} | {o['retake']} | {o['missed']} | "
                 f"{_pct(g['correct'])} | {g['flagged']} | {g['retake']} | {g['missed']} | |")
    lines += ["", "The cell-size estimate (tolerance "
              f"{c.get('scale_tolerance')}: factors within it are not applied):", "",
              "| photo | factor | photos rescaled | median scale applied | centre-input fallbacks |", "|---|---|---|---|---|"]
    for r in doc["results"]:
        lines.append(f"| {r['photo']} | {r['factor']} | {r.get('rescaled', '-')} of {r['n']} | "
                     f"{r.get('scale_median', '-')} | {r['fallback']} |")
    lines += ["", "Pooled over every condition:", "",
              "| rule | sensitivity | specificity | missed | correct (of all) | ungated sensitivity | ungated specificity |",
              "|---|---|---|---|---|---|---|"]
    for rule, g in doc["pooled"].items():
        u = doc["pooled_ungated"][rule]
        lines.append(f"| {rule} | {_f(g['sensitivity'], g['sensitivity_ci95'])} | "
                     f"{_f(g['specificity'], g['specificity_ci95'])} | {g['missed']} | "
                     f"{_pct(g['correct'])} | {_f(u['sensitivity'], u['sensitivity_ci95'])} | "
                     f"{_f(u['specificity'], u['specificity_ci95'])} |")
    ch = doc["chosen"]
    lines += ["", f"**Chosen rule: `{ch['rule']}`** ({ch['why']}). Record it as `capture.tile_rule` in the spec."]
    return "\n".join(lines) + "\n"
