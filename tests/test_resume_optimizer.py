"""`train --resume` restores Adam's state: 2 epochs straight == 1 epoch, checkpoint, resume 1 epoch.

The run's own callback (:class:`RunState`) writes the checkpoint (``last.h5`` +
``last.optimizer.npz`` + ``state.json``); a fresh model is then restored the way the trainer
does it. The data is fed in a fixed order without dropout, so the only thing that can differ
is what the checkpoint carries. Without the optimizer state the weights differ, which shows
the comparison can fail.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

LR = 3e-3


@pytest.fixture(scope="module")
def data(tiny_spec, smear_paths):
    from leukedge.preprocess import preprocess_file

    xs, ys = [], []
    for c, paths in smear_paths.items():
        for p in paths[:4]:
            xs.append(preprocess_file(p, tiny_spec.preprocess))
            ys.append(tiny_spec.label_of(c))
    return np.stack(xs), np.array(ys, np.float32)


def _model(tiny_spec, init=None):
    import tf_keras as keras

    from leukedge.train.model import build_classifier

    keras.utils.set_random_seed(0)
    m = build_classifier(tiny_spec, dense_units=16, dropout=0.0)
    if init is not None:
        m.set_weights(init)
    m.compile(keras.optimizers.Adam(LR), "binary_crossentropy")
    return m


def _fit(model, data, run_dir, epochs, initial_epoch=0, state=None):
    from leukedge.train.callbacks import RunState
    from leukedge.train.config import from_preset

    cfg = from_preset("smoke", epochs=epochs, patience=100)
    run_dir.mkdir(exist_ok=True)
    cb = RunState(run_dir, cfg, state if state is not None else {"epoch": 0}, "full", False, len(data[0]))
    x, y = data
    model.fit(x, y, batch_size=8, shuffle=False, epochs=epochs, initial_epoch=initial_epoch,
              validation_data=(x[:8], y[:8]), callbacks=[cb], verbose=0)
    return model


def _resumed(tiny_spec, data, run_dir, restore: bool):
    from leukedge.train.callbacks import set_lr
    from leukedge.train.checkpoint import OPTIMIZER_FILE, restore_optimizer_state

    state = json.loads((run_dir / "state.json").read_text())
    m = _model(tiny_spec)
    m.load_weights(str(run_dir / "last.h5"))
    set_lr(m, state["lr"])
    if restore:
        assert restore_optimizer_state(m, run_dir / OPTIMIZER_FILE, state["phase"], state["epoch"])
    return _fit(m, data, run_dir, 2, initial_epoch=state["epoch"], state=state)


def _maxdiff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a.get_weights(), b.get_weights()))


def test_resume_restores_adam_state_and_matches_a_straight_run(tiny_spec, data, tmp_path):
    from leukedge.train.checkpoint import OPTIMIZER_FILE

    init = _model(tiny_spec).get_weights()
    straight = _fit(_model(tiny_spec, init), data, tmp_path / "straight", 2)

    run = tmp_path / "interrupted"
    _fit(_model(tiny_spec, init), data, run, 1)
    assert (run / OPTIMIZER_FILE).exists() and json.loads((run / "state.json").read_text())["epoch"] == 1
    with np.load(run / OPTIMIZER_FILE) as saved:
        assert int(saved["v00000"]) == 2  # Adam's step count: 16 images / batch 8
    (tmp_path / "copy").mkdir()
    for f in run.iterdir():
        (tmp_path / "copy" / f.name).write_bytes(f.read_bytes())

    with_state = _resumed(tiny_spec, data, run, restore=True)
    without_state = _resumed(tiny_spec, data, tmp_path / "copy", restore=False)

    assert _maxdiff(straight, with_state) < 1e-5
    assert _maxdiff(straight, without_state) > 1e-3  # Adam restarting changes the weights: the test can fail
    assert int(with_state.optimizer.iterations.numpy()) == 4


def test_optimizer_state_of_another_epoch_or_phase_is_not_used(tiny_spec, data, tmp_path, caplog):
    from leukedge.train.checkpoint import OPTIMIZER_FILE, restore_optimizer_state

    _fit(_model(tiny_spec), data, tmp_path, 1)
    m = _model(tiny_spec)
    with caplog.at_level("WARNING", logger="leukedge.train"):
        assert not restore_optimizer_state(m, tmp_path / OPTIMIZER_FILE, "full", 2)
        assert not restore_optimizer_state(m, tmp_path / OPTIMIZER_FILE, "finetune", 1)
        assert not restore_optimizer_state(m, tmp_path / "missing.npz", "full", 1)
    assert caplog.text.count("Adam restarts from zero") == 3
