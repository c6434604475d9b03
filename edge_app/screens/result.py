"""Result screen: the verdict and what to do next, the score when one may be shown, the heatmap."""
from __future__ import annotations

from kivy.properties import BooleanProperty, ListProperty, ObjectProperty, StringProperty
from kivy.uix.screenmanager import Screen

from .. import presenter
from .widgets import colour_bar_texture, to_texture


class ResultScreen(Screen):
    headline = StringProperty("")
    next_step = StringProperty("")
    headline_colour = ListProperty(list(presenter.COLOURS[None]))
    probability_text = StringProperty("")
    detail_text = StringProperty("")
    subtype_text = StringProperty("")
    model_text = StringProperty("")
    note_text = StringProperty("")
    verdict = StringProperty("")
    show_heatmap = BooleanProperty(False)
    base_texture = ObjectProperty(None, allownone=True)
    heat_texture = ObjectProperty(None, allownone=True)
    legend_texture = ObjectProperty(None, allownone=True)

    def on_kv_post(self, *args):
        self.legend_texture = colour_bar_texture()
        self.bind(size=self.arrange)
        self.arrange()

    def arrange(self, *_args):
        """Image beside the text in landscape, above it (scrolling with it) in portrait."""
        target = self.ids.wide_slot if self.width > self.height else self.ids.narrow_slot
        visual = self.ids.visual
        if visual.parent is not target:
            visual.parent.remove_widget(visual)
            target.add_widget(visual)

    def show(self, res, release):
        p = presenter.present(res, release)
        self.verdict, self.headline, self.next_step = p["verdict"], p["headline"], p["next_step"]
        self.headline_colour = list(p["colour"])
        self.probability_text, self.detail_text = p["probability"], p["detail"]
        self.subtype_text, self.model_text, self.note_text = p["subtypes"], p["model"], ""
        self.show_heatmap = bool(p["show_heatmap"] and res.heatmap_rgb is not None)
        self.base_texture = to_texture(res.image) if res.image is not None else None
        self.heat_texture = to_texture(res.heatmap_rgb) if self.show_heatmap else None

    def clear(self):
        """Forget the shown result (a new sample starts)."""
        self.verdict = self.headline = self.next_step = self.probability_text = ""
        self.detail_text = self.subtype_text = self.model_text = self.note_text = ""
        self.headline_colour = list(presenter.COLOURS[None])
        self.show_heatmap = False
        self.base_texture = self.heat_texture = None

    def set_note(self, text):
        self.note_text = text
