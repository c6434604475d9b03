"""`leukedge train` on real smears with the tiny CNN: run folder, resume after SIGKILL, search, LR baseline."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def manifest(small_dataset, tmp_path_factory) -> Path:
    from leukedge.split import SplitConfig, make_split, write_manifest

    out = tmp_path_factory.mktemp("split") / "small.split.csv"
    write_manifest(make_split(small_dataset, SplitConfig(block_size=3)), out)
    return out


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _cfg(small_dataset, manifest, runs, **kw):
    from leukedge.train.config import from_preset

    return from_preset("smoke", data_dir=str(small_dataset), split=str(manifest), runs_dir=str(runs),
                       limit_per_class=12, **kw)


def test_one_epoch_end_to_end_run_folder(small_dataset, manifest, tmp_path):
    from leukedge.spec import ModelSpec
    from leukedge.train.io import load_keras_model
    from leukedge.train.trainer import train

    run = train(_cfg(small_dataset, manifest, tmp_path / "runs", epochs=1))
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "spec.json", "split.csv", "history.csv", "best.h5", "last.h5", "state.json",
            "train.log", "predictions.csv", "summary.json"} <= names
    assert run.name.endswith("-tiny-cnn-32")
    assert (tmp_path / "runs" / "latest").resolve() == run.resolve()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["backbone"] == "tiny-cnn" and cfg["data_dir"] == str(small_dataset.resolve())
    spec = ModelSpec.load(run)
    assert 0.0 <= spec.threshold <= 1.0
    assert [p.name for p in spec.operating_points] == ["default", "youden", "0.5"]
    assert spec.preprocess.input_size == 32 and spec.head["feature_layer"] == "features"
    assert len(_history(run)) == 1 and _history(run)[0]["phase"] == "full"
    with open(run / "predictions.csv", newline="") as fh:
        preds = list(csv.DictReader(fh))
    assert {p["split"] for p in preds} == {"val", "test"}
    assert all(0.0 <= float(p["probability"]) <= 1.0 for p in preds)
    assert all(p["y_true"] == ("0" if p["class"] == "Benign" else "1") for p in preds)
    model = load_keras_model(run / "best.h5")
    assert model.output_shape == (None, 1)
    assert model.get_layer("tiny_bn0").momentum == pytest.approx(0.9)  # from scratch: fast BN statistics
    # the pipeline's --resume-latest leaves a finished run of the same backbone as it is
    from leukedge.cli import main

    args = ["train", "--preset", "smoke", "--data", str(small_dataset), "--split", str(manifest),
            "--runs", str(tmp_path / "runs"), "--limit-per-class", "12", "--epochs", "1", "--resume-latest"]
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted([run.name, "latest"])


def test_resume_after_sigkill_continues_from_the_next_epoch(small_dataset, manifest, tmp_path):
    runs = tmp_path / "runs"
    epochs = 8
    cmd = [sys.executable, "-m", "leukedge.cli", "train", "--preset", "smoke", "--data", str(small_dataset),
           "--split", str(manifest), "--runs", str(runs), "--limit-per-class", "12", "--epochs", str(epochs),
           "--patience", "100", "--threads", "1"]
    env = {**os.environ, "LEUKEDGE_PROGRESS": "0", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        state = runs / "latest" / "state.json"
        while not state.exists():
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.time() < deadline, "no epoch finished within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    run = (runs / "latest").resolve()
    done = json.loads(state.read_text())["epoch"]
    assert 1 <= done < epochs and not json.loads(state.read_text()).get("finished")
    assert not (run / "spec.json").exists()
    res = subprocess.run(cmd[:4] + ["--resume", str(run)], env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resuming after epoch {done}" in res.stderr
    assert f"restored the optimizer state of epoch {done}" in res.stderr  # Adam continues, no restart
    epochs_seen = [int(r["epoch"]) for r in _history(run)]
    assert epochs_seen == list(range(1, epochs + 1))  # no duplicated or missing epoch
    final = json.loads(state.read_text())
    assert final["finished"] and final["epoch"] == epochs
    from leukedge.train.io import load_keras_model

    assert load_keras_model(run / "best.h5").output_shape == (None, 1)
    assert (run / "spec.json").exists()


def test_grid_search_grouped_kfold_table(small_dataset, manifest, tmp_path):
    from leukedge.train.search import run_search

    cfg = _cfg(small_dataset, manifest, tmp_path / "runs", epochs=1, search_folds=2,
               search_grid={"dropout": [0.0, 0.5], "lr": [3e-3]})
    out = run_search(cfg)
    with open(out / "search.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and {r["fold"] for r in rows} == {"0", "1"}
    assert all(0.0 <= float(r["val_accuracy"]) <= 1.0 for r in rows)
    md = (out / "search.md").read_text()
    assert "±" in md and md.count("\n| 0") == 2 and "Best setting" in md


def test_search_stopped_part_way_keeps_its_fits_and_resumes(small_dataset, manifest, tmp_path, monkeypatch):
    """Results are written after every fit; `train --resume <search folder>` runs only the fits
    missing from its search.csv (same folds), and the table says when it is partial."""
    from leukedge.train import search
    from leukedge.train.search import _done_fits, run_search, write_results

    cfg = _cfg(small_dataset, manifest, tmp_path / "runs", epochs=1, search_folds=2,
               search_grid={"dropout": [0.0, 0.5], "lr": [3e-3]})
    out = run_search(cfg)
    full = _done_fits(out, cfg.search_grid)
    assert len(full) == 4
    write_results(out, cfg.search_grid, full[:3], cfg)            # as if stopped during the 4th fit
    assert "Partial: 3 of 4 fits done" in (out / "search.md").read_text()

    calls = []
    real = search._fold_score
    monkeypatch.setattr(search, "_fold_score", lambda *a, **k: calls.append(a[0].dropout) or real(*a, **k))
    from leukedge.cli import main

    assert main(["train", "--resume", str(out)]) == 0
    assert calls == [0.5]                                          # only the missing fit ran
    again = _done_fits(out, cfg.search_grid)
    assert again[:3] == full[:3] and len(again) == 4 and again[3]["dropout"] == 0.5 and again[3]["fold"] == 1
    assert [r["fold"] for r in again] == [0, 0, 1, 1]                # fold by fold: every setting on fold 0 first
    assert "Partial" not in (out / "search.md").read_text()
    assert not search.is_search_folder(out.parent)                     # runs/: not a search


def test_a_run_folder_is_not_taken_for_a_search(small_dataset, manifest, tmp_path):
    """A training run's config.json carries the default search grid too: --resume of a run must
    resume the run, not start a search in it."""
    from leukedge.train.search import is_search_folder
    from leukedge.train.trainer import train

    run = train(_cfg(small_dataset, manifest, tmp_path / "runs", epochs=1))
    assert json.loads((run / "config.json").read_text()).get("search_grid")
    assert not is_search_folder(run)


def test_logistic_regression_baseline_with_smote(small_dataset, manifest, tmp_path):
    from leukedge.spec import ModelSpec
    from leukedge.train.baseline_lr import run_baseline

    run = run_baseline(_cfg(small_dataset, manifest, tmp_path / "runs"))
    assert run.name.endswith("-lr-tiny-cnn-32")
    with open(run / "predictions.csv", newline="") as fh:
        preds = list(csv.DictReader(fh))
    assert {p["split"] for p in preds} == {"val", "test"} and all(0 <= float(p["probability"]) <= 1 for p in preds)
    spec = ModelSpec.load(run)
    assert spec.head["type"] == "logistic_regression" and spec.head["exportable"] is False
    assert 0.0 <= spec.threshold <= 1.0


def test_cli_errors_are_one_line(capsys, tmp_path, small_dataset):
    from leukedge.cli import main

    assert main(["train", "--backbone", "densenet-201", "--data", str(small_dataset), "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'densenet201'" in err and "Traceback" not in err
    assert main(["train", "--preset", "smoke", "--split", str(tmp_path / "missing.csv"), "--data", str(small_dataset),
                 "--runs", str(tmp_path)]) == 2
    assert "no split manifest" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_presets_resolve():
    from leukedge.train.config import PRESETS, from_preset
    from leukedge.train.trainer import plan_phases

    quick = from_preset("quick")
    assert quick.backbone == "efficientnet-lite0" and quick.weights == "imagenet"
    assert [p.name for p in plan_phases(quick)] == ["frozen", "finetune"]
    paper = from_preset("paper", weights="none")
    assert (paper.backbone, paper.lr, paper.batch_size, paper.epochs, paper.patience) == ("densenet201", 1e-3, 32, 50, 7)
    assert [p.name for p in plan_phases(paper)] == ["full"]
    assert [p.name for p in plan_phases(from_preset("paper"))] == ["frozen", "finetune"]
    assert {"quick", "paper", "vgg16", "resnet50", "mobilenetv2"} <= set(PRESETS)
    assert from_preset("mobilenetv2", task="subtype").task == "subtype"


def test_bn_recalibration_sets_the_exact_average_of_batch_statistics(smear_paths, tiny_spec):
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from leukedge.preprocess import preprocess_file
    from leukedge.train.callbacks import BNRecalibrate
    from leukedge.train.model import build_classifier

    model = build_classifier(tiny_spec, dense_units=8)
    x = np.stack([preprocess_file(p, tiny_spec.preprocess) for ps in smear_paths.values() for p in ps[:4]])  # 16
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x)))).batch(8)
    momentum = model.get_layer("tiny_bn0").momentum
    cb = BNRecalibrate(ds, steps=2)
    cb.set_model(model)
    cb.recalibrate()
    conv = keras.Model(model.input, model.get_layer("tiny_conv0").output)(x).numpy()
    batch_means = [conv[i:i + 8].mean(axis=(0, 1, 2)) for i in (0, 8)]
    bn = model.get_layer("tiny_bn0")
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean(batch_means, axis=0), rtol=1e-4, atol=1e-5)
    assert bn.momentum == momentum  # restored
