"""Read a folder of class subfolders into records, and the tasks defined on it."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
#: Tried in order when the user names no data folder (relative to the working directory).
DEFAULT_DATA_DIRS = ("../shared/data/aria-all",)
_NUMBER = re.compile(r"(\d+)(?!.*\d)")


@dataclass(frozen=True)
class Record:
    """One image of a dataset.

    Attributes:
        relpath: path relative to the data folder, POSIX separators (``Benign/x.jpg``).
        cls: the class (its subfolder name).
        path: absolute path.
    """

    relpath: str
    cls: str
    path: str

    @property
    def number(self) -> int | None:
        """The last number in the file name (capture order), or None."""
        m = _NUMBER.search(Path(self.relpath).stem)
        return int(m.group(1)) if m else None


def default_data_dir() -> Path:
    """The data folder to use when none is named: ``$LEUKEDGE_DATA`` or ``../shared/data/aria-all``."""
    env = os.environ.get("LEUKEDGE_DATA")
    if env:
        return Path(env)
    for cand in DEFAULT_DATA_DIRS:
        if Path(cand).is_dir():
            return Path(cand).resolve()
    raise DataError("no data folder given and ../shared/data/aria-all does not exist",
                    "pass --data DIR (a folder with one subfolder per class) or set LEUKEDGE_DATA")


def resolve_data_dir(path: str | os.PathLike | None) -> Path:
    return default_data_dir() if path in (None, "") else Path(path)


def scan(data_dir: str | os.PathLike, classes: list[str] | None = None) -> list[Record]:
    """List the images of a folder of class subfolders.

    Args:
        data_dir: folder with one subfolder per class.
        classes: only these classes (all subfolders when None).

    Raises:
        DataError: the folder is missing or empty, or a class has no images.
    """
    root = Path(data_dir)
    if not root.exists():
        raise DataError(f"{root}: no such folder", "pass a folder with one subfolder per class (e.g. Benign/ Early/ Pre/ Pro/)")
    if not root.is_dir():
        raise DataError(f"{root}: is a file, not a folder", "pass a folder with one subfolder per class")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise DataError(f"{root}: has no class subfolders", "put the images in one subfolder per class (e.g. Benign/ Early/ Pre/ Pro/)")
    if classes:
        names = {p.name for p in subdirs}
        missing = [c for c in classes if c not in names]
        if missing:
            raise DataError(f"{root}: missing class folder(s) {missing}", f"found {sorted(names)}")
        subdirs = [p for p in subdirs if p.name in classes]
    records: list[Record] = []
    for sub in subdirs:
        files = sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                       and not p.name.startswith("."))
        if not files:
            raise DataError(f"{sub}: class '{sub.name}' has no images",
                            f"add images ({', '.join(sorted(IMAGE_EXTENSIONS))}) or remove the folder")
        for f in files:
            records.append(Record(f.relative_to(root).as_posix(), sub.name, str(f.resolve())))
    return records


def class_counts(records: list[Record]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        out[r.cls] = out.get(r.cls, 0) + 1
    return dict(sorted(out.items()))
