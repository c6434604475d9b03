"""`leukedge bench captures`: how a release answers field captures of real smears.

For each capture family and severity (:mod:`leukedge.capture_sim`), every chosen test-split
smear is perturbed (seeded per smear, family and severity) and screened through the
release's :class:`leukedge.edge_app.inference.Screener`, the path of ``leukedge predict``
(quality gate, the one preprocessing, the model, the OOD gate, the decision at the spec's
threshold). Each answer is one of:

* ``correct``: scored, and the leukemia decision matches the smear's class;
* ``retake``: the quality gate asked for a retake (its advice is counted too); a photo it found
  over-exposed or blurred but the release referred anyway (its ``rule_in``) is scored as an answer
  and counted under ``rule_in`` by quality status;
* ``flagged``: the OOD gate flagged it;
* ``wrong``: scored with the wrong decision; ``missed`` counts the wrong answers on
  leukemia smears (called negative), a subset of ``wrong``.

Each row also says which smears it got wrong (``wrong_smears``, manifest paths) and how many of
its wrong / missed answers are on smears the clean photo answered correctly (``wrong_new`` /
``missed_new``): the errors the capture condition caused, apart from the model's own errors on the
lab's photos (the clean row). ``ci`` holds exact (Clopper-Pearson) 95% intervals of the correct and wrong rates.

``normalize`` optionally runs capture normalisation (:mod:`leukedge.capture`) on each
perturbed photo before it reaches the Screener, as an app-side step: the committed models
were not trained with it, so those numbers are an indication of what it could absorb.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leukedge import __version__
from leukedge.capture import CaptureConfig, prepare_field
from leukedge.capture_sim import COMPOUND, FAMILIES, get_family, mosaic_field
from leukedge.colornorm import COLOR_METHODS, fit_targets
from leukedge.edge_app.inference import Screener, load_release
from leukedge.errors import ConfigError, DataError, ImageError
from leukedge.imageio import load_image
from leukedge.metrics import clopper_pearson
from leukedge.progress import progress
from leukedge.split import read_manifest

log = logging.getLogger(__name__)

SCHEMA = "leukedge-captures v1"
OUTCOMES = ("correct", "retake", "flagged", "wrong", "missed")
FIELDS = ("mirror", "mosaic")
NORMALIZATIONS = ("none", "fov") + tuple(f"fov+{m}" for m in COLOR_METHODS if m != "none")


@dataclass
class CaptureBenchConfig:
    """What ``leukedge bench captures`` runs.

    Attributes:
        model: release folder (or one of its model files).
        data: data folder the split manifest's paths are relative to.
        split: split manifest CSV (default: the release's ``split.csv``).
        limit: at most this many test smears, spread evenly over the test rows (None: all).
        families: family names (default: all registered).
        seed: base seed of the perturbations.
        variant: model file variant (default int8).
        normalize: capture normalisation before screening (``none``, ``fov``, ``fov+background``...).
        fit_n: training smears the colour targets are fitted on (``normalize`` with colour).
        threads: interpreter threads.
        subset: the split of the manifest the smears come from (``test``; ``val`` to tune).
        allow_unsigned: development only: screen with a release whose signature is missing or wrong.
        field: how the ``magnification`` family makes a lower-power photo: ``mirror`` (the smear
            tiled with its mirror images, the family itself) or ``mosaic`` (the smear and up to 8
            neighbouring smears of its split group, :func:`leukedge.capture_sim.mosaic_field`: real,
            different cells, so a tile rule does not see one cell several times).
    """

    model: str
    data: str
    split: str | None = None
    limit: int | None = None
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    seed: int = 0
    variant: str | None = None
    normalize: str = "none"
    fit_n: int = 100
    threads: int | None = None
    subset: str = "test"
    allow_unsigned: bool = False
    field: str = "mirror"


def pick_rows(rows: list[dict], limit: int | None) -> list[dict]:
    """``limit`` rows spread evenly over ``rows`` (deterministic; keeps the class mix)."""
    if not limit or limit >= len(rows):
        return list(rows)
    idx = np.linspace(0, len(rows) - 1, int(limit)).round().astype(int)
    return [rows[i] for i in idx]


def _manifest(cfg: CaptureBenchConfig, folder: Path) -> list[dict]:
    split = Path(cfg.split) if cfg.split else folder / "split.csv"
    if not split.is_file():
        raise DataError(f"{split}: no split manifest", "pass --split CSV (e.g. splits/aria-all.split.csv)")
    return read_manifest(split, cfg.data)


def neighbours_of(row: dict, rows: list[dict], n: int = 8) -> list[dict]:
    """Up to ``n`` other rows of ``row``'s split group (the same slide), nearest in file order."""
    if not row.get("group"):
        return []
    same = sorted((r for r in rows if r.get("group") == row["group"] and r["path"] != row["path"]),
                  key=lambda r: r["path"])
    at = sum(r["path"] < row["path"] for r in same)  # the row's place among them
    order = sorted(range(len(same)), key=lambda k: (abs(k - at + 0.5), k))
    return [same[k] for k in order[:n]]


def normalizer(cfg: CaptureBenchConfig, rows: list[dict], input_size: int):
    """``f(rgb) -> rgb`` for ``cfg.normalize`` (None for ``none``); colour targets fitted on
    ``fit_n`` training smears of the manifest."""
    if cfg.normalize not in NORMALIZATIONS:
        raise ConfigError(f"unknown --normalize '{cfg.normalize}'", "choose one of " + ", ".join(NORMALIZATIONS))
    if cfg.normalize == "none":
        return None
    color = cfg.normalize.split("+", 1)[1] if "+" in cfg.normalize else "none"
    target = {}
    if color != "none":
        train = pick_rows([r for r in rows if r["split"] == "train"], cfg.fit_n)
        target = fit_targets(load_image(r["abspath"]) for r in train)
    ccfg = CaptureConfig(fov_crop=True, color=color, color_target=target)
    return lambda rgb: prepare_field(rgb, ccfg, input_size)[0]


def outcome(res, positive: bool) -> str:
    """One screening's outcome (see the module docstring)."""
    if res.error:
        return "error"
    if res.decision == "retake":
        return "retake"
    if res.decision == "out-of-distribution":
        return "flagged"
    return "correct" if (res.decision == "positive") == positive else "wrong"


def smears(rows: list[dict], spec, desc: str):
    """``(index, row, decoded RGB, is leukemia)`` for each readable smear of ``rows``, with a
    progress bar; an unreadable file is logged and skipped (its index is not reused)."""
    for i, r in enumerate(progress(rows, desc=desc, unit="smear")):
        try:
            rgb = load_image(r["abspath"])
        except ImageError as exc:
            log.warning("skipped %s", exc.one_line())
            continue
        positive = spec.label_of(r["class"]) != 0 if spec.task == "binary" else r["class"] in spec.positive_classes
        yield i, r, rgb, positive


def _seed(base: int, i: int, fam: int, sev: int) -> np.random.Generator:
    return np.random.default_rng([base, i, fam, sev])


def summarize(results: list[dict]) -> dict:
    """The summary of a result's rows: the moderate rows' worst and summed outcomes, the clean row.

    The ``moderate_*`` keys cover the single families (issue 19's targets, one family at a time);
    compound families (:data:`leukedge.capture_sim.COMPOUND`, several families in one photo) are
    summarised apart under ``compound``: per family and severity, its outcome rates and counts."""
    mod = [r for r in results if r["moderate"] and r["family"] not in COMPOUND]
    comp = {}
    for r in results:
        if r["family"] in COMPOUND:
            comp.setdefault(r["family"], {})[f"{r['severity']:g}"] = {
                "moderate": r["moderate"], "n": r["n"], **{k: r["rates"][k] for k in ("correct", "retake", "flagged", "wrong")},
                "missed": r["missed"], "missed_new": r.get("missed_new"),
                "borderline": r["advice"].get("borderline", 0)}
    return ({"compound": comp} if comp else {}) | {
        "moderate_rows": len(mod),
        "moderate_rows_90": sum(r["rates"]["correct"] >= 0.9 for r in mod),
        "moderate_min_correct": min((r["rates"]["correct"] for r in mod), default=None),
        "moderate_max_wrong": max((r["rates"]["wrong"] for r in mod), default=None),
        "moderate_missed": sum(r["missed"] for r in mod),
        "moderate_max_wrong_new": max((r["wrong_new"] / max(r["n"], 1) for r in mod), default=None),
        "moderate_missed_new": sum(r["missed_new"] for r in mod),
        "clean_correct": results[0]["rates"]["correct"],
        # answered "borderline, take another field" (the release's grey zone, counted as retakes)
        "moderate_borderline": sum(r["advice"].get("borderline", 0) for r in mod),
        "moderate_photos": sum(r["n"] for r in mod),
        "clean_borderline": results[0]["advice"].get("borderline", 0),
    }


def run_captures(cfg: CaptureBenchConfig) -> dict:
    """Run the benchmark; returns the result document (schema :data:`SCHEMA`)."""
    fams = [get_family(n) for n in cfg.families]
    release = load_release(cfg.model, cfg.variant, allow_unsigned=cfg.allow_unsigned)
    spec = release.spec
    rows = _manifest(cfg, release.folder)
    test = [r for r in rows if r["split"] == cfg.subset]
    if not test:
        raise DataError(f"the split manifest has no '{cfg.subset}' rows", "use --subset test or val")
    chosen = pick_rows(test, cfg.limit)
    norm = normalizer(cfg, rows, spec.preprocess.input_size)
    screener = Screener(release, num_threads=cfg.threads)
    conditions = [("none", 0, False)] + [(f.name, s, s in f.moderate) for f in fams for s in f.severities]
    counts = {(c[0], c[1]): dict.fromkeys(OUTCOMES + ("error", "n"), 0)
              | {"advice": {}, "rule_in": {}, "subtype_correct": 0, "ood": [], "wrong_smears": []}
              for c in conditions}
    clean_ok: set[int] = set()
    t0 = time.perf_counter()
    if cfg.field not in FIELDS:
        raise ConfigError(f"unknown field '{cfg.field}'", f"choose one of {', '.join(FIELDS)}")
    mosaic = cfg.field == "mosaic" and any(f.name == "magnification" for f in fams)
    for i, r, rgb, positive in smears(chosen, spec, "captures"):
        near = [load_image(x["abspath"]) for x in neighbours_of(r, test)] if mosaic else None
        for fi, (name, sev, _) in enumerate(conditions):
            if name == "none":
                img = rgb
            else:
                rng = _seed(cfg.seed, i, list(FAMILIES).index(name), get_family(name).severities.index(sev))
                img = (mosaic_field([rgb] + near, sev, rng) if near is not None and name == "magnification"
                       else get_family(name).apply(rgb, sev, rng))
            if norm is not None:
                img = norm(img)
            res = screener.screen_image(img, heatmap=False)
            c = counts[(name, sev)]
            c["n"] += 1
            if res.ood_score is not None:
                c["ood"].append(res.ood_score)
            o = outcome(res, positive)
            c[o] += 1
            if name == "none" and o == "correct":
                clean_ok.add(i)
            if o == "wrong":
                c["wrong_smears"].append((i, r["path"], positive))
                c["missed"] += int(positive)
            if o == "retake":
                why = "borderline" if getattr(res, "borderline", False) else res.quality  # grey zone, not the photo
                c["advice"][why] = c["advice"].get(why, 0) + 1
            elif getattr(res, "rule_in", False):  # referred although the quality gate found the photo wanting
                c["rule_in"][res.quality] = c["rule_in"].get(res.quality, 0) + 1
            if o == "correct" and res.probabilities and r["class"] in res.probabilities:
                c["subtype_correct"] += int(max(res.probabilities, key=res.probabilities.get) == r["class"])
    results = []
    for name, sev, moderate in conditions:
        c = counts[(name, sev)]
        n = max(c["n"], 1)
        new = [(path, pos) for i, path, pos in c["wrong_smears"] if i in clean_ok]
        row = {"family": name, "severity": sev, "moderate": moderate, "n": c["n"],
               **{k: c[k] for k in OUTCOMES}, "error": c["error"],
               "rates": {k: round(c[k] / n, 4) for k in OUTCOMES},
               "ci": {k: [round(v, 4) for v in clopper_pearson(c[k], c["n"])] for k in ("correct", "wrong")} if c["n"] else {},
               "wrong_new": len(new), "missed_new": sum(pos for _, pos in new),
               "wrong_smears": [path for _, path, _ in c["wrong_smears"]],
               "advice": c["advice"], "rule_in": c["rule_in"],
               "ood_score_median": round(float(np.median(c["ood"])), 4) if c["ood"] else None}
        if spec.task == "subtype":
            row["subtype_correct"] = c["subtype_correct"]
        results.append(row)
    n_classes = {k: sum(1 for r in chosen if r["class"] == k) for k in sorted({r["class"] for r in chosen})}
    return {
        "schema": SCHEMA, "leukedge_version": __version__,
        "model": {"name": spec.name, "version": release.version, "variant": release.variant,
                  "sha256": release.model_sha256, "task": spec.task, "threshold": screener.threshold,
                  "rule_out": getattr(screener, "rule_out", None)},
        "data": {"folder": Path(cfg.data).name, "split": cfg.subset, "n_smears": len(chosen), "limit": cfg.limit,
                 "classes": n_classes},
        "normalize": cfg.normalize, "seed": cfg.seed, "field": cfg.field,
        "families": {f.name: {"unit": f.unit, "severities": list(f.severities), "moderate": list(f.moderate)}
                     for f in fams},
        "results": results,
        "summary": summarize(results),
        "seconds": round(time.perf_counter() - t0, 1),
    }
