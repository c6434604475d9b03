"""The ``guided7x14`` heatmap computed inside the exported ``.tflite`` (issue 23, docs/heatmaps.md
"In the .tflite"): the tiny real model, real conversion, real full-integer int8, real smears.

The tiny CNN's feature map is 8x8 at 32x32 input, so its ``guided7x14`` map is 16x16, guided by
``tiny_relu1`` (the last 16x16 layer: the size rule, tiny-cnn names no guide layer).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import pick

pytest_plugins = ["fixtures_models"]

#: float32 file vs the numpy reference on the Keras model's activations (relative to the map's peak).
F32_TOL = 1e-4
#: int8 file vs the numpy reference on the int8 file's own tensors (its branch runs in float).
INT8_OWN_TOL = 1e-4


@pytest.fixture(scope="module")
def calib(smear_paths, tiny_spec):
    from leukedge.preprocess import preprocess_file

    return np.stack([preprocess_file(p, tiny_spec.preprocess) for ps in smear_paths.values() for p in ps])


@pytest.fixture(scope="module")
def held_out(aria_dir, tiny_spec):
    """16 real smears the tiny model was neither trained nor calibrated on."""
    from leukedge.preprocess import preprocess_file

    paths = [p for c in ("Benign", "Early", "Pre", "Pro") for p in pick(aria_dir, c, 4, step=53)]
    return np.stack([preprocess_file(p, tiny_spec.preprocess) for p in paths]).astype(np.float32)


def _export(model, spec, calib, folder, name):
    from leukedge.compress.export import calibrate, convert, quantize_calibrated
    from leukedge.compress.quantization import QuantizationConfig, RepresentativeData

    record: dict = {}
    cal = calibrate(model, spec, QuantizationConfig.for_int8(RepresentativeData(calib)))
    paths = {"f32": folder / f"{name}.float32.tflite", "i8": folder / f"{name}.int8.tflite"}
    paths["f32"].write_bytes(convert(model, spec, QuantizationConfig.for_float32()))
    paths["i8"].write_bytes(quantize_calibrated(cal, spec, record=record))
    return paths, record


@pytest.fixture(scope="module")
def exported(tiny_keras, tiny_spec, calib, tmp_path_factory):
    """float32 + int8 files of the tiny model, with guided7x14 and with gradcam7."""
    from leukedge.compress.export import with_heatmap

    folder = tmp_path_factory.mktemp("guided")
    spec = with_heatmap(tiny_spec, tiny_keras, "guided7x14")
    guided, record = _export(tiny_keras, spec, calib, folder, "guided")
    old, _ = _export(tiny_keras, tiny_spec, calib, folder, "gradcam7")
    return {"guided": guided, "gradcam7": old, "spec": spec, "record": record}


def _keras_reference(model, x):
    """(guided7x14 maps, 7x7 Grad-CAM maps) in numpy from the Keras model's own activations."""
    import tf_keras as keras

    from leukedge.heatmap import closed_form_cams, guided_map

    sub = keras.Model(model.input, [model.get_layer(n).output for n in ("features", "head_dense", "tiny_relu1")])
    a, hidden, guide = (np.asarray(t) for t in sub.predict(x, verbose=0))
    cam7 = closed_form_cams(a, hidden, model.get_layer("head_dense").kernel.numpy(),
                            model.get_layer("probability").kernel.numpy())[..., 0]
    return np.stack([guided_map(c, g) for c, g in zip(cam7, guide)]), cam7


def test_spec_records_the_method_and_the_guide_layer(exported, tiny_keras, tiny_spec):
    from leukedge.compress.cam_graph import guide_layer
    from leukedge.compress.export import read_embedded_spec
    from leukedge.spec import ModelSpec

    spec = exported["spec"]
    assert (spec.heatmap.method, spec.heatmap.layer) == ("guided7x14", "tiny_relu1")
    assert guide_layer(tiny_keras, "tiny-cnn") == "tiny_relu1"       # no registry entry: the size rule
    for f in exported["guided"].values():
        embedded = read_embedded_spec(f.read_bytes())
        assert (embedded.heatmap.method, embedded.heatmap.layer) == ("guided7x14", "tiny_relu1")
    old = read_embedded_spec(exported["gradcam7"]["i8"].read_bytes())
    assert (old.heatmap.method, old.heatmap.layer) == ("gradcam7", None)
    d = spec.to_dict()
    assert d["heatmap"] == {"method": "guided7x14", "layer": "tiny_relu1"}
    assert ModelSpec.from_json(spec.to_json()) == spec
    legacy = tiny_spec.to_dict()
    legacy.pop("heatmap")                                           # a spec.json from before issue 23
    assert ModelSpec.from_dict(legacy).heatmap.method == "gradcam7"


@pytest.mark.parametrize("bad, words", [({"method": "gradcam9"}, "heatmap.method"),
                                        ({"method": "guided7x14"}, "guiding layer"),
                                        ({"method": "guided7x14", "layer": 3}, "heatmap.layer")])
def test_a_bad_heatmap_field_is_a_one_line_model_error(tiny_spec, bad, words):
    from leukedge.errors import ModelError
    from leukedge.spec import ModelSpec

    with pytest.raises(ModelError) as exc:
        ModelSpec.from_dict({**tiny_spec.to_dict(), "heatmap": bad})
    assert words in exc.value.one_line() and "\n" not in exc.value.one_line()


def test_float32_cam_is_the_numpy_guided_map_at_twice_the_feature_size(exported, tiny_keras, held_out):
    from leukedge.runtime import LiteRunner

    ref, cam7 = _keras_reference(tiny_keras, held_out)
    runner = LiteRunner(exported["guided"]["f32"])
    assert tuple(runner.outputs["cam"]["shape"]) == (1, 16, 16)          # 2 x the 8x8 features
    cam = runner.predict(held_out)["cam"]
    assert cam.shape == (len(held_out), 16, 16) and cam7.shape[1:] == (8, 8)
    assert (ref.max((1, 2)) > 0).sum() >= len(ref) // 2                  # maps that say something
    err = np.abs(cam - ref).max((1, 2)) / np.maximum(ref.max((1, 2)), 1e-12)
    assert err.max() <= F32_TOL, err


def test_gradcam7_recipe_still_exports_the_old_map(exported, tiny_keras, held_out):
    from leukedge.runtime import LiteRunner

    _, cam7 = _keras_reference(tiny_keras, held_out)
    cam = LiteRunner(exported["gradcam7"]["f32"]).predict(held_out)["cam"]
    assert cam.shape == (len(held_out), 8, 8)
    assert np.abs(cam - cam7).max() <= F32_TOL * max(float(cam7.max()), 1e-12)


def test_int8_guided_branch_runs_in_float_on_the_files_own_tensors(exported, held_out):
    """Every op the guided map adds (MEAN, RELU, REDUCE_MAX, ADD, DIV, RESIZE_BILINEAR, MUL) is in
    the float Grad-CAM branch, and the int8 file's map is exactly the numpy guided7x14 of its own
    float 7x7 map and its own dequantized int8 16x16 activation."""
    from ai_edge_litert.interpreter import Interpreter

    from leukedge.compress.cam_branch import cam_only_tensors
    from leukedge.heatmap import guided_map
    from leukedge.runtime import LiteRunner

    path = exported["guided"]["i8"]
    assert exported["record"]["float_cam"] and exported["record"]["float_outputs"] == ["cam"]
    it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    det = {d["index"]: d for d in it.get_tensor_details()}
    ops = it._get_ops_details()  # noqa: SLF001
    cam_only = cam_only_tensors(path.read_bytes())
    branch = [o for o in ops if det[o["outputs"][0]]["name"] in cam_only]
    assert {"MEAN", "RELU", "REDUCE_MAX", "ADD", "DIV", "RESIZE_BILINEAR", "MUL"} <= {o["op_name"] for o in branch}
    for o in branch:                          # the whole branch computes in float (GREATER: bool, CAST: float)
        assert det[o["outputs"][0]]["dtype"] in (np.float32, np.bool_), (o["op_name"], det[o["outputs"][0]]["name"])
        if o["op_name"] in ("MEAN", "RELU", "REDUCE_MAX", "DIV", "RESIZE_BILINEAR", "MUL"):
            assert det[o["outputs"][0]]["dtype"] == np.float32, o["op_name"]
    mean = [o for o in ops if o["op_name"] == "MEAN" and len(det[o["inputs"][0]]["shape"]) == 4
            and tuple(det[o["inputs"][0]]["shape"][1:3]) == (16, 16)]
    resize = [o for o in ops if o["op_name"] == "RESIZE_BILINEAR"]
    assert len(mean) == 1 and len(resize) == 1
    act_idx, cam7_idx = mean[0]["inputs"][0], resize[0]["inputs"][0]
    producer = next(o for o in ops if act_idx in list(o["outputs"]))
    assert producer["op_name"] == "DEQUANTIZE" and det[producer["inputs"][0]]["dtype"] == np.int8
    assert det[act_idx]["dtype"] == np.float32                  # the dequantized int8 activation
    runner = LiteRunner(path)
    assert np.dtype(runner.outputs["cam"]["dtype"]) == np.float32
    runner.interpreter = it
    for x in held_out:
        runner.set_input(x)
        it.invoke()
        cam = runner.get_outputs()["cam"]
        own = guided_map(it.get_tensor(cam7_idx)[0, ..., 0], it.get_tensor(act_idx)[0])
        assert cam.shape == (16, 16)
        assert np.abs(cam - own).max() <= INT8_OWN_TOL * max(float(own.max()), 1e-12)


def test_int8_heatmap_parity_on_held_out_smears(exported, tiny_keras, held_out):
    """``leukedge parity``'s heatmap measure (Pearson r per image) of int8 vs float32 on 16 real
    smears: r >= 0.9 for guided7x14; the int8 map also follows the Keras model's numpy reference."""
    from leukedge.compress.parity import heatmap_parity
    from leukedge.runtime import LiteRunner

    out = {k: LiteRunner(exported["guided"][k]).predict(held_out)["cam"] for k in ("f32", "i8")}
    summary, corr, _ = heatmap_parity(out["f32"], out["i8"])
    assert summary["available"] and summary["cam_shape"] == [16, 16]
    assert summary["mean_correlation"] >= 0.9, summary
    ref, _ = _keras_reference(tiny_keras, held_out)
    vs_ref, _, _ = heatmap_parity(ref, out["i8"])
    assert vs_ref["mean_correlation"] >= 0.9, vs_ref


def test_keras_gradient_tape_reference_follows_the_spec(exported, tiny_keras, held_out):
    """The float32-vs-Keras parity check of `compress` (GradientTape Grad-CAM, not the closed
    form) compares like with like: the Keras predictor makes the spec's guided map."""
    from leukedge.runtime import LiteRunner
    from leukedge.train.gradcam import GradCAM

    cam = LiteRunner(exported["guided"]["f32"]).predict(held_out)["cam"]
    tape, _ = GradCAM(tiny_keras, guide=exported["spec"].heatmap.layer)(held_out)
    assert tape.shape == cam.shape
    assert np.abs(tape - cam).max() <= 1e-3 * max(float(cam.max()), 1e-12)


def test_recipe_key_defaults_and_old_recipe_files(tmp_path, capsys):
    from leukedge.cli import main
    from leukedge.compress.recipe import CompressRecipe
    from leukedge.compress.recipe_keys import from_config, to_config
    from leukedge.errors import ConfigError

    new = CompressRecipe()
    assert (new.heatmap.method, new.heatmap.layer) == ("guided7x14", None)
    old = new.to_dict()
    old.pop("heatmap")                                   # a recipe.json written before the key existed
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert CompressRecipe.load(tmp_path / "old.json").heatmap.method == "gradcam7"
    r = CompressRecipe()
    r.set("heatmap.method=gradcam7")
    cfg = to_config(r, "runs/x", "models/x", None)
    assert cfg.heatmap == "gradcam7" and from_config(cfg) == r
    r.set("heatmap.layer=pool4_relu")
    assert to_config(r, "runs/x", "models/x", None).heatmap_layer == "pool4_relu"
    with pytest.raises(ConfigError, match="unknown method 'gradcam8'"):
        CompressRecipe().set("heatmap.method=gradcam8")
    with pytest.raises(ConfigError, match="heatmap cannot be null"):
        CompressRecipe().set("heatmap=null")
    assert main(["compress", "--recipe", str(tmp_path / "old.json"), "--set", "heatmap.method=guided7x14",
                 "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["heatmap"] == {"method": "guided7x14", "layer": None}
    assert main(["compress", "--dry-run", "--set", "heatmap.method=nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gradcam7, guided7x14" in err[0]


@pytest.mark.parametrize("name", ["densenet201-binary", "efficientnet-lite0-binary", "efficientnet-lite0-subtype"])
def test_committed_releases_still_describe_what_they_shipped(name, capsys):
    """A release's recipe, spec and cam output agree on the heatmap: guided7x14 at the backbone
    registry's guide layer, 14x14 (the EfficientNet-Lite0 releases of 2026-12-06 at
    lite_b11_expand_relu; densenet201-binary at pool4_relu since its field re-release), or, for a
    release made before the key existed (no heatmap key), gradcam7, 7x7."""
    from pathlib import Path

    from leukedge.cli import main
    from leukedge.runtime import LiteRunner
    from leukedge.spec import ModelSpec

    folder = Path("models") / name
    recorded = json.loads((folder / "recipe.json").read_text()).get("heatmap")
    assert main(["compress", "--recipe", str(folder / "recipe.json"), "--dry-run"]) == 0
    method = json.loads(capsys.readouterr().out)["heatmap"]["method"]
    spec = ModelSpec.load(folder)
    assert spec.heatmap.method == method
    shape = LiteRunner(folder / f"{name}.int8.tflite").outputs["cam"]["shape"]
    if recorded is None:
        assert method == "gradcam7" and tuple(shape) == (1, 7, 7)
    else:
        guide = {"densenet201": "pool4_relu", "efficientnet-lite0": "lite_b11_expand_relu"}[spec.backbone]
        assert method == "guided7x14" and spec.heatmap.layer == guide and tuple(shape) == (1, 14, 14)


def test_a_release_source_refuses_a_new_heatmap_without_a_new_float32_file(tiny_spec, tmp_path):
    from leukedge.compress.config import CompressConfig
    from leukedge.compress.pipeline import Source, check_source_config
    from leukedge.errors import ConfigError

    f32 = tmp_path / "old.float32.tflite"
    src = Source(tmp_path, f32, tiny_spec, None, {}, float_tflite=f32)       # a gradcam7 release
    cfg = CompressConfig(source=str(tmp_path), out=str(tmp_path / "new"))
    assert cfg.heatmap == "guided7x14"
    with pytest.raises(ConfigError) as exc:
        check_source_config(cfg, src)
    assert "quantize.reexport_float32=true" in exc.value.one_line() and "heatmap.method=gradcam7" in exc.value.one_line()
    cfg.reexport_float32 = True
    check_source_config(cfg, src)                                             # re-exported: allowed
    check_source_config(CompressConfig(source=str(tmp_path), out="x", heatmap="gradcam7"), src)


def test_tiny_release_ships_the_guided_map_and_the_app_draws_it(tiny_release, smear_paths):
    """`compress` of a training run with the default recipe: spec, files and recipe say guided7x14,
    the cam is 2x the features, and the app's Screener draws it at the image's size."""
    from leukedge.edge_app.inference import Screener
    from leukedge.runtime import LiteRunner
    from leukedge.spec import ModelSpec

    out, summary = tiny_release
    spec = ModelSpec.load(out)
    assert (spec.heatmap.method, spec.heatmap.layer) == ("guided7x14", "tiny_relu1")
    assert json.loads((out / "recipe.json").read_text())["heatmap"]["method"] == "guided7x14"
    for v in ("float32", "int8", "pruned-int8"):
        assert tuple(LiteRunner(out / f"{out.name}.{v}.tflite").outputs["cam"]["shape"]) == (1, 16, 16), v
    parity = json.loads((out / "parity.json").read_text())
    assert "[16, 16]" in json.dumps(parity)                              # parity measured the 16x16 maps
    res = Screener(out, num_threads=1).screen_image(smear_paths["Pro"][0])
    assert res.heatmap is not None and res.heatmap.ndim == 2 and res.heatmap.max() <= 1.0


@pytest.mark.parametrize("backbone, guide, by_size", [
    ("efficientnet-lite0", "lite_b11_expand_relu", "lite_b11_expand_relu"),
    ("densenet201", "pool4_relu", "pool4_conv"),   # the registry names the non-negative, normalised activation
])
def test_registry_guide_layers_exist_at_twice_the_feature_size(backbone, guide, by_size):
    """The registry's guide layer is a layer of the real architecture (no weights), 14x14 at 224."""
    from leukedge.compress.cam_graph import feature_side, guide_layer, last_layer_at
    from leukedge.spec import ModelSpec
    from leukedge.train.model import build_classifier

    model = build_classifier(ModelSpec(name="x", backbone=backbone), None)
    assert feature_side(model) == 7
    assert guide_layer(model, backbone) == guide and model.get_layer(guide).output_shape[1:3] == (14, 14)
    assert last_layer_at(model, 14) == by_size


def test_a_model_without_a_layer_at_twice_the_feature_size_is_a_one_line_error(tiny_keras, tiny_spec):
    """The DenseNet-shaped test model never downsamples (every layer 32x32): guided7x14 is refused
    with a pointer to gradcam7; a named guide layer the model lacks is refused too."""
    from fixtures_models import dense_block_model

    from leukedge.compress.export import with_heatmap
    from leukedge.errors import ModelError
    from leukedge.spec import ModelSpec

    with pytest.raises(ModelError) as exc:
        with_heatmap(tiny_spec, dense_block_model(tiny_spec), "guided7x14")
    assert "no 64x64 layer" in exc.value.one_line() and "heatmap.method=gradcam7" in exc.value.one_line()
    named = with_heatmap(tiny_spec, tiny_keras, "guided7x14").to_dict()
    named["heatmap"]["layer"] = "no_such_layer"
    with pytest.raises(ModelError, match="'no_such_layer' is not a layer"):
        with_heatmap(ModelSpec.from_dict(named), tiny_keras)
    assert with_heatmap(ModelSpec.from_dict(named), tiny_keras, "gradcam7").heatmap.layer is None
