"""How to photograph a smear: short steps and a drawn illustration (no dataset image shipped)."""
from __future__ import annotations

from kivy.graphics import Color, Ellipse, Line, RoundedRectangle
from kivy.metrics import dp
from kivy.uix.screenmanager import Screen
from kivy.uix.widget import Widget

from ..i18n import N_, _

STEPS = (
    N_("Use the objective the model was trained on (100x oil immersion) and focus sharply on a thin area "
       "where the cells do not overlap."),
    N_("Hold the phone lens against the eyepiece (an adapter helps) so the round field of view is centred "
       "and fills most of the screen."),
    N_("Use even light: no dark corners, no glare, no flash."),
    N_("Hold still and take two or three photos of different fields of the same slide."),
    N_("Type the sample ID before screening, and tap New sample before the next patient."),
)


def guide_text() -> str:
    return "\n".join(f"{i}. {_(s)}" for i, s in enumerate(STEPS, 1))


class PhotoIllustration(Widget):
    """A phone held on a microscope eyepiece: the round field of view centred, cells in focus."""

    #: cells as (x, y, radius) in units of the field's radius, (0, 0) at its centre; True = a blast
    CELLS = ((-0.45, 0.3, 0.16, False), (0.1, 0.5, 0.15, False), (0.5, 0.15, 0.17, True), (-0.2, -0.25, 0.18, True),
             (0.35, -0.45, 0.15, False), (-0.6, -0.15, 0.12, False), (0.05, 0.0, 0.14, False))

    def __init__(self, **kw):
        super().__init__(**kw)
        self.bind(pos=self._draw, size=self._draw)

    def _draw(self, *_args):
        self.canvas.clear()
        side = min(self.width * 0.6, self.height)
        pw, ph = side * 0.62, side
        px, py = self.center_x - pw / 2, self.center_y - ph / 2
        r = pw * 0.42
        cx, cy = self.center_x, self.center_y
        with self.canvas:
            Color(0.15, 0.15, 0.17, 1)                                  # the phone
            RoundedRectangle(pos=(px, py), size=(pw, ph), radius=[dp(12)])
            Color(0.05, 0.05, 0.05, 1)                                  # dark around the field
            RoundedRectangle(pos=(px + dp(6), py + dp(20)), size=(pw - dp(12), ph - dp(40)), radius=[dp(6)])
            Color(0.96, 0.9, 0.92, 1)                                   # the bright round field of view
            Ellipse(pos=(cx - r, cy - r), size=(2 * r, 2 * r))
            for x, y, cr, blast in self.CELLS:
                Color(0.93, 0.7, 0.75, 1)                               # red cells / cytoplasm
                Ellipse(pos=(cx + x * r - cr * r, cy + y * r - cr * r), size=(2 * cr * r, 2 * cr * r))
                if blast:
                    Color(0.45, 0.2, 0.6, 1)                            # a large purple nucleus
                    Ellipse(pos=(cx + x * r - 0.8 * cr * r, cy + y * r - 0.8 * cr * r),
                            size=(1.6 * cr * r, 1.6 * cr * r))
            Color(0.2, 0.8, 0.3, 1)                                     # centred: a green ring
            Line(circle=(cx, cy, r + dp(3)), width=dp(2))


class GuideScreen(Screen):
    def on_pre_enter(self, *args):
        self.ids.steps.text = guide_text()
