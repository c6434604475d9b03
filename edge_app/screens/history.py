"""History screen (every screening on this device, newest first) and the detail of one record."""
from __future__ import annotations

from kivy.app import App
from kivy.properties import NumericProperty, StringProperty
from kivy.uix.button import Button
from kivy.uix.screenmanager import Screen

from .. import presenter
from ..i18n import _


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
        self.ids.rv.data = [{"text": presenter.history_row(r), "record_id": r["id"]} for r in rows]
        self.summary = _("{n} screenings on this device").format(n=controller.history.count())


class DetailScreen(Screen):
    text = StringProperty("")

    def show(self, record):
        self.text = "\n".join(f"[b]{k}:[/b] {v}" for k, v in presenter.detail_lines(record))
