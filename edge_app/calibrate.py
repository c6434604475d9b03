"""Fit a release's out-of-distribution gate and record it in the release folder.

``leukedge app calibrate-ood models/<name> --data DIR`` calls :func:`calibrate_release`:
it runs the release's own (int8) model with LiteRT over the TRAINING split to fit the
gate, over the VALIDATION split to choose the thresholds, then measures the flag rate on
the test split and on any out-of-domain folders (``../shared/data/pbc-lymphocytes``).
Writes ``ood.npz`` and ``ood.json``, sets ``spec.ood`` and adds both files' sha256 to
``card.json`` (re-hashing ``spec.json`` when the card lists it).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from leukedge.errors import DataError, ModelError
from leukedge.fileio import atomic_write_json, sha256_file
from leukedge.spec import OODConfig
from leukedge.split import read_manifest

from .inference import load_release, make_runner
from .ood import IMAGE_MARGIN, METHOD, OOD_FILE, collect, fit_gate, flag_rate

log = logging.getLogger(__name__)

REPORT_FILE = "ood.json"


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
                      max_per_split: int | None = None, image_margin: float = IMAGE_MARGIN) -> dict:
    """Fit and save the OOD gate of a release; returns the report (also written to ``ood.json``).

    Args:
        folder: the release folder ``models/<name>``.
        train: training-split image paths (fit).
        val: validation-split image paths (thresholds at ``percentile``).
        checks: ``{name: paths}`` measured after fitting, e.g. ``test`` and ``pbc-lymphocytes``.
        n_components: principal directions kept for the feature model.
        percentile: validation percentile used as threshold.
        num_threads: interpreter threads.
        max_per_split: subsample each list to at most this many images (None: all).
        image_margin: image-statistics threshold = this times its validation percentile.
    """
    folder = Path(folder)
    # a release being (re)calibrated is rewritten here (spec, card): it is re-signed afterwards
    release = load_release(folder, load_ood=False, allow_unsigned=True)
    spec = release.spec
    runner = make_runner(release.model_path, num_threads)
    log.info("OOD gate for %s with %s", folder, release.model_path.name)
    tr_f, tr_s = collect(runner, spec, _subsample(train, max_per_split), "ood: train features")
    va_f, va_s = collect(runner, spec, _subsample(val, max_per_split), "ood: val features")
    if len(tr_f) < 3 or len(va_f) < 2:
        raise DataError(f"too few readable images to fit the OOD gate (train {len(tr_f)}, val {len(va_f)})")
    gate = fit_gate(tr_f, va_f, tr_s, va_s, n_components=n_components, percentile=percentile,
                    image_margin=image_margin)
    report = {"model": release.name, "model_file": release.model_path.name, "method": METHOD,
              "percentile": percentile, "image_margin": image_margin,
              "n_components": int(len(gate.variances)),
              "feature_dim": int(tr_f.shape[1]), "threshold": gate.threshold, "image_threshold": gate.img_threshold,
              "rates": {"train": flag_rate(gate, tr_f, tr_s), "val": flag_rate(gate, va_f, va_s)}}
    for name, paths in (checks or {}).items():
        f, s = collect(runner, spec, _subsample(paths, max_per_split), f"ood: {name}")
        report["rates"][name] = flag_rate(gate, f, s)
    gate.save(folder / OOD_FILE)
    spec.ood = OODConfig(method=METHOD, threshold=gate.threshold,
                         rule=(f"features: low-rank Mahalanobis ({len(gate.variances)} PCA directions + residual) "
                               f"fitted on {len(tr_f)} training images, threshold = {percentile:g}th percentile of "
                               f"{len(va_f)} validation distances; image colour statistics gate: {image_margin:g} x "
                               f"the same percentile (threshold {gate.img_threshold:.3f}); flagged if either exceeds "
                               f"its threshold"),
                         stats_file=OOD_FILE)
    spec.save(folder / "spec.json")
    atomic_write_json(folder / REPORT_FILE, report)
    _update_card(folder, [OOD_FILE, "spec.json", REPORT_FILE], report)
    log.info("wrote %s, %s; spec.ood set", folder / OOD_FILE, folder / REPORT_FILE)
    return report


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
    card["ood"] = {"method": report["method"], "percentile": report["percentile"],
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
