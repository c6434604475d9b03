"""The app's screens: thin Kivy ``Screen`` classes, one module each, layout in ``kv/<screen>.kv``.

Importing this package imports Kivy (no window is created).
"""
from .capture import CaptureScreen
from .guide import GuideScreen, PhotoIllustration
from .history import AmendScreen, DetailScreen, HistoryRow, HistoryScreen
from .model import ModelInfoScreen
from .result import ResultScreen
from .settings import PinScreen, SettingsScreen
from .widgets import FileList, FileRow, to_texture

#: (screen name, class) in the order they are added; ``capture`` is shown first.
SCREENS = (("capture", CaptureScreen), ("result", ResultScreen), ("history", HistoryScreen),
           ("detail", DetailScreen), ("amend", AmendScreen), ("model", ModelInfoScreen), ("settings", SettingsScreen),
           ("pin", PinScreen), ("guide", GuideScreen))
#: kv files, loaded in this order (common rules first).
KV_FILES = ("common.kv", "capture.kv", "result.kv", "history.kv", "detail.kv", "model.kv", "settings.kv",
            "guide.kv")
#: The kv file of each screen (``common.kv`` is loaded first, for all): the app loads a screen's
#: rules when it creates the screen, on its first visit.
SCREEN_KV = {"capture": "capture.kv", "result": "result.kv", "history": "history.kv", "detail": "detail.kv",
             "amend": "detail.kv", "model": "model.kv", "settings": "settings.kv", "pin": "settings.kv",
             "guide": "guide.kv"}

__all__ = ["AmendScreen", "CaptureScreen", "DetailScreen", "FileList", "FileRow", "GuideScreen", "HistoryRow", "HistoryScreen",
           "KV_FILES", "ModelInfoScreen", "PhotoIllustration", "PinScreen", "ResultScreen", "SCREENS", "SCREEN_KV",
           "SettingsScreen", "to_texture"]
