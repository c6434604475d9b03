"""The real Kivy app, offscreen, driven by simulated touches (leukedge.edge_app.autopilot).

Each test runs the app in a subprocess (SDL_VIDEODRIVER=offscreen, Mesa llvmpipe) with a hard
timeout, so a stuck app can never hang the suite, then checks the report, the screenshots'
pixels and the history database.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from fixtures_app import tiny_release  # noqa: F401  (fixture)

pytestmark = pytest.mark.app

ENV = {**os.environ, "SDL_VIDEODRIVER": "offscreen", "KIVY_NO_ARGS": "1", "KIVY_NO_CONFIG": "1", "KIVY_NO_FILELOG": "1",
       "KIVY_LOG_MODE": "PYTHON", "OPENBLAS_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def pilot(*args, timeout=150):
    return subprocess.run([sys.executable, "-m", "leukedge.edge_app.autopilot", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, smear_paths, lymph_dir):
    """A small folder for the file chooser: two real smears, one lymphocyte crop, one corrupt file."""
    d = tmp_path_factory.mktemp("chooser")
    files = {"smear": smear_paths["Pre"][1], "smear2": smear_paths["Benign"][1],
             "ood": sorted(lymph_dir.glob("*/*.jpg"))[7]}
    out = {}
    for k, f in files.items():
        (d / f.name).symlink_to(f)
        out[k] = d / f.name
    import cv2

    from leukedge.imageio import load_image

    out["video"] = d / "camera.avi"       # a "camera" for the camera button: real smears as a video
    writer = cv2.VideoWriter(str(out["video"]), cv2.VideoWriter_fourcc(*"MJPG"), 5, (224, 224))
    for f in smear_paths["Early"][:3]:
        writer.write(cv2.cvtColor(load_image(f), cv2.COLOR_RGB2BGR))
    writer.release()
    out["corrupt"] = d / "corrupt.jpg"
    out["corrupt"].write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return out


@pytest.fixture(scope="module")
def tour(tmp_path_factory, tiny_release, inputs):
    out = tmp_path_factory.mktemp("tour")
    r = pilot("tour", "--model", tiny_release, "--db", out / "history.sqlite3", "--out", out / "report.json",
              "--shots", out / "shots", "--size", "480x800", "--smear", inputs["smear"], "--smear2", inputs["smear2"],
              "--ood", inputs["ood"], "--corrupt", inputs["corrupt"], "--camera", inputs["video"])
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    report = json.loads((out / "report.json").read_text())
    report["_dir"] = out
    return report


def crop(png, rect):
    import cv2

    img = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
    x0, y0, x1, y1 = rect
    return img[y0:y1, x0:x1].astype(np.int16)


def test_smear_shows_probability_and_a_heatmap_on_screen(tour):
    s = tour["smear"]
    assert tour["ok"] and not tour.get("error") and tour["model_error"] is None
    assert s["screen"] == "result" and s["show_heatmap"] and not s["finished"]
    assert s["field_title"] == "Sample SMEAR-1, field 1"
    if s["verdict"] == "refer":
        assert s["headline"].startswith("Refer") and "haematologist" in s["next_step"]
        assert re.match(r"Signs of leukemia \(model score (\d\.\d\d)\)", s["probability_text"])
    else:     # one negative field is not enough to call the sample negative
        assert s["verdict"] == "retake" and "another field of view" in s["next_step"]
        assert re.match(r"No signs found \(model score (\d\.\d\d)\)", s["probability_text"])
    assert s["fields"].splitlines()[1].startswith("Field 1: ")
    assert "tiny-release v0.1.0" in s["model_text"]
    shots = tour["screenshots"]
    base = crop(shots["result_heat0"], s["image_rect"])
    full = crop(shots["result_heat1"], s["image_rect"])
    half = crop(shots["result"], s["image_rect"])
    assert base.mean() > 30                       # the smear itself is drawn
    diff_full = np.abs(full - base).mean()
    assert diff_full > 15, diff_full              # the heatmap covers the image at opacity 1
    assert 0.2 * diff_full < np.abs(half - base).mean() < 0.8 * diff_full   # and blends at 0.5
    # JET colours: at full opacity, strongly saturated red/blue-ish pixels dominate the image area
    rgb = full[(full.sum(-1) > 60)]
    sat = rgb.max(1) - rgb.min(1)
    assert (sat > 120).mean() > 0.3
    legend = s["legend"]                          # issue 22 defect 8: a legend and one line on what it shows
    assert legend["shown"] and legend["ends"] == ["low", "high"]
    assert legend["line"].startswith("Colours show the parts of the image that most raised the model's score")
    x0, y0, x1, y1 = legend["bar_rect"]
    mid = (y0 + y1) // 2
    bar = crop(shots["result"], (x0, mid - 3, x1, mid + 3)).reshape(-1, x1 - x0, 3).mean(0)   # RGB per column
    k = max(1, (x1 - x0) // 10)
    low, high = bar[:k].mean(0), bar[-k:].mean(0)
    assert low[2] > low[0] + 60 and high[0] > high[2] + 60, (low, high)   # blue at "low", red at "high"


def test_camera_button_with_a_video_source_adds_a_field(tour):
    c = tour["camera"]
    assert c["screen"] == "result" and c["field_title"] == "Sample SMEAR-1, field 2"
    assert "model score" in c["probability_text"] or "no result" in c["probability_text"]
    assert c["stopped"]
    saved = c["record_image_path"]                       # the camera photo is kept with its record
    assert saved and saved.endswith(".png") and "records-images" in saved
    import cv2

    assert cv2.imread(saved).shape == (224, 224, 3)


def test_out_of_domain_image_is_flagged_not_scored(tour):
    o = tour["ood"]
    assert o["screen"] == "result" and o["probability_text"] == "Unlike the smears the model knows: no result"
    assert not o["show_heatmap"] and "score" not in o["probability_text"]
    assert not o["legend"]["shown"] and o["legend"]["line"] == ""          # no heatmap, no legend
    assert "does not look like" in o["detail"] and "refer the sample" in o["detail"]
    assert "Field 3: unlike the smears the model knows: no result" in o["fields"]


def test_corrupt_file_is_a_failed_attempt_and_the_app_keeps_working(tour):
    c = tour["corrupt"]
    assert c["screen"] == "result" and c["probability_text"] == "Image could not be read: no result"
    assert c["detail"].startswith("The file could not be read") and "corrupt" in c["detail"]
    assert tour["after_corrupt"]["probability_text"].startswith(("Signs of leukemia", "No signs found"))


def test_finished_sample_is_handed_over_as_new_files(tour):
    f = tour["finished"]
    assert f["finished"] and f["performance"].startswith("On ") and "95% CI" in f["performance"]
    names = tour["exports"]
    pdfs = [n for n in names if n.endswith(".pdf")]
    assert len(pdfs) == 2 and len(set(pdfs)) == 2                  # the second PDF did not overwrite the first
    assert any(n.endswith(".fhir.json") for n in names) and any(n.endswith(".csv") for n in names)
    assert all(n.startswith("Saved ") for n in tour["hand_over_notes"])
    from leukedge.edge_app.exports.fhir import parse_bundle

    fhir = next(n for n in names if n.endswith(".fhir.json"))
    bundle = parse_bundle((tour["_dir"] / "exports" / fhir).read_text())       # valid FHIR R4
    assert bundle.entry


def test_history_detail_model_info_and_settings(tour):
    h = tour["history"]
    assert h["count"] == 2 and len(h["rows"]) == 2
    assert "SMEAR-2" in h["rows"][0] and "SMEAR-1" in h["rows"][1] and "4 fields" in h["rows"][1]
    assert not any("out-of-distribution" in r or "p=" in r for r in h["rows"])    # plain words, no hidden score
    assert all(re.search(r"\d\d:\d\d (UTC|\S* ?\(UTC[+-]\d\d:\d\d\))", r) for r in h["rows"])  # local time + zone
    assert "Sample ID:[/b] SMEAR-2" in tour["detail"] and "Audit trail" in tour["detail"]
    assert not re.search(r"[0-9a-f]{40}", tour["detail"])                       # hashes shortened
    stored = {s["sample_id"]: s for s in tour["stored"]}
    one = stored["SMEAR-1"]
    assert [f["status"] for f in one["fields"]][2:] == ["ood", "unreadable"]
    assert all(f["probability"] is None for f in one["fields"][2:])          # a hidden score is not stored
    con = sqlite3.connect(tour["_dir"] / "history.sqlite3")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*) FROM fields WHERE status IN ('ood', 'unreadable', 'retake') "
                       "AND probability IS NOT NULL").fetchone()[0] == 0
    assert tour["pin_screen"] == {"screen": "pin", "creating": True}           # settings are behind a PIN
    exports = tour["history_exports"]                                          # exports never overwrite
    assert len(set(exports)) == 3 and all(re.fullmatch(r"leukedge-samples-\d{8}-\d{6}-\d{3}(-\d+)?\.csv", f)
                                          for f in exports)
    assert tour["export_summary"].startswith("Exported to ")
    assert "recall" in tour["model_info"] and "tiny-release" in tour["model_info"]
    assert tour["settings"]["operating_points"] == ["default (0.50)", "high-sensitivity (0.30)"]
    assert tour["settings"]["models"] == ["tiny-release"]
    applied = tour["settings"]["after_apply"]          # only validated thresholds can be chosen
    assert applied["threshold"] == pytest.approx(0.3) and "refers at 0.30" in applied["model_text"]
    assert tour["settings"]["retention_values"] == ["keep all", "30 days", "90 days", "365 days"]
    assert applied["retention_days"] == 30                      # image retention chosen in Settings, audited
    assert con.execute("SELECT reason, data FROM events WHERE kind = 'retention_set'").fetchall() == [
        ("changed in Settings", '{"keep_days": 30}')]
    assert tour["settings"]["relocked"]                                          # leaving Settings locks them
    assert tour["settings"]["wrong_pin"] == {"screen": "pin", "message": "Wrong PIN."}
    assert tour["settings"]["french"]["history_button"] == "Historique"          # the language applies at once
    saved = json.loads((tour["_dir"] / "settings.json").read_text())   # kept across restarts
    assert saved["language"] == "fr"
    assert tour["settings"]["locked_after_apply"]                                 # applying locks Settings again
    assert tour["settings"]["pin_change"] == {"screen": "pin", "creating": True, "old_refused": True}
    assert saved["operating_point"] == "high-sensitivity" and saved["model"] == "tiny-release"
    assert "2468" not in json.dumps(saved) and len(saved["pin"]["hash"]) == 64 and len(saved["pin"]["salt"]) == 32
    for name in ("capture", "capture_camera", "result", "result_ood", "result_unreadable", "history", "detail",
                 "model", "settings"):
        assert os.path.getsize(tour["screenshots"][name]) > 5000


def test_new_sample_carries_nothing_over(tmp_path, tiny_release, inputs):
    """Issue 22 defect 1, by touch: S-1 with image A, finish, "New sample", start S-2, tap "Add this
    field" (nothing is added: no image chosen), choose image B: S-2 holds B's hash only; A is never
    recorded under S-2."""
    import hashlib

    db = tmp_path / "history.sqlite3"
    r = pilot("mixup", "--model", tiny_release, "--db", db, "--out", tmp_path / "r.json", "--size", "360x640",
              "--smear", inputs["smear"], "--smear2", inputs["smear2"])
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["after_field"]["selection"] == []                      # a chosen file is used once
    after = rep["after_new_sample"]
    assert after["screen"] == "capture" and after["selection"] == [] and after["sample_id"] == ""
    assert after["sample_open"] == "" and after["session_open"] is None
    assert not after["preview"] and not after["result_image"] and not after["result_heatmap"]
    assert after["result_headline"] == "" and after["result_fields"] == ""
    assert after["selected_text"] == "No image selected."
    w = rep["screen_without_image"]
    assert w["error"] and w["status"] == "Choose an image first." and w["fields"] == 0 and w["screen"] == "capture"
    assert w["sample_open"] == "S-2"
    sha = {k: hashlib.sha256(inputs[k].read_bytes()).hexdigest() for k in ("smear", "smear2")}
    assert sha["smear"] != sha["smear2"]
    assert [(s["sample_id"], [f["image_sha256"] for f in s["fields"]]) for s in rep["stored"]] == [
        ("S-1", [sha["smear"]]), ("S-2", [sha["smear2"]])]
    con = sqlite3.connect(db)      # the database agrees: A's image only under S-1
    rows = con.execute("SELECT s.sample_id, f.image_sha256 FROM fields f JOIN samples s ON f.sample_ref = s.id "
                       "ORDER BY f.id").fetchall()
    assert rows == [("S-1", sha["smear"]), ("S-2", sha["smear2"])]


def test_a_field_is_never_recorded_under_a_sample_started_after_it(tmp_path, tiny_release, inputs):
    """The session refuses to record a field for a sample that is no longer the open one."""
    from leukedge.edge_app.inference import Screener
    from leukedge.edge_app.records import ScreeningSession, open_records
    from leukedge.errors import ConfigError

    session = ScreeningSession(open_records(tmp_path / "h.sqlite3").store, Screener(tiny_release))
    a = session.start("S-1")
    res = session.screener.screen_image(inputs["smear"])
    session.finish()
    session.start("S-2")
    with pytest.raises(ConfigError, match="no longer open"):
        session.record_field(res, inputs["smear"], sample_uid=a.uid)
    assert session.current().fields == []


def test_sample_id_scanned_from_a_qr_label_with_the_camera(tmp_path, tiny_release):
    """A QR label in front of the camera (a video of it): Scan ID fills the ID, the sample is stored
    with its ID source "scanned"."""
    import cv2

    qr = cv2.QRCodeEncoder.create().encode("QR-0042")
    label = cv2.copyMakeBorder(cv2.resize(qr, (160, 160), interpolation=cv2.INTER_NEAREST), 40, 40, 40, 40,
                               cv2.BORDER_CONSTANT, value=255)
    frame = cv2.cvtColor(cv2.resize(label, (320, 320), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR)
    video = tmp_path / "label.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (320, 320))
    for _ in range(10):
        writer.write(frame)
    writer.release()
    r = pilot("scan", "--model", tiny_release, "--db", tmp_path / "h.sqlite3", "--out", tmp_path / "r.json",
              "--size", "360x640", "--camera", video)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["scanned"] == {"text": "QR-0042", "status": "Sample ID read from the label: QR-0042", "source": "scanned"}
    assert [(s["sample_id"], s["id_source"], len(s["fields"])) for s in rep["stored"]] == [("QR-0042", "scanned", 1)]


def test_changing_the_language_keeps_the_open_sample(tmp_path, tiny_release, inputs):
    r = pilot("relanguage", "--model", tiny_release, "--db", tmp_path / "h.sqlite3", "--out", tmp_path / "r.json",
              "--size", "360x640", "--smear", inputs["smear"], "--smear2", inputs["smear2"])
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    rep = json.loads((tmp_path / "r.json").read_text())
    after = rep["after_rebuild"]
    assert after["sample_open"] == "LANG-1" and after["sample_id"] == "LANG-1"
    assert after["start_button"] == "Terminer" and after["sample_text"].startswith("Échantillon LANG-1 : 1 champ")
    assert [(s["sample_id"], len(s["fields"])) for s in rep["stored"]] == [("LANG-1", 2)]


def test_damaged_or_vanished_database_is_a_message_not_a_crash(tmp_path, tiny_release, inputs):
    """A damaged history file: moved aside and said on screen; the database file removed while a
    sample is open: the field is still shown, with "NOT saved" and why; the app keeps running."""
    db = tmp_path / "history.sqlite3"
    db.write_bytes(b"SQLite format 3\x00" + b"\x13" * 4000)          # a damaged database file
    r = pilot("records_trouble", "--model", tiny_release, "--db", db, "--out", tmp_path / "r.json",
              "--size", "360x640", "--smear", inputs["smear"], "--smear2", inputs["smear2"])
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["ok"] and "damaged" in rep["notice"]["text"] and rep["notice"]["error"]
    assert list(tmp_path.glob("history.sqlite3.damaged-*"))                 # moved aside, not deleted
    assert rep["first"] == {"note": "", "saved": True}
    second = rep["second"]
    assert second["screen"] == "result" and second["probability_text"]     # the result is still shown
    assert second["note"].startswith("This field was NOT saved:") and "removed or replaced" in second["note"]
    assert second["error"] and second["status"] == second["note"]
    assert rep["finish"]["screen"] == "result" and not rep["finish"]["finished"]
    assert "removed or replaced" in rep["finish"]["note"]


def test_settings_are_kept_across_a_restart(tour, tiny_release, tmp_path):
    """A new app process on the same data folder: French, PIN still set, saved operating point."""
    import shutil

    for name in ("history.sqlite3", "settings.json"):
        shutil.copyfile(tour["_dir"] / name, tmp_path / name)
    r = pilot("startup", "--model", tiny_release, "--db", tmp_path / "history.sqlite3", "--out", tmp_path / "r.json",
              "--size", "360x640", timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    started = json.loads((tmp_path / "r.json").read_text())["started_with"]
    assert started == {"language": "fr", "has_pin": True, "threshold": pytest.approx(0.3), "retention_days": 30}


def test_app_process_imports_no_tensorflow(tour):
    assert tour["tensorflow_imported"] == []
    assert len(tour["latencies_ms"]) == 5 and all(v > 0 for v in tour["latencies_ms"])   # one per field


def test_history_survives_killing_the_app_mid_screening(tmp_path, tiny_release, inputs):
    """SIGKILL the running app while it screens and records images in a loop."""
    db = tmp_path / "history.sqlite3"
    proc = subprocess.Popen([sys.executable, "-m", "leukedge.edge_app.autopilot", "latency", "--model", tiny_release,
                             "--db", db, "--out", tmp_path / "r.json", "--size", "320x480", "--repeat", "500",
                             "--images", inputs["smear"], inputs["smear2"], "--timeout", "120"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    seen = set()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(seen) < 4 and proc.poll() is None:
            time.sleep(0.2)
            if db.exists():
                try:
                    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
                    seen |= {r[0] for r in con.execute("SELECT id FROM fields")}
                    con.close()
                except sqlite3.OperationalError:
                    pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert len(seen) >= 4, "the app did not record fields"
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert seen <= {r[0] for r in con.execute("SELECT id FROM fields")}


def test_tampered_model_is_refused_with_a_message_in_the_app(tmp_path, tiny_release):
    import shutil

    copy = tmp_path / tiny_release.name
    shutil.copytree(tiny_release, copy)
    f = copy / f"{tiny_release.name}.int8.tflite"
    data = bytearray(f.read_bytes())
    data[100] ^= 0xFF
    f.write_bytes(bytes(data))
    r = pilot("startup", "--model", copy, "--db", tmp_path / "h.sqlite3", "--out", tmp_path / "r.json",
              "--size", "320x480", timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert "does not match the model card" in report["model_error"]
    assert report["capture_status"].startswith("Model refused:")
