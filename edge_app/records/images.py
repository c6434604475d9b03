"""Field images kept with the records: the captured image and its heatmap overlay (PNG).

Files live in the records folder (``<db folder>/records-images/<sample uid>/``) and the
database stores their paths relative to it. Each file is written, fsynced and renamed
into place before its database row is committed, so a committed field never points at a
half-written file; a file whose row failed to commit is removed again.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from leukedge.errors import ImageError
from leukedge.fileio import atomic_write_bytes

log = logging.getLogger(__name__)


def png_bytes(rgb) -> bytes:
    """An RGB uint8 array as PNG bytes."""
    import cv2          # here, not at import: the records open before the first frame, OpenCV is not needed then
    import numpy as np

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ImageError(f"cannot save an image of {rgb.dtype} {rgb.shape} as PNG")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageError("PNG encoding failed")
    return buf.tobytes()


class ImageFolder:
    """Where field images are kept.

    Args:
        root: the folder (created on first write).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def resolve(self, rel: str | None) -> Path | None:
        return None if not rel else self.root / rel

    def write(self, rel: str, data: bytes) -> str:
        """Write ``data`` at ``rel`` (atomically); returns its sha256."""
        atomic_write_bytes(self.root / rel, data)
        return hashlib.sha256(data).hexdigest()

    def save_capture(self, sample_uid: str, seq: int, source) -> tuple[str, str] | None:
        """Keep the captured image: a file's own bytes (JPEG/PNG as taken) or a frame as PNG.

        Returns ``(relative path, sha256)`` or None when there is nothing to keep.
        """
        if source is None:
            return None
        if not isinstance(source, (str, os.PathLike)):    # a frame (numpy array)
            data, ext = png_bytes(source), ".png"
        else:
            p = Path(source)
            data = p.read_bytes()
            ext = p.suffix.lower() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff") else ".img"
        rel = f"{sample_uid}/field-{seq:02d}-image{ext}"
        return rel, self.write(rel, data)

    def save_heatmap(self, sample_uid: str, seq: int, overlay) -> str | None:
        if overlay is None:
            return None
        rel = f"{sample_uid}/field-{seq:02d}-heatmap.png"
        self.write(rel, png_bytes(overlay))
        return rel

    def remove(self, rel: str | None) -> bool:
        """Delete one kept file; True if it existed."""
        p = self.resolve(rel)
        if p is None:
            return False
        try:
            p.unlink()
        except FileNotFoundError:
            return False
        try:
            p.parent.rmdir()  # only when empty
        except OSError:
            pass
        return True
