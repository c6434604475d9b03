"""Frame sources: where the image to screen comes from.

One small interface (``read() -> RGB uint8 array | None``, ``close()``) over:

* :class:`FileSource`: an image file chosen in the file chooser (decoded by
  :func:`leukedge.imageio.load_image`);
* :class:`CameraSource`: a live camera through OpenCV (desktop, Raspberry Pi with a USB
  or libcamera-v4l2 camera);
* :class:`KivyCameraSource`: Kivy's camera provider (Android's camera, or any provider
  Kivy finds), read from the camera texture;
* :class:`VideoFileSource`: a video file played as a camera, for devices without a camera
  and for tests.

:func:`open_source` picks one from a spec string: a path to an image or a video, a camera
index (``0``), or ``kivy:0``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from leukedge.errors import ConfigError, ImageError
from leukedge.imageio import load_image

log = logging.getLogger(__name__)

VIDEO_EXTS = {".avi", ".mp4", ".mkv", ".mov", ".webm", ".mjpg", ".mjpeg"}


class FrameSource:
    """Base class: ``read()`` returns the next RGB uint8 frame, or None when none is available."""

    live = False  # True for sources whose frames change over time (camera, video)

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FileSource(FrameSource):
    """A still image file (always returns the same frame)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.frame = load_image(self.path)

    def read(self) -> np.ndarray:
        return self.frame


class _OpenCVSource(FrameSource):
    live = True

    def __init__(self, target, what: str):
        import cv2

        self._cv2 = cv2
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            raise ImageError(f"cannot open {what} {target}", "check that it exists and is not used by another app")

    def read(self) -> np.ndarray | None:
        ok, bgr = self.cap.read()
        if not ok or bgr is None:
            return None
        return self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.cap.release()


class CameraSource(_OpenCVSource):
    """A camera through OpenCV (``index`` 0 is the first camera)."""

    def __init__(self, index: int = 0, width: int | None = None, height: int | None = None):
        super().__init__(int(index), "camera")
        if width and height:
            self.cap.set(self._cv2.CAP_PROP_FRAME_WIDTH, width)
            self.cap.set(self._cv2.CAP_PROP_FRAME_HEIGHT, height)


class VideoFileSource(_OpenCVSource):
    """A video file played as a camera; ``loop`` restarts it at the end. ``position`` is the index
    of the frame read last (which frame the framing guidance judged, in logs and tests)."""

    def __init__(self, path: str | os.PathLike, loop: bool = True):
        p = Path(path)
        if not p.is_file():
            raise ImageError(f"{p}: no such video file", "check the path")
        super().__init__(str(p), "video")
        self.path, self.loop = p, loop
        self.position: int | None = None

    def read(self) -> np.ndarray | None:
        frame = super().read()
        if frame is None and self.loop:
            self.cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
            frame = super().read()
        self.position = int(self.cap.get(self._cv2.CAP_PROP_POS_FRAMES)) - 1 if frame is not None else None
        return frame


class KivyCameraSource(FrameSource):
    """Kivy's core camera (Android, or any provider Kivy finds); frames come from its texture.

    Must be created and read on the Kivy main thread (it reads a GL texture).
    """

    live = True

    def __init__(self, index: int = 0, resolution: tuple[int, int] = (1280, 720)):
        from kivy.core.camera import Camera

        try:
            self.camera = Camera(index=index, resolution=resolution, stopped=False)
        except Exception as exc:  # providers raise a variety of errors when no camera exists
            raise ImageError(f"no camera {index} ({type(exc).__name__}: {exc})",
                             "choose an image file instead") from None

    def read(self) -> np.ndarray | None:
        tex = getattr(self.camera, "texture", None)
        if tex is None:
            return None
        w, h = tex.size
        buf = np.frombuffer(tex.pixels, np.uint8)  # Texture.pixels is always RGBA
        if buf.size != w * h * 4:
            return None
        return np.ascontiguousarray(buf.reshape(h, w, 4)[::-1, :, :3])  # texture rows are bottom-up

    def close(self) -> None:
        try:
            self.camera.stop()
        except Exception:  # pragma: no cover - provider specific
            log.debug("camera stop failed", exc_info=True)


def open_source(spec: str) -> FrameSource:
    """Open a frame source from a string: image/video path, camera index, or ``kivy:<index>``."""
    s = str(spec)
    if s.startswith("kivy:"):
        return KivyCameraSource(int(s.split(":", 1)[1] or 0))
    if s.isdigit():
        return CameraSource(int(s))
    p = Path(s)
    if p.suffix.lower() in VIDEO_EXTS:
        return VideoFileSource(p)
    if p.exists():
        return FileSource(p)
    raise ConfigError(f"{s}: not a camera index, a video or an image file",
                      "use 0 for the first camera, a video file, or an image path")
