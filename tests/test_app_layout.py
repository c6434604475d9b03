"""Issue 22's two-sample session in the real app, rendered offscreen at phone, Raspberry Pi 7" and
tablet sizes, every screen audited.

The app is driven by ``leukedge.edge_app.autopilot session`` (real touches: sample A with three fields
of which one is unusable, finished and handed over; "New sample"; sample B with two fields; History;
a sample's detail; voiding a field with a reason; model, guide, PIN, settings). Each screen's
widgets are measured: every button, text field and slider >= 48 dp, every text >= 16 sp, no label
texture wider or taller than its widget (nothing clipped), the verdict >= 20 sp; landscape puts the
image beside the text; French (longer words) fits at 360 dp too.
"""
from __future__ import annotations

import json

import pytest

from fixtures_app import tiny_release  # noqa: F401  (fixture)
from test_app import inputs, pilot  # noqa: F401  (fixture)

pytestmark = pytest.mark.app

SIZES = {"phone": "360x640", "pi7": "800x480", "tablet": "768x1024"}
SCREENS = ("01_capture", "02_a_capture", "03_a_field1", "04_a_field2", "05_a_field3", "06_a_finished",
           "07_new_sample", "08_b_last_field", "09_b_finished", "10_history", "11_detail", "12_amend", "13_model",
           "14_guide", "15_pin", "16_settings")


def run_session(tmp_path, tiny_release, inputs, size, language=None):
    args = ["session", "--model", tiny_release, "--db", tmp_path / "h.sqlite3", "--out", tmp_path / "r.json",
            "--shots", tmp_path / "shots", "--size", size, "--start-dir", inputs["smear"].parent,
            "--fields-a", inputs["smear"], inputs["ood"], inputs["corrupt"],
            "--fields-b", inputs["smear2"], inputs["smear"], "--timeout", "200"]
    if language:
        args += ["--language", language]
    r = pilot(*args, timeout=260)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    return json.loads((tmp_path / "r.json").read_text())


@pytest.mark.parametrize("device", sorted(SIZES))
def test_two_sample_session_fits_the_hand_and_the_screen(tmp_path, tiny_release, inputs, device):
    size = SIZES[device]
    rep = run_session(tmp_path, tiny_release, inputs, size)
    w, h = (int(v) for v in size.split("x"))
    audit = rep["audit"]
    assert set(SCREENS) <= set(audit)
    for name in SCREENS:
        a = audit[name]
        assert a["window"] == [w, h]
        assert a["problems"] == [], (name, a["problems"])
        assert a["labels"] > 0 and a["touch_targets"] > 0
    for name in ("03_a_field1", "06_a_finished", "09_b_finished"):
        assert audit[name]["verdict_sp"] >= 20
    for name in ("03_a_field1", "09_b_finished"):       # 06: the last field of A is the unreadable file
        res = audit[name]
        img_w, img_h = res["image_px"]
        if w > h:     # landscape (Raspberry Pi 7"): image beside the text, at least 300 px tall
            assert res["side_by_side"] and img_h >= 300 and img_w >= 300
        else:         # portrait: the image across the width
            assert not res["side_by_side"] and img_w >= 0.9 * (w - 16) and img_h >= 0.55 * img_w
    # sample A: 3 fields, 2 unusable (a lymphocyte crop: OOD; a corrupt file: unreadable), never a score
    a_fields = rep["sample_a"]["fields"]
    assert a_fields[1]["probability_text"] == "Unlike the smears the model knows: no result"
    assert a_fields[2]["probability_text"] == "Image could not be read: no result"
    assert "corrupt" in a_fields[2]["detail"]        # the whole message, wrapped on screen
    assert rep["sample_a"]["finished"]["finished"]
    assert [s["sample_id"] for s in rep["stored"]] == ["A-0001", "B-0002"]
    assert [len(s["fields"]) for s in rep["stored"]] == [3, 2]
    assert all(s["finished"] for s in rep["stored"])
    assert rep["stored"][0]["fields"][1]["voided"]                     # voided with a reason, not deleted
    assert rep["amend_without_reason"]["error"]                        # a reason is required
    assert "voided (wrong slide)" in rep["detail_after_void"]
    assert rep["after_new_sample"]["selection"] == [] and rep["after_new_sample"]["result_image"] is False
    assert len(rep["hand_over_notes"]) == 4 and all(n.startswith("Saved ") for n in rep["hand_over_notes"])
    assert len(rep["history"]) == 2 and "B-0002" in rep["history"][0] and "2 fields" in rep["history"][0]
    for name in ("01_capture", "06_a_finished", "10_history"):
        assert (tmp_path / "shots" / f"session_{name}-{size}.png").stat().st_size > 5000


def test_french_fits_on_a_phone(tmp_path, tiny_release, inputs):
    rep = run_session(tmp_path, tiny_release, inputs, SIZES["phone"], language="fr")
    for name in SCREENS:
        assert rep["audit"][name]["problems"] == [], (name, rep["audit"][name]["problems"])
    assert rep["sample_a"]["fields"][2]["probability_text"] == "Image illisible : pas de résultat"
