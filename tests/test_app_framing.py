"""Live framing guidance on the camera preview, in the real app with a real video as the camera.

There is no camera here: the camera button opens a video file (``--camera``, the app's frame-source
layer, cv2.VideoCapture) written from real smears with the capture families of
``leukedge.capture_sim``: a phone photo through an eyepiece (clean), the same pushed off-centre,
too dark, out of focus and too bright, each a segment of the video, at twice the eyepiece frame's
size so the guidance judges a downscaled copy. Every hint the app shows is checked against the
segment of the frame it judged; the judging runs on its own thread, stops off the capture screen and
with the camera, and never blocks Capture.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from fixtures_app import tiny_release  # noqa: F401  (fixture)
from leukedge.capture_sim import apply_capture
from leukedge.edge_app import i18n, presenter
from leukedge.edge_app.quality import check_quality
from leukedge.imageio import load_image
from test_app import pilot

pytestmark = pytest.mark.app

FRAMES_PER_SEGMENT = 24


def off_centre(photo: np.ndarray) -> np.ndarray:
    """The eyepiece disc pushed a quarter of the frame towards the left edge (dark surround behind)."""
    out = np.full_like(photo, 6)
    w = photo.shape[1]
    out[:, : w - w // 4] = photo[:, w // 4:]
    return out


@pytest.fixture(scope="module")
def segments(smear_paths):
    """(expected quality status, frame) per segment: real smears through the capture families."""
    s = [load_image(p) for p in smear_paths["Early"][:4]]
    eye = [apply_capture("eyepiece", rgb, 1, seed=i) for i, rgb in enumerate(s)]
    return [("ok", eye[0]), ("off-centre", off_centre(eye[0])), ("ok", eye[1]),
            ("under-exposed", apply_capture("exposure", eye[1], 0.03)),
            ("blurry", apply_capture("eyepiece", apply_capture("defocus", s[2], 5), 1, seed=2)),
            ("over-exposed", apply_capture("exposure", eye[3], 3.0))]


@pytest.fixture(scope="module")
def video(tmp_path_factory, segments):
    """The segments as an MJPG video (twice the eyepiece frame's size); returns (path, status per frame)."""
    path = tmp_path_factory.mktemp("framing") / "eyepiece.avi"
    h, w = segments[0][1].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (2 * w, 2 * h))
    expected = []
    for status, frame in segments:
        big = cv2.cvtColor(cv2.resize(frame, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR), cv2.COLOR_RGB2BGR)
        for _ in range(FRAMES_PER_SEGMENT):
            writer.write(big)
            expected.append(status)
    writer.release()
    # the video is what it claims: the capture path's gate on each decoded full-size frame
    cap = cv2.VideoCapture(str(path))
    for i, status in enumerate(expected):
        ok, bgr = cap.read()
        assert ok, i
        if i % FRAMES_PER_SEGMENT == 0:
            assert check_quality(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).status == status, i
    cap.release()
    return path, expected


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_release, video):
    out = tmp_path_factory.mktemp("framing_run")
    r = pilot("framing", "--model", tiny_release, "--db", out / "h.sqlite3", "--out", out / "r.json",
              "--shots", out / "shots", "--size", "360x640", "--camera", video[0], "--repeat", "2",
              "--timeout", "240", timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    rep = json.loads((out / "r.json").read_text())
    return rep, rep["framing"]


def test_the_hint_follows_the_frame_it_judged(run, video):
    _rep, fr = run
    expected = video[1]
    seen = [s for s in fr["seen"] if s["pos"] is not None]
    assert seen
    for s in seen:
        want = expected[s["pos"]]
        assert s["status"] == want, s
        assert s["hint"] == presenter.FRAMING_HINTS[want], s
        assert s["ready"] == (want == "ok") and s["guide"], s
    # every segment was judged at least once: the hint changed to each advice
    assert {s["status"] for s in seen} == set(expected)
    hints = {s["hint"] for s in seen}
    assert {"Centre the bright circle", "Focus the microscope", "More light", "Less light",
            "Ready: hold still and tap Capture field"} == hints


def test_the_guidance_runs_off_the_ui_thread_on_a_downscaled_copy(run, video):
    _rep, fr = run
    assert fr["main_thread"] == "MainThread"
    for s in fr["seen"]:
        assert s["thread"].startswith("leukedge-framing") and s["thread_id"] != fr["main_thread_id"], s
        assert min(s["size"]) == 480            # the video is 658 px on its short side


def test_the_hint_is_large_and_the_guide_is_drawn(run):
    _rep, fr = run
    lab = fr["label"]
    assert lab["text"] == "Ready: hold still and tap Capture field" and lab["sp"] >= 20
    assert lab["audit"]["problems"] == [], lab["audit"]["problems"]
    x0, y0, x1, y1 = lab["rect"]
    assert 0 <= x0 < x1 <= 360 and 0 <= y0 < y1 <= 640
    assert y0 >= lab["preview_rect"][3] - 1        # under the preview
    # the guide (green when ready) is drawn over the preview, where the video has no green
    shot = cv2.cvtColor(cv2.imread(str(_rep["screenshots"]["framing_ready"])), cv2.COLOR_BGR2RGB).astype(int)
    px0, py0, px1, py1 = lab["preview_rect"]
    r, g, b = (shot[py0:py1, px0:px1, c] for c in range(3))
    green = (g > 180) & (r < 160) & (b < 170)
    assert green.sum() > 100


def test_capture_works_whatever_the_hint_and_the_worker_stops_off_screen(run):
    _rep, fr = run
    assert fr["captured_with"] != "Ready: hold still and tap Capture field"
    assert fr["captured"] == 1                           # guidance, not a lock
    assert fr["left_to"] == "result" and not fr["running_off_screen"] and fr["evaluations_off_screen"] == 0
    assert fr["resumed"]                                 # back on the capture screen with the camera on
    stop = fr["after_stop"]
    assert stop == {"running": False, "hint": "", "camera": False, "evaluations": 0, "guide": False}


def test_the_hints_are_translated():
    i18n.set_language("fr")
    try:
        fr = {k: presenter.framing_hint(k) for k in presenter.FRAMING_HINTS}
    finally:
        i18n.set_language("en")
    assert fr["off-centre"] == "Centrez le cercle lumineux"
    assert all(fr[k] and fr[k] != v for k, v in presenter.FRAMING_HINTS.items()), fr
