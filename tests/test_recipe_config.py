"""The engine's CompressConfig holds the recipe's own prune / qat sections: the committed releases'
recipe.json round-trips through it, their compress.json (flat ``prune_*`` / ``qat_*`` keys) still
loads, and ``--set`` of one nested key changes that one field (real release files, the real CLI parser)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from leukedge.cli import build_parser
from leukedge.compress.cli import build_recipe
from leukedge.compress.config import CompressConfig
from leukedge.compress.recipe import CompressRecipe, PruneRecipe, QATRecipe
from leukedge.compress.recipe_flags import KEYS
from leukedge.compress.recipe_keys import from_config, to_config
from leukedge.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
# the committed releases, and the 2026-11-26 DenseNet201 release's recipe (the one with a prune section)
RELEASES = sorted(p for p in (REPO / "models").glob("*") if (p / "recipe.json").exists()) + \
    [REPO / "tests" / "data" / "legacy" / "densenet201-binary"]
IDS = [("legacy-" if "legacy" in p.parts else "") + p.name for p in RELEASES]


def flat(obj, prefix: str = "") -> dict:
    """Every leaf of nested dataclasses / dicts as ``{"a.b": value}`` (a None section is one leaf)."""
    d = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def config_of(*argv: str) -> CompressConfig:
    """The config ``leukedge compress ARGV`` would run with (the CLI's own parser and recipe builder)."""
    recipe = build_recipe(build_parser().parse_args(["compress", *argv]))
    return to_config(recipe, "runs/x", "models/x", None)


def test_releases_are_there():
    assert len(RELEASES) >= 3 and any(CompressRecipe.load(p / "recipe.json").prune for p in RELEASES)


@pytest.mark.parametrize("release", RELEASES, ids=IDS)
def test_a_release_recipe_round_trips_through_the_config(release):
    on_disk = json.loads((release / "recipe.json").read_text())
    recipe = CompressRecipe.load(release / "recipe.json")
    cfg = to_config(recipe, "runs/x", "models/x", None)
    assert cfg.prune == recipe.prune and cfg.qat == recipe.qat       # the recipe's own sections, as they are
    back = from_config(cfg)
    back.source, back.data, back.training, back.note = recipe.source, recipe.data, recipe.training, recipe.note
    assert back == recipe
    again = json.loads(json.dumps(back.to_dict()))
    if "ood_map" not in on_disk.get("screening", {}):               # made before the key: it reads as false
        assert again["screening"].pop("ood_map") is False
    for key in ("min_sharpness", "rule_in", "rule_out", "views", "min_scale", "shrink"):  # made before the key: the source's
        if key not in on_disk.get("screening", {}):
            assert again["screening"].pop(key) is None
    assert {k: again[k] for k in on_disk} == on_disk                 # recipe.json -> config -> recipe.json


def test_the_flag_table_names_real_config_attributes():
    cfg = CompressConfig(source="s", out="o", prune=PruneRecipe(), qat=QATRecipe())
    leaves = flat(cfg)
    for flag, key, attr, _ in KEYS:
        if attr and "." in attr:                                     # inside prune / qat: the recipe key itself
            assert attr == key and attr in leaves, (flag, attr)
        elif attr:
            assert hasattr(cfg, attr), (flag, attr)
    assert not [f.name for f in dataclasses.fields(CompressConfig) if f.name.startswith(("prune_", "qat_"))]


@pytest.mark.parametrize("release", RELEASES, ids=IDS)
def test_a_release_compress_json_still_loads(release):
    """The committed records are flat (``prune``: the sparsity, ``qat``: a bool, ``prune_epochs``, ...);
    records written from now on are nested: both load."""
    record = json.loads((release / "compress.json").read_text())["config"]
    cfg = CompressConfig.from_record(record)
    for name in ("prune", "qat"):
        value, section = record[name], getattr(cfg, name)
        if value is None or value is False:
            assert section is None, name
            continue
        if isinstance(value, dict):
            assert dataclasses.asdict(section) == value
        elif name == "prune":
            assert section.sparsity == value
        for k, v in record.items():
            if k.startswith(name + "_"):
                assert getattr(section, k[len(name) + 1:]) == v, k
    assert cfg.gates == dataclasses.replace(cfg.gates, **record["gates"])
    same = {k for k in record if k in {f.name for f in dataclasses.fields(CompressConfig)}} - {"prune", "qat", "gates"}
    assert same and {k: getattr(cfg, k) for k in same} == {k: record[k] for k in same}


def test_the_densenet_release_record_maps_to_its_prune_section():
    """A signed release made before the config was nested: its flat keys become the prune section."""
    record = json.loads((REPO / "tests" / "data" / "legacy" / "densenet201-binary" / "compress.json").read_text())["config"]
    cfg = CompressConfig.from_record(record)
    assert cfg.prune == PruneRecipe(sparsity=0.5, epochs=12, feature_distill=8.0, cam_distill=30.0)
    assert cfg.prune_config().target_sparsity == 0.5 and cfg.prune_config().learning_rate == 1e-4


def test_flat_qat_keys_and_nested_records_load():
    legacy = {"source": "s", "out": "o", "prune": None, "prune_epochs": 9, "qat": True, "qat_epochs": 12,
              "qat_lr": 5e-5, "qat_gone_key": 1, "per_tensor": True}
    cfg = CompressConfig.from_record(legacy)
    assert cfg.prune is None and cfg.qat == QATRecipe(epochs=12, lr=5e-5) and cfg.per_tensor is True
    assert cfg.qat_config().learning_rate == 5e-5 and cfg.qat_config().per_tensor is True
    new = CompressConfig(source="s", out="o", prune=PruneRecipe(sparsity=0.7, clusters=16), qat=QATRecipe(epochs=3))
    assert CompressConfig.from_record(json.loads(json.dumps(dataclasses.asdict(new)))) == new
    with pytest.raises(ConfigError, match="did you mean 'prune.epochs'"):
        CompressConfig.from_record({"source": "s", "out": "o", "prune": {"epoch": 3}})


@pytest.mark.parametrize("base, item, key, value", [
    (["--recipe", "tests/data/legacy/densenet201-binary/recipe.json"], "prune.epochs=3", "prune.epochs", 3),
    (["--recipe", "tests/data/legacy/densenet201-binary/recipe.json"], "prune.cluster_lr=2e-5", "prune.cluster_lr", 2e-5),
    (["--qat"], "qat.select_every=2", "qat.select_every", 2),
    (["--qat"], "qat.lr=5e-5", "qat.lr", 5e-5),
    ([], 'checks.ood_dirs=["../shared/data/pbc-lymphocytes"]', "ood_check_dirs", ["../shared/data/pbc-lymphocytes"]),
])
def test_set_of_one_key_changes_that_field_only(base, item, key, value, monkeypatch):
    monkeypatch.chdir(REPO)
    before, after = flat(config_of(*base)), flat(config_of(*base, "--set", item))
    assert {k: (before[k], after[k]) for k in before if before[k] != after[k]} == {key: (before[key], value)}
    assert before[key] != value and set(before) == set(after)


def test_set_of_a_field_of_an_absent_section_creates_it():
    assert config_of().prune is None
    assert config_of("--set", "prune.epochs=3").prune == PruneRecipe(epochs=3)
    assert config_of("--qat", "--set", "qat=null").qat is None
