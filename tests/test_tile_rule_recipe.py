"""The recipe key ``screening.tile_rule``: how a full-field photo's tiles combine, written into the
release's spec (``preprocess.capture.tile_rule``) and its embedded copy; refused, with the fix, where
it would do nothing or leave the files disagreeing with spec.json."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from leukedge.compress.config import CompressConfig
from leukedge.compress.recipe import CompressRecipe
from leukedge.compress.recipe_keys import from_config, to_config
from leukedge.errors import ConfigError
from leukedge.spec import ModelSpec

pytest_plugins = ["fixtures_models"]  # tiny_run, tiny_release


def _tiled(spec: ModelSpec, rule: str = "max") -> ModelSpec:
    d = spec.to_dict()
    d["preprocess"]["capture"] = {"fov_crop": True, "magnification": True, "cell_diameter": 4.0, "tile_rule": rule}
    return ModelSpec.from_dict(d)


def test_the_key_round_trips_and_an_old_recipe_keeps_the_runs_rule():
    r = CompressRecipe()
    assert r.screening.tile_rule is None
    r.set("screening.tile_rule=noisy_or")
    cfg = to_config(r, "runs/x", "models/x", None)
    assert cfg.tile_rule == "noisy_or" and from_config(cfg).screening.tile_rule == "noisy_or"
    assert CompressRecipe.from_dict(r.to_dict()).screening.tile_rule == "noisy_or"
    old = r.to_dict()
    del old["screening"]
    assert CompressRecipe.from_dict(old).screening.tile_rule is None


def test_an_unknown_rule_is_one_line_with_the_choices():
    with pytest.raises(ConfigError) as exc:
        CompressRecipe().set("screening.tile_rule=median")
    assert "screening.tile_rule" in exc.value.one_line() and "noisy_or" in exc.value.one_line()


def test_refused_where_it_would_do_nothing_or_split_the_files_from_spec_json(tiny_spec, tmp_path):
    from leukedge.compress.pipeline import Source, check_source_config

    f32 = tmp_path / "x.float32.tflite"
    cfg = CompressConfig(source=str(tmp_path), out=str(tmp_path / "new"), tile_rule="noisy_or")
    with pytest.raises(ConfigError, match="magnification is off"):       # never screened as tiles
        check_source_config(cfg, Source(tmp_path, f32, tiny_spec, None, {}))
    release = Source(tmp_path, f32, _tiled(tiny_spec), None, {}, float_tflite=f32)
    cfg.heatmap = "gradcam7"               # (the tiny release's own heatmap)
    check_source_config(cfg, release)      # a release's files get the new spec embedded (same weights)
    cfg.reexport_float32 = True
    check_source_config(cfg, release)
    check_source_config(CompressConfig(source="x", out="y", tile_rule="max", heatmap="gradcam7"),  # its own rule
                        Source(tmp_path, f32, _tiled(tiny_spec), None, {}, float_tflite=f32))


def test_compress_writes_the_rule_into_spec_json_and_the_embedded_spec(tiny_run, tmp_path):
    from leukedge.compress.export import read_embedded_spec
    from leukedge.compress.pipeline import run_compress

    run = tmp_path / tiny_run.name
    shutil.copytree(tiny_run, run)
    _tiled(ModelSpec.load(run)).save(run / "spec.json")
    out = tmp_path / "tiny-tiles"
    run_compress(CompressConfig(source=str(run), out=str(out), variants=["float32"], parity=False, tile_rule="mean"))
    assert ModelSpec.load(out).preprocess.capture.tile_rule == "mean"
    embedded = read_embedded_spec((out / "tiny-tiles.float32.tflite").read_bytes())
    assert embedded.preprocess.capture.tile_rule == "mean"
    assert CompressRecipe.load(out / "recipe.json").screening.tile_rule == "mean"


# ----- screening.magnification: switch the tile screen on for a model trained without it ----------
def test_magnification_keys_round_trip_and_bad_values_are_one_line():
    r = CompressRecipe()
    r.set("screening.magnification=true")
    r.set("screening.scale_tolerance=0.3")
    cfg = to_config(r, "runs/x", "models/x", None)
    assert (cfg.magnification, cfg.cell_diameter, cfg.scale_tolerance) == (True, None, 0.3)
    assert from_config(cfg).screening == r.screening
    assert CompressRecipe.from_dict(r.to_dict()).screening.magnification is True
    for key, message in (("screening.scale_tolerance=2", "scale_tolerance must be a number in"),
                         ("screening.cell_diameter=0", "cell_diameter must be a number in"),
                         ("screening.magnification=\"yes\"", "screening.magnification: expected bool")):
        with pytest.raises(ConfigError) as exc:
            CompressRecipe().set(key)
        assert message in exc.value.one_line()
    off = CompressRecipe()
    off.set("screening.magnification=false")
    with pytest.raises(ConfigError, match="need screening.magnification true"):
        off.set("screening.cell_diameter=16")


def test_a_tile_rule_is_accepted_when_the_recipe_switches_magnification_on(tiny_spec, tmp_path):
    from leukedge.compress.pipeline import Source, check_source_config

    f32 = tmp_path / "x.float32.tflite"
    run = Source(tmp_path, f32, tiny_spec, None, {})
    check_source_config(CompressConfig(source="x", out="y", tile_rule="mean", magnification=True), run)
    with pytest.raises(ConfigError, match="magnification is off"):       # a tile rule alone, never tiled
        check_source_config(CompressConfig(source="x", out="y", tile_rule="mean", magnification=False), run)


def test_a_release_keeps_its_weights_and_gets_the_new_spec_embedded(tiny_release, tiny_run, tmp_path):
    """screening.* on a release source with quantize.keep_int8: both files keep their weights
    and graph (the same outputs on real smears), with the new spec embedded; no re-export."""
    from ai_edge_litert.interpreter import Interpreter

    from leukedge.cli import main
    from leukedge.compress.export import read_embedded_spec
    from leukedge.preprocess import preprocess_file
    from leukedge.split import read_manifest

    src, _ = tiny_release
    out = tmp_path / src.name
    assert main(["compress", str(src), "--out", str(out), "--set", "quantize.keep_int8=true", "--set",
                 "screening.magnification=true", "--set", "screening.cell_diameter=16", "--no-parity"]) == 0
    spec = ModelSpec.load(src)
    rows = read_manifest(src / "split.csv", json.loads((tiny_run / "config.json").read_text())["data_dir"])[:4]
    x = np.stack([preprocess_file(r["abspath"], spec.preprocess) for r in rows]).astype(np.float32)
    for variant in ("float32", "int8"):
        old, new = (f / f"{src.name}.{variant}.tflite" for f in (src, out))
        emb = read_embedded_spec(new.read_bytes())
        assert emb.preprocess.capture.magnification and emb.preprocess.capture.cell_diameter == 16
        assert not read_embedded_spec(old.read_bytes()).preprocess.capture or \
            not read_embedded_spec(old.read_bytes()).preprocess.capture.magnification
        outs = []
        for f in (old, new):
            interp = Interpreter(model_path=str(f))
            d = interp.get_input_details()[0]
            xin = x if d["dtype"] == np.float32 else \
                np.clip(np.round(x / d["quantization"][0] + d["quantization"][1]), -128, 127).astype(d["dtype"])
            run = interp.get_signature_runner()
            outs.append(np.concatenate([run(image=xin[i:i + 1])["probability"] for i in range(len(x))]))
        assert np.array_equal(outs[0], outs[1]), variant          # the same weights and graph
    assert ModelSpec.load(out).preprocess.capture.magnification
    assert json.loads((out / "compress.json").read_text())["source_release"]["spec_embedded"]


def test_compress_switches_magnification_on_measuring_the_training_cells(tiny_run, tmp_path):
    from leukedge.capture import CaptureConfig
    from leukedge.compress.export import read_embedded_spec
    from leukedge.compress.pipeline import run_compress

    out = tmp_path / "tiny-mag"
    run_compress(CompressConfig(source=str(tiny_run), out=str(out), variants=["float32"], parity=False,
                 magnification=True, tile_rule="mean"))
    for spec in (ModelSpec.load(out), read_embedded_spec((out / "tiny-mag.float32.tflite").read_bytes())):
        cap = spec.preprocess.capture
        assert cap.magnification and cap.tile_rule == "mean" and cap.fov_crop
        assert 10 < cap.cell_diameter < 25                              # measured on the run's real training smears
        assert cap.scale_tolerance == CaptureConfig.scale_tolerance
    rec = CompressRecipe.load(out / "recipe.json").screening
    assert rec.magnification is True and rec.tile_rule == "mean"
    # and off again, from that spec
    src = tmp_path / "tiny-mag-run"
    shutil.copytree(tiny_run, src)
    ModelSpec.load(out).save(src / "spec.json")
    off = tmp_path / "tiny-off"
    run_compress(CompressConfig(source=str(src), out=str(off), variants=["float32"], parity=False, magnification=False))
    assert not ModelSpec.load(off).preprocess.capture.magnification
