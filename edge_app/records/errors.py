"""What can go wrong with the records database, as errors a health worker can act on."""
from __future__ import annotations

import sqlite3

from leukedge.errors import LeukEdgeError

#: Problem kinds (``RecordsError.kind``).
FULL, READ_ONLY, CORRUPT, UNAVAILABLE, MISSING, APPEND_ONLY = (
    "full", "read-only", "corrupt", "unavailable", "missing", "append-only")

HINTS = {
    FULL: "free space on the device (old exports, other apps' files, or a shorter image retention in Settings), "
          "then save again; nothing already saved was lost",
    READ_ONLY: "past records can still be read; make the file and its folder writable, or choose another "
               "history folder, to save new results",
    CORRUPT: "move the damaged file aside and start a new database (nothing is deleted)",
    UNAVAILABLE: "choose another history folder (leukedge app --db PATH, or Settings); screening still works "
                 "but results are not saved",
    MISSING: "reopen the history: a new database is started; records saved before it disappeared are in the "
             "removed file if it can be restored",
}


class RecordsError(LeukEdgeError):
    """A records database problem: ``kind`` is one of full, read-only, corrupt, unavailable, missing."""

    def __init__(self, message: str, hint: str | None = None, kind: str = UNAVAILABLE):
        self.kind = kind
        super().__init__(message, hint if hint is not None else HINTS.get(kind))


def classify(exc: BaseException) -> str:
    """The problem kind of an sqlite3 / OS error."""
    if isinstance(exc, OSError):
        import errno

        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return FULL
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return READ_ONLY
        return UNAVAILABLE
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    text = str(exc).lower()
    if name == "SQLITE_FULL" or "disk is full" in text:
        return FULL
    if name.startswith("SQLITE_READONLY") or "readonly" in text or "read-only" in text:
        return READ_ONLY
    if name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB" or "malformed" in text \
            or "not a database" in text:
        return CORRUPT
    if "append-only" in text:
        return APPEND_ONLY
    return UNAVAILABLE


def wrap(exc: BaseException, path, doing: str) -> RecordsError:
    """A :class:`RecordsError` saying what failed while ``doing`` on the database at ``path``."""
    kind = classify(exc)
    what = {FULL: "the disk is full", READ_ONLY: "the database is read-only", CORRUPT: "the database file is damaged",
            APPEND_ONLY: "records are append-only (void or correct them with a reason instead)"}.get(kind, str(exc))
    return RecordsError(f"{path}: cannot {doing}: {what} ({exc})" if what != str(exc)
                        else f"{path}: cannot {doing}: {exc}", kind=kind)


def is_db_error(exc: BaseException) -> bool:
    return isinstance(exc, (sqlite3.Error, OSError))
