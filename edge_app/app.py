"""The Kivy app: a ScreenManager of thin screens; layout in ``kv/<screen>.kv``, events in the controller.

Screens: ``capture`` (choose a file or use the camera), ``result`` (decision, probability,
Grad-CAM overlay with an opacity slider), ``history`` and ``detail``, ``model`` (the card's
metrics and figures) and ``settings`` (model, threads, validated operating point).
Start it with ``leukedge app --model models/<name>`` or :func:`run_app`.
"""
from __future__ import annotations

import logging
import os
import sys
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

KV_FILES = ("capture.kv", "result.kv", "history.kv", "detail.kv", "model.kv", "settings.kv")
WINDOW_SIZE = (600, 960)


def configure_kivy(fullscreen: bool = False, size=WINDOW_SIZE) -> None:
    """Kivy settings that must be set before the window exists (called by :func:`run_app`)."""
    os.environ.setdefault("KIVY_NO_ARGS", "1")        # our argparse owns the command line
    os.environ.setdefault("KIVY_NO_FILELOG", "1")
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")  # log through `logging` (the CLI's format), once
    if sys.platform.startswith("linux") and "ANDROID_ARGUMENT" not in os.environ:
        os.environ.setdefault("KIVY_CLIPBOARD", "sdl2")  # not xclip/xsel, which are rarely installed
    from kivy.config import Config

    if fullscreen:
        Config.set("graphics", "fullscreen", "auto")
        Config.set("graphics", "show_cursor", "0")
    else:
        Config.set("graphics", "width", str(size[0]))
        Config.set("graphics", "height", str(size[1]))
    Config.set("kivy", "exit_on_escape", "0")
    Config.set("input", "mouse", "mouse,disable_multitouch")


def to_texture(rgb):
    """An RGB uint8 numpy image as a Kivy texture (rows flipped: textures are bottom-up)."""
    import numpy as np
    from kivy.graphics.texture import Texture

    h, w = rgb.shape[:2]
    tex = Texture.create(size=(w, h), colorfmt="rgb")
    tex.blit_buffer(np.ascontiguousarray(rgb[::-1]).tobytes(), colorfmt="rgb", bufferfmt="ubyte")
    return tex


def _define_classes():
    """Screen classes (defined lazily so importing this module needs no window)."""
    from kivy.app import App
    from kivy.properties import BooleanProperty, ListProperty, NumericProperty, ObjectProperty, StringProperty
    from kivy.uix.button import Button
    from kivy.uix.screenmanager import NoTransition, Screen, ScreenManager

    from . import presenter

    class CaptureScreen(Screen):
        status_text = StringProperty("Starting...")
        status_error = BooleanProperty(False)
        model_text = StringProperty("No model loaded")
        start_dir = StringProperty(str(Path.cwd()))
        camera_on = BooleanProperty(False)

        ready_text = StringProperty("")

        def set_status(self, text, error=False):
            self.status_text, self.status_error, self.ready_text = text, error, ""

        def on_pre_enter(self, *args):
            if self.ready_text:
                self.set_status(self.ready_text)

        def set_model(self, release, threshold):
            self.model_text = f"Model: {release.name} v{release.version}  (refer at {threshold:.2f})"

        def set_camera(self, on):
            self.camera_on = on

        def show_frame(self, rgb):
            self.ids.preview.texture = to_texture(rgb)

        def clear_sample(self):
            self.ids.sample_id.text = ""   # the next image is a new sample

        def selected_path(self):
            sel = self.ids.chooser.selection
            return sel[0] if sel else None

    class ResultScreen(Screen):
        headline = StringProperty("")
        headline_colour = ListProperty([0.4, 0.4, 0.4, 1])
        probability_text = StringProperty("")
        detail_text = StringProperty("")
        subtype_text = StringProperty("")
        model_text = StringProperty("")
        note_text = StringProperty("")
        show_heatmap = BooleanProperty(False)
        base_texture = ObjectProperty(None, allownone=True)
        heat_texture = ObjectProperty(None, allownone=True)

        def show(self, res, release):
            p = presenter.present(res, release)
            self.headline, self.headline_colour = p["headline"], list(p["colour"])
            self.probability_text, self.detail_text = p["probability"], p["detail"]
            self.subtype_text, self.model_text, self.note_text = p["subtypes"], p["model"], ""
            self.show_heatmap = bool(p["show_heatmap"] and res.heatmap_rgb is not None)
            self.base_texture = to_texture(res.image) if res.image is not None else None
            self.heat_texture = to_texture(res.heatmap_rgb) if self.show_heatmap else None

        def set_note(self, text):
            self.note_text = text

    class HistoryRow(Button):
        record_id = NumericProperty(0)

    class HistoryScreen(Screen):
        summary = StringProperty("")

        def on_pre_enter(self, *args):
            app = App.get_running_app()
            if app is not None and app.controller is not None:
                self.refresh(app.controller)

        def refresh(self, controller):
            rows = controller.history.list(limit=200)
            self.ids.rv.data = [{"text": _row_text(r), "record_id": r["id"]} for r in rows]
            self.summary = f"{controller.history.count()} screenings in {controller.history.path.name}"

    class DetailScreen(Screen):
        text = StringProperty("")

        def show(self, record):
            self.text = "\n".join(f"{k}: {'' if v is None else v}" for k, v in record.items())

    class ModelInfoScreen(Screen):
        text = StringProperty("No model loaded")
        roc_source = StringProperty("")
        cm_source = StringProperty("")

        def refresh(self, controller):
            if controller.screener is None:
                return
            r = controller.screener.release
            self.text = "\n".join(presenter.card_lines(r))
            figs = r.figures()
            self.roc_source = next((str(f) for f in figs if "roc" in f.name.lower()), "")
            self.cm_source = next((str(f) for f in figs if "confusion" in f.name.lower()), "")

    class SettingsScreen(Screen):
        model_values = ListProperty([])
        model_choice = StringProperty("")
        thread_choice = StringProperty("default")
        op_values = ListProperty([])
        op_choice = StringProperty("")

        def refresh(self, controller):
            self._folders = {p.name: p for p in controller.releases()}
            if controller.screener is not None:
                r = controller.screener.release
                self._folders.setdefault(r.folder.name, r.folder)
                self.model_choice = r.folder.name
                ops = controller.screener.operating_points()
                self._ops = {f"{o.name} ({o.threshold:.2f})": o.name for o in ops}
                self.op_values = list(self._ops)
                current = next((f"{o.name} ({o.threshold:.2f})" for o in ops
                                if abs(o.threshold - controller.screener.threshold) < 1e-9), None)
                self.op_choice = current or (self.op_values[0] if self.op_values else "")
            self.model_values = sorted(self._folders)
            self.thread_choice = str(controller.threads or "default")

        def apply(self, controller):
            folder = self._folders.get(self.model_choice)
            threads = None if self.thread_choice == "default" else int(self.thread_choice)
            op = getattr(self, "_ops", {}).get(self.op_choice)
            same_model = controller.screener is not None and controller.screener.release.folder == folder
            if same_model and threads == controller.threads and op:
                controller.screener.set_operating_point(op)
                controller.screen("capture").set_model(controller.screener.release, controller.screener.threshold)
            elif folder is not None:
                controller.load_model(folder, threads, op if same_model else None)

    class LeukEdgeApp(App):
        """The screening app.

        Args:
            model: release folder to load at start (default: the first in ``models_root``).
            db: history database file.
            models_root: folder of release folders.
            threads: interpreter threads.
            camera: frame source of the camera button (``0``, ``kivy:0``, a video file).
            start_dir: folder the file chooser opens in.
        """

        title = "LeukEdge screening"

        def __init__(self, model=None, db=None, models_root="models", threads=None, camera=None,
                     start_dir=None, allow_unsigned=False, **kw):
            super().__init__(**kw)
            from .history import default_db_path

            self.model_path, self.models_root = model, models_root
            self.db_path = Path(db) if db else default_db_path()
            self.threads, self.camera, self.start_dir = threads, camera, start_dir
            self.allow_unsigned = allow_unsigned  # development only: results and history say "unsigned"
            self.controller = None

        def build(self):
            from kivy.lang import Builder

            from .controller import Controller

            _quiet_clipboard_probe()
            kv_dir = resources.files("leukedge.edge_app") / "kv"
            for name in KV_FILES:
                path = str(kv_dir / name)
                Builder.unload_file(path)
                Builder.load_file(path)
            sm = ScreenManager(transition=NoTransition())
            cap = CaptureScreen(name="capture")
            if self.start_dir:
                cap.start_dir = str(self.start_dir)
            for s in (cap, ResultScreen(name="result"), HistoryScreen(name="history"), DetailScreen(name="detail"),
                      ModelInfoScreen(name="model"), SettingsScreen(name="settings")):
                sm.add_widget(s)
            self.controller = Controller(self, self.db_path, self.models_root, self.threads, self.camera)
            self.controller.allow_unsigned = self.allow_unsigned
            return sm

        def on_start(self):
            self.root.get_screen("history").refresh(self.controller)
            model = self.model_path or next(iter(self.controller.releases()), None)
            if model is None:
                self.root.get_screen("capture").set_status(
                    f"No model found in {self.models_root}/: pass --model models/<name>", error=True)
            else:
                self.controller.load_model(model)

        def on_stop(self):
            if self.controller is not None:
                self.controller.shutdown()

        # small event helpers the kv files call
        def go(self, name):
            self.root.current = name

        def open_record(self, record_id):
            rec = self.controller.history.get(record_id)
            if rec:
                self.root.get_screen("detail").show(rec)
                self.go("detail")

    return LeukEdgeApp


def _quiet_clipboard_probe() -> None:
    """Import Kivy's clipboard quietly: on Linux it probes xclip/xsel for a cut buffer and logs
    CRITICAL with tracebacks when they are absent (harmless: the app only needs SDL2's clipboard)."""
    kivy_log = logging.getLogger("kivy")
    level = kivy_log.level
    kivy_log.setLevel(logging.CRITICAL + 1)
    try:
        import kivy.core.clipboard  # noqa: F401
    finally:
        kivy_log.setLevel(level)


def _row_text(r: dict) -> str:
    p = "" if r["probability"] is None else f"p={r['probability']:.2f}"
    sid = f"[{r['sample_id']}] " if r.get("sample_id") else ""
    return f"{r['time_utc'][:19].replace('T', ' ')}  {sid}{r['decision'] or r['error'] or ''}  {p}"


_APP_CLASS = None


def app_class():
    """The :class:`LeukEdgeApp` class (imports Kivy on first use)."""
    global _APP_CLASS
    if _APP_CLASS is None:
        _APP_CLASS = _define_classes()
    return _APP_CLASS


def run_app(model=None, db=None, models_root="models", fullscreen=False, threads=None, camera=None,
            start_dir=None, allow_unsigned=False) -> int:
    """Configure Kivy, build and run the app until the window closes."""
    configure_kivy(fullscreen)
    app_class()(model=model, db=db, models_root=models_root, threads=threads, camera=camera,
                start_dir=start_dir, allow_unsigned=allow_unsigned).run()
    return 0
