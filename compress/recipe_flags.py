"""The flags ``leukedge compress`` had before recipes and the recipe key each became (no heavy
imports: the CLI reads it when it builds its parser)."""
from __future__ import annotations

import json

from leukedge.errors import ConfigError

#: (old flag, recipe key, CompressConfig attribute (dotted: inside its ``prune`` / ``qat`` section, the
#: recipe's own), value the old flag set when it took none).
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
    ("--prune", "prune.sparsity", "prune.sparsity", 0.5),
    ("--prune-epochs", "prune.epochs", "prune.epochs", None),
    ("--prune-batch-size", "prune.batch_size", "prune.batch_size", None),
    ("--prune-lr", "prune.lr", "prune.lr", None),
    ("--prune-max-images", "prune.max_images", "prune.max_images", None),
    ("--prune-labels", "prune.distill", "prune.distill", False),
    ("--prune-min-weights", "prune.min_weights", "prune.min_weights", None),
    ("--prune-feature-distill", "prune.feature_distill", "prune.feature_distill", None),
    ("--prune-cam-distill", "prune.cam_distill", "prune.cam_distill", None),
    ("--prune-logit-distill", "prune.logit_distill", "prune.logit_distill", None),
    ("--prune-block", "prune.block", "prune.block", None),
    ("--prune-clusters", "prune.clusters", "prune.clusters", None),
    ("--prune-cluster-epochs", "prune.cluster_epochs", "prune.cluster_epochs", None),
    ("--prune-cluster-lr", "prune.cluster_lr", "prune.cluster_lr", None),
    ("--prune-select-every", "prune.select_every", "prune.select_every", None),
    ("--qat", "qat", "qat", True),
    ("--qat-epochs", "qat.epochs", "qat.epochs", None),
    ("--qat-lr", "qat.lr", "qat.lr", None),
    ("--qat-batch-size", "qat.batch_size", "qat.batch_size", None),
    ("--qat-max-images", "qat.max_images", "qat.max_images", None),
    ("--qat-feature-distill", "qat.feature_distill", "qat.feature_distill", None),
    ("--qat-cam-distill", "qat.cam_distill", "qat.cam_distill", None),
    ("--qat-logit-distill", "qat.logit_distill", "qat.logit_distill", None),
    ("--qat-select-every", "qat.select_every", "qat.select_every", None),
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
         ("--variants", "--calib", "--clip-percentile", "--prune", "--qat", "--no-parity",
          "--n-boot", "--gate NAME=V", "--data")}


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
