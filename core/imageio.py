"""Decode any image file into 8-bit RGB, or refuse it with a clear reason.

This is the only place LeukEdge reads pixels from disk: training, calibration,
evaluation, the CLI and the app all call :func:`load_image`.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import fileio
from .errors import ImageError

#: Refuse images with more pixels than this (decompression bombs, whole-slide scans).
MAX_PIXELS = 40_000_000
#: Refuse image files larger than this many bytes, before decoding (``LEUKEDGE_MAX_IMAGE_BYTES``
#: changes it; see :func:`leukedge.fileio.byte_limit`).
MAX_BYTES = fileio.MAX_BYTES["image"]
#: The decoders Pillow may use: the formats of :data:`leukedge.data.IMAGE_EXTENSIONS` (JPEG
#: includes a phone camera's MPO). Anything else (EPS, which runs Ghostscript; PSD; ICO...) is refused.
FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "GIF", "WEBP")


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an HxWx3 uint8 array (alpha composited on white)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)  # NaN/inf pixels: black
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
    limit = fileio.byte_limit("image")
    if len(data) > limit:
        raise ImageError(f"{name}: file is {len(data) / 2**20:.0f} MiB", f"the limit is {limit // 2**20} MiB "
                         "(LEUKEDGE_MAX_IMAGE_BYTES)")
    try:
        with warnings.catch_warnings():
            # Pillow warns above its MAX_IMAGE_PIXELS (and raises at twice that) inside Image.open:
            # the warning becomes an error, so a bomb is refused by its header, never decoded.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageError(
                    f"{name}: image is {w}x{h} ({w * h / 1e6:.0f} megapixels)",
                    f"the limit is {MAX_PIXELS / 1e6:.0f} megapixels; crop or downscale it first",
                )
            if w < 8 or h < 8:
                raise ImageError(f"{name}: image is only {w}x{h} pixels", "images must be at least 8x8")
            img.seek(0)  # multi-page TIFF, animated GIF/WebP: the first frame
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.size[0] < 8 or img.size[1] < 8:
                raise ImageError(f"{name}: image is only {img.size[0]}x{img.size[1]} pixels",
                                 "images must be at least 8x8")
            return _to_rgb8(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: image is too large (more than {MAX_PIXELS / 1e6:.0f} megapixels)",
                         "crop or downscale it first") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file", "choose a JPEG, PNG, TIFF, BMP, GIF or WebP image") from None
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode this image", "crop or downscale it first") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure on untrusted bytes is "cannot decode"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImageError(f"{name}: cannot decode image ({msg})",
                         "the file is truncated, corrupt or an unsupported variant; re-export it") from None


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into an HxWx3 uint8 RGB array.

    Raises:
        ImageError: missing, unreadable, not an image, truncated or too large.
    """
    return decode_image(read_image_bytes(path), str(path))


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of an image file: a regular file of at most the image byte limit.

    FIFOs, devices (``/dev/zero``), sockets, folders and broken links are refused before
    anything is opened in a blocking way.

    Raises:
        ImageError: missing, not a regular file, too large or unreadable.
    """
    return fileio.read_limited(path, "image", ImageError)
