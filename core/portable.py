"""Portable references in release records: no machine's absolute path in a file that travels.

A release folder is copied between machines, so what it records must mean the same thing
everywhere: files inside the release by their path relative to it, data by the dataset's
name plus the sha256 of its split manifest, images by their path inside the dataset
(``Benign/x.jpg``), and what a release was made from by a name plus a sha256.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from .data import DEFAULT_DATA_DIRS

#: Folders (relative to the working directory) searched for a dataset named in a record.
DATA_ROOTS = tuple(str(Path(d).parent) for d in DEFAULT_DATA_DIRS) + ("data",)


def is_absolute(text: str) -> bool:
    """True for a POSIX or Windows absolute path (``/work/x``, ``C:\\x``), False for anything else."""
    return PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute()


def relative_to(path, base) -> str:
    """``path`` relative to ``base`` (POSIX separators) when it is inside ``base``, else its file name."""
    p, b = Path(path).resolve(), Path(base).resolve()
    try:
        return p.relative_to(b).as_posix()
    except ValueError:
        return p.name


def portable_dir(path) -> str:
    """A folder as a record should name it: a relative path stays as given, an absolute one
    becomes relative to the working directory when inside it, else just its name."""
    text = str(path)
    if not is_absolute(text):
        return Path(text).as_posix()
    p = Path(text).resolve()
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.name


def image_ref(path, data_dir) -> str:
    """An image as ``<class>/<file>`` inside its dataset (its name when outside the dataset)."""
    return relative_to(path, data_dir)


def data_record(data_dir, manifest=None, manifest_sha256: str | None = None) -> dict:
    """``{"name": <dataset folder name>, "manifest": <file name>, "manifest_sha256": ...}``."""
    from .fileio import sha256_file

    out = {"name": Path(data_dir).resolve().name}
    if manifest is not None:
        out["manifest"] = Path(manifest).name
        out["manifest_sha256"] = manifest_sha256 or sha256_file(manifest)
    return out


def find_dataset(name_or_path: str | None) -> Path | None:
    """The local folder of a dataset named in a record: the path itself when it exists, else
    ``$LEUKEDGE_DATA`` when its name matches, else ``<root>/<name>`` for :data:`DATA_ROOTS`."""
    if not name_or_path:
        return None
    direct = Path(name_or_path)
    if direct.is_dir():
        return direct.resolve()
    name = direct.name
    env = os.environ.get("LEUKEDGE_DATA")
    if env and Path(env).name == name and Path(env).is_dir():
        return Path(env).resolve()
    for root in DATA_ROOTS:
        cand = Path(root) / name
        if cand.is_dir():
            return cand.resolve()
    return None


def absolute_paths(obj, where: str = "") -> list[tuple[str, str]]:
    """Every string in a JSON-like object that is an absolute path, as ``(key path, value)``."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            found += absolute_paths(v, f"{where}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += absolute_paths(v, f"{where}[{i}]")
    elif isinstance(obj, str) and is_absolute(obj):
        found.append((where, obj))
    return found


def portable_record(obj, folder):
    """``obj`` (JSON-like) with every absolute path made portable: inside ``folder`` relative to
    it (``.`` for the folder itself), elsewhere ``<parent name>/<name>`` (an image as
    ``Benign/x.jpg``, a model file as ``<release>/<file>``)."""
    if isinstance(obj, dict):
        return {portable_record(k, folder): portable_record(v, folder) for k, v in obj.items()}  # keys too
    if isinstance(obj, list):
        return [portable_record(v, folder) for v in obj]
    if isinstance(obj, str) and is_absolute(obj):
        p, base = Path(obj).resolve(), Path(folder).resolve()
        try:
            return p.relative_to(base).as_posix() or "."
        except ValueError:
            return f"{p.parent.name}/{p.name}"
    return obj
