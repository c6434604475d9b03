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

__all__ = ["AmendScreen", "CaptureScreen", "DetailScreen", "FileList", "FileRow", "GuideScreen", "HistoryRow", "HistoryScreen",
           "KV_FILES", "ModelInfoScreen", "PhotoIllustration", "PinScreen", "ResultScreen", "SCREENS",
           "SettingsScreen", "to_texture"]
