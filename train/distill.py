"""Knowledge distillation from a teacher release's soft targets (issue 21).

The teacher (``TrainConfig.teacher``: a release folder, or with ``teacher_allow_unsigned`` any
model :func:`leukedge.predictors.load_predictor` opens) scores the training rows once, with its
own preprocessing from its own spec (:func:`leukedge.predictors.score_paths`). Its output is
mapped to the student's outputs:

* binary student, binary teacher: P(positive);
* binary student, subtype teacher (a 4-class model used as a screen): ``1 - P(negative class)``,
  the negative class named by both specs;
* subtype student, subtype teacher: the probability vector, columns in the student's class order.

Anything else (a binary teacher for a subtype student, another negative class, classes the
teacher never saw) is refused with one line. The mapped probabilities are cached in the run
folder as ``soft_targets.npz`` (``path`` relative to the data root, ``probability``, the
teacher's ``teacher_sha256`` and ``teacher_spec_sha256``...), so a resumed run reuses them
instead of re-scoring, and refuses a teacher whose files changed since.

With ``distill_temperature`` T != 1 the teacher's outputs are softened first (its logits divided
by T: ``softmax(log p / T)``, ``sigmoid(logit p / T)``), from its raw output vectors kept in the
cache (``teacher_probabilities``). The training target is ``(1 - alpha) * y + alpha * p_teacher``:
binary (and categorical) cross-entropy is linear in the target, so this is exactly
``(1 - alpha) * CE(y) + alpha * CE(p_teacher)``. ``alpha = 0`` gives the hard labels bit for bit.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukedge.errors import ConfigError, DataError, ModelError
from leukedge.fileio import sha256_file
from leukedge.predictors import Predictor, TFLitePredictor, load_predictor, score_paths
from leukedge.release_check import VERIFIED
from leukedge.spec import ModelSpec

from .config import TrainConfig
from .dataset import hard_targets, labels_of
from .predictor import KerasPredictor

log = logging.getLogger(__name__)

SOFT_TARGETS_FILE = "soft_targets.npz"

#: How a teacher's output becomes the student's target, by (student task, teacher task).
MAPPINGS = {("binary", "binary"): "P(positive)", ("binary", "subtype"): "1 - P(negative class)",
            ("subtype", "subtype"): "class probabilities"}


@dataclass
class Teacher:
    """An opened, checked teacher.

    Attributes:
        predictor: the loaded model.
        name: the teacher as configured (``cfg.teacher``).
        file: the model file scored.
        sha256: sha256 of ``file``.
        spec_sha256: sha256 of the teacher's ``spec.json`` (its preprocessing and classes).
        mapping: how its output maps to the student's (a value of :data:`MAPPINGS`).
        columns: teacher output columns used: ``[negative]`` for ``1 - P(negative class)``,
            the student's classes in order for a subtype student, ``[0]`` for a binary teacher.
    """

    predictor: Predictor
    name: str
    file: Path
    sha256: str
    spec_sha256: str
    mapping: str
    columns: list[int]


def soften(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The teacher's output vectors ``(N, T)`` at ``temperature``: its logits divided by it.

    A softmax output becomes ``softmax(log p / temperature)``, a sigmoid output (one column)
    ``sigmoid(logit p / temperature)``; 1 leaves them as they are, > 1 softens them.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if float(temperature) == 1.0:
        return p
    eps = 1e-12
    if p.shape[1] == 1:
        q = np.clip(p, eps, 1.0 - eps)
        return 1.0 / (1.0 + np.exp(-np.log(q / (1.0 - q)) / temperature))
    z = np.log(np.clip(p, eps, 1.0)) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def map_outputs(probabilities: np.ndarray, mapping: str, columns: list[int], temperature: float = 1.0) -> np.ndarray:
    """The student's float32 soft targets from the teacher's output vectors ``(N, T)``
    (``mapping``/``columns``: see :class:`Teacher`)."""
    p = soften(probabilities, temperature)
    out = 1.0 - p[:, columns] if mapping == MAPPINGS[("binary", "subtype")] else p[:, columns]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def teacher_mapping(teacher: ModelSpec, student: ModelSpec, name: str) -> tuple[str, list[int]]:
    """How the teacher's outputs map to the student's (see the module docstring).

    Raises:
        ConfigError: a teacher of a shape that cannot be mapped to the student.
    """
    mapping = MAPPINGS.get((student.task, teacher.task))
    if mapping is None:
        raise ConfigError(f"teacher {name} is a {teacher.task} model ({teacher.class_names}): its output cannot "
                          f"be mapped to the {student.task} student's classes {student.class_names}",
                          "use a subtype teacher for a subtype student (models/efficientnet-lite0-subtype)")
    unknown = sorted(set(student.source_classes) - set(teacher.source_classes) - set(teacher.class_names))
    if unknown:
        raise ConfigError(f"teacher {name} was trained on {teacher.source_classes}, not on the student's "
                          f"class(es) {unknown}", "use a teacher trained on the same classes")
    if student.task == "subtype":
        if sorted(teacher.class_names) != sorted(student.class_names):
            raise ConfigError(f"teacher {name} outputs {teacher.class_names}, the subtype student "
                              f"{student.class_names}", "use a subtype teacher with the same classes")
        return mapping, [teacher.class_names.index(c) for c in student.class_names]
    if teacher.negative_class != student.negative_class:
        raise ConfigError(f"teacher {name}'s negative class is {teacher.negative_class!r}, the student's "
                          f"{student.negative_class!r}",
                          "use a teacher with the same negative class (--negative-class)")
    if teacher.task == "binary":
        return mapping, [0]
    return mapping, [teacher.class_names.index(teacher.negative_class)]


def _model_file(pred: Predictor) -> Path:
    if isinstance(pred, TFLitePredictor):
        return Path(pred.runner.path)
    if isinstance(pred, KerasPredictor):
        return pred.run_dir / "best.h5"
    raise ModelError(f"{pred.name}: a {pred.kind} model cannot be a teacher", "pass a release folder (models/<name>)")


def _variant(cfg: TrainConfig) -> str | None:
    if cfg.teacher_variant:
        return cfg.teacher_variant
    folder = Path(cfg.teacher)
    return "float32" if (folder / f"{folder.resolve().name}.float32.tflite").exists() else None


def open_teacher(cfg: TrainConfig, student: ModelSpec) -> Teacher:
    """Load and check ``cfg.teacher`` for ``student``: verified release (unless
    ``cfg.teacher_allow_unsigned``), a mappable shape.

    Raises:
        ModelError: missing, tampered, or not signed by a trusted key.
        ConfigError: a teacher whose output cannot be mapped to the student's.
    """
    name = str(cfg.teacher)
    try:
        pred = load_predictor(name, variant=_variant(cfg), num_threads=cfg.threads,
                              allow_unsigned=cfg.teacher_allow_unsigned)
    except ModelError as exc:
        raise ModelError(f"teacher {exc.message}", exc.hint) from None
    if pred.signature != VERIFIED and not cfg.teacher_allow_unsigned:
        raise ModelError(f"teacher {name} is not a signed release ({pred.signature})",
                         "pass a release signed by a trusted key (`leukedge release verify DIR`), or --allow-unsigned")
    mapping, columns = teacher_mapping(pred.spec, student, name)
    file = _model_file(pred)
    return Teacher(pred, name, file, sha256_file(file, error=ModelError),
                   sha256_file(file.parent / "spec.json", error=ModelError), mapping, columns)


_ARRAYS = ("path", "probability", "teacher_probabilities")


def _write_cache(path: Path, meta: dict, paths: list[str], teacher_probabilities: np.ndarray) -> None:
    """``probability``: the student's soft target at temperature 1; ``teacher_probabilities``: the
    teacher's own output vectors (any temperature is applied to these when the cache is read)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.npz")
    cols = [int(c) for c in str(meta["columns"]).split(",")]
    np.savez(tmp, path=np.array(paths, dtype=str), teacher_probabilities=teacher_probabilities.astype(np.float32),
             probability=map_outputs(teacher_probabilities, meta["mapping"], cols),
             **{k: np.array(str(v)) for k, v in meta.items()})
    os.replace(tmp, path)


def read_cache(run_dir: str | os.PathLike, temperature: float = 1.0) -> tuple[dict, dict[str, np.ndarray]] | None:
    """``soft_targets.npz`` of a run: (metadata, {relative path: soft target at ``temperature``});
    None when absent."""
    path = Path(run_dir) / SOFT_TARGETS_FILE
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = {k: str(z[k]) for k in z.files if k not in _ARRAYS}
            cols = [int(c) for c in meta["columns"].split(",")]
            soft = (z["probability"] if float(temperature) == 1.0 else
                    map_outputs(z["teacher_probabilities"], meta["mapping"], cols, temperature))
            table = dict(zip(z["path"].tolist(), soft))
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a readable soft-target cache ({exc})",
                        "delete it to score the teacher again, or start a new run") from None
    return meta, table


def _score(teacher: Teacher, rows: list[dict]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    scores = score_paths(teacher.predictor, [r["abspath"] for r in rows], keep=(), desc="teacher soft targets")
    seconds = time.perf_counter() - t0
    if scores.errors:
        first, msg = next(iter(scores.errors.items()))
        raise DataError(f"the teacher could not read {len(scores.errors)} training image(s) (first: {first}: {msg})")
    return np.asarray(scores.probabilities, dtype=np.float32), seconds  # as cached: resume gives the same targets


def soft_targets(cfg: TrainConfig, run_dir: str | os.PathLike, rows: list[dict], student: ModelSpec) -> np.ndarray:
    """The teacher's soft targets of the training ``rows`` (in order, at ``cfg.distill_temperature``),
    scored once per run.

    The first call scores them and writes ``soft_targets.npz``; later calls (``--resume``) read
    it, after checking that the teacher's model file and spec still have the cached sha256.
    When the teacher is no longer at ``cfg.teacher`` (another working directory, another
    machine), the cache is used as it is, with a warning.

    Raises:
        ModelError / ConfigError: see :func:`open_teacher`; the teacher changed since caching.
        DataError: the cache lacks a training row (another split), or is unreadable.
    """
    run_dir = Path(run_dir)
    temperature = float(cfg.distill_temperature)
    if not (run_dir / SOFT_TARGETS_FILE).exists():
        teacher = open_teacher(cfg, student)
        probs, seconds = _score(teacher, rows)
        meta = {"teacher": teacher.name, "teacher_file": teacher.file.name, "teacher_sha256": teacher.sha256,
                "teacher_spec_sha256": teacher.spec_sha256, "teacher_signature": teacher.predictor.signature,
                "mapping": teacher.mapping, "columns": ",".join(map(str, teacher.columns)),
                "teacher_classes": ",".join(teacher.predictor.spec.class_names),
                "classes": ",".join(student.class_names), "seconds": f"{seconds:.3f}"}
        _write_cache(run_dir / SOFT_TARGETS_FILE, meta, [r["path"] for r in rows], probs)
        log.info("soft targets: %s (%s, %s) scored %d training images in %.1f s (%.1f ms/image) -> %s",
                 teacher.name, teacher.file.name, teacher.mapping, len(rows), seconds,
                 1000 * seconds / max(1, len(rows)), SOFT_TARGETS_FILE)
        return map_outputs(probs, teacher.mapping, teacher.columns, temperature)
    meta, table = read_cache(run_dir, temperature)
    if Path(cfg.teacher).exists():
        teacher = open_teacher(cfg, student)
        for key, now in (("teacher_sha256", teacher.sha256), ("teacher_spec_sha256", teacher.spec_sha256)):
            if meta.get(key) != now:
                what = "model file" if key == "teacher_sha256" else "spec.json"
                raise ModelError(f"teacher {teacher.name}: its {what} has sha256 {now[:12]}..., the run's cached soft "
                                 f"targets were made by {str(meta.get(key))[:12]}...",
                                 f"restore the teacher the run started with, or start a new run "
                                 f"(or delete {run_dir / SOFT_TARGETS_FILE} to re-score)")
    else:
        log.warning("teacher %s not found: using the run's cached soft targets (teacher sha256 %s...)",
                    cfg.teacher, str(meta.get("teacher_sha256"))[:12])
    missing = [r["path"] for r in rows if r["path"] not in table]
    if missing:
        raise DataError(f"{run_dir / SOFT_TARGETS_FILE} has no soft target for {len(missing)} training image(s) "
                        f"(first: {missing[0]})", "the split changed: start a new run")
    log.info("soft targets: reused %s (%d images, teacher sha256 %s...)", SOFT_TARGETS_FILE, len(rows),
             str(meta.get("teacher_sha256"))[:12])
    return np.stack([table[r["path"]] for r in rows]).astype(np.float32)


def mix_targets(hard: np.ndarray, soft: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) * hard + alpha * soft`` in float32 (``alpha = 0``: ``hard`` exactly)."""
    hard = np.asarray(hard, dtype=np.float32)
    soft = np.asarray(soft, dtype=np.float32).reshape(hard.shape)
    return (np.float32(1.0 - alpha) * hard + np.float32(alpha) * soft).astype(np.float32)


def training_targets(cfg: TrainConfig, run_dir: str | os.PathLike, rows: list[dict],
                     student: ModelSpec) -> np.ndarray | None:
    """The training targets of ``rows`` with distillation (None without a teacher: hard labels)."""
    if not cfg.teacher:
        return None
    soft = soft_targets(cfg, run_dir, rows, student)
    return mix_targets(hard_targets(labels_of(rows, student), student), soft, float(cfg.distill_alpha))


def summary(cfg: TrainConfig, run_dir: str | os.PathLike) -> dict | None:
    """What ``summary.json`` records of the distillation (None without a teacher)."""
    if not cfg.teacher:
        return None
    cached = read_cache(run_dir)
    meta = cached[0] if cached else {}
    return {"teacher": cfg.teacher, "alpha": float(cfg.distill_alpha), "temperature": float(cfg.distill_temperature),
            "images": len(cached[1]) if cached else 0,
            **{k: meta.get(k) for k in ("teacher_file", "teacher_sha256", "teacher_spec_sha256", "teacher_signature",
                                        "mapping")},
            "scoring_seconds": float(meta["seconds"]) if "seconds" in meta else None}
