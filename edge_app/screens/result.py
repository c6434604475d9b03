"""Sample view: the running sample verdict (what to do next), the latest field of view with its
heatmap, quality/OOD result and score when one may be shown, the list of the sample's fields; once
finished, the hand-over buttons (referral PDF, FHIR, CSV) and "New sample"."""
from __future__ import annotations

from kivy.properties import BooleanProperty, ListProperty, ObjectProperty, StringProperty
from kivy.uix.screenmanager import Screen

from .. import presenter
from ..i18n import _
from ..records import field_status
from .widgets import colour_bar_texture, to_texture


class ResultScreen(Screen):
    headline = StringProperty("")
    next_step = StringProperty("")
    headline_colour = ListProperty(list(presenter.COLOURS[None]))
    verdict = StringProperty("")
    meaning_text = StringProperty("")
    caveat_text = StringProperty("")
    performance_text = StringProperty("")
    field_title = StringProperty("")
    probability_text = StringProperty("")     # the field's result in words (a score only when scored)
    detail_text = StringProperty("")          # the quality advice / OOD warning / read error of the field
    fields_text = StringProperty("")
    subtype_text = StringProperty("")
    model_text = StringProperty("")
    note_text = StringProperty("")
    finished = BooleanProperty(False)
    show_heatmap = BooleanProperty(False)
    base_texture = ObjectProperty(None, allownone=True)
    heat_texture = ObjectProperty(None, allownone=True)
    legend_texture = ObjectProperty(None, allownone=True)

    def on_kv_post(self, *args):
        self.legend_texture = colour_bar_texture()
        self._lines: list[str] = []
        self._rows = {k: self.ids[k].__self__ for k in ("open_buttons", "hand_over", "buttons")}  # strong refs
        self.bind(size=self.arrange, finished=self.arrange_buttons)
        self.arrange()
        self.arrange_buttons()

    def arrange_buttons(self, *_args):
        """Only the rows of the current state are in the tree (a hidden, disabled button would still
        catch the touches meant for the one drawn over it)."""
        box = self.ids.button_box
        want = [self._rows["hand_over"], self._rows["buttons"]] if self.finished else [self._rows["open_buttons"]]
        if list(reversed(box.children)) != want:
            box.clear_widgets()
            for row in want:
                box.add_widget(row)

    def arrange(self, *_args):
        """Image beside the text in landscape, above it (scrolling with it) in portrait."""
        target = self.ids.wide_slot if self.width > self.height else self.ids.narrow_slot
        visual = self.ids.visual
        if visual.parent is not target:
            visual.parent.remove_widget(visual)
            target.add_widget(visual)

    def _verdict(self, verdict, card, full: bool):
        t = presenter.sample_verdict_texts(verdict, card)
        self.verdict, self.headline, self.next_step = t["code"], t["headline"], t["next_step"]
        self.headline_colour = list(t["colour"])
        self.meaning_text = t["meaning"]
        self.caveat_text = t["caveat"]
        self.performance_text = t["performance"] if full else ""

    def _fields(self):
        self.fields_text = (_("Fields of this sample:") + "\n" + "\n".join(self._lines)) if self._lines else ""

    def show_field(self, res, n, verdict, card, release, sample_id):
        """A field just screened (before it is saved) and the sample's verdict with it."""
        status = field_status(res)
        self.finished = False
        self._verdict(verdict, card, full=False)
        self.field_title = _("Sample {id}, field {n}").format(id=sample_id, n=n)
        words = presenter.field_words(status, res.probability, res.quality)
        self.probability_text = words[:1].upper() + words[1:]
        self.detail_text = presenter.field_advice(res)
        self.subtype_text = (_("Subtype scores:") + " " + "   ".join(f"{k} {p:.2f}" for k, p in res.probabilities.items())
                             if res.scored and res.probabilities else "")
        self.model_text = presenter.model_line(res.model_name, res.model_version, res.model_sha256,
                                               res.model_variant, res.parity)
        self.note_text = ""
        self._lines = self._lines[:n - 1] + [presenter.field_line(n, status, res.probability, quality=res.quality)]
        self._fields()
        self.show_heatmap = bool(res.scored and res.heatmap_rgb is not None)
        self.base_texture = to_texture(res.image) if res.image is not None else None
        self.heat_texture = to_texture(res.heatmap_rgb) if self.show_heatmap else None

    def show_sample(self, sample, card):
        """The sample as stored (its fields and verdict after the last save)."""
        self._lines = presenter.sample_field_lines(sample)
        self._fields()
        self._verdict(sample.verdict, card, full=sample.finished)

    def show_finished(self, sample, card):
        """The finished sample: its verdict in full and the list of its fields (the image stays the last field's)."""
        self.show_sample(sample, card)
        self.finished = True
        self.probability_text, self.fields_text = "\n".join(self._lines), ""
        self.detail_text = self.subtype_text = ""
        n = len(sample.fields)
        self.field_title = (_("Sample {id}: finished, 1 field") if n == 1 else
                            _("Sample {id}: finished, {n} fields")).format(id=sample.sample_id, n=n)

    def clear(self):
        """Forget the shown sample (a new sample starts)."""
        self.verdict = self.headline = self.next_step = self.probability_text = ""
        self.meaning_text = self.caveat_text = self.performance_text = self.field_title = ""
        self.detail_text = self.subtype_text = self.model_text = self.note_text = self.fields_text = ""
        self._lines = []
        self.finished = False
        self.headline_colour = list(presenter.COLOURS[None])
        self.show_heatmap = False
        self.base_texture = self.heat_texture = None

    def set_note(self, text):
        self.note_text = text
