"""Compression: TFLite export with in-graph Grad-CAM, int8, pruning, atomic release folders."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest_plugins = ["fixtures_models"]  # tiny_run, tiny_release (session-scoped, built once)


def _real_batch(smear_paths, spec, n_per_class=3):
    from leukedge.preprocess import preprocess_file

    paths = [p for ps in smear_paths.values() for p in ps[:n_per_class]]
    return np.stack([preprocess_file(p, spec.preprocess) for p in paths])


def _normalise(cams):
    flat = cams.reshape(len(cams), -1)
    return flat / np.maximum(flat.max(axis=1, keepdims=True), 1e-12)


def test_float32_tflite_gradcam_matches_gradient_tape(tmp_path, tiny_keras, tiny_spec, smear_paths):
    from leukedge.compress.export import convert
    from leukedge.compress.quantization import QuantizationConfig
    from leukedge.runtime import LiteRunner
    from leukedge.train.gradcam import gradcam

    x = _real_batch(smear_paths, tiny_spec)
    f = tmp_path / "tiny.float32.tflite"
    f.write_bytes(convert(tiny_keras, tiny_spec, QuantizationConfig.for_float32()))
    runner = LiteRunner(f)
    assert set(runner.outputs) == {"probability", "logit", "cam", "features"}
    out = runner.predict(x)
    tape_cam, tape_prob = gradcam(tiny_keras, x)
    assert out["cam"].shape == tape_cam.shape == (len(x), 8, 8)
    assert out["features"].shape == (len(x), 32)
    np.testing.assert_allclose(out["probability"], tape_prob, atol=1e-5)
    assert tape_cam.max() > 0, "the reference heatmaps are all zero: the check would be vacuous"
    for a, b in zip(out["cam"], tape_cam):
        if b.std() > 0:
            assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999
    np.testing.assert_allclose(_normalise(out["cam"]), _normalise(tape_cam), atol=1e-4)
    # not normalised: the raw maps match too (same closed form, spatial mean of the gradients)
    np.testing.assert_allclose(out["cam"], tape_cam, rtol=1e-4, atol=1e-6 * tape_cam.max())


def test_subtype_export_cam_is_the_predicted_class(tmp_path, smear_paths):
    """Softmax head: the in-graph cam explains the argmax class (pre-softmax logit)."""
    import tensorflow as tf

    from leukedge.compress.export import convert, read_embedded_spec
    from leukedge.compress.quantization import QuantizationConfig
    from leukedge.preprocess import PreprocessConfig
    from leukedge.runtime import LiteRunner
    from leukedge.spec import ModelSpec
    from leukedge.train.gradcam import gradcam
    from leukedge.train.model import build_classifier

    spec = ModelSpec(name="tiny-subtype", backbone="tiny-cnn", task="subtype",
                     class_names=["Benign", "Early", "Pre", "Pro"], preprocess=PreprocessConfig(input_size=32))
    tf.keras.utils.set_random_seed(3)
    model = build_classifier(spec, dense_units=16, dropout=0.0)
    x = _real_batch(smear_paths, spec, 2)
    data = convert(model, spec, QuantizationConfig.for_float32())
    assert read_embedded_spec(data).class_names == spec.class_names
    f = tmp_path / "sub.tflite"
    f.write_bytes(data)
    out = LiteRunner(f).predict(x)
    assert out["probability"].shape == (len(x), 4)
    tape_cam, prob = gradcam(model, x)
    assert tape_cam.max() > 0
    np.testing.assert_allclose(_normalise(out["cam"]), _normalise(tape_cam), atol=1e-4)


def test_int8_export_contract_and_cam_correlation(tmp_path, tiny_keras, tiny_spec, smear_paths, small_dataset):
    from leukedge.compress.export import calibrate, convert, quantize_calibrated
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData, load_images
    from leukedge.runtime import LiteRunner

    calib, _ = load_images(sorted(str(p) for p in small_dataset.glob("*/*.jpg"))[::4], tiny_spec)
    rep = RepresentativeData(calib)
    q = quantize_calibrated(calibrate(tiny_keras, tiny_spec, QuantizationConfig.for_int8(rep)), tiny_spec)
    f32 = convert(tiny_keras, tiny_spec, QuantizationConfig.for_float32())
    assert len(q) < len(f32)
    (tmp_path / "q.tflite").write_bytes(q)
    (tmp_path / "f.tflite").write_bytes(f32)
    rq, rf = LiteRunner(tmp_path / "q.tflite"), LiteRunner(tmp_path / "f.tflite")
    assert rq.input_dtype == np.int8 and rq.input["quantization"][0] > 0
    assert {n: np.dtype(d["dtype"]).name for n, d in rq.outputs.items()} == \
        {"probability": "int8", "logit": "int8", "cam": "float32", "features": "int8"}  # cam: float branch
    x = _real_batch(smear_paths, tiny_spec)
    oq, of = rq.predict(x), rf.predict(x)
    assert np.abs(oq["probability"] - of["probability"]).max() < 0.05
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(oq["cam"], of["cam"]) if b.std() > 0]
    assert len(corr) >= len(x) // 2 and np.mean(corr) > 0.9


def test_quantization_config_named_constructors():
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData, parse_variants
    from leukedge.errors import ConfigError

    assert QuantizationConfig.for_float16().kind == "float16"
    assert QuantizationConfig.for_dynamic().kind == "dynamic"
    rep = RepresentativeData(np.zeros((3, 8, 8, 3), np.float32))
    assert QuantizationConfig.for_int8(rep).num_samples == 3
    assert len(list(rep())) == 3 and next(rep())["image"].shape == (1, 8, 8, 3)
    with pytest.raises(ConfigError):
        QuantizationConfig("int8")
    with pytest.raises(ConfigError, match="did you mean 'int8'"):
        parse_variants("float32,imt8")
    assert parse_variants("int8,dynamic") == ["float32", "int8", "dynamic"]


def test_representative_set_comes_from_training_split(tiny_run, tiny_spec, small_dataset, caplog):
    from leukedge.compress.quantization import representative_from_split
    from leukedge.split import read_manifest

    rows = read_manifest(tiny_run / "split.csv", small_dataset)
    train = {r["abspath"] for r in rows if r["split"] == "train"}
    rep = representative_from_split(rows, tiny_spec, n=40)
    assert len(rep) == 40 and set(rep.paths) <= train
    assert {os.path.basename(os.path.dirname(p)) for p in rep.paths} == {"Benign", "Early", "Pre", "Pro"}
    assert "fewer than 300" in caplog.text


def test_prune_reaches_target_sparsity_per_layer(tiny_keras, tiny_spec, smear_paths):
    from leukedge.compress.prune import PruneConfig, measure_sparsity, prune_model
    from leukedge.imageio import load_image
    from leukedge.preprocess import preprocess_uint8

    paths = [p for ps in smear_paths.values() for p in ps]
    x = np.stack([preprocess_uint8(load_image(p), tiny_spec.preprocess) for p in paths])
    y = np.array([tiny_spec.label_of(p.parent.name) for p in paths])
    before = measure_sparsity(tiny_keras)
    assert all(d["sparsity"] < 0.05 for d in before.values())
    smallest = min(before, key=lambda n: before[n]["size"])  # kept dense by min_weights
    cfg = PruneConfig(target_sparsity=0.7, batch_size=8, epochs=2, min_weights=before[smallest]["size"] + 1)
    pruned, report = prune_model(tiny_keras, tiny_spec, x, y, cfg)
    assert report.config["distill"] and report.end_step < report.steps  # ramp, then fixed-mask recovery
    assert report.kept_dense == {smallest: before[smallest]["size"]} and smallest not in report.layers
    measured = measure_sparsity(pruned)  # measured on the stripped model, not taken from the report
    assert set(measured) == {"tiny_conv0", "tiny_conv1", "tiny_conv2", "head_dense", "probability"}
    for name, d in measured.items():
        want = 0.0 if name == smallest else 0.7
        assert abs(d["sparsity"] - want) <= 0.01 + 1.0 / d["size"] + (0.05 if want == 0 else 0), (name, d)
    assert 0.0 < report.all_kernels_sparsity < 0.7
    assert [l.name for l in pruned.layers] == [l.name for l in tiny_keras.layers]  # export finds its layers
    assert np.all(np.isfinite(pruned.predict(x[:4].astype(np.float32) / 255.0, verbose=0)))
    assert measure_sparsity(tiny_keras) == before  # the original model is untouched


def test_block_pruning_zeroes_whole_blocks_contiguous_in_the_tflite_file(tmp_path, tiny_keras, tiny_spec, smear_paths):
    """--prune-block 4: tfmot block sparsity on Conv2D (through BlockConv2D) and Dense; whole
    blocks of 4 input weights are zero, and they are runs of 4 zeros in the exported file."""
    import tensorflow as tf

    from leukedge.compress.block_prune import block_conv, block_runs
    from leukedge.compress.export import convert
    from leukedge.compress.prune import PruneConfig, measure_sparsity, prune_model
    from leukedge.compress.quantization import QuantizationConfig
    from leukedge.imageio import load_image
    from leukedge.preprocess import preprocess_uint8

    paths = [p for ps in smear_paths.values() for p in ps]
    x = np.stack([preprocess_uint8(load_image(p), tiny_spec.preprocess) for p in paths])
    y = np.array([tiny_spec.label_of(p.parent.name) for p in paths])
    # the 2-D-kernel convolution is the same function as the layer it replaces
    conv = tiny_keras.get_layer("tiny_conv1")
    feats = tf.random.stateless_uniform((2,) + tuple(conv.input_shape[1:]), seed=(1, 2))
    np.testing.assert_allclose(block_conv(conv)(feats).numpy(), conv(feats).numpy(), rtol=1e-5, atol=1e-6)

    cfg = PruneConfig(target_sparsity=0.5, batch_size=8, epochs=2, min_weights=0, block=4)
    pruned, report = prune_model(tiny_keras, tiny_spec, x, y, cfg)
    assert [type(l).__name__ for l in pruned.layers] == [type(l).__name__ for l in tiny_keras.layers]
    # tiny_conv0 has 3x3x3 = 27 inputs per filter (not a multiple of 4) and `probability` one
    # output column: pruned weight by weight
    assert {n for n, d in report.layers.items() if d.get("block") == 4} == {"tiny_conv1", "tiny_conv2", "head_dense"}
    measured = measure_sparsity(pruned)
    for name, d in measured.items():
        assert abs(d["sparsity"] - 0.5) <= 0.01 + 1.0 / d["size"], (name, d)
        runs = block_runs(pruned.get_layer(name).kernel.numpy(), 4) if name in report.layers and \
            report.layers[name].get("block") else None
        if runs:
            assert runs["mixed_blocks"] == 0 and runs["zero_blocks"] == runs["blocks"] // 2, (name, runs)
    # weight-by-weight pruning leaves mixed blocks (so the check above can fail)
    assert block_runs(pruned.get_layer("tiny_conv0").kernel.numpy()[:, :, :2, :], 2)["mixed_blocks"] > 0
    # in the TFLite file a filter is [out, kh, kw, in]: the zeroed blocks are runs of 4 zeros there
    from tensorflow.lite.tools import flatbuffer_utils

    data = convert(pruned, tiny_spec, QuantizationConfig.for_float32())
    m = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    shapes = {tuple(int(d) for d in t.shape): t.buffer for t in m.subgraphs[0].tensors}
    w = np.frombuffer(bytes(bytearray(m.buffers[shapes[(16, 3, 3, 8)]].data)), np.float32)
    blocks = w.reshape(-1, 4)
    assert np.mean(np.all(blocks == 0, axis=1)) == pytest.approx(0.5, abs=0.01)
    assert np.all(np.all(blocks == 0, axis=1) | np.all(blocks != 0, axis=1))



def test_sparsity_preserving_clustering_ties_kernels_and_keeps_zeros(tiny_keras, tiny_spec, smear_paths):
    """--prune-clusters K: tfmot clustering after pruning (with the Grad-CAM and logit
    distillation terms on clustered kernels): every pruned kernel holds <= K values + 0, its
    zeros survive, and the exported int8 file gzips smaller than the pruned-only one."""
    from leukedge.compress.export import calibrate, quantize_calibrated
    from leukedge.compress.prune import PruneConfig, measure_sparsity, prune_model
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData
    from leukedge.compress.release import gzip_size
    from leukedge.imageio import load_image
    from leukedge.preprocess import normalize, preprocess_uint8

    paths = [p for ps in smear_paths.values() for p in ps]
    x = np.stack([preprocess_uint8(load_image(p), tiny_spec.preprocess) for p in paths])
    y = np.array([tiny_spec.label_of(p.parent.name) for p in paths])
    common = dict(target_sparsity=0.5, batch_size=8, epochs=2, min_weights=0, feature_distill=1, cam_distill=5,
                  logit_distill=1)
    import tf_keras as keras

    frozen = keras.models.clone_model(tiny_keras)  # a backbone layer frozen in training, as in real runs
    frozen.set_weights(tiny_keras.get_weights())
    frozen.get_layer("tiny_conv1").trainable = False
    plain, _ = prune_model(tiny_keras, tiny_spec, x, y, PruneConfig(**common))
    clustered, report = prune_model(frozen, tiny_spec, x, y,
                                    PruneConfig(**common, clusters=4, cluster_epochs=2, cluster_lr=1e-3))
    assert [l.name for l in clustered.layers] == [l.name for l in tiny_keras.layers]
    assert set(report.clustering["layers"]) == set(report.layers)
    assert len(report.clustering["finetune_loss"]) == 2
    for name, d in measure_sparsity(clustered).items():
        w = clustered.get_layer(name).kernel.numpy()
        assert np.unique(w).size <= 5 and np.mean(w == 0) == pytest.approx(0.5, abs=0.01 + 1 / w.size), name
        assert report.layers[name]["sparsity_after_clustering"] == pytest.approx(np.mean(w == 0))
    # the pruned-only kernels hold many values (so the check above can fail)
    assert np.unique(plain.get_layer("tiny_conv2").kernel.numpy()).size > 100
    assert np.all(np.isfinite(clustered.predict(normalize(x[:4], tiny_spec.preprocess), verbose=0)))
    rep = RepresentativeData(normalize(x, tiny_spec.preprocess))
    sizes = {k: gzip_size(quantize_calibrated(calibrate(m, tiny_spec, QuantizationConfig.for_int8(rep)), tiny_spec))
             for k, m in (("plain", plain), ("clustered", clustered))}
    assert sizes["clustered"] < 0.95 * sizes["plain"], sizes
    with pytest.raises(Exception, match="clusters must be"):
        PruneConfig(clusters=1)

def test_pruning_and_clustering_keep_the_checkpoint_closest_on_a_score(tiny_keras, tiny_spec, smear_paths):
    """--prune-select-every: checkpoints of the last fine-tune (pruning from the epoch the target
    sparsity is reached, else clustering) are scored on copies, the closest is returned at the
    target sparsity, and the fine-tuned model itself is left alone by the scoring."""
    from leukedge.compress.parity import closest
    from leukedge.compress.prune import PruneConfig, measure_sparsity, prune_model
    from leukedge.errors import ConfigError
    from leukedge.imageio import load_image
    from leukedge.preprocess import normalize, preprocess_uint8

    paths = [p for ps in smear_paths.values() for p in ps]
    x = np.stack([preprocess_uint8(load_image(p), tiny_spec.preprocess) for p in paths])
    y = np.array([tiny_spec.label_of(p.parent.name) for p in paths])
    xf = normalize(x, tiny_spec.preprocess)
    p_ref = tiny_keras.predict(xf, verbose=0).ravel()

    def score(model):  # the unpruned model's decisions as the reference, as parity does with float32
        p = model.predict(xf, verbose=0).ravel()
        agree = float(np.mean((p >= tiny_spec.threshold) == (p_ref >= tiny_spec.threshold)))
        return {"passed": agree >= 0.99, "failed": [] if agree >= 0.99 else ["agreement"], "agreement": agree,
                "mean_abs_dp": float(np.mean(np.abs(p - p_ref)))}

    seen = []
    common = dict(target_sparsity=0.5, batch_size=8, min_weights=0, select_every=1, end_fraction=0.5)
    pruned, report = prune_model(tiny_keras, tiny_spec, x, y, PruneConfig(epochs=4, **common),
                                 select=lambda m: seen.append(m) or score(m))
    sel = report.selection
    steps_per_epoch = report.steps // 4
    first = -(-report.end_step // steps_per_epoch)
    assert sel["from_epoch"] == first and [a["epoch"] for a in sel["attempts"]] == list(range(first, 5))
    assert sel["chosen_epoch"] == closest(sel["attempts"])["epoch"]
    again = score(pruned)  # the returned model is the chosen checkpoint
    assert again["mean_abs_dp"] == pytest.approx(closest(sel["attempts"])["mean_abs_dp"], abs=1e-6)
    assert len(seen) == len(sel["attempts"]) and len({id(m) for m in seen}) == len(seen)  # a copy per checkpoint
    for name, d in measure_sparsity(pruned).items():
        if name in report.layers:
            assert abs(d["sparsity"] - 0.5) <= 0.01 + 1.0 / d["size"], (name, d)
    # with clustering, the clustering epochs are the ones scored; zeros and clusters survive the choice
    clustered, report = prune_model(tiny_keras, tiny_spec, x, y,
                                    PruneConfig(epochs=2, clusters=4, cluster_epochs=3, cluster_lr=1e-3, **common),
                                    select=score)
    assert [a["epoch"] for a in report.selection["attempts"]] == [1, 2, 3]
    assert score(clustered)["mean_abs_dp"] == pytest.approx(closest(report.selection["attempts"])["mean_abs_dp"],
                                                            abs=1e-6)
    for name in report.layers:
        w = clustered.get_layer(name).kernel.numpy()
        assert np.unique(w).size <= 5 and np.mean(w == 0) == pytest.approx(0.5, abs=0.01 + 1 / w.size), name
    with pytest.raises(ConfigError, match="scoring function"):
        prune_model(tiny_keras, tiny_spec, x[:8], y[:8], PruneConfig(epochs=1, **common))
    with pytest.raises(ConfigError, match="selection interval"):
        PruneConfig(select_every=-2)


def test_schedule_ends_on_the_last_step():
    from leukedge.compress.prune import schedule_steps

    for total in (1, 7, 10, 61, 122, 1000):
        begin, end, freq = schedule_steps(total, None)
        assert end == total and (end - begin) % freq == 0 and 0 <= begin < freq + 1
        begin, end, freq = schedule_steps(total, None, end_fraction=0.7)
        assert end == max(1, round(0.7 * total)) and (end - begin) % freq == 0


def test_tiny_release_files_and_contract(tiny_release, tiny_run):
    from leukedge.compress.export import read_embedded_spec
    from leukedge.predictors import load_predictor
    from leukedge.runtime import LiteRunner
    from leukedge.spec import ModelSpec

    out, summary = tiny_release
    name = out.name
    for v in ("float32", "int8", "pruned-int8"):
        f = out / f"{name}.{v}.tflite"
        assert f.exists() and f.stat().st_size < 100 * 1000 * 1000
        r = LiteRunner(f)
        assert set(r.outputs) == {"probability", "logit", "cam", "features"}
        assert r.input_shape == (1, 32, 32, 3)
        assert read_embedded_spec(f.read_bytes()).name == name
    spec = ModelSpec.load(out)
    assert spec.name == name and spec.outputs == ["probability", "logit", "cam", "features"]
    assert (out / "split.csv").read_bytes() == (tiny_run / "split.csv").read_bytes()
    assert summary["files"][f"{name}.int8.tflite"]["bytes"] < summary["files"][f"{name}.float32.tflite"]["bytes"]
    # pruned: sparsity measured per layer on the stripped model
    layers = summary["pruning"]["layers"]
    assert layers and all(abs(d["sparsity"] - 0.5) <= 0.01 + 1.0 / d["size"] for d in layers.values())
    assert summary["files"][f"{name}.pruned-int8.tflite"]["gzip_bytes"] < summary["files"][f"{name}.int8.tflite"]["gzip_bytes"]
    # nothing half-written left beside the release
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    pred = load_predictor(out)  # the release folder loads (int8 by default)
    assert pred.name == f"{name}.int8.tflite"
    rec = json.loads((out / "compress.json").read_text())
    assert rec["calibration"]["split"] == "train" and rec["timings_s"]["float32"] > 0


def test_release_is_atomic_on_failure(tmp_path):
    from leukedge.compress.release import Release

    out = tmp_path / "models" / "m"
    with Release(out) as rel:  # a first, valid release
        rel.write_bytes("m.float32.tflite", b"x" * 100)
        rel.commit()
    with pytest.raises(RuntimeError):
        with Release(out) as rel:
            rel.write_bytes("m.float32.tflite", b"y" * 50)
            raise RuntimeError("simulated crash during conversion")
    assert (out / "m.float32.tflite").read_bytes() == b"x" * 100  # the old release is intact
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]   # no staging folder left
    killed = out.parent / ".m.partial-4194305"  # left by a killed process (pid above Linux's pid_max)
    killed.mkdir()
    (killed / "m.int8.tflite").write_bytes(b"half")
    Release(out).abort()
    assert not killed.exists()


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from leukedge.compress.release import Release

    rel = Release(tmp_path / "models" / "m")

    def crash(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        rel.write_bytes("m.int8.tflite", b"z" * 1000)
    monkeypatch.undo()
    assert list(rel.staging.iterdir()) == []
    rel.abort()
    assert not rel.staging.exists() and not (tmp_path / "models" / "m").exists()


def test_size_limit_fails_clearly():
    from leukedge.compress.release import check_size
    from leukedge.errors import ModelError

    check_size("m.int8.tflite", 99_000_000)
    with pytest.raises(ModelError, match="over the 100 MB limit"):
        check_size("m.float32.tflite", 120_000_000)


def test_compress_cli_bad_input_is_one_line(tmp_path, capsys):
    from leukedge.cli import main

    assert main(["compress", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leukedge: error:") and "\n" not in err
    (tmp_path / "run").mkdir()
    assert main(["compress", str(tmp_path / "run"), "--out", str(tmp_path / "m"), "--variants", "int9"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main(["compress", str(tmp_path / "run"), "--out", str(tmp_path / "m"), "--prune",
                 "--set", "prune.cam_distill=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cam_distill must be >= 0" in err and "\n" not in err
    assert main(["compress", str(tmp_path / "run"), "--out", str(tmp_path / "m"), "--prune",
                 "--set", "prune.clusters=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "clusters must be 0 (off) or a whole number in 2..256" in err and "\n" not in err
    assert not (tmp_path / "m").exists()


def test_selective_quantization_keeps_worst_ops_in_float(tiny_keras, tiny_spec, tiny_run, small_dataset, tmp_path):
    from leukedge.compress.export import calibrate, convert, quantize_calibrated
    from leukedge.compress.parity import Gates, ParityData
    from leukedge.compress.quantization import QuantizationConfig, representative_from_split
    from leukedge.compress.selective import layer_errors, selective_quantize
    from leukedge.predictors import TFLitePredictor
    from leukedge.runtime import LiteRunner
    from leukedge.split import read_manifest

    rows = read_manifest(tiny_run / "split.csv", small_dataset)
    rep = representative_from_split(rows, tiny_spec, n=40)
    cal = calibrate(tiny_keras, tiny_spec, QuantizationConfig.for_int8(rep))
    ranking = layer_errors(cal, rep, max_samples=16)
    assert len(ranking) >= 5
    errs = [d["rmse_over_scale"] for d in ranking]
    assert errs == sorted(errs, reverse=True) and errs[0] > 0
    full = quantize_calibrated(cal, tiny_spec)
    kept = quantize_calibrated(cal, tiny_spec, denylisted_nodes=[d["tensor_name"] for d in ranking[:3]])
    (tmp_path / "full.tflite").write_bytes(full)
    (tmp_path / "kept.tflite").write_bytes(kept)
    ops = lambda f: [o["op_name"] for o in LiteRunner(f).interpreter._get_ops_details()]  # noqa: E731
    assert ops(tmp_path / "kept.tflite").count("DEQUANTIZE") > ops(tmp_path / "full.tflite").count("DEQUANTIZE")
    assert set(LiteRunner(tmp_path / "kept.tflite").outputs) == {"probability", "logit", "cam", "features"}

    (tmp_path / "spec.json").write_text(tiny_spec.to_json())
    (tmp_path / "ref.tflite").write_bytes(convert(tiny_keras, tiny_spec, QuantizationConfig.for_float32()))
    ref = TFLitePredictor(tmp_path / "ref.tflite", tiny_spec)
    val = ParityData.from_manifest(rows, "val")
    lenient = Gates(max_delta_accuracy=1, max_delta_sensitivity=1, max_delta_roc_auc=1, min_agreement=0,
                    min_heatmap_correlation=0)
    data, report = selective_quantize(cal, tiny_spec, ref, val, rep, lenient, max_rounds=2, n_boot=20,
                                      debugger_samples=8)
    assert report.passed and data is not None and len(report.kept_float) == 1
    assert report.attempts[0]["n_float"] == 1 and report.selective_bytes >= report.int8_bytes > 0
    assert report.int8_ms > 0 and report.selective_ms > 0
    impossible = Gates(min_heatmap_correlation=1.5)
    data, report = selective_quantize(cal, tiny_spec, ref, val, rep, impossible, max_rounds=2, n_boot=20,
                                      debugger_samples=8)
    assert data is None and not report.passed and [a["n_float"] for a in report.attempts] == [1, 2]


def test_feature_distillation_keeps_the_feature_map(tiny_keras, tiny_spec, smear_paths):
    """Pruning with feature distillation stays closer to the unpruned feature map (the Grad-CAM input)."""
    import tf_keras as keras

    from leukedge.compress.prune import PruneConfig, prune_model
    from leukedge.imageio import load_image
    from leukedge.preprocess import normalize, preprocess_uint8

    paths = [p for ps in smear_paths.values() for p in ps]
    x = np.stack([preprocess_uint8(load_image(p), tiny_spec.preprocess) for p in paths])
    y = np.array([tiny_spec.label_of(p.parent.name) for p in paths])
    xn = normalize(x, tiny_spec.preprocess)

    def fmap(m):
        return keras.Model(m.input, m.get_layer("features").output).predict(xn, verbose=0)

    ref = fmap(tiny_keras)
    errs = {}
    for w in (0.0, 5.0):
        cfg = PruneConfig(target_sparsity=0.8, batch_size=8, epochs=4, min_weights=0, feature_distill=w,
                          learning_rate=3e-3)
        pruned, _ = prune_model(tiny_keras, tiny_spec, x, y, cfg)
        errs[w] = float(np.mean((fmap(pruned) - ref) ** 2) / np.mean(ref ** 2))
    assert errs[5.0] < errs[0.0], errs


def test_logit_distillation_keeps_the_logits(tiny_keras, tiny_spec, smear_paths):
    """teacher_logits are the sigmoid's logits; beside feature and Grad-CAM distillation (which
    compete with the probability loss), logit distillation keeps the pruned logits closer."""
    from leukedge.compress.prune import PruneConfig, prune_model, teacher_logits
    from leukedge.imageio import load_image
    from leukedge.preprocess import normalize, preprocess_uint8

    paths = [p for ps in smear_paths.values() for p in ps]
    x = np.stack([preprocess_uint8(load_image(p), tiny_spec.preprocess) for p in paths])
    y = np.array([tiny_spec.label_of(p.parent.name) for p in paths])
    ref = teacher_logits(tiny_keras, x, tiny_spec)
    p = tiny_keras.predict(normalize(x, tiny_spec.preprocess), verbose=0).astype(np.float64)
    assert ref.shape == (len(x), 1) and ref.std() > 0
    np.testing.assert_allclose(ref, np.log(p / (1 - p)), atol=1e-3)
    errs = {}
    for w in (0.0, 10.0):
        cfg = PruneConfig(target_sparsity=0.8, batch_size=8, epochs=4, min_weights=0, logit_distill=w,
                          feature_distill=8, cam_distill=30, learning_rate=3e-3)
        pruned, report = prune_model(tiny_keras, tiny_spec, x, y, cfg)
        errs[w] = float(np.mean((teacher_logits(pruned, x, tiny_spec) - ref) ** 2))
    assert report.config["logit_distill"] == 10.0
    assert errs[10.0] < 0.8 * errs[0.0], errs  # measured: 3.18 -> 1.70


def test_gradcam_distillation_keeps_the_heatmap(tiny_keras, tiny_spec, smear_paths):
    """The distillation's Grad-CAM is the exported cam output, and pulling it raises the pruned
    model's per-image heatmap correlation with the unpruned model."""
    import tf_keras as keras

    from leukedge.compress.export import keras_outputs
    from leukedge.compress.parity import cam_correlation
    from leukedge.compress.prune import PruneConfig, prune_model, teacher_cams, teacher_targets
    from leukedge.imageio import load_image
    from leukedge.preprocess import normalize, preprocess_uint8

    paths = [p for ps in smear_paths.values() for p in ps]
    x = np.stack([preprocess_uint8(load_image(p), tiny_spec.preprocess) for p in paths])
    y = np.array([tiny_spec.label_of(p.parent.name) for p in paths])
    xn = normalize(x, tiny_spec.preprocess)

    ref = teacher_cams(tiny_keras, x, tiny_spec, teacher_targets(tiny_keras, x, tiny_spec))
    hw = ref.shape[1] - 1
    assert np.all(ref[:, hw:] == 1.0)  # binary: the positive class
    exported = np.stack([keras_outputs(tiny_keras, tiny_spec, xn[i:i + 1])["cam"].ravel() for i in range(4)])
    np.testing.assert_allclose(ref[:4, :hw], exported, rtol=1e-4, atol=1e-6)

    def mean_corr(model):
        maps = teacher_cams(model, x, tiny_spec, teacher_targets(model, x, tiny_spec))[:, :hw]
        c = [cam_correlation(a, b) for a, b in zip(ref[:, :hw], maps)]
        return float(np.mean([v if v is not None else 0.0 for v in c]))

    corr = {}
    for w in (0.0, 5.0):
        keras.utils.set_random_seed(0)
        cfg = PruneConfig(target_sparsity=0.8, batch_size=8, epochs=4, min_weights=0, cam_distill=w,
                          learning_rate=3e-3)
        pruned, report = prune_model(tiny_keras, tiny_spec, x, y, cfg)
        assert report.overall_sparsity == pytest.approx(0.8, abs=0.02)
        corr[w] = mean_corr(pruned)
    assert corr[5.0] > corr[0.0], corr


def test_size_breakdown_accounts_for_every_byte(tiny_release):
    """Where each file's bytes go: categories add up to the file, int8 weights are a quarter of
    float32's, per-channel parameters cost 12 bytes per scale, pruning shows in the weights' gzip."""
    from leukedge.compress.sizes import tflite_breakdown

    out, summary = tiny_release
    name = out.name
    b = {v: tflite_breakdown((out / f"{name}.{v}.tflite").read_bytes()) for v in ("float32", "int8", "pruned-int8")}
    for v, d in b.items():
        assert sum(c["bytes"] for c in d["categories"].values()) == d["bytes"] == (out / f"{name}.{v}.tflite").stat().st_size
        assert d["categories"]["graph"]["bytes"] > 0
    assert b["float32"]["categories"]["quantization_parameters"]["bytes"] == 0
    assert set(b["float32"]["weight_types"]) == {"float32"}
    i8 = b["int8"]
    assert i8["weight_types"]["int8"] > 0 and i8["per_channel_entries"] > 0
    assert i8["categories"]["quantization_parameters"]["bytes"] == 12 * i8["per_channel_entries"]
    f32_weights = b["float32"]["weight_types"]["float32"]
    assert abs(i8["weight_types"]["int8"] + i8["weight_types"].get("float32", 0) / 4 - f32_weights / 4) <= 0.01 * f32_weights / 4
    assert (b["pruned-int8"]["categories"]["weights"]["gzip_bytes"] < i8["categories"]["weights"]["gzip_bytes"])
    # the release records it, and the card shows it
    entry = summary["files"][f"{name}.int8.tflite"]
    assert entry["breakdown"]["categories"]["weights"]["pct_of_float32"] == pytest.approx(
        100 * i8["categories"]["weights"]["bytes"] / summary["files"][f"{name}.float32.tflite"]["bytes"], abs=0.01)
    card = json.loads((out / "card.json").read_text())
    assert card["sizes"]["files"][f"{name}.int8.tflite"]["breakdown"]["quantization_parameters"] > 0
    assert "File sizes" in (out / "card.md").read_text()
    # and how the pruned file was made (measured sparsity, not the request)
    pruning = json.loads((out / "compress.json").read_text())["pruning"]
    assert card["pruning"]["pruned_layers"] == len(pruning["layers"]) > 0
    assert card["pruning"]["measured_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert "clustering" not in card["pruning"]
    assert f"{len(pruning['layers'])} layers magnitude-pruned to 50.0%" in (out / "card.md").read_text()
