"""The optimizer half of a run's checkpoint: Adam's moments and step count beside ``last.h5``.

``last.h5`` is saved without the optimizer (``include_optimizer=False``: a DenseNet201
``.h5`` then loads in seconds), so :func:`save_optimizer_state` writes the optimizer's
variables (step count, then one first and one second moment per trainable variable, in
the optimizer's own order) to ``last.optimizer.npz``, with the phase and the epoch they
belong to. On ``--resume``, :func:`restore_optimizer_state` builds the freshly compiled
optimizer for the same trainable variables and assigns them back, so Adam continues with
its moments instead of restarting from zero (a restart takes large, badly scaled first
steps: bias correction at step 1 on a model that is already trained).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger("leukedge.train")

OPTIMIZER_FILE = "last.optimizer.npz"


def save_optimizer_state(model, path: str | os.PathLike, phase: str, epoch: int) -> None:
    """Write the compiled optimizer's variables of ``model`` to ``path`` atomically."""
    path = Path(path)
    values = [np.asarray(v.numpy()) for v in model.optimizer.variables]
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
    with open(tmp, "wb") as fh:
        np.savez(fh, phase=np.array(phase), epoch=np.array(int(epoch)), count=np.array(len(values)),
                 **{f"v{i:05d}": a for i, a in enumerate(values)})
    os.replace(tmp, path)


def restore_optimizer_state(model, path: str | os.PathLike, phase: str, epoch: int) -> bool:
    """Give ``model``'s freshly compiled optimizer the state saved by :func:`save_optimizer_state`.

    The state is used only when it was saved in the same phase after the same epoch and holds
    a variable of the same shape for each of the optimizer's variables; otherwise a warning
    says why and the optimizer starts fresh.

    Returns:
        True when the state was restored.
    """
    path = Path(path)
    if not path.exists():
        log.warning("%s: no optimizer state (a run saved before it was kept): Adam restarts from zero", path.name)
        return False
    with np.load(path) as data:
        saved_phase, saved_epoch, n = str(data["phase"]), int(data["epoch"]), int(data["count"])
        saved = [data[f"v{i:05d}"] for i in range(n)]
    if saved_phase != phase or saved_epoch != int(epoch):
        log.warning("%s belongs to phase %s epoch %d, not %s epoch %d: Adam restarts from zero",
                    path.name, saved_phase, saved_epoch, phase, epoch)
        return False
    opt = model.optimizer
    opt.build(model.trainable_variables)
    variables = list(opt.variables)
    shapes = [tuple(v.shape) for v in variables]
    if shapes != [a.shape for a in saved]:
        log.warning("%s: %d saved optimizer variables do not match the model's %d: Adam restarts from zero",
                    path.name, len(saved), len(variables))
        return False
    for v, a in zip(variables, saved):
        v.assign(a)
    log.info("restored the optimizer state of epoch %d (step %d)", saved_epoch, int(saved[0]) if saved else 0)
    return True
