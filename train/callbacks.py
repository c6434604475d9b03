"""Keras callbacks of a run: progress (step, loss, images/s, ETA) and the resumable run state.

:class:`RunState` does what Keras' ``ModelCheckpoint``, ``EarlyStopping`` and
``ReduceLROnPlateau`` do, but keeps their counters in ``state.json`` so that ``--resume``
continues an interrupted run where it stopped: after every epoch it writes ``last.h5``,
``last.optimizer.npz`` (Adam's moments and step count, :mod:`.checkpoint`), ``history.csv``
and, last (the commit point), ``state.json``, each atomically (temporary file +
``os.replace``). What a resume does not restore: the position in the shuffled, augmented
data stream and the random state of dropout (the resumed run draws them afresh).
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path

import tf_keras as keras

from leukedge.fileio import atomic_write_json, atomic_write_text

from .checkpoint import OPTIMIZER_FILE, save_optimizer_state

log = logging.getLogger("leukedge.train")

HISTORY_COLUMNS = ["epoch", "phase", "loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc",
                   "lr", "seconds", "images_per_s"]


def save_model_atomic(model, path: Path) -> None:
    """Save a full tf_keras model as ``.h5`` via a temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.h5")
    with warnings.catch_warnings():  # "HDF5 is legacy": .h5 loads 10x faster than .keras here
        warnings.simplefilter("ignore", UserWarning)
        model.save(str(tmp), include_optimizer=False, save_format="h5")
    os.replace(tmp, path)


def read_history(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_history(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_text(path, buf.getvalue())


def get_lr(model) -> float:
    return float(keras.backend.get_value(model.optimizer.learning_rate))


def set_lr(model, lr: float) -> None:
    keras.backend.set_value(model.optimizer.learning_rate, lr)


class Progress(keras.callbacks.Callback):
    """Logs epoch, step/steps, loss, images/s and ETA every ``every`` steps and per epoch.

    On a terminal it also keeps a one-line tqdm-style bar on stderr.
    """

    def __init__(self, steps: int, batch_size: int, epochs: int, every: int = 10, n_images: int | None = None):
        super().__init__()
        self.steps, self.bs, self.epochs, self.every = steps, batch_size, epochs, max(1, every)
        self.n_images = n_images or steps * batch_size
        self.tty = sys.stderr.isatty() and os.environ.get("LEUKEDGE_PROGRESS") != "0"

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.t0 = time.time()

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        dt = max(time.time() - self.t0, 1e-9)
        rate = min(step * self.bs, self.n_images) / dt
        eta = (self.steps - step) * dt / step
        loss = (logs or {}).get("loss", float("nan"))
        line = (f"epoch {self.epoch + 1}/{self.epochs} step {step}/{self.steps} loss {loss:.4f} "
                f"{rate:.1f} img/s ETA {_fmt(eta)}")
        if self.tty:
            frac = step / self.steps
            bar = "#" * int(20 * frac) + "-" * (20 - int(20 * frac))
            sys.stderr.write(f"\r[{bar}] {line}   ")
            sys.stderr.flush()
            if step == self.steps:
                sys.stderr.write("\n")
        elif step % self.every == 0 or step == self.steps:
            log.info(line)


def _fmt(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class RunState(keras.callbacks.Callback):
    """Best/last checkpoints, early stopping, reduce-on-plateau and history, all resumable.

    Args:
        run_dir: the run folder.
        cfg: the resolved :class:`~leukedge.train.config.TrainConfig`.
        state: the state dict to continue from (``state.json``), updated in place.
        phase: name of the current phase (``frozen``, ``finetune`` or ``full``).
        early_stopping: whether early stopping applies in this phase.
        images_per_epoch: images seen per epoch (for images/s).
    """

    def __init__(self, run_dir: Path, cfg, state: dict, phase: str, early_stopping: bool, images_per_epoch: int):
        super().__init__()
        self.run_dir, self.cfg, self.state = Path(run_dir), cfg, state
        self.phase, self.early_stopping, self.images = phase, early_stopping, images_per_epoch
        self.history = read_history(self.run_dir / "history.csv")
        self.history = [r for r in self.history if int(r["epoch"]) <= state.get("epoch", 0)]

    def _improved(self, value: float) -> bool:
        best = self.state.get("best")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if best is None:
            return True
        return value < best if self.cfg.monitor_mode == "min" else value > best

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.time()
        self.lr_used = get_lr(self.model)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        seconds = time.time() - self.t0
        done = epoch + 1
        st = self.state
        value = logs.get(self.cfg.monitor)
        value = None if value is None else float(value)
        if self._improved(value):
            st.update(best=value, best_epoch=done, es_wait=0, plateau_wait=0)
            save_model_atomic(self.model, self.run_dir / "best.h5")
        else:
            st["es_wait"] = st.get("es_wait", 0) + 1
            st["plateau_wait"] = st.get("plateau_wait", 0) + 1
            if st["plateau_wait"] >= self.cfg.reduce_lr_patience:
                new_lr = max(self.lr_used * self.cfg.reduce_lr_factor, self.cfg.min_lr)
                if new_lr < self.lr_used:
                    set_lr(self.model, new_lr)
                    log.info("reduce-on-plateau: learning rate %.2e -> %.2e", self.lr_used, new_lr)
                st["plateau_wait"] = 0
            if self.early_stopping and st["es_wait"] >= self.cfg.patience:
                log.info("early stopping: no %s improvement for %d epochs (best %.4f at epoch %d)",
                         self.cfg.monitor, st["es_wait"], st["best"], st["best_epoch"])
                self.model.stop_training = True
                st["stopped_early"] = True
        row = {"epoch": done, "phase": self.phase, "lr": f"{self.lr_used:.6g}", "seconds": f"{seconds:.1f}",
               "images_per_s": f"{self.images / max(seconds, 1e-9):.2f}"}
        for k in ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"):
            if k in logs:
                row[k] = f"{float(logs[k]):.6f}"
        self.history.append(row)
        st.update(epoch=done, phase=self.phase, lr=get_lr(self.model), updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        # Commit order: last.h5, its optimizer state, history.csv, then state.json (a crash in
        # between is harmless: resume trusts state.json, drops history rows beyond its epoch and
        # uses the optimizer state only when it was saved after that epoch).
        save_model_atomic(self.model, self.run_dir / "last.h5")
        save_optimizer_state(self.model, self.run_dir / OPTIMIZER_FILE, self.phase, done)
        write_history(self.run_dir / "history.csv", self.history)
        atomic_write_json(self.run_dir / "state.json", st)
        log.info("epoch %d/%d [%s] loss %.4f acc %.4f auc %.4f | val_loss %.4f val_acc %.4f val_auc %.4f | "
                 "lr %.1e | %.0f s, %.1f img/s%s", done, self.cfg.epochs, self.phase, logs.get("loss", float("nan")),
                 logs.get("accuracy", float("nan")), logs.get("auc", float("nan")), logs.get("val_loss", float("nan")),
                 logs.get("val_accuracy", float("nan")), logs.get("val_auc", float("nan")), self.lr_used, seconds,
                 self.images / max(seconds, 1e-9), " *best*" if st.get("best_epoch") == done else "")


class BNRecalibrate(keras.callbacks.Callback):
    """Re-estimate BatchNormalization statistics with the current weights before each validation.

    Training from scratch at a high learning rate, the moving averages mix statistics of
    weights from many steps ago; deep BN stacks (DenseNet201: 201 layers) then collapse to
    one class in inference mode although the training-mode accuracy is high. Before
    validation this runs ``steps`` un-augmented training batches in training mode and sets
    each moving mean/variance to their exact average (cumulative momentum), as SWA's
    ``bn_update`` does (:func:`leukedge.train.precise_bn.recalibrate_batchnorm`). The weights
    are not changed.
    """

    def __init__(self, dataset, steps: int):
        super().__init__()
        self.dataset, self.steps = dataset, int(steps)

    def recalibrate(self):
        from .precise_bn import recalibrate_batchnorm

        t0 = time.time()
        used = recalibrate_batchnorm(self.model, self.dataset.take(self.steps), self.steps, trainable_only=True)
        log.info("BatchNorm statistics re-estimated on %d training batches (%.0f s)", used, time.time() - t0)

    def on_test_begin(self, logs=None):
        self.recalibrate()
