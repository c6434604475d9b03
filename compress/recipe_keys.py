"""The one table between a :class:`~leukedge.compress.recipe.CompressRecipe`, the engine's flat
:class:`~leukedge.compress.pipeline.CompressConfig` and the flags ``leukedge compress`` had
before recipes (kept for ``docs/compression-recipe.md`` and a one-line "moved" error)."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from leukedge.errors import ConfigError
from leukedge.fileio import sha256_file
from leukedge.portable import find_dataset

from .config import CompressConfig
from .quantization import parse_variants
from .ranges import check_percentile
from .recipe import ChecksConfig, CompressRecipe, PruneRecipe, QATRecipe, QuantizeConfig

log = logging.getLogger(__name__)

#: (old flag, recipe key, CompressConfig attribute, value the old flag set when it took none).
KEYS: list[tuple[str, str, str | None, object]] = [
    ("--variants", "quantize.variants", "variants", None),
    ("--calib", "quantize.calib", "calib", None),
    ("--per-tensor", "quantize.per_tensor", "per_tensor", True),
    ("--clip-percentile", "quantize.clip_percentile", "clip_percentile", None),
    ("--clip-images", "quantize.clip_images", "clip_images", None),
    ("--bn-depthwise", "quantize.bn_depthwise", "bn_depthwise", True),
    ("--no-selective", "quantize.selective", "selective", False),
    ("--keep-int8", "quantize.keep_int8", "keep_int8", True),
    ("--reexport-float32", "quantize.reexport_float32", "reexport_float32", True),
    ("--prune", "prune.sparsity", "prune", 0.5),
    ("--prune-epochs", "prune.epochs", "prune_epochs", None),
    ("--prune-batch-size", "prune.batch_size", "prune_batch_size", None),
    ("--prune-lr", "prune.lr", "prune_lr", None),
    ("--prune-max-images", "prune.max_images", "prune_max_images", None),
    ("--prune-labels", "prune.distill", "prune_distill", False),
    ("--prune-min-weights", "prune.min_weights", "prune_min_weights", None),
    ("--prune-feature-distill", "prune.feature_distill", "prune_feature_distill", None),
    ("--prune-cam-distill", "prune.cam_distill", "prune_cam_distill", None),
    ("--prune-logit-distill", "prune.logit_distill", "prune_logit_distill", None),
    ("--prune-block", "prune.block", "prune_block", None),
    ("--prune-clusters", "prune.clusters", "prune_clusters", None),
    ("--prune-cluster-epochs", "prune.cluster_epochs", "prune_cluster_epochs", None),
    ("--prune-cluster-lr", "prune.cluster_lr", "prune_cluster_lr", None),
    ("--prune-select-every", "prune.select_every", "prune_select_every", None),
    ("--qat", "qat", "qat", True),
    ("--qat-epochs", "qat.epochs", "qat_epochs", None),
    ("--qat-lr", "qat.lr", "qat_lr", None),
    ("--qat-batch-size", "qat.batch_size", "qat_batch_size", None),
    ("--qat-max-images", "qat.max_images", "qat_max_images", None),
    ("--qat-feature-distill", "qat.feature_distill", "qat_feature_distill", None),
    ("--qat-cam-distill", "qat.cam_distill", "qat_cam_distill", None),
    ("--qat-logit-distill", "qat.logit_distill", "qat_logit_distill", None),
    ("--qat-select-every", "qat.select_every", "qat_select_every", None),
    ("--no-parity", "checks.parity", "parity", False),
    ("--no-keras-check", "checks.keras_check", "keras_check", False),
    ("--n-boot", "checks.n_boot", "n_boot", None),
    ("--ood-check", "checks.ood_dirs", "ood_check_dirs", None),
    ("--gate NAME=V", "gates.NAME", "gates", None),
    ("--data", "data.name", "data_dir", None),
    ("RUN_OR_MODEL", "source", "source", None),
]

#: Flags that are now recipe keys only (not shortcuts of ``compress --help``).
MOVED = {flag: key for flag, key, _, _ in KEYS if flag.startswith("--") and flag not in
         ("--variants", "--calib", "--per-tensor", "--clip-percentile", "--prune", "--qat", "--no-parity",
          "--n-boot", "--gate NAME=V", "--data")}


def _section_fields(section: str) -> list[tuple[str, str]]:
    """(recipe field, CompressConfig attribute) of one section."""
    return [(key.split(".", 1)[1], attr) for _, key, attr, _ in KEYS
            if key.startswith(section + ".") and attr and key.count(".") == 1 and not key.startswith("gates.")]


def to_config(recipe: CompressRecipe, source: str, out: str, data_dir: str | None):
    """The engine's flat :class:`~leukedge.compress.pipeline.CompressConfig` of a recipe."""
    cfg = CompressConfig(source=source, out=out, data_dir=data_dir, gates=dataclasses.replace(recipe.gates))
    for name, section in (("quantize", recipe.quantize), ("checks", recipe.checks),
                          ("prune", recipe.prune), ("qat", recipe.qat)):
        if section is None:
            continue
        for fname, attr in _section_fields(name):
            value = getattr(section, fname)
            setattr(cfg, attr, list(value) if isinstance(value, list) else value)
    cfg.variants = parse_variants(",".join(cfg.variants))
    cfg.prune = recipe.prune.sparsity if recipe.prune else None
    cfg.qat = recipe.qat is not None
    return cfg


def from_config(cfg) -> CompressRecipe:
    """The recipe of a flat CompressConfig (what :func:`to_config` inverts)."""
    sections = {"quantize": QuantizeConfig(), "checks": ChecksConfig(),
                "prune": PruneRecipe() if cfg.prune else None, "qat": QATRecipe() if cfg.qat else None}
    for name, section in sections.items():
        if section is None:
            continue
        for fname, attr in _section_fields(name):
            value = getattr(cfg, attr)
            setattr(section, fname, list(value) if isinstance(value, list) else value)
    if sections["prune"] is not None:
        sections["prune"].sparsity = float(cfg.prune)
    return CompressRecipe(quantize=sections["quantize"], prune=sections["prune"], qat=sections["qat"],
                          gates=dataclasses.replace(cfg.gates), checks=sections["checks"])


def validate(cfg) -> None:
    """Refuse a bad recipe before minutes of work (one-line errors)."""
    if cfg.qat:
        cfg.qat_config()
    if cfg.clip_percentile not in (None, "auto"):
        cfg.clip_percentile = check_percentile(cfg.clip_percentile)
    if cfg.prune is not None:
        cfg.prune_config()


def moved_error(flag: str) -> ConfigError:
    """The one-line error for a flag that became a recipe key."""
    key = MOVED[flag]
    example = "true" if flag in ("--per-tensor", "--bn-depthwise", "--keep-int8", "--reexport-float32") else \
        "false" if flag in ("--no-selective", "--no-keras-check", "--prune-labels") else "VALUE"
    return ConfigError(f"{flag} is now the recipe key {key}", f"use --set {key}={example} "
                                                              "(see docs/compression-recipe.md)")


def markdown_table() -> str:
    """The old flag -> recipe key table of ``docs/compression-recipe.md``."""
    lines = ["| old flag | recipe key | shortcut kept in `compress --help` |", "|---|---|---|"]
    for flag, key, _, const in KEYS:
        if flag == "RUN_OR_MODEL":
            continue
        value = "" if const is None else f" = `{json.dumps(const) if not isinstance(const, bool) else str(const).lower()}`"
        shortcut = "no (use `--set`)" if flag in MOVED else "yes"
        lines.append(f"| `{flag}` | `{key}`{value} | {shortcut} |")
    return "\n".join(lines)


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
                      "is not here", "pass it as RUN_OR_MODEL")
