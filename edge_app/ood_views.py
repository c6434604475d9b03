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

from leukedge.capture_sim import BENCH_ONLY, FAMILIES
from leukedge.errors import ConfigError

from .ood import DIHEDRAL, dihedral

log = logging.getLogger(__name__)

#: Capture families a field view samples by default (all registered single families; ``rotation``
#: adds non-quarter angles, ``flip`` is covered by the dihedral views; the benchmark-only
#: ``resolution`` (undone by the preprocessing) and compound ``phone`` are left out: adding the
#: latter did not change what the gate flags, docs/captures.md 18).
FIT_FAMILIES = tuple(n for n in FAMILIES if n != "flip" and n not in BENCH_ONLY)


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


def collect_views(runner, spec, paths, make_views=identity_views, stats_fn=None, desc: str = "features",
                  tiles: bool = False, return_groups: bool = False, feature_input: str = "features"):
    """Features (N, D), image statistics (N, 8) and view descriptions (N,) of image files
    under views, scored with ``runner`` through the release's own preprocessing.

    Args:
        make_views: ``f(rgb, index) -> [(image, description)]`` (:func:`identity_views`,
            :func:`dihedral_views`, :func:`capture_views`, :func:`field_views`).
        stats_fn: image statistics of a view (default :func:`leukedge.edge_app.ood.image_stats`);
            pass ``gate.stats`` to measure them the way a gate does.
        tiles: feed the gate what the app's tile screen feeds it (a spec with magnification
            on): every view is cut by :func:`leukedge.preprocess.field_tiles` and each *usable*
            tile (:func:`leukedge.edge_app.tiling.tile_quality`) is one row, its description
            ``<view>|t<i>``, its statistics those of the whole view (the photo-level image
            distance); a view without a usable tile gives no row (the app asks for a retake).
            False: one row per view, the centre input of :func:`leukedge.preprocess.preprocess`.
        return_groups: also return (N,) ints, the view each row belongs to (rows of one view
            share it; :func:`field_flags` applies the tile screen's field rule with them).
        feature_input: the model output a row's features come from (``features``, or ``ood_map``
            pooled: :func:`leukedge.edge_app.ood.gate_vector`).

    Unreadable files are skipped (logged).
    """
    from leukedge.errors import ImageError, ModelError
    from leukedge.imageio import load_image
    from leukedge.prefetch import prefetch_map
    from leukedge.preprocess import field_tiles, normalize, preprocess
    from leukedge.progress import progress

    from .ood import gate_vector, image_stats
    from .tiling import tile_quality

    stats_fn = stats_fn or image_stats
    pre = spec.preprocess

    def inputs(img, d):
        if not tiles:
            return [(preprocess(img, pre), d)]
        cut = field_tiles(img, pre)
        return [(normalize(x, pre), f"{d}|t{i}") for i, (x, raw) in enumerate(zip(cut.inputs, cut.raw))
                if tile_quality(raw) == "ok"]

    def prepare(item):  # image work, in a background thread while the model scores the previous image
        i, p = item
        out = []
        for img, d in make_views(load_image(p), i):
            st = stats_fn(img)  # photo-level: once per view, shared by its tiles
            out.append([(x, st, dd) for x, dd in inputs(img, d)])
        return out

    feats, stats, descs, groups = [], [], [], []
    n_views = 0
    items = enumerate(progress(paths, desc=desc, unit="img"))
    for _, views in prefetch_map(prepare, items, catch=(ImageError,)):
        if isinstance(views, ImageError):
            log.warning("skipped %s", views.one_line())
            continue
        for rows in views:
            n_views += 1
            for x, st, d in rows:
                out = runner.run(x)
                vec = gate_vector(out, feature_input)
                if vec is None:
                    raise ModelError(f"the model has no '{feature_input}' output (outputs: {sorted(out)})",
                                     "re-export it with `leukedge compress` (outputs probability, cam, features"
                                     + (", ood_map)" if feature_input == "ood_map" else ")"))
                feats.append(vec)
                stats.append(st)
                descs.append(d)
                groups.append(n_views - 1)
    if not feats:
        res = (np.zeros((0, 0)), np.zeros((0, 8)), np.array([], dtype=str))
    else:
        res = (np.stack(feats), np.stack(stats), np.array(descs))
    return res + (np.array(groups, int),) if return_groups else res


def view_of(descs) -> np.ndarray:
    """The view each row belongs to, by name: the description without its ``|t<i>`` tile suffix."""
    return np.array([str(d).split("|t")[0] for d in descs])


def first_rows(groups) -> np.ndarray:
    """Mask of each view's first row (the photo-level image statistics counted once per view)."""
    g = np.asarray(groups)
    return np.r_[True, g[1:] != g[:-1]] if len(g) else np.zeros(0, bool)


def field_flags(gate, features: np.ndarray, stats: np.ndarray, groups) -> dict:
    """Per view, the tile screen's field rule (:mod:`leukedge.edge_app.tiling`): flagged by the
    image statistics of the view, or by the features of more than half of its tiles. Returns
    ``{"features": (V,) bool, "image": (V,) bool, "first": (N,) mask of each view's first row}``."""
    from .tiling import TILE_OOD_FRACTION

    g = np.asarray(groups)
    first = first_rows(g)
    starts = np.flatnonzero(first)
    f = gate.feature_distance(features) > gate.threshold if len(g) else np.zeros(0, bool)
    counts = np.diff(np.r_[starts, len(g)])
    by_feat = np.add.reduceat(f.astype(int), starts) > counts * TILE_OOD_FRACTION if len(g) else f
    s = np.asarray(stats)[first]
    by_img = gate.image_distance(s) > gate.img_threshold if gate.img_threshold and len(s) else np.zeros(len(s), bool)
    return {"features": by_feat, "image": by_img, "first": first}


def view_rates(gate, features: np.ndarray, stats: np.ndarray, groups, select=None) -> dict:
    """:func:`leukedge.edge_app.ood.flag_rate` per view under the field rule (:func:`field_flags`):
    the fraction of views flagged (by either distance, and by each one). ``select``: (V,) mask
    of the views counted (default all)."""
    fl = field_flags(gate, features, stats, groups)
    f, i = fl["features"], fl["image"]
    if select is not None:
        f, i = f[select], i[select]
    if not len(f):
        return {"n": 0, "flagged": 0.0, "flagged_by_features": 0.0, "flagged_by_image": 0.0}
    return {"n": int(len(f)), "flagged": float((f | i).mean()), "flagged_by_features": float(f.mean()),
            "flagged_by_image": float(i.mean())}
