"""Capture screen: sample ID, choose a smear image (file list) or take one with the camera."""
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
    model_text = StringProperty("")
    start_dir = StringProperty(str(Path.cwd()))
    camera_on = BooleanProperty(False)
    selected_name = StringProperty("")

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

    def set_model(self, release, threshold):
        self.model_text = presenter.model_line(release.name, release.version, release.model_sha256) + "  " + \
            _("refers at {t:.2f}").format(t=threshold)

    def set_camera(self, on):
        self.camera_on = on
        if not on:
            self.ids.preview.texture = None

    def show_frame(self, rgb):
        self.ids.preview.texture = to_texture(rgb)

    def reset_sample(self):
        """Nothing of the previous sample stays: selected file, camera preview, sample ID."""
        self.ids.chooser.selection = []
        self.ids.preview.texture = None
        self.ids.sample_id.text = ""

    def selected_path(self):
        sel = self.ids.chooser.selection
        return sel[0] if sel else None

    def sample_id(self) -> str:
        return self.ids.sample_id.text.strip()
