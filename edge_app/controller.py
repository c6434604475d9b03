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

from kivy.clock import Clock
from kivy.core.window import Window

from leukedge.errors import LeukEdgeError

from .history import History
from .inference import Screener, list_releases

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
        self.threads = threads
        self.camera_spec = camera
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

    def load_model(self, folder, threads: int | None = None, operating_point: str | None = None):
        """Load (and verify) a release in the background."""
        self.threads = threads if threads is not None else self.threads
        self.screen("capture").set_status(f"Loading model {Path(folder).name}...")

        def job():
            s = Screener(folder, num_threads=self.threads, allow_unsigned=self.allow_unsigned)
            if operating_point:
                s.set_operating_point(operating_point)
            return s

        return self._submit(job, self._model_loaded)

    def _model_loaded(self, screener, error):
        if error:
            self.model_error = error
            self.screen("capture").set_status(f"Model refused: {error}", error=True)
            return
        self.screener, self.model_error = screener, None
        r = screener.release
        log.info("model %s v%s loaded in %.0f ms", r.name, r.version, screener.load_ms)
        self.screen("capture").set_model(r, screener.threshold)
        unsigned = "" if r.signature_status == "verified" else " UNSIGNED release (development only)."
        self.screen("capture").set_status(f"Ready: {r.name} v{r.version}.{unsigned} Choose an image.",
                                          error=bool(unsigned))
        for name in ("model", "settings"):
            self.screen(name).refresh(self)

    # ----- screening --------------------------------------------------------------------
    def screen_image(self, image, sample_id: str = ""):
        """Screen a path or an RGB frame; the result screen opens when done."""
        if self.busy:
            return None
        if self.screener is None:
            self.screen("capture").set_status(self.model_error or "No model loaded yet", error=True)
            return None
        if image is None or (isinstance(image, (str, Path)) and not str(image)):
            self.screen("capture").set_status("Choose an image first", error=True)
            return None
        self.busy = True
        t0 = time.perf_counter()
        # Show "Screening..." only if it takes a while: any change on screen makes Kivy redraw the
        # window, which (software GL, busy CPU) can cost more than the screening itself.
        self._busy_ev = Clock.schedule_once(lambda dt: self.screen("capture").set_status("Screening..."), 0.3)
        screener = self.screener

        def job():
            return screener.screen_image(image), time.perf_counter()

        return self._submit(job, lambda r, e: self._screened(r, e, t0, sample_id))

    def _screened(self, result, error, t0, sample_id):
        self.busy = False
        if self._busy_ev is not None:
            self._busy_ev.cancel()
        t_back = time.perf_counter()
        res, t_done = result if result is not None else (None, t_back)
        if error or res is None or res.error:
            msg = error or res.error
            self.screen("capture").set_status(f"Cannot screen this file: {msg}", error=True)
            return
        self.last_result = res
        self.screen("capture").clear_sample()
        self.screen("capture").ready_text = "Ready: choose or capture the next image."  # shown when it is entered
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
        self._submit(lambda: self.history.add(res, sample_id=sample_id or None), self._recorded, pool=self._writer)

    def _recorded(self, record_id, error):
        if error:
            self.screen("result").set_note(f"Not saved to history: {error}")
        else:
            self.last_record_id = record_id
            if self.app.root.current == "history":   # otherwise it refreshes when shown
                self.screen("history").refresh(self)

    # ----- camera -----------------------------------------------------------------------
    def toggle_camera(self):
        from .frames import open_source

        if self.source is not None:
            self.stop_camera()
            return
        try:
            self.source = open_source(self.camera_spec or "0")
        except LeukEdgeError as exc:
            self.screen("capture").set_status(f"No camera: {exc.one_line()}", error=True)
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
            self.screen("capture").set_status("No camera frame yet", error=True)
            return None
        return self.screen_image(self._frame.copy(), sample_id)

    def stop_camera(self):
        if self._preview_ev is not None:
            self._preview_ev.cancel()
        if self.source is not None:
            self.source.close()
        self.source, self._frame, self._preview_ev = None, None, None
        self.screen("capture").set_camera(False)

    # ----- history ----------------------------------------------------------------------
    def export_history(self, path=None) -> str:
        """Write a new timestamped CSV (never overwrites an earlier export) in ``path`` (a folder)
        or the database's folder; raises a LeukEdgeError (e.g. full disk) with the database untouched."""
        return str(self.history.export_new(Path(path) if path else self.history.path.parent))

    def export_history_text(self, path=None) -> str:
        """Export and say what happened (the app keeps running when the export fails)."""
        try:
            return f"Exported to {self.export_history(path)}"
        except LeukEdgeError as exc:
            return f"Export failed: {exc.one_line()}"

    def shutdown(self):
        self.stop_camera() if self.source else None
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._writer.shutdown(wait=True)  # every queued record is committed before exit
        self.history.close()
