"""The one preprocessing implementation (numpy + OpenCV).

Training (through ``tf.numpy_function``), int8 calibration, evaluation, benchmarks,
``leukedge predict`` and the app all call :func:`preprocess`; the steps and their
parameters come from the model spec's :class:`PreprocessConfig`, so the app repeats
exactly what training did.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from .capture import CaptureConfig, centre_crop, prepare_field, tile_boxes, tiles
from .errors import ConfigError
from .imageio import load_image

#: Per-backbone input normalisation applied after scaling to [0, 1].
NORMALIZATIONS = ("unit", "torch", "lite")
EQUALIZATIONS = ("none", "clahe", "global")
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass
class PreprocessConfig:
    """Preprocessing steps and parameters, in the order they run.

    Attributes:
        input_size: square side the image is resized to (the model's input).
        gaussian_sigma: Gaussian filter sigma in pixels; 0 turns the filter off.
        gaussian_ksize: Gaussian kernel size (odd).
        equalize: histogram equalisation on the lightness channel: ``clahe``
            (contrast-limited, adaptive), ``global`` or ``none``.
        clahe_clip: CLAHE clip limit.
        clahe_tiles: CLAHE tile grid (tiles per side).
        normalize: after scaling to [0, 1]: ``unit`` (keep [0, 1], the paper's),
            ``torch`` (ImageNet mean/std) or ``lite`` ((x*255 - 127) / 128, EfficientNet-Lite).
        corner_mask: fraction of the side masked (set to the image median colour) in each
            corner, for the shortcut audit of scale-bar stamps; 0 for normal use.
        capture: capture normalisation before the resize (:class:`leukedge.capture.CaptureConfig`:
            field-of-view crop, magnification, colour), or None (off: specs without it
            preprocess exactly as before).
    """

    input_size: int = 224
    gaussian_sigma: float = 1.0
    gaussian_ksize: int = 3
    equalize: str = "clahe"
    clahe_clip: float = 2.0
    clahe_tiles: int = 8
    normalize: str = "unit"
    corner_mask: float = 0.0
    capture: CaptureConfig | None = None

    def __post_init__(self):
        if isinstance(self.capture, dict):
            try:
                self.capture = CaptureConfig(**self.capture)
            except TypeError as exc:
                raise ConfigError(f"invalid capture settings ({exc})") from None
        if self.equalize not in EQUALIZATIONS:
            raise ConfigError(f"unknown equalisation '{self.equalize}'", f"choose one of {EQUALIZATIONS}")
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(f"unknown normalisation '{self.normalize}'", f"choose one of {NORMALIZATIONS}")
        if self.gaussian_ksize % 2 != 1 or self.gaussian_ksize < 1:
            raise ConfigError(f"gaussian_ksize must be odd and positive, got {self.gaussian_ksize}")
        if not 8 <= int(self.input_size) <= 1024:
            raise ConfigError(f"input_size must be 8..1024, got {self.input_size}")
        if int(self.clahe_tiles) < 1 or float(self.clahe_clip) <= 0:  # 0 tiles: OpenCV divides by zero (SIGFPE)
            raise ConfigError(f"clahe_tiles must be >= 1 and clahe_clip > 0, got {self.clahe_tiles}, {self.clahe_clip}")
        if not 0.0 <= self.corner_mask < 0.5:
            raise ConfigError(f"corner_mask must be in [0, 0.5), got {self.corner_mask}")

    def steps(self) -> list[dict]:
        """The steps in the order :func:`preprocess` runs them, with parameters."""
        out = [{"step": "decode", "to": "RGB uint8", "exif_orientation": True}]
        if self.capture is not None and self.capture.enabled:
            out += self.capture.steps()
        out += [{"step": "resize", "size": [self.input_size, self.input_size], "interpolation": "area (down) / linear (up)"}]
        if self.corner_mask > 0:
            out.append({"step": "corner_mask", "fraction": self.corner_mask})
        if self.gaussian_sigma > 0:
            out.append({"step": "gaussian", "sigma": self.gaussian_sigma, "ksize": self.gaussian_ksize})
        if self.equalize != "none":
            out.append({"step": "equalize", "method": self.equalize, "channel": "LAB lightness",
                        **({"clip": self.clahe_clip, "tiles": self.clahe_tiles} if self.equalize == "clahe" else {})})
        out.append({"step": "scale", "range": [0, 1]})
        if self.normalize != "unit":
            out.append({"step": "normalize", "method": self.normalize})
        return out

    def replace(self, **changes) -> "PreprocessConfig":
        return dataclasses.replace(self, **changes)


def mask_corners(img: np.ndarray, fraction: float) -> np.ndarray:
    """Paint the four corner squares (side = fraction of the image side) with the median colour."""
    if fraction <= 0:
        return img
    out = img.copy()
    h, w = out.shape[:2]
    ch, cw = max(1, int(round(h * fraction))), max(1, int(round(w * fraction)))
    fill = np.median(img.reshape(-1, img.shape[-1]), axis=0).astype(img.dtype)
    for ys in (slice(0, ch), slice(h - ch, h)):
        for xs in (slice(0, cw), slice(w - cw, w)):
            out[ys, xs] = fill
    return out


def preprocess_uint8(rgb: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Capture normalisation (when the spec has it), resize, mask, filter and equalise; returns
    the input_size x input_size x 3 uint8 image.

    This is also the image the app shows under the Grad-CAM overlay. With magnification on,
    the single input is the centre square of the rescaled field; :func:`field_tiles` cuts the
    whole field instead (what :class:`leukedge.edge_app.inference.Screener` screens).
    """
    _check_rgb(rgb)
    s = int(cfg.input_size)
    if cfg.capture is not None and cfg.capture.enabled:
        rgb, _ = prepare_field(rgb, cfg.capture, s)
        if cfg.capture.magnification:  # cells now have the training size: the centre square, not the whole photo
            rgb = centre_crop(rgb, s)
    return finish_uint8(rgb, cfg)


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}; use leukedge.load_image")


def finish_uint8(rgb: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """The steps after capture normalisation: resize to the input, corner mask, Gaussian
    filter, equalisation (uint8 in and out)."""
    s = int(cfg.input_size)
    h, w = rgb.shape[:2]
    if (h, w) != (s, s):
        interp = cv2.INTER_AREA if (h > s or w > s) else cv2.INTER_LINEAR
        img = cv2.resize(rgb, (s, s), interpolation=interp)
    else:
        img = rgb
    img = mask_corners(img, cfg.corner_mask)
    if cfg.gaussian_sigma > 0:
        k = int(cfg.gaussian_ksize)
        img = cv2.GaussianBlur(img, (k, k), float(cfg.gaussian_sigma))
    if cfg.equalize != "none":
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
        if cfg.equalize == "clahe":
            clahe = cv2.createCLAHE(clipLimit=float(cfg.clahe_clip), tileGridSize=(cfg.clahe_tiles, cfg.clahe_tiles))
            lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
        else:
            lab[..., 0] = cv2.equalizeHist(np.ascontiguousarray(lab[..., 0]))
        img = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    return np.ascontiguousarray(img)


@dataclass
class FieldTiles:
    """A photo cut into model inputs by :func:`field_tiles`.

    Attributes:
        inputs: the finished uint8 model inputs (S, S, 3), one per tile.
        raw: the same tiles of the normalised field before the finishing steps (per-tile
            quality is judged on them).
        boxes: top-left ``(y, x)`` of each tile in the field.
        field_shape: (height, width) of the capture-normalised field.
        info: :func:`leukedge.capture.prepare_field`'s info (``scale``, ``cell_diameter``,
            ``fov``) plus ``fallback``: None, or why the photo was not tiled.
    """

    inputs: list
    raw: list
    boxes: list
    field_shape: tuple
    info: dict


def field_tiles(rgb: np.ndarray, cfg: PreprocessConfig) -> FieldTiles:
    """Cut a photo into model inputs at the training cell size (magnification on).

    The capture-normalised field (:func:`leukedge.capture.prepare_field`) is cut into up to
    ``capture.max_tiles`` tiles (:func:`leukedge.capture.tiles`). When the red-cell diameter
    cannot be measured (too few round single cells), the scale is unknown and the photo falls
    back to the single centre input of :func:`preprocess_uint8` (``info["fallback"]`` says
    why). Without magnification in the spec, the one input of :func:`preprocess_uint8`.
    """
    _check_rgb(rgb)
    s = int(cfg.input_size)
    cap = cfg.capture
    if cap is None or not cap.magnification:
        return FieldTiles([preprocess_uint8(rgb, cfg)], [None], [(0, 0)], tuple(rgb.shape[:2]),
                          {"fallback": "magnification off"})
    img, info = prepare_field(rgb, cap, s)
    if info.get("cell_diameter") is None:
        info["fallback"] = "red-cell diameter not measurable (too few round single cells): centre input only"
        raw = [centre_crop(img, s)]
        boxes = [(max(0, (img.shape[0] - s) // 2), max(0, (img.shape[1] - s) // 2))]
    else:
        info["fallback"] = None
        boxes = tile_boxes(img.shape, s, cap.max_tiles)
        raw = tiles(img, s, cap.max_tiles)
    return FieldTiles([finish_uint8(t, cfg) for t in raw], raw, boxes, tuple(img.shape[:2]), info)


def normalize(img_u8: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Scale a uint8 image (any leading batch dims) to float32 as the backbone expects."""
    x = img_u8.astype(np.float32) / np.float32(255.0)
    if cfg.normalize == "torch":
        x = (x - _TORCH_MEAN) / _TORCH_STD
    elif cfg.normalize == "lite":
        x = (x * np.float32(255.0) - np.float32(127.0)) / np.float32(128.0)
    return x.astype(np.float32, copy=False)


def preprocess(rgb: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Full preprocessing of one decoded RGB uint8 image -> float32 (S, S, 3) model input."""
    return normalize(preprocess_uint8(rgb, cfg), cfg)


def preprocess_file(path, cfg: PreprocessConfig) -> np.ndarray:
    """Decode a file with :func:`leukedge.imageio.load_image` and preprocess it."""
    return preprocess(load_image(path), cfg)
