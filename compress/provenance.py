"""Where a release came from, recorded portably (``recipe.json``'s ``source`` and ``data``,
``compress.json``'s ``source``): names and sha256 sums instead of one machine's paths."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from leukedge.fileio import sha256_file
from leukedge.portable import data_record, is_absolute, portable_dir, portable_record

from .recipe import CompressRecipe, DataRef, SourceRef


def _under_cwd(path) -> str | None:
    """``path`` relative to the working directory (POSIX) when inside it, else None."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return None


def portable_file(path) -> str:
    """A model file as a record names it: as given when relative, relative to the working
    directory when inside it (``runs/<run>/best.h5``), else ``<folder name>/<file name>``."""
    text = str(path)
    if not is_absolute(text):
        return Path(text).as_posix()
    return _under_cwd(text) or f"{Path(text).parent.name}/{Path(text).name}"


def source_ref(src, out, made_from: str | None = None) -> SourceRef:
    """The :class:`SourceRef` of a resolved compress source (``pipeline.Source``)."""
    kind = "release" if src.is_release else "run"
    ref = SourceRef(kind=kind, name=src.folder.name, model_file=src.model_file.name,
                    sha256=sha256_file(src.model_file), path=_under_cwd(src.folder))
    if src.is_release:
        ref.made_from = {"file": portable_file(made_from)} if made_from else None
        if src.folder.name == Path(out).name:
            ref.note = ("re-made from this release's own earlier float32 file (same name; its sha256 is "
                        "above and, unless quantize.reexport_float32, the new float32 file is the same bytes); "
                        "made_from names the training run that file was exported from")
    return ref


def resolved(recipe: CompressRecipe, src, out, data_dir, made_from: str | None = None) -> CompressRecipe:
    """The recipe as it ran: its source and data named by what was actually used."""
    done = dataclasses.replace(recipe)
    done.source = source_ref(src, out, made_from)
    rec = data_record(data_dir, src.split_csv) if src.split_csv else data_record(data_dir)
    done.data = DataRef(name=rec["name"], manifest=rec.get("manifest", "split.csv"),
                        manifest_sha256=rec.get("manifest_sha256", ""))
    done.checks = dataclasses.replace(recipe.checks, ood_dirs=[portable_dir(d) for d in recipe.checks.ood_dirs])
    done.training = training_record(src) or recipe.training
    return done


def training_record(src) -> dict | None:
    """How the source's float model was trained: a run's ``config.json`` (data as its dataset's
    name, other paths portable), or what a source release's own recipe.json says."""
    if src.is_release:
        try:
            return json.loads((src.folder / "recipe.json").read_text()).get("training")
        except (OSError, ValueError):
            return None
    if not src.config:
        return None
    cfg = dict(src.config)
    if cfg.get("data_dir"):
        cfg["data_dir"] = Path(cfg["data_dir"]).name
    return portable_record(cfg, src.folder)
