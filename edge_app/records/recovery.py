"""Opening the records database whatever state it is in, without deleting anything.

:func:`open_records` never raises for a database problem: it returns an
:class:`OpenResult` with the store (or None), a message for the user and what was done.

- missing file: a new database is created (and the message says so);
- damaged file (page corruption, not a database): the file and its ``-wal``/``-shm`` are
  moved aside as ``<name>.damaged-<time>`` (never deleted), a new database is started,
  and every row still readable from the damaged copy is copied into it;
- read-only file, folder or storage: opened read-only, past records readable, writes
  refused with a clear error;
- a folder that cannot be created: no store; screening works, results are not saved.
"""
from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from . import schema
from .clock import Stamp, file_stamp
from .errors import CORRUPT, READ_ONLY, UNAVAILABLE, RecordsError, classify
from .store import RecordStore
from .verdict import VerdictRule

log = logging.getLogger(__name__)

#: Tables copied from a damaged database, in an order that keeps references valid.
SALVAGE_TABLES = ("screenings", "samples", "fields", "events")
#: Rows looked up one by one past the last readable one when a table scan fails.
SALVAGE_SCAN = 20000


@dataclass
class OpenResult:
    """What :func:`open_records` did.

    ``store`` is None when no database could be opened (``problem`` says why);
    ``notice`` is a message for the user even when it worked (a new database, a
    recovery, read-only); ``moved_to`` is where a damaged file was moved.
    """

    store: RecordStore | None
    notice: str | None = None
    problem: str | None = None
    kind: str | None = None
    moved_to: Path | None = None
    salvaged: dict | None = None

    @property
    def read_only(self) -> bool:
        return self.store is not None and self.store.read_only


def _quick_check(path: Path) -> str | None:
    """None when the file reads as a healthy SQLite database, else the problem."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            res = [r[0] for r in con.execute("PRAGMA quick_check").fetchall()]
        finally:
            con.close()
    except sqlite3.Error as exc:
        return str(exc) if classify(exc) == CORRUPT else None
    return None if res == ["ok"] else "; ".join(res[:3])


def move_aside(path: Path) -> Path:
    """Rename ``path`` (and its -wal/-shm) to ``<name>.damaged-<time>``; returns the new path."""
    target = path.with_name(f"{path.name}.damaged-{file_stamp()}")
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{target}{suffix}"))
    os.replace(path, target)
    return target


def _read_rows(con: sqlite3.Connection, table: str) -> list[tuple]:
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    except sqlite3.Error:
        pass
    rows, misses, rowid = [], 0, 0
    while misses < SALVAGE_SCAN:  # a damaged b-tree page: look rows up one by one
        rowid += 1
        try:
            r = con.execute(f"SELECT * FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
        except sqlite3.Error:
            r = None
        if r is None:
            misses += 1
        else:
            rows.append(r)
            misses = 0
    return rows


def salvage(damaged: Path, store: RecordStore) -> dict:
    """Copy every readable row of a damaged database into ``store`` (same ids); counts per table."""
    out = {}
    try:
        src = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return out
    try:
        for table in SALVAGE_TABLES:
            try:
                cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})").fetchall()]
                want = [r[1] for r in store.conn.execute(f"PRAGMA table_info({table})").fetchall()]
            except sqlite3.Error:
                continue
            if not cols or not set(cols) <= set(want):
                continue
            keep = [i for i, c in enumerate(cols) if not (table == "events" and c == "id")]  # new ids for events
            names = [cols[i] for i in keep]
            copied = 0
            with store._tx():
                for r in _read_rows(src, table):
                    try:
                        store.conn.execute(f"INSERT OR IGNORE INTO {table} ({', '.join(names)}) "
                                           f"VALUES ({', '.join('?' * len(names))})", [r[i] for i in keep])
                        copied += 1
                    except sqlite3.Error:  # a row referring to one that was lost: keep the others
                        continue
            out[table] = copied
        with store._tx():  # screenings copied back become samples too
            schema.import_legacy(store.conn, Stamp.now().utc)
    finally:
        src.close()
    return out


def open_records(path: str | os.PathLike, images: str | os.PathLike | None = None,
                 rule: VerdictRule | None = None, synchronous: str = "FULL") -> OpenResult:
    """Open (or create, or recover) the records database at ``path``; never raises for its state."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = (f"Cannot create the history folder {path.parent} ({exc.strerror or exc}): results will not be saved. "
               f"Choose another history folder (leukedge app --db PATH, or Settings).")
        log.error("%s", msg)
        return OpenResult(None, problem=msg, kind=UNAVAILABLE)
    existed = path.exists()
    notice = None if existed else f"A new history database was started at {path}."
    moved = salvaged = None
    if existed:
        damage = _quick_check(path)
        if damage is not None:
            try:
                moved = move_aside(path)
            except OSError as exc:
                msg = (f"The history database {path} is damaged ({damage}) and could not be moved aside "
                       f"({exc.strerror or exc}): results will not be saved. Move it away by hand, then restart.")
                return OpenResult(None, problem=msg, kind=CORRUPT)
            log.warning("damaged history database moved to %s (%s)", moved, damage)
    try:
        store = RecordStore(path, images=images, rule=rule, synchronous=synchronous)
    except RecordsError as exc:
        if exc.kind == READ_ONLY or (existed and not os.access(path.parent, os.W_OK)) or exc.kind == UNAVAILABLE \
                and existed:
            try:
                store = RecordStore(path, images=images, rule=rule, read_only=True)
            except RecordsError as exc2:
                return OpenResult(None, problem=exc2.one_line(), kind=exc2.kind)
            msg = (f"The history database {path} is read-only: past records can be read, but new results will "
                   f"NOT be saved. Make the file and its folder writable, or choose another history folder.")
            return OpenResult(store, notice=msg, kind=READ_ONLY)
        return OpenResult(None, problem=exc.one_line(), kind=exc.kind)
    if moved is not None:
        salvaged = salvage(moved, store)
        n = salvaged.get("samples", 0) + salvaged.get("screenings", 0)
        store.log_event("recovered", reason="damaged database moved aside",
                        data={"moved_to": moved.name, "rows_copied": salvaged})
        notice = (f"The history database was damaged. It was moved to {moved.name} (nothing deleted) and a new one "
                  f"was started; {n} records could be copied back from it.")
    try:
        gone = store.apply_retention()  # the image retention the user chose, applied at each start
        if gone:
            log.info("image retention: images of %d fields deleted (audited)", gone)
    except RecordsError as exc:
        log.warning("image retention not applied: %s", exc.one_line())
    return OpenResult(store, notice=notice, kind=CORRUPT if moved else None, moved_to=moved, salvaged=salvaged)
