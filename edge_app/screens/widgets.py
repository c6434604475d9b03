"""Small shared widgets and helpers of the screens (rules in ``kv/common.kv``)."""
from __future__ import annotations

from pathlib import Path

from kivy.graphics.texture import Texture
from kivy.properties import BooleanProperty, ListProperty, NumericProperty, StringProperty
from kivy.uix.button import Button
from kivy.uix.recycleview import RecycleView

from ..i18n import _

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def to_texture(rgb):
    """An RGB uint8 numpy image as a Kivy texture (rows flipped: textures are bottom-up)."""
    import numpy as np

    h, w = rgb.shape[:2]
    tex = Texture.create(size=(w, h), colorfmt="rgb")
    tex.blit_buffer(np.ascontiguousarray(rgb[::-1]).tobytes(), colorfmt="rgb", bufferfmt="ubyte")
    return tex


def colour_bar_texture(width: int = 256):
    """The heatmap's colour scale (low -> high, left to right) as a texture, from the app's own colour map."""
    import numpy as np

    from ..inference import colorize

    bar = colorize(np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :].repeat(4, 0))
    return to_texture(bar)


class FileRow(Button):
    """One row of :class:`FileList`: a folder (opens it) or an image file (selects it)."""

    path = StringProperty("")
    is_dir = BooleanProperty(False)
    selected = BooleanProperty(False)


class FileList(RecycleView):
    """A touch-friendly file chooser: folders and smear images in rows >= 48 dp, one selection.

    ``path`` is the folder shown, ``selection`` the chosen file (a list of at most one path,
    like Kivy's FileChooser).
    """

    path = StringProperty("")
    selection = ListProperty([])
    row_height = NumericProperty(56)

    def on_path(self, *_args):
        self.refresh()

    def on_selection(self, *_args):
        chosen = self.selection[0] if self.selection else None
        for d in self.data:
            d["selected"] = d["path"] == chosen
        self.refresh_from_data()

    def refresh(self):
        folder = Path(self.path) if self.path else Path.cwd()
        try:
            entries = sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name.lower()))
        except OSError:
            entries = []
        chosen = self.selection[0] if self.selection else None
        rows = []
        if folder.parent != folder:
            rows.append({"text": _("Up: {folder}").format(folder=folder.parent.name or str(folder.parent)),
                         "path": str(folder.parent), "is_dir": True, "selected": False})
        for p in entries:
            if p.name.startswith("."):
                continue
            if p.is_dir():
                rows.append({"text": p.name + "/", "path": str(p), "is_dir": True, "selected": False})
            elif p.suffix.lower() in IMAGE_SUFFIXES:
                rows.append({"text": p.name, "path": str(p), "is_dir": False, "selected": str(p) == chosen})
        self.data = rows

    def activate(self, row: FileRow):
        if row.is_dir:
            self.selection = []
            self.path = row.path
        else:
            self.selection = [row.path]
