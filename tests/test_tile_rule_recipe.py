"""The recipe key ``screening.tile_rule``: how a full-field photo's tiles combine, written into the
release's spec (``preprocess.capture.tile_rule``) and its embedded copy; refused, with the fix, where
it would do nothing or leave the files disagreeing with spec.json."""
from __future__ import annotations

import shutil

import pytest

from leukedge.compress.config import CompressConfig
from leukedge.compress.recipe import CompressRecipe
from leukedge.compress.recipe_keys import from_config, to_config
from leukedge.errors import ConfigError
from leukedge.spec import ModelSpec

pytest_plugins = ["fixtures_models"]  # tiny_run


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
    with pytest.raises(ConfigError) as exc:                             # its files embed the old rule
        check_source_config(cfg, release)
    assert "quantize.reexport_float32=true" in exc.value.one_line()
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
