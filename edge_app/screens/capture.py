"""Capture screen: start a sample with its ID (typed or scanned), then add fields of view one by
one from the file list or the camera. Nothing of a finished sample stays on it."""
from __future__ import annotations

from pathlib import Path

from kivy.properties import BooleanProperty, StringProperty
from kivy.uix.screenmanager import Screen

from .. import presenter
from ..i18n import _
from .widgets import to_texture


class CaptureScreen(Screen):
    status_text = StringProperty("")
    status_error = BooleanProperty(False)
    notice_text = StringProperty("")
    notice_error = BooleanProperty(False)
    model_text = StringProperty("")
    start_dir = StringProperty(str(Path.cwd()))
    camera_on = BooleanProperty(False)
    selected_name = StringProperty("")
    #: the open sample's ID ("" when no sample is open) and its one-line summary
    sample_open = StringProperty("")
    sample_text = StringProperty("")
    #: the ID's text as read from a label (the source is "scanned" while the text is unchanged)
    scanned_id = StringProperty("")
    #: the camera preview's framing hint (edge_app/framing.py) and whether it says "ready"
    hint_text = StringProperty("")
    hint_ready = BooleanProperty(False)

    def on_kv_post(self, *args):
        if not self.status_text:
            self.status_text = presenter.status("starting")
        self.ids.chooser.bind(selection=self._selection_changed)
        self.ids.chooser.path = self.start_dir

    def _selection_changed(self, *_args):
        sel = self.ids.chooser.selection
        self.selected_name = Path(sel[0]).name if sel else ""

    def set_status(self, text, error=False):
        self.status_text, self.status_error = text, error

    def set_notice(self, text, error=False):
        """The records database's state (new, recovered, read-only, unavailable)."""
        self.notice_text, self.notice_error = text, error

    def set_model(self, release, threshold):
        self.model_text = presenter.model_line(release.name, release.version, release.model_sha256) + "  " + \
            _("refers at {t:.2f}").format(t=threshold)

    def set_camera(self, on):
        self.camera_on = on
        if not on:
            self.ids.preview.texture = None
            self.show_framing(None)

    def show_framing(self, framing):
        """The framing guidance of the latest preview frame: its hint and the guide drawn on the preview."""
        self.hint_text = presenter.framing_hint(framing.status) if framing is not None else ""
        self.hint_ready = framing is not None and framing.ready
        self.ids.preview.guide = framing

    def show_frame(self, rgb):
        self.ids.preview.texture = to_texture(rgb)

    def set_sample(self, sample_id: str, text: str):
        self.sample_open, self.sample_text = sample_id, text

    def set_scanned_id(self, text: str):
        self.scanned_id = text
        self.ids.sample_id.text = text

    def id_source(self) -> str:
        return "scanned" if self.scanned_id and self.sample_id() == self.scanned_id else "typed"

    def clear_selection(self):
        """The chosen file is handed to the session: it cannot be added twice or to another sample."""
        self.ids.chooser.selection = []

    def reset_sample(self):
        """Nothing of the previous sample stays: selected file, camera preview, sample ID, its summary."""
        self.ids.chooser.selection = []
        self.ids.preview.texture = None
        self.ids.sample_id.text = ""
        self.scanned_id = ""
        self.sample_open = self.sample_text = ""

    def selected_path(self):
        sel = self.ids.chooser.selection
        return sel[0] if sel else None

    def sample_id(self) -> str:
        return self.ids.sample_id.text.strip()

    def start_or_finish(self, controller):
        if self.sample_open:
            controller.finish_sample()
        else:
            controller.start_sample(self.sample_id(), self.id_source())

    def add_field(self, controller):
        if self.camera_on:
            controller.capture()
        else:
            controller.add_field(self.selected_path())
