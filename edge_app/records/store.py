"""The records store: samples of several fields of view, an append-only audit trail, kept images.

One SQLite file (WAL, ``synchronous=FULL``: once a call returns its rows are on disk)
shared with the version 1 ``screenings`` table of :mod:`leukedge.edge_app.history`.
Nothing is edited in place: voids, corrections and retention deletions are new
``events`` rows that reference the sample or field they concern (see :mod:`.schema`).
Every database failure comes out as a :class:`~.errors.RecordsError` with its ``kind``
(full, read-only, corrupt, missing...), never as a crash; :func:`.recovery.open_records`
is the way to open one from the app.

Example::

    store = RecordStore("history.sqlite3")
    s = store.start_sample("P-0042", id_source="scanned")
    store.add_field(s.uid, screener.screen_image(path), source=path, release=screener.release)
    store.finish_sample(s.uid)            # records the verdict shown to the user
    rec = store.sample(s.uid)              # SampleRecord: fields, verdict, events
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from leukedge.errors import ConfigError

from . import schema
from .clock import Stamp, parse_utc, stamp_of
from .errors import MISSING, READ_ONLY, RecordsError, wrap
from .images import ImageFolder
from .verdict import UNREADABLE, USABLE, Verdict, VerdictRule, field_status, sample_verdict
from .wording import shown_probability

log = logging.getLogger(__name__)

ID_SOURCES = ("typed", "scanned")
MAX_SAMPLE_ID = 64


@dataclass
class FieldRecord:
    """One field of view (one attempt) as stored; ``probability`` is None unless it was scored."""

    uid: str
    db_id: int
    seq: int
    created: Stamp
    status: str
    probability: float | None
    probabilities: dict | None
    threshold: float | None
    quality: str | None
    ood: bool
    ood_score: float | None
    error: str | None
    image_path: Path | None
    image_sha256: str | None
    heatmap_path: Path | None
    model_name: str
    model_version: str
    model_variant: str
    model_sha256: str
    signature_status: str
    voided: bool = False
    void_reason: str | None = None
    image_deleted: bool = False
    #: set on the record :meth:`RecordStore.add_field` returns when the field was saved without its
    #: image files (full disk...): why (the audit event keeps it too)
    image_error: str | None = None

    @property
    def usable(self) -> bool:
        return self.status in USABLE and not self.voided


@dataclass
class SampleRecord:
    """A sample with its fields, current ID (after corrections), verdict and audit events."""

    uid: str
    db_id: int
    sample_id: str
    id_source: str
    created: Stamp
    fields: list[FieldRecord]
    verdict: Verdict
    finished: bool
    voided: bool = False
    void_reason: str | None = None
    original_sample_id: str = ""
    events: list[dict] = field(default_factory=list)

    @property
    def counted_fields(self) -> list[FieldRecord]:
        return [f for f in self.fields if not f.voided]


class RecordStore:
    """Samples, fields and events in one SQLite file.

    Args:
        path: database file (its folder must exist or be creatable).
        images: folder for kept images (default ``<db folder>/records-images``).
        rule: the sample verdict rule.
        read_only: open for reading only (writes raise a read-only :class:`RecordsError`).
        synchronous: ``FULL`` (a commit survives a power cut) or ``NORMAL``.
    """

    def __init__(self, path: str | os.PathLike, images: str | os.PathLike | None = None,
                 rule: VerdictRule | None = None, read_only: bool = False, synchronous: str = "FULL"):
        if synchronous not in ("FULL", "NORMAL"):
            raise ConfigError(f"synchronous must be FULL or NORMAL, got {synchronous}")
        self.path = Path(path)
        self.images = ImageFolder(images if images is not None else self.path.parent / "records-images")
        self.rule = rule or VerdictRule()
        self.read_only = read_only
        self._lock = threading.RLock()
        self.conn: sqlite3.Connection | None = None
        try:
            if read_only:
                uri = f"file:{self.path}?mode=ro"
                if not os.access(self.path.parent, os.W_OK) and not Path(f"{self.path}-shm").exists():
                    uri += "&immutable=1"  # a WAL file cannot be read without its -shm unless immutable
                self.conn = sqlite3.connect(uri, uri=True, timeout=10, check_same_thread=False, isolation_level=None)
                self.conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(str(self.path), timeout=10, check_same_thread=False, isolation_level=None)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute(f"PRAGMA synchronous={synchronous}")
                self.conn.execute("PRAGMA foreign_keys=ON")
                with self._tx():
                    version = self.conn.execute("PRAGMA user_version").fetchone()[0]
                    schema.create(self.conn)
                    n = schema.import_legacy(self.conn, Stamp.now().utc)
                    if version < schema.SCHEMA_VERSION:
                        self.conn.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION}")
                        self._event("migrated", data={"from": version, "to": schema.SCHEMA_VERSION,
                                                      "imported_screenings": n})
            self._inode = self._stat_inode()
        except (sqlite3.Error, OSError) as exc:
            if self.conn is not None:
                self.conn.close()
            raise wrap(exc, self.path, "open the records database") from None

    # ----- plumbing ---------------------------------------------------------------------
    def _stat_inode(self):
        st = os.stat(self.path)
        return st.st_dev, st.st_ino

    @contextmanager
    def _tx(self):
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @contextmanager
    def _writing(self, doing: str):
        """A write transaction; every failure becomes a RecordsError and nothing is half-written."""
        if self.read_only:
            raise RecordsError(f"{self.path}: cannot {doing}: the history is open read-only", kind=READ_ONLY)
        try:
            if self._stat_inode() != self._inode:
                raise FileNotFoundError
        except FileNotFoundError:
            raise RecordsError(f"{self.path}: cannot {doing}: the database file was removed or replaced "
                               f"while the app was running", kind=MISSING) from None
        try:
            with self._tx():
                yield
        except (sqlite3.Error, OSError) as exc:
            raise wrap(exc, self.path, doing) from None

    def _rows(self, sql: str, args=()) -> list[dict]:
        try:
            with self._lock:
                cur = self.conn.execute(sql, args)
                names = [d[0] for d in cur.description]
                return [dict(zip(names, r)) for r in cur.fetchall()]
        except sqlite3.Error as exc:
            raise wrap(exc, self.path, "read the records") from None

    def _event(self, kind: str, sample_ref=None, field_ref=None, reason=None, data=None, stamp: Stamp | None = None):
        s = stamp or Stamp.now()
        self.conn.execute("INSERT INTO events (time_utc, tz_offset_min, tz_name, kind, sample_ref, field_ref, reason, "
                          "data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (s.utc, s.offset_min, s.tz_name, kind, sample_ref, field_ref, reason,
                           json.dumps(data) if data is not None else None))

    def _sample_row(self, uid: str) -> dict:
        rows = self._rows("SELECT * FROM samples WHERE uid = ?", (str(uid),))
        if not rows:
            raise ConfigError(f"no sample {uid!r} in {self.path}")
        return rows[0]

    # ----- writing ----------------------------------------------------------------------
    def start_sample(self, sample_id: str, id_source: str = "typed") -> SampleRecord:
        """Open a new sample (nothing carries over from the previous one)."""
        sid = clean_sample_id(sample_id)
        if id_source not in ID_SOURCES:
            raise ConfigError(f"id_source must be one of {ID_SOURCES}, got {id_source!r}")
        s, uid = Stamp.now(), uuid.uuid4().hex
        with self._writing("start a sample"):
            cur = self.conn.execute("INSERT INTO samples (uid, sample_id, id_source, created_utc, tz_offset_min, "
                                    "tz_name) VALUES (?, ?, ?, ?, ?, ?)",
                                    (uid, sid, id_source, s.utc, s.offset_min, s.tz_name))
            self._event("sample_started", sample_ref=cur.lastrowid, data={"sample_id": sid}, stamp=s)
        return self.sample(uid)

    def add_field(self, sample_uid: str, screening, source=None, release=None) -> FieldRecord:
        """Record one attempt (scored, retake, out-of-distribution or unreadable) of a sample.

        Args:
            sample_uid: the sample's ``uid``.
            screening: the :class:`~leukedge.edge_app.inference.Screening` of this field.
            source: the captured image (a path or an RGB frame), kept with the record.
            release: the release that screened it (for its signature status).
        """
        with self._lock:  # seq and file names stay unique when threads add fields to one sample
            return self._add_field(sample_uid, screening, source, release)

    def _add_field(self, sample_uid, screening, source, release) -> FieldRecord:
        row = self._sample_row(sample_uid)
        if self._finished(row["id"]):
            raise ConfigError(f"sample {row['sample_id']!r} is finished", "start a new sample for new fields")
        status = field_status(screening)
        prob = shown_probability(status, getattr(screening, "probability", None))
        probs = getattr(screening, "probabilities", None) if prob is not None else None
        sig = getattr(release, "signature_status", None) or getattr(screening, "signature_status", None) or "unknown"
        seq = 1 + self._rows("SELECT COALESCE(MAX(seq), 0) AS m FROM fields WHERE sample_ref = ?", (row["id"],))[0]["m"]
        written = []
        image_rel = image_sha = heat_rel = None
        img_error = None
        try:
            if source is None and getattr(screening, "path", None):
                source = screening.path
            # an unreadable file is not kept (it may be anything, of any size): its sha256 is recorded
            if status != UNREADABLE and source is not None and (
                    not isinstance(source, (str, os.PathLike)) or Path(source).is_file()):
                image_rel, image_sha = self.images.save_capture(sample_uid, seq, source) or (None, None)
                written.append(image_rel)
            if status in USABLE and hasattr(screening, "overlay"):
                heat_rel = self.images.save_heatmap(sample_uid, seq, screening.overlay())
                written.append(heat_rel)
        except (OSError, ValueError) as exc:  # the result is still recorded, without its image
            img_error = (wrap(exc, self.images.root, "keep the field's image").one_line() if isinstance(exc, OSError)
                         else f"image not kept: {exc}")
            log.warning("%s", img_error)
        s, uid = Stamp.now(), uuid.uuid4().hex
        try:
            with self._writing("save this field"):
                cur = self.conn.execute(
                    "INSERT INTO fields (uid, sample_ref, seq, created_utc, tz_offset_min, tz_name, status, probability, "
                    "probabilities, threshold, quality, ood, ood_score, error, image_path, image_sha256, heatmap_path, "
                    "model_name, model_version, model_variant, model_sha256, signature_status) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (uid, row["id"], seq, s.utc, s.offset_min, s.tz_name, status, prob,
                     json.dumps(probs) if probs else None, getattr(screening, "threshold", None),
                     getattr(screening, "quality", None), int(bool(getattr(screening, "ood", False))),
                     getattr(screening, "ood_score", None), getattr(screening, "error", None), image_rel,
                     image_sha or getattr(screening, "image_sha256", None), heat_rel,
                     getattr(screening, "model_name", ""), getattr(screening, "model_version", ""),
                     getattr(screening, "model_variant", ""), getattr(screening, "model_sha256", ""), sig))
                self._event("field_added", sample_ref=row["id"], field_ref=cur.lastrowid, stamp=s,
                            data={"seq": seq, "status": status, **({"image_error": img_error} if img_error else {})})
        except RecordsError:
            for rel in written:  # not referenced by any committed row
                self.images.remove(rel)
            raise
        rec = next(f for f in self.sample(sample_uid).fields if f.uid == uid)
        return replace(rec, image_error=img_error) if img_error else rec

    def finish_sample(self, sample_uid: str) -> Verdict:
        """Close a sample: its verdict (as shown to the user) is recorded and no field can be added."""
        rec = self.sample(sample_uid)
        if rec.finished:
            return rec.verdict
        v = sample_verdict([f.status for f in rec.counted_fields], self.rule, finished=True)
        with self._writing("finish the sample"):
            self._event("sample_finished", sample_ref=rec.db_id, data=v.to_dict())
        return v

    def void_field(self, field_uid: str, reason: str) -> None:
        """Void one field (wrong slide, wrong patient...): it stays in the record, no longer counts."""
        rows = self._rows("SELECT id, sample_ref FROM fields WHERE uid = ?", (str(field_uid),))
        if not rows:
            raise ConfigError(f"no field {field_uid!r} in {self.path}")
        with self._writing("void the field"):
            self._event("void", sample_ref=rows[0]["sample_ref"], field_ref=rows[0]["id"], reason=_reason(reason))

    def void_sample(self, sample_uid: str, reason: str) -> None:
        row = self._sample_row(sample_uid)
        with self._writing("void the sample"):
            self._event("void", sample_ref=row["id"], reason=_reason(reason))

    def correct_sample_id(self, sample_uid: str, new_id: str, reason: str) -> None:
        """Correct a sample ID (a typo, a mis-scanned label): a new event referencing the old value."""
        rec = self.sample(sample_uid)
        new = clean_sample_id(new_id)
        with self._writing("correct the sample ID"):
            self._event("correct", sample_ref=rec.db_id, reason=_reason(reason),
                        data={"field": "sample_id", "old": rec.sample_id, "new": new})

    def log_event(self, kind: str, reason: str | None = None, data: dict | None = None,
                  sample_uid: str | None = None) -> None:
        """Record an action in the audit trail (an export, a recovery...)."""
        ref = self._sample_row(sample_uid)["id"] if sample_uid else None
        with self._writing(f"record '{kind}'"):
            self._event(kind, sample_ref=ref, reason=reason, data=data)

    # ----- retention --------------------------------------------------------------------
    def retention_days(self) -> int | None:
        """Days captured images are kept (None: kept until deleted by a person)."""
        rows = self._rows("SELECT data FROM events WHERE kind = 'retention_set' ORDER BY id DESC LIMIT 1")
        return json.loads(rows[0]["data"]).get("keep_days") if rows else None

    def set_retention(self, keep_days: int | None, reason: str = "changed in Settings") -> None:
        if keep_days is not None and (not isinstance(keep_days, int) or isinstance(keep_days, bool) or keep_days < 1):
            raise ConfigError(f"image retention must be a whole number of days >= 1 or 'keep all', got {keep_days!r}")
        with self._writing("change the image retention"):
            self._event("retention_set", reason=_reason(reason), data={"keep_days": keep_days})

    def apply_retention(self, now: Stamp | None = None) -> int:
        """Delete kept images older than the retention; each deletion is an audit event. Returns how many."""
        days = self.retention_days()
        if days is None:
            return 0
        cutoff = (now or Stamp.now()).utc_datetime - timedelta(days=days)
        rows = self._rows("SELECT f.id, f.sample_ref, f.created_utc, f.image_path, f.heatmap_path FROM fields f "
                          "WHERE (f.image_path IS NOT NULL OR f.heatmap_path IS NOT NULL) AND f.id NOT IN "
                          "(SELECT field_ref FROM events WHERE kind = 'image_deleted' AND field_ref IS NOT NULL)")
        n = 0
        for r in rows:
            if parse_utc(r["created_utc"]) >= cutoff:
                continue
            gone = [rel for rel in (r["image_path"], r["heatmap_path"]) if rel and self.images.remove(rel)]
            with self._writing("record an image deletion"):
                self._event("image_deleted", sample_ref=r["sample_ref"], field_ref=r["id"],
                            reason=f"retention: images kept {days} days", data={"files": gone})
            n += 1
        return n

    # ----- reading ----------------------------------------------------------------------
    def _finished(self, sample_ref: int) -> bool:
        return bool(self._rows("SELECT 1 FROM events WHERE sample_ref = ? AND kind = 'sample_finished' LIMIT 1",
                               (sample_ref,)))

    def sample(self, sample_uid: str) -> SampleRecord:
        return self._build(self._sample_row(sample_uid))

    def samples(self, limit: int = 100, offset: int = 0, include_voided: bool = True) -> list[SampleRecord]:
        """Newest first."""
        rows = self._rows("SELECT * FROM samples ORDER BY id DESC LIMIT ? OFFSET ?", (int(limit), int(offset)))
        out = [self._build(r) for r in rows]
        return out if include_voided else [s for s in out if not s.voided]

    def count(self) -> int:
        return int(self._rows("SELECT COUNT(*) AS n FROM samples")[0]["n"])

    def audit(self, sample_uid: str | None = None) -> list[dict]:
        """Audit events, oldest first (with their local time for display)."""
        if sample_uid:
            rows = self._rows("SELECT * FROM events WHERE sample_ref = ? ORDER BY id", (self._sample_row(sample_uid)["id"],))
        else:
            rows = self._rows("SELECT * FROM events ORDER BY id")
        for r in rows:
            r["data"] = json.loads(r["data"]) if r["data"] else None
            r["time_local"] = stamp_of(r["time_utc"], r["tz_offset_min"], r["tz_name"]).display()
        return rows

    def _build(self, srow: dict) -> SampleRecord:
        ev = self.audit_rows(srow["id"])
        void_fields = {e["field_ref"]: e["reason"] for e in ev if e["kind"] == "void" and e["field_ref"]}
        deleted = {e["field_ref"] for e in ev if e["kind"] == "image_deleted"}
        sample_void = next((e["reason"] for e in ev if e["kind"] == "void" and not e["field_ref"]), None)
        sid = srow["sample_id"]
        for e in ev:
            if e["kind"] == "correct" and (e["data"] or {}).get("field") == "sample_id":
                sid = e["data"]["new"]
        fields = [self._field(r, void_fields, deleted)
                  for r in self._rows("SELECT * FROM fields WHERE sample_ref = ? ORDER BY seq", (srow["id"],))]
        finished = srow["id_source"] == "legacy" or any(e["kind"] == "sample_finished" for e in ev)
        v = sample_verdict([f.status for f in fields if not f.voided], self.rule, finished=finished)
        return SampleRecord(uid=srow["uid"], db_id=srow["id"], sample_id=sid, id_source=srow["id_source"],
                            created=stamp_of(srow["created_utc"], srow["tz_offset_min"], srow["tz_name"]),
                            fields=fields, verdict=v, finished=finished, voided=sample_void is not None,
                            void_reason=sample_void, original_sample_id=srow["sample_id"], events=ev)

    def audit_rows(self, sample_ref: int) -> list[dict]:
        rows = self._rows("SELECT * FROM events WHERE sample_ref = ? ORDER BY id", (sample_ref,))
        for r in rows:
            r["data"] = json.loads(r["data"]) if r["data"] else None
        return rows

    def _field(self, r: dict, void_fields: dict, deleted: set) -> FieldRecord:
        gone = r["id"] in deleted
        return FieldRecord(
            uid=r["uid"], db_id=r["id"], seq=r["seq"], created=stamp_of(r["created_utc"], r["tz_offset_min"], r["tz_name"]),
            status=r["status"], probability=shown_probability(r["status"], r["probability"]),
            probabilities=json.loads(r["probabilities"]) if r["probabilities"] else None, threshold=r["threshold"],
            quality=r["quality"], ood=bool(r["ood"]), ood_score=r["ood_score"], error=r["error"],
            image_path=None if gone else self.images.resolve(r["image_path"]), image_sha256=r["image_sha256"],
            heatmap_path=None if gone else self.images.resolve(r["heatmap_path"]),
            model_name=r["model_name"] or "", model_version=r["model_version"] or "",
            model_variant=r["model_variant"] or "", model_sha256=r["model_sha256"] or "",
            signature_status=r["signature_status"] or "unknown", voided=r["id"] in void_fields,
            void_reason=void_fields.get(r["id"]), image_deleted=gone)

    def integrity_check(self) -> str:
        return str(self._rows("PRAGMA integrity_check")[0]["integrity_check"])

    def close(self) -> None:
        with self._lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None


def clean_sample_id(sample_id) -> str:
    """A sample ID as stored: trimmed, one line, 1 to 64 characters."""
    sid = " ".join(str(sample_id or "").split())
    if not sid:
        raise ConfigError("a sample needs an ID", "type it or scan the label")
    if len(sid) > MAX_SAMPLE_ID:
        raise ConfigError(f"sample ID of {len(sid)} characters is too long", f"use at most {MAX_SAMPLE_ID}")
    return sid


def _reason(reason) -> str:
    text = " ".join(str(reason or "").split())
    if not text:
        raise ConfigError("a reason is required", "say why (e.g. 'wrong patient', 'typo in the ID')")
    return text
