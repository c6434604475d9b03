"""Small shared widgets and helpers of the screens (rules in ``kv/common.kv``)."""
from __future__ import annotations

from pathlib import Path

from kivy.graphics import Color, Line
from kivy.graphics.texture import Texture
from kivy.metrics import dp
from kivy.properties import BooleanProperty, ListProperty, NumericProperty, ObjectProperty, StringProperty
from kivy.uix.button import Button
from kivy.uix.image import Image
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


class PreviewImage(Image):
    """The camera preview with its framing guide on top (``guide``: a :class:`..framing.Framing` or None):
    a cross at the frame's centre, and for an eyepiece photo the field of view's circle and the square
    the field-of-view crop keeps (green when the frame is ready, amber otherwise)."""

    guide = ObjectProperty(None, allownone=True)

    def __init__(self, **kw):
        super().__init__(**kw)
        for prop in ("guide", "pos", "size", "norm_image_size"):
            self.fbind(prop, self._draw_guide)

    def _draw_guide(self, *_):
        self.canvas.after.clear()
        g = self.guide
        iw, ih = self.norm_image_size
        if g is None or self.texture is None or iw < 1 or ih < 1:
            return
        fw, fh = g.size
        k = iw / fw
        left, top = self.center_x - iw / 2, self.center_y + ih / 2

        def at(x, y):     # judged copy's pixels (top-left origin) -> window coordinates
            return left + x * k, top - y * k

        cx, cy = at(fw / 2, fh / 2)
        arm = dp(12)
        with self.canvas.after:
            Color(*((0.45, 0.9, 0.5, 0.9) if g.ready else (1, 0.75, 0.3, 0.9)))
            Line(points=[cx - arm, cy, cx + arm, cy], width=dp(1.2))
            Line(points=[cx, cy - arm, cx, cy + arm], width=dp(1.2))
            if g.circle is not None:
                x, y = at(g.circle[0], g.circle[1])
                Line(circle=(x, y, g.circle[2] * k), width=dp(1.5))
            if g.square is not None:
                x0, y0, x1, y1 = g.square
                bx, by = at(x0, y1)
                Line(rectangle=(bx, by, (x1 - x0) * k, (y1 - y0) * k), width=dp(1.2))


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
