"""``leukedge compress``: a training run -> a release folder with parity proven.

Steps (each logged, the long ones with timings): load the run (``best.h5``, ``spec.json``,
``split.csv``, ``config.json`` for the data folder) -> float32 TFLite -> calibration on
training images -> full-integer int8 (+ int16x8 / float16 / dynamic on request) -> optionally prune,
fine-tune, strip and quantize (``pruned-int8``) -> commit the release folder atomically ->
parity of every quantized file against float32 on the test split (selective quantization on
the validation split when int8 fails a gate) -> evaluation and model card when those stages
are installed.
"""
from __future__ import annotations

import dataclasses

import importlib.util
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from leukedge.errors import DataError, ModelError
from leukedge.portable import data_record, find_dataset, portable_dir
from leukedge.spec import ModelSpec

from .config import CompressConfig
from .provenance import portable_file, resolved
from .recipe_keys import from_config
from .sizes import size_summary

log = logging.getLogger(__name__)


@dataclass
class Source:
    """What compress starts from: a training run's Keras model, or a release's float32 file
    (``float_tflite``: int8 is re-derived from it; pruning, QAT and the other variants need
    the Keras model)."""

    folder: Path
    model_file: Path
    spec: ModelSpec
    split_csv: Path | None
    config: dict
    float_tflite: Path | None = None

    @property
    def is_release(self) -> bool:
        return self.float_tflite is not None


#: What a release source cannot do (each needs the Keras model of the training run).
NEEDS_KERAS = ("int16x8", "float16", "dynamic")


def _release_source(folder: Path, f32: Path) -> Source:
    spec = ModelSpec.load(folder)
    made = folder / "compress.json"
    config = {}
    if made.exists():
        try:
            record = json.loads(made.read_text())
        except ValueError:
            record = {}
        # the dataset by name (older records: a machine's absolute data_dir)
        found = find_dataset((record.get("data") or {}).get("name") or record.get("data_dir"))
        config = {"data_dir": str(found)} if found else {}
    split = folder / "split.csv"
    return Source(folder, f32, spec, split if split.exists() else None, config, float_tflite=f32)


def resolve_source(path) -> Source:
    """A run folder, a ``.h5`` file, a release folder or its ``*.float32.tflite`` -> what compress needs."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such run folder or model",
                         "pass runs/<run> (with best.h5), a .h5 file, or a release folder models/<name>")
    if p.is_dir():
        p = p.resolve()
        model_file = p / "best.h5"
        if not model_file.exists():
            f32 = sorted(p.glob("*.float32.tflite"))
            if len(f32) == 1:
                return _release_source(p, f32[0])
            if list(p.glob("*.tflite")):
                raise ModelError(f"{p}: a release folder without exactly one *.float32.tflite",
                                 "compress re-quantizes a release from its float32 file; or pass the training run")
            raise ModelError(f"{p}: no best.h5", "pass a finished (or checkpointed) training run folder")
        folder = p
    elif p.name.endswith(".float32.tflite"):
        return _release_source(p.resolve().parent, p.resolve())
    else:
        if p.suffix != ".h5":
            raise ModelError(f"{p}: not a Keras .h5 model or a float32 .tflite",
                             "pass runs/<run>, its best.h5, or a release folder")
        folder, model_file = p.resolve().parent, p.resolve()
    spec = ModelSpec.load(folder)
    cfg_path = folder / "config.json"
    config = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    split = folder / "split.csv"
    return Source(folder, model_file, spec, split if split.exists() else None, config)


def needs_keras(cfg: "CompressConfig") -> list[str]:
    """The requested stages that need a Keras model (a release source recovers one)."""
    return [v for v in cfg.variants if v in NEEDS_KERAS] + (["prune"] if cfg.prune is not None else []) + \
        (["qat"] if cfg.qat is not None else []) + (["quantize.reexport_float32"] if cfg.reexport_float32 else [])


def heatmap_changes(cfg: "CompressConfig", spec: ModelSpec) -> bool:
    """True when the recipe's heatmap differs from what ``spec``'s files compute."""
    have = spec.heatmap
    return cfg.heatmap != have.method or (cfg.heatmap == "guided7x14" and cfg.heatmap_layer is not None
                                          and cfg.heatmap_layer != have.layer)


def _heatmap_spec(cfg: "CompressConfig", spec: ModelSpec, model) -> ModelSpec:
    """``spec`` with the recipe's heatmap, its guiding layer resolved on ``model``."""
    from .export import with_heatmap

    if cfg.heatmap_layer and cfg.heatmap == "guided7x14":
        d = spec.to_dict()
        d["heatmap"] = {"method": "guided7x14", "layer": cfg.heatmap_layer}
        spec = ModelSpec.from_dict(d)
    out = with_heatmap(spec, model, cfg.heatmap)
    log.info("heatmap: %s%s", out.heatmap.method, f" (guided by {out.heatmap.layer})" if out.heatmap.layer else "")
    return out


def tile_rule_changes(cfg: "CompressConfig", spec: ModelSpec) -> bool:
    """True when the recipe sets a tile rule other than the one ``spec`` screens with."""
    cap = spec.preprocess.capture
    return cfg.tile_rule is not None and (cap is None or cap.tile_rule != cfg.tile_rule)


def magnification_changes(cfg: "CompressConfig", spec: ModelSpec) -> bool:
    """True when the recipe switches capture magnification, or changes its diameter or tolerance."""
    cap = spec.preprocess.capture
    on = bool(cap is not None and cap.magnification)
    if cfg.magnification is not None and cfg.magnification != on:
        return True
    if not (cfg.magnification or on):
        return False
    return ((cfg.cell_diameter is not None and (cap is None or cap.cell_diameter != cfg.cell_diameter))
            or (cfg.scale_tolerance is not None and (cap is None or cap.scale_tolerance != cfg.scale_tolerance)))


#: ``screening`` keys copied into ``preprocess.capture`` as they are (photo-quality limits, views).
CAPTURE_VALUES = ("min_sharpness", "rule_in", "rule_out", "views", "min_scale", "shrink")


def sharpness_changes(cfg: "CompressConfig", spec: ModelSpec) -> bool:
    """True when the recipe sets a photo-quality limit (``min_sharpness``, ``rule_in``), a grey zone
    (``rule_out``), a number of views, a smallest rescale factor (``min_scale``) or a shrink rule (``shrink``)
    other than ``spec``'s."""
    cap = spec.preprocess.capture
    return any(getattr(cfg, k) is not None and (cap is None or getattr(cap, k) != getattr(cfg, k))
               for k in CAPTURE_VALUES)


def views_of(spec: ModelSpec) -> int:
    cap = spec.preprocess.capture
    return cap.views if cap is not None else 1


def screening_changes(cfg: "CompressConfig", spec: ModelSpec) -> bool:
    """True when the recipe's ``screening`` section changes ``spec``'s capture settings."""
    return tile_rule_changes(cfg, spec) or magnification_changes(cfg, spec) or sharpness_changes(cfg, spec)


def _views_operating_points(spec: ModelSpec, f32: bytes, rows, record: dict) -> ModelSpec:
    """``spec`` with its operating points chosen again on the validation split, scored by the
    float32 file with the spec's views (the training run chose them on one view; averaging over
    views moves the probabilities, so the old threshold would no longer be the validated one)."""
    from leukedge.metrics import choose_threshold
    from leukedge.predictors import TFLitePredictor, score_paths

    val = [r for r in rows if r["split"] == "val"]
    if not val:
        raise DataError("screening.views: the split has no validation rows to choose the threshold on",
                        "use a split manifest with a val split")
    with tempfile.TemporaryDirectory(prefix="leukedge-views-") as tmp:
        path = Path(tmp) / "float32.tflite"
        path.write_bytes(f32)
        sc = score_paths(TFLitePredictor(path, spec), [r["abspath"] for r in val], keep=(),
                         desc=f"operating points, {views_of(spec)} views")
    truth = {r["abspath"]: int(r["class"] != spec.negative_class) for r in val}
    y = np.array([truth[p] for p in sc.paths])
    k = views_of(spec)
    points = [dataclasses.replace(o, rule=f"{o.rule}; each image scored as the mean of {k} rotated / mirrored views")
              if o.name != "0.5" else o for o in choose_threshold(y, sc.probability)]
    old = spec.threshold
    spec = dataclasses.replace(spec, operating_points=points,
                               threshold=float(next(p.threshold for p in points if p.name == "default")))
    record["operating_points"] = {
        "chosen_on": "validation", "file": "float32", "views": k, "n": int(len(y)),
        "unreadable": len(sc.errors), "threshold": {"old": old, "new": spec.threshold},
        "note": "the recipe changed screening.views, so the operating points were chosen again "
                "(leukedge.metrics.choose_threshold) on validation scores with the new views"}
    log.info("screening: %d views; threshold %.4g -> %.4g, chosen again on %d validation images", k, old,
             spec.threshold, len(y))
    return spec


def _training_diameter(rows, limit: int = 200) -> float:
    """The median red-cell diameter of up to ``limit`` training smears (as ``bench tiles`` measures it)."""
    from leukedge.errors import DataError
    from leukedge.train.augment import fit_capture_config

    paths = [r["abspath"] for r in rows if r["split"] == "train"]
    if not paths:
        raise DataError("screening.magnification: the split has no training rows to measure the red-cell diameter on",
                        "set screening.cell_diameter")
    d = fit_capture_config(paths, color="none", fov_crop=False, magnification=True, limit=limit).cell_diameter
    if not d:
        raise DataError("screening.magnification: the red-cell diameter could not be measured on the training smears",
                        "set screening.cell_diameter")
    log.info("screening: red-cell diameter %.2f px, measured on up to %d training smears", d, limit)
    return float(d)


def _screening_spec(cfg: "CompressConfig", spec: ModelSpec, rows=()) -> ModelSpec:
    """``spec`` with the recipe's ``screening`` section in ``preprocess.capture``: magnification
    switched on (at the recipe's red-cell diameter, else the spec's, else measured on the
    training smears) or off, its tolerance, the tile rule and the photo-sharpness limit."""

    from leukedge.spec import with_magnification

    if not screening_changes(cfg, spec):
        return spec
    cap = spec.preprocess.capture
    was_on = bool(cap is not None and cap.magnification)
    if cfg.magnification is False:
        spec = dataclasses.replace(spec, preprocess=spec.preprocess.replace(
            capture=dataclasses.replace(cap, magnification=False)))
        log.info("screening: magnification switched off")
    elif cfg.magnification or (was_on and magnification_changes(cfg, spec)):
        d = cfg.cell_diameter or (cap.cell_diameter if cap is not None and cap.cell_diameter else None) \
            or _training_diameter(rows)
        tol = cfg.scale_tolerance if cfg.scale_tolerance is not None else (cap.scale_tolerance if was_on else None)
        spec = with_magnification(spec, d, tol)
        log.info("screening: magnification on, red-cell diameter %.2f px, tolerance %.2f%s", d,
                 spec.preprocess.capture.scale_tolerance, "" if was_on else " (the model was trained without it)")
    if tile_rule_changes(cfg, spec):
        log.info("screening: tiles combined by %s (was %s)", cfg.tile_rule, spec.preprocess.capture.tile_rule)
        spec = dataclasses.replace(spec, preprocess=spec.preprocess.replace(
            capture=dataclasses.replace(spec.preprocess.capture, tile_rule=cfg.tile_rule)))
    if sharpness_changes(cfg, spec):
        from leukedge.capture import CaptureConfig

        cap = spec.preprocess.capture or CaptureConfig()
        kinds = {"views": int, "shrink": str}
        new = {k: kinds.get(k, float)(getattr(cfg, k)) for k in CAPTURE_VALUES
               if getattr(cfg, k) is not None and getattr(cfg, k) != getattr(cap, k)}
        for k, v in new.items():
            log.info("screening: %s %s (was %s)", k, v, getattr(cap, k) if getattr(cap, k) is not None else "the default")
        spec = dataclasses.replace(spec, preprocess=spec.preprocess.replace(capture=dataclasses.replace(cap, **new)))
    return spec


def check_source_config(cfg: "CompressConfig", src: Source) -> None:
    """Refuse, before anything is written, what a source cannot do (a release source gets its
    Keras model back from its float32 file, see :func:`_recover_keras`)."""
    from leukedge.errors import ConfigError

    cap = src.spec.preprocess.capture
    if cfg.tile_rule is not None:
        tiled = cfg.magnification if cfg.magnification is not None else bool(cap is not None and cap.magnification)
        if not tiled:
            raise ConfigError(f"screening.tile_rule={cfg.tile_rule}: {src.folder.name} is not screened as tiles "
                              "(its preprocess.capture.magnification is off)",
                              "drop screening.tile_rule, or set screening.magnification=true (or train with it)")
    if src.is_release and heatmap_changes(cfg, src.spec) and not cfg.reexport_float32:
        have = src.spec.heatmap
        raise ConfigError(f"release {src.folder.name}'s float32 file computes the heatmap {have.method}"
                          f"{' (' + have.layer + ')' if have.layer else ''}, the recipe asks for "
                          f"heatmap.method={cfg.heatmap}",
                          "add --set quantize.reexport_float32=true (exports it again from the recovered Keras "
                          f"model), or keep it with --set heatmap.method={have.method}")
    if cfg.reexport_float32 and not src.is_release:
        raise ConfigError(f"quantize.reexport_float32 re-exports a release's float32 file; {src.folder.name} is a "
                          "training run, whose float32 file is always exported fresh",
                          "drop --set quantize.reexport_float32=true")
    if cfg.keep_int8:
        clash = [key for key, on in (("qat", cfg.qat is not None), ("quantize.per_tensor", cfg.per_tensor),
                                     ("quantize.reexport_float32", cfg.reexport_float32),
                                     ("quantize.clip_percentile", cfg.clip_percentile not in (None, 100.0)),
                                     ("quantize.bn_depthwise", cfg.bn_depthwise)) if on]
        if not src.is_release:
            raise ConfigError(f"quantize.keep_int8 keeps a release's int8 file; {src.folder.name} is a training run",
                              "drop --set quantize.keep_int8=true")
        if clash:
            raise ConfigError(f"quantize.keep_int8 keeps the source's int8 file, so {', '.join(clash)} would not apply",
                              "drop one or the other")
        if "int8" not in cfg.variants:
            raise ConfigError("quantize.keep_int8 needs the int8 variant", "add int8 to quantize.variants")


def _check_images(rows, spec: ModelSpec) -> np.ndarray:
    """8 validation images (training images when there is no validation split), preprocessed."""
    from leukedge.preprocess import preprocess_file

    val = [r for r in rows if r["split"] == "val"][:8] or [r for r in rows if r["split"] == "train"][:8]
    return np.stack([preprocess_file(r["abspath"], spec.preprocess) for r in val])


def _reexport_float32(model, spec: ModelSpec, src: Source, rows, record: dict) -> bytes:
    """``--reexport-float32``: the release's float32 file made again by the current exporter from
    the recovered Keras model (the same function, checked on 8 validation images), e.g. to drop
    what an older exporter stored twice."""
    from leukedge.fileio import sha256_file

    from . import export
    from .quantization import QuantizationConfig
    from .recover import _check

    data = export.convert(model, spec, QuantizationConfig.for_float32())
    worst = _check(model, spec, data, _check_images(rows, spec), 1e-3)
    record["float32_reexported"] = {"old_file": src.float_tflite.name, "old_sha256": sha256_file(src.float_tflite),
                                    "old_bytes": src.float_tflite.stat().st_size, "new_bytes": len(data),
                                    "worst_relative_error_vs_recovered_keras": worst,
                                    "note": "same function as the old file (the recovered model matched it "
                                            "within 1e-3), exported by the current exporter"}
    log.info("float32 re-exported: %.2f -> %.2f MiB", src.float_tflite.stat().st_size / 2**20, len(data) / 2**20)
    return data


def _recover_keras(src: Source, spec: ModelSpec, f32: bytes, rows, record: dict):
    """A release source's Keras model, rebuilt from its float32 file and checked against it on
    8 validation images (:func:`leukedge.compress.recover.keras_from_float_tflite`)."""
    from leukedge.fileio import sha256_file

    from .recover import keras_from_float_tflite

    images = _check_images(rows, spec)
    log.info("%s is a release: rebuilding its Keras model from %s", src.folder.name, src.float_tflite.name)
    model = keras_from_float_tflite(f32, spec, check_images=images)
    record["keras_recovered"] = {"from": src.float_tflite.name, "sha256": sha256_file(src.float_tflite),
                                 "checked_on": f"{len(images)} validation images (probability and cam within 1e-3)",
                                 "note": "BatchNorms after convolutions hold the folded bias with identity "
                                         "statistics (fine-tuned with BatchNorm frozen)"}
    return model


def _train_images(rows, spec: ModelSpec, max_images: int | None):
    """uint8 preprocessed training images and labels for the pruning / QAT fine-tune."""
    from leukedge.errors import ImageError
    from leukedge.imageio import load_image
    from leukedge.preprocess import preprocess_uint8
    from leukedge.progress import progress

    from .quantization import stratified_sample

    train = [r for r in rows if r["split"] == "train"]
    if max_images:
        train = stratified_sample(train, max_images, seed=1)
    xs, ys = [], []
    for r in progress(train, desc="fine-tuning: training images", unit="img"):
        try:
            xs.append(preprocess_uint8(load_image(r["abspath"]), spec.preprocess))
            ys.append(spec.label_of(r["class"]))
        except ImageError as exc:
            log.warning("skipping %s", exc.one_line())
    if not xs:
        raise DataError("no training image could be read for the fine-tune")
    return np.stack(xs), np.array(ys, np.int64)


def _qat(cfg: CompressConfig, model, built: "Built", rows, release):
    """The QAT-tuned float model the int8 file is made from (report into ``record["qat"]``)."""
    from .qat import qat_finetune

    spec = built.spec
    x_u8, y = _train_images(rows, spec, cfg.qat.max_images)
    qcfg = cfg.qat_config()
    n_labels = 2 if spec.task == "binary" else len(spec.class_names)
    with tempfile.TemporaryDirectory(prefix="leukedge-qat-") as tmp:
        select = _int8_scorer(cfg, built, rows, release, Path(tmp), "int8") if qcfg.select_every else None
        tuned, rep = qat_finetune(model, spec, x_u8, y, qcfg, _class_weights(y, n_labels), select=select)
    built.record["qat"] = rep.to_dict()
    return tuned


def _int8_scorer(cfg: CompressConfig, built: "Built", rows, release, tmp: Path, key: str):
    """``fn(float_model) -> candidate record``: the ``key`` ("int8" or "pruned_int8") file the
    model makes (the same steps as the released one) compared with the release's float32 file
    on the validation split."""
    from dataclasses import replace

    from leukedge.predictors import TFLitePredictor

    from . import export
    from .parity import ParityData, candidate_record, compare

    ref = TFLitePredictor(release.path(release.model_name("float32")), built.spec)
    val = ParityData.from_manifest(rows, "val")
    made = []

    def score(model) -> dict:
        scratch = replace(built, record={})  # range clipping may be chosen again; nothing recorded
        calibrated = _calibrate_int8(cfg, model, scratch, key, lambda _, fn: fn(), release, rows)
        path = tmp / f"{key}-{len(made)}.tflite"  # a new file each time: earlier interpreters may map theirs
        path.write_bytes(export.quantize_calibrated(calibrated, built.spec,
                                                    per_tensor=cfg.per_tensor and key == "int8"))
        made.append(path)
        return candidate_record(compare(ref, TFLitePredictor(path, built.spec), val, cfg.gates, n_boot=200,
                                        keep_per_image=False), bytes=path.stat().st_size)

    return score


def _class_weights(labels: np.ndarray, n: int) -> dict[int, float]:
    counts = np.bincount(labels, minlength=n).astype(float)
    return {i: float(len(labels) / (n * c)) for i, c in enumerate(counts) if c > 0}


@dataclass
class Built:
    """What :func:`build_files` made (models kept in memory for the later steps)."""

    spec: ModelSpec
    model: object
    calibrated: bytes | None = None
    representative: object = None
    pruned: object = None
    float32: bytes | None = None
    clip_percentile: float | None = None
    record: dict = field(default_factory=dict)


def _calibrate_int8(cfg: CompressConfig, model, built: Built, key: str, timed, release, rows) -> bytes:
    """The calibrated float model the int8 file is quantized from (ranges clipped on request;
    ``auto`` chooses the percentile on the validation split, once: the pruned file reuses it)."""
    from . import export
    from .quantization import QuantizationConfig
    from .ranges import bound_logit, choose_percentile, clip_ranges, percentile_ranges, summary

    rep = built.representative
    if cfg.bn_depthwise:
        from .bn_depthwise import mul_add_to_depthwise

        f32 = built.float32 if model is None or model is built.model else timed(
            f"{key}_float32", lambda: export.convert(model, built.spec, QuantizationConfig.for_float32()))
        f32, n = mul_add_to_depthwise(f32)
        built.record[f"{key}_bn_depthwise"] = {"rewritten": n}
        log.info("%s: %d per-channel MUL + ADD pairs quantized as 1x1 depthwise convs", key, n)
        calibrated = timed(f"{key}_calibrate", lambda: export.calibrate_tflite(f32, rep))
    elif model is None:  # a release source: calibrate its float32 file
        calibrated = timed(f"{key}_calibrate", lambda: export.calibrate_tflite(built.float32, rep))
    else:
        calibrated = timed(f"{key}_calibrate",
                           lambda: export.calibrate(model, built.spec, QuantizationConfig.for_int8(rep)))
    calibrated, logit = bound_logit(calibrated)
    if logit:
        built.record[f"{key}_logit_range"] = logit
    p = built.clip_percentile if built.clip_percentile is not None else cfg.clip_percentile
    if p is None or p == 100.0:
        return calibrated
    images = rep.images[:cfg.clip_images]
    if p == "auto":
        from leukedge.predictors import TFLitePredictor

        from .parity import ParityData

        ref = TFLitePredictor(release.path(release.model_name("float32")), built.spec)
        val = ParityData.from_manifest(rows, "val")
        p, clipped, report = timed(f"{key}_clip_search", lambda: choose_percentile(
            calibrated, built.spec, ref, val, images, gates=cfg.gates, per_tensor=cfg.per_tensor and key == "int8"))
        built.clip_percentile = p
        built.record[f"{key}_range_clipping"] = report
        return clipped
    ranges = timed(f"{key}_clip_ranges", lambda: percentile_ranges(calibrated, images, p))
    built.record[f"{key}_range_clipping"] = summary(ranges, p)
    return clip_ranges(calibrated, ranges)


def build_files(cfg: CompressConfig, src: Source, rows, release) -> Built:
    """Convert (and prune) into the release staging folder."""
    from leukedge.train.io import load_keras_model

    from . import export
    from .prune import prune_model
    from .quantization import QuantizationConfig, representative_from_split

    spec = export.export_spec(src.spec, release.name)
    timings: dict[str, float] = {}
    record: dict = {"source": portable_file(src.model_file), "timings_s": timings}

    def timed(key, fn):
        t0 = time.perf_counter()
        out = fn()
        timings[key] = round(time.perf_counter() - t0, 2)
        return out

    if src.is_release:
        # the source's OOD gate (spec.ood + its ood.npz) belongs to the source's files: the new
        # release gets its own, fitted after the files are written (_after)
        spec = dataclasses.replace(spec, ood=type(spec.ood)())
        if not cfg.reexport_float32:
            # a screening change is the spec's only: the same weights, the new spec embedded
            # in the source's files (_renamed), the int8 file kept too with quantize.keep_int8
            spec = _screening_spec(cfg, spec, rows)
        model, f32 = None, _release_float32(src, spec, record)
        if needs_keras(cfg):
            model = timed("recover_keras", lambda: _recover_keras(src, spec, f32, rows, record))
        if cfg.reexport_float32:
            before = spec.heatmap
            spec = _heatmap_spec(cfg, _screening_spec(cfg, spec, rows), model)
            f32 = timed("float32", lambda: _reexport_float32(model, spec, src, rows, record))
            if spec.heatmap != before:
                record["float32_reexported"]["heatmap"] = {"old": asdict(before), "new": asdict(spec.heatmap)}
                record["float32_reexported"]["note"] = ("the same probability, logit and features as the old file "
                                                        "(the recovered model matched it within 1e-3); the cam "
                                                        f"output is now {spec.heatmap.method}")
        if cfg.qat is not None or cfg.reexport_float32:
            record["source_release"]["note"] = (
                ("float32 re-exported from the Keras model recovered from the released float32 file"
                 if cfg.reexport_float32 else "the float32 file is unchanged") +
                ("; int8 made from a quantization-aware fine-tuned copy of that recovered model" if cfg.qat is not None
                 else "; int8 calibrated from the float32 file"))
    else:
        log.info("loading %s", src.model_file)
        model = timed("load_keras", lambda: load_keras_model(src.model_file))
        spec = _heatmap_spec(cfg, _screening_spec(cfg, spec, rows), model)
        f32 = timed("float32", lambda: export.convert(model, spec, QuantizationConfig.for_float32()))
    if views_of(spec) != views_of(src.spec):
        spec = timed("operating_points", lambda: _views_operating_points(spec, f32, rows, record))
        f32 = export.embed_spec(f32, spec)
    built = Built(spec, model, float32=f32, record=record)
    release.write_bytes(release.model_name("float32"), f32)
    if "int8" in cfg.variants or "int16x8" in cfg.variants or cfg.prune is not None:
        built.representative = timed("representative_set", lambda: representative_from_split(rows, spec, cfg.calib))
        record["calibration"] = {"n_images": len(built.representative), "split": "train",
                                 "stratified_by_class": True, "preprocessing": "leukedge.preprocess (the spec's)"}
    if "int8" in cfg.variants:
        int8_model = None if src.is_release else model  # a release's int8 comes from its float32 file
        if cfg.keep_int8:
            if not _carry(src, spec, release, record, "int8", INT8_RECORDS, "drop quantize.keep_int8 to re-derive it"):
                raise ModelError(f"{src.folder}: no int8 file to keep", "drop quantize.keep_int8")
        else:
            if cfg.qat is not None:
                int8_model = timed("qat", lambda: _qat(cfg, model, built, rows, release))
            built.calibrated = _calibrate_int8(cfg, int8_model, built, "int8", timed, release, rows)
            q = timed("int8_quantize", lambda: export.quantize_calibrated(
                built.calibrated, spec, record=record.setdefault("int8_gradcam_branch", {}),
                per_tensor=cfg.per_tensor))
            release.write_bytes(release.model_name("int8"), q)
    if "int16x8" in cfg.variants:
        release.write_bytes(release.model_name("int16x8"), timed("int16x8", lambda: export.convert(
            model, spec, QuantizationConfig.for_int16x8(built.representative))))
    for v in ("float16", "dynamic"):
        if v in cfg.variants:
            qc = QuantizationConfig.for_float16() if v == "float16" else QuantizationConfig.for_dynamic()
            release.write_bytes(release.model_name(v), timed(v, lambda qc=qc: export.convert(model, spec, qc)))
    if cfg.prune is None and src.is_release:
        if spec.heatmap == src.spec.heatmap:
            _carry(src, spec, release, record, "pruned-int8", PRUNED_RECORDS, "set prune to make a new one")
        elif (src.folder / src.float_tflite.name.replace(".float32.tflite", ".pruned-int8.tflite")).exists():
            log.warning("the source release's pruned-int8 file computes the heatmap %s, not %s: not kept "
                        "(set prune to make a new one)", src.spec.heatmap.method, spec.heatmap.method)
            record["pruned_int8_dropped"] = {"reason": f"its cam output is {src.spec.heatmap.method}, the release's "
                                                       f"is {spec.heatmap.method}"}
    if cfg.prune is not None:
        x_u8, y = timed("prune_load_images", lambda: _train_images(rows, spec, cfg.prune.max_images))
        pcfg = cfg.prune_config()
        n_labels = 2 if spec.task == "binary" else len(spec.class_names)
        with tempfile.TemporaryDirectory(prefix="leukedge-prune-") as tmp:
            select = _int8_scorer(cfg, built, rows, release, Path(tmp), "pruned_int8") if pcfg.select_every else None
            built.pruned, prep = timed("prune_finetune", lambda: prune_model(model, spec, x_u8, y, pcfg,
                                                                               _class_weights(y, n_labels), select))
        del x_u8
        record["pruning"] = prep.to_dict()
        pcal = _calibrate_int8(cfg, built.pruned, built, "pruned_int8", timed, release, rows)
        pq = timed("pruned_int8_quantize", lambda: export.quantize_calibrated(
            pcal, spec, record=record.setdefault("pruned_int8_gradcam_branch", {})))  # per channel: not QAT-tuned
        release.write_bytes(release.model_name("pruned-int8"), pq)
    spec.save(release.path("spec.json"))
    if src.split_csv:
        release.copy(src.split_csv, "split.csv")
    if src.is_release and (src.folder / "history.csv").exists():
        release.copy(src.folder / "history.csv", "history.csv")  # the training curves travel on
    return built


def inherited_record(before: dict, src: Source, float32_sha256: str) -> dict:
    """What a re-quantized release keeps from its source release's ``compress.json``: where the
    float32 file came from and its check against the Keras model (still valid: same bytes)."""
    made_from = (before.get("source_release") or {}).get("made_from") or before.get("source")
    out = {"folder": src.folder.name, "float32_file": src.float_tflite.name, "float32_sha256": float32_sha256,
           "made_from": portable_file(made_from) if isinstance(made_from, str) else made_from,
           "note": "int8 re-derived from the released float32 file (the Keras model is not needed); "
                   "the float32 file is unchanged"}
    keras = (before.get("parity") or {}).get("float32 vs keras")
    if keras is None and before.get("source_release"):
        keras = before["source_release"].get("float32_vs_keras")
    if keras is not None:
        out["float32_vs_keras"] = keras
    return out


def _release_float32(src: Source, spec: ModelSpec, record: dict) -> bytes:
    """The source release's float32 file, byte for byte when the name and preprocessing are kept
    (its sha256, and so every earlier float32 parity check, stays valid), else with the new spec
    embedded (same weights and graph)."""
    from leukedge.fileio import sha256_file

    raw = src.float_tflite.read_bytes()
    data = _renamed(raw, spec)
    before = _source_record(src)
    record["source_release"] = inherited_record(before, src, sha256_file(src.float_tflite))
    if data != raw:
        record["source_release"]["spec_embedded"] = "the same weights and graph with this release's spec embedded"
    if before.get("float32_reexported"):  # the same float32 file: how it was made travels on
        record["float32_reexported"] = before["float32_reexported"]
    log.info("re-quantizing the release %s from %s", src.folder, src.float_tflite.name)
    return data


def _renamed(data: bytes, spec: ModelSpec) -> bytes:
    """A released file's bytes, unchanged when its embedded spec already has ``spec``'s name and
    preprocessing, else with ``spec`` embedded (the weights and graph are not touched)."""
    from . import export

    embedded = export.read_embedded_spec(data)
    same = embedded is not None and embedded.name == spec.name and embedded.preprocess == spec.preprocess
    return data if same else export.embed_spec(data, spec)


def _source_record(src: Source) -> dict:
    """The source release's ``compress.json`` ({} when missing or unreadable)."""
    made = src.folder / "compress.json"
    try:
        return json.loads(made.read_text()) if made.exists() else {}
    except ValueError:
        return {}


#: compress.json records that describe how a release's int8 / pruned int8 file was made.
INT8_RECORDS = ("qat", "int8_logit_range", "int8_gradcam_branch", "int8_range_clipping", "int8_bn_depthwise",
                "selective_int8")
PRUNED_RECORDS = ("pruning", "pruned_int8_gradcam_branch")


def _carry(src: Source, spec: ModelSpec, release, record: dict, variant: str, keys, how: str) -> bool:
    """Keep the source release's ``variant`` file (byte for byte when the name is kept) and the
    records of how it was made (``keys`` of its compress.json) instead of re-making or dropping
    it: re-quantizing a release without ``--prune`` keeps its pruned file, ``--keep-int8`` its
    int8 file. Parity checks it again like any other file."""
    from leukedge.fileio import sha256_file

    f = src.folder / src.float_tflite.name.replace(".float32.tflite", f".{variant}.tflite")
    if not f.exists():
        return False
    before = _source_record(src)
    release.write_bytes(release.model_name(variant), _renamed(f.read_bytes(), spec))
    for key in keys:
        if before.get(key):
            record[key] = before[key]
    record[f"{variant.replace('-', '_')}_from_source"] = {
        "file": f.name, "sha256": sha256_file(f), "note": f"the source release's {variant} file, not re-made ({how})"}
    log.info("keeping the source release's %s file %s (%s)", variant, f.name, how)
    return True


def optional_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _parity_set(cfg: CompressConfig, rel, built: Built, src: Source, rows) -> dict:
    """Parity of each quantized file against float32 on the test split; an int8 file that fails
    is remade with clipped activation ranges, then with its worst ops in float (both chosen on
    the validation split), unless ``cfg.selective`` is off."""
    from leukedge.predictors import TFLitePredictor
    from leukedge.train.predictor import KerasPredictor

    from .parity import ParityData, compare
    from .parity_report import write_reports

    test = ParityData.from_manifest(rows, "test")
    spec = built.spec
    ref = TFLitePredictor(rel.path(rel.model_name("float32")), spec)
    results, extra = {}, {}
    for variant in ("int8", "pruned-int8", "int16x8", "float16", "dynamic"):
        f = rel.path(rel.model_name(variant))
        if not f.exists():
            continue
        log.info("parity: %s vs float32 on %d test images", variant, len(test.paths))
        res = compare(ref, TFLitePredictor(f, spec), test, cfg.gates, n_boot=cfg.n_boot)
        if variant == "int8" and not res.passed and cfg.selective and built.calibrated is not None:
            if cfg.clip_percentile is None:
                res, extra["int8_range_clipping"] = _clip_recovery(cfg, rel, built, rows, ref, test, res)
            if not res.passed:
                res, extra["selective_int8"] = _selective(cfg, rel, built, rows, ref, test, res)
        results[f"{variant} vs float32"] = res
    if cfg.keras_check and src.is_release:
        log.info("parity: no Keras model in a release source; float32 vs Keras is the source release's check")
    elif cfg.keras_check:
        log.info("parity: float32 TFLite vs the Keras model (GradientTape Grad-CAM) on the test split")
        keras_pred = KerasPredictor(src.folder, spec, src.model_file.name)  # the release's heatmap method
        results["float32 vs keras"] = compare(keras_pred, ref, test, cfg.gates, n_boot=cfg.n_boot)
    write_reports(results, rel.out, extra={k: v for k, v in extra.items()})
    return results, extra


def _clip_recovery(cfg, rel, built, rows, ref, test, failed):
    """First remedy for a failed int8 file: percentile-clipped activation ranges, chosen on the
    validation split (:func:`leukedge.compress.ranges.choose_percentile`)."""
    from leukedge.predictors import TFLitePredictor

    from .export import quantize_calibrated
    from .parity import ParityData, compare
    from .ranges import choose_percentile

    log.info("int8 failed gate(s) %s: trying clipped activation ranges (chosen on the validation split)",
             ", ".join(g.name for g in failed.failed))
    val = ParityData.from_manifest(rows, "val")
    p, clipped, info = choose_percentile(built.calibrated, built.spec, ref, val,
                                         built.representative.images[:cfg.clip_images], gates=cfg.gates,
                                         per_tensor=cfg.per_tensor)
    info["trigger"] = {"failed_on_test": [g.name for g in failed.failed],
                       "full_int8_test_gates": {g.name: g.value for g in failed.gates}}
    if p >= 100.0:
        return failed, info
    built.calibrated, built.clip_percentile = clipped, p
    rel.write_bytes(rel.model_name("int8"), quantize_calibrated(clipped, built.spec, per_tensor=cfg.per_tensor))
    info["replaced_int8_file"] = True
    res = compare(ref, TFLitePredictor(rel.path(rel.model_name("int8")), built.spec), test, cfg.gates,
                  n_boot=cfg.n_boot)
    return res, info


def _selective(cfg, rel, built, rows, ref, test, failed):
    from leukedge.predictors import TFLitePredictor

    from .parity import ParityData, compare
    from .selective import selective_quantize

    log.info("int8 failed gate(s) %s: searching ops to keep in float (on the validation split)",
             ", ".join(g.name for g in failed.failed))
    val = ParityData.from_manifest(rows, "val")
    data, rep = selective_quantize(built.calibrated, built.spec, ref, val, built.representative, cfg.gates,
                                   per_tensor=cfg.per_tensor)
    info = rep.to_dict()
    info["full_int8_test_gates"] = {g.name: g.value for g in failed.gates}
    if data is None:
        return failed, info
    rel.write_bytes(rel.model_name("int8"), data)
    info["replaced_int8_file"] = True
    res = compare(ref, TFLitePredictor(rel.path(rel.model_name("int8")), built.spec), test, cfg.gates, n_boot=cfg.n_boot)
    return res, info


def run_compress(cfg: CompressConfig, recipe=None) -> dict:
    """Everything ``leukedge compress`` does. Returns the summary (also in ``compress.json``).

    ``recipe`` (:class:`~leukedge.compress.recipe.CompressRecipe`, default: the one of ``cfg``) is
    saved resolved, with its source and data named portably, as ``recipe.json`` in the release.
    """
    from leukedge.data import resolve_data_dir
    from leukedge.split import read_manifest

    from .release import Release

    t_start = time.perf_counter()
    src = resolve_source(cfg.source)
    check_source_config(cfg, src)
    data_dir = Path(cfg.data_dir or src.config.get("data_dir") or resolve_data_dir(None))
    if src.split_csv is None:
        raise DataError(f"{src.folder}: no split.csv", "compress calibrates on the run's training split; "
                                                       "copy the manifest used for training to split.csv")
    rows = read_manifest(src.split_csv, data_dir)
    log.info("compress %s -> %s (variants %s%s), data %s", src.folder, cfg.out, ",".join(cfg.variants),
             f", pruned to {cfg.prune.sparsity:.0%}" if cfg.prune is not None else "", data_dir)
    with Release(cfg.out, ood_map=cfg.ood_map) as rel:
        built = build_files(cfg, src, rows, rel)
        made_from = (built.record.get("source_release") or {}).get("made_from")
        done = resolved(recipe or from_config(cfg), src, rel.out, data_dir, made_from)
        rel.write_json("recipe.json", done.to_dict())
        summary = {"name": rel.name, "source": portable_file(src.model_file), "source_ref": asdict(done.source),
                   "data": data_record(data_dir, src.split_csv),
                   "config": portable_config(cfg, rel.name), **built.record}
        added = {k: v for k, v in rel.ood_map_outputs.items() if "skipped" not in v}
        if added:
            summary["ood_map"] = {"files": sorted(added), **next(iter(added.values())),
                                  "note": "output 'ood_map' (the OOD gate's feature map) listed in each file's "
                                          "signature; no operator, weight or other output changed"}
        elif rel.ood_map_outputs:
            summary["ood_map"] = next(iter(rel.ood_map_outputs.values()))
        summary.update(size_summary(rel.files, rel.name, rel.staging))
        rel.write_json("compress.json", summary)
        rel.commit()
    out = rel.out
    summary["parity"] = None
    if cfg.parity:
        t = time.perf_counter()
        results, extra = _parity_set(cfg, rel, built, src, rows)
        summary["timings_s"]["parity"] = round(time.perf_counter() - t, 2)
        summary["parity"] = {k: {"passed": r.passed, "gates": {g.name: g.value for g in r.gates},
                                 "failed": [g.name for g in r.failed]} for k, r in results.items()}
        if "int8_range_clipping" in extra:
            summary["int8_range_clipping"] = extra["int8_range_clipping"]
        if "selective_int8" in extra:
            summary["selective_int8"] = {k: v for k, v in extra["selective_int8"].items() if k != "ranking"}
        if extra:
            summary.update(size_summary(rel.files, rel.name, out))
        summary["passed"] = all(r.passed for k, r in results.items() if k.startswith("int8"))
        rel.write_json("compress.json", summary)
        _after(out, data_dir, summary, cfg.ood_check_dirs)
    summary["timings_s"]["total"] = round(time.perf_counter() - t_start, 2)
    from leukedge.fileio import atomic_write_json

    atomic_write_json(out / "compress.json", summary)
    return summary


def portable_config(cfg: CompressConfig, name: str) -> dict:
    """``cfg`` as ``compress.json`` records it: the release by name, the source and folders portably."""
    d = asdict(cfg)
    d["out"] = name
    d["source"] = portable_file(cfg.source)
    d["data_dir"] = Path(cfg.data_dir).name if cfg.data_dir else None
    d["ood_check_dirs"] = [portable_dir(x) for x in cfg.ood_check_dirs]
    return d


#: Leukemia-positive test images with heatmap deletion/insertion curves in a release's evaluation
#: (its card shows them; ~88 model calls each). ``leukedge evaluate --faithfulness N`` measures more.
RELEASE_FAITHFULNESS = 60


def _after(out: Path, data_dir: Path, summary: dict, ood_check_dirs=()) -> None:
    """Evaluation, the OOD gate and the model card, when those stages are installed.

    Their failure is recorded in ``compress.json``, never loses the release.
    """
    if optional_module("leukedge.evaluate"):
        try:
            from leukedge.evaluate import run_evaluation

            log.info("evaluating %s on the test split", out)
            run_evaluation(out, data_dir, split_csv=out / "split.csv", json_out=out / "evaluation.json",
                           report_dir=out, faithfulness=RELEASE_FAITHFULNESS)
            summary["evaluation"] = "evaluation.json"
        except Exception as exc:  # another stage's failure must not lose the release
            log.error("evaluation failed: %s", exc)
            summary["evaluation_error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if optional_module("leukedge.card"):
        try:
            from leukedge.card import write_card

            write_card(out)
            summary["card"] = "card.json"
        except Exception as exc:
            log.error("model card failed: %s", exc)
            summary["card_error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if optional_module("leukedge.edge_app.calibrate"):
        try:
            from leukedge.edge_app.calibrate import calibrate_from_data

            log.info("fitting the out-of-distribution gate of %s", out)
            calibrate_from_data(out, data_dir, out / "split.csv", ood_dirs=tuple(ood_check_dirs))
            summary["ood"] = "ood.json"
            from leukedge.card import write_card

            write_card(out)  # again: the card lists the OOD stats file and rates
        except Exception as exc:
            log.error("OOD calibration failed: %s", exc)
            summary["ood_error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__

