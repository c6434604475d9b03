"""Samples with fields of view: verdict rule, safe wording, append-only store, migration, time zones,
retention, on a real SQLite file with real smears screened by the committed binary release."""
from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest

from fixtures_records import fill_sample, screener, shots  # noqa: F401  (fixtures)
from leukedge.edge_app.records import (CANNOT_ASSESS, NO_SIGNS, REFER, TAKE_MORE, RecordStore, Stamp, VerdictRule,
                                       open_records, sample_verdict, score_text, verdict_text)
from leukedge.edge_app.records.verdict import field_status
from leukedge.errors import ConfigError

P, N, R, O, U = "positive", "negative", "retake", "ood", "unreadable"


# ----- the rule ---------------------------------------------------------------------------
@pytest.mark.parametrize("statuses, finished, expected", [
    ([P], False, REFER),                      # one positive field is enough
    ([N, N, P], False, REFER),
    ([O, R, P], True, REFER),
    ([N], False, TAKE_MORE),                  # one usable negative field: not enough to clear
    ([N, O], False, TAKE_MORE),
    ([N, N], False, NO_SIGNS),
    ([N, O, R, N], True, NO_SIGNS),
    ([N], True, CANNOT_ASSESS),               # finished with too few usable fields
    ([O, R, U, O, R, N], False, CANNOT_ASSESS),  # max_attempts reached
    ([], True, CANNOT_ASSESS),
])
def test_verdict_rule(statuses, finished, expected):
    v = sample_verdict(statuses, VerdictRule(), finished=finished)
    assert v.code == expected
    assert v.n_usable == sum(s in (P, N) for s in statuses) and v.n_positive == statuses.count(P)


def test_majority_rule_and_k_and_bad_parameters():
    assert sample_verdict([N, N, P], VerdictRule(aggregate="majority")).code == NO_SIGNS
    assert sample_verdict([N, P, P], VerdictRule(aggregate="majority")).code == REFER
    assert sample_verdict([N], VerdictRule(min_usable=1)).code == NO_SIGNS
    assert sample_verdict([N, N], VerdictRule(min_usable=3, max_attempts=4)).code == TAKE_MORE
    for bad in ({"min_usable": 0}, {"max_attempts": 1}, {"aggregate": "mean"}):
        with pytest.raises(ConfigError):
            VerdictRule(**bad)
    with pytest.raises(ConfigError, match="unknown field status"):
        sample_verdict(["maybe"])


# ----- wording ----------------------------------------------------------------------------
def test_every_verdict_says_what_to_do_and_a_negative_never_rules_out(screener):
    card = screener.release.card
    for code, statuses, fin in ((REFER, [P], True), (NO_SIGNS, [N, N], True), (TAKE_MORE, [N], False),
                                (CANNOT_ASSESS, [O], True)):
        t = verdict_text(sample_verdict(statuses, finished=fin), card)
        assert t.code == code and t.headline and t.meaning and len(t.next_step) > 30
        assert "95% CI" in t.performance
    neg = verdict_text(sample_verdict([N, N]), card)
    assert "does not rule leukemia out" in neg.caveat
    assert "not a negative" in verdict_text(sample_verdict([O], finished=True), card).caveat
    perf = neg.performance  # the card's test metrics with their CIs, in words
    sens = card["evaluation"]["metrics"]["recall"]
    assert f"{100 * sens['value']:.0f}% of leukemia images" in perf
    assert f"95% CI {100 * sens['ci95'][0]:.0f}%" in perf and "non-leukemia images" in perf
    assert "not in its model card" in verdict_text(sample_verdict([N, N]), {}).performance


def test_a_hidden_score_is_never_shown(shots):
    _, ood = shots["ood"]
    assert ood.probability > 0.5  # the model's score exists; the gate hides it
    text = score_text(field_status(ood), ood.probability)
    assert f"{ood.probability:.2f}" not in text and "no result" in text
    _, pos = shots["positive"]
    assert f"{pos.probability:.2f}" in score_text(field_status(pos), pos.probability)


# ----- the store --------------------------------------------------------------------------
def test_sample_with_fields_images_and_null_hidden_scores(tmp_path, shots, screener):
    store = RecordStore(tmp_path / "h.sqlite3")
    rec = fill_sample(store, shots, "P-001", ["negative", "ood", "unreadable", "positive", "retake"],
                      screener.release)
    assert [f.status for f in rec.fields] == [N, O, U, P, R] and [f.seq for f in rec.fields] == [1, 2, 3, 4, 5]
    assert rec.verdict.code == REFER and rec.finished and rec.verdict.n_usable == 2
    neg, ood, bad, pos, dark = rec.fields
    assert dark.probability is None and dark.quality == "under-exposed" and dark.image_path.suffix == ".png"
    assert neg.image_path.read_bytes() == shots["negative"][0].read_bytes()   # the capture kept as taken
    assert neg.heatmap_path.is_file() and neg.heatmap_path.read_bytes()[:4] == b"\x89PNG"
    assert ood.image_path.is_file() and ood.heatmap_path is None              # no heatmap without a score
    assert bad.image_path is None and bad.error
    assert pos.probability == pytest.approx(shots["positive"][1].probability)
    assert ood.probability is None and bad.probability is None
    assert neg.model_name == "efficientnet-lite0-binary" and neg.model_variant == "int8"
    assert neg.signature_status == getattr(screener.release, "signature_status", "unknown")
    raw = sqlite3.connect(tmp_path / "h.sqlite3").execute("SELECT status, probability FROM fields ORDER BY id").fetchall()
    assert raw[1] == (O, None) and raw[2] == (U, None) and raw[4] == (R, None)  # stored as NULL, not 1.00
    with pytest.raises(sqlite3.IntegrityError):                             # the schema refuses one too
        store.conn.execute("INSERT INTO fields (uid, sample_ref, seq, created_utc, status, probability) "
                           "VALUES ('x', ?, 9, 't', 'ood', 0.99)", (rec.db_id,))
    with pytest.raises(ConfigError, match="finished"):
        store.add_field(rec.uid, shots["negative"][1])


def test_camera_frame_is_kept_as_png_and_nothing_carries_over(tmp_path, shots, screener):
    import cv2

    store = RecordStore(tmp_path / "h.sqlite3")
    frame = cv2.cvtColor(cv2.imread(str(shots["positive"][0])), cv2.COLOR_BGR2RGB)
    a = store.start_sample("A-1", id_source="scanned")
    fa = store.add_field(a.uid, screener.screen_image(frame), source=frame, release=screener.release)
    b = store.start_sample("B-2")
    assert store.sample(b.uid).fields == [] and store.sample(b.uid).verdict.code == TAKE_MORE
    assert fa.image_path.suffix == ".png" and cv2.imread(str(fa.image_path)).shape == frame.shape
    assert store.sample(a.uid).id_source == "scanned" and [s.sample_id for s in store.samples()] == ["B-2", "A-1"]
    for bad in ("", "   ", "x" * 65):
        with pytest.raises(ConfigError):
            store.start_sample(bad)


def test_append_only_void_and_correct_with_a_reason(tmp_path, shots):
    store = RecordStore(tmp_path / "h.sqlite3")
    rec = fill_sample(store, shots, "P-7", ["negative", "negative2", "positive"])
    assert rec.verdict.code == REFER
    for sql in ("UPDATE samples SET sample_id = 'X'", "DELETE FROM fields", "UPDATE events SET reason = 'x'",
                "DELETE FROM events"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store.conn.execute(sql)
    with pytest.raises(ConfigError, match="reason"):
        store.void_field(rec.fields[2].uid, "  ")
    store.void_field(rec.fields[2].uid, "wrong slide under the microscope")
    store.correct_sample_id(rec.uid, "P-8", "typo in the ID")
    after = store.sample(rec.uid)
    assert after.verdict.code == NO_SIGNS and after.fields[2].voided and len(after.fields) == 3
    assert after.sample_id == "P-8" and after.original_sample_id == "P-7"
    kinds = [e["kind"] for e in store.audit(rec.uid)]
    assert kinds[-2:] == ["void", "correct"] and kinds.count("field_added") == 3
    corr = store.audit(rec.uid)[-1]
    assert corr["data"] == {"field": "sample_id", "old": "P-7", "new": "P-8"} and corr["reason"] == "typo in the ID"
    store.void_sample(rec.uid, "duplicate")
    assert store.sample(rec.uid).voided and store.samples(include_voided=False) == []


def test_local_time_with_zone(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "America/Sao_Paulo")
    time.tzset()
    try:
        s = Stamp.now(datetime(2026, 12, 6, 3, 0, tzinfo=timezone.utc))
        assert s.utc == "2026-12-06T03:00:00.000Z" and s.offset_min == -180
        assert s.display().startswith("2026-12-06 00:00") and "UTC-03:00" in s.display()
        store = RecordStore(tmp_path / "h.sqlite3")
        rec = store.start_sample("TZ-1")
        row = store.conn.execute("SELECT created_utc, tz_offset_min FROM samples").fetchone()
        assert row[0].endswith("Z") and row[1] == -180 and "UTC-03:00" in rec.created.display()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


V1_SCHEMA = """CREATE TABLE screenings (id INTEGER PRIMARY KEY AUTOINCREMENT, time_utc TEXT NOT NULL,
 image_sha256 TEXT, image_path TEXT, sample_id TEXT, probability REAL, decision TEXT, quality TEXT,
 ood INTEGER NOT NULL DEFAULT 0, ood_score REAL, model_name TEXT NOT NULL, model_version TEXT, model_sha256 TEXT,
 threshold REAL, error TEXT)"""


def test_migration_from_the_v1_history_keeps_old_records_readable(tmp_path):
    db = tmp_path / "history.sqlite3"
    con = sqlite3.connect(db)
    con.execute(V1_SCHEMA)
    con.executemany("INSERT INTO screenings (time_utc, sample_id, probability, decision, quality, ood, model_name) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'm')",
                    [("2026-12-01T10:00:00.000Z", "OLD-1", 0.97, "positive", "ok", 0),
                     ("2026-12-01T10:01:00.000Z", "OLD-2", 1.0, "out-of-distribution", "ok", 1),  # v1 kept p=1.00
                     ("2026-12-01T10:02:00.000Z", None, 0.9, "retake", "blurred", 0)])
    con.execute("PRAGMA user_version=1")
    con.commit()
    con.close()
    from leukedge.edge_app.history import History

    store = RecordStore(db)
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == 2
    recs = {s.sample_id: s for s in store.samples()}
    assert set(recs) == {"OLD-1", "OLD-2", "legacy-3"}
    assert recs["OLD-1"].fields[0].probability == pytest.approx(0.97) and recs["OLD-1"].verdict.code == REFER
    assert recs["OLD-2"].fields[0].status == O and recs["OLD-2"].fields[0].probability is None
    assert recs["OLD-2"].created.display() == "2026-12-01 10:01 UTC" and recs["OLD-2"].id_source == "legacy"
    mig = [e for e in store.audit() if e["kind"] == "migrated"]
    assert mig and mig[0]["data"]["imported_screenings"] == 3
    store.close()
    h = History(db)  # the v1 API still reads (and writes) the same file
    assert h.count() == 3 and h.get(2)["probability"] is None and h.get(1)["probability"] == pytest.approx(0.97)
    rid = h.add(sample_id="NEW", probability=0.99, decision="out-of-distribution", model_name="m")
    assert h.get(rid)["probability"] is None
    assert h.conn.execute("SELECT probability FROM screenings WHERE id = ?", (rid,)).fetchone()[0] is None
    assert {s.sample_id for s in h.store.samples()} == {"OLD-1", "OLD-2", "legacy-3", "NEW"}
    h.close()
    assert RecordStore(db).count() == 4  # imported once, not again on the next open


def test_retention_deletes_old_images_and_audits_it(tmp_path, shots):
    store = RecordStore(tmp_path / "h.sqlite3")
    rec = fill_sample(store, shots, "R-1", ["negative", "positive"])
    files = [p for f in rec.fields for p in (f.image_path, f.heatmap_path) if p]
    assert len(files) == 4 and all(p.is_file() for p in files)
    assert store.retention_days() is None and store.apply_retention() == 0  # keep all (default)
    store.set_retention(7)
    assert store.apply_retention() == 0                                  # not old yet
    later = Stamp.now(datetime.now(timezone.utc) + timedelta(days=8))
    assert store.apply_retention(now=later) == 2 and not any(p.exists() for p in files)
    after = store.sample(rec.uid)
    assert all(f.image_deleted and f.image_path is None for f in after.fields)
    assert after.verdict.code == rec.verdict.code and after.fields[1].probability == rec.fields[1].probability
    dels = [e for e in store.audit(rec.uid) if e["kind"] == "image_deleted"]
    assert len(dels) == 2 and dels[0]["reason"] == "retention: images kept 7 days"
    assert store.apply_retention(now=later) == 0                          # each deletion audited once
    with pytest.raises(ConfigError):
        store.set_retention(0)
    store.set_retention(None, "keep all images")
    assert store.retention_days() is None


def test_open_records_on_a_new_path_says_so(tmp_path):
    res = open_records(tmp_path / "sub" / "h.sqlite3")
    assert res.store is not None and "new history database" in res.notice and res.problem is None
    assert json.loads(json.dumps(res.store.audit()[0]["data"]))["to"] == 2


def test_fields_from_several_threads_get_distinct_numbers(tmp_path, shots):
    import threading

    store = RecordStore(tmp_path / "h.sqlite3", rule=VerdictRule(max_attempts=40))
    s = store.start_sample("T-1")
    errors = []

    def work():
        try:
            for _ in range(5):
                store.add_field(s.uid, shots["negative"][1], source=shots["negative"][0])
        except Exception as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    rec = store.sample(s.uid)
    assert not errors and [f.seq for f in rec.fields] == list(range(1, 21))
    assert len({f.image_path for f in rec.fields}) == 20 and all(f.image_path.is_file() for f in rec.fields)


def test_samples_evaluate_cli_on_a_small_split(tmp_path, aria_dir):
    """`leukedge samples evaluate` on 18 real test images of 3 groups, with the committed binary release."""
    import csv as _csv

    from leukedge.cli import main

    rows = [r for r in _csv.DictReader(open("models/efficientnet-lite0-binary/split.csv")) if r["split"] == "test"]
    keep = [r for g in ("Benign:0000", "Pre:0018", "Pro:0008") for r in rows if r["group"] == g][:30]
    keep = [r for r in keep if r["group"] == "Benign:0000"][:6] + [r for r in keep if r["group"] != "Benign:0000"][:12]
    split = tmp_path / "split.csv"
    with open(split, "w", newline="") as fh:
        w = _csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    out = tmp_path / "r.json"
    rc = main(["samples", "evaluate", "--model", "models/efficientnet-lite0-binary", "--data", str(aria_dir),
               "--split", str(split), "--fields", "3", "--k", "1", "2", "--json", str(out), "--csv",
               str(tmp_path / "r.csv"), "--md", str(tmp_path / "r.md")])
    assert rc == 0
    res = json.loads(out.read_text())[0]
    block = res["by_fields"]["3"]
    assert block["n_samples"] == 6 and block["image_level"]["n_images"] == 18
    any2 = next(r for r in block["rules"] if r["rule"] == "any" and r["k"] == 2)
    assert any2["n_leukemia"] == 4 and any2["n_benign"] == 2
    assert any2["sensitivity"]["k"] + any2["missed"]["k"] + any2["cannot_assess_leukemia"]["k"] == 4
    lo, hi = any2["sensitivity"]["ci95"]
    assert 0 <= lo <= any2["sensitivity"]["value"] <= hi <= 1
    assert "| any | 2 | 4 / 2 |" in (tmp_path / "r.md").read_text()
    assert main(["samples", "evaluate", "--model", "models/efficientnet-lite0-binary", "--data",
                 str(tmp_path / "nope")]) == 2


def test_screening_session_two_samples_nothing_carries_over_and_hand_over(tmp_path, shots, screener):
    from leukedge.edge_app.records import ScreeningSession

    session = ScreeningSession(open_records(tmp_path / "h.sqlite3").store, screener)
    with pytest.raises(ConfigError, match="no sample is open"):
        session.add_field(shots["positive"][0])
    a = session.start("A-1")
    step = session.add_field(shots["positive"][0])
    assert step.field.status == P and step.verdict.code == REFER and step.text.headline.startswith("Refer")
    b = session.start("B-2", id_source="scanned")  # A is finished on the way: its verdict is recorded
    assert session.store.sample(a.uid).finished and session.store.sample(a.uid).verdict.code == REFER
    assert session.current().fields == [] and session.current().verdict.code == TAKE_MORE
    s1 = session.add_field(shots["negative"][0])
    assert s1.verdict.code == TAKE_MORE and "another field" in s1.text.next_step
    s2 = session.add_field(shots["ood"][0])
    assert s2.field.probability is None and s2.verdict.code == TAKE_MORE
    s3 = session.add_field(shots["negative2"][0])
    assert s3.verdict.code == NO_SIGNS and "does not rule leukemia out" in s3.text.caveat
    assert [f.status for f in s3.sample.fields] == [N, O, N]  # nothing of A's positive field
    assert session.finish().code == NO_SIGNS and session.current() is None
    paths = session.hand_over(b.uid, tmp_path / "out")
    assert [p.suffix for p in paths] == [".pdf", ".json", ".csv"] and all(p.stat().st_size > 0 for p in paths)
    again = session.hand_over(b.uid, tmp_path / "out", kinds=("csv",))
    assert again[0] != paths[2] and paths[2].exists()
    ev = [e for e in session.store.audit(b.uid) if e["kind"] == "exported"]
    assert len(ev) == 2 and ev[0]["data"]["files"] == [p.name for p in paths]
    with pytest.raises(ConfigError, match="unknown export"):
        session.hand_over(b.uid, tmp_path / "out", kinds=("docx",))


def test_retention_is_applied_when_the_history_opens(tmp_path, shots):
    db = tmp_path / "h.sqlite3"
    store = RecordStore(db)
    rec = fill_sample(store, shots, "OLD", ["negative"])
    store.set_retention(1)
    store.close()
    con = sqlite3.connect(db)  # make the field two days old (outside the store: the test's time machine)
    con.execute("DROP TRIGGER fields_no_update")
    old = (datetime.now(timezone.utc) - timedelta(days=2)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    con.execute("UPDATE fields SET created_utc = ?", (old,))
    con.commit()
    con.close()
    res = open_records(db)
    after = res.store.sample(rec.uid)
    assert after.fields[0].image_deleted and not rec.fields[0].image_path.exists()
    assert res.store.conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'fields_no_update'").fetchone()[0]
