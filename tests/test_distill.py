"""Knowledge distillation (`leukedge train --teacher`) on real smears with the tiny CNN and a committed
release as the teacher: the soft-target cache, the training targets, and the refusals."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

TEACHER = Path("models/efficientnet-lite0-subtype")
BINARY_TEACHER = Path("models/efficientnet-lite0-binary")
ALPHA = 0.3


@pytest.fixture(scope="module")
def manifest(small_dataset, tmp_path_factory) -> Path:
    from leukedge.split import SplitConfig, make_split, write_manifest

    out = tmp_path_factory.mktemp("split") / "small.split.csv"
    write_manifest(make_split(small_dataset, SplitConfig(block_size=3)), out)
    return out


def _cfg(small_dataset, manifest, runs, **kw):
    from leukedge.train.config import from_preset

    kw = {"epochs": 1, "max_steps_per_epoch": 2, "threads": 1, "limit_per_class": 6, **kw}
    return from_preset("smoke", data_dir=str(small_dataset), split=str(manifest), runs_dir=str(runs), **kw)


@pytest.fixture(scope="module")
def distilled_run(small_dataset, manifest, tmp_path_factory) -> Path:
    """One epoch of the tiny CNN distilled from the 4-class EfficientNet-Lite0 release used as a screen."""
    from leukedge.train.trainer import train

    return train(_cfg(small_dataset, manifest, tmp_path_factory.mktemp("runs"), teacher=str(TEACHER),
                      distill_alpha=ALPHA))


def _run_parts(run: Path, **changes):
    from leukedge.split import SPLITS
    from leukedge.train.config import TrainConfig
    from leukedge.train.dataset import spec_for
    from leukedge.train.trainer import load_rows

    cfg = TrainConfig.load(run)
    for k, v in changes.items():
        setattr(cfg, k, v)
    rows = load_rows(cfg, run)
    spec = spec_for(cfg, sorted({r["class"] for s in SPLITS for r in rows[s]}))
    return cfg, rows, spec


def _teacher_scores(rows, variant="float32"):
    from leukedge.predictors import load_predictor, score_paths

    pred = load_predictor(TEACHER, variant=variant, num_threads=1)
    return pred, score_paths(pred, [r["abspath"] for r in rows], keep=())


def _interrupted(run: Path, epochs: int) -> None:
    """Make a finished 1-epoch run look like an interrupted ``epochs``-epoch run (what state.json
    holds after a kill)."""
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "epochs": epochs}))
    state = json.loads((run / "state.json").read_text())
    state.pop("finished", None)
    (run / "state.json").write_text(json.dumps(state))


def test_soft_targets_are_the_teachers_screen_probability_cached_once_and_reused_on_resume(
        distilled_run, tmp_path, monkeypatch, caplog):
    from leukedge.fileio import sha256_file
    from leukedge.train import distill
    from leukedge.train.trainer import train

    cfg, rows, spec = _run_parts(distilled_run)
    assert (cfg.teacher, cfg.distill_alpha) == (str(TEACHER), ALPHA)
    meta, table = distill.read_cache(distilled_run)
    assert list(table) == [r["path"] for r in rows["train"]]  # relative to the data root, in row order
    assert all(not p.startswith("/") for p in table)
    assert meta["teacher_sha256"] == sha256_file(TEACHER / f"{TEACHER.name}.float32.tflite")
    assert meta["teacher_spec_sha256"] == sha256_file(TEACHER / "spec.json")
    assert meta["teacher_signature"] == "verified" and meta["mapping"] == "1 - P(negative class)"
    # the teacher's own preprocessing (224 px, its spec) and P(leukemia) = 1 - P(Benign)
    pred, scores = _teacher_scores(rows["train"][:4] + rows["train"][-4:])
    assert pred.spec.preprocess.input_size == 224 and spec.preprocess.input_size == 32
    neg = pred.spec.class_names.index("Benign")
    for path, probs in zip(scores.paths, scores.probabilities):
        rel = next(r["path"] for r in rows["train"] if r["abspath"] == path)
        assert table[rel].shape == (1,) and table[rel][0] == pytest.approx(1.0 - probs[neg], abs=1e-6)
    soft = np.array([table[r["path"]][0] for r in rows["train"]])
    benign = np.array([r["class"] == "Benign" for r in rows["train"]])
    assert roc_auc_score(~benign, soft) >= 0.9 and np.median(soft[benign]) < 0.5 < np.median(soft[~benign])
    summary = json.loads((distilled_run / "summary.json").read_text())["distillation"]
    assert summary["teacher_sha256"] == meta["teacher_sha256"] and summary["alpha"] == ALPHA
    assert summary["images"] == len(rows["train"]) and summary["scoring_seconds"] > 0

    # resume an interrupted run: the cache is read, never re-scored or rewritten
    run = tmp_path / distilled_run.name
    shutil.copytree(distilled_run, run)
    _interrupted(run, epochs=2)
    before = ((run / distill.SOFT_TARGETS_FILE).read_bytes(), (run / distill.SOFT_TARGETS_FILE).stat().st_mtime_ns)

    def no_scoring(*a, **k):
        raise AssertionError("the teacher scored again on resume")

    monkeypatch.setattr(distill, "score_paths", no_scoring)
    with caplog.at_level(logging.INFO, logger="leukedge"):
        train(resume=run)
    assert "soft targets: reused soft_targets.npz (24 images" in caplog.text
    after = ((run / distill.SOFT_TARGETS_FILE).read_bytes(), (run / distill.SOFT_TARGETS_FILE).stat().st_mtime_ns)
    assert after == before
    state = json.loads((run / "state.json").read_text())
    assert state["finished"] and state["epoch"] == 2


def test_training_batches_carry_the_mixed_target_hard_label_and_class_weight(distilled_run):
    from leukedge.preprocess import preprocess_file
    from leukedge.train import distill
    from leukedge.train.dataset import class_weights, labels_of
    from leukedge.train.trainer import training_pipeline

    cfg, rows, spec = _run_parts(distilled_run, batch_size=24)
    train_rows = rows["train"]
    pipe = training_pipeline(cfg, distilled_run, train_rows, spec, augment=False)
    x, y, w = (t.numpy() for t in next(iter(pipe.dataset)))
    assert x.shape == (24, 32, 32, 3) and y.shape == (24, 2) and w.shape == (24,)
    table = distill.read_cache(distilled_run)[1]
    cw = class_weights(labels_of(train_rows, spec), 2)
    images = {r["path"]: preprocess_file(r["abspath"], spec.preprocess) for r in train_rows}
    seen = []
    for img, target, weight in zip(x, y, w):
        row = next(r for r in train_rows if np.array_equal(images[r["path"]], img))
        label = spec.label_of(row["class"])
        expected = (1.0 - ALPHA) * label + ALPHA * float(table[row["path"]][0])
        assert target[0] == pytest.approx(expected, abs=1e-7)  # the formula, per row
        assert target[1] == label  # the hard label, for the training metrics
        assert weight == pytest.approx(cw[label])  # class weight keyed on the hard label
        seen.append(row["path"])
    assert sorted(seen) == sorted(images)  # one epoch's batch is every training row once
    assert np.abs(y[:, 0] - y[:, 1]).max() > 1e-4  # the teacher moved the targets off the labels


def test_alpha_zero_gives_exactly_the_targets_of_a_run_without_teacher(distilled_run):
    from leukedge.train.trainer import training_pipeline

    cfg0, rows, spec = _run_parts(distilled_run, distill_alpha=0.0)
    plain, _, _ = _run_parts(distilled_run, teacher=None)
    # augmentation off: its random state differs between two pipelines of one process, the order does not
    with_teacher = training_pipeline(cfg0, distilled_run, rows["train"], spec, augment=False).dataset
    without = training_pipeline(plain, distilled_run, rows["train"], spec, augment=False).dataset
    for (x0, y0, w0), (x1, y1, w1) in zip(with_teacher.take(4), without.take(4)):
        assert y1.shape[1] == 1 and y0.shape[1] == 2
        assert np.array_equal(y0.numpy()[:, :1], y1.numpy())  # bit for bit
        assert np.array_equal(w0.numpy(), w1.numpy()) and np.array_equal(x0.numpy(), x1.numpy())


def test_subtype_student_gets_the_mixed_one_hot_and_teacher_vector(small_dataset, manifest, tmp_path):
    from leukedge.train import distill
    from leukedge.train.dataset import hard_targets, labels_of

    cfg, rows, spec = _run_parts_from(_cfg(small_dataset, manifest, tmp_path, task="subtype", teacher=str(TEACHER),
                                           distill_alpha=0.5, limit_per_class=2), manifest)
    targets = distill.training_targets(cfg, tmp_path, rows, spec)
    assert targets.shape == (8, 4) and targets.dtype == np.float32
    assert np.allclose(targets.sum(axis=1), 1.0, atol=1e-5)
    pred, scores = _teacher_scores(rows)
    order = [pred.spec.class_names.index(c) for c in spec.class_names]
    expected = 0.5 * hard_targets(labels_of(rows, spec), spec) + 0.5 * scores.probabilities[:, order]
    assert np.allclose(targets, expected, atol=1e-6)
    assert distill.read_cache(tmp_path)[0]["mapping"] == "class probabilities"


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "Traceback" not in "\n".join(err)
    return err[-1]


def test_wrong_unsigned_or_tampered_teacher_is_refused_in_one_line(small_dataset, manifest, tmp_path, capsys):
    from leukedge.cli import main

    runs = tmp_path / "runs"
    base = ["train", "--preset", "smoke", "--data", str(small_dataset), "--split", str(manifest), "--runs", str(runs),
            "--limit-per-class", "6", "--epochs", "1", "--max-steps-per-epoch", "1", "--threads", "1"]
    assert main(base + ["--distill-alpha", "0.5"]) == 2
    assert _err(capsys) == ("leukedge: error: --distill-alpha and --allow-unsigned apply to a --teacher. "
                            "add --teacher models/<name>")
    # a binary teacher cannot give a subtype student its 4 classes
    assert main(base + ["--task", "subtype", "--teacher", str(BINARY_TEACHER)]) == 2
    line = _err(capsys)
    assert line.startswith("leukedge: error: teacher models/efficientnet-lite0-binary is a binary model")
    assert "cannot be mapped" in line
    assert not runs.exists() or not any(runs.iterdir())  # refused before a run folder exists

    unsigned = tmp_path / "unsigned" / TEACHER.name
    shutil.copytree(TEACHER, unsigned)
    next(unsigned.glob("*.sig")).unlink()
    assert main(base + ["--teacher", str(unsigned)]) == 2
    line = _err(capsys)
    assert line.startswith(f"leukedge: error: teacher {unsigned}") and "unsigned release (no card.sig)" in line
    assert not runs.exists() or not any(runs.iterdir())
    assert main(base + ["--teacher", str(unsigned), "--allow-unsigned"]) == 0
    run = (runs / "latest").resolve()
    assert json.loads((run / "summary.json").read_text())["distillation"]["teacher_signature"] == "unsigned"

    tampered = tmp_path / "tampered" / TEACHER.name
    shutil.copytree(TEACHER, tampered)
    model = tampered / f"{TEACHER.name}.float32.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    n_runs = len(list(runs.iterdir()))
    assert main(base + ["--teacher", str(tampered)]) == 2
    line = _err(capsys)
    assert line.startswith("leukedge: error: teacher ") and "sha256" in line
    assert len(list(runs.iterdir())) == n_runs


def test_resume_refuses_soft_targets_cached_from_another_teacher(distilled_run, tmp_path, capsys):
    from leukedge.cli import main
    from leukedge.train import distill

    run = tmp_path / distilled_run.name
    shutil.copytree(distilled_run, run)
    _interrupted(run, epochs=2)
    meta, table = distill.read_cache(run)
    with np.load(run / distill.SOFT_TARGETS_FILE) as z:
        raw = z["teacher_probabilities"]
    distill._write_cache(run / distill.SOFT_TARGETS_FILE, {**meta, "teacher_sha256": "0" * 64}, list(table), raw)
    state = (run / "state.json").read_text()
    assert main(["train", "--resume", str(run)]) == 2
    line = _err(capsys)
    assert line.startswith(f"leukedge: error: teacher {TEACHER}: its model file has sha256 ")
    assert "cached soft targets were made by 000000000000" in line
    assert (run / "state.json").read_text() == state  # nothing trained


def test_distill_alpha_and_teacher_variant_are_validated():
    from leukedge.errors import ConfigError
    from leukedge.train import distill
    from leukedge.train.config import from_preset

    with pytest.raises(ConfigError, match="distill_alpha must be within"):
        from_preset("smoke", teacher=str(TEACHER), distill_alpha=1.5).validate()
    with pytest.raises(ConfigError, match="did you mean 'float32'"):
        from_preset("smoke", teacher=str(TEACHER), teacher_variant="float23").validate()
    hard = np.array([[0.0], [1.0]], np.float32)
    assert np.array_equal(distill.mix_targets(hard, np.array([0.9, 0.2]), 0.0), hard)
    assert np.allclose(distill.mix_targets(hard, np.array([0.9, 0.2]), 1.0), [[0.9], [0.2]])


def test_temperature_softens_the_cached_teacher_outputs_without_rescoring(distilled_run, monkeypatch):
    from leukedge.train import distill
    from leukedge.train.dataset import hard_targets, labels_of

    with np.load(distilled_run / distill.SOFT_TARGETS_FILE) as z:
        raw, mapped = z["teacher_probabilities"], z["probability"]
    assert raw.shape == (24, 4) and np.allclose(raw.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(distill.map_outputs(raw, "1 - P(negative class)", [0]), mapped)  # Benign is column 0
    monkeypatch.setattr(distill, "score_paths", lambda *a, **k: pytest.fail("re-scored"))
    cfg, rows, spec = _run_parts(distilled_run, distill_temperature=3.0)
    targets = distill.training_targets(cfg, distilled_run, rows["train"], spec)
    logits = np.log(raw.astype(np.float64)) / 3.0
    soft3 = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = hard_targets(labels_of(rows["train"], spec), spec)
    assert np.allclose(targets, (1 - ALPHA) * y + ALPHA * (1.0 - soft3[:, :1]), atol=1e-6)
    soft1 = distill.soft_targets(_run_parts(distilled_run)[0], distilled_run, rows["train"], spec)
    assert np.abs(1.0 - soft3[:, :1] - y).mean() > 2 * np.abs(soft1 - y).mean()  # softer: further from the labels
    assert ((1.0 - soft3[:, 0] >= 0.5) == (soft1[:, 0] >= 0.5)).all()  # same decisions
    # a binary (sigmoid) teacher: its logit divided by T
    p = np.array([[0.999], [0.01]])
    expected = 1 / (1 + np.exp(-np.log(p / (1 - p)) / 2.0))
    assert np.allclose(distill.map_outputs(p, "P(positive)", [0], temperature=2.0), expected, atol=1e-6)
    with pytest.raises(Exception, match="distill_temperature must be > 0"):
        _run_parts(distilled_run, distill_temperature=0.0)[0].validate()


def test_class_weights_in_the_batches_train_exactly_like_keras_class_weight(small_dataset, manifest, tmp_path):
    """Every run now carries its class weights in the batches (keyed on the hard label): on hard labels
    that is the same training as Keras' ``class_weight`` (which the trainer passed to ``fit`` before)."""
    import tf_keras as keras

    from leukedge.train.dataset import class_weights, labels_of, train_pipeline
    from leukedge.train.trainer import build_model, compile_model

    cfg, rows, spec = _run_parts_from(_cfg(small_dataset, manifest, tmp_path, balance="class_weight"), manifest)
    cw = class_weights(labels_of(rows, spec), 2)
    weights = []
    for carried in (True, False):
        keras.utils.set_random_seed(0)
        model = build_model(cfg, spec, None)
        compile_model(model, spec, 1e-2)
        pipe = train_pipeline(rows, spec, cfg, batch_size=8, augment=False, class_weight=cw if carried else None)
        hist = model.fit(pipe.dataset, steps_per_epoch=3, epochs=2, verbose=0,
                         class_weight=None if carried else cw)
        weights.append((hist.history["loss"], model.get_weights()))
    (loss_a, w_a), (loss_b, w_b) = weights
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    for a, b in zip(w_a, w_b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert abs(loss_a[1] - loss_a[0]) > 1e-4  # it trained


def _run_parts_from(cfg, manifest):
    from leukedge.split import read_manifest, rows_of
    from leukedge.train.dataset import limit_rows, spec_for

    rows = limit_rows(rows_of(read_manifest(manifest, cfg.data_dir), "train"), cfg.limit_per_class)
    return cfg, rows, spec_for(cfg, ["Benign", "Early", "Pre", "Pro"])


def test_teacher_mapping_of_each_shape_and_its_refusals():
    from leukedge.errors import ConfigError
    from leukedge.spec import ModelSpec
    from leukedge.train.distill import teacher_mapping

    four = ["Benign", "Early", "Pre", "Pro"]
    screen = ModelSpec.load(TEACHER)  # subtype, Benign negative
    binary = ModelSpec(name="b", backbone="tiny-cnn")
    student_bin = ModelSpec(name="s", backbone="tiny-cnn")
    student_sub = ModelSpec(name="s", backbone="tiny-cnn", task="subtype",
                            class_names=["Pro", "Pre", "Early", "Benign"])
    assert teacher_mapping(screen, student_bin, "t") == ("1 - P(negative class)", [screen.class_names.index("Benign")])
    assert teacher_mapping(binary, student_bin, "t") == ("P(positive)", [0])
    assert teacher_mapping(screen, student_sub, "t") == ("class probabilities", [3, 2, 1, 0])  # the student's order
    other_negative = ModelSpec(name="s", backbone="tiny-cnn", negative_class="Early", source_classes=four,
                               positive_classes=["Benign", "Pre", "Pro"])
    with pytest.raises(ConfigError, match="negative class is 'Benign', the student's 'Early'"):
        teacher_mapping(screen, other_negative, "t")
    lymph = ModelSpec(name="s", backbone="tiny-cnn", source_classes=["Benign", "Lymphocyte"],
                      positive_classes=["Lymphocyte"])
    with pytest.raises(ConfigError, match=r"not on the student's class\(es\) \['Lymphocyte'\]"):
        teacher_mapping(screen, lymph, "t")
    with pytest.raises(ConfigError, match="is a binary model"):
        teacher_mapping(binary, student_sub, "t")
