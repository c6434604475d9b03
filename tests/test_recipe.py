"""The compression recipe: --set parsing, one-line errors, the flag budget, and a release made
again from its own recipe.json (tiny real model, real TFLite, real parity)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from leukedge.cli import build_parser, main
from leukedge.compress.recipe import CompressRecipe, PruneRecipe, all_keys
from leukedge.compress.recipe_flags import KEYS, MOVED, markdown_table
from leukedge.compress.recipe_keys import from_config, to_config
from leukedge.errors import ConfigError
from leukedge.fileio import sha256_file
from leukedge.portable import absolute_paths

pytest_plugins = ["fixtures_models"]

REPO = Path(__file__).resolve().parents[1]


def test_set_parses_json_values_into_the_nested_sections():
    r = CompressRecipe()
    assert r.prune is None and r.qat is None
    r.set("prune.epochs=8")                      # a field of an absent section creates it with defaults
    assert r.prune == PruneRecipe(epochs=8)
    r.set("quantize.clip_percentile=auto")       # a bare word is a string
    r.set("quantize.calib=60")
    r.set("prune.lr=1e-5")
    r.set("gates.min_agreement=0.98")
    r.set('checks.ood_dirs=["../shared/data/pbc-lymphocytes"]')
    r.set("qat=true")
    assert (r.quantize.clip_percentile, r.quantize.calib, r.prune.lr, r.gates.min_agreement) == ("auto", 60, 1e-5, 0.98)
    assert r.qat is not None and r.qat.epochs == 1 and r.checks.ood_dirs == ["../shared/data/pbc-lymphocytes"]
    r.set("qat=null")
    r.set('prune={"sparsity": 0.75, "clusters": 16}')
    assert r.qat is None and (r.prune.sparsity, r.prune.clusters, r.prune.epochs) == (0.75, 16, 4)
    again = CompressRecipe.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r


@pytest.mark.parametrize("item, words", [
    ("prune.epoch=3", ["unknown recipe key 'prune.epoch'", "did you mean 'prune.epochs'"]),
    ("quantise.calib=3", ["did you mean 'quantize.calib'"]),
    ("quantize.calib=many", ["quantize.calib: expected int"]),
    ("quantize.per_tensor=1", ["quantize.per_tensor: expected bool"]),
    ("gates.min_agreement", ["bad --set"]),
])
def test_set_refuses_what_it_cannot_apply(item, words):
    with pytest.raises(ConfigError) as exc:
        CompressRecipe().set(item)
    assert all(w in exc.value.one_line() for w in words), exc.value.one_line()


def test_every_old_flag_maps_to_a_recipe_key_and_back():
    keys = set(all_keys())
    for flag, key, attr, _ in KEYS:
        if "NAME" not in key:
            assert key in keys, (flag, key)
    r = CompressRecipe()
    for item in ("prune.epochs=7", "prune.distill=false", "qat.lr=2e-5", "quantize.per_tensor=true",
                 "checks.keras_check=false", "quantize.selective=false", "gates.max_delta_roc_auc=0.01"):
        r.set(item)
    cfg = to_config(r, "runs/x", "models/x", None)
    assert (cfg.prune.sparsity, cfg.prune.epochs, cfg.prune.distill, cfg.qat.lr, cfg.per_tensor) == \
        (0.5, 7, False, 2e-5, True)
    assert cfg.prune is not r.prune and cfg.qat is not r.qat  # copies: changing one leaves the other
    assert (cfg.keras_check, cfg.selective, cfg.gates.max_delta_roc_auc) == (False, False, 0.01)
    assert from_config(cfg) == r


def test_the_docs_table_lists_every_old_flag():
    doc = (REPO / "docs" / "compression-recipe.md").read_text()
    assert markdown_table() in doc
    assert len(re.findall(r"^\| `--", markdown_table(), re.M)) == 39  # the 40 old flags less --out (kept)


def test_compress_help_has_at_most_15_flags():
    sub = build_parser()._subparsers._group_actions[0].choices["compress"]
    shown = [a for a in sub._actions if a.option_strings and a.help != "==SUPPRESS=="]
    assert len(shown) <= 15, [a.option_strings for a in shown]


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = main(["compress", str(tmp_path), "--out", str(tmp_path / "m"), "--set", "prune.epoch=3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "did you mean 'prune.epochs'" in err[0]
    rc = main(["compress", str(tmp_path), "--out", str(tmp_path / "m"), "--prune-epochs", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--set prune.epochs=" in err[0]
    assert set(MOVED) and all(k.split(".")[0] in ("quantize", "prune", "qat", "checks") for k in MOVED.values())
    rc = main(["compress", "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no source" in err[0]
    gone = CompressRecipe()
    gone.set('source={"kind": "run", "name": "20990101-gone", "model_file": "best.h5", "sha256": "ab12"}')
    gone.save(tmp_path / "r.json")
    rc = main(["compress", "--recipe", str(tmp_path / "r.json"), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "'20990101-gone'" in err[0] and "RUN_OR_MODEL" in err[0]
    assert not (tmp_path / "m").exists()
    # reading a recipe needs no source: --dry-run prints it and says in one line it cannot run here
    rc = main(["compress", "--recipe", str(tmp_path / "r.json"), "--dry-run"])
    out, err = capsys.readouterr()
    assert rc == 0 and json.loads(out)["source"]["name"] == "20990101-gone"
    assert len(err.strip().splitlines()) == 1 and err.startswith("note:") and "cannot run here" in err


def test_shortcuts_change_a_loaded_recipe_only_where_given(tmp_path, capsys):
    r = CompressRecipe()
    r.set('qat={"epochs": 12, "lr": 5e-5}')
    r.set("prune.clusters=32")
    r.save(tmp_path / "r.json")
    assert main(["compress", "--recipe", str(tmp_path / "r.json"), "--qat", "--prune", "0.7", "--dry-run"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["qat"]["epochs"], d["qat"]["lr"]) == (12, 5e-5)            # --qat keeps the loaded section
    assert (d["prune"]["sparsity"], d["prune"]["clusters"]) == (0.7, 32)  # --prune changes the sparsity only


def test_dry_run_prints_the_resolved_recipe(capsys):
    assert main(["compress", "--prune", "0.6", "--set", "prune.epochs=2", "--gate", "delta_roc_auc=0.01",
                 "--dry-run"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["prune"]["sparsity"] == 0.6 and d["prune"]["epochs"] == 2 and d["gates"]["max_delta_roc_auc"] == 0.01


def test_a_release_is_made_again_from_its_own_recipe(tiny_run, small_dataset, tmp_path, monkeypatch, capsys):
    """Compress a tiny run, then `leukedge compress --recipe <release>/recipe.json` with nothing else
    (source found by name + sha256 under runs/, data by name): same gate outcome, same gate values,
    byte-identical int8 file (calibration is deterministic), and no absolute path in any record."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEUKEDGE_DATA", str(small_dataset))
    shutil.copytree(tiny_run, Path("runs") / tiny_run.name)
    rc = main(["compress", f"runs/{tiny_run.name}", "--out", "models/tiny-recipe", "--calib", "60",
               "--set", "quantize.selective=false", "--set", "checks.keras_check=false", "--set", "checks.n_boot=100",
               "--set", 'gates={"min_agreement": 0.9}'])
    first = json.loads(Path("models/tiny-recipe/compress.json").read_text())
    assert rc == (0 if first["passed"] else 1)
    recipe = json.loads(Path("models/tiny-recipe/recipe.json").read_text())
    assert recipe["source"]["kind"] == "run" and recipe["source"]["name"] == tiny_run.name
    assert recipe["source"]["sha256"] == sha256_file(tiny_run / "best.h5")
    assert recipe["data"] == {"name": small_dataset.name, "manifest": "split.csv",
                              "manifest_sha256": sha256_file(tiny_run / "split.csv")}
    assert recipe["gates"]["min_agreement"] == 0.9 and recipe["quantize"]["selective"] is False
    assert recipe["training"] == {"backbone": "tiny-cnn", "data_dir": small_dataset.name}  # the run's config.json
    for f in Path("models/tiny-recipe").rglob("*.json"):
        assert absolute_paths(json.loads(f.read_text())) == [], f

    rc2 = main(["compress", "--recipe", "models/tiny-recipe/recipe.json", "--out", "again/tiny-recipe"])
    second = json.loads(Path("again/tiny-recipe/compress.json").read_text())
    assert rc2 == rc and second["passed"] == first["passed"]
    assert second["parity"] == first["parity"]  # every gate value of every comparison, exactly
    assert sha256_file("again/tiny-recipe/tiny-recipe.int8.tflite") == \
        sha256_file("models/tiny-recipe/tiny-recipe.int8.tflite")
    assert json.loads(Path("again/tiny-recipe/recipe.json").read_text()) == recipe


RELEASES = sorted(p for p in (REPO / "models").glob("*") if (p / "card.json").exists())


def test_no_absolute_path_in_any_release_record_or_committed_result():
    files = sorted((REPO / "models").rglob("*.json")) + sorted((REPO / "docs").rglob("*.json"))
    assert len(files) >= 3 * 6
    bad = {str(f.relative_to(REPO)): absolute_paths(json.loads(f.read_text()))[:2] for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


@pytest.mark.parametrize("release", RELEASES, ids=[p.name for p in RELEASES])
def test_committed_releases_carry_a_recipe_naming_their_source_and_data(release):
    r = CompressRecipe.load(release / "recipe.json")
    if r.source.kind == "release":  # re-made from the float32 file it ships (releases older than recipes)
        assert r.source.name == release.name and r.source.note
        record = json.loads((release / "compress.json").read_text())
        if r.source.sha256 != sha256_file(release / r.source.model_file):
            # the source release's float32 file (in git history), re-exported, with a new spec
            # embedded or with the ood_map output listed: compress.json names that file by the same
            # sha256 and says which
            assert record["source_release"]["float32_sha256"] == r.source.sha256
            assert (record.get("float32_reexported", {}).get("old_sha256") == r.source.sha256
                    or record["source_release"].get("spec_embedded")
                    or r.source.model_file in (record.get("ood_map") or {}).get("files", []))
        assert r.source.made_from["file"].startswith("runs/") and r.source.made_from["file"].endswith("best.h5")
    else:  # made from a training run: named with its checkpoint's sha256, and how it was trained
        assert r.source.kind == "run" and r.source.model_file == "best.h5" and len(r.source.sha256) == 64
        assert r.training and r.training["task"] == json.loads((release / "spec.json").read_text())["task"]
        spec_capture = json.loads((release / "spec.json").read_text())["preprocess"].get("capture")
        assert r.training["preprocess"].get("capture", {}).get("color") == (spec_capture or {}).get("color")
    assert r.data.name == "aria-all" and r.data.manifest_sha256 == sha256_file(release / "split.csv")
    record = json.loads((release / "compress.json").read_text())
    assert (r.prune is not None) == ("pruning" in record)      # a shipped pruned file has its prune section
    assert (r.qat is not None) == ("qat" in record)
    if record["config"].get("prune") is None and "pruning" in record:
        assert "carried over" in r.note                       # said, not hidden
