"""The records database through a full disk, a page-corrupted file, read-only storage, an uncreatable
folder and a file that disappears: a clear message, a way forward, no crash, no committed record lost.

Full and read-only storage are real: a tiny tmpfs mounted for the test (needs root, as in
this project's CI container); without root those tests fall back to SQLite's
``max_page_count`` (a real "database or disk is full" from SQLite) and chmod.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from fixtures_records import fill_sample, screener, shots  # noqa: F401  (fixtures)
from leukedge.edge_app.autopilot_scenarios import fill_disk
from leukedge.edge_app.exports import ExportError
from leukedge.edge_app.exports.sample_csv import export_samples_csv
from leukedge.edge_app.history import History
from leukedge.edge_app.records import RecordsError, RecordStore, open_records


def _mount_tmpfs(where: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    return r.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture()
def small_fs(tmp_path):
    """A 2 MiB file system of its own (a real tmpfs), or None when it cannot be mounted."""
    where = tmp_path / "fs"
    if not _mount_tmpfs(where, "2m"):
        yield None
        return
    yield where
    _umount(where)


def _fill(folder: Path) -> Path:
    """Fill the file system holding ``folder`` to the last byte."""
    return fill_disk(folder / "filler.bin")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----- full disk --------------------------------------------------------------------------
def test_full_disk_refuses_new_records_keeps_old_ones_and_recovers(small_fs, tmp_path, shots, screener):
    root = small_fs or tmp_path
    db = root / "db" / "history.sqlite3"
    store = open_records(db).store
    kept = [fill_sample(store, shots, f"K-{i}", ["negative", "positive"], screener.release).uid for i in range(2)]
    open_uid = store.start_sample("OPEN").uid
    if small_fs is None:  # fallback: SQLite's own page limit gives the same 'database or disk is full'
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count={pages}")
    else:
        filler = _fill(small_fs)
    committed, error = [], None
    for i in range(2000):  # the WAL may still have room for a few rows: go until the disk says no
        try:
            committed.append(store.start_sample(f"F-{i}").uid)
        except RecordsError as exc:
            error = exc
            break
    assert error is not None and error.kind == "full"
    assert "disk is full" in error.one_line() and "free space" in error.one_line()
    images_before = sorted(p for p in store.images.root.rglob("*") if p.is_file())
    with pytest.raises(RecordsError) as field_err:
        store.add_field(open_uid, shots["negative"][1], source=shots["negative"][0])
    assert field_err.value.kind == "full" and store.sample(open_uid).fields == []
    assert sorted(p for p in store.images.root.rglob("*") if p.is_file()) == images_before  # nothing orphaned
    h = History(db)
    with pytest.raises(RecordsError, match="disk is full"):
        h.add(sample_id="L-1", probability=0.1, decision="negative", model_name="m")
    h.close()
    # Room again: writing works, and every record committed before, during and after is there.
    if small_fs is None:
        store.conn.execute("PRAGMA max_page_count=1073741823")
    else:
        filler.unlink()
    after = store.start_sample("AFTER").uid
    store.close()
    again = RecordStore(db)
    assert {s.uid for s in again.samples(limit=10000)} == set(kept + committed + [open_uid, after])
    assert again.integrity_check() == "ok" and again.sample(kept[0]).verdict.code == "refer"
    again.close()


def test_export_to_a_full_disk_fails_cleanly_without_touching_the_database(small_fs, tmp_path, shots):
    if small_fs is None:
        pytest.skip("needs a mounted tmpfs (root) for a real full disk")
    db = tmp_path / "db" / "history.sqlite3"  # the database is on another, healthy file system
    store = RecordStore(db)
    recs = [fill_sample(store, shots, f"E-{i}", ["negative", "ood"]) for i in range(3)]
    store.close()
    before = _sha(db)
    store = RecordStore(db)
    out = small_fs / "exports"
    out.mkdir()
    _fill(small_fs)
    with pytest.raises(ExportError, match="disk is full") as exc:
        export_samples_csv(store.samples(), out)
    assert "nothing was changed" in exc.value.one_line()
    assert list(out.iterdir()) == []  # no half-written export, no temp file
    assert store.count() == 3 and store.integrity_check() == "ok"
    store.close()
    assert _sha(db) == before
    assert len(recs) == 3


def test_field_whose_images_hit_a_full_disk_is_saved_without_them_and_says_why(small_fs, tmp_path, shots):
    if small_fs is None:
        pytest.skip("needs a mounted tmpfs (root) for a real full disk")
    store = RecordStore(tmp_path / "db" / "history.sqlite3", images=small_fs / "images")  # images on the full disk
    s = store.start_sample("IMG-1")
    _fill(small_fs)
    path, res = shots["positive"]
    field = store.add_field(s.uid, res, source=path)
    assert field.image_error and "disk is full" in field.image_error and "free space" in field.image_error
    assert field.image_path is None and field.heatmap_path is None and field.status == "positive"
    assert [f.uid for f in store.sample(s.uid).fields] == [field.uid]    # the result itself is kept
    assert store.sample(s.uid).fields[0].image_error is None             # (the message is not a column)
    assert not list((small_fs / "images").rglob("*.*"))                  # no partial or temp file
    store.close()


def test_app_on_a_disk_that_fills_up_says_so_and_loses_nothing_saved(small_fs, smear_paths):
    """The real app (offscreen, the recommended release) with its history on a tiny real file system
    that fills up mid-sample: the field is shown, the screen says it was NOT saved (or saved without
    its image), nothing half-written stays behind, and after space is freed the sample carries on."""
    from test_app import pilot

    if small_fs is None:
        pytest.skip("needs a mounted tmpfs (root) for a real full disk")
    db = small_fs / "history.sqlite3"
    r = pilot("disk_full", "--model", "models/efficientnet-lite0-subtype", "--db", db, "--out",
              small_fs.parent / "r.json", "--smear", smear_paths["Pre"][1], "--smear2", smear_paths["Benign"][1],
              "--fill", small_fs / "filler.bin", timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    rep = json.loads((small_fs.parent / "r.json").read_text())
    assert rep["first"]["saved"] and rep["third"]["saved"] and rep["finish"]["finished"]
    second = rep["second"]
    assert second["probability_text"] and second["error"]          # the result is shown, the problem said
    assert "disk is full" in second["note"] and "free space" in second["note"]
    con = sqlite3.connect(db)
    rows = con.execute("SELECT seq, image_path, heatmap_path FROM fields ORDER BY seq").fetchall()
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    if second["saved"]:                       # the row committed, its image files could not be written
        assert "saved, but its image was not kept" in second["note"]
        assert [s for s, *_ in rows] == [1, 2, 3] and rows[1][1:] == (None, None)
    else:                                     # the commit failed: rolled back, its files removed
        assert "NOT saved" in second["note"]
        assert [s for s, *_ in rows] == [1, 2]          # fields 1 and 3 (numbered as saved)
    kept = {str(p.relative_to(db.parent / "records-images")) for p in (db.parent / "records-images").rglob("*")
            if p.is_file()}
    assert kept == {rel for _, *rels in rows for rel in rels if rel}   # no orphan, partial or temp file
    assert all(rels[0] for _, *rels in (rows[0], rows[-1]))          # fields 1 and 3 kept their images


# ----- damaged file -----------------------------------------------------------------------
def _database_with_records(db: Path, n: int = 300) -> set[int]:
    h = History(db)
    ids = {h.add(sample_id=f"S-{i:04d}", probability=0.1, decision="negative", quality="ok",
                 model_name="m", image_path="/data/" + "x" * 300) for i in range(n)}
    h.close()  # the last connection checkpoints the WAL into the main file
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    return ids


def test_page_corrupted_database_is_moved_aside_and_readable_rows_are_copied(tmp_path):
    db = tmp_path / "history.sqlite3"
    ids = _database_with_records(db)
    size = db.stat().st_size
    page = 4096
    with open(db, "r+b") as fh:  # overwrite two pages in the middle of the file
        fh.seek((size // page // 2) * page)
        fh.write(os.urandom(2 * page))
    damaged_sha = _sha(db)
    res = open_records(db)
    assert res.store is not None and res.kind == "corrupt" and res.moved_to is not None
    assert res.moved_to.name.startswith("history.sqlite3.damaged-") and _sha(res.moved_to) == damaged_sha
    assert "damaged" in res.notice and res.moved_to.name in res.notice and "nothing deleted" in res.notice
    copied = {r[0] for r in res.store.conn.execute("SELECT id FROM screenings")}
    assert copied <= ids and len(copied) > 0  # what was readable came back, nothing invented
    assert res.salvaged["screenings"] == len(copied) and res.store.count() == len(copied)  # and as samples
    assert res.store.integrity_check() == "ok"
    s = res.store.start_sample("NEW-1")  # the way forward: a working database
    assert res.store.sample(s.uid).sample_id == "NEW-1"
    assert [e["kind"] for e in res.store.audit()][-2:] == ["recovered", "sample_started"]
    res.store.close()


def test_not_a_database_at_all_and_the_v1_api_keeps_running(tmp_path):
    db = tmp_path / "history.sqlite3"
    _database_with_records(db, 20)
    with open(db, "r+b") as fh:
        fh.write(b"garbage!" * 16)  # the header
    h = History(db)  # used to raise: the app exited at start
    assert h.available and h.moved_to is not None and h.moved_to.exists() and "damaged" in h.notice
    assert h.count() == 0 and h.add(sample_id="A", model_name="m") == 1
    h.close()


# ----- read-only --------------------------------------------------------------------------
@pytest.fixture()
def readonly_db(tmp_path, shots):
    """A database with 2 samples on read-only storage (a tmpfs remounted ro, or chmod without root)."""
    where = tmp_path / "ro"
    mounted = _mount_tmpfs(where, "4m")
    where.mkdir(exist_ok=True)
    db = where / "history.sqlite3"
    store = RecordStore(db)
    uids = [fill_sample(store, shots, f"R-{i}", ["negative", "negative2"]).uid for i in range(2)]
    store.close()
    if mounted:
        assert subprocess.run(["mount", "-o", "remount,ro", str(where)]).returncode == 0
    else:
        db.chmod(0o444)
        where.chmod(0o555)
    yield db, uids
    if mounted:
        _umount(where)
    else:
        where.chmod(0o755)


def test_read_only_database_is_readable_and_says_new_results_are_not_saved(readonly_db):
    db, uids = readonly_db
    res = open_records(db)
    assert res.store is not None and res.read_only and res.kind == "read-only"
    assert "read-only" in res.notice and "NOT be saved" in res.notice and "writable" in res.notice
    assert {s.uid for s in res.store.samples()} == set(uids)
    assert res.store.sample(uids[0]).verdict.code == "no_signs"
    with pytest.raises(RecordsError) as exc:
        res.store.start_sample("X")
    assert exc.value.kind == "read-only" and "writable" in exc.value.one_line()
    res.store.close()
    h = History(db)
    assert h.read_only and h.count() == 0 and "read-only" in h.notice
    with pytest.raises(RecordsError, match="read-only"):
        h.add(sample_id="X", model_name="m")
    h.close()


# ----- no folder, no file -----------------------------------------------------------------
def test_uncreatable_folder_gives_no_store_and_a_clear_message(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    db = blocker / "sub" / "history.sqlite3"
    res = open_records(db)
    assert res.store is None and res.kind == "unavailable"
    assert "Cannot create the history folder" in res.problem and "--db" in res.problem
    h = History(db)  # the app keeps running: screening works, nothing is saved, and it says so
    assert not h.available and h.list() == [] and h.count() == 0 and h.get(1) is None
    with pytest.raises(RecordsError, match="unavailable") as exc:
        h.add(sample_id="X", model_name="m")
    assert "Cannot create the history folder" in exc.value.one_line()
    assert blocker.read_text() == "a file where the folder should be"


def test_database_removed_while_running_is_not_written_into_the_void(tmp_path):
    db = tmp_path / "history.sqlite3"
    store = RecordStore(db)
    first = store.start_sample("BEFORE").uid
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        p.unlink(missing_ok=True)
    with pytest.raises(RecordsError) as exc:
        store.start_sample("LOST?")
    assert exc.value.kind == "missing" and "removed" in exc.value.one_line()
    store.close()
    res = open_records(db)  # the way forward: a new database, and it says so
    assert res.store is not None and "new history database" in res.notice
    assert res.store.count() == 0 and res.store.start_sample("AFTER").sample_id == "AFTER"
    assert first
    res.store.close()


def test_database_damaged_while_open_gives_records_errors_not_sqlite_ones(tmp_path):
    """A file damaged after it was opened: reads and writes raise RecordsError (corrupt), never sqlite3 errors."""
    db = tmp_path / "history.sqlite3"
    _database_with_records(db, 200)
    store = RecordStore(db)
    store.conn.execute("PRAGMA cache_size=0")  # no cached pages: reads go to the file
    with open(db, "r+b") as fh:
        fh.seek(4096)  # the pages right after the schema page: the tables' b-trees
        fh.write(os.urandom(db.stat().st_size - 8192))
    kinds = []
    for call in (lambda: store.samples(limit=1000), store.integrity_check, lambda: store.start_sample("X")):
        with pytest.raises(RecordsError) as exc:
            call()
        kinds.append(exc.value.kind)
    assert kinds == ["corrupt"] * 3
    h = History(db)  # reopening (the way forward) moves the damaged file aside and starts again
    assert h.moved_to is not None and h.moved_to.exists() and h.list() == [] and h.add(model_name="m") == 1
    h.close()
    store.close()
