"""Export files that never overwrite an earlier export and never leave a half-written file.

Names carry the local time (``leukedge-history-20261206-041000-123.csv``); the bytes are
written to a temporary file in the target folder, fsynced, then *linked* to the final
name, which fails instead of replacing an existing file (a counter is added then). A
failure (full disk, read-only folder) removes the temporary file and raises an
:class:`ExportError`; the records database is only read by an export, never written.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from leukedge.errors import LeukEdgeError

from ..records.clock import Stamp, file_stamp


class ExportError(LeukEdgeError):
    """An export that could not be written (nothing was changed)."""


def export_name(prefix: str, ext: str, stamp: Stamp | None = None) -> str:
    safe = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in prefix).strip("-") or "export"
    return f"{safe}-{file_stamp(stamp)}.{ext.lstrip('.')}"


def write_new(folder: str | os.PathLike, name: str, data: bytes) -> Path:
    """Write ``data`` as a new file ``folder/name`` (``name-2``... if taken); returns its path."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise ExportError(f"cannot write an export in {folder}: {exc.strerror or exc}",
                          "choose another folder, or free space on the device") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        stem, dot, ext = name.rpartition(".")
        for i in range(1, 1000):
            target = folder / (name if i == 1 else f"{stem}-{i}{dot}{ext}")
            try:
                os.link(tmp, target)  # never replaces an existing file
                return target
            except FileExistsError:
                continue
        raise ExportError(f"{folder}: too many exports named {name}", "choose another folder")
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise ExportError(f"cannot write the export {name} in {folder}: "
                          f"{'the disk is full' if full else exc.strerror or exc}",
                          "free space on the device and export again (nothing was changed)"
                          if full else "choose another folder (nothing was changed)") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
