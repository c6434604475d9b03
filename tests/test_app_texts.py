"""Result/record wording, settings with a PIN, export names: the app's non-widget parts."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from leukedge.edge_app import presenter
from leukedge.edge_app.sample_id import read_code
from leukedge.edge_app.settings_store import AppSettings, settings_path

RECORD = {"id": 7, "time_utc": "2026-12-06T03:22:10.123Z", "image_sha256": "a" * 64, "image_path": "/x/s.jpg",
          "sample_id": "S-9", "probability": None, "decision": "out-of-distribution", "quality": "ok", "ood": 1,
          "ood_score": 3.2, "model_name": "m", "model_version": "0.1.0", "model_sha256": "b" * 64,
          "threshold": 0.69, "error": None}


@pytest.fixture
def paris(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


def test_local_time_names_its_zone(paris):
    assert presenter.local_time("2026-12-06T03:22:10.123Z") == "2026-12-06 04:22 CET (UTC+01:00)"
    assert presenter.local_time("2026-07-01T12:00:00Z") == "2026-07-01 14:00 CEST (UTC+02:00)"


def test_history_words_never_show_raw_decisions_or_hidden_scores(paris):
    row = presenter.history_row(RECORD)
    assert "S-9" in row and "Cannot assess" in row and "out-of-distribution" not in row and "p=" not in row
    detail = dict(presenter.detail_lines({**RECORD, "probability": 0.99}))   # even if an old record kept one
    assert detail["Model score"] == "hidden (no result)" and detail["Unlike the training smears"] == "yes"
    assert detail["Model file"] == "bbbbbbbbbbbb..." and detail["Image fingerprint"] == "aaaaaaaaaaaa..."
    assert "refer the sample" in detail["What to do"]
    neg = dict(presenter.detail_lines({**RECORD, "decision": "negative", "ood": 0, "probability": 0.12}))
    assert neg["Model score"] == "0.12" and "does not rule leukemia out" in neg["What to do"]
    bad = presenter.history_row({**RECORD, "decision": None, "error": "cannot decode"})
    assert "Not readable" in bad


def test_every_verdict_says_what_to_do_next():
    for decision, verdict in (("positive", "refer"), ("negative", "no_signs"), ("retake", "retake"),
                              ("out-of-distribution", "cannot_assess"), (None, "cannot_assess")):
        assert presenter.verdict_of(decision) == verdict
        t = presenter.verdict_texts(verdict)
        assert len(t["next_step"]) > 40
    assert presenter.score_hidden("retake") and presenter.score_hidden("out-of-distribution")
    assert not presenter.score_hidden("negative")


def test_pin_is_stored_salted_and_hashed_and_settings_survive_a_restart(tmp_path):
    path = settings_path(tmp_path)
    s = AppSettings.load(path)
    assert not s.has_pin and s.language == "en"
    with pytest.raises(Exception, match="at least 4 digits"):
        s.set_pin("12a")
    s.set_pin("4826")
    s.language, s.operating_point, s.model = "fr", "high-sensitivity", "efficientnet-lite0-subtype"
    s.save(path)
    text = path.read_text()
    assert "4826" not in text
    again = AppSettings.load(path)          # a new process reads the same file
    assert again.check_pin("4826") and not again.check_pin("4827") and not again.check_pin("")
    assert (again.language, again.operating_point, again.model) == ("fr", "high-sensitivity",
                                                                     "efficientnet-lite0-subtype")
    other = AppSettings()
    other.set_pin("4826")
    assert other.pin["salt"] != again.pin["salt"] and other.pin["hash"] != again.pin["hash"]   # salted
    path.write_text("{not json")
    assert AppSettings.load(path) == AppSettings()     # a damaged file: defaults, no crash


def test_sample_id_is_read_from_a_qr_label():
    qr = cv2.QRCodeEncoder.create().encode("S-0042\x07")
    label = cv2.copyMakeBorder(cv2.resize(qr, (200, 200), interpolation=cv2.INTER_NEAREST), 40, 40, 40, 40,
                               cv2.BORDER_CONSTANT, value=255)
    frame = np.full((480, 640, 3), 90, np.uint8)          # a label held in a darker camera frame
    frame[100:380, 150:430] = cv2.cvtColor(label, cv2.COLOR_GRAY2RGB)
    assert read_code(frame) == "S-0042"                   # control characters dropped
    assert read_code(np.full((240, 320, 3), 128, np.uint8)) is None
