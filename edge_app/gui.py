"""The Kivy application: builds the screens, owns the controller, and small navigation helpers.

Imports Kivy at module top: import it through :func:`leukedge.edge_app.app.app_class` (after
:func:`~leukedge.edge_app.app.configure_kivy`), never at package import.
"""
from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from kivy.app import App
from kivy.lang import Builder
from kivy.uix.screenmanager import NoTransition, ScreenManager

from .controller import Controller
from .history import default_db_path
from .i18n import set_language
from .screens import KV_FILES, SCREEN_KV, SCREENS

log = logging.getLogger(__name__)


def load_kv(names=KV_FILES) -> None:
    """(Re)load kv files of ``kv/`` (default: all of them, in order)."""
    kv_dir = resources.files("leukedge.edge_app") / "kv"
    for name in names:
        path = str(kv_dir / name)
        Builder.unload_file(path)
        Builder.load_file(path)


class LazyScreenManager(ScreenManager):
    """A ScreenManager that creates each screen the first time it is asked for (``get_screen``,
    ``current = name``), so only the first screen is built before the first frame.

    Args:
        make: ``make(name) -> Screen`` for every name of ``names``.
        names: the screens it can create, in their order.
    """

    def __init__(self, make, names, **kw):
        self._make, self._names = make, tuple(names)
        super().__init__(**kw)

    def built(self, name) -> bool:
        """True when the screen ``name`` exists already."""
        return super().has_screen(name)

    def has_screen(self, name):
        return name in self._names or super().has_screen(name)

    def get_screen(self, name):
        if name in self._names and not super().has_screen(name):
            self.add_widget(self._make(name))
        return super().get_screen(name)


class LeukEdgeApp(App):
    """The screening app.

    Args:
        model: release folder to load at start (default: the settings' model, else the
            recommended release of ``models_root``).
        db: history database file (its folder also holds ``settings.json``).
        models_root: folder of release folders (and ``index.json``).
        threads: interpreter threads.
        camera: frame source of the camera button (``0``, ``kivy:0``, a video file).
        start_dir: folder the file list opens in.
    """

    title = "LeukEdge"

    def __init__(self, model=None, db=None, models_root="models", threads=None, camera=None, start_dir=None,
                 allow_unsigned=False, **kw):
        super().__init__(**kw)
        self.allow_unsigned = allow_unsigned  # development only: results and history say "unsigned"
        self.model_path, self.models_root = model, models_root
        self.db_path = Path(db) if db else default_db_path()
        self.threads, self.camera, self.start_dir = threads, camera, start_dir
        self.controller = None
        self.settings_unlocked = False

    def build(self):
        _quiet_clipboard_probe()
        self.controller = Controller(self, self.db_path, self.models_root, self.threads, self.camera)
        self.controller.allow_unsigned = self.allow_unsigned
        set_language(self.controller.settings.language)
        self._kv_loaded = set()
        sm = LazyScreenManager(self._make_screen, [name for name, _ in SCREENS], transition=NoTransition())
        sm.get_screen(SCREENS[0][0])     # the first screen now; the others on their first visit
        return sm

    def _make_screen(self, name):
        """Create screen ``name`` (its kv rules loaded first), filled from the controller."""
        kv = [f for f in ("common.kv", SCREEN_KV[name]) if f not in self._kv_loaded]
        load_kv(kv)
        self._kv_loaded.update(kv)
        screen = dict(SCREENS)[name](name=name)
        if name == "capture" and self.start_dir:
            screen.start_dir = str(self.start_dir)
            screen.ids.chooser.path = str(self.start_dir)
        if name in ("model", "settings", "history") and self.controller is not None:
            screen.refresh(self.controller)
        return screen

    def rebuild_screens(self):
        """Re-create the screens (after a language change: the kv rules re-read the texts); the
        first one now, the others on their next visit."""
        sm = self.root
        self.settings_unlocked = False
        for s in list(sm.screens):
            sm.remove_widget(s)
        sm.get_screen(SCREENS[0][0])
        self.controller.screens_rebuilt()

    def on_start(self):
        self.controller.start()

    def on_stop(self):
        if self.controller is not None:
            self.controller.shutdown()

    # small event helpers the kv files call
    def go(self, name):
        if name != "settings" and self.root.current in ("settings", "pin"):
            self.settings_unlocked = False    # leaving the settings locks them again
            self.controller.changing_pin = False
        self.root.current = name

    def open_settings(self):
        self.go("settings" if self.settings_unlocked else "pin")

    def change_pin(self):
        """From the (unlocked) settings: choose a new PIN on the PIN screen."""
        self.controller.changing_pin = True
        self.root.current = "pin"

    def open_sample(self, uid):
        """The detail of one stored sample (its fields and audit trail)."""
        rec = self.controller.sample(uid) if uid else None
        if rec is not None:
            card = self.controller.screener.release.card if self.controller.screener else None
            self.root.get_screen("detail").show(rec, card)
            self.go("detail")

    def open_amend(self, uid):
        rec = self.controller.sample(uid) if uid else None
        if rec is not None:
            self.root.get_screen("amend").show(rec)
            self.go("amend")


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

