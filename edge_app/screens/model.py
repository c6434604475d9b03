"""Model info screen: the card's identity, metrics with CIs, figures."""
from __future__ import annotations

from kivy.properties import StringProperty
from kivy.uix.screenmanager import Screen

from .. import presenter


class ModelInfoScreen(Screen):
    text = StringProperty("")
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
