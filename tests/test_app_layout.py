"""Every screen of the real app rendered offscreen at phone, Raspberry Pi 7" and tablet sizes.

The app is driven by ``leukedge.edge_app.autopilot layout`` (real screenings, real touches for the
PIN) and each screen's widgets are measured: every button, text field and slider >= 48 dp, every
text >= 16 sp, no label texture wider or taller than its widget (nothing clipped), the verdict
>= 20 sp; landscape puts the image beside the text; French (longer words) fits at 360 dp too.
"""
from __future__ import annotations

import json

import pytest

from fixtures_app import tiny_release  # noqa: F401  (fixture)
from test_app import inputs, pilot  # noqa: F401  (fixture)

pytestmark = pytest.mark.app

SIZES = {"phone": "360x640", "pi7": "800x480", "tablet": "768x1024"}
SCREENS = ("capture", "capture_error", "result", "result_ood", "history", "model", "guide", "pin", "detail", "settings")


def run_layout(tmp_path, tiny_release, inputs, size, language=None):
    args = ["layout", "--model", tiny_release, "--db", tmp_path / "h.sqlite3", "--out", tmp_path / "r.json",
            "--shots", tmp_path / "shots", "--size", size, "--smear", inputs["smear"], "--ood", inputs["ood"],
            "--corrupt", inputs["corrupt"]]
    if language:
        args += ["--language", language]
    r = pilot(*args)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    return json.loads((tmp_path / "r.json").read_text())


@pytest.mark.parametrize("device", sorted(SIZES))
def test_every_screen_fits_the_hand_and_the_screen(tmp_path, tiny_release, inputs, device):
    size = SIZES[device]
    rep = run_layout(tmp_path, tiny_release, inputs, size)
    w, h = (int(v) for v in size.split("x"))
    audit = rep["audit"]
    assert set(SCREENS) <= set(audit)
    for name in SCREENS:
        a = audit[name]
        assert a["window"] == [w, h]
        assert a["problems"] == [], (name, a["problems"])
        assert a["labels"] > 0 and a["touch_targets"] > 0
    res = audit["result"]
    assert res["verdict_sp"] >= 20
    img_w, img_h = res["image_px"]
    if w > h:     # landscape (Raspberry Pi 7"): image beside the text, at least 300 px tall
        assert res["side_by_side"] and img_h >= 300 and img_w >= 300
    else:         # portrait: the image across the width
        assert not res["side_by_side"] and img_w >= 0.9 * (w - 16) and img_h >= 0.55 * img_w
    # the corrupt-file message is complete on screen (wrapped, not cut)
    assert audit["capture_error"]["status"].startswith("Cannot screen this file") and "corrupt" in audit["capture_error"]["status"]
    for name in ("capture", "result", "settings"):
        assert (tmp_path / "shots" / f"{name}-{size}.png").stat().st_size > 5000


def test_french_fits_on_a_phone(tmp_path, tiny_release, inputs):
    rep = run_layout(tmp_path, tiny_release, inputs, SIZES["phone"], language="fr")
    for name in SCREENS:
        assert rep["audit"][name]["problems"] == [], (name, rep["audit"][name]["problems"])
