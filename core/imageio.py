"""Decode any image file into 8-bit RGB, or refuse it with a clear reason.

This is the only place LeukEdge reads pixels from disk: training, calibration,
evaluation, the CLI and the app all call :func:`load_image`.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

#: Refuse images with more pixels than this (decompression bombs, whole-slide scans).
MAX_PIXELS = 40_000_000
#: Refuse files larger than this many bytes before decoding.
MAX_BYTES = 200 * 1024 * 1024


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an HxWx3 uint8 array (alpha composited on white)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        else:
            # 16-bit data uses the full 0..65535 range by convention.
            arr = arr / 257.0
        gray = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        return np.stack([gray] * 3, axis=-1)
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8).copy()
    if mode.startswith("RGB") and ";16" in mode:  # rare 48-bit modes
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to an HxWx3 uint8 RGB array.

    Handles EXIF orientation, grayscale, palette, RGBA and 16-bit images.

    Raises:
        ImageError: empty, not an image, truncated or too large.
    """
    if len(data) == 0:
        raise ImageError(f"{name}: empty file (0 bytes)", "choose an image file (JPEG, PNG, TIFF, BMP)")
    if len(data) > MAX_BYTES:
        raise ImageError(f"{name}: file is {len(data) / 2**20:.0f} MiB", f"the limit is {MAX_BYTES // 2**20} MiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageError(
                    f"{name}: image is {w}x{h} ({w * h / 1e6:.0f} megapixels)",
                    f"the limit is {MAX_PIXELS / 1e6:.0f} megapixels; crop or downscale it first",
                )
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: image is too large ({exc})", "crop or downscale it first") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file", "choose a JPEG, PNG, TIFF or BMP image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: cannot decode image ({exc})", "the file is truncated or corrupt; re-export it") from None
    if img.size[0] < 8 or img.size[1] < 8:
        raise ImageError(f"{name}: image is only {img.size[0]}x{img.size[1]} pixels", "images must be at least 8x8")
    return _to_rgb8(img)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into an HxWx3 uint8 RGB array.

    Raises:
        ImageError: missing, unreadable, not an image, truncated or too large.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file", "check the path")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image", "name an image file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ImageError(f"{path}: file is {size / 2**20:.0f} MiB", f"the limit is {MAX_BYTES // 2**20} MiB")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})", "check the file's permissions") from None
    return decode_image(data, str(path))
