"""The app's controller: events in, model work on a worker thread, results back on the UI thread.

Model loading and screening run on one background worker (:class:`concurrent.futures.ThreadPoolExecutor`,
one thread: the interpreter is not thread-safe and jobs stay in order); records (fields, finishing a
sample, hand-over files) are written in order on a second one, so a field's result is on screen
before its fsync'd commit. The model is verified and loaded after the app's first frame. Results come back through
``Clock.schedule_once``, so widgets are only ever touched on the Kivy main thread.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from kivy.clock import Clock
from kivy.core.window import Window
from kivy.graphics.opengl import glFinish

from leukedge.errors import LeukEdgeError

from . import platform, presenter
from .exports.sample_csv import export_samples_csv
from .i18n import _, set_language
from .models_index import recommended_release
from .records import RecordsError, ScreeningSession, field_status, open_records, sample_verdict
from .release_info import list_releases
from .settings_store import AppSettings, settings_path

log = logging.getLogger(__name__)


#: ``apply_settings``: a setting the screen did not show is left as it is.
UNCHANGED = object()


class Controller:
    """Glue between the screens, the :class:`Screener` and the records (:class:`ScreeningSession`).

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
        self.db_path = Path(db_path)
        # Open, create or recover the records database; never raises (a damaged file is moved
        # aside and salvaged, a read-only one is opened for reading): the notice goes on screen.
        self.records = open_records(self.db_path)
        self.store = self.records.store
        self.session: ScreeningSession | None = None
        self.finished_uid: str | None = None
        self.last_step = None
        self._statuses: list[str] = []
        self._sample_id = ""
        self._pending = 0
        self.saved_ms: list[float] = []
        self.models_root = Path(models_root)
        self.settings_file = settings_path(Path(db_path).parent)
        self.settings = AppSettings.load(self.settings_file)
        self.threads = threads if threads is not None else self.settings.threads
        self.camera_spec = camera
        self.changing_pin = False
        self.last_export: Path | None = None
        self.screener = None       # the loaded :class:`~.inference.Screener`
        self.model_error: str | None = None
        self.busy = False
        self.last_result = None
        self.latencies_ms: list[float] = []
        self.path_ms: list[float] = []
        self.latency_parts: list[dict] = []
        self.save_cpu_ms: list[float] = []     # CPU time of each field's save on the history thread
        self._busy_ev = None
        self._t_back_start = 0.0
        self.source = None
        self._frame = None
        self._frame_pos = None
        self._preview_ev = None
        self._framing = None       # the camera preview's framing guidance (.framing.FramingWorker)
        self.framing = None        # its latest result (.framing.Framing)
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
        # Verified and loaded once the first frame is on screen (it says "Loading model..."): the
        # import of numpy/OpenCV/LiteRT and the hashing do not hold up the first frame.
        self.screen("capture").set_status(presenter.status("loading", name=Path(model).name))

        def after_first_frame(*_):
            Window.unbind(on_flip=after_first_frame)
            self.load_model(model, operating_point=op)

        Window.bind(on_flip=after_first_frame)
        return model

    def load_model(self, folder, threads: int | None = None, operating_point: str | None = None):
        """Load (and verify) a release in the background."""
        self.threads = threads if threads is not None else self.threads
        self.screen("capture").set_status(presenter.status("loading", name=Path(folder).name))

        def job():
            from .inference import Screener   # numpy, OpenCV, LiteRT: imported here, after the first frame

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
        if self.store is not None:
            if self.session is None:
                self.session = ScreeningSession(self.store, screener)
            self.session.screener = screener   # an open sample keeps its fields; new ones use this model
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
        cap = self.screen("capture")
        if self.screener is not None:
            cap.set_model(self.screener.release, self.screener.threshold)
            cap.set_status(presenter.status("start_first"))
        if self.session is not None and self.session.sample_uid is not None:   # re-created screens: still open
            cap.ids.sample_id.text = self._sample_id
            cap.set_sample(self._sample_id, presenter.sample_label(self._sample_id, len(self._statuses),
                                                                   self._verdict_words()))
            cap.set_status(presenter.status("next_field", id=self._sample_id, n=len(self._statuses) + 1))
        self.show_records_notice()
        for name in ("model", "settings", "history"):
            if self.app.root.built(name):     # the others are filled when first shown
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

    def apply_settings(self, folder, threads, operating_point, language, retention=UNCHANGED):
        """Save the settings (kept across restarts) and apply them. ``retention`` (days captured images
        are kept, None: all) is kept in the records database's audit trail, applied at once and at each start."""
        retention_problem = self._set_retention(retention)
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
        if retention_problem:
            self.screen("capture").set_status(retention_problem, error=True)
        self.app.settings_unlocked = False        # applied: locked again (also after the screens were re-created)
        self.app.go("capture")

    def _set_retention(self, days) -> str | None:
        """Record a changed image retention and delete the images it no longer keeps; a message on failure."""
        if days is UNCHANGED or self.store is None:
            return None
        try:
            if days != self.store.retention_days():
                self.store.set_retention(days, "changed in Settings")
                self.store.apply_retention()
        except LeukEdgeError as exc:
            return exc.one_line()
        return None

    # ----- samples ----------------------------------------------------------------------
    def start_sample(self, sample_id: str, id_source: str = "typed"):
        """Open a new sample with its ID; nothing of an earlier sample is kept."""
        cap = self.screen("capture")
        if self.store is None:
            cap.set_status(presenter.status("no_records", problem=self.records.problem), error=True)
            return None
        if self.screener is None:
            cap.set_status(self.model_error or presenter.status("not_loaded"), error=True)
            return None
        if self.busy:
            return None
        if self.session is not None and self.session.sample_uid is not None:
            cap.set_status(presenter.status("next_field", id=self._sample_id, n=len(self._statuses) + 1))
            return None
        # A file chosen after "New sample" belongs to this sample; everything else was cleared then.
        self.last_result = self.last_step = self.finished_uid = None
        self.screen("result").clear()
        try:
            rec = self.session.start(sample_id, id_source=id_source)
        except LeukEdgeError as exc:
            cap.set_status(exc.one_line(), error=True)
            return None
        self._statuses, self._sample_id = [], rec.sample_id
        if not (self.records.problem or self.records.read_only or self.records.moved_to):
            cap.set_notice("")    # "a new database was started" has been read by now
        cap.set_sample(rec.sample_id, presenter.sample_label(rec.sample_id, 0, self._verdict_words()))
        cap.set_status(presenter.status("started", id=rec.sample_id))
        return rec

    def _verdict_words(self) -> str:
        return presenter.sample_verdict_texts(sample_verdict(self._statuses, self.store.rule), self._card())["headline"]

    def _card(self) -> dict:
        return self.screener.release.card if self.screener is not None else {}

    def add_field(self, image):
        """Screen a path or an RGB frame as the next field of the open sample. The result is shown
        as soon as it is computed; it is then saved on the history thread (in order)."""
        cap = self.screen("capture")
        if self.busy:
            cap.set_status(presenter.status("field_busy"), error=True)
            return None
        if self.session is None or self.session.sample_uid is None:
            cap.set_status(presenter.status("start_first"), error=True)
            return None
        if image is None or (isinstance(image, (str, Path)) and not str(image)):
            cap.set_status(presenter.status("choose_first"), error=True)
            return None
        self.busy = True
        t0 = time.perf_counter()
        uid, sample_id = self.session.sample_uid, self._sample_id
        # The field belongs to the sample open now (uid); the capture screen forgets the image once the
        # result is on screen (until then `busy` refuses another add), so it is not redrawn meanwhile.
        self._busy_ev = Clock.schedule_once(lambda dt: cap.set_status(presenter.status("screening")), 0.3)
        screener = self.screener

        def job():
            c0 = time.thread_time()
            res = screener.screen_image(image)
            return res, time.perf_counter(), (time.thread_time() - c0) * 1000

        return self._submit(job, lambda r, e: self._field_screened(r, e, t0, image, uid, sample_id))

    def _field_screened(self, result, error, t0, image, uid, sample_id):
        self.busy = False
        if self._busy_ev is not None:
            self._busy_ev.cancel()
        t_back, c_back, pc_back = time.perf_counter(), time.thread_time(), time.process_time()
        cap = self.screen("capture")
        if error or result is None:
            cap.clear_selection()
            cap.set_status(presenter.status("cannot_screen", error=error), error=True)
            return
        res, t_done, worker_cpu = result
        self.last_result = res
        self._statuses.append(field_status(res))
        n = len(self._statuses)
        verdict = sample_verdict(self._statuses, self.store.rule)
        self.screen("result").show_field(res, n, verdict, self._card(), self.screener.release, sample_id)
        self.app.root.current = "result"
        self._pending += 1

        def on_flip(*_):  # the frame with the field's result and heatmap is on screen now
            Window.unbind(on_flip=on_flip)
            glFinish()   # the frame is drawn (a software renderer draws on its own threads until now)
            t_flip, c_flip, pc_flip = time.perf_counter(), time.thread_time(), time.process_time()
            # The capture screen (not shown now) is brought up to date after that frame: with a
            # software renderer every change drawn before it delays the result on screen.
            cap.clear_selection()
            cap.set_sample(sample_id, presenter.sample_label(sample_id, n, self._verdict_words()))
            cap.set_status(presenter.status("next_field", id=sample_id, n=n + 1))
            ms = (t_flip - t0) * 1000
            self.latencies_ms.append(ms)
            self.path_ms.append(res.timings["total"])
            self.latency_parts.append({"worker": round((t_done - t0) * 1000, 2),
                                       "to_main_thread": round((t_back - t_done) * 1000, 2),
                                       "gil": round((self._t_back_start - t_done) * 1000, 2),
                                       "fill_and_draw": round((t_flip - t_back) * 1000, 2),
                                       # CPU time (not waiting): the worker's, and the main thread's from the
                                       # result's arrival to that frame (with the capture screen's update)
                                       "worker_cpu": round(worker_cpu, 2),
                                       "fill_and_draw_cpu": round((c_flip - c_back) * 1000, 2),
                                       # every thread's: with a software renderer (Mesa llvmpipe) the
                                       # drawing runs on the renderer's own threads
                                       "fill_and_draw_process_cpu": round((pc_flip - pc_back) * 1000, 2)})
            log.info("field handed to the session -> result on screen: %.1f ms (inference path %.1f ms)",
                     ms, res.timings["total"])

        Window.bind(on_flip=on_flip)
        source = image

        def save():
            c0 = time.thread_time()
            step = self.session.record_field(res, source, sample_uid=uid)
            return step, time.perf_counter(), (time.thread_time() - c0) * 1000

        self._submit(save, lambda r, e: self._field_saved(r, e, t0), pool=self._writer)

    def _field_saved(self, result, error, t0):
        self._pending -= 1
        if error:
            self.screen("result").set_note(presenter.status("not_saved_field", error=error))
            self.screen("capture").set_status(presenter.status("not_saved_field", error=error), error=True)
            return
        step, t_saved, save_cpu = result
        self.saved_ms.append((t_saved - t0) * 1000)
        self.save_cpu_ms.append(round(save_cpu, 2))
        self.last_step = step
        if step.field.image_error:    # the result is kept, its image (full disk...) is not: said, not hidden
            msg = presenter.status("saved_without_image", error=step.field.image_error)
            self.screen("result").set_note(msg)
            self.screen("capture").set_status(msg, error=True)
        if self.session.sample_uid == step.sample.uid:   # still the open sample: show the stored list
            self.screen("result").show_sample(step.sample, self._card())

    def finish_sample(self):
        """Finish the open sample (after its fields are saved): its verdict is recorded."""
        if self.session is None or self.session.sample_uid is None or self.busy:
            return None
        uid = self.session.sample_uid

        def job():
            self.session.finish()
            return self.store.sample(uid)

        self.busy = True
        return self._submit(job, self._finished, pool=self._writer)

    def _finished(self, rec, error):
        self.busy = False
        cap, res = self.screen("capture"), self.screen("result")
        if error:
            res.set_note(error)
            cap.set_status(error, error=True)
            return
        self.finished_uid = rec.uid
        cap.reset_sample()
        cap.set_status(presenter.status("finished", id=rec.sample_id))
        res.show_finished(rec, self._card())
        self.app.root.current = "result"

    def _clear_sample_views(self):
        self.last_result = self.last_step = None
        self.finished_uid = None
        self._statuses = []
        self.screen("result").clear()
        self.screen("capture").reset_sample()

    def new_sample(self):
        """Start the next sample: nothing of the previous one carries over (file, frame, fields, ID)."""
        if self.source is not None:
            self.stop_camera()
        if self.session is not None and self.session.sample_uid is not None:
            return None   # an open sample is finished first (the Finish button)
        self._clear_sample_views()
        self.screen("capture").set_status(presenter.status("start_first"))
        self.app.go("capture")
        return True

    def hand_over(self, kind: str, sample_uid: str | None = None):
        """Write the referral PDF, the FHIR R4 bundle or the CSV of a finished sample as a new file
        (history thread); on Android offer it to other apps. Failures are messages, never a crash."""
        uid = sample_uid or self.finished_uid
        if uid is None or self.session is None:
            return None
        folder = self.export_folder()

        def job():
            return self.session.hand_over(uid, folder, kinds=(kind,))[0]

        return self._submit(job, self._handed_over, pool=self._writer)

    def _handed_over(self, path, error):
        if error:
            msg = presenter.status("hand_over_failed", error=error)
        else:
            self.last_export = path
            msg = presenter.status("handed_over", file=path.name)
            platform.share_file(path, _("Share the screening report"))
        self.screen("result").set_note(msg)
        self.screen("detail").set_note(msg)

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
        self.app.root.fbind("current", self._screen_changed)
        self._screen_changed()

    def _preview(self, dt):
        frame = self.source.read() if self.source else None
        if frame is not None:
            self._frame, self._frame_pos = frame, getattr(self.source, "position", None)
            self.screen("capture").show_frame(frame)

    # framing guidance: runs while the camera is on and the capture screen is shown
    def _screen_changed(self, *_):
        if self.source is not None and self.app.root.current == "capture":
            if self._framing is None:
                from .framing import FramingWorker

                self._framing = FramingWorker(lambda: (self._frame, self._frame_pos), self._framed,
                                              self._quality_config)
            self._framing.start()
        elif self._framing is not None:
            self._framing.stop()

    def _quality_config(self):
        from .quality import QualityConfig

        return self.screener.quality_cfg if self.screener is not None else QualityConfig()

    def _framed(self, framing):
        self.framing = framing
        self.screen("capture").show_framing(framing)

    def capture(self):
        """Add the current camera frame as the next field."""
        if self._frame is None:
            self.screen("capture").set_status(presenter.status("no_frame"), error=True)
            return None
        return self.add_field(self._frame.copy())

    def scan_sample_id(self):
        """Read the sample ID from a QR code / barcode label held in front of the camera."""
        if self._frame is None:
            self.screen("capture").set_status(presenter.status("no_frame"), error=True)
            return None
        from .sample_id import read_code   # OpenCV's QR detector: only when a label is scanned

        frame = self._frame.copy()
        return self._submit(lambda: read_code(frame), self._scanned)

    def _scanned(self, text, error):
        cap = self.screen("capture")
        if text:
            cap.set_scanned_id(text)
            cap.set_status(presenter.status("id_read", id=text))
        else:
            cap.set_status(error or presenter.status("no_code"), error=True)

    def stop_camera(self):
        if self._preview_ev is not None:
            self._preview_ev.cancel()
        if self.source is not None:
            self.source.close()
        if self._framing is not None:
            self._framing.stop()
        self.app.root.funbind("current", self._screen_changed)
        self.source, self._frame, self._frame_pos, self._preview_ev, self.framing = None, None, None, None, None
        self.screen("capture").set_camera(False)

    # ----- history ----------------------------------------------------------------------
    def show_records_notice(self):
        """The records database's state on screen: a new, recovered or read-only database, or none."""
        r = self.records
        if r.problem:
            text = presenter.status("no_records", problem=r.problem)
        elif r.moved_to is not None:
            text = presenter.status("db_recovered", file=r.moved_to.name,
                                    n=sum((r.salvaged or {}).get(k, 0) for k in ("samples", "screenings")))
        elif r.read_only:
            text = presenter.status("db_read_only", path=str(self.db_path))
        elif r.notice:
            text = presenter.status("db_new", path=str(self.db_path))
        else:
            return
        self.screen("capture").set_notice(text, error=bool(r.problem or r.read_only or r.moved_to))

    def export_folder(self) -> Path:
        """Where exports go: ``exports/`` beside the database."""
        return self.db_path.parent / "exports"

    def export_history(self, path=None):
        """Write every sample as CSV to a new timestamped file (formula-safe; never overwrites an
        earlier export; on the history thread); on Android offer it to other apps. The history
        screen's summary line says where it went, or why it could not (full disk...)."""
        if self.store is None:
            self.screen("history").summary = presenter.status("no_records", problem=self.records.problem)
            return None

        def job():
            return export_samples_csv(self.store.samples(limit=1_000_000), Path(path) if path else self.export_folder())

        return self._submit(job, self._exported, pool=self._writer)

    def _exported(self, target, error):
        hist = self.screen("history")
        if error:
            hist.summary = presenter.status("export_failed", error=error)
            return
        self.last_export = target
        hist.summary = presenter.status("exported", path=str(target))
        platform.share_file(target, _("Share the screening history"))

    def samples(self, limit: int = 200) -> list:
        """Newest first; [] when there is no database (its problem is on screen)."""
        if self.store is None:
            return []
        try:
            return self.store.samples(limit=limit)
        except RecordsError as exc:
            log.warning("%s", exc.one_line())
            return []

    def sample(self, uid: str):
        return self.store.sample(uid) if self.store is not None else None

    def amend(self, uid: str, action: str, reason: str, new_id: str = "", field_uid: str | None = None) -> str:
        """Void a field or the sample, or correct its ID, with a reason (a new audit event; nothing is
        edited in place). Returns the message for the screen."""
        try:
            if action == "correct":
                self.store.correct_sample_id(uid, new_id, reason)
            elif action == "void_sample":
                self.store.void_sample(uid, reason)
            elif action == "void_field" and field_uid:
                self.store.void_field(field_uid, reason)
            else:
                raise ValueError(f"unknown action {action!r}")
        except LeukEdgeError as exc:
            return exc.one_line()
        return presenter.status("amended")

    def shutdown(self):
        self.stop_camera() if self.source else None
        if self._framing is not None:
            self._framing.shutdown()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._writer.shutdown(wait=True)  # every queued record is committed before exit
        if self.store is not None:
            self.store.close()
