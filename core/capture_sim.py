"""Capture families: how a field photo of a smear differs from the lab's camera image.

Each family is a deterministic function ``fn(rgb, severity, rng) -> rgb`` (uint8 RGB in and
out; ``rng`` a :class:`numpy.random.Generator`, the only source of randomness) applied to a
real smear. The registry :data:`FAMILIES` maps a name to a :class:`CaptureFamily` with the
severities the capture benchmark runs and the one counted as "moderate" by issue 19's
targets. The capture benchmark (``leukedge bench captures``) and the training
augmentations (:mod:`leukedge.train.augment`) both use these functions, so what the model
is trained against is what it is measured on.

How each family is simulated (severity unit in brackets):

* ``eyepiece`` [level 1-3]: a phone held to a microscope eyepiece. The smear is
  mirror-padded (``cv2.BORDER_REFLECT_101``) to a field of view 1.25x its side (the
  eyepiece shows more than the lab camera's crop), cut to a circle with a soft 3 px edge,
  with radial vignetting ``1 - v * r^2`` (v = 0.25/0.4/0.55), defocus growing towards the
  rim (a Gaussian of sigma 0.6/1.2/2 px blended in with weight ``r^2``), lateral
  chromatic aberration (red scaled by ``1 + c``, blue by ``1 - c`` about the optical centre,
  c = 0.006/0.01/0.015), placed off-centre (up to 3/6/10 % of the frame height, direction
  from ``rng``) in a 4:3 phone frame whose height is 1/0.85 of the circle's diameter, the
  surround near-black (level 6 +- sensor noise).
* ``white_balance`` [signed gain s]: channel gains R ``1 + s``, G ``1 + s/4``, B ``1 - s``
  in linear light (s > 0 warmer, tungsten-like; s < 0 cooler, daylight/LED-like).
* ``exposure`` [factor]: linear-light intensity times the factor (sRGB decoded, scaled,
  re-encoded, clipped).
* ``stain_intensity`` [signed fraction]: haematoxylin and eosin optical densities both
  scaled by ``1 + s``: the photo's optical density ``-log(rgb)`` unmixed with scikit-image's
  H-E-DAB matrices (``skimage.color.hed_from_rgb`` / ``rgb_from_hed``), scaled and mixed back.
  Unlike ``rgb2hed`` / ``hed2rgb``, no concentration is clipped at 0, so severity 0 returns the
  photo unchanged (the clipped round trip alone moved these smears by ~5-8 grey levels and was
  what the stain rows measured until 2026-12-07, docs/captures.md 15).
* ``stain_balance`` [signed fraction]: haematoxylin times ``1 + s``, eosin times ``1 - s``.
* ``jpeg`` [quality]: re-encoded with ``cv2.imencode`` at that JPEG quality.
* ``noise`` [level 1-3]: Poisson-Gaussian sensor noise in linear light: photon count
  ``peak`` = 400/120/40 at full scale, plus Gaussian read noise sigma 0.003/0.008/0.015.
* ``rotation`` [degrees]: the camera rotated against the slide. The smear is mirror-padded,
  rotated about its centre and cropped back to its size, so no empty corners appear.
* ``flip`` [code]: 1 horizontal, 2 vertical, 3 a quarter turn then a horizontal flip
  (a transpose: the slide mounted the other way up).
* ``magnification`` [factor m < 1]: a lower-power objective (full-field photo). The field is
  enlarged to ``side / m`` by tiling the smear with its mirror images
  (``cv2.BORDER_REFLECT_101``, so cells stay whole at the seams) and the whole field is
  resized (INTER_AREA) back to the original pixel size: cells become m times smaller and
  more of them fit.
* ``defocus`` [radius px]: convolution with a normalised disk (the defocus point spread
  function) of that radius.
* ``motion`` [length px]: convolution with a line of that length at an angle from ``rng``
  (the phone moving during the exposure).
* ``resolution`` [factor k > 1]: the photo sampled with k times more pixels per cell (bicubic
  upscale, no new detail): a phone's 12-48 MP sensor behind an eyepiece shows a red cell 5-15 times
  wider in pixels than the lab camera's 224-px smear did (a 12 MP photo whose eyepiece circle is
  2,000 px across: k ~ 6).
* ``phone`` [level 1-3]: a *compound* field photo, several families at once in the order a real
  capture happens (:data:`PHONE_LEVELS`): slide stain (intensity, level 2-3) -> the slide turned
  (any angle) -> motion blur (level 3) -> ``eyepiece`` at the same level -> the phone's
  ``resolution`` -> white balance and exposure -> sensor ``noise`` at the same level -> JPEG. Each part's strength is drawn from
  ``rng`` within the level's range, so one level is a spread of photos, not one parameter set.
  It measures what the single families cannot: whether their errors add up. A benchmark
  composite only: training draws its parts independently (:mod:`leukedge.train.augment`).

``resolution`` and ``phone`` are benchmark families only (:data:`BENCH_ONLY`): not training
augmentations (the preprocessing's magnification normalisation undoes the resolution) and not
views of the OOD gate's fit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from skimage.color import hed_from_rgb, rgb_from_hed

from .errors import ConfigError

CaptureFn = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


# ----- helpers ----------------------------------------------------------------------------
def to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 -> linear light float32 in [0, 1]."""
    x = rgb.astype(np.float32) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def to_srgb(lin: np.ndarray) -> np.ndarray:
    """Linear light float in [0, 1] (clipped) -> sRGB uint8."""
    x = np.clip(lin, 0.0, 1.0)
    s = np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.clip(np.round(s * 255.0), 0, 255).astype(np.uint8)


def mirror_field(rgb: np.ndarray, side_h: int, side_w: int) -> np.ndarray:
    """Enlarge a smear to ``side_h x side_w`` (centred) by tiling it with its mirror images."""
    h, w = rgb.shape[:2]
    out = rgb
    while out.shape[0] < side_h or out.shape[1] < side_w:  # reflect_101 pads at most side-1 at once
        ph = max(0, min(side_h - out.shape[0], out.shape[0] - 1))
        pw = max(0, min(side_w - out.shape[1], out.shape[1] - 1))
        out = cv2.copyMakeBorder(out, ph // 2, ph - ph // 2, pw // 2, pw - pw // 2, cv2.BORDER_REFLECT_101)
    y0 = (out.shape[0] - side_h) // 2
    x0 = (out.shape[1] - side_w) // 2
    return np.ascontiguousarray(out[y0:y0 + side_h, x0:x0 + side_w])


def disk_kernel(radius: float) -> np.ndarray:
    """A normalised disk (pillbox) kernel, anti-aliased by 4x supersampling."""
    r = float(radius)
    n = int(np.ceil(r)) * 2 + 1
    ss = 4
    g = (np.arange(n * ss) + 0.5) / ss - n / 2.0
    yy, xx = np.meshgrid(g, g, indexing="ij")
    inside = (xx ** 2 + yy ** 2 <= r * r).astype(np.float32)
    k = inside.reshape(n, ss, n, ss).mean(axis=(1, 3))
    return k / k.sum()


def line_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A normalised line kernel (motion blur) of ``length`` px at ``angle_deg``."""
    n = int(np.ceil(length)) | 1
    k = np.zeros((n, n), np.float32)
    c = n // 2
    t = np.deg2rad(angle_deg)
    for s in np.linspace(-(length - 1) / 2, (length - 1) / 2, max(2, int(length) * 4)):
        x, y = c + s * np.cos(t), c - s * np.sin(t)
        k[int(round(y)), int(round(x))] = 1.0
    return k / k.sum()


# ----- the families ---------------------------------------------------------------------------
_EYEPIECE = {1: (0.25, 0.6, 0.006, 0.03), 2: (0.40, 1.2, 0.010, 0.06), 3: (0.55, 2.0, 0.015, 0.10)}


def eyepiece(rgb: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Phone photo through an eyepiece (see the module docstring for every parameter)."""
    level = int(np.clip(round(severity), 1, 3))
    vig, rim_sigma, chroma, offset = _EYEPIECE[level]
    h, w = rgb.shape[:2]
    d = int(round(1.25 * max(h, w)))                      # circle diameter (px)
    field = mirror_field(rgb, d, d).astype(np.float32)
    yy, xx = np.mgrid[0:d, 0:d].astype(np.float32)
    c = (d - 1) / 2.0
    r = np.sqrt((xx - c) ** 2 + (yy - c) ** 2) / (d / 2.0)  # 0 centre, 1 at the rim
    # lateral chromatic aberration: red and blue images scaled about the optical centre
    for ch, s in ((0, 1.0 + chroma), (2, 1.0 - chroma)):
        m = np.float32([[s, 0, c * (1 - s)], [0, s, c * (1 - s)]])
        field[..., ch] = cv2.warpAffine(field[..., ch], m, (d, d), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REFLECT_101)
    blurred = cv2.GaussianBlur(field, (0, 0), rim_sigma)
    wgt = np.clip(r, 0, 1)[..., None] ** 2
    field = field * (1 - wgt) + blurred * wgt
    lin = to_linear(np.clip(field, 0, 255).astype(np.uint8)) * (1.0 - vig * np.clip(r, 0, 1) ** 2)[..., None]
    alpha = np.clip((d / 2.0 - r * d / 2.0) / 3.0, 0.0, 1.0)[..., None]  # soft 3 px field stop
    fh = int(round(d / 0.85))
    fw = int(round(fh * 4 / 3))
    surround = to_linear(np.full((fh, fw, 3), 6, np.uint8))
    frame = surround.copy()
    ang = rng.uniform(0, 2 * np.pi)
    oy = int(round(np.sin(ang) * offset * fh))
    ox = int(round(np.cos(ang) * offset * fh))
    y0 = (fh - d) // 2 + oy
    x0 = (fw - d) // 2 + ox
    ys, xs = slice(max(0, y0), min(fh, y0 + d)), slice(max(0, x0), min(fw, x0 + d))
    sy, sx = slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0)
    frame[ys, xs] = lin[sy, sx] * alpha[sy, sx] + surround[ys, xs] * (1 - alpha[sy, sx])
    out = to_srgb(frame).astype(np.float32) + rng.normal(0.0, 1.5, (fh, fw, 3))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def white_balance(rgb: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    s = float(severity)
    gains = np.array([1.0 + s, 1.0 + s / 4.0, 1.0 - s], np.float32)
    return to_srgb(to_linear(rgb) * gains)


def exposure(rgb: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    return to_srgb(to_linear(rgb) * float(severity))


def _hed(rgb: np.ndarray, h_gain: float, e_gain: float) -> np.ndarray:
    """Haematoxylin and eosin optical densities times the gains, nothing else changed (linear
    unmixing in optical density, no clipping of negative concentrations: gains 1 are the identity)."""
    od = -np.log(np.maximum(rgb.astype(np.float64) / 255.0, 1e-6))
    conc = od @ hed_from_rgb
    conc[..., 0] *= h_gain
    conc[..., 1] *= e_gain
    out = np.exp(-(conc @ rgb_from_hed))
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def stain_intensity(rgb: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    return _hed(rgb, 1.0 + float(severity), 1.0 + float(severity))


def stain_balance(rgb: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    return _hed(rgb, 1.0 + float(severity), 1.0 - float(severity))


def jpeg(rgb: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(severity)])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise ConfigError(f"JPEG encoding at quality {severity} failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


_NOISE = {1: (400.0, 0.003), 2: (120.0, 0.008), 3: (40.0, 0.015)}


def noise(rgb: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    peak, read = _NOISE[int(np.clip(round(severity), 1, 3))]
    lin = to_linear(rgb)
    shot = rng.poisson(lin * peak).astype(np.float32) / peak
    return to_srgb(shot + rng.normal(0.0, read, lin.shape).astype(np.float32))


def rotation(rgb: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    ang = float(severity) % 360.0
    quarter = {90.0: cv2.ROTATE_90_COUNTERCLOCKWISE, 180.0: cv2.ROTATE_180, 270.0: cv2.ROTATE_90_CLOCKWISE}
    if ang in quarter and h == w:
        return cv2.rotate(rgb, quarter[ang])
    side = int(np.ceil(np.hypot(h, w))) + 2
    big = mirror_field(rgb, side, side)
    m = cv2.getRotationMatrix2D(((side - 1) / 2.0, (side - 1) / 2.0), ang, 1.0)
    rot = cv2.warpAffine(big, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    y0, x0 = (side - h) // 2, (side - w) // 2
    return np.ascontiguousarray(rot[y0:y0 + h, x0:x0 + w])


def flip(rgb: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    code = int(severity)
    if code == 1:
        return np.ascontiguousarray(rgb[:, ::-1])
    if code == 2:
        return np.ascontiguousarray(rgb[::-1])
    if code == 3:
        return np.ascontiguousarray(np.transpose(rgb, (1, 0, 2)))
    raise ConfigError(f"flip severity must be 1 (horizontal), 2 (vertical) or 3 (transpose), got {severity}")


def magnification(rgb: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    m = float(severity)
    if not 0.1 <= m <= 1.0:
        raise ConfigError(f"magnification factor must be in [0.1, 1], got {m}")
    h, w = rgb.shape[:2]
    if m == 1.0:
        return rgb.copy()
    field = mirror_field(rgb, int(round(h / m)), int(round(w / m)))
    return cv2.resize(field, (w, h), interpolation=cv2.INTER_AREA)


def resolution(rgb: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    k = float(severity)
    if not 1.0 <= k <= 10.0:
        raise ConfigError(f"resolution factor must be in [1, 10], got {k}")
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (round(w * k), round(h * k)), interpolation=cv2.INTER_CUBIC) if k != 1.0 else rgb.copy()


def mosaic_field(images: list[np.ndarray], factor: float, rng: np.random.Generator) -> np.ndarray:
    """A lower-magnification full-field photo made of *different* real smears (not mirror images).

    ``images[0]`` is the smear, the others its neighbours on the same slide (e.g. the same split
    group: consecutive file numbers of one class); they are laid out in a 3 x 3 mosaic (cycled when
    fewer than nine; each resized to the first one's size), a window of ``side / factor`` is cut at
    a random offset (so tile borders do not line up with the seams) and resized (INTER_AREA) back
    to one smear's size: cells ``factor`` times smaller, more of them, none repeated when nine are
    given. Factor 1.0 returns the smear itself. Closer to a real lower-power photo than
    :func:`magnification` (a kaleidoscope of one smear), with seams between photos as its own
    artefact (docs/captures.md 13).
    """
    m = float(factor)
    if not 1.0 / 3.0 <= m <= 1.0:
        raise ConfigError(f"mosaic magnification factor must be in [1/3, 1], got {m}")
    if not images:
        raise ConfigError("mosaic_field needs at least one smear")
    first = images[0]
    if m == 1.0:
        return first.copy()
    h, w = first.shape[:2]
    cells = [images[k % len(images)] for k in range(9)]
    cells = [im if im.shape[:2] == (h, w) else cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in cells]
    field = np.vstack([np.hstack(cells[k:k + 3]) for k in (0, 3, 6)])
    ch, cw = min(3 * h, round(h / m)), min(3 * w, round(w / m))
    y0, x0 = int(rng.integers(0, 3 * h - ch + 1)), int(rng.integers(0, 3 * w - cw + 1))
    return cv2.resize(np.ascontiguousarray(field[y0:y0 + ch, x0:x0 + cw]), (w, h), interpolation=cv2.INTER_AREA)


def defocus(rgb: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    return cv2.filter2D(rgb, -1, disk_kernel(float(severity)), borderType=cv2.BORDER_REFLECT_101)


def motion(rgb: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    k = line_kernel(float(severity), float(rng.uniform(0.0, 180.0)))
    return cv2.filter2D(rgb, -1, k, borderType=cv2.BORDER_REFLECT_101)


#: Level -> ranges of the compound ``phone`` family's parts (drawn uniformly; exposure log-uniform).
PHONE_LEVELS = {
    1: {"eyepiece": 1, "resolution": (1.5, 2.5), "white_balance": 0.15, "exposure": (0.7, 1.3), "noise": 1,
        "jpeg": (50, 85), "stain_intensity": 0.0, "motion": 0.0},
    2: {"eyepiece": 2, "resolution": (3.0, 5.0), "white_balance": 0.3, "exposure": (0.5, 1.5), "noise": 2,
        "jpeg": (20, 50), "stain_intensity": 0.2, "motion": 0.0},
    3: {"eyepiece": 3, "resolution": (5.0, 7.0), "white_balance": 0.3, "exposure": (0.5, 1.5), "noise": 3,
        "jpeg": (10, 30), "stain_intensity": 0.4, "motion": 5.0},
}


def phone_parts(level: int, rng: np.random.Generator) -> list[tuple[str, float]]:
    """The ``(family, severity)`` steps of one compound phone photo at ``level`` (drawn from ``rng``)."""
    lv = PHONE_LEVELS[int(np.clip(round(level), 1, 3))]
    parts: list[tuple[str, float]] = []
    if lv["stain_intensity"]:
        parts.append(("stain_intensity", float(rng.uniform(-lv["stain_intensity"], lv["stain_intensity"]))))
    parts.append(("rotation", float(rng.uniform(0.0, 360.0))))
    if lv["motion"]:
        parts.append(("motion", float(rng.uniform(2.0, lv["motion"]))))
    lo, hi = lv["exposure"]
    parts += [("eyepiece", float(lv["eyepiece"])),
              ("white_balance", float(rng.uniform(-lv["white_balance"], lv["white_balance"]))),
              ("exposure", float(np.exp(rng.uniform(np.log(lo), np.log(hi))))),
              ("noise", float(lv["noise"])),
              ("jpeg", float(round(rng.uniform(*lv["jpeg"]))))]
    # drawn last (so the other parts are those of the first, lab-pixel version), applied after the eyepiece
    parts.insert(parts.index(("eyepiece", float(lv["eyepiece"]))) + 1, ("resolution", float(rng.uniform(*lv["resolution"]))))
    return parts


def phone(rgb: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """A compound field photo at level ``severity`` (:func:`phone_parts`, module docstring)."""
    for name, sev in phone_parts(int(round(severity)), rng):
        rgb = FAMILIES[name].fn(rgb, sev, rng)
    return rgb


#: Families made of other families (summarised apart from the single families' targets).
COMPOUND = ("phone",)
#: Benchmark families only: not training augmentations, not views of the OOD gate's fit.
BENCH_ONLY = ("resolution",) + COMPOUND


# ----- registry -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptureFamily:
    """A capture family: its function, the benchmark's severities and the moderate ones.

    Attributes:
        name: registry name.
        fn: ``fn(rgb, severity, rng) -> rgb``.
        severities: severities the capture benchmark runs, mildest first (per direction).
        moderate: the severities issue 19's targets call moderate (a subset of ``severities``).
        unit: what the severity number means.
        train_range: (low, high) severity range the training augmentation samples uniformly
            (for signed families both signs), or the discrete values for coded families.
    """

    name: str
    fn: CaptureFn
    severities: tuple
    moderate: tuple
    unit: str
    train_range: tuple

    def apply(self, rgb: np.ndarray, severity: float, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Apply at ``severity``; ``rng`` a Generator or a seed (default seed 0)."""
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(0 if rng is None else rng)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise ConfigError(f"capture families take HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
        return self.fn(rgb, severity, rng)


FAMILIES: dict[str, CaptureFamily] = {f.name: f for f in (
    CaptureFamily("eyepiece", eyepiece, (1, 2, 3), (1, 2), "level (vignetting, rim defocus, chromatic shift, "
                  "off-centre)", (1, 3)),
    CaptureFamily("white_balance", white_balance, (-0.3, -0.15, 0.15, 0.3), (-0.3, -0.15, 0.15, 0.3),
                  "gain s: R x(1+s), B x(1-s) in linear light; + warm, - cool", (-0.35, 0.35)),
    CaptureFamily("exposure", exposure, (0.5, 0.7, 1.3, 1.5, 2.0), (0.5, 0.7, 1.3, 1.5),
                  "linear-light factor", (0.45, 1.6)),
    CaptureFamily("stain_intensity", stain_intensity, (-0.4, -0.2, 0.2, 0.4), (-0.4, -0.2, 0.2, 0.4),
                  "H and E optical density x(1+s)", (-0.45, 0.45)),
    CaptureFamily("stain_balance", stain_balance, (-0.4, -0.2, 0.2, 0.4), (-0.4, -0.2, 0.2, 0.4),
                  "H x(1+s), E x(1-s)", (-0.45, 0.45)),
    CaptureFamily("jpeg", jpeg, (50, 30, 20, 10), (50, 30, 20), "JPEG quality", (15, 90)),
    CaptureFamily("noise", noise, (1, 2, 3), (1, 2), "level (photons 400/120/40, read noise)", (1, 3)),
    CaptureFamily("rotation", rotation, (15, 45, 90, 180), (15, 45, 90, 180), "degrees", (0, 360)),
    CaptureFamily("flip", flip, (1, 2, 3), (1, 2, 3), "1 horizontal, 2 vertical, 3 transpose", (1, 2, 3)),
    CaptureFamily("magnification", magnification, (0.85, 0.7, 0.5), (0.85, 0.7, 0.5), "objective factor",
                  (0.5, 1.0)),
    CaptureFamily("defocus", defocus, (1, 2, 3, 5), (1, 2), "disk radius px", (0.5, 3.0)),
    CaptureFamily("motion", motion, (3, 7, 13), (3, 7), "line length px", (2, 9)),
    CaptureFamily("resolution", resolution, (2, 4, 6, 8), (2, 4, 6), "pixels per cell x k (a phone's sensor: "
                  "a 12 MP eyepiece photo is k ~ 6)", (1.0, 8.0)),
    CaptureFamily("phone", phone, (1, 2, 3), (1, 2), "level: eyepiece + stain + any rotation + white balance + "
                  "exposure + noise + JPEG at once (PHONE_LEVELS)", (1, 3)),
)}


def get_family(name: str) -> CaptureFamily:
    """The registered family ``name`` (unknown -> ConfigError with the choices)."""
    try:
        return FAMILIES[name]
    except KeyError:
        from difflib import get_close_matches

        close = get_close_matches(name, FAMILIES, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown capture family '{name}'", hint + "choose from " + ", ".join(FAMILIES)) from None


def apply_capture(name: str, rgb: np.ndarray, severity: float, seed: int = 0) -> np.ndarray:
    """Apply family ``name`` at ``severity`` with a seeded generator (deterministic)."""
    return get_family(name).apply(rgb, severity, np.random.default_rng(seed))
