"""Fit a release's out-of-distribution gate and record it in the release folder.

``leukedge app calibrate-ood models/<name> --data DIR`` calls :func:`calibrate_release`:
it runs the release's own (int8) model with LiteRT over the TRAINING split to fit the
gate, over the VALIDATION split to choose the thresholds, then measures the flag rate on
the test split and on any out-of-domain folders (``../shared/data/pbc-lymphocytes``).
Writes ``ood.npz`` and ``ood.json``, sets ``spec.ood`` and adds both files' sha256 to
``card.json`` (re-hashing ``spec.json`` when the card lists it).

Two fits (:mod:`leukedge.edge_app.ood`): ``field`` (the default) fits on a subsample of
training images plus random field views of each (dihedral orientation, moderate capture
family: :mod:`leukedge.edge_app.ood_views`) and thresholds on validation images under the
same views. ``plain`` is the fit of the releases before issue 19 (every image as it is,
statistics of the raw photo). Either way the report carries the test split's flag rate in
each of the 8 dihedral views and under each capture family at its moderate severities
(:func:`measure_test`).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from leukedge.errors import DataError, ModelError
from leukedge.fileio import atomic_write_json, sha256_file
from leukedge.runtime import batch_threads
from leukedge.spec import OODConfig
from leukedge.split import read_manifest

from .inference import load_release, make_runner
from .ood import (DIHEDRAL, FEATURE_INPUTS, FIELD_IMAGE_MARGIN, IMAGE_MARGIN, MAP_IMAGE_MARGIN, METHOD, OOD_FILE,
                  OODGate, fit_gate, gate_image, image_stats)
from .ood_views import (FieldViews, capture_views, collect_views, dihedral_views, field_flags, field_views,
                        first_rows, identity_views, view_of, view_rates)

log = logging.getLogger(__name__)

REPORT_FILE = "ood.json"
FIT_METHODS = ("field", "plain")
#: Training images the field fit uses by default (each with its views: minutes of CPU, not hours).
TRAIN_LIMIT = 300
#: Test images the capture-family check uses (each under every family's moderate severities).
CAPTURE_LIMIT = 60


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted."""
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file())


def split_paths(manifest: str | os.PathLike, data_dir: str | os.PathLike) -> dict[str, list[str]]:
    """``{train|val|test: [abspath]}`` from a split manifest."""
    rows = read_manifest(manifest, data_dir)
    out = {s: [r["abspath"] for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    if not out["train"] or not out["val"]:
        raise DataError(f"{manifest}: needs train and val rows", "make one with `leukedge data split DIR`")
    return out


def _subsample(paths: list, n: int | None, seed: int = 0) -> list:
    if not n or len(paths) <= n:
        return list(paths)
    idx = np.sort(np.random.default_rng(seed).choice(len(paths), n, replace=False))
    return [paths[i] for i in idx]


def calibrate_release(folder: str | os.PathLike, train: list, val: list, checks: dict[str, list] | None = None,
                      n_components: int = 32, percentile: float = 99.0, num_threads: int | None = None,
                      max_per_split: int | None = None, image_margin: float | None = None,
                      method: str = "field", views: FieldViews | None = None, train_limit: int | None = TRAIN_LIMIT,
                      capture_limit: int | None = CAPTURE_LIMIT, tiles: bool | None = None,
                      feature_input: str | None = None) -> dict:
    """Fit and save the OOD gate of a release; returns the report (also written to ``ood.json``).

    Args:
        folder: the release folder ``models/<name>``.
        train: training-split image paths (fit).
        val: validation-split image paths (thresholds at ``percentile``).
        checks: ``{name: paths}`` measured after fitting, e.g. ``test`` and ``pbc-lymphocytes``.
            ``test`` is also measured in its 8 dihedral views and (``capture_limit`` images)
            under every capture family's moderate severities.
        n_components: principal directions kept for the feature model.
        percentile: validation percentile used as threshold.
        num_threads: interpreter threads (default: every CPU, :func:`leukedge.runtime.batch_threads`).
        max_per_split: subsample each list to at most this many images (None: all).
        image_margin: image-statistics threshold = this times its validation percentile
            (default :data:`FIELD_IMAGE_MARGIN` for the field fit, :data:`IMAGE_MARGIN` for plain).
        method: ``field`` or ``plain`` (module docstring).
        views: the field views (``field`` fit; default :class:`FieldViews`).
        train_limit: ``field`` fit: training images used (evenly subsampled; None: all).
        capture_limit: test images of the capture-family check (0: skip it).
        tiles: fit and measure on what the app's tile screen feeds the gate: each usable tile of
            every view (:func:`leukedge.edge_app.ood_views.collect_views`), thresholds over the
            validation tiles, rates per view under the field rule (flagged when more than half of
            its tiles are). Default: on when the spec has ``preprocess.capture.magnification``.
        feature_input: the model output the feature distance reads (``features`` or ``ood_map``:
            :mod:`leukedge.edge_app.ood`). Default: ``ood_map`` when the model file has it (added
            by ``leukedge compress``, :mod:`leukedge.compress.ood_map`), else ``features``.
    """
    if method not in FIT_METHODS:
        raise DataError(f"unknown OOD fit method '{method}'", "choose from " + ", ".join(FIT_METHODS))
    folder = Path(folder)
    # a release being (re)calibrated is rewritten here (spec, card): it is re-signed afterwards
    release = load_release(folder, load_ood=False, allow_unsigned=True)
    spec = release.spec
    runner = make_runner(release.model_path, num_threads or batch_threads())
    log.info("OOD gate (%s fit) for %s with %s", method, folder, release.model_path.name)
    if method == "plain":
        views, image_input = FieldViews(n_views=0), "photo"
        tr_paths = _subsample(train, max_per_split)
    else:
        views, image_input = views or FieldViews(), "field"
        tr_paths = _subsample(train, _smaller(train_limit, max_per_split))
    outputs = getattr(runner, "outputs", None) or {}
    if feature_input is None:
        feature_input = "ood_map" if "ood_map" in outputs else "features"
    if feature_input not in FEATURE_INPUTS or (outputs and feature_input not in outputs):
        raise DataError(f"the OOD gate cannot read '{feature_input}' from {release.model_path.name} "
                        f"(outputs: {sorted(outputs)})", "choose from " + ", ".join(f for f in FEATURE_INPUTS
                                                                                    if f in outputs))
    if image_margin is None:
        image_margin = (IMAGE_MARGIN if method == "plain"
                        else MAP_IMAGE_MARGIN if feature_input == "ood_map" else FIELD_IMAGE_MARGIN)
    if tiles is None:
        tiles = bool(spec.preprocess.capture is not None and spec.preprocess.capture.magnification)
    stats_fn = lambda rgb: image_stats(gate_image(rgb, image_input))  # noqa: E731
    va_paths = _subsample(val, max_per_split)
    tr_f, tr_s, _, tr_g = collect_views(runner, spec, tr_paths, field_views(views), stats_fn, "ood: train features",
                                        tiles=tiles, return_groups=True, feature_input=feature_input)
    val_views = FieldViews(views.n_views, views.capture_p, views.families, views.seed + 1)
    va_f, va_s, va_d, va_g = collect_views(runner, spec, va_paths, field_views(val_views), stats_fn,
                                           "ood: val features", tiles=tiles, return_groups=True,
                                           feature_input=feature_input)
    if len(tr_f) < 3 or len(va_f) < 2:
        raise DataError(f"too few readable images to fit the OOD gate (train {len(tr_f)}, val {len(va_f)})")
    tr_first, va_first = first_rows(tr_g), first_rows(va_g)
    # features: every input the gate sees (each tile); image statistics: once per photo
    gate = fit_gate(tr_f, va_f, tr_s[tr_first], va_s[va_first], n_components=n_components, percentile=percentile,
                    image_margin=image_margin)
    gate.fit_method, gate.image_input, gate.feature_input = method, image_input, feature_input
    ident = view_of(va_d)[va_first] == "identity"
    report = {"model": release.name, "model_file": release.model_path.name, "method": METHOD,
              "fit": {"method": method, "image_input": gate.image_input, "feature_input": feature_input, "train_images": len(tr_paths),
                      "val_images": int(ident.sum()), "views": views.to_dict() if method == "field" else None,
                      "inputs": "tiles" if tiles else "centre", "train_inputs": int(len(tr_f)),
                      "val_inputs": int(len(va_f))},
              "percentile": percentile, "image_margin": image_margin,
              "n_components": int(len(gate.variances)),
              "feature_dim": int(tr_f.shape[1]), "threshold": gate.threshold, "image_threshold": gate.img_threshold,
              "rates": {"train": view_rates(gate, tr_f, tr_s, tr_g),
                        "val": view_rates(gate, va_f, va_s, va_g, ident)}}
    if method == "field":
        report["rates"]["val_views"] = view_rates(gate, va_f, va_s, va_g)
    for name, paths in (checks or {}).items():
        paths = _subsample(paths, max_per_split)
        if name == "test":
            report.update(measure_test(gate, runner, spec, paths, capture_limit, tiles))
            report["rates"]["test"] = report["dihedral"]["test"]["identity"]
        else:
            f, s, _, g = collect_views(runner, spec, paths, identity_views, gate.stats, f"ood: {name}",
                                       tiles=tiles, return_groups=True, feature_input=feature_input)
            report["rates"][name] = view_rates(gate, f, s, g)
    gate.save(folder / OOD_FILE)
    spec.ood = OODConfig(method=METHOD, threshold=gate.threshold, rule=_rule(gate, report, len(tr_f), len(va_f)),
                         stats_file=OOD_FILE)
    spec.save(folder / "spec.json")
    atomic_write_json(folder / REPORT_FILE, report)
    _update_card(folder, [OOD_FILE, "spec.json", REPORT_FILE], report)
    log.info("wrote %s, %s; spec.ood set", folder / OOD_FILE, folder / REPORT_FILE)
    return report


def _smaller(a: int | None, b: int | None) -> int | None:
    return min(v for v in (a, b) if v) if (a or b) else None


def measure_test(gate: OODGate, runner, spec, paths: list, capture_limit: int | None = CAPTURE_LIMIT,
                 tiles: bool = False) -> dict:
    """Flag rates of test smears in each of the 8 dihedral views and (``capture_limit`` images,
    evenly spread) under each capture family at its moderate severities (``tiles``: each view
    screened as tiles, flagged by the field rule; :func:`calibrate_release`).

    Returns ``{"dihedral": {"test": {view: rates}, "test_any_view": fraction flagged in at least one
    view}, "captures": {..., "families": {name: rates},
    "severities": {"name@severity": rates}}}`` (``captures`` omitted when ``capture_limit`` is 0).
    """
    f, s, d, g = collect_views(runner, spec, paths, dihedral_views, gate.stats, "ood: test, 8 views",
                               tiles=tiles, return_groups=True, feature_input=gate.feature_input)
    first = first_rows(g)
    d = view_of(d)[first]  # one name per view
    out = {"dihedral": {"test": {k: view_rates(gate, f, s, g, d == k) for k in DIHEDRAL}}}
    fl = field_flags(gate, f, s, g)
    flagged = fl["features"] | fl["image"]
    # views come in blocks of 8 per readable image: a smear whose answer depends on how the slide lies
    image = np.asarray(g)[first] // len(DIHEDRAL)
    out["dihedral"]["test_any_view"] = (float(np.mean([flagged[image == i].any() for i in np.unique(image)]))
                                        if len(f) else 0.0)
    if not capture_limit:
        return out
    sub = _subsample(paths, capture_limit)
    f, s, d, g = collect_views(runner, spec, sub, capture_views(), gate.stats, "ood: test, capture families",
                               tiles=tiles, return_groups=True, feature_input=gate.feature_input)
    d = view_of(d)[first_rows(g)]
    family = np.array([x.split("@")[0] for x in d])
    out["captures"] = {"set": "test", "images": len(sub), "severity": "moderate",
                       "families": {n: view_rates(gate, f, s, g, family == n) for n in dict.fromkeys(family)},
                       "severities": {k: view_rates(gate, f, s, g, d == k) for k in dict.fromkeys(d)}}
    return out


def _reads(gate: OODGate) -> str:
    """What the feature distance reads, in words."""
    if gate.feature_input == "ood_map":
        return "per-channel mean and standard deviation of the model's ood_map output, its last residual block"
    return "the model's pooled features output"


def _rule(gate: OODGate, report: dict, n_train: int, n_val: int) -> str:
    """The spec's one-paragraph description of how the gate was fitted."""
    p, m = report["percentile"], report["image_margin"]
    if report["fit"]["method"] == "plain":
        return (f"features: low-rank Mahalanobis ({len(gate.variances)} PCA directions + residual) "
                f"fitted on {n_train} training images, threshold = {p:g}th percentile of "
                f"{n_val} validation distances; image colour statistics gate: {m:g} x "
                f"the same percentile (threshold {gate.img_threshold:.3f}); flagged if either exceeds "
                f"its threshold")
    v = report["fit"]["views"]
    if report["fit"].get("inputs") == "tiles":
        inputs = (f"{n_train} feature vectors (each usable tile of every view at the training cell size, as the "
                  f"app's tile screen feeds the gate)")
        val = f"{n_val} validation tiles"
        tail = ("a photo is flagged by its image statistics or when more than half of its usable tiles are "
                "flagged by the features")
    else:
        inputs, val = f"{n_train} feature vectors", f"{n_val} validation views"
        tail = "flagged if either exceeds its threshold; one inference per image"
    return (f"field fit: {report['fit']['train_images']} training images, each with {v['n_views']} random views "
            f"(one of the 8 rotations/flips, then with probability {v['capture_p']:g} one capture family at a "
            f"moderate severity: {', '.join(v['families'])}), {inputs}; features ({_reads(gate)}): low-rank "
            f"Mahalanobis ({len(gate.variances)} PCA directions + residual), threshold = {p:g}th percentile of "
            f"{val} ({report['fit']['val_images']} images with the same kind of views); image "
            f"colour statistics of the eyepiece field of view (the photo when it has none): {m:g} x the same "
            f"percentile (threshold {gate.img_threshold:.3f}); {tail}")


def _update_card(folder: Path, names: list[str], report: dict) -> None:
    """Refresh ``card.json`` for the changed files and record the OOD rates.

    With :mod:`leukedge.card` (the release's card builder) the card is rebuilt from the
    folder's files (it hashes ``ood.npz`` and ``spec.json`` itself); otherwise the sha256 of
    ``names`` are updated in place.
    """
    path = folder / "card.json"
    try:
        from leukedge.card import write_card
    except ImportError:
        write_card = None
    if write_card is not None and "schema" in json.loads(path.read_text()):
        write_card(folder)
    card = json.loads(path.read_text())
    files = card.setdefault("files", {})
    for n in names:
        sha = sha256_file(folder / n)
        if n == "spec.json" and "spec_sha256" in card:
            card["spec_sha256"] = sha
        files[n] = sha  # the runtime reads the spec, the statistics and the report: the card lists them
    card["ood"] = {"method": report["method"], "fit": (report.get("fit") or {}).get("method", "plain"),
                   "percentile": report["percentile"],
                   "threshold": report["threshold"], "image_threshold": report["image_threshold"],
                   "rates": {k: v["flagged"] for k, v in report["rates"].items()}}
    atomic_write_json(path, card)


def calibrate_from_data(folder, data_dir, split_csv=None, ood_dirs=(), **kw) -> dict:
    """:func:`calibrate_release` with the splits of ``split_csv`` over ``data_dir``.

    ``split_csv`` defaults to the release's own ``split.csv`` (the manifest the model was trained
    with), else ``splits/<data folder name>.split.csv`` (relative to the cwd).
    """
    data_dir = Path(data_dir)
    if split_csv:
        split_csv = Path(split_csv)
    elif (Path(folder) / "split.csv").exists():
        split_csv = Path(folder) / "split.csv"
    else:
        split_csv = Path("splits") / f"{data_dir.name}.split.csv"
    if not split_csv.exists():
        raise DataError(f"{split_csv}: no split manifest",
                        f"make one with `leukedge data split {data_dir}` or pass --split")
    sp = split_paths(split_csv, data_dir)
    checks = {"test": sp["test"]} if sp["test"] else {}
    for d in ood_dirs:
        files = image_files(d)
        if not files:
            raise DataError(f"{d}: no images")
        checks[Path(d).name] = [str(f) for f in files]
    try:
        return calibrate_release(folder, sp["train"], sp["val"], checks, **kw)
    except KeyError as exc:  # pragma: no cover - defensive
        raise ModelError(f"unexpected model output layout ({exc})") from None
