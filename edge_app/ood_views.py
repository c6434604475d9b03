"""Field views: the ways a real smear legitimately reaches the OOD gate, for fitting it.

A health worker's photo of a smear the model knows may be rotated or flipped (a smear has
no "up" and no "front") and taken under other capture conditions (light, stain, exposure,
compression, optics). The OOD gate must not flag those: it must flag images unlike any
smear (another lab's cell crops, photos of other things). The ``field`` fit
(:func:`leukedge.edge_app.ood.fit_gate` with views) therefore fits the gate on each training
image *and* ``n_views`` random views of it, and takes its thresholds on validation images
under the same views. A view is one of the 8 :data:`~leukedge.edge_app.ood.DIHEDRAL`
orientations, then, with probability ``capture_p``, one capture family of
:data:`leukedge.capture_sim.FAMILIES` at one of its *moderate* severities (issue 19's
targets: what capture normalisation and the model should absorb). Every view is seeded by
``(seed, image index, view index)``, so a fit is reproducible.

Only numpy, OpenCV and scikit-image (through :mod:`leukedge.capture_sim`) are needed.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from leukedge.capture_sim import FAMILIES
from leukedge.errors import ConfigError

from .ood import DIHEDRAL, dihedral

log = logging.getLogger(__name__)

#: Capture families a field view samples by default (all registered families; ``rotation``
#: adds non-quarter angles, ``flip`` is covered by the dihedral views).
FIT_FAMILIES = tuple(n for n in FAMILIES if n != "flip")


@dataclass
class FieldViews:
    """How training and validation images are varied for the ``field`` fit.

    Attributes:
        n_views: random views per image, added to the image itself (0: the plain fit).
        capture_p: probability that a view also gets one capture family.
        families: capture families sampled (at their ``moderate`` severities).
        seed: base seed of the views.
    """

    n_views: int = 3
    capture_p: float = 0.75
    families: tuple = field(default_factory=lambda: FIT_FAMILIES)
    seed: int = 0

    def __post_init__(self):
        self.families = tuple(self.families)
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ConfigError(f"unknown capture families {unknown}", "choose from " + ", ".join(FAMILIES))
        if self.n_views < 0 or not 0.0 <= self.capture_p <= 1.0:
            raise ConfigError(f"field views: n_views must be >= 0 and capture_p in [0, 1] "
                              f"(got {self.n_views}, {self.capture_p})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["families"] = list(self.families)
        return d


def field_view(rgb: np.ndarray, rng: np.random.Generator, families=FIT_FAMILIES,
               capture_p: float = 0.75) -> tuple[np.ndarray, str]:
    """One random field view of ``rgb``: a dihedral orientation, then maybe one moderate
    capture family. Returns (image, description like ``view:rot90+jpeg@20``)."""
    view = DIHEDRAL[int(rng.integers(len(DIHEDRAL)))]
    img = dihedral(rgb, view)
    desc = f"view:{view}"
    if families and rng.random() < capture_p:
        fam = FAMILIES[families[int(rng.integers(len(families)))]]
        sev = fam.moderate[int(rng.integers(len(fam.moderate)))]
        img = fam.apply(img, sev, rng)
        desc += f"+{fam.name}@{sev:g}"
    return img, desc


def views_of(rgb: np.ndarray, index: int, cfg: FieldViews) -> list[tuple[np.ndarray, str]]:
    """The image itself (``identity``) and ``cfg.n_views`` field views of it (``view:...``; seeded
    by ``cfg.seed`` and ``index``)."""
    out = [(rgb, "identity")]
    for j in range(cfg.n_views):
        rng = np.random.default_rng([cfg.seed, int(index), j])
        out.append(field_view(rgb, rng, cfg.families, cfg.capture_p))
    return out


# ----- view makers: f(rgb, index) -> [(image, description)] -------------------------------------
def identity_views(rgb: np.ndarray, index: int) -> list[tuple[np.ndarray, str]]:
    """The image alone."""
    return [(rgb, "identity")]


def dihedral_views(rgb: np.ndarray, index: int) -> list[tuple[np.ndarray, str]]:
    """The 8 dihedral views, in :data:`DIHEDRAL` order."""
    return [(dihedral(rgb, k), k) for k in DIHEDRAL]


def capture_views(families=None, seed: int = 7):
    """A view maker: every capture family at each of its moderate severities (``name@severity``),
    seeded per (seed, image, family, severity)."""
    names = list(FAMILIES) if families is None else list(families)

    def make(rgb: np.ndarray, index: int) -> list[tuple[np.ndarray, str]]:
        out = []
        for k, name in enumerate(names):
            fam = FAMILIES[name]
            for sev in fam.moderate:
                rng = np.random.default_rng([seed, int(index), k, int(round(abs(sev) * 1000))])
                out.append((fam.apply(rgb, sev, rng), f"{name}@{sev:g}"))
        return out

    return make


def field_views(cfg: FieldViews):
    """A view maker for :func:`views_of` with ``cfg``."""
    return lambda rgb, index: views_of(rgb, index, cfg)


def collect_views(runner, spec, paths, make_views=identity_views, stats_fn=None, desc: str = "features"):
    """Features (N, D), image statistics (N, 8) and view descriptions (N,) of image files
    under views, scored with ``runner`` through the release's own preprocessing.

    Args:
        make_views: ``f(rgb, index) -> [(image, description)]`` (:func:`identity_views`,
            :func:`dihedral_views`, :func:`capture_views`, :func:`field_views`).
        stats_fn: image statistics of a view (default :func:`leukedge.edge_app.ood.image_stats`);
            pass ``gate.stats`` to measure them the way a gate does.

    Unreadable files are skipped (logged).
    """
    from leukedge.errors import ImageError, ModelError
    from leukedge.imageio import load_image
    from leukedge.prefetch import prefetch_map
    from leukedge.preprocess import preprocess
    from leukedge.progress import progress

    from .ood import image_stats

    stats_fn = stats_fn or image_stats

    def prepare(item):  # image work, in a background thread while the model scores the previous image
        i, p = item
        return [(preprocess(img, spec.preprocess), stats_fn(img), d) for img, d in make_views(load_image(p), i)]

    feats, stats, descs = [], [], []
    items = enumerate(progress(paths, desc=desc, unit="img"))
    for _, views in prefetch_map(prepare, items, catch=(ImageError,)):
        if isinstance(views, ImageError):
            log.warning("skipped %s", views.one_line())
            continue
        for x, st, d in views:
            out = runner.run(x)
            if "features" not in out:
                raise ModelError(f"the model has no 'features' output (outputs: {sorted(out)})",
                                 "re-export it with `leukedge compress` (outputs probability, cam, features)")
            feats.append(np.asarray(out["features"], np.float64).reshape(-1))
            stats.append(st)
            descs.append(d)
    if not feats:
        return np.zeros((0, 0)), np.zeros((0, 8)), np.array([], dtype=str)
    return np.stack(feats), np.stack(stats), np.array(descs)
