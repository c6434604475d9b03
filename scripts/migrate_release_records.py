"""One-off migration of release folders made before recipes (2026-12-06).

For each release folder given: rewrite the absolute paths its JSON, Markdown and HTML records
carry into the portable forms ``leukedge compress`` now writes (files by name, images inside
the dataset, data as a dataset name + manifest sha256, runs as ``runs/<run>/best.h5``), and
write ``recipe.json`` reconstructed from ``compress.json``: what was actually done, with a
``note`` where the records cannot say. Model files are not touched.

    .venv/bin/python scripts/migrate_release_records.py models/*
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from leukedge.compress.config import CompressConfig
from leukedge.compress.recipe import DataRef, PruneRecipe, QATRecipe, SourceRef
from leukedge.compress.recipe_keys import from_config
from leukedge.fileio import atomic_write_json, atomic_write_text, sha256_file
from leukedge.portable import absolute_paths

#: Absolute prefixes seen in the committed records -> what they mean portably.
DATA_PREFIX = re.compile(r"^/work/shared/data/([^/]+)(?:/(.*))?$")
REPO_PREFIX = re.compile(r"^/work/main/(.*)$")
TMP_RELEASE = re.compile(r"^/tmp/[^/]+/([^/]+)(?:/(.*))?$")


def portable(value: str, key: str) -> str:
    """One absolute path string -> its portable form (``key`` is the JSON key it sits under)."""
    m = DATA_PREFIX.match(value)
    if m:
        dataset, rest = m.group(1), m.group(2)
        if rest is None:
            return dataset
        return rest if key == "path" else f"{dataset}/{rest}"  # per-image rows sit under a named dataset
    m = REPO_PREFIX.match(value)
    if m:
        rest = m.group(1)
        if key == "folder" and rest.startswith("models/"):
            return Path(rest).name  # the source release, by name
        return rest
    m = TMP_RELEASE.match(value)
    if m:
        return m.group(2) or m.group(1)  # a file of the staged release -> its name; the folder -> its name
    raise ValueError(f"no portable form known for {value!r}")


def rewrite(obj, key: str = ""):
    """``obj`` with every absolute path string made portable; ``{"dir": <data>}`` becomes ``{"name": ...}``."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "dir" and isinstance(v, str) and DATA_PREFIX.match(v):
                out["name"] = portable(v, k)
            else:
                out[k] = rewrite(v, k)
        return out
    if isinstance(obj, list):
        return [rewrite(v, key) for v in obj]
    if isinstance(obj, str) and obj.startswith(("/work/", "/tmp/")):
        return portable(obj, key)
    return obj


def rewrite_text(text: str) -> str:
    """The same rules in generated Markdown / HTML."""
    text = re.sub(r"/work/shared/data/([\w.-]+)", r"\1", text)
    return re.sub(r"/work/main/", "", text)


def reconstruct_recipe(folder: Path, record: dict) -> dict:
    """The recipe a release's files were made with, from its ``compress.json`` (already portable)."""
    cfg = CompressConfig.from_record(record["config"])
    recipe = from_config(cfg)
    notes = []
    made_from = (record.get("source_release") or {}).get("made_from")
    f32 = (record.get("source_release") or {}).get("float32_file")
    recipe.source = SourceRef(
        kind="release", name=folder.name, model_file=f32, sha256=sha256_file(folder / f32), path=f"models/{folder.name}",
        made_from={"file": made_from} if made_from else None,
        note=("re-made from this release's own float32 file (the same bytes it ships); that file was exported from "
              "the training run in made_from, which is not in the repository"))
    split = folder / "split.csv"
    recipe.data = DataRef(name=(record.get("data") or {}).get("name", "aria-all"), manifest="split.csv",
                          manifest_sha256=sha256_file(split))
    qat = record.get("qat")
    if qat and qat.get("config"):
        q = qat["config"]
        recipe.qat = QATRecipe(epochs=q["epochs"], lr=q["learning_rate"], batch_size=q["batch_size"],
                               max_images=(cfg.qat or QATRecipe()).max_images,
                               feature_distill=q.get("feature_distill", 0.0),
                               cam_distill=q.get("cam_distill", 0.0), logit_distill=q.get("logit_distill", 0.0),
                               select_every=q.get("select_every", 0))
        recipe.quantize.per_tensor = bool(q.get("per_tensor", cfg.per_tensor))
    if record.get("int8_from_source"):
        recipe.quantize.keep_int8 = False
        notes.append(f"the int8 file (sha256 {record['int8_from_source']['sha256'][:12]}) was made by an earlier "
                     "compress run of this release and carried over (keep_int8); this recipe's qat section is that "
                     "run's, from the 'qat' record")
    pruning = record.get("pruning")
    if pruning and pruning.get("config"):
        p = pruning["config"]
        recipe.prune = PruneRecipe(sparsity=p["target_sparsity"], epochs=p["epochs"], batch_size=p["batch_size"],
                                   lr=p["learning_rate"], max_images=(cfg.prune or PruneRecipe()).max_images,
                                   distill=p["distill"],
                                   min_weights=p["min_weights"], feature_distill=p.get("feature_distill", 0.0),
                                   cam_distill=p.get("cam_distill", 0.0), logit_distill=p.get("logit_distill", 0.0),
                                   block=p.get("block", 1), clusters=p.get("clusters", 0),
                                   cluster_epochs=p.get("cluster_epochs", 4), cluster_lr=p.get("cluster_lr", 1e-5),
                                   select_every=p.get("select_every", 0))
    if record.get("pruned_int8_from_source"):
        notes.append(f"the pruned int8 file (sha256 {record['pruned_int8_from_source']['sha256'][:12]}) was made by "
                     "an earlier compress run and carried over (the last run's config says prune: null); the prune "
                     "section is that file's 'pruning' record")
    if record.get("float32_reexported"):
        old = record["float32_reexported"]["old_sha256"]
        notes.append(f"the float32 file was re-exported from the Keras model recovered from an older float32 file "
                     f"(sha256 {old[:12]}) by an earlier run; the source above is the re-exported file")
    if not record.get("passed", True):
        notes.append("the int8 gates did not all pass when it was made")
    notes.append("training: not recorded (the training run is not in the repository; history.csv has its curves)")
    notes.append("reconstructed on 2026-12-06 from compress.json (the release predates recipe.json); running it "
                 "again makes every file in one compress run")
    recipe.note = "; ".join(notes)
    return recipe.to_dict()


def migrate(folder: Path) -> list[str]:
    changed = []
    for f in sorted(folder.rglob("*.json")):
        if f.name == "recipe.json":
            continue
        d = json.loads(f.read_text())
        new = rewrite(_compress_record(d, folder) if f.name == "compress.json" else d)
        if new != d:
            atomic_write_json(f, new)
            changed.append(str(f))
    for f in sorted([*folder.glob("*.md"), *folder.glob("*.html")]):
        t = f.read_text()
        if rewrite_text(t) != t:
            atomic_write_text(f, rewrite_text(t))
            changed.append(str(f))
    record = json.loads((folder / "compress.json").read_text())
    atomic_write_json(folder / "recipe.json", reconstruct_recipe(folder, record))
    changed.append(str(folder / "recipe.json"))
    left = [(str(f), w, v) for f in folder.rglob("*.json") for w, v in absolute_paths(json.loads(f.read_text()))]
    if left:
        raise SystemExit(f"absolute paths left: {left[:3]}")
    return changed


def _compress_record(d: dict, folder: Path) -> dict:
    """compress.json's top-level ``data_dir`` becomes ``data`` (name + manifest sha256), as new releases write it."""
    out = {}
    for k, v in d.items():
        if k == "data_dir" and isinstance(v, str):
            out["data"] = {"name": portable(v, k), "manifest": "split.csv",
                           "manifest_sha256": sha256_file(folder / "split.csv")}
        else:
            out[k] = v
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    args = ap.parse_args(argv)
    for folder in args.folders:
        if not (folder / "compress.json").exists():
            continue
        for f in migrate(folder):
            print(f"rewrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
