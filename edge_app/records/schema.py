"""The records database schema (version 2) and the migration from the screenings table (version 1).

Version 1 (``history.py``) had one ``screenings`` row per image. Version 2 adds samples
holding fields of view and an append-only event log; the version 1 table is kept as it
was (still readable, still written by :class:`~leukedge.edge_app.history.History`), and
each of its rows is imported once as a one-field sample (``id_source = 'legacy'``).
Triggers make ``samples``, ``fields`` and ``events`` append-only: an UPDATE or DELETE
aborts, so a record is voided or corrected by a new event that references it.
"""
from __future__ import annotations

import json
import sqlite3
import uuid

SCHEMA_VERSION = 2

SCREENINGS_V1 = """
CREATE TABLE IF NOT EXISTS screenings (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time_utc TEXT NOT NULL, image_sha256 TEXT, image_path TEXT,
    sample_id TEXT, probability REAL, decision TEXT, quality TEXT, ood INTEGER NOT NULL DEFAULT 0,
    ood_score REAL, model_name TEXT NOT NULL, model_version TEXT, model_sha256 TEXT, threshold REAL, error TEXT
);
CREATE INDEX IF NOT EXISTS screenings_time ON screenings(time_utc)
"""

TABLES_V2 = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL UNIQUE,
    sample_id TEXT NOT NULL,
    id_source TEXT NOT NULL CHECK (id_source IN ('typed', 'scanned', 'legacy')),
    created_utc TEXT NOT NULL, tz_offset_min INTEGER, tz_name TEXT,
    legacy_screening_id INTEGER UNIQUE
);
CREATE TABLE IF NOT EXISTS fields (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL UNIQUE,
    sample_ref INTEGER NOT NULL REFERENCES samples(id),
    seq INTEGER NOT NULL,
    created_utc TEXT NOT NULL, tz_offset_min INTEGER, tz_name TEXT,
    status TEXT NOT NULL CHECK (status IN ('positive', 'negative', 'retake', 'ood', 'unreadable')),
    -- a score the gates hid is never stored: only scored fields carry one
    probability REAL CHECK (probability IS NULL OR status IN ('positive', 'negative')),
    probabilities TEXT CHECK (probabilities IS NULL OR status IN ('positive', 'negative')),
    threshold REAL, quality TEXT, ood INTEGER, ood_score REAL, error TEXT,
    image_path TEXT, image_sha256 TEXT, heatmap_path TEXT,
    model_name TEXT, model_version TEXT, model_variant TEXT, model_sha256 TEXT, signature_status TEXT,
    legacy_screening_id INTEGER UNIQUE,
    UNIQUE (sample_ref, seq)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_utc TEXT NOT NULL, tz_offset_min INTEGER, tz_name TEXT,
    kind TEXT NOT NULL,
    sample_ref INTEGER REFERENCES samples(id),
    field_ref INTEGER REFERENCES fields(id),
    reason TEXT,
    data TEXT,
    CHECK (kind NOT IN ('void', 'correct', 'retention_set', 'image_deleted') OR length(trim(coalesce(reason, ''))) > 0)
);
CREATE INDEX IF NOT EXISTS events_sample ON events(sample_ref);
CREATE INDEX IF NOT EXISTS fields_sample ON fields(sample_ref)
"""


def _append_only(table: str) -> list[str]:
    return [f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'append-only: {table} rows are never changed; "
            f"void or correct them with a reason'); END"
            for op in ("UPDATE", "DELETE")]


def create(conn: sqlite3.Connection) -> None:
    """Create every table and trigger (inside the caller's transaction)."""
    for block in (SCREENINGS_V1, TABLES_V2):
        for stmt in block.split(";"):
            if stmt.strip():
                conn.execute(stmt)
    for t in ("samples", "fields", "events"):
        for stmt in _append_only(t):
            conn.execute(stmt)
    # added after version 1 shipped: which release signature the screening ran under
    # (verified / unsigned with --allow-unsigned); older rows read as unknown
    if "signature" not in {r[1] for r in conn.execute("PRAGMA table_info(screenings)")}:
        conn.execute("ALTER TABLE screenings ADD COLUMN signature TEXT")


def _status_v1(row: dict) -> str:
    if row.get("error"):
        return "unreadable"
    d = row.get("decision")
    return {"positive": "positive", "negative": "negative", "retake": "retake",
            "out-of-distribution": "ood"}.get(d, "unreadable")


def import_legacy(conn: sqlite3.Connection, now_utc: str, screening_id: int | None = None) -> int:
    """Import screenings rows not yet imported (or just ``screening_id``), each as a one-field sample."""
    only = "" if screening_id is None else f" AND id = {int(screening_id)}"
    cur = conn.execute("SELECT * FROM screenings WHERE id NOT IN (SELECT legacy_screening_id FROM samples "
                       "WHERE legacy_screening_id IS NOT NULL)" + only + " ORDER BY id")
    names = [d[0] for d in cur.description]
    n = 0
    for values in cur.fetchall():
        r = dict(zip(names, values))
        status = _status_v1(r)
        s = conn.execute("INSERT INTO samples (uid, sample_id, id_source, created_utc, legacy_screening_id) "
                         "VALUES (?, ?, 'legacy', ?, ?)",
                         (uuid.uuid4().hex, r.get("sample_id") or f"legacy-{r['id']}", r["time_utc"], r["id"]))
        prob = r.get("probability") if status in ("positive", "negative") else None
        conn.execute(
            "INSERT INTO fields (uid, sample_ref, seq, created_utc, status, probability, threshold, quality, ood, "
            "ood_score, error, image_path, image_sha256, model_name, model_version, model_sha256, signature_status, "
            "legacy_screening_id) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)",
            (uuid.uuid4().hex, s.lastrowid, r["time_utc"], status, prob, r.get("threshold"), r.get("quality"),
             r.get("ood"), r.get("ood_score"), r.get("error"), r.get("image_sha256"), r.get("model_name"),
             r.get("model_version"), r.get("model_sha256"), r.get("signature") or "unknown", r["id"]))
        conn.execute("INSERT INTO events (time_utc, kind, sample_ref, data) VALUES (?, 'imported', ?, ?)",
                     (now_utc, s.lastrowid, json.dumps({"screening_id": r["id"], "image_path": r.get("image_path"),
                                                        "hidden_score_dropped": prob is None
                                                        and r.get("probability") is not None})))
        n += 1
    return n
