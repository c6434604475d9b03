"""Read a folder of class subfolders into records, and the tasks defined on it."""
from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

log = logging.getLogger(__name__)

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

    Entries that look like images but cannot be read as files (broken symbolic links, FIFOs,
    devices, sockets, folders named ``x.jpg``) are left out and logged as a warning, never
    silently: :func:`scan_folder` returns them.

    Args:
        data_dir: folder with one subfolder per class.
        classes: only these classes (all subfolders when None).

    Raises:
        DataError: the folder is missing or empty, or a class has no images.
    """
    records, skipped = scan_folder(data_dir, classes)
    if skipped:
        shown = "; ".join(f"{s['path']} ({s['reason']})" for s in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        log.warning("%s: %d entr%s skipped, not regular image files: %s%s", data_dir, len(skipped),
                    "y" if len(skipped) == 1 else "ies", shown, more)
    return records


def _not_a_file_reason(path: Path) -> str | None:
    """Why ``path`` is not a readable regular file (None when it is one)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"broken symbolic link to {os.readlink(path)}" if os.path.islink(path) else "vanished"
    except OSError as exc:
        return f"cannot stat ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder with an image name"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def scan_folder(data_dir: str | os.PathLike, classes: list[str] | None = None) -> tuple[list[Record], list[dict]]:
    """:func:`scan`, also returning the skipped entries ``[{"path": relpath, "reason": ...}]``.

    Raises:
        DataError: the folder is missing or empty, or a class has no images.
    """
    root = Path(data_dir)
    if not root.exists():
        if os.path.islink(root):
            raise DataError(f"{root}: broken symbolic link (points to {os.readlink(root)})", "pass an existing folder")
        raise DataError(f"{root}: no such folder", "pass a folder with one subfolder per class (e.g. Benign/ Early/ Pre/ Pro/)")
    if not root.is_dir():
        raise DataError(f"{root}: is not a folder", "pass a folder with one subfolder per class")
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise DataError(f"{root}: cannot list the folder ({exc.strerror or exc})", "check its permissions") from None
    skipped: list[dict] = []
    for p in entries:  # a class folder that is a broken link is reported, not ignored
        if p.is_symlink() and not p.exists():
            skipped.append({"path": p.name, "reason": f"broken symbolic link to {os.readlink(p)}"})
    subdirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
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
        files = []
        try:
            candidates = sorted(p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                                and not p.name.startswith("."))
        except OSError as exc:
            raise DataError(f"{sub}: cannot list the folder ({exc.strerror or exc})", "check its permissions") from None
        for p in candidates:
            reason = _not_a_file_reason(p)
            if reason is None:
                files.append(p)
            else:
                skipped.append({"path": p.relative_to(root).as_posix(), "reason": reason})
        if not files:
            bad = [s["path"] for s in skipped if s["path"].startswith(sub.name + "/")]
            raise DataError(f"{sub}: class '{sub.name}' has no images" + (f" (skipped {len(bad)} entries that are not "
                            f"regular files, first: {bad[0]})" if bad else ""),
                            f"add images ({', '.join(sorted(IMAGE_EXTENSIONS))}) or remove the folder")
        for f in files:
            records.append(Record(f.relative_to(root).as_posix(), sub.name, str(f.resolve())))
    return records, skipped


def class_counts(records: list[Record]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        out[r.cls] = out.get(r.cls, 0) + 1
    return dict(sorted(out.items()))
