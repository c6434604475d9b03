"""Capture augmentations for training: the capture families, on the fly, before preprocessing.

The benchmark's capture families (:mod:`leukedge.capture_sim`) are what a field photo does
to a smear, so they must act on the *decoded* image, before the one preprocessing (blur,
CLAHE, capture normalisation) the model sees. :func:`capture_map` returns the function the
tf.data pipeline (:mod:`leukedge.train.dataset`) runs through ``tf.numpy_function`` on
each training image: every family switched on in ``AugmentConfig.captures`` is applied
with its probability, at a severity drawn uniformly from the family's ``train_range``
(coded families, e.g. flips, pick one of their codes), in the order a real capture
happens: slide (stain) -> objective (magnification) -> orientation (rotation, flip) ->
optics (defocus, motion) -> eyepiece -> camera (white balance, exposure, noise) ->
messaging app (JPEG). Each image gets its own seed from a seeded ``tf.data`` random
stream, so a pipeline built twice with the same seed yields the same images.

:func:`fit_capture_config` fits the capture-normalisation targets (colour statistics,
red-cell diameter) on training smears, for ``PreprocessConfig.capture``.
"""
from __future__ import annotations

import logging

import numpy as np

from leukedge.capture import CaptureConfig, estimate_cell_diameter
from leukedge.capture_sim import BENCH_ONLY, COMPOUND, FAMILIES, get_family
from leukedge.colornorm import fit_targets
from leukedge.errors import ConfigError
from leukedge.imageio import load_image
from leukedge.preprocess import PreprocessConfig, preprocess_uint8

log = logging.getLogger(__name__)

#: The order families are applied in (the order a real capture happens).
ORDER = ("stain_intensity", "stain_balance", "magnification", "rotation", "flip", "defocus", "motion",
         "eyepiece", "white_balance", "exposure", "noise", "jpeg")
#: Families whose severity is one of a set of codes rather than a range.
_CODED = ("flip",)
#: Families whose level is an integer.
_LEVELS = ("eyepiece", "noise")

def check_captures(captures: dict) -> dict:
    """Validate ``{family: probability}``; returns it (unknown family / bad probability -> ConfigError)."""
    for name, p in (captures or {}).items():
        get_family(name)
        if name in COMPOUND:
            raise ConfigError(f"capture augmentation '{name}' is a benchmark composite of other families",
                              "switch on its parts instead (e.g. eyepiece, white_balance, exposure, noise, jpeg)")
        if name in BENCH_ONLY:
            raise ConfigError(f"capture augmentation '{name}' is a benchmark family only",
                              "the preprocessing's magnification normalisation undoes it; leave it out")
        if not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"capture augmentation '{name}': probability must be in [0, 1], got {p}")
    return dict(captures or {})


def sample_severity(name: str, rng: np.random.Generator) -> float:
    """A training severity of family ``name``: uniform over its ``train_range``."""
    fam = FAMILIES[name]
    if name in _CODED:
        return float(rng.choice(fam.train_range))
    lo, hi = fam.train_range
    v = float(rng.uniform(lo, hi))
    return float(round(v)) if name in _LEVELS else v


def random_captures(rgb: np.ndarray, captures: dict, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """Apply each switched-on family with its probability; returns (image, [(family, severity)])."""
    applied = []
    for name in ORDER:
        p = float(captures.get(name, 0.0))
        if p <= 0.0 or rng.random() >= p:
            continue
        sev = sample_severity(name, rng)
        rgb = FAMILIES[name].apply(rgb, sev, rng)
        applied.append((name, sev))
    return rgb, applied


def capture_map(captures: dict, pcfg: PreprocessConfig):
    """``f(raw uint8 image, int64 seed) -> preprocessed uint8 image`` for ``tf.numpy_function``."""
    captures = check_captures(captures)

    def fn(raw: np.ndarray, seed) -> np.ndarray:
        rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)  # tf.data random ints may be negative
        img, _ = random_captures(np.ascontiguousarray(raw), captures, rng)
        return preprocess_uint8(img, pcfg)

    return fn


def fit_capture_config(paths, color: str = "reinhard", fov_crop: bool = True, magnification: bool = True,
                       limit: int = 200) -> CaptureConfig:
    """A :class:`CaptureConfig` with its targets fitted on (at most ``limit``, evenly spread)
    training smears: colour statistics (:func:`leukedge.colornorm.fit_targets`) and the
    median red-cell diameter (:func:`leukedge.capture.estimate_cell_diameter`)."""
    paths = list(paths)
    if not paths:
        raise ConfigError("fit_capture_config needs training images")
    idx = np.linspace(0, len(paths) - 1, min(limit, len(paths))).round().astype(int)
    images = [load_image(paths[i]) for i in idx]
    target = fit_targets(images) if color != "none" else {}
    diam = None
    if magnification:
        ds = [d for d in (estimate_cell_diameter(im) for im in images) if d]
        diam = round(float(np.median(ds)), 2) if ds else None
        log.info("training smears: red-cell diameter median %.1f px over %d images", diam or 0, len(ds))
    return CaptureConfig(fov_crop=fov_crop, magnification=bool(diam), cell_diameter=diam, color=color,
                         color_target=target)
