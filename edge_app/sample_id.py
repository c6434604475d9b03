"""Read a sample ID from a QR code or a 1-D barcode in a camera frame (OpenCV's detectors)."""
from __future__ import annotations

import logging

import cv2
import numpy as np

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 64


def read_code(rgb: np.ndarray) -> str | None:
    """The text of the first QR code or barcode found in an RGB frame, or None.

    Control characters are dropped and the text is cut at ``MAX_ID_LENGTH``: a label is an ID,
    not a payload.
    """
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    text, _points, _ = cv2.QRCodeDetector().detectAndDecode(bgr)
    if not text and hasattr(cv2, "barcode"):
        ok, texts, _types, _pts = _barcode(bgr)
        text = next((t for t in (texts or ()) if t), "") if ok else ""
    text = "".join(ch for ch in (text or "") if ch.isprintable()).strip()[:MAX_ID_LENGTH]
    return text or None


def _barcode(bgr):
    res = cv2.barcode.BarcodeDetector().detectAndDecodeWithType(bgr)
    if len(res) == 4:
        return res
    texts, types, pts = res                 # some OpenCV versions return 3 values
    return bool(texts), texts, types, pts
