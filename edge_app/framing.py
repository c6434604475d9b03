"""Live framing guidance on the camera preview: the capture path's quality gate, before the photo.

While the camera is on, :class:`FramingWorker` judges a downscaled copy of the latest preview frame
on its own thread (``leukedge-framing``), at most :data:`RATE` times a second and one frame at a
time, with the very quality gate a captured field goes through (:func:`.quality.check_quality_fov`:
the same field-of-view detection, thresholds and order). The result (:class:`Framing`) comes back to
the UI thread through ``Clock.schedule_once``; the capture screen shows its hint
(:func:`.presenter.framing_hint`) and draws the field of view's circle and the square the
field-of-view crop keeps. It is guidance, never a lock: Capture works whatever it says.

The copy is scaled to :data:`SHORT_SIDE` px on its short side (never enlarged): the eyepiece disc's
square then stays larger than the gate's 256 px measuring size, so exposure and blur are measured as
at capture. Near the blur threshold the copy and the full frame can still disagree (sharpness
depends a little on the resolution it is measured from); the full frame is judged again at capture.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from .quality import QualityConfig, check_quality_fov

log = logging.getLogger(__name__)

#: evaluations per second at most
RATE = 4.0
#: short side (px) of the copy the guidance judges
SHORT_SIDE = 480


@dataclass(frozen=True)
class Framing:
    """The guidance for one preview frame.

    Attributes:
        status: the quality gate's status (``ok`` or a retake reason, :mod:`.quality`).
        size: (width, height) of the judged copy; the geometry below is in its pixels.
        circle: the eyepiece's field of view (cx, cy, radius), or None when there is none.
        square: (x0, y0, x1, y1) the field-of-view crop keeps, or None.
        frame_pos: the source's position of the judged frame (video files), else None.
        thread: name of the thread that judged it; ``thread_id`` its identity.
        ms: time the judgement took.
    """

    status: str
    size: tuple[int, int]
    circle: tuple[float, float, float] | None
    square: tuple[int, int, int, int] | None
    frame_pos: int | None
    thread: str
    thread_id: int
    ms: float

    @property
    def ready(self) -> bool:
        return self.status == "ok"


def downscale(rgb: np.ndarray, short_side: int = SHORT_SIDE) -> np.ndarray:
    """A copy with at most ``short_side`` px on its short side (INTER_AREA; never enlarged)."""
    h, w = rgb.shape[:2]
    s = short_side / min(h, w)
    if s >= 1:
        return rgb.copy()
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def evaluate(rgb: np.ndarray, cfg: QualityConfig | None = None, frame_pos: int | None = None) -> Framing:
    """Judge a preview frame (downscaled first) with the quality gate; runs on the framing thread."""
    t0 = time.perf_counter()
    small = downscale(rgb)
    report, fov = check_quality_fov(small, cfg)
    me = threading.current_thread()
    return Framing(status=report.status, size=(int(small.shape[1]), int(small.shape[0])),
                   circle=None if fov is None else (float(fov.cx), float(fov.cy), float(fov.radius)),
                   square=None if fov is None else fov.square(small.shape), frame_pos=frame_pos,
                   thread=me.name, thread_id=me.ident, ms=(time.perf_counter() - t0) * 1000)


class FramingWorker:
    """Judges the latest preview frame off the UI thread, at most ``rate`` times a second.

    Args:
        latest: ``latest() -> (frame, position)`` on the UI thread: the newest preview frame (None: none yet).
        on_result: ``on_result(framing)`` on the UI thread.
        config: ``config() -> QualityConfig`` (the loaded model's, as at capture).
    """

    def __init__(self, latest, on_result, config, rate: float = RATE):
        self.latest, self.on_result, self.config, self.rate = latest, on_result, config, rate
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leukedge-framing")
        self._ev = None
        self._busy = False
        self._last = None
        self._generation = 0
        self.evaluations = 0

    @property
    def running(self) -> bool:
        return self._ev is not None

    def start(self) -> None:
        from kivy.clock import Clock

        if self._ev is None:
            self._generation += 1
            self._last = None
            self._ev = Clock.schedule_interval(self._tick, 1.0 / self.rate)

    def stop(self) -> None:
        """No more evaluations; one in flight is dropped when it ends."""
        if self._ev is not None:
            self._ev.cancel()
        self._ev = None
        self._generation += 1

    def shutdown(self) -> None:
        self.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _tick(self, _dt):
        if self._busy:
            return
        frame, pos = self.latest()
        if frame is None or frame is self._last:     # nothing new to judge
            return
        self._busy, self._last = True, frame
        gen, cfg = self._generation, self.config()
        fut = self._pool.submit(evaluate, frame, cfg, pos)
        fut.add_done_callback(lambda f: self._back(f, gen))

    def _back(self, fut, gen):
        from kivy.clock import Clock

        if fut.cancelled():     # shut down
            return
        try:
            result = fut.result()
        except Exception:  # a bug in the guidance must not take the camera down
            log.exception("framing guidance failed")
            result = None
        Clock.schedule_once(lambda dt: self._done(result, gen), 0)

    def _done(self, result, gen):
        self._busy = False
        if result is None or gen != self._generation:   # stopped (or restarted) meanwhile
            return
        self.evaluations += 1
        self.on_result(result)
