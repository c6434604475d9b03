"""Screening history: transactions, listing, CSV export, and survival of SIGKILL mid-write."""
from __future__ import annotations

import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest


def test_add_list_detail_and_csv(tmp_path):
    from leukedge.edge_app.history import COLUMNS, History

    h = History(tmp_path / "h.sqlite3")
    ids = [h.add(sample_id=f"S-{i}", probability=i / 10, decision="negative", quality="ok",
                 model_name="m", model_version="1", model_sha256="ab" * 32, threshold=0.5) for i in range(3)]
    assert ids == sorted(ids) and h.count() == 3
    assert [r["sample_id"] for r in h.list()] == ["S-2", "S-1", "S-0"]  # newest first
    rec = h.get(ids[1])
    assert rec["probability"] == pytest.approx(0.1) and rec["time_utc"].endswith("Z")
    assert h.get(9999) is None
    rows = list(csv.DictReader(io.StringIO(h.export_csv(tmp_path / "out.csv"))))
    assert [r["sample_id"] for r in rows] == ["S-0", "S-1", "S-2"] and list(rows[0]) == list(COLUMNS)
    assert (tmp_path / "out.csv").read_text().count("\n") == 4
    mode = h.conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal" and h.integrity_check() == "ok"
    h.close()


def test_concurrent_writers_from_threads(tmp_path):
    from leukedge.edge_app.history import History

    h = History(tmp_path / "h.sqlite3")
    errors = []

    def work(k):
        try:
            for i in range(25):
                h.add(sample_id=f"{k}-{i}", model_name="m")
        except Exception as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and h.count() == 100


def test_unknown_column_is_refused(tmp_path):
    from leukedge.edge_app.history import History
    from leukedge.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown history columns"):
        History(tmp_path / "h.sqlite3").add(model_name="m", colour="red")


CHILD = textwrap.dedent("""
    import sys
    from leukedge.edge_app.history import History
    h = History(sys.argv[1])
    i = 0
    while True:
        rid = h.add(sample_id=f"kill-{i}", probability=0.5, decision="negative", quality="ok",
                    model_name="m", model_version="1", image_path="x" * 2000)
        print(rid, flush=True)   # reported only after the commit returned
        i += 1
""")


@pytest.mark.parametrize("round_", range(3))
def test_record_survives_sigkill_mid_write(tmp_path, round_):
    db = tmp_path / "h.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True)
    reported = []
    deadline = time.monotonic() + 30
    try:
        while len(reported) < 40 + 25 * round_ and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            reported.append(int(line))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    # Lines already in the pipe were committed too.
    reported += [int(x) for x in proc.stdout.read().split()]
    assert len(reported) >= 40
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    present = {r[0] for r in con.execute("SELECT id FROM screenings")}
    assert set(reported) <= present
    # And the database keeps working after the crash.
    from leukedge.edge_app.history import History

    h = History(db)
    rid = h.add(model_name="after-crash")
    assert h.get(rid)["model_name"] == "after-crash"


def test_predictions_csv_keeps_the_ranking_of_close_probabilities(tmp_path):
    """predictions.csv keeps float32 precision: a near-constant model (a VGG16 after two epochs
    from scratch: every probability 0.49979...) or a very confident one (1e-8) must not tie
    after rounding, or the ROC-AUC computed from the file differs from the model's."""
    import csv

    import numpy as np
    from sklearn.metrics import roc_auc_score

    from leukedge.spec import ModelSpec
    from leukedge.train.outputs import write_predictions

    spec = ModelSpec(name="t", backbone="tiny-cnn")
    p = np.array([0.4997991, 0.4997992, 0.4997994, 0.4997993, 3e-9, 4e-9], np.float32)
    y = [0, 0, 1, 1, 0, 0]
    rows = [{"path": f"{c}/{i}.jpg", "class": c} for i, c in enumerate("Benign" if t == 0 else "Early" for t in y)]
    out = write_predictions(tmp_path / "predictions.csv", [("test", rows, p[:, None])], spec)
    got = np.array([float(r["probability"]) for r in csv.DictReader(open(out))])
    assert len(set(got)) == len(p)
    assert roc_auc_score(y, got) == roc_auc_score(y, p) == 1.0


def test_every_record_says_which_signature_the_release_had(tmp_path, smear_paths):
    """A release opened with --allow-unsigned (development) is recorded as "unsigned", a signed
    one as "verified": in the screenings row, its CSV export and the sample's field."""
    import shutil

    from leukedge.edge_app.history import History
    from leukedge.edge_app.inference import Screener

    unsigned = tmp_path / "efficientnet-lite0-binary"
    shutil.copytree("models/efficientnet-lite0-binary", unsigned)
    (unsigned / "card.sig").unlink()
    h = History(tmp_path / "h.sqlite3")
    img = smear_paths["Pre"][0]
    for folder, allow in (("models/efficientnet-lite0-binary", False), (unsigned, True)):
        res = Screener(folder, allow_unsigned=allow).screen_image(img, heatmap=False)
        h.add(res, sample_id=f"S-{allow}")
    rows = {r["sample_id"]: r for r in csv.DictReader(io.StringIO(h.csv_text()))}
    assert rows["S-False"]["signature"] == "verified" and rows["S-True"]["signature"] == "unsigned"
    fields = dict(h.conn.execute("SELECT s.sample_id, f.signature_status FROM fields f "
                                 "JOIN samples s ON s.id = f.sample_ref").fetchall())
    assert fields == {"S-False": "verified", "S-True": "unsigned"}
    h.close()


def test_a_history_from_before_the_signature_column_opens_and_reads_unknown(tmp_path):
    from leukedge.edge_app.history import History
    from leukedge.edge_app.records.schema import SCREENINGS_V1

    db = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript(SCREENINGS_V1)
    conn.execute("INSERT INTO screenings (time_utc, sample_id, decision, quality, model_name) "
                 "VALUES ('2026-11-01T10:00:00Z', 'OLD-1', 'negative', 'ok', 'm')")
    conn.commit()
    conn.close()
    h = History(db)
    assert [r["sample_id"] for r in h.list()] == ["OLD-1"]
    assert h.conn.execute("SELECT f.signature_status FROM fields f").fetchone()[0] == "unknown"
    h.close()
