"""The training loop: run folders, two-phase transfer learning, resume, final thresholds.

A run folder ``runs/<YYYYmmdd-HHMMSS>-<backbone>-<size>/`` (subtype runs end in
``-subtype``) holds ``config.json``, ``split.csv`` (the manifest used), ``history.csv``,
``best.h5``, ``last.h5`` + ``last.optimizer.npz`` + ``state.json`` (rewritten after every
epoch), ``train.log``, with a teacher ``soft_targets.npz`` (:mod:`leukedge.train.distill`)
and, when training ends, ``spec.json`` (threshold chosen on the validation split),
``predictions.csv`` (validation and test, best weights) and ``summary.json``.
``runs/latest`` points at the newest run.

Phases: with pretrained weights, ``frozen`` (backbone frozen, ``lr``) for
``freeze_epochs``, then ``finetune`` (top ``fine_tune_layers`` or all backbone layers,
``fine_tune_lr``, BatchNormalization kept in inference mode); from scratch a single
``full`` phase. Early stopping acts in the last phase; the best epoch (``monitor``) over
the whole run is what ``best.h5`` holds.

Hardware: on CPU nothing changes. With a GPU, mixed precision (``mixed_float16``, output
layer kept float32) is enabled and with several GPUs ``tf.distribute.MirroredStrategy``
replicates the model. With ``TF_CONFIG`` set (or ``leukedge train --workers``), training
runs on several machines with ``tf.distribute.MultiWorkerMirroredStrategy``
(:mod:`leukedge.train.distribute`): ``batch_size`` is the global batch, the chief writes the
run folder, the other workers a temporary one.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukedge.data import resolve_data_dir, scan
from leukedge.errors import ConfigError, DataError
from leukedge.fileio import atomic_copy, atomic_write_json, sha256_file
from leukedge.split import SPLITS, read_manifest, rows_of

from .checkpoint import OPTIMIZER_FILE, restore_optimizer_state
from .config import TrainConfig
from .distribute import Cluster, check_batch, cluster_from_env, make_strategy, shard_by_data
from .dataset import Pipeline, class_weights, eval_pipeline, labels_of, limit_rows, spec_for, train_pipeline
from .distill import open_teacher, training_targets, summary as distill_summary

log = logging.getLogger("leukedge.train")
HEAD_LAYERS = ("image", "features", "gap", "head_dense", "head_dropout", "probability")


@dataclass
class Phase:
    name: str
    start: int
    end: int
    lr: float
    early_stopping: bool


def plan_phases(cfg: TrainConfig) -> list[Phase]:
    """The training phases of a config (epochs counted over the whole run)."""
    if not cfg.pretrained:
        return [Phase("full", 0, cfg.epochs, cfg.lr, True)]
    frozen = min(cfg.freeze_epochs, cfg.epochs)
    phases = []
    if frozen > 0:
        phases.append(Phase("frozen", 0, frozen, cfg.lr, frozen == cfg.epochs))
    if frozen < cfg.epochs:
        phases.append(Phase("finetune", frozen, cfg.epochs, cfg.fine_tune_lr, True))
    return phases


# ----- runtime -------------------------------------------------------------------------
def setup_runtime(cfg: TrainConfig) -> None:
    """Threads, seeds and (on GPUs) mixed precision. Call before building models."""
    import cv2
    import tensorflow as tf
    import tf_keras as keras

    cv2.setNumThreads(1)  # the tf.data map runs several decodes in parallel already
    threads = int(cfg.threads or os.cpu_count() or 1)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))
    except RuntimeError:  # already initialised in this process (tests): keep what is set
        pass
    keras.utils.set_random_seed(cfg.seed)
    if tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
        log.info("GPU found: mixed precision (float16 compute, float32 output)")


def strategy():
    """The distribution strategy of this process (see :func:`leukedge.train.distribute.make_strategy`)."""
    return make_strategy(cluster_from_env())


def _float32_output(model):
    """Under mixed precision, rebuild so the output layer computes in float32."""
    import tf_keras as keras

    if keras.mixed_precision.global_policy().name != "mixed_float16":
        return model

    def clone(layer):
        cfg = layer.get_config()
        if layer.name == "probability":
            cfg["dtype"] = "float32"
        return layer.__class__.from_config(cfg)

    out = keras.models.clone_model(model, clone_function=clone)
    out.set_weights(model.get_weights())
    return out


def resolve_weights(cfg: TrainConfig):
    """Weights source for the backbone builder (None = random init); fails early offline."""
    if not cfg.pretrained:
        return None
    try:
        from . import weights as W
    except ImportError:
        W = None
    if W is not None and hasattr(W, "resolve_weights"):
        return W.resolve_weights(cfg.backbone, cfg.weights)
    return cfg.weights


def bn_momentum(cfg: TrainConfig) -> float | None:
    """The BatchNormalization momentum to use (see ``TrainConfig.bn_momentum``)."""
    if cfg.bn_momentum is not None:
        return float(cfg.bn_momentum)
    return None if cfg.pretrained else 0.9


def bn_recalibrate_steps(cfg: TrainConfig) -> int:
    """Training batches for BatchNorm re-estimation before validation (see the config field)."""
    if cfg.bn_recalibrate_steps is not None:
        return int(cfg.bn_recalibrate_steps)
    return 0 if cfg.pretrained else 8


def build_model(cfg: TrainConfig, spec, weights):
    import tf_keras as keras

    from .model import build_classifier

    model = build_classifier(spec, weights=weights, dense_units=cfg.dense_units, dropout=cfg.dropout)
    momentum = bn_momentum(cfg)
    if momentum is not None:  # read when the training graph is traced, so setting it here suffices
        bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
        for layer in bns:
            layer.momentum = momentum
        log.debug("BatchNormalization momentum %.3g on %d layers", momentum, len(bns))
    return _float32_output(model)


def set_trainable(model, phase: Phase, cfg: TrainConfig) -> None:
    """Freeze/unfreeze backbone layers for a phase (head layers always train)."""
    import tf_keras as keras

    backbone = [l for l in model.layers if l.name not in HEAD_LAYERS]
    for layer in model.layers:
        layer.trainable = True
    if phase.name == "frozen":
        for layer in backbone:
            layer.trainable = False
    elif phase.name == "finetune":
        n = cfg.fine_tune_layers
        frozen = backbone[:-n] if n and n < len(backbone) else []
        for layer in frozen:
            layer.trainable = False
        if not cfg.fine_tune_bn:
            for layer in backbone:  # pretrained BatchNorm statistics stay as they are
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
    n_train = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    log.info("phase %s: %d trainable parameters", phase.name, n_train)


def compile_model(model, spec, lr: float, distill: bool = False) -> None:
    """Adam, cross-entropy, accuracy and ROC-AUC; ``distill``: the loss and metrics of targets
    ``[mixed target | hard label]`` (:mod:`leukedge.train.distill_keras`)."""
    import tf_keras as keras

    if distill:
        from .distill_keras import distill_loss_and_metrics

        loss, metrics = distill_loss_and_metrics(spec.task == "binary", spec.num_outputs)
    elif spec.task == "binary":
        loss = keras.losses.BinaryCrossentropy()
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    else:
        loss = keras.losses.CategoricalCrossentropy()
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=metrics)


# ----- run folders ---------------------------------------------------------------------
def new_run_dir(cfg: TrainConfig) -> Path:
    root = Path(cfg.runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{cfg.backbone}-{cfg.resolved_input_size()}" + ("-subtype" if cfg.task == "subtype" else "")
    run = root / name
    k = 1
    while run.exists():
        run, k = root / f"{name}.{k}", k + 1
    run.mkdir()
    return run


def point_latest(run_dir: Path) -> None:
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(run_dir.name, tmp)
    os.replace(tmp, link)


def _attach_log(run_dir: Path) -> logging.Handler:
    h = logging.FileHandler(run_dir / "train.log")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    h.setLevel(logging.INFO)
    logging.getLogger("leukedge").addHandler(h)
    if logging.getLogger("leukedge").getEffectiveLevel() > logging.INFO:
        logging.getLogger("leukedge").setLevel(logging.INFO)
    return h


def prepare_run(cfg: TrainConfig) -> Path:
    """Create the run folder with ``config.json`` and ``split.csv`` (made here if none given)."""
    cfg.validate()
    data_dir = resolve_data_dir(cfg.data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder", "pass --data DIR (one subfolder per class)")
    cfg.data_dir = str(data_dir.resolve())
    if cfg.split and not Path(cfg.split).exists():
        raise DataError(f"{cfg.split}: no split manifest", "create one with `leukedge data split DIR --out FILE`")
    # The data is checked before the weights are looked for (they may need a download): an
    # empty folder or a bad manifest is reported as such, not as a download failure.
    if cfg.split:
        classes = {r["class"] for r in read_manifest(cfg.split, data_dir) if r["split"] in SPLITS}
    else:
        classes = {r.cls for r in scan(data_dir)}
    resolve_weights(cfg)  # fail before creating anything when the weights are unavailable
    if cfg.teacher:  # likewise a missing, unsigned, tampered or unmappable teacher
        open_teacher(cfg, spec_for(cfg, sorted(classes)))
    run_dir = new_run_dir(cfg)
    if cfg.split:
        atomic_copy(cfg.split, run_dir / "split.csv")
        cfg.split = str(Path(cfg.split).resolve())
    else:
        from leukedge.split import make_split, write_manifest

        log.info("no --split given: splitting %s (default settings) into the run folder", data_dir)
        write_manifest(make_split(data_dir), run_dir / "split.csv")
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    point_latest(run_dir)
    return run_dir


def load_rows(cfg: TrainConfig, run_dir: Path) -> dict[str, list[dict]]:
    rows = read_manifest(run_dir / "split.csv", cfg.data_dir)
    out = {s: limit_rows(rows_of(rows, s), cfg.limit_per_class) for s in SPLITS}
    for s in SPLITS:
        if not out[s]:
            raise DataError(f"the {s} split of {run_dir / 'split.csv'} is empty", "re-split the data")
    return out


# ----- training ------------------------------------------------------------------------
def train(cfg: TrainConfig | None = None, resume: str | os.PathLike | None = None) -> Path:
    """Train a new run from ``cfg`` or continue the run folder ``resume``; returns the run folder."""
    cluster = cluster_from_env()  # a malformed TF_CONFIG fails here, before anything is created
    if cluster is not None:
        if resume is not None:
            raise ConfigError("resuming a multi-worker run is not supported",
                              "resume it on one machine (unset TF_CONFIG), or start a new multi-worker run")
        cfg.validate()
        check_batch(cfg.batch_size, cluster)
        if not cfg.split:
            raise ConfigError("multi-worker training needs --split (every worker must read the same manifest)",
                              "make one with `leukedge data split DIR --out FILE` and give it to every worker")
        if not cluster.is_chief:  # TensorFlow's pattern: non-chief workers write to a temporary folder
            cfg.runs_dir = tempfile.mkdtemp(prefix=f"leukedge-worker{cluster.rank}-")
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.json").exists():
            raise ConfigError(f"{run_dir}: not a run folder (no config.json)", "pass runs/<time>-<backbone>-<size>")
        cfg = TrainConfig.load(run_dir)
    else:
        run_dir = prepare_run(cfg)
    handler = _attach_log(run_dir)
    try:
        return _train(cfg, run_dir, resuming=resume is not None, cluster=cluster)
    finally:
        logging.getLogger("leukedge").removeHandler(handler)
        handler.close()
        if cluster is not None and not cluster.is_chief:
            shutil.rmtree(cfg.runs_dir, ignore_errors=True)


def _load_state(run_dir: Path) -> dict:
    import json

    p = run_dir / "state.json"
    return json.loads(p.read_text()) if p.exists() else {"epoch": 0}


def training_pipeline(cfg: TrainConfig, run_dir: Path, rows: list[dict], spec, augment: bool = True) -> Pipeline:
    """The run's training batches ``(x, target[, class weight])``: hard labels, or with a teacher
    the distillation targets (:mod:`leukedge.train.distill`, scored once into the run folder);
    class weights (``cfg.balance``) always from the hard labels."""
    cw = None
    if cfg.balance in ("class_weight", "both"):
        cw = class_weights(labels_of(rows, spec), spec.num_outputs if spec.task == "subtype" else 2)
        log.info("class weights %s", {k: round(v, 3) for k, v in cw.items()})
    targets = training_targets(cfg, run_dir, rows, spec)
    if targets is not None:
        log.info("distillation: target = %.3g * label + %.3g * teacher (%s)", 1 - cfg.distill_alpha,
                 cfg.distill_alpha, cfg.teacher)
    return train_pipeline(rows, spec, cfg, augment=augment, targets=targets, class_weight=cw,
                          with_hard_labels=targets is not None)


def _train(cfg: TrainConfig, run_dir: Path, resuming: bool, cluster: Cluster | None = None) -> Path:
    from .callbacks import BNRecalibrate, Progress, RunState, set_lr

    setup_runtime(cfg)
    dist = make_strategy(cluster)  # before any other TensorFlow op (collective ops are set up at start)
    state = _load_state(run_dir)
    if state.get("finished"):
        log.info("%s: already finished (%d epochs); nothing to do", run_dir, state["epoch"])
        return run_dir
    rows = load_rows(cfg, run_dir)
    spec = spec_for(cfg, sorted({r["class"] for s in SPLITS for r in rows[s]}))
    if bn_momentum(cfg) is not None:
        log.info("BatchNormalization momentum %.3g (%s)", bn_momentum(cfg),
                 "set" if cfg.bn_momentum is not None else "automatic for training from scratch")
    log.info("run %s: %s %s %s at %d, train/val/test %d/%d/%d%s", run_dir.name, cfg.backbone, cfg.weights, cfg.task,
             spec.preprocess.input_size, *(len(rows[s]) for s in SPLITS),
             f", resuming after epoch {state['epoch']}" if resuming else "")
    tr = training_pipeline(cfg, run_dir, rows["train"], spec)
    va = eval_pipeline(rows["val"], spec, batch_size=cfg.batch_size)
    if cluster is not None:  # a list of image paths shards by element, not by file
        tr.dataset, va.dataset = shard_by_data(tr.dataset), shard_by_data(va.dataset)
    with dist.scope():
        have_last = resuming and (run_dir / "last.h5").exists() and state.get("epoch", 0) > 0
        model = build_model(cfg, spec, None if have_last else resolve_weights(cfg))
        if have_last:
            model.load_weights(str(run_dir / "last.h5"))
            log.info("restored weights of epoch %d from last.h5 (lr %.2e, phase %s)",
                     state["epoch"], state.get("lr", 0), state.get("phase"))
        images = min(tr.steps * cfg.batch_size, tr.n)
        recal = bn_recalibrate_steps(cfg)
        if recal and cluster is not None:
            if cfg.bn_recalibrate_steps:
                raise ConfigError("bn_recalibrate_steps is not supported in multi-worker training",
                                  "leave it unset; re-estimate afterwards with `leukedge train --finalize RUN "
                                  "--recalibrate-bn N` on one machine")
            log.info("multi-worker: BatchNorm re-estimation before validation is off (use --finalize "
                     "--recalibrate-bn afterwards)")
            recal = 0
        if recal:
            sub = rows["train"][:: max(1, len(rows["train"]) // (recal * cfg.batch_size))]
            recal_pipe = eval_pipeline(sub[: recal * cfg.batch_size], spec, batch_size=cfg.batch_size)
        for phase in plan_phases(cfg):
            if state.get("stopped_early"):
                break
            if state.get("epoch", 0) >= phase.end:
                continue
            continuing = state.get("phase") == phase.name and state.get("epoch", 0) > phase.start
            if not continuing:  # a fresh phase: its own learning rate and counters
                state.update(phase=phase.name, lr=phase.lr, es_wait=0, plateau_wait=0)
            set_trainable(model, phase, cfg)
            compile_model(model, spec, phase.lr, distill=bool(cfg.teacher))
            set_lr(model, float(state.get("lr", phase.lr)))
            if continuing and have_last:  # Adam's moments and step count, saved with last.h5
                restore_optimizer_state(model, run_dir / OPTIMIZER_FILE, phase.name, state["epoch"])
            callbacks = [Progress(tr.steps, cfg.batch_size, cfg.epochs, cfg.log_every, images),
                         RunState(run_dir, cfg, state, phase.name, phase.early_stopping, images)]
            if recal:
                callbacks.insert(0, BNRecalibrate(recal_pipe.dataset, recal))
            model.fit(tr.dataset, steps_per_epoch=tr.steps, validation_data=va.dataset, epochs=phase.end,
                      initial_epoch=state.get("epoch", 0), callbacks=callbacks, verbose=0)
    if cluster is not None and not cluster.is_chief:
        log.info("worker %d done; the chief writes spec.json and the predictions", cluster.rank)
        return run_dir
    finish(cfg, run_dir, spec, rows, state)
    return run_dir


def finalize(run_dir: str | os.PathLike, recalibrate_bn: int = 0) -> dict:
    """Write ``spec.json``, ``predictions.csv`` and ``summary.json`` from the current ``best.h5``
    of a run, finished or not (an unfinished run stays resumable).

    Args:
        run_dir: the run folder.
        recalibrate_bn: when > 0, take the latest weights (``last.h5``), re-estimate their
            BatchNorm statistics from this many un-augmented training batches
            (:mod:`leukedge.train.precise_bn`) and make that the run's ``best.h5`` (the previous
            one is kept as ``best.before-bn-recalibration.h5``); ``state.json`` records it.
    """
    run_dir = Path(run_dir)
    cfg = TrainConfig.load(run_dir)
    if not (run_dir / "best.h5").exists():
        raise ConfigError(f"{run_dir}: no best.h5 yet", "wait until the first epoch has finished")
    setup_runtime(cfg)
    state = _load_state(run_dir)
    rows = load_rows(cfg, run_dir)
    spec = spec_for(cfg, sorted({r["class"] for s in SPLITS for r in rows[s]}))
    build_model(cfg, spec, None)  # sets spec.head (layer names, feature shape)
    if recalibrate_bn > 0:
        _recalibrate_best(cfg, run_dir, spec, rows, state, recalibrate_bn)
    return finish(cfg, run_dir, spec, rows, state, mark_finished=bool(state.get("finished")))


def _recalibrate_best(cfg: TrainConfig, run_dir: Path, spec, rows: dict, state: dict, n_batches: int) -> None:
    import shutil

    from .io import load_keras_model
    from .precise_bn import recalibrate_batchnorm

    model = load_keras_model(run_dir / "last.h5")
    pipe = eval_pipeline(rows["train"], spec, batch_size=cfg.batch_size, cache=False)
    used = recalibrate_batchnorm(model, pipe.dataset.shuffle(64, seed=cfg.seed), n_batches)
    if (run_dir / "best.h5").exists() and not (run_dir / "best.before-bn-recalibration.h5").exists():
        shutil.copy2(run_dir / "best.h5", run_dir / "best.before-bn-recalibration.h5")
    tmp = run_dir / ".best.recalibrated.h5"
    model.save(str(tmp))
    os.replace(tmp, run_dir / "best.h5")
    state["bn_recalibrated"] = {"from": "last.h5", "epoch": state.get("epoch"), "batches": used,
                                "batch_size": cfg.batch_size}
    state["best_epoch"] = state.get("epoch")
    atomic_write_json(run_dir / "state.json", state)
    log.info("best.h5 := last.h5 (epoch %s) with BatchNorm statistics re-estimated from %d training batches",
             state.get("epoch"), used)


def finish(cfg: TrainConfig, run_dir: Path, spec, rows: dict, state: dict, mark_finished: bool = True) -> dict:
    """Best weights -> validation/test predictions, validated thresholds, ``spec.json``."""
    from .io import load_keras_model
    from .outputs import positive_probs, positive_truth, set_thresholds, write_predictions, write_summary

    model = load_keras_model(run_dir / "best.h5")
    probs = {}
    for split in ("val", "test"):
        pipe = eval_pipeline(rows[split], spec, batch_size=cfg.batch_size, cache=False)
        probs[split] = model.predict(pipe.dataset, verbose=0)
    y_val = positive_truth(rows["val"], spec)
    set_thresholds(spec, y_val, positive_probs(probs["val"], spec))
    spec.outputs = ["probability"]
    spec.data.manifest_sha256 = sha256_file(run_dir / "split.csv")
    spec.save(run_dir / "spec.json")
    write_predictions(run_dir / "predictions.csv", [(s, rows[s], probs[s]) for s in ("val", "test")], spec)
    summary = write_summary(run_dir / "summary.json", spec, {s: (rows[s], probs[s]) for s in ("val", "test")},
                            {"run": run_dir.name, "best_epoch": state.get("best_epoch"), "epochs": state.get("epoch"),
                             "monitor": cfg.monitor, "best": state.get("best"),
                             "stopped_early": bool(state.get("stopped_early")),
                             **({"distillation": distill_summary(cfg, run_dir)} if cfg.teacher else {})})
    if mark_finished:
        state["finished"] = True
        atomic_write_json(run_dir / "state.json", state)
    for split in ("val", "test"):
        m = summary[split]["at_threshold"]
        log.info("%s: accuracy %.4f sensitivity %.4f specificity %.4f ROC-AUC %.4f at threshold %.4f%s", split,
                 m["accuracy"], m["sensitivity"] or 0, m["specificity"] or 0, m["roc_auc"] or 0, m["threshold"],
                 f" | subtype accuracy {summary[split]['subtype_accuracy']:.4f}" if "subtype_accuracy" in summary[split] else "")
    return summary


def latest_to_resume(cfg: TrainConfig) -> Path | None:
    """``RUNS/latest`` when it is a run of the same backbone, task and size (finished or not)."""
    import json

    link = Path(cfg.runs_dir) / "latest"
    if not (link / "config.json").exists():
        return None
    prev = TrainConfig.load(link)
    same = (prev.backbone, prev.task, prev.resolved_input_size()) == (cfg.backbone, cfg.task, cfg.resolved_input_size())
    if not same:
        log.info("runs/latest is a %s %s run: starting a new run", prev.backbone, prev.task)
        return None
    state = json.loads((link / "state.json").read_text()) if (link / "state.json").exists() else {}
    if state.get("finished"):
        log.info("runs/latest (%s) is a finished run of this backbone and task: nothing to do", link.resolve().name)
    return link.resolve()
