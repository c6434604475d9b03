"""Settings (model, threads, validated operating point, language, image retention), behind a PIN."""
from __future__ import annotations

from kivy.properties import BooleanProperty, ListProperty, StringProperty
from kivy.uix.screenmanager import Screen

from ..i18n import LANGUAGES, _


class SettingsScreen(Screen):
    model_values = ListProperty([])
    model_choice = StringProperty("")
    thread_choice = StringProperty("")
    op_values = ListProperty([])
    op_choice = StringProperty("")
    language_values = ListProperty(list(LANGUAGES.values()))
    language_choice = StringProperty("")
    retention_values = ListProperty([])
    retention_choice = StringProperty("")

    #: Image retention choices in days (None: keep all).
    RETENTION_DAYS = (None, 30, 90, 365)

    def refresh(self, controller):
        self._folders = {p.name: p for p in controller.releases()}
        self._ops = {}
        if controller.screener is not None:
            r = controller.screener.release
            self._folders.setdefault(r.folder.name, r.folder)
            self.model_choice = r.folder.name
            ops = controller.screener.operating_points()
            self._ops = {f"{o.name} ({o.threshold:.2f})": o.name for o in ops}
            self.op_values = list(self._ops)
            current = next((f"{o.name} ({o.threshold:.2f})" for o in ops
                            if abs(o.threshold - controller.screener.threshold) < 1e-9), None)
            self.op_choice = current or (self.op_values[0] if self.op_values else "")
        self.model_values = sorted(self._folders)
        self.thread_choice = str(controller.threads or _("default"))
        self.language_choice = LANGUAGES.get(controller.settings.language, LANGUAGES["en"])
        current = controller.store.retention_days() if controller.store is not None else None
        days = sorted({d for d in (*self.RETENTION_DAYS, current) if d is not None})
        self._retention = {_("keep all"): None, **{_("{n} days").format(n=d): d for d in days}}
        self.retention_values = list(self._retention)
        self.retention_choice = next(k for k, v in self._retention.items() if v == current)

    def apply(self, controller):
        folder = self._folders.get(self.model_choice)
        threads = int(self.thread_choice) if self.thread_choice.isdigit() else None
        op = self._ops.get(self.op_choice)
        language = next((k for k, v in LANGUAGES.items() if v == self.language_choice), "en")
        keep = {"retention": self._retention[self.retention_choice]} if self.retention_choice in self._retention else {}
        controller.apply_settings(folder, threads, op, language, **keep)


class PinScreen(Screen):
    """Asks for the settings PIN (or to choose one, the first time)."""

    message = StringProperty("")
    error = BooleanProperty(False)
    creating = BooleanProperty(False)

    def on_pre_enter(self, *args):
        from kivy.app import App

        ctl = App.get_running_app().controller
        self.creating = not ctl.settings.has_pin or ctl.changing_pin
        self.error = False
        self.message = (_("Choose a PIN of at least 4 digits to protect the settings.") if self.creating
                        else _("Type the PIN to open the settings."))
        self.ids.pin.text = ""

    def submit(self, controller):
        pin = self.ids.pin.text.strip()
        self.ids.pin.text = ""
        ok, text = controller.unlock_settings(pin, create=self.creating)
        if not ok:
            self.message, self.error = text, True


