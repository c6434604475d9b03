"""From a :class:`~leukedge.compress.recipe.CompressRecipe` to the engine's
:class:`~leukedge.compress.config.CompressConfig` and back (``prune`` and ``qat`` are the same
sections in both; the flat ``quantize`` and ``checks`` fields go through the one table,
:data:`~leukedge.compress.recipe_flags.KEYS`), and finding a recipe's source and data again."""
from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

from leukedge.errors import ConfigError
from leukedge.fileio import sha256_file
from leukedge.portable import find_dataset

from .config import CompressConfig
from .quantization import parse_variants
from .ranges import check_percentile
from .recipe import ChecksConfig, CompressRecipe, HeatmapRecipe, QuantizeConfig, ScreeningRecipe
from .recipe_flags import KEYS, MOVED  # noqa: F401  (MOVED re-exported: the one table)

log = logging.getLogger(__name__)


def _section_fields(section: str) -> list[tuple[str, str]]:
    """(recipe field, CompressConfig attribute) of one flat section (``quantize``, ``checks``)."""
    return [(key.split(".", 1)[1], attr) for _, key, attr, _ in KEYS
            if key.startswith(section + ".") and attr and "." not in attr and key.count(".") == 1]


def _copy(section):
    """A section to hand over (the recipe and the config never share one)."""
    return copy.deepcopy(section)


def to_config(recipe: CompressRecipe, source: str, out: str, data_dir: str | None):
    """The engine's :class:`~leukedge.compress.config.CompressConfig` of a recipe (``prune`` and
    ``qat`` are the recipe's own sections; ``quantize`` and ``checks`` are flat there)."""
    cfg = CompressConfig(source=source, out=out, data_dir=data_dir, gates=dataclasses.replace(recipe.gates),
                         prune=_copy(recipe.prune), qat=_copy(recipe.qat))
    for name, section in (("quantize", recipe.quantize), ("checks", recipe.checks)):
        for fname, attr in _section_fields(name):
            setattr(cfg, attr, _copy(getattr(section, fname)))
    cfg.variants = parse_variants(",".join(cfg.variants))
    recipe.heatmap.check()
    cfg.heatmap, cfg.heatmap_layer = recipe.heatmap.method, recipe.heatmap.layer
    recipe.screening.check()
    sc = recipe.screening
    cfg.tile_rule, cfg.magnification = sc.tile_rule, sc.magnification
    cfg.cell_diameter, cfg.scale_tolerance = sc.cell_diameter, sc.scale_tolerance
    cfg.ood_map, cfg.min_sharpness, cfg.rule_in, cfg.views = sc.ood_map, sc.min_sharpness, sc.rule_in, sc.views
    cfg.rule_out, cfg.min_scale, cfg.shrink = sc.rule_out, sc.min_scale, sc.shrink
    return cfg


def from_config(cfg) -> CompressRecipe:
    """The recipe of a CompressConfig (what :func:`to_config` inverts)."""
    sections = {"quantize": QuantizeConfig(), "checks": ChecksConfig()}
    for name, section in sections.items():
        for fname, attr in _section_fields(name):
            setattr(section, fname, _copy(getattr(cfg, attr)))
    return CompressRecipe(quantize=sections["quantize"], heatmap=HeatmapRecipe(cfg.heatmap, cfg.heatmap_layer),
                          screening=ScreeningRecipe(cfg.tile_rule, cfg.magnification, cfg.cell_diameter,
                                                    cfg.scale_tolerance, cfg.ood_map, cfg.min_sharpness, cfg.rule_in,
                                                    cfg.rule_out, cfg.views, cfg.min_scale, cfg.shrink),
                          prune=_copy(cfg.prune), qat=_copy(cfg.qat),
                          gates=dataclasses.replace(cfg.gates), checks=sections["checks"])


def validate(cfg) -> None:
    """Refuse a bad recipe before minutes of work (one-line errors)."""
    if cfg.qat is not None:
        cfg.qat_config()
    if cfg.clip_percentile not in (None, "auto"):
        cfg.clip_percentile = check_percentile(cfg.clip_percentile)
    if cfg.prune is not None:
        cfg.prune_config()


def resolve_data(recipe: CompressRecipe, data_arg: str | None) -> str | None:
    """The data folder: ``--data``, else the recipe's dataset found by name, else None (the run's)."""
    if data_arg:
        return str(data_arg)
    if recipe.data and recipe.data.name:
        found = find_dataset(recipe.data.name)
        if found is not None:
            return str(found)
        log.info("dataset '%s' of the recipe not found here: using the source's (pass --data DIR to choose)",
                 recipe.data.name)
    return None


def resolve_source(recipe: CompressRecipe, source_arg: str | None) -> str:
    """The source to compress: the positional argument, else the recipe's source found again by
    its path hint, ``runs/<name>`` or ``models/<name>`` with a matching sha256."""
    if source_arg:
        return str(source_arg)
    ref = recipe.source
    if ref is None or not ref.name:
        raise ConfigError("no source: name a training run or release", "leukedge compress RUN_OR_MODEL --out DIR")
    places = [ref.path] if ref.path else []
    places += [f"runs/{ref.name}", f"models/{ref.name}"]
    for place in places:
        f = Path(place) / ref.model_file
        if f.is_file() and (not ref.sha256 or sha256_file(f) == ref.sha256):
            return place
    raise ConfigError(f"the recipe's source {ref.kind} '{ref.name}' ({ref.model_file}, sha256 {ref.sha256[:12]}) "
                      "is not here", "pass it as RUN_OR_MODEL (a release folder re-derives int8 from its "
                      "float32 file: leukedge compress models/<name> --recipe R --out DIR)")
