"""Score images with any LeukEdge model: a run folder (Keras), a ``.tflite`` file, or a release.

Every consumer (evaluate, parity, bench, predict) gets the same interface:
``predictor.predict(x) -> {"probability": (N,), "probabilities": (N, C), "cam": ..., ...}``
where ``x`` is a float32 batch made by :func:`leukedge.preprocess.preprocess` with the
predictor's own spec. Core runs ``.tflite`` files itself; other formats come from a
registry filled by the stage that owns them (:func:`register_loader`: importing
:mod:`leukedge.train` adds ``.h5`` Keras checkpoints), so this module imports no stage.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .capture import combine_tiles
from .errors import ImageError, ModelError
from .fileio import check_regular, read_json
from .preprocess import field_tiles, normalize, preprocess
from .imageio import load_image
from .model_check import check_model_io
from .prefetch import prefetch_map
from .progress import progress
from .release_check import UNVERIFIED, card_files, verify_release
from .runtime import LiteRunner, batch_threads
from .spec import ModelSpec
from .views import mean_over_views

log = logging.getLogger(__name__)

#: Preferred release file when a release folder is named, in order.
RELEASE_VARIANTS = ("int8", "pruned-int8", "int16x8", "float32", "float16", "dynamic")


class Predictor:
    """Base class: ``spec``, ``name``, ``kind``, ``predict`` and (optionally) ``heatmaps``."""

    spec: ModelSpec
    name: str
    kind: str
    #: How :meth:`heatmaps` makes its maps (None: only a model ``cam`` output gives heatmaps).
    heatmap_source: str | None = None
    #: ``verified`` (a release signed by a trusted key), ``unsigned`` (a release opened with
    #: allow_unsigned) or ``unverified`` (not a release: a lone .tflite or a run folder).
    signature: str = UNVERIFIED
    signature_problem: str | None = None

    def raw(self, x: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def heatmaps(self, x: np.ndarray) -> np.ndarray:
        """Grad-CAM maps (N, h, w) of a batch, for predictors whose model has no ``cam`` output."""
        raise ModelError(f"{self.name}: no heatmaps without a 'cam' output")

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run a float32 batch (N, S, S, 3); returns named outputs with a batch dimension.

        With ``preprocess.capture.views`` > 1 the probability is the mean over that many
        rotated / mirrored views of each input (:mod:`leukedge.views`), as the app screens."""
        cap = self.spec.preprocess.capture
        out = mean_over_views(self.raw, np.asarray(x, dtype=np.float32), cap.views if cap is not None else 1,
                              axes=(1, 2))
        probs = np.asarray(out["probability"], dtype=np.float64).reshape(len(x), -1)
        out["probabilities"] = probs
        if self.spec.task == "binary":
            out["probability"] = probs[:, 0]
        else:
            out["probability"] = np.array([self.spec.positive_probability(p) for p in probs])
        return out


class TFLitePredictor(Predictor):
    kind = "tflite"

    def __init__(self, path, spec: ModelSpec, num_threads: int | None = None, runtime: str = "litert",
                 expected_sha256: str | None = None):
        self.spec = spec
        # batch scoring: all CPUs unless told (LiteRT alone would use one)
        self.runner = LiteRunner(path, num_threads=num_threads or batch_threads(), runtime=runtime,
                                 expected_sha256=expected_sha256)
        self.name = Path(path).name
        check_model_io(self.runner, spec, path)  # before any image is scored

    def raw(self, x):
        return self.runner.predict(x)


#: Loaders of model files core does not run itself, by suffix: ``loader(folder, spec, file name)``.
_LOADERS: dict[str, Callable[[Path, ModelSpec, str], Predictor]] = {}


def register_loader(suffix: str, loader: Callable[[Path, ModelSpec, str], Predictor]) -> None:
    """Let :func:`load_predictor` open ``suffix`` files (and run folders holding ``best<suffix>``).

    A stage calls this when imported (``leukedge.train`` registers ``.h5``), so core needs
    no import of it.
    """
    _LOADERS[suffix] = loader


def _registered(folder: Path, spec: ModelSpec, file_name: str) -> Predictor:
    loader = _LOADERS.get(Path(file_name).suffix)
    if loader is None:
        raise ModelError(f"{folder / file_name}: a Keras checkpoint needs the train stage",
                         "install leukedge[train]; in Python, `import leukedge.train` first (the CLI does)")
    return loader(folder, spec, file_name)


def release_model_file(folder: Path, name: str, variant: str | None = None,
                       variants: tuple = RELEASE_VARIANTS) -> Path:
    """The release's model file of ``variant`` (default: the first of ``variants`` present).

    Files are ``<name>.<variant>.tflite``. A folder copied under another name (``runs/x/``) still
    finds them, by the spec's ``name`` or by the variant suffix; it never falls back to another
    variant (a renamed folder once ran its float32 file where the int8 one was meant).
    """
    folder = Path(folder)
    for v in (variant,) if variant else variants:
        for stem in dict.fromkeys((folder.name, name)):
            if (folder / f"{stem}.{v}.tflite").is_file():
                return folder / f"{stem}.{v}.tflite"
        hits = sorted(folder.glob(f"*.{v}.tflite"))
        if len(hits) == 1:
            return hits[0]
    found = sorted(p.name for p in folder.glob("*.tflite"))
    raise ModelError(f"{folder}: no {variant or ' / '.join(variants)} model file" + (f" (found {found})" if found else ""),
                     f"run `leukedge compress RUN --out {folder}` first" if not found
                     else "choose a variant that is present with --variant")


def _release_file(folder: Path, spec: ModelSpec, variant: str | None) -> Path:
    return release_model_file(folder, spec.name, variant)


def card_sha256(folder: Path) -> dict[str, str]:
    """sha256 of each model file as listed by the release's card.json (empty when no card)."""
    card = folder / "card.json"
    if not card.exists():
        return {}
    try:
        doc = read_json(card, ModelError)  # regular file, bounded, a JSON object
    except (ValueError, TypeError):
        raise ModelError(f"{card}: not a valid model card") from None
    return card_files(doc) if isinstance(doc, dict) else {}


def load_predictor(path, variant: str | None = None, num_threads: int | None = None,
                   runtime: str = "litert", verify: bool = True, allow_unsigned: bool = False) -> Predictor:
    """Load a predictor from a release folder, a run folder, or a ``.tflite`` file.

    A release folder (one with ``card.json``) is verified by
    :func:`leukedge.release_check.verify_release` (``verify``): signed by a trusted key,
    complete, every hash; ``allow_unsigned`` accepts a missing, wrong or untrusted signature
    (``predictor.signature == "unsigned"``). A lone ``.tflite`` (``spec.json`` read from its
    folder, its hash checked against a card there when listed) or a run folder is not a
    release: it runs, marked ``unverified``.

    Raises:
        ModelError: nothing usable at ``path``, or a release that fails verification.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such model", "pass models/<name>, a .tflite file or a training run folder")
    if not p.is_dir():
        check_regular(p, ModelError, "model")  # a FIFO or device: refused, never read
    if p.is_file():
        if p.suffix == ".h5" or p.suffix in _LOADERS:
            return _registered(p.parent, ModelSpec.load(p.parent), p.name)
        spec = ModelSpec.load(p.parent)
        sha = card_sha256(p.parent).get(p.name) if verify else None
        return TFLitePredictor(p, spec, num_threads, runtime, sha)
    if p.is_symlink() or (p / "spec.json").exists():
        p = p.resolve()
    check = verify_release(p, allow_unsigned) if verify and (p / "card.json").exists() else None
    spec = check.spec if check else ModelSpec.load(p)
    if (p / "best.h5").exists() and not list(p.glob("*.tflite")):
        return _registered(p, spec, "best.h5")
    f = _release_file(p, spec, variant)
    sha = check.files.get(f.name) if check else None
    pred = TFLitePredictor(f, spec, num_threads, runtime, sha)
    if check:
        pred.signature, pred.signature_problem = check.status, check.problem
    return pred


@dataclass
class Scores:
    """Outputs of a predictor over a list of images (failed images are listed in ``errors``)."""

    paths: list[str]
    probability: np.ndarray
    probabilities: np.ndarray
    extra: dict = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def score_paths(predictor: Predictor, paths: list[str], batch_size: int = 32, keep=("cam", "features"),
                desc: str = "scoring", spec: ModelSpec | None = None) -> Scores:
    """Decode, preprocess (with the predictor's spec) and score image files.

    With ``preprocess.capture.magnification`` in the spec, each photo is scored as the app
    screens it: cut into tiles at the training cell size (:func:`leukedge.preprocess.field_tiles`)
    and its tiles' probabilities combined by ``capture.tile_rule``
    (:func:`leukedge.capture.combine_tiles`) over **every** tile (the app's per-tile exposure and
    OOD gates are not applied: this scores the model, the gates are measured by ``leukedge bench
    captures``). The probability vector is the tiles' mean for ``mean``, else the deciding tile's
    (the tile with the highest leukemia probability); ``cam`` and ``features`` are the deciding
    tile's; ``extra["tiles"]`` and ``extra["tile"]`` hold the number of tiles and the deciding one.
    A lab photo at the training cell size is one tile: the same score as without tiling.

    Unreadable images are skipped and reported in ``Scores.errors``; never a crash.
    """
    spec = spec or predictor.spec
    cap = spec.preprocess.capture
    tiled = bool(cap is not None and cap.magnification)
    ok_paths, probs, probv, extra, errors = [], [], [], {}, {}
    batch, owners = [], []  # model inputs and the image (index into ok_paths) each belongs to
    pending: dict[int, list] = {}  # image -> [n tiles, [(probability, vector, {k: output})]]

    def finish(i):
        n, outs = pending.pop(i)
        pos = np.array([o[0] for o in outs])
        k = int(np.argmax(pos))
        if tiled:
            p = combine_tiles(pos, cap.tile_rule)
            vec = np.mean([o[1] for o in outs], axis=0) if cap.tile_rule == "mean" else outs[k][1]
            if spec.task == "binary":
                vec = np.array([p])
        else:
            p, vec = float(pos[0]), outs[0][1]
        probs.append(p)
        probv.append(vec)
        for name, v in outs[k][2].items():
            extra.setdefault(name, []).append(v)
        if tiled:
            extra.setdefault("tiles", []).append(n)
            extra.setdefault("tile", []).append(k)

    def flush():
        if not batch:
            return
        out = predictor.predict(np.stack(batch))
        for j, i in enumerate(owners):
            kept = {name: np.asarray(out[name][j]) for name in keep if name in out}
            pending[i][1].append((float(out["probability"][j]), np.asarray(out["probabilities"][j]), kept))
            if len(pending[i][1]) == pending[i][0]:
                finish(i)
        batch.clear()
        owners.clear()

    def prepare(path):
        rgb = load_image(path)
        if not tiled:
            return [preprocess(rgb, spec.preprocess)]
        return [normalize(x, spec.preprocess) for x in field_tiles(rgb, spec.preprocess).inputs]

    # the next images are decoded and preprocessed in a background thread while the model runs
    for path, xs in prefetch_map(prepare, progress(paths, desc=desc, unit="img"), ahead=batch_size,
                                 catch=(ImageError,)):
        if isinstance(xs, ImageError):
            errors[str(path)] = xs.one_line()
            continue
        i = len(ok_paths)
        ok_paths.append(str(path))
        pending[i] = [len(xs), []]
        for x in xs:
            batch.append(x)
            owners.append(i)
            if len(batch) >= batch_size:
                flush()
    flush()
    if not ok_paths:
        return Scores([], np.zeros(0), np.zeros((0, spec.num_outputs)), {}, errors)
    return Scores(ok_paths, np.asarray(probs, np.float64), np.stack(probv),
                  {k: np.stack(v) for k, v in extra.items()}, errors)
