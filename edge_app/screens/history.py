"""History (every sample on this device, newest first), the detail of one sample, and the screen to
void or correct it with a reason (a new audit event: nothing is edited in place)."""
from __future__ import annotations

from kivy.app import App
from kivy.properties import BooleanProperty, ListProperty, StringProperty
from kivy.uix.button import Button
from kivy.uix.screenmanager import Screen

from .. import presenter
from ..i18n import _


class HistoryRow(Button):
    sample_uid = StringProperty("")


class HistoryScreen(Screen):
    summary = StringProperty("")

    def on_pre_enter(self, *args):
        app = App.get_running_app()
        if app is not None and app.controller is not None:
            self.refresh(app.controller)

    def refresh(self, controller):
        samples = controller.samples(limit=200)
        self.ids.rv.data = [{"text": presenter.sample_row(s), "sample_uid": s.uid} for s in samples]
        if controller.store is None:
            self.summary = presenter.status("no_records", problem=controller.records.problem)
        else:
            self.summary = _("{n} samples on this device").format(n=controller.store.count())


class DetailScreen(Screen):
    text = StringProperty("")
    note_text = StringProperty("")
    sample_uid = StringProperty("")
    finished = BooleanProperty(False)

    def on_kv_post(self, *args):
        self._hand_over = self.ids.hand_over.__self__     # a strong ref while out of the tree
        self._box = self._hand_over.parent
        self.bind(finished=self._arrange)
        self._arrange()

    def _arrange(self, *_args):
        """The hand-over row only for a finished sample (an open one has no verdict to hand over)."""
        row = self._hand_over
        if self.finished and row.parent is None:
            self._box.add_widget(row, index=1)     # above the Correct / Back row
        elif not self.finished and row.parent is not None:
            self._box.remove_widget(row)

    def show(self, sample, card=None):
        self.sample_uid, self.finished, self.note_text = sample.uid, sample.finished, ""
        self.text = presenter.sample_detail(sample, card)

    def set_note(self, text):
        self.note_text = text


class AmendScreen(Screen):
    """Correct the sample ID or void the sample / one field, always with a reason."""

    sample_uid = StringProperty("")
    title_text = StringProperty("")
    message = StringProperty("")
    error = BooleanProperty(False)
    actions = ListProperty([])
    action = StringProperty("")
    correcting = BooleanProperty(False)

    def show(self, sample):
        self.sample_uid = sample.uid
        self.title_text = _("Sample {id}").format(id=sample.sample_id)
        self._actions = {_("Correct the sample ID"): ("correct", None), _("Void the whole sample"): ("void_sample", None)}
        for f in sample.fields:
            if not f.voided:
                self._actions[_("Void field {n}").format(n=f.seq)] = ("void_field", f.uid)
        self.actions = list(self._actions)
        self.action = self.actions[0]
        self.message, self.error = _("Nothing is deleted: the change and its reason are added to the audit trail."), False
        self.ids.reason.text = ""
        self.ids.new_id.text = ""

    def on_action(self, *_args):
        self.correcting = getattr(self, "_actions", {}).get(self.action, ("",))[0] == "correct"

    def save(self, controller):
        kind, field_uid = self._actions.get(self.action, ("", None))
        reason = self.ids.reason.text.strip()
        if not reason:
            self.message, self.error = presenter.status("need_reason"), True
            return False
        msg = controller.amend(self.sample_uid, kind, reason, new_id=self.ids.new_id.text, field_uid=field_uid)
        ok = msg == presenter.status("amended")
        self.message, self.error = msg, not ok
        if ok:
            App.get_running_app().open_sample(self.sample_uid)
        return ok
