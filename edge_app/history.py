"""Screening history (version 1 API): one row per screened image, on the records database.

This is the per-image API the app used before samples existed; it now sits on the same
SQLite file and connection as :class:`~leukedge.edge_app.records.RecordStore` (schema
version 2), and each row it adds is also recorded as a one-field sample there. New code
should use :mod:`leukedge.edge_app.records` (samples, fields, verdicts, audit trail).

WAL journal + ``synchronous=FULL``: each screening is inserted in one transaction, and
once :meth:`History.add` returns the record is on disk; killing the process at any
moment loses no committed record and never corrupts the file (SQLite's atomic commit).

Opening never takes the app down: a damaged file is moved aside (``.damaged-<time>``)
and a new one started, a read-only one is opened for reading, and when no database can
be opened at all (an uncreatable folder) the history is *unavailable*: ``problem`` says
why, reads return nothing and :meth:`add` raises a :class:`RecordsError`. ``notice`` is
the message for the user in each case. A score hidden by the quality or OOD gate is
never stored, listed or exported.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from leukedge.errors import ConfigError

from .exports.csv_safe import to_csv
from .exports.naming import export_name, write_new
from .records import schema
from .records.clock import Stamp
from .records.errors import UNAVAILABLE, RecordsError
from .records.recovery import open_records
from .records.wording import shown_probability

log = logging.getLogger(__name__)

SCHEMA_VERSION = schema.SCHEMA_VERSION
COLUMNS = ("id", "time_utc", "image_sha256", "image_path", "sample_id", "probability", "decision", "quality",
           "ood", "ood_score", "model_name", "model_version", "model_sha256", "threshold", "error", "signature")
_SCORED = ("positive", "negative")


def default_db_path() -> Path:
    """``$LEUKEDGE_DB``, else ``~/.local/share/leukedge/history.sqlite3`` (Kivy's user_data_dir on Android)."""
    env = os.environ.get("LEUKEDGE_DB")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "leukedge" / "history.sqlite3"


def now_utc() -> str:
    return Stamp.now().utc


def _masked(row: dict) -> dict:
    """A screenings row as shown: no probability unless the image was scored."""
    row["probability"] = shown_probability(row.get("decision"), row.get("probability"))
    return row


class History:
    """The screenings table.

    Args:
        path: database file (created with its folder when missing).
        synchronous: ``FULL`` (default: a commit survives a power cut) or ``NORMAL``
            (with WAL: survives an app crash/kill, may lose the last commits on power loss).
    """

    def __init__(self, path: str | os.PathLike, synchronous: str = "FULL"):
        if synchronous not in ("FULL", "NORMAL"):
            raise ConfigError(f"synchronous must be FULL or NORMAL, got {synchronous}")
        self.path = Path(path)
        res = open_records(self.path, synchronous=synchronous)
        self.store = res.store
        self.notice = res.notice or res.problem
        self.problem = res.problem
        self.moved_to = res.moved_to
        self.conn = self.store.conn if self.store is not None else None
        if self.notice:
            log.warning("%s", self.notice)

    @property
    def available(self) -> bool:
        return self.store is not None

    @property
    def read_only(self) -> bool:
        return self.store is not None and self.store.read_only

    # ----- writing ----------------------------------------------------------------------
    def add(self, screening=None, *, sample_id: str | None = None, image_path: str | None = None, **fields) -> int:
        """Insert one screening in one transaction; returns its id once committed.

        ``screening`` is an :class:`~leukedge.edge_app.inference.Screening` (or None, then
        ``fields`` give the columns directly). Raises :class:`RecordsError` (full disk,
        read-only, unavailable...) without losing any earlier record.
        """
        row = {}
        if screening is not None:
            row = {"image_sha256": screening.image_sha256, "image_path": image_path or screening.path,
                   "probability": screening.probability, "decision": screening.decision,
                   "quality": screening.quality, "ood": int(bool(screening.ood)), "ood_score": screening.ood_score,
                   "model_name": screening.model_name, "model_version": screening.model_version,
                   "model_sha256": screening.model_sha256, "threshold": screening.threshold,
                   "error": screening.error, "signature": getattr(screening, "signature", None)}
        row.update(fields)
        row["sample_id"] = (sample_id or row.get("sample_id") or None)
        row.setdefault("time_utc", now_utc())
        row.setdefault("model_name", "")
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ConfigError(f"unknown history columns {sorted(unknown)}")
        if "decision" in row and row["decision"] not in _SCORED:
            row["probability"] = None  # a score the gates hid is never stored
        if self.store is None:
            raise RecordsError(f"{self.path}: the history is unavailable: {self.problem}", kind=UNAVAILABLE)
        cols = sorted(row)
        sql = f"INSERT INTO screenings ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        with self.store._writing("save the screening"):
            rid = int(self.conn.execute(sql, [row[c] for c in cols]).lastrowid)
            schema.import_legacy(self.conn, row["time_utc"], screening_id=rid)
        return rid

    # ----- reading ----------------------------------------------------------------------
    def _rows(self, sql: str, args=()) -> list[dict]:
        if self.store is None:
            return []
        return [_masked(r) for r in self.store._rows(sql, args)]

    def list(self, limit: int = 100, offset: int = 0) -> list[dict]:
        """Newest first."""
        return self._rows("SELECT * FROM screenings ORDER BY id DESC LIMIT ? OFFSET ?", (int(limit), int(offset)))

    def get(self, record_id: int) -> dict | None:
        rows = self._rows("SELECT * FROM screenings WHERE id = ?", (int(record_id),))
        return rows[0] if rows else None

    def count(self) -> int:
        if self.store is None:
            return 0
        return int(self.store._rows("SELECT COUNT(*) AS n FROM screenings")[0]["n"])

    def csv_text(self) -> str:
        """All records as CSV (oldest first), formula-leading cells neutralised."""
        rows = self._rows("SELECT * FROM screenings ORDER BY id")
        return to_csv(COLUMNS, ([r.get(c) for c in COLUMNS] for r in rows))

    def export_csv(self, path: str | os.PathLike | None = None) -> str:
        """All records as CSV text; written atomically to ``path`` when given (see :meth:`export_new`)."""
        text = self.csv_text()
        if path is not None:
            from leukedge.fileio import atomic_write_text

            atomic_write_text(path, text)
        return text

    def export_new(self, folder: str | os.PathLike) -> Path:
        """Write the CSV as a new timestamped file in ``folder`` (never overwrites); returns its path.

        Raises :class:`~leukedge.edge_app.exports.naming.ExportError` (full disk...) with the
        database untouched.
        """
        return write_new(folder, export_name("leukedge-history", "csv"), self.csv_text().encode("utf-8"))

    def integrity_check(self) -> str:
        return self.store.integrity_check() if self.store is not None else "unavailable"

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
