"""Drive the real app with simulated touches, frame by frame, and write what happened as JSON.

Used by the app tests, ``scripts/screenshots.py`` and :mod:`leukedge.edge_app.measure`.
A scenario is a generator taking the :class:`Pilot`; it acts (touches real buttons with
``UnitTestTouch``, picks files in the real file chooser) and yields what to wait for: an
``int`` (that many frames) or a predicate (until true). Everything runs on the Kivy main
thread, between frames; a global timeout stops a stuck run.

Run: ``python -m leukedge.edge_app.autopilot SCENARIO --model DIR --out REPORT.json [...]``
(with ``SDL_VIDEODRIVER=offscreen`` on a machine without a display).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from .i18n import language, set_language

log = logging.getLogger(__name__)


class Pilot:
    """Runs a scenario inside the app's main loop and records a report."""

    def __init__(self, app, scenario, out: Path, shots: Path | None = None, timeout_s: float = 90.0):
        self.app, self.scenario, self.out = app, scenario, Path(out)
        self.shots = Path(shots) if shots else None
        self.timeout_s = timeout_s
        self.report: dict = {"steps": [], "screenshots": {}, "ok": False}
        self._gen = None
        self._wait = 0
        self._t0 = time.monotonic()
        self._first_flip = None
        self.frame_dts: list[float] = []

    # ----- helpers the scenarios use -----------------------------------------------------
    @property
    def ctl(self):
        return self.app.controller

    def screen(self, name):
        return self.app.root.get_screen(name)

    def touch(self, widget):
        """A real touch down/up at the widget's centre (through the window's input path)."""
        from kivy.tests.common import UnitTestTouch

        x, y = widget.to_window(*widget.center)
        t = UnitTestTouch(x, y)
        t.touch_down()
        t.touch_up()
        self.log(f"touch {widget.__class__.__name__} '{getattr(widget, 'text', '')}'")

    def choose(self, path):
        """Open the file chooser on the file's folder and select it."""
        chooser = self.screen("capture").ids.chooser
        chooser.path = str(Path(path).parent)
        chooser.selection = [str(path)]
        self.log(f"choose {path}")

    def scroll_to_file(self, path):
        """Scroll the file list so that the row of ``path`` is on screen (as a user would)."""
        rv = self.screen("capture").ids.chooser
        idx = next((i for i, d in enumerate(rv.data) if d["path"] == str(path)), 0)
        rv.scroll_y = 1.0 - idx / max(1, len(rv.data) - 1)

    def file_row(self, path):
        """The file list's row widget showing ``path`` (None when it is not on screen)."""
        layout = self.screen("capture").ids.chooser.children[0]
        return next((w for w in layout.children if getattr(w, "path", None) == str(path)), None)

    def type_text(self, text_input, text: str):
        """Touch a text field (focus), clear it and type ``text`` as keyboard input."""
        self.touch(text_input)
        text_input.select_all()
        text_input.delete_selection()
        text_input.insert_text(text)
        self.log(f"type '{text}'")

    def rect(self, widget) -> list[int]:
        """Widget rectangle in screenshot pixels: [left, top, right, bottom] (top-left origin)."""
        from kivy.core.window import Window

        x0, y0 = widget.to_window(*widget.pos)
        x1, y1 = widget.to_window(widget.right, widget.top)
        h = Window.height
        return [int(x0), int(h - y1), int(x1), int(h - y0)]

    def screenshot(self, name: str) -> str | None:
        from kivy.core.window import Window

        if self.shots is None:
            return None
        self.shots.mkdir(parents=True, exist_ok=True)
        produced = Window.screenshot(name=str(self.shots / f"{name}.png"))  # Kivy appends a counter
        target = self.shots / f"{name}.png"
        if produced and Path(produced) != target:
            os.replace(produced, target)
        self.report["screenshots"][name] = str(target)
        return str(target)

    def log(self, msg: str) -> None:
        self.report["steps"].append(f"{time.monotonic() - self._t0:7.3f}s {msg}")

    def result_done(self):
        return not self.ctl.busy and self.app.root.current == "result"

    # ----- loop -------------------------------------------------------------------------
    def start(self):
        from kivy.clock import Clock
        from kivy.core.window import Window

        def first_flip(*_):
            Window.unbind(on_flip=first_flip)
            self._first_flip = time.time()
            self.report["first_frame_unix"] = self._first_flip

        Window.bind(on_flip=first_flip)
        self._gen = self.scenario(self)
        self._ev = Clock.schedule_interval(self._tick, 0)

    def _tick(self, dt):
        self.frame_dts.append(dt)
        if time.monotonic() - self._t0 > self.timeout_s:
            self.report["error"] = f"timeout after {self.timeout_s}s"
            return self._finish()
        if isinstance(self._wait, int):
            if self._wait > 0:
                self._wait -= 1
                return None
        elif callable(self._wait):
            if not self._wait():
                return None
        try:
            self._wait = next(self._gen)
        except StopIteration:
            self.report["ok"] = True
            return self._finish()
        except Exception as exc:  # report the failure instead of hanging
            log.exception("scenario failed")
            self.report["error"] = f"{type(exc).__name__}: {exc}"
            return self._finish()
        return None

    def _finish(self):
        self._ev.cancel()
        self.report["tensorflow_imported"] = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
        self.report["latencies_ms"] = list(self.ctl.latencies_ms) if self.ctl else []
        self.report["inference_path_ms"] = list(self.ctl.path_ms) if self.ctl else []
        self.report["latency_parts_ms"] = list(self.ctl.latency_parts) if self.ctl else []
        dts = sorted(self.frame_dts[5:]) or [0.0]
        self.report["frame_interval_ms"] = {"median": 1000 * dts[len(dts) // 2], "p90": 1000 * dts[int(len(dts) * 0.9)],
                                            "n": len(dts)}
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.report, indent=2, default=str))
        self.app.stop()
        return False


def wait_model(p):
    yield lambda: p.ctl.screener is not None or p.ctl.model_error is not None
    p.report["model_error"] = p.ctl.model_error
    p.report["capture_status"] = p.screen("capture").status_text
    p.report["model_loaded_unix"] = time.time()
    yield 3
    p.report["started_with"] = {"language": language(), "has_pin": p.ctl.settings.has_pin,
                                "threshold": p.ctl.screener.threshold if p.ctl.screener else None}


def screen_file(p, path, sample_id=""):
    """Choose a file in the capture screen and touch the screen button; waits for the outcome."""
    cap = p.screen("capture")
    if p.app.root.current != "capture":
        p.app.go("capture")
        yield 2
    p.choose(path)
    cap.ids.sample_id.text = sample_id
    yield 2
    p.touch(cap.ids.btn_screen)
    yield 1
    yield lambda: not p.ctl.busy
    yield 3


def result_state(p) -> dict:
    r = p.screen("result")
    return {"headline": r.headline, "verdict": r.verdict, "next_step": r.next_step, "probability_text": r.probability_text, "detail": r.detail_text,
            "model_text": r.model_text, "show_heatmap": r.show_heatmap, "screen": p.app.root.current,
            "image_rect": p.rect(r.ids.image_box)}


# ----- scenarios --------------------------------------------------------------------------
def tour(p):
    """The app test and screenshots: smear -> result (+heatmap at 3 opacities), OOD, corrupt, history."""
    a = p.args
    yield from wait_model(p)
    p.screenshot("capture")
    yield from screen_file(p, a.smear, "SMEAR-1")
    p.report["smear"] = result_state(p)
    slider = p.screen("result").ids.opacity_slider
    for name, value in (("result", 0.5), ("result_heat0", 0.0), ("result_heat1", 1.0)):
        slider.value = value
        yield 3
        p.screenshot(name)
    slider.value = 0.5
    if a.camera:   # the camera button with a video file as the camera (frame-source layer)
        p.touch(p.screen("result").ids.btn_again)
        yield 2
        cap = p.screen("capture")
        p.touch(cap.ids.btn_camera)
        yield lambda: p.ctl._frame is not None
        yield 3
        p.screenshot("capture_camera")
        p.touch(cap.ids.btn_scan)                 # a smear, not a label: no ID read
        yield 1
        yield lambda: not p.ctl.busy and cap.status_error
        p.report["scan_status"] = cap.status_text
        p.touch(cap.ids.btn_screen)
        yield 1
        yield lambda: not p.ctl.busy
        yield 3
        p.report["camera"] = result_state(p)
        p.report["camera"]["image_path"] = p.ctl.last_result.path if p.ctl.last_result else "?"
        yield lambda: p.ctl.history.count() >= 2
        p.report["camera"]["record_image_path"] = p.ctl.history.list(1)[0]["image_path"]
        p.app.go("capture")
        yield 1
        p.touch(cap.ids.btn_camera)   # stop it again
        yield 2
        p.report["camera"]["stopped"] = p.ctl.source is None
    if a.ood:
        p.touch(p.screen("result").ids.btn_again)
        yield 2
        yield from screen_file(p, a.ood, "OOD-1")
        p.report["ood"] = result_state(p)
        p.screenshot("result_ood")
    if a.corrupt:
        yield from screen_file(p, a.corrupt)
        cap = p.screen("capture")
        p.report["corrupt"] = {"status": cap.status_text, "error": cap.status_error, "screen": p.app.root.current}
        p.screenshot("capture_error")
        yield from screen_file(p, a.smear2 or a.smear, "SMEAR-2")   # still alive and working
        p.report["after_corrupt"] = result_state(p)
    if p.app.root.current != "result":
        p.app.go("result")
        yield 2
    p.touch(p.screen("result").ids.btn_history)
    yield lambda: p.app.root.current == "history" and p.ctl.last_record_id is not None
    yield lambda: len(p.screen("history").ids.rv.data) >= p.ctl.history.count() > 0
    yield 3
    p.report["history"] = {"rows": [d["text"] for d in p.screen("history").ids.rv.data],
                           "count": p.ctl.history.count()}
    p.screenshot("history")
    hist = p.screen("history")
    exports = p.ctl.history.path.parent / "exports"
    for i in range(2):        # two exports in the same second: two files, the first one kept
        p.touch(hist.ids.btn_export)
        yield lambda: len(list(exports.glob("*.csv"))) > i and hist.summary.startswith("Export")
    p.report["exports"] = sorted(f.name for f in exports.glob("*.csv"))
    p.report["export_summary"] = hist.summary
    rows = [c for c in p.screen("history").ids.rv.children[0].children]
    if rows:
        p.touch(rows[-1])   # children are in reverse order: the last is the top row
        yield 3
        p.report["detail"] = p.screen("detail").text
        p.screenshot("detail")
    p.app.go("model")
    yield 5
    p.report["model_info"] = p.screen("model").text
    p.screenshot("model")
    p.app.go("capture")
    yield 2
    p.touch(p.screen("capture").ids.btn_settings)      # locked: the PIN screen first
    yield lambda: p.app.root.current != "capture"
    yield 2
    pin = p.screen("pin")
    p.report["pin_screen"] = {"screen": p.app.root.current, "creating": pin.creating}
    p.type_text(pin.ids.pin, "2468")
    p.touch(pin.ids.btn_ok)
    yield lambda: p.app.root.current == "settings"
    yield 3
    p.report["settings"] = {"models": list(p.screen("settings").model_values),
                            "operating_points": list(p.screen("settings").op_values)}
    p.screenshot("settings")
    st = p.screen("settings")
    if len(st.op_values) > 1:   # choose the second validated operating point and apply
        st.ids.op_spinner.text = st.op_values[1]
        yield 2
        p.touch(st.ids.btn_apply)
        yield lambda: p.app.root.current == "capture"
        yield 3
        p.report["settings"]["after_apply"] = {"threshold": p.ctl.screener.threshold,
                                               "model_text": p.screen("capture").model_text}
    # Settings lock again when left; a wrong PIN is refused; the language changes every screen.
    p.touch(p.screen("capture").ids.btn_settings)
    yield lambda: p.app.root.current != "capture"
    yield 2
    p.report["settings"]["relocked"] = p.app.root.current == "pin" and not pin.creating
    p.type_text(pin.ids.pin, "0000")
    p.touch(pin.ids.btn_ok)
    yield 3
    p.report["settings"]["wrong_pin"] = {"screen": p.app.root.current, "message": pin.message}
    p.type_text(pin.ids.pin, "2468")
    p.touch(pin.ids.btn_ok)
    yield lambda: p.app.root.current == "settings"
    yield 2
    st.ids.language_spinner.text = "Français"
    yield 2
    p.touch(st.ids.btn_apply)
    yield lambda: p.app.root.current == "capture"
    yield 3
    p.report["settings"]["french"] = {"history_button": p.screen("capture").ids.btn_history.text,
                                      "status": p.screen("capture").status_text}
    p.screenshot("capture_fr")
    # Change the PIN from the (unlocked) settings: the old one stops working.
    pin, st = p.screen("pin"), p.screen("settings")      # the language change re-created the screens
    p.touch(p.screen("capture").ids.btn_settings)
    yield lambda: p.app.root.current != "capture"
    p.report["settings"]["locked_after_apply"] = p.app.root.current == "pin"
    if p.app.root.current != "pin":
        return
    yield 2
    p.type_text(pin.ids.pin, "2468")
    p.touch(pin.ids.btn_ok)
    yield lambda: p.app.root.current == "settings"
    yield 2
    p.touch(st.ids.btn_change_pin)
    yield lambda: p.app.root.current == "pin"       # a tap inside a ScrollView arrives a little later
    yield 2
    changing = {"screen": p.app.root.current, "creating": pin.creating}
    p.type_text(pin.ids.pin, "97531")
    p.touch(pin.ids.btn_ok)
    yield lambda: p.app.root.current == "settings"
    yield 2
    p.touch(st.ids.btn_back)
    yield lambda: p.app.root.current == "capture"
    yield 2
    p.touch(p.screen("capture").ids.btn_settings)
    yield lambda: p.app.root.current == "pin"
    yield 2
    p.type_text(pin.ids.pin, "2468")
    p.touch(pin.ids.btn_ok)
    yield lambda: pin.error or p.app.root.current == "settings"
    old_refused = p.app.root.current == "pin" and pin.error
    p.type_text(pin.ids.pin, "97531")
    p.touch(pin.ids.btn_ok)
    yield lambda: p.app.root.current == "settings"
    p.report["settings"]["pin_change"] = {**changing, "old_refused": old_refused}


def mixup(p):
    """The reported sample mix-up, by touch: sample S-1 with image A, "New sample", type S-2 and
    tap Screen at once (must not re-screen A), then choose image B by touch and screen it."""
    a = p.args
    cap, res = p.screen("capture"), p.screen("result")
    yield from wait_model(p)
    p.ctl.screen("capture").ids.chooser.path = str(Path(a.smear).parent)
    yield 3
    p.scroll_to_file(a.smear)
    yield 3
    p.touch(p.file_row(a.smear))
    yield lambda: cap.ids.chooser.selection   # a ScrollView passes a tap on after a short delay
    p.type_text(cap.ids.sample_id, "S-1")
    yield 1
    p.log(f"selection {cap.ids.chooser.selection}, sample ID '{cap.sample_id()}'")
    p.touch(cap.ids.btn_screen)
    yield 1
    p.log(f"status '{cap.status_text}'")
    yield lambda: p.result_done()
    yield lambda: p.ctl.last_record_id is not None
    yield 2
    p.report["first"] = result_state(p)
    p.touch(res.ids.btn_again)
    yield 3
    p.report["after_new_sample"] = {
        "screen": p.app.root.current, "selection": list(cap.ids.chooser.selection),
        "sample_id": cap.ids.sample_id.text, "preview": cap.ids.preview.texture is not None,
        "selected_text": cap.ids.selected.text, "result_headline": res.headline,
        "result_image": res.base_texture is not None, "result_heatmap": res.heat_texture is not None}
    p.screenshot("capture_new_sample")
    p.type_text(cap.ids.sample_id, "S-2")
    yield 1
    p.touch(cap.ids.btn_screen)             # the reported step: tapping Screen with the new ID
    yield 5
    yield lambda: not p.ctl.busy
    p.report["screen_without_image"] = {"status": cap.status_text, "error": cap.status_error,
                                        "screen": p.app.root.current, "records": p.ctl.history.count()}
    p.scroll_to_file(a.smear2)
    yield 3
    p.touch(p.file_row(a.smear2))
    yield lambda: cap.ids.chooser.selection
    p.touch(cap.ids.btn_screen)
    yield 1
    yield lambda: p.result_done()
    yield lambda: p.ctl.history.count() >= 2
    yield 2
    p.report["second"] = result_state(p)
    p.report["records"] = [{"sample_id": r["sample_id"], "image_sha256": r["image_sha256"],
                            "image_path": r["image_path"]} for r in reversed(p.ctl.history.list())]


def audit(p, name: str) -> dict:
    """Sizes on the current screen: touch targets, font sizes, text wider than its widget."""
    from kivy.core.window import Window
    from kivy.metrics import dp, sp
    from kivy.uix.button import Button
    from kivy.uix.label import Label
    from kivy.uix.slider import Slider
    from kivy.uix.textinput import TextInput

    def shown(w):
        while w is not None and w is not Window:
            if w.opacity <= 0 or w.height < 1 or w.width < 1:
                return False
            w = w.parent
        return True

    screen = p.screen(name)
    problems, n_targets, n_labels = [], 0, 0
    for w in screen.walk(restrict=True):
        if not shown(w):
            continue
        label = f"{type(w).__name__}#{next((k for k, v in screen.ids.items() if v is w), '')} '{str(getattr(w, 'text', ''))[:40]}'"
        if isinstance(w, (Button, TextInput, Slider)):
            n_targets += 1
            if w.height < dp(48) - 0.5 or w.width < dp(48) - 0.5:
                problems.append(f"touch target {label} is {w.width:.0f}x{w.height:.0f} px (< 48 dp)")
        if isinstance(w, Label) and w.text:
            n_labels += 1
            w.texture_update()
            if w.font_size < sp(16) - 0.01:
                problems.append(f"text {label} at {w.font_size / sp(1):.0f} sp (< 16 sp)")
            if w.texture_size[0] > w.width + 1:
                problems.append(f"text {label} is {w.texture_size[0]} px wide in a {w.width:.0f} px widget")
            if w.texture_size[1] > w.height + 1:
                problems.append(f"text {label} is {w.texture_size[1]} px tall in a {w.height:.0f} px widget")
    out = {"problems": problems, "touch_targets": n_targets, "labels": n_labels,
           "window": [Window.width, Window.height]}
    if name == "capture":
        out["status"] = screen.status_text
    if name == "result":
        h = screen.ids.headline
        out["verdict_sp"] = h.font_size / sp(1)
        out["image_px"] = [round(screen.ids.image_box.width), round(screen.ids.image_box.height)]
        vis, text = p.rect(screen.ids.visual), p.rect(screen.ids.text_box)
        out["side_by_side"] = vis[2] <= text[0] + 1
    return out


def layout(p):
    """Every screen at the window's size, filled with real content, audited (see :func:`audit`)."""
    a = p.args
    if a.language:
        set_language(a.language)
        p.ctl.settings.language = a.language      # as if chosen in Settings (not saved)
        p.app.rebuild_screens()
        yield 2
    yield from wait_model(p)
    p.report["audit"] = {}

    def check(name, as_name=None):
        as_name = as_name or name
        p.report["audit"][as_name] = audit(p, name)
        p.report["audit"][as_name]["screen"] = name
        p.screenshot(f"{as_name}-{a.size}")

    if a.corrupt:
        yield from screen_file(p, a.corrupt, "CORRUPT-1")    # the long error message must wrap
        check("capture", "capture_error")
    yield from screen_file(p, a.smear, "SMEAR-1")
    yield lambda: p.ctl.last_record_id is not None
    yield 3
    check("result")
    if a.smear2:
        p.touch(p.screen("result").ids.btn_again)
        yield 2
        yield from screen_file(p, a.smear2, "SMEAR-2")
        yield lambda: p.ctl.history.count() >= 2
        yield 3
        check("result", "result_other")
    if a.ood:
        p.touch(p.screen("result").ids.btn_again)
        yield 2
        yield from screen_file(p, a.ood, "OOD-1")
        yield 3
        check("result", "result_ood")
    for name in ("history", "model", "guide", "pin"):
        p.app.go(name)
        yield 4
        check(name)
    p.app.go("history")
    yield 3
    p.app.open_record(p.ctl.last_record_id)
    yield 3
    check("detail")
    p.app.go("capture")
    yield 2
    p.touch(p.screen("capture").ids.btn_settings)
    yield lambda: p.app.root.current == "pin"
    yield 2
    p.type_text(p.screen("pin").ids.pin, "1357")
    p.touch(p.screen("pin").ids.btn_ok)
    yield lambda: p.app.root.current == "settings"
    yield 3
    check("settings")
    p.app.go("capture")
    yield 3
    check("capture")
    if a.camera:      # a video file as the camera
        cap = p.screen("capture")
        p.touch(cap.ids.btn_camera)
        yield lambda: p.ctl._frame is not None
        yield 4
        check("capture", "capture_camera")
        p.touch(cap.ids.btn_camera)
        yield 2


def latency(p):
    """Screen each image N times and record 'image chosen -> result on screen' latencies."""
    a = p.args
    yield from wait_model(p)
    for _ in range(a.repeat):
        for img in a.images:
            yield from screen_file(p, img)
            p.app.go("capture")
            yield 2
    timings = p.ctl.last_result.timings if p.ctl.last_result else {}
    p.report["inference_timings_ms"] = timings


def startup(p):
    """Cold start: first frame and model-ready times are recorded by the pilot; then quit."""
    yield from wait_model(p)


SCENARIOS = {"tour": tour, "mixup": mixup, "layout": layout, "latency": latency, "startup": startup}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--model", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--models-root", default=None, help="folder of releases (default: the model's parent folder)")
    ap.add_argument("--out", required=True, help="report JSON")
    ap.add_argument("--shots", help="screenshot folder")
    ap.add_argument("--smear")
    ap.add_argument("--smear2")
    ap.add_argument("--ood")
    ap.add_argument("--corrupt")
    ap.add_argument("--camera", help="camera source for the camera button (index, kivy:0 or a video file)")
    ap.add_argument("--images", nargs="*", default=[])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=90.0)
    ap.add_argument("--size", default="480x800")
    ap.add_argument("--language", default=None, help="language of the layout scenario (en, fr)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from .app import app_class, configure_kivy

    configure_kivy(False, tuple(int(v) for v in args.size.split("x")))
    app = app_class()(model=args.model, db=args.db, threads=args.threads, camera=args.camera,
                      models_root=args.models_root or str(Path(args.model).parent),
                      start_dir=str(Path(args.smear or ".").parent) if args.smear else None)
    pilot = Pilot(app, SCENARIOS[args.scenario], Path(args.out), args.shots, args.timeout)
    pilot.args = args
    from kivy.clock import Clock

    Clock.schedule_once(lambda dt: pilot.start(), 0)
    app.run()
    return 0 if pilot.report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
