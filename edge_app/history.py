"""Screening history: a local SQLite database that survives the app being killed.

WAL journal + ``synchronous=FULL``: each screening is inserted in one transaction, and
once :meth:`History.add` returns the record is on disk; killing the process at any
moment loses no committed record and never corrupts the file (SQLite's atomic commit).
One connection guarded by a lock, so the worker thread and the UI thread can both use it.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

from leukedge.errors import ConfigError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
COLUMNS = ("id", "time_utc", "image_sha256", "image_path", "sample_id", "probability", "decision", "quality",
           "ood", "ood_score", "model_name", "model_version", "model_sha256", "threshold", "error")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS screenings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_utc TEXT NOT NULL,
    image_sha256 TEXT,
    image_path TEXT,
    sample_id TEXT,
    probability REAL,
    decision TEXT,
    quality TEXT,
    ood INTEGER NOT NULL DEFAULT 0,
    ood_score REAL,
    model_name TEXT NOT NULL,
    model_version TEXT,
    model_sha256 TEXT,
    threshold REAL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS screenings_time ON screenings(time_utc);
"""


def default_db_path() -> Path:
    """``$LEUKEDGE_DB``, else ``~/.local/share/leukedge/history.sqlite3`` (Kivy's user_data_dir on Android)."""
    env = os.environ.get("LEUKEDGE_DB")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "leukedge" / "history.sqlite3"


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=10, check_same_thread=False, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={synchronous}")
            self.conn.execute("PRAGMA foreign_keys=ON")
            with self._tx():
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        self.conn.execute(stmt)
                self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path}: cannot open the history database ({exc})",
                              "move the file away; a new one will be created") from None

    # ----- transactions -----------------------------------------------------------------
    def _tx(self):
        history = self

        class _Tx:
            def __enter__(self_inner):
                history._lock.acquire()
                history.conn.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, exc, tb):
                try:
                    history.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
                finally:
                    history._lock.release()
                return False

        return _Tx()

    # ----- writing ----------------------------------------------------------------------
    def add(self, screening=None, *, sample_id: str | None = None, image_path: str | None = None, **fields) -> int:
        """Insert one screening in one transaction; returns its id once committed.

        ``screening`` is an :class:`~leukedge.edge_app.inference.Screening` (or None, then
        ``fields`` give the columns directly).
        """
        row = {}
        if screening is not None:
            row = {"image_sha256": screening.image_sha256, "image_path": image_path or screening.path,
                   "probability": screening.probability, "decision": screening.decision,
                   "quality": screening.quality, "ood": int(bool(screening.ood)), "ood_score": screening.ood_score,
                   "model_name": screening.model_name, "model_version": screening.model_version,
                   "model_sha256": screening.model_sha256, "threshold": screening.threshold,
                   "error": screening.error}
        row.update(fields)
        row["sample_id"] = (sample_id or row.get("sample_id") or None)
        row.setdefault("time_utc", now_utc())
        row.setdefault("model_name", "")
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ConfigError(f"unknown history columns {sorted(unknown)}")
        cols = sorted(row)
        sql = f"INSERT INTO screenings ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        with self._tx():
            cur = self.conn.execute(sql, [row[c] for c in cols])
            return int(cur.lastrowid)

    # ----- reading ----------------------------------------------------------------------
    def _rows(self, sql: str, args=()) -> list[dict]:
        with self._lock:
            cur = self.conn.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def list(self, limit: int = 100, offset: int = 0) -> list[dict]:
        """Newest first."""
        return self._rows("SELECT * FROM screenings ORDER BY id DESC LIMIT ? OFFSET ?", (int(limit), int(offset)))

    def get(self, record_id: int) -> dict | None:
        rows = self._rows("SELECT * FROM screenings WHERE id = ?", (int(record_id),))
        return rows[0] if rows else None

    def count(self) -> int:
        return int(self._rows("SELECT COUNT(*) AS n FROM screenings")[0]["n"])

    def export_csv(self, path: str | os.PathLike | None = None) -> str:
        """All records as CSV (oldest first); written atomically to ``path`` when given."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
        w.writeheader()
        for r in self._rows("SELECT * FROM screenings ORDER BY id"):
            w.writerow({c: r.get(c) for c in COLUMNS})
        text = buf.getvalue()
        if path is not None:
            from leukedge.fileio import atomic_write_text

            atomic_write_text(path, text)
        return text

    def integrity_check(self) -> str:
        with self._lock:
            return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self.conn.close()
