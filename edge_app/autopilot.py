"""Drive the real app with simulated touches, frame by frame, and write what happened as JSON.

Used by the app tests, ``scripts/screenshots.py`` and :mod:`leukedge.edge_app.measure`.
A scenario (:mod:`.autopilot_scenarios`) is a generator taking the :class:`Pilot`; it acts
(touches real buttons with ``UnitTestTouch``, picks files in the real file chooser) and yields
what to wait for: an ``int`` (that many frames) or a predicate (until true). Everything runs on
the Kivy main thread, between frames; a global timeout stops a stuck run.

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

from .autopilot_scenarios import SCENARIOS

log = logging.getLogger(__name__)
#: Modules the first frame does not need (the model's worker imports them): the report says which
#: of them were imported when the first frame was drawn.
HEAVY_MODULES = ("numpy", "cv2", "PIL.Image", "pydantic", "ai_edge_litert", "tensorflow", "fpdf", "reportlab",
                 "fhir", "matplotlib")


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

    def mark(self, name: str) -> None:
        """Wall clock and this (main) thread's CPU time at a start-up stage (``report["marks"]``)."""
        self.report.setdefault("marks", {})[name] = {"unix": time.time(), "main_cpu_s": time.thread_time(),
                                                     "process_cpu_s": time.process_time()}

    def log(self, msg: str) -> None:
        self.report["steps"].append(f"{time.monotonic() - self._t0:7.3f}s {msg}")

    def result_done(self):
        return not self.ctl.busy and self.app.root.current == "result"

    # ----- loop -------------------------------------------------------------------------
    def start(self):
        from kivy.clock import Clock
        from kivy.core.window import Window

        self.mark("built")           # build() and on_start() have run; the first frame comes next

        def first_flip(*_):
            Window.unbind(on_flip=first_flip)
            self._first_flip = time.time()
            self.report["first_frame_unix"] = self._first_flip
            self.mark("first_frame")
            self.report["imported_at_first_frame"] = sorted(
                m for m in HEAVY_MODULES if m in sys.modules)
            self.report["screens_at_first_frame"] = [s.name for s in self.app.root.screens]

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
        self.mark("finish")
        self.report["tensorflow_imported"] = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
        self.report["latencies_ms"] = list(self.ctl.latencies_ms) if self.ctl else []
        self.report["inference_path_ms"] = list(self.ctl.path_ms) if self.ctl else []
        self.report["latency_parts_ms"] = list(self.ctl.latency_parts) if self.ctl else []
        self.report["save_cpu_ms"] = list(getattr(self.ctl, "save_cpu_ms", [])) if self.ctl else []
        dts = sorted(self.frame_dts[5:]) or [0.0]
        self.report["frame_interval_ms"] = {"median": 1000 * dts[len(dts) // 2], "p90": 1000 * dts[int(len(dts) * 0.9)],
                                            "n": len(dts)}
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.report, indent=2, default=str))
        self.app.stop()
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--model", default=None,
                    help="release folder (default: as the app: the recommended release of --models-root)")
    ap.add_argument("--db", required=True)
    ap.add_argument("--models-root", default=None, help="folder of releases (default: the model's parent folder, else models)")
    ap.add_argument("--out", required=True, help="report JSON")
    ap.add_argument("--shots", help="screenshot folder")
    ap.add_argument("--smear")
    ap.add_argument("--smear2")
    ap.add_argument("--ood")
    ap.add_argument("--corrupt")
    ap.add_argument("--fill", help="disk_full: a file to write until its file system is full")
    ap.add_argument("--camera", help="camera source for the camera button (index, kivy:0 or a video file)")
    ap.add_argument("--images", nargs="*", default=[])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=90.0)
    ap.add_argument("--size", default="480x800")
    ap.add_argument("--language", default=None, help="language of the session scenario (en, fr)")
    ap.add_argument("--fields-a", nargs="*", default=[], help="session: field images of sample A")
    ap.add_argument("--fields-b", nargs="*", default=[], help="session: field images of sample B")
    ap.add_argument("--sample-a", default="A-0001")
    ap.add_argument("--sample-b", default="B-0002")
    ap.add_argument("--start-dir", default=None, help="folder the file list opens in")
    args = ap.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    marks = {"main": {"unix": time.time(), "main_cpu_s": time.thread_time(), "process_cpu_s": time.process_time()}}
    from .app import app_class, configure_kivy

    configure_kivy(False, tuple(int(v) for v in args.size.split("x")))
    app_cls = app_class()
    marks["imported"] = {"unix": time.time(), "main_cpu_s": time.thread_time(), "process_cpu_s": time.process_time()}
    app = app_cls(model=args.model, db=args.db, threads=args.threads, camera=args.camera,
                      models_root=args.models_root or (str(Path(args.model).parent) if args.model else "models"),
                      start_dir=args.start_dir or (str(Path(args.smear).parent) if args.smear else None))
    pilot = Pilot(app, SCENARIOS[args.scenario], Path(args.out), args.shots, args.timeout)
    pilot.args = args
    pilot.report["marks"] = marks
    from kivy.clock import Clock

    Clock.schedule_once(lambda dt: pilot.start(), 0)
    app.run()
    return 0 if pilot.report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
