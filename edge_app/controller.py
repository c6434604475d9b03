"""The app's controller: events in, model work on a worker thread, results back on the UI thread.

Model loading, screening and history writes run on one background worker
(:class:`concurrent.futures.ThreadPoolExecutor`, one thread: the interpreter is not
thread-safe and jobs stay in order). Results come back through
``Clock.schedule_once``, so widgets are only ever touched on the Kivy main thread.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from kivy.clock import Clock
from kivy.core.window import Window

from leukedge.errors import DataError, ImageError, LeukEdgeError
from leukedge.fileio import atomic_write_bytes

from . import platform, presenter
from .history import History
from .i18n import _, set_language
from .inference import Screener, list_releases
from .models_index import recommended_release
from .sample_id import read_code
from .settings_store import AppSettings, settings_path

log = logging.getLogger(__name__)


class Controller:
    """Glue between the screens, the :class:`Screener` and the :class:`History`.

    Args:
        app: the running :class:`~leukedge.edge_app.app.LeukEdgeApp`.
        db_path: history database file.
        models_root: folder with release folders (for the settings screen).
        threads: interpreter threads.
        camera: frame source spec for the camera button (``0``, ``kivy:0`` or a video file).
    """

    #: open releases whose signature is missing, wrong or untrusted (``leukedge app --allow-unsigned``)
    allow_unsigned: bool = False

    def __init__(self, app, db_path, models_root="models", threads: int | None = None, camera: str | None = None):
        self.app = app
        self.history = History(db_path)
        self.models_root = Path(models_root)
        self.settings_file = settings_path(Path(db_path).parent)
        self.settings = AppSettings.load(self.settings_file)
        self.threads = threads if threads is not None else self.settings.threads
        self.camera_spec = camera
        self.changing_pin = False
        self.last_export: Path | None = None
        self.screener: Screener | None = None
        self.model_error: str | None = None
        self.busy = False
        self.last_result = None
        self.last_record_id: int | None = None
        self.latencies_ms: list[float] = []
        self.path_ms: list[float] = []
        self.latency_parts: list[dict] = []
        self._busy_ev = None
        self._t_back_start = 0.0
        self.source = None
        self._frame = None
        self._preview_ev = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leukedge-worker")
        # History commits (fsync) on their own thread, so a slow disk never delays the next screening.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leukedge-history")

    # ----- plumbing ---------------------------------------------------------------------
    def _submit(self, fn, on_done, *args, pool=None):
        """Run ``fn(*args)`` on a worker; ``on_done(result, error)`` later on the main thread."""
        fut: Future = (pool or self._pool).submit(fn, *args)

        def back(f: Future):
            self._t_back_start = time.perf_counter()
            try:
                result, error = f.result(), None
            except LeukEdgeError as exc:
                result, error = None, exc.one_line()
            except Exception as exc:  # a bug must not take the app down: show it, log it
                log.exception("worker job failed")
                result, error = None, f"unexpected error: {type(exc).__name__}: {exc}"
            Clock.schedule_once(lambda dt: on_done(result, error), 0)

        fut.add_done_callback(back)
        return fut

    def screen(self, name):
        return self.app.root.get_screen(name)

    # ----- model ------------------------------------------------------------------------
    def releases(self) -> list[Path]:
        return list_releases(self.models_root)

    def start(self):
        """Open the model at start: ``--model``, else the saved setting, else the recommended release."""
        # Android: the file list needs storage access (the camera asks when it is turned on).
        platform.request_permissions(platform.STORAGE, lambda granted: Clock.schedule_once(
            lambda dt: self.screen("capture").ids.chooser.refresh(), 0))
        model = self.app.model_path
        op = None
        if not model and self.settings.model and (self.models_root / self.settings.model) in self.releases():
            model = self.models_root / self.settings.model
        if model and Path(model).name == self.settings.model:
            op = self.settings.operating_point      # the saved operating point of that release
        if not model:
            try:
                model = recommended_release(self.models_root)
            except LeukEdgeError as exc:
                self.screen("capture").set_status(exc.one_line(), error=True)
                return None
        if model is None:
            self.screen("capture").set_status(presenter.status("no_model", folder=f"{self.models_root}/"),
                                              error=True)
            return None
        return self.load_model(model, operating_point=op)

    def load_model(self, folder, threads: int | None = None, operating_point: str | None = None):
        """Load (and verify) a release in the background."""
        self.threads = threads if threads is not None else self.threads
        self.screen("capture").set_status(presenter.status("loading", name=Path(folder).name))

        def job():
            s = Screener(folder, num_threads=self.threads, allow_unsigned=self.allow_unsigned)
            if operating_point:
                try:
                    s.set_operating_point(operating_point)
                except LeukEdgeError:   # a saved point the release no longer has: its default
                    log.warning("operating point %s not in %s; using the default", operating_point, folder)
            return s

        return self._submit(job, self._model_loaded)

    def _model_loaded(self, screener, error):
        if error:
            self.model_error = error
            self.screen("capture").set_status(presenter.status("refused", error=error), error=True)
            return
        self.screener, self.model_error = screener, None
        r = screener.release
        log.info("model %s v%s loaded in %.0f ms", r.name, r.version, screener.load_ms)
        self.screens_rebuilt()
        if r.signature_status == "verified":
            self.screen("capture").set_status(presenter.status("ready", name=r.name, version=r.version))
        else:  # only reachable with --allow-unsigned (development): said on the screen
            self.screen("capture").set_status(presenter.status("ready_unsigned", name=r.name, version=r.version),
                                              error=True)

    def screens_rebuilt(self):
        """Fill the screens that show the model (after loading it, or after they were re-created)."""
        if self.screener is not None:
            self.screen("capture").set_model(self.screener.release, self.screener.threshold)
            self.screen("capture").set_status(presenter.status("next"))
        for name in ("model", "settings", "history"):
            self.screen(name).refresh(self)

    # ----- settings ---------------------------------------------------------------------
    def unlock_settings(self, pin: str, create: bool = False) -> tuple[bool, str]:
        """Check (or, with ``create``, set) the settings PIN; opens the settings when it succeeds."""
        if create:
            try:
                self.settings.set_pin(pin)
            except LeukEdgeError:
                return False, presenter.status("pin_short")
            self.settings.save(self.settings_file)
            self.changing_pin = False
        elif not self.settings.check_pin(pin):
            return False, presenter.status("wrong_pin")
        self.app.settings_unlocked = True
        self.app.root.current = "settings"
        return True, ""

    def apply_settings(self, folder, threads, operating_point, language):
        """Save the settings (kept across restarts) and apply them."""
        same_model = self.screener is not None and self.screener.release.folder == folder
        st = self.settings
        st.model = folder.name if folder is not None else st.model
        st.threads, st.operating_point = threads, operating_point
        language_changed = language != st.language
        st.language = language
        st.save(self.settings_file)
        if language_changed:
            set_language(language)
            self.app.rebuild_screens()
        if same_model and threads == self.threads and operating_point:
            self.screener.set_operating_point(operating_point)
            self.screen("capture").set_model(self.screener.release, self.screener.threshold)
            self.screen("capture").set_status(presenter.status("saved"))
        elif folder is not None:
            self.load_model(folder, threads, operating_point if same_model else None)
        self.app.settings_unlocked = False        # applied: locked again (also after the screens were re-created)
        self.app.go("capture")

    # ----- screening --------------------------------------------------------------------
    def screen_image(self, image, sample_id: str = ""):
        """Screen a path or an RGB frame; the result screen opens when done."""
        if self.busy:
            return None
        if self.screener is None:
            self.screen("capture").set_status(self.model_error or presenter.status("not_loaded"), error=True)
            return None
        if image is None or (isinstance(image, (str, Path)) and not str(image)):
            self.screen("capture").set_status(presenter.status("choose_first"), error=True)
            return None
        self.busy = True
        t0 = time.perf_counter()
        # Show "Screening..." only if it takes a while: any change on screen makes Kivy redraw the
        # window, which (software GL, busy CPU) can cost more than the screening itself.
        self._busy_ev = Clock.schedule_once(lambda dt: self.screen("capture").set_status(presenter.status("screening")), 0.3)
        screener = self.screener

        def job():
            return screener.screen_image(image), time.perf_counter()

        frame = image if isinstance(image, np.ndarray) else None
        return self._submit(job, lambda r, e: self._screened(r, e, t0, sample_id, frame))

    def _screened(self, result, error, t0, sample_id, frame=None):
        self.busy = False
        if self._busy_ev is not None:
            self._busy_ev.cancel()
        t_back = time.perf_counter()
        res, t_done = result if result is not None else (None, t_back)
        if error or res is None or res.error:
            msg = error or res.error
            self.screen("capture").set_status(presenter.status("cannot_screen", error=msg), error=True)
            return
        self.last_result = res
        # The result screen holds this image now; the capture screen keeps nothing of it, so
        # whatever route leads back there, the next screening starts from an empty sample.
        self.screen("capture").reset_sample()
        self.screen("capture").set_status(presenter.status("next"))
        self.screen("result").show(res, self.screener.release)
        self.app.root.current = "result"

        def on_flip(*_):  # the frame with the result and heatmap is on screen now
            Window.unbind(on_flip=on_flip)
            t_flip = time.perf_counter()
            ms = (t_flip - t0) * 1000
            self.latencies_ms.append(ms)
            self.path_ms.append(res.timings["total"])
            self.latency_parts.append({"worker": round((t_done - t0) * 1000, 2),
                                       "to_main_thread": round((t_back - t_done) * 1000, 2),
                                       "gil": round((self._t_back_start - t_done) * 1000, 2),
                                       "fill_and_draw": round((t_flip - t_back) * 1000, 2)})
            log.info("image chosen -> result on screen: %.1f ms (inference path %.1f ms)", ms, res.timings["total"])

        Window.bind(on_flip=on_flip)
        self._submit(lambda: self.record(res, sample_id, frame), self._recorded, pool=self._writer)

    def record(self, res, sample_id: str = "", frame=None) -> int:
        """Store one screening (worker thread). A score a gate hid is stored as no score; a
        camera photo is saved as a PNG next to the history and its path recorded."""
        fields = {"probability": None} if presenter.score_hidden(res.decision) else {}
        if frame is not None:
            fields["image_path"] = str(self.save_capture(frame, res.image_sha256))
        return self.history.add(res, sample_id=sample_id or None, **fields)

    def save_capture(self, frame, sha256: str | None) -> Path:
        """Write a camera frame (RGB) losslessly to ``<data>/captures/<local time>-<hash>.png``."""
        ok, png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ImageError("the camera frame could not be encoded as PNG")
        path = self.history.path.parent / "captures" / f"{time.strftime('%Y%m%d-%H%M%S')}-{(sha256 or 'frame')[:12]}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, png.tobytes())
        return path

    def new_sample(self):
        """Start the next sample: nothing of the previous one carries over."""
        if self.source is not None:
            self.stop_camera()
        self.last_result = None
        self.screen("result").clear()
        self.screen("capture").reset_sample()
        self.screen("capture").set_status(presenter.status("next"))
        self.app.go("capture")

    def _recorded(self, record_id, error):
        if error:
            self.screen("result").set_note(presenter.status("not_saved", error=error))
        else:
            self.last_record_id = record_id
            if self.app.root.current == "history":   # otherwise it refreshes when shown
                self.screen("history").refresh(self)

    # ----- camera -----------------------------------------------------------------------
    def toggle_camera(self):
        """Camera on/off; on Android the camera permission is asked first."""
        if self.source is not None:
            self.stop_camera()
            return
        platform.request_permissions(platform.CAMERA, lambda granted: Clock.schedule_once(
            lambda dt: self._open_camera(granted), 0))

    def _open_camera(self, granted: bool):
        from .frames import open_source

        if not granted:
            self.screen("capture").set_status(presenter.status("permission", what=_("camera")), error=True)
            return
        try:
            self.source = open_source(self.camera_spec or "0")
        except LeukEdgeError as exc:
            self.screen("capture").set_status(presenter.status("no_camera", error=exc.one_line()), error=True)
            return
        self._preview_ev = Clock.schedule_interval(self._preview, 1 / 15)
        self.screen("capture").set_camera(True)

    def _preview(self, dt):
        frame = self.source.read() if self.source else None
        if frame is not None:
            self._frame = frame
            self.screen("capture").show_frame(frame)

    def capture(self, sample_id: str = ""):
        if self._frame is None:
            self.screen("capture").set_status(presenter.status("no_frame"), error=True)
            return None
        return self.screen_image(self._frame.copy(), sample_id)

    def scan_sample_id(self):
        """Read the sample ID from a QR code / barcode label held in front of the camera."""
        if self._frame is None:
            self.screen("capture").set_status(presenter.status("no_frame"), error=True)
            return None
        frame = self._frame.copy()
        return self._submit(lambda: read_code(frame), self._scanned)

    def _scanned(self, text, error):
        cap = self.screen("capture")
        if text:
            cap.ids.sample_id.text = text
            cap.set_status(presenter.status("id_read", id=text))
        else:
            cap.set_status(error or presenter.status("no_code"), error=True)

    def stop_camera(self):
        if self._preview_ev is not None:
            self._preview_ev.cancel()
        if self.source is not None:
            self.source.close()
        self.source, self._frame, self._preview_ev = None, None, None
        self.screen("capture").set_camera(False)

    # ----- history ----------------------------------------------------------------------
    def export_folder(self) -> Path:
        """Where exports go: ``exports/`` beside the database."""
        return self.history.path.parent / "exports"

    def export_history(self, path=None):
        """Write the history as CSV to a new timestamped file (formula-safe; never overwrites an
        earlier export; on the history thread); on Android offer it to other apps. The history
        screen's summary line says where it went, or why it could not (full disk...): the
        database is untouched either way."""
        def job():
            return self.history.export_new(Path(path) if path else self.export_folder())

        return self._submit(job, self._exported, pool=self._writer)

    def export_history_text(self, path=None) -> str:
        """Export now (this thread) and say what happened; the app keeps running when it fails."""
        try:
            return f"Exported to {self.history.export_new(Path(path) if path else self.export_folder())}"
        except LeukEdgeError as exc:
            return f"Export failed: {exc.one_line()}"

    def _exported(self, target, error):
        hist = self.screen("history")
        if error:
            hist.summary = presenter.status("export_failed", error=error)
            return
        self.last_export = target
        hist.summary = presenter.status("exported", path=str(target))
        platform.share_file(target, _("Share the screening history"))

    def shutdown(self):
        self.stop_camera() if self.source else None
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._writer.shutdown(wait=True)  # every queued record is committed before exit
        self.history.close()
