"""Out-of-distribution gate: flag images unlike the smears the model was trained on.

Two complementary distances, both fitted on the TRAINING split and thresholded on the
VALIDATION split (a percentile of the validation distances, 99th by default):

* **features**: Mahalanobis distance of the model's pooled ``features`` output under a
  low-rank Gaussian (probabilistic PCA: the top ``k`` principal directions with their
  variances, plus an isotropic residual variance for the rest);
* **image**: Mahalanobis distance of a few colour/exposure statistics of the decoded
  image (mean and spread of the CIE-Lab channels, saturation), which catches another
  lab's stain or a photo of something else even when a small model's features do not
  (its threshold has a margin: :data:`IMAGE_MARGIN` times the validation percentile).

What the feature distance reads (``OODGate.feature_input``): ``features``, the pooled vector the
head reads (releases before session 22), or ``ood_map``, the per-channel mean and standard
deviation of the last residual block's activations (the model output added by
:mod:`leukedge.compress.ood_map`; :func:`gate_vector`). Measured on the EfficientNet-Lite0
releases (docs/captures.md section 14): ``features`` flag 60-96% of the PBC lymphocyte crops,
``ood_map`` 100%, and neither flags warm or cool light, so with ``ood_map`` the coarse image
statistics no longer carry the lymphocyte target and keep a wider margin
(:data:`MAP_IMAGE_MARGIN`).

An image is flagged when either distance exceeds its threshold. The score reported is
the larger of ``distance / threshold`` of the two (``> 1`` means flagged). Everything is
stored in ``ood.npz`` beside ``spec.json`` and referenced by ``spec.ood``. Only numpy and
OpenCV are needed at run time.

Two fits (``OODGate.fit_method``):

* ``plain`` (releases before issue 19): both distances fitted on the training images as
  they are, the image statistics measured on the decoded photo (``image_input = photo``);
* ``field``: both fitted on training images *and* random field views of them (a dihedral
  orientation, then maybe one capture family at a moderate severity:
  :mod:`leukedge.edge_app.ood_views`), thresholds on validation images under the same
  views, and the image statistics measured on the photo's eyepiece field of view
  (``image_input = field``: :func:`gate_image`), never on the black surround. One model
  inference per image, as before. The image statistics are deliberately *not* measured after
  colour normalisation: Reinhard normalisation sets their means and spreads to the
  training smears', and a white balance on the plasma background makes the PBC lymphocyte
  crops look like these smears (measured: docs/captures.md section 5), so neither would
  flag another lab's images.
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from leukedge.capture import crop_fov
from leukedge.errors import ModelError
from leukedge.fileio import atomic_write_bytes, read_limited

log = logging.getLogger(__name__)

OOD_FILE = "ood.npz"
METHOD = "mahalanobis"
#: The image-statistics threshold is this many times its validation percentile (see fit_gate).
IMAGE_MARGIN = 1.5
#: The same for the field fit, whose validation views already span moderate capture conditions.
FIELD_IMAGE_MARGIN = 1.25
#: The same for a gate reading ``ood_map`` (the features then flag the lymphocyte crops alone; the
#: image statistics stay a backstop for gross mismatches and no longer flag warm light).
MAP_IMAGE_MARGIN = 1.5
#: What the feature distance reads (module docstring): the model output of that name.
FEATURE_INPUTS = ("features", "ood_map")
#: What the image-statistics distance measures: the decoded photo (plain fit), or its
#: eyepiece field of view (field fit; see :func:`gate_image`).
IMAGE_INPUTS = ("photo", "field")


#: The 8 dihedral views of an image (a smear has no "up" and no "front").
DIHEDRAL = ("identity", "rot90", "rot180", "rot270", "flip", "flip_rot90", "flip_rot180", "flip_rot270")


def dihedral(rgb: np.ndarray, view: str) -> np.ndarray:
    """One of the :data:`DIHEDRAL` views of an image (a horizontal flip, then quarter turns)."""
    if view not in DIHEDRAL:
        raise ValueError(f"unknown view {view!r}")
    img = rgb[:, ::-1] if view.startswith("flip") else rgb
    turns = 0 if view in ("identity", "flip") else int(view.rsplit("rot", 1)[1]) // 90
    return np.ascontiguousarray(np.rot90(img, turns))


def image_stats(rgb: np.ndarray) -> np.ndarray:
    """Colour/exposure statistics of an RGB uint8 image (8 values, size independent)."""
    h, w = rgb.shape[:2]
    scale = 128.0 / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    sat = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float64)
    return np.concatenate([lab.mean(0), lab.std(0), [sat.mean(), sat.std()]]).astype(np.float64)


def gate_vector(outputs: dict, feature_input: str = "features") -> np.ndarray | None:
    """The vector the feature distance reads from a model's outputs (None when the model lacks
    that output): ``features`` as it is, or ``ood_map`` (H, W, C) pooled to its per-channel mean
    and standard deviation (2C values)."""
    if feature_input not in FEATURE_INPUTS:
        raise ValueError(f"unknown feature input {feature_input!r} (choose from {FEATURE_INPUTS})")
    out = outputs.get(feature_input)
    if out is None:
        return None
    a = np.asarray(out, np.float64)
    if feature_input == "features":
        return a.reshape(-1)
    a = a.reshape(-1, a.shape[-1])
    return np.concatenate([a.mean(0), a.std(0)])


def gate_image(rgb: np.ndarray, image_input: str = "photo") -> np.ndarray:
    """The image the image-statistics distance measures: ``photo``, the decoded photo itself;
    ``field``, its eyepiece field of view (:func:`leukedge.capture.crop_fov`; the photo when
    it has none)."""
    if image_input == "photo":
        return rgb
    if image_input != "field":
        raise ValueError(f"unknown image input {image_input!r} (choose from {IMAGE_INPUTS})")
    return crop_fov(rgb)[0]


@dataclass
class OODGate:
    """Fitted gate (see module docstring). Arrays are float64.

    Attributes:
        mean: mean training feature vector (D,).
        components: top principal directions (k, D), orthonormal rows.
        variances: variance along each direction (k,).
        residual_variance: mean variance of the remaining directions.
        threshold: feature distance above which an input is flagged.
        img_mean: mean image statistics (8,).
        img_precision: inverse covariance of the image statistics (8, 8).
        img_threshold: image-statistics distance threshold.
        percentile: validation percentile the thresholds were taken at.
        image_input: what the image statistics measure (:data:`IMAGE_INPUTS`; ``photo`` for
            old ``ood.npz`` files).
        fit_method: ``plain`` or ``field`` (module docstring).
        feature_input: the model output the feature distance reads (:data:`FEATURE_INPUTS`;
            ``features`` for old ``ood.npz`` files).
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual_variance: float
    threshold: float
    img_mean: np.ndarray | None = None
    img_precision: np.ndarray | None = None
    img_threshold: float | None = None
    percentile: float = 99.0
    info: dict = field(default_factory=dict)
    image_input: str = "photo"
    fit_method: str = "plain"
    feature_input: str = "features"

    # ----- distances ------------------------------------------------------------------
    def feature_distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance(s) of feature vector(s) (D,) or (N, D) under the low-rank model."""
        f = np.atleast_2d(np.asarray(features, np.float64)) - self.mean
        proj = f @ self.components.T
        d2 = (proj ** 2 / self.variances).sum(1)
        resid = np.maximum((f ** 2).sum(1) - (proj ** 2).sum(1), 0.0)
        d2 += resid / self.residual_variance
        d = np.sqrt(d2)
        return d if np.ndim(features) > 1 else d[:1]

    def image_distance(self, stats: np.ndarray) -> np.ndarray:
        """Mahalanobis distance(s) of image statistics (8,) or (N, 8)."""
        if self.img_mean is None:
            return np.zeros(len(np.atleast_2d(stats)))
        s = np.atleast_2d(np.asarray(stats, np.float64)) - self.img_mean
        return np.sqrt(np.einsum("ni,ij,nj->n", s, self.img_precision, s))

    def vector(self, outputs: dict) -> np.ndarray | None:
        """What the feature distance reads from one model run's outputs (:func:`gate_vector`)."""
        return gate_vector(outputs, self.feature_input)

    def stats(self, rgb: np.ndarray) -> np.ndarray:
        """The image statistics of a decoded photo, measured the way this gate was fitted."""
        return image_stats(gate_image(rgb, self.image_input))

    def check(self, features: np.ndarray | None, rgb: np.ndarray | None) -> tuple[bool, float, dict]:
        """Gate one image: (flagged, score, details). ``score > 1`` means flagged.

        ``features`` is :meth:`vector` of the model's outputs; ``rgb`` the decoded photo
        (before any preprocessing)."""
        ratios = {}
        if features is not None:
            if np.size(features) != len(self.mean):
                raise ModelError(f"the OOD gate reads {len(self.mean)} values of the model's '{self.feature_input}' "
                                 f"output, the model gave {np.size(features)}",
                                 "the ood.npz belongs to another model: re-run `leukedge app calibrate-ood`")
            ratios["features"] = float(self.feature_distance(features)[0] / self.threshold)
        if rgb is not None and self.img_mean is not None and self.img_threshold:
            ratios["image"] = float(self.image_distance(self.stats(rgb))[0] / self.img_threshold)
        score = max(ratios.values()) if ratios else 0.0
        return score > 1.0, score, ratios

    # ----- persistence ------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the ``.npz`` atomically."""
        arrays = {"mean": self.mean, "components": self.components, "variances": self.variances,
                  "residual_variance": np.float64(self.residual_variance), "threshold": np.float64(self.threshold),
                  "percentile": np.float64(self.percentile)}
        if self.img_mean is not None:
            arrays.update(img_mean=self.img_mean, img_precision=self.img_precision,
                          img_threshold=np.float64(self.img_threshold))
        if self.fit_method != "plain" or self.image_input != "photo":  # old readers never see these keys
            arrays.update(fit_method=np.str_(self.fit_method), image_input=np.str_(self.image_input))
        if self.feature_input != "features":
            arrays.update(feature_input=np.str_(self.feature_input))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "OODGate":
        p = Path(path)
        if not p.exists() and not p.is_symlink():
            raise ModelError(f"{p}: OOD statistics file is missing",
                             "run `leukedge app calibrate-ood models/<name> --data DIR`")
        data = read_limited(p, "npz", ModelError)  # a regular file, bounded
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                img = "img_mean" in z.files
                gate = cls(mean=z["mean"], components=z["components"], variances=z["variances"],
                           residual_variance=float(z["residual_variance"]), threshold=float(z["threshold"]),
                           img_mean=z["img_mean"] if img else None,
                           img_precision=z["img_precision"] if img else None,
                           img_threshold=float(z["img_threshold"]) if img else None,
                           percentile=float(z["percentile"]) if "percentile" in z.files else 99.0,
                           fit_method=str(z["fit_method"]) if "fit_method" in z.files else "plain",
                           image_input=str(z["image_input"]) if "image_input" in z.files else "photo",
                           feature_input=str(z["feature_input"]) if "feature_input" in z.files else "features")
            if gate.image_input not in IMAGE_INPUTS:
                raise ValueError(f"unknown image input {gate.image_input!r}")
            if gate.feature_input not in FEATURE_INPUTS:
                raise ValueError(f"unknown feature input {gate.feature_input!r}")
            return gate
        except FileNotFoundError:
            raise ModelError(f"{p}: OOD statistics file is missing",
                             "run `leukedge app calibrate-ood models/<name> --data DIR`") from None
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{p}: not a valid OOD statistics file ({exc})",
                             "re-run `leukedge app calibrate-ood`") from None


# ----- fitting --------------------------------------------------------------------------
def fit_feature_model(train: np.ndarray, n_components: int = 32, eps: float = 1e-6):
    """Low-rank Gaussian of training features: (mean, components, variances, residual variance)."""
    x = np.asarray(train, np.float64)
    n, d = x.shape
    mean = x.mean(0)
    xc = x - mean
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    eig = s ** 2 / max(n - 1, 1)
    k = int(max(1, min(n_components, len(eig) - 1, d - 1))) if d > 1 else 1
    total = float(eig.sum())
    rest = max(total - float(eig[:k].sum()), 0.0) / max(d - k, 1)
    floor = eps * max(total / d, eps)
    variances = np.maximum(eig[:k], floor)
    return mean, vt[:k], variances, max(rest, floor)


def fit_image_model(train_stats: np.ndarray, ridge: float = 1e-3):
    """Gaussian of image statistics: (mean, precision)."""
    x = np.asarray(train_stats, np.float64)
    mean = x.mean(0)
    cov = np.cov(x, rowvar=False)
    cov += ridge * np.eye(len(mean)) * max(float(np.trace(cov)) / len(mean), 1e-9)
    return mean, np.linalg.inv(cov)


def fit_gate(train_features, val_features, train_stats=None, val_stats=None,
             n_components: int = 32, percentile: float = 99.0, image_margin: float = IMAGE_MARGIN) -> OODGate:
    """Fit the gate on training features/statistics; thresholds at a validation percentile.

    The image-statistics threshold is ``image_margin`` times its validation percentile: that
    gate is a coarse check for gross mismatches (another stain, not a smear), and whole
    patient blocks of the real training data with an unusual stain sit just above the plain
    99th percentile (1.3% of training images), while the out-of-domain lymphocyte crops are
    2.5-6x above it.
    """
    mean, comps, var, rvar = fit_feature_model(train_features, n_components)
    gate = OODGate(mean, comps, var, rvar, threshold=1.0, percentile=percentile)
    gate.threshold = float(np.percentile(gate.feature_distance(np.asarray(val_features)), percentile))
    if train_stats is not None and val_stats is not None:
        gate.img_mean, gate.img_precision = fit_image_model(train_stats)
        val_img = gate.image_distance(np.asarray(val_stats))
        gate.img_threshold = float(image_margin * np.percentile(val_img, percentile))
        gate.info["image_margin"] = float(image_margin)
    return gate


def collect(runner, spec, paths, desc: str = "features", stats_fn=None):
    """Features (N, D) and image statistics (N, 8) of image files, scored with ``runner``
    (each image as it is; :func:`leukedge.edge_app.ood_views.collect_views` adds views).

    Unreadable files are skipped (logged).
    """
    from .ood_views import collect_views

    f, s, _ = collect_views(runner, spec, paths, stats_fn=stats_fn, desc=desc)
    return f, s


def flag_rate(gate: OODGate, features: np.ndarray, stats: np.ndarray) -> dict:
    """Fraction of images flagged (by either distance, and by each one)."""
    f = gate.feature_distance(features) > gate.threshold
    i = gate.image_distance(stats) > gate.img_threshold if gate.img_threshold else np.zeros(len(f), bool)
    return {"n": int(len(f)), "flagged": float((f | i).mean()), "flagged_by_features": float(f.mean()),
            "flagged_by_image": float(i.mean())}
