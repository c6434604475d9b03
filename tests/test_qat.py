"""Quantization-aware fine-tuning (tfmot) on tiny real models, and `leukedge compress --qat`."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest_plugins = ["fixtures_models"]


@pytest.fixture(scope="module")
def train_u8(smear_paths, tiny_spec):
    from leukedge.imageio import load_image
    from leukedge.preprocess import preprocess_uint8

    xs, ys = [], []
    for c, paths in smear_paths.items():
        for p in paths:
            xs.append(preprocess_uint8(load_image(p), tiny_spec.preprocess))
            ys.append(tiny_spec.label_of(c))
    return np.stack(xs), np.array(ys)


def test_qat_on_a_densenet_shaped_model(tiny_dense_keras, tiny_spec, train_u8):
    """Standalone BNs are rewritten so tfmot accepts the model (it rejects them as they are),
    the fine-tune changes the weights, the caller's model is untouched, and the result is
    still the same classifier (self-distillation)."""
    import tensorflow_model_optimization as tfmot

    from leukedge.compress.qat import QATConfig, qat_finetune
    from leukedge.preprocess import normalize

    with pytest.raises(RuntimeError, match="BatchNormalization"):
        tfmot.quantization.keras.quantize_model(tiny_dense_keras)       # why the rewrite is needed
    x_u8, y = train_u8
    original = [w.copy() for w in tiny_dense_keras.get_weights()]
    tuned, rep = qat_finetune(tiny_dense_keras, tiny_spec, x_u8, y, QATConfig(epochs=2, batch_size=8,
                                                                             learning_rate=1e-4))
    assert all(np.array_equal(a, b) for a, b in zip(original, tiny_dense_keras.get_weights()))
    assert rep.bn_rewritten == 3 and rep.quantized_layers > 10 and rep.steps == 2 * int(np.ceil(len(x_u8) / 8))
    assert 0.0 < rep.weights_changed <= 1.0 and len(rep.finetune_loss) == 2
    assert type(tuned.get_layer("final_bn")).__name__ == "DepthwiseConv2D"
    x = normalize(x_u8, tiny_spec.preprocess)
    p0 = tiny_dense_keras.predict(x, verbose=0).ravel()
    p1 = tuned.predict(x, verbose=0).ravel()
    assert np.abs(p1 - p0).mean() < 0.05


def test_copy_back_refuses_a_model_it_cannot_fill(tiny_dense_keras, tiny_keras):
    from leukedge.compress.qat import copy_back, quantize_aware
    from leukedge.errors import ModelError

    plain, qat = quantize_aware(tiny_keras)
    assert copy_back(qat, plain) == len(plain.weights)
    _, other = quantize_aware(tiny_dense_keras)
    with pytest.raises(ModelError, match="no weight"):
        copy_back(other, plain)


def test_qat_config_is_validated():
    from leukedge.compress.qat import QATConfig
    from leukedge.errors import ConfigError

    with pytest.raises(ConfigError):
        QATConfig(learning_rate=0)
    with pytest.raises(ConfigError):
        QATConfig(epochs=0)
    with pytest.raises(ConfigError, match="selection interval"):
        QATConfig(select_every=-1)


def test_checkpoint_selection_needs_a_scorer(tiny_keras, tiny_spec, train_u8):
    from leukedge.compress.qat import QATConfig, qat_finetune
    from leukedge.errors import ConfigError

    x, y = train_u8
    with pytest.raises(ConfigError, match="scoring function"):
        qat_finetune(tiny_keras, tiny_spec, x[:8], y[:8], QATConfig(select_every=1, batch_size=8))


def test_closest_candidate_ranks_gates_then_agreement_then_dp():
    from leukedge.compress.parity import closest

    def c(name, passed, failed, agreement, dp):
        return {"name": name, "passed": passed, "failed": failed, "agreement": agreement, "mean_abs_dp": dp}

    cands = [c("a", False, ["agreement"], 0.99, 0.01), c("b", True, [], 0.991, 0.02),
             c("c", True, [], 0.995, 0.03), c("d", True, [], 0.995, 0.01), c("e", False, ["x", "y"], 1.0, 0.0)]
    assert closest(cands)["name"] == "d"
    assert closest(cands[:1] + cands[4:])["name"] == "a"  # fewer failed gates beat higher agreement
    assert closest([c("f", True, [], 0.99, 0.01), c("g", True, [], 0.99, 0.01)])["name"] == "f"
    with pytest.raises(ValueError):
        closest([])


def test_per_tensor_qat_with_distillation(tiny_keras, tiny_spec, train_u8):
    """Per-tensor QAT: tfmot fake-quantizes each kernel with one range (scalar variables; per
    channel they are vectors), the fine-tune runs with the feature / Grad-CAM / logit terms, and
    the file converted per tensor has one scale per weight tensor and is smaller."""
    from leukedge.compress.export import calibrate, quantize_calibrated
    from leukedge.compress.qat import QATConfig, qat_finetune, quantize_aware
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData
    from leukedge.compress.sizes import tflite_breakdown
    from leukedge.preprocess import normalize

    ranges = lambda m: [v for v in m.weights if v.name.endswith("kernel_min:0")]  # noqa: E731
    _, per_tensor = quantize_aware(tiny_keras, per_tensor=True)
    _, per_channel = quantize_aware(tiny_keras)
    assert ranges(per_tensor) and all(v.shape.rank == 0 for v in ranges(per_tensor))
    assert any(v.shape.rank == 1 for v in ranges(per_channel))
    x_u8, y = train_u8
    cfg = QATConfig(epochs=2, batch_size=8, learning_rate=1e-4, per_tensor=True, feature_distill=1.0,
                    cam_distill=1.0, logit_distill=1.0)
    tuned, rep = qat_finetune(tiny_keras, tiny_spec, x_u8, y, cfg)
    assert rep.config["per_tensor"] and rep.config["cam_distill"] == 1.0
    assert len(rep.finetune_loss) == 2 and rep.weights_changed > 0
    cal = calibrate(tuned, tiny_spec, QuantizationConfig.for_int8(RepresentativeData(
        normalize(x_u8[:16], tiny_spec.preprocess))))
    pt = tflite_breakdown(quantize_calibrated(cal, tiny_spec, per_tensor=True), with_gzip=False)
    pc = tflite_breakdown(quantize_calibrated(cal, tiny_spec), with_gzip=False)
    assert pt["quantized_weights"]["per_channel"] == 0 and pt["quantized_weights"]["per_tensor"] >= 3
    assert pc["quantized_weights"]["per_channel"] >= 3
    q = lambda b: b["categories"]["quantization_parameters"]["bytes"]  # noqa: E731
    assert q(pt) < q(pc) and pt["bytes"] < pc["bytes"]


def test_compress_cli_qat(tiny_run, tmp_path, capsys):
    """`leukedge compress --qat --per-tensor` with distillation: the int8 file comes from the QAT
    copy (weights one scale per tensor), float32 from the trained model, and parity of that
    int8 against float32 is measured and recorded; the card says how the weights were quantized."""
    from leukedge.cli import main
    from leukedge.compress.config import CompressConfig
    from leukedge.compress.recipe import QATRecipe

    out = tmp_path / "tiny-qat"
    rc = main(["compress", str(tiny_run), "--out", str(out), "--qat", "--set", "qat.epochs=2", "--set", "qat.batch_size=8",
               "--set", "quantize.per_tensor=true", "--set", "qat.feature_distill=1", "--set", "qat.cam_distill=1", "--set", "qat.select_every=1",
               "--prune", "0.5", "--set", "prune.epochs=1", "--set", "prune.min_weights=0", "--set", "prune.select_every=1",
               "--calib", "60", "--set", "quantize.selective=false", "--n-boot", "100"])
    summary = json.loads((out / "compress.json").read_text())
    assert summary["qat"]["steps"] >= 1 and summary["qat"]["quantized_layers"] > 0
    assert summary["config"]["per_tensor"] is True  # compress.json records the recipe's own qat section
    assert CompressConfig.from_record(summary["config"]).qat == \
        QATRecipe(epochs=2, batch_size=8, feature_distill=1.0, cam_distill=1.0, select_every=1)
    assert summary["qat"]["config"]["per_tensor"] and summary["qat"]["config"]["feature_distill"] == 1.0
    weights = summary["files"]["tiny-qat.int8.tflite"]["breakdown"]["quantized_weights"]
    assert weights["per_channel"] == 0 and weights["per_tensor"] >= 3
    # the pruned file is not QAT-tuned: it stays per channel
    assert summary["files"]["tiny-qat.pruned-int8.tflite"]["breakdown"]["quantized_weights"]["per_channel"] >= 3
    card = json.loads((out / "card.json").read_text())
    assert card["quantization"]["weights"] == "per tensor"
    assert card["quantization"]["qat_recipe"]["distillation"] == {"feature_distill": 1.0, "cam_distill": 1.0}
    md = (out / "card.md").read_text()
    assert "weights quantized per tensor" in md and "quantization-aware fine-tuned (2 epoch(s), lr 1e-05" in md
    # checkpoint selection: both epochs scored on validation, the closest kept, and the released
    # int8 file is the one that was scored (same validation parity when measured again)
    from leukedge.compress.parity import ParityData, closest, compare
    from leukedge.split import read_manifest

    sel = summary["qat"]["selection"]
    assert [a["epoch"] for a in sel["attempts"]] == [1, 2] and sel["split"] == "val"
    chosen = closest(sel["attempts"])
    assert sel["chosen_epoch"] == chosen["epoch"]
    assert card["quantization"]["qat_recipe"]["checkpoint"] == {"epoch": chosen["epoch"], "every_epochs": 1,
                                                                 "chosen_on": "val"}
    assert f"the weights of epoch {chosen['epoch']}" in md
    assert (out / "tiny-qat.int8.tflite").stat().st_size == chosen["bytes"]
    rows = read_manifest(out / "split.csv", json.loads((tiny_run / "config.json").read_text())["data_dir"])
    again = compare(out / "tiny-qat.float32.tflite", out / "tiny-qat.int8.tflite", ParityData.from_manifest(rows, "val"),
                    n_boot=50, keep_per_image=False)
    assert again.agreement == chosen["agreement"]
    assert again.probability_diff["mean_abs"] == pytest.approx(chosen["mean_abs_dp"], abs=1e-6)
    # the pruned file's checkpoint too (one pruning epoch: one candidate, the file that was scored)
    psel = summary["pruning"]["selection"]
    assert [a["epoch"] for a in psel["attempts"]] == [1] and psel["chosen_epoch"] == 1
    assert (out / "tiny-qat.pruned-int8.tflite").stat().st_size == psel["attempts"][0]["bytes"]
    assert card["pruning"]["checkpoint"]["epoch"] == 1 and "pruned-int8 file" in md
    # --keep-int8: another pruning of that release keeps its QAT int8 file, its record and what the card says
    from leukedge.fileio import sha256_file

    out2 = tmp_path / "again" / "tiny-qat"
    main(["compress", str(out), "--out", str(out2), "--set", "quantize.keep_int8=true", "--prune", "0.5", "--set", "prune.epochs=1",
          "--set", "prune.min_weights=0", "--calib", "60", "--set", "quantize.selective=false", "--n-boot", "100"])
    again = json.loads((out2 / "compress.json").read_text())
    assert sha256_file(out2 / "tiny-qat.int8.tflite") == sha256_file(out / "tiny-qat.int8.tflite") \
        == again["int8_from_source"]["sha256"]
    assert again["qat"] == summary["qat"] and again["config"]["per_tensor"] is False
    assert "int8 vs float32" in again["parity"] and again["pruning"]["config"]["select_every"] == 0
    card2 = json.loads((out2 / "card.json").read_text())
    assert card2["quantization"]["weights"] == "per tensor" and card2["quantization"]["qat_recipe"]["checkpoint"]
    capsys.readouterr()
    for args, word in ((["--set", "quantize.keep_int8=true", "--qat"], "qat"),
                       (["--set", "quantize.keep_int8=true", "--set", "quantize.per_tensor=true"], "quantize.per_tensor")):
        bad = main(["compress", str(out), "--out", str(tmp_path / "x"), *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert bad != 0 and len(err) == 1 and "quantize.keep_int8" in err[0] and word in err[0], err
    bad = main(["compress", str(tiny_run), "--out", str(tmp_path / "x"), "--set", "quantize.keep_int8=true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert bad != 0 and len(err) == 1 and "training run" in err[0] and not (tmp_path / "x").exists()
    gates = summary["parity"]["int8 vs float32"]["gates"]
    assert gates["agreement"] >= 0.9 and abs(gates["delta_roc_auc"]) < 0.1
    assert rc == (0 if summary["passed"] else 1)
    assert (out / "tiny-qat.int8.tflite").stat().st_size < (out / "tiny-qat.float32.tflite").stat().st_size


def test_compress_cli_rejects_bad_qat_settings(tiny_run, tmp_path, capsys):
    from leukedge.cli import main

    rc = main(["compress", str(tiny_run), "--out", str(tmp_path / "x"), "--qat", "--set", "qat.lr=0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "learning rate" in err[0]
    assert not (tmp_path / "x").exists()
    rc = main(["compress", str(tiny_run), "--out", str(tmp_path / "x"), "--qat", "--set", "qat.cam_distill=-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "cam distill" in err[0]
    assert not (tmp_path / "x").exists()
    # a checkpoint interval lives in its section (qat.select_every, prune.select_every), so it cannot be set
    # without that fine-tune; bad values are still refused in one line before any work
    for args, word in ((["--qat", "--set", "qat.select_every=-1"], "selection interval"),
                       (["--prune", "0.5", "--set", "prune.select_every=-1"], "selection interval")):
        rc = main(["compress", str(tiny_run), "--out", str(tmp_path / "x")] + args)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc != 0 and len(err) == 1 and word in err[0], (args, err)
        assert not (tmp_path / "x").exists()


def test_ranges_start_at_the_float_models_not_tfmots_defaults(tiny_keras, tiny_spec, train_u8):
    """tfmot starts activation ranges at [-6, 6] and the input's at [0, 0]; after init_ranges the
    fake-quantized feature map is already (nearly) the float model's."""
    import tf_keras as keras

    from leukedge.compress.qat import init_ranges, quantize_aware
    from leukedge.preprocess import normalize

    x = normalize(train_u8[0], tiny_spec.preprocess)
    plain, qat = quantize_aware(tiny_keras)
    f_float = keras.Model(plain.input, plain.get_layer("features").output).predict(x, verbose=0)
    f_qat = keras.Model(qat.input, qat.get_layer("quant_features").output)

    def rel_err():
        f = f_qat.predict(x, verbose=0)
        return float(np.sqrt(np.mean((f - f_float) ** 2) / np.mean(f_float ** 2)))

    before = rel_err()
    assert init_ranges(qat, plain, x) >= 5
    after = rel_err()
    assert after < 0.2 and after < before / 4             # measured: 0.83 -> 0.10
