"""The app's pure inference module: release folder in, :class:`Screening` out. No widgets.

``Screener(models/<name>)`` verifies the release (:func:`leukedge.release_check.verify_release`:
``card.json`` signed by a trusted key, every file the runtime reads listed with its sha256;
an unsigned, tampered or incomplete release is refused unless ``allow_unsigned``), loads the int8 ``.tflite`` with
:class:`leukedge.runtime.LiteRunner` (or the LiteRT Java bridge on Android), and
``screen_image(path_or_rgb)`` runs: decode (:func:`leukedge.imageio.load_image`) ->
quality gate -> the one preprocessing (:mod:`leukedge.preprocess`) -> model ->
Grad-CAM heatmap -> out-of-distribution gate -> decision at the spec's threshold.
When the spec's ``preprocess.capture.magnification`` is on, the photo is rescaled to the
training cell size and screened as up to ``capture.max_tiles`` tiles whose answers
:mod:`leukedge.edge_app.tiling` makes one (``Screening.tiles`` says how many); otherwise
(every release so far) one input, exactly as before.
``leukedge predict`` and the Kivy app both call it. Imports numpy, OpenCV and LiteRT
only (never TensorFlow).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leukedge.errors import ImageError, LeukEdgeError, ModelError
from leukedge.fileio import sha256_file
from leukedge.heatmap import ALPHA, blend, colorize, normalise
from leukedge.imageio import decode_image, read_image_bytes
from leukedge.model_check import check_model_io
from leukedge.predictors import release_model_file
from leukedge.preprocess import field_tiles, normalize, preprocess_uint8
from leukedge.views import mean_over_views
from leukedge.release_check import UNVERIFIED, inside, verify_release
from leukedge.release_check import card_files  # noqa: F401  (re-exported: older callers import it from here)
from leukedge.spec import ModelSpec

from .ood import OODGate
from .quality import QualityConfig, check_quality, guidance
from .release_info import card_metrics, find_metric, list_releases  # noqa: F401  (re-exported)
from .tiling import TileResult, field_probabilities, field_verdict, tile_quality

log = logging.getLogger(__name__)

#: Preferred model file of a release, in order.
VARIANTS = ("int8", "pruned-int8", "float32")
#: Decision words for statuses that are not a score.
RETAKE, OOD, ERROR = "retake", "out-of-distribution", "error"
#: What a borderline photo's retake says (``preprocess.capture.rule_out``: a score in the grey zone).
BORDERLINE_GUIDANCE = ("The result is borderline: the score is close to the decision threshold. Take another "
                       "field of view (another area of the smear) and screen it.")


# ----- release folder -------------------------------------------------------------------
@dataclass
class Release:
    """A verified release folder: spec, card, the model file to run and its OOD gate."""

    folder: Path
    spec: ModelSpec
    card: dict
    model_path: Path
    model_sha256: str
    ood: OODGate | None
    verified: list[str] = field(default_factory=list)
    #: ``verified`` (signed by a trusted key), ``unsigned`` (opened with allow_unsigned) or ``unverified``.
    signature_status: str = UNVERIFIED
    signature_key: str | None = None
    signature_problem: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return str(self.card.get("version") or self.spec.version)

    def metric(self, name: str):
        return find_metric(self.card, name)

    @property
    def variant(self) -> str:
        """The model file's variant (``int8``, ``pruned-int8``, ``float32``...)."""
        stem = self.model_path.name[:-len(".tflite")]
        return stem.rsplit(".", 1)[-1]  # <name>.<variant>: no variant has a dot, the folder may be renamed

    @property
    def parity(self) -> dict | None:
        """The card's parity of this file against float32: ``{"comparison", "passed", "failed"}``,
        or None when it was not checked (the float32 file itself, or an old card)."""
        comps = (self.card.get("parity") or {}).get("comparisons") or {}
        name = f"{self.variant} vs float32"
        c = comps.get(name)
        if not isinstance(c, dict) or "passed" not in c:
            return None
        failed = [g.get("name") for g in c.get("gates") or [] if isinstance(g, dict) and not g.get("passed")]
        return {"comparison": name, "passed": bool(c["passed"]), "failed": failed or list(c.get("failed") or [])}

    @property
    def parity_status(self) -> str | None:
        """``pass``/``fail`` for the file that runs (None: not checked)."""
        p = self.parity
        return None if p is None else ("pass" if p["passed"] else "fail")

    def ood_rates(self) -> dict[str, float]:
        """Fraction flagged by the OOD gate per data set (card ``ood`` section, else ``ood.json``;
        each set is ``{"n": .., "flagged": ..}`` there, or a plain fraction)."""
        rates = (self.card.get("ood") or {}).get("rates")
        if not rates and (self.folder / "ood.json").is_file():
            try:
                rates = json.loads((self.folder / "ood.json").read_text())["rates"]
            except (ValueError, KeyError, TypeError):
                rates = None
        out = {}
        for name, v in (rates if isinstance(rates, dict) else {}).items():
            v = v.get("flagged") if isinstance(v, dict) else v
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[name] = float(v)
        return out

    def figures(self) -> list[Path]:
        return sorted((self.folder / "figures").glob("*.png"))


def load_release(folder: str | os.PathLike, variant: str | None = None, load_ood: bool = True,
                 allow_unsigned: bool = False) -> Release:
    """Open and verify a release folder ``models/<name>``.

    :func:`leukedge.release_check.verify_release` checks the signature of ``card.json``
    against the trust store, that every file the runtime reads is listed, every listed
    sha256 and that every path stays inside the folder. ``allow_unsigned`` accepts a
    missing, wrong or untrusted signature (development; ``Release.signature_status`` is then
    ``unsigned``). ``load_ood=False`` skips the OOD statistics (used while (re)fitting them).

    Raises:
        ModelError: missing folder/card/spec/model, unsigned or tampered release, invalid card.
    """
    folder = Path(folder)
    if folder.is_file():  # a model file: its release folder, that variant
        prefix, suffix = folder.parent.name + ".", ".tflite"
        name = folder.name
        if name.startswith(prefix) and name.endswith(suffix) and (folder.parent / "card.json").is_file():
            v = name[len(prefix):-len(suffix)]
            if variant and variant != v:
                raise ModelError(f"{folder}: this is the {v} file, but variant {variant} was asked for",
                                 f"pass the folder {folder.parent} with --variant {variant}, or drop --variant")
            return load_release(folder.parent, v, load_ood, allow_unsigned)
        raise ModelError(f"{folder}: a single model file, not a release folder",
                         "screening runs a release folder (models/<name>: the spec, card and OOD gate travel with "
                         "the model, checked by sha256); pass the folder that holds it")
    if not folder.is_dir():
        hint = "choose one of: " + ", ".join(str(p) for p in list_releases()) if list_releases() else \
            "pass a release folder models/<name> (made by `leukedge compress`)"
        raise ModelError(f"{folder}: no such model folder", hint)
    check = verify_release(folder, allow_unsigned)
    spec, card, files = check.spec, check.card, check.files
    model_path = release_model_file(folder, spec.name, variant, VARIANTS)
    if model_path.name not in files:
        raise ModelError(f"{model_path}: not listed in card.json, cannot verify it", "re-export the release")
    gate = None
    if load_ood and spec.ood.method != "none" and spec.ood.stats_file:
        gate = OODGate.load(inside(folder, spec.ood.stats_file, "spec ood.stats_file"))
        if spec.ood.threshold is not None:
            gate.threshold = float(spec.ood.threshold)
    release = Release(folder, spec, card, model_path, files[model_path.name], gate, check.checked,
                      check.status, check.key_id, check.problem)
    p = release.parity
    if p is not None and not p["passed"]:
        log.warning("%s: %s FAILED parity (%s; parity.md): its results may differ from the evaluated model; "
                    "the int8 file is the one to deploy", model_path.name, p["comparison"], ", ".join(p["failed"]))
    return release


# ----- runner ---------------------------------------------------------------------------
def make_runner(path, num_threads: int | None = None, expected_sha256: str | None = None):
    """A LiteRunner-style runner: LiteRT in Python, or the LiteRT Java bridge on Android.

    ``LEUKEDGE_RUNTIME=android`` forces the Java bridge; otherwise it is used only when
    ``ai_edge_litert`` is not installed and ``jnius`` is.
    """
    from leukedge.runtime import LiteRunner

    forced = os.environ.get("LEUKEDGE_RUNTIME", "")
    if forced == "android" or (importlib.util.find_spec("ai_edge_litert") is None
                               and importlib.util.find_spec("jnius") is not None):
        from .android import JavaLiteRunner

        return JavaLiteRunner(path, num_threads=num_threads, expected_sha256=expected_sha256)
    return LiteRunner(path, num_threads=num_threads, runtime=forced or "litert", expected_sha256=expected_sha256)


# ----- result ---------------------------------------------------------------------------
@dataclass
class Screening:
    """The result of screening one image.

    ``decision`` is ``positive``/``negative`` (the spec's decision at ``threshold``) when
    the image was scored, ``retake`` for a bad-quality image, ``out-of-distribution`` for
    an image unlike the training smears, ``None`` when it could not be read (``error``).
    An over-exposed or blurred photo with a strong leukemia score is ``positive`` with
    ``rule_in`` true and its ``quality`` still saying what was wrong (:meth:`QualityConfig.rules_in`).
    A photo the gates pass whose score lies in the release's grey zone (``preprocess.capture.rule_out``
    up to the threshold) is ``retake`` with ``borderline`` true and ``quality`` ``ok``: no answer,
    take another field (:meth:`Screener.in_grey_zone`).
    """

    path: str | None
    probability: float | None = None
    decision: str | None = None
    probabilities: dict[str, float] | None = None
    quality: str | None = None
    quality_details: dict | None = None
    ood: bool = False
    ood_score: float | None = None
    ood_details: dict | None = None
    error: str | None = None
    threshold: float | None = None
    model_name: str = ""
    model_version: str = ""
    model_sha256: str = ""
    model_variant: str = ""
    parity: str | None = None                # the running file's parity against float32: pass / fail / None
    signature: str = UNVERIFIED              # the release's signature: verified / unsigned (allow_unsigned)
    image_sha256: str | None = None
    image: np.ndarray | None = None          # the preprocessed uint8 image (S, S, 3) shown under the heatmap
    heatmap: np.ndarray | None = None        # normalised Grad-CAM in [0, 1], resized to ``image``
    heatmap_rgb: np.ndarray | None = None    # heatmap through a colour map (S, S, 3) uint8
    timings: dict[str, float] = field(default_factory=dict)
    rule_in: bool = False                    # answered "positive" although the quality gate found the photo
                                             # over-exposed or blurred (QualityConfig.rules_in)
    borderline: bool = False                 # a retake because the score is in the grey zone (rule_out up to
                                             # the threshold), not because of the photo
    tiles: int | None = None                 # tiles screened (None: one input, magnification off)
    tiling: dict | None = None               # per-tile answers and the field rule's choices

    @property
    def scored(self) -> bool:
        return self.decision in ("positive", "negative")

    @property
    def guidance(self) -> str:
        if self.borderline:
            return BORDERLINE_GUIDANCE
        return guidance(self.quality) if self.quality else ""

    def overlay(self, alpha: float = ALPHA) -> np.ndarray | None:
        """The heatmap blended over the image (uint8 RGB), or None."""
        if self.image is None or self.heatmap_rgb is None:
            return None
        return blend(self.image, self.heatmap_rgb, alpha)

    def to_json(self) -> dict:
        """The ``leukedge predict --json`` object (INTERFACES.md keys first). A result the quality
        or out-of-distribution gate hides has ``probability``/``probabilities`` null: a score the
        gates did not trust is never handed on as a score."""
        shown = self.scored
        return {"path": self.path, "probability": self.probability if shown else None, "decision": self.decision,
                "ood": self.ood, "quality": self.quality, "probabilities": self.probabilities if shown else None,
                "error": self.error,
                "ood_score": self.ood_score, "threshold": self.threshold, "model": self.model_name,
                "model_version": self.model_version, "model_sha256": self.model_sha256,
                "image_sha256": self.image_sha256, "timings_ms": self.timings,
                "model_variant": self.model_variant, "parity": self.parity, "signature": self.signature,
                "rule_in": self.rule_in, "borderline": self.borderline,
                **({"tiles": self.tiles, "tiling": self.tiling} if self.tiles is not None else {})}


# ----- the screener ---------------------------------------------------------------------
class Screener:
    """Loads a release once and screens images.

    Args:
        release: a release folder ``models/<name>`` (or a loaded :class:`Release`).
        num_threads: interpreter threads.
        variant: model file variant (``int8`` by default).
        quality: quality thresholds (default: the app's, with the limits the spec validated for its model:
            :meth:`QualityConfig.for_spec`).
        allow_unsigned: accept a release whose signature is missing, wrong or untrusted
            (development only: every result then says ``signature: unsigned``).
    """

    def __init__(self, release, num_threads: int | None = None, variant: str | None = None,
                 quality: QualityConfig | None = None, allow_unsigned: bool = False):
        t0 = time.perf_counter()
        self.release = release if isinstance(release, Release) else load_release(release, variant,
                                                                                   allow_unsigned=allow_unsigned)
        self.spec = self.release.spec
        self.runner = make_runner(self.release.model_path, num_threads, None)  # hash checked by load_release
        check_model_io(self.runner, self.spec, self.release.model_path)  # before any image is scored
        gate = self.release.ood
        if gate is not None and gate.feature_input not in (getattr(self.runner, "outputs", None) or {}):
            raise ModelError(f"{self.release.model_path.name}: no '{gate.feature_input}' output, which the release's "
                             f"OOD gate reads (outputs: {sorted(getattr(self.runner, 'outputs', None) or {})})",
                             "the model file and ood.npz come from different releases: download the release again")
        self.quality_cfg = quality or QualityConfig.for_spec(self.spec)
        self.threshold = float(self.spec.threshold)
        #: the grey zone's lower edge (``preprocess.capture.rule_out``; None: no zone)
        self.rule_out = getattr(self.spec.preprocess.capture, "rule_out", None)
        self.num_threads = num_threads
        self.warmup()
        self.load_ms = (time.perf_counter() - t0) * 1000

    def warmup(self) -> None:
        """One inference on a blank input, so the first real image is not slowed by lazy allocation."""
        s = self.spec.preprocess.input_size
        self.runner.run(np.zeros((s, s, 3), np.float32))

    # settings -------------------------------------------------------------------------
    def operating_points(self) -> list:
        """The validated operating points (the default threshold first when not listed)."""
        ops = list(self.spec.operating_points)
        if not any(abs(o.threshold - self.spec.threshold) < 1e-9 for o in ops):
            from leukedge.spec import OperatingPoint

            ops.insert(0, OperatingPoint("default", float(self.spec.threshold), "the spec's default threshold"))
        return ops

    def set_operating_point(self, name: str) -> float:
        """Use the threshold of a validated operating point (no free thresholds)."""
        for op in self.operating_points():
            if op.name == name:
                self.threshold = float(op.threshold)
                return self.threshold
        raise ModelError(f"no operating point '{name}' in {self.spec.name}",
                         "choose one of: " + ", ".join(o.name for o in self.operating_points()))

    def in_grey_zone(self, probability: float | None) -> bool:
        """True when ``probability`` is at or above the release's ``rule_out`` and below the threshold
        in use: too close to the threshold to clear the photo (no zone when the threshold is at or
        below ``rule_out``, or the release has none)."""
        return (self.rule_out is not None and probability is not None
                and float(self.rule_out) <= probability < self.threshold)

    # screening ------------------------------------------------------------------------
    def _run(self, x: np.ndarray) -> dict:
        """One model input through the interpreter, in the spec's number of views
        (``preprocess.capture.views``: the probability averaged, :mod:`leukedge.views`)."""
        cap = self.spec.preprocess.capture
        return mean_over_views(self.runner.run, x, cap.views if cap is not None else 1)

    def _base(self, path) -> Screening:
        r = self.release
        return Screening(path=path, threshold=self.threshold, model_name=r.name, model_version=r.version,
                         model_sha256=r.model_sha256, model_variant=r.variant, parity=r.parity_status,
                         signature=r.signature_status)

    def _screen_tiles(self, res: Screening, rgb: np.ndarray, heatmap: bool, t: dict) -> None:
        """Magnification on: the field at the training cell size, screened as tiles (batch 1:
        one interpreter call per tile) and made one answer by :mod:`leukedge.edge_app.tiling`."""
        pre = self.spec.preprocess
        cut = field_tiles(rgb, pre)
        if cut.info.get("fallback"):
            log.info("%s: %s", res.path or "frame", cut.info["fallback"])
        t["preprocess"] = time.perf_counter()
        gate = self.release.ood
        results = []
        for i, (shown, raw, box) in enumerate(zip(cut.inputs, cut.raw, cut.boxes)):
            out = self._run(normalize(shown, pre))
            probs = np.asarray(out["probability"], np.float64).reshape(-1)
            ratio = None
            vec = gate.vector(out) if gate is not None else None
            if vec is not None:
                ratio = gate.check(vec, None)[2].get("features")
            results.append(TileResult(i, box, float(self.spec.positive_probability(probs)), probs,
                                      tile_quality(raw, self.quality_cfg), ratio,
                                      out.get("cam") if heatmap else None))
        t["inference"] = time.perf_counter()
        image_ratio = gate.check(None, rgb)[2].get("image") if gate is not None else None
        v = field_verdict(results, pre.capture.tile_rule, image_ratio)
        if res.quality == "ok" and v.quality != "ok":
            res.quality = v.quality
        if v.ood_score is not None:
            res.ood, res.ood_score, res.ood_details = v.ood, round(v.ood_score, 4), v.ood_details
        if v.deciding is not None:
            res.probability = float(v.probability)
            vec = field_probabilities(results, v, pre.capture.tile_rule)
            if self.spec.task == "subtype":
                res.probabilities = {c: float(p) for c, p in zip(self.spec.class_names, vec)}
        k = v.deciding if v.deciding is not None else 0
        res.image = cut.inputs[k]
        if results[k].cam is not None:
            res.heatmap = normalise(results[k].cam, (res.image.shape[1], res.image.shape[0]))
            res.heatmap_rgb = colorize(res.heatmap)
        res.tiles = len(results)
        res.tiling = {"n": len(results), "rule": pre.capture.tile_rule, "used": v.used, "deciding": v.deciding,
                      "field": list(cut.field_shape), "scale": cut.info.get("scale"),
                      "cell_diameter": cut.info.get("cell_diameter"), "fallback": cut.info.get("fallback"),
                      "per_tile": [r.to_dict(r.index in v.used) for r in results]}
        t["heatmap"] = t["ood"] = time.perf_counter()

    def screen_image(self, image, heatmap: bool = True) -> Screening:
        """Screen one image: a path, or an RGB uint8 array (a camera frame).

        Never raises for a bad image: the message goes to ``Screening.error``.
        """
        t = {}
        t0 = time.perf_counter()
        is_path = not isinstance(image, np.ndarray)
        res = self._base(str(image) if is_path else None)
        try:
            if is_path:
                data = read_image_bytes(image)  # regular files only, bounded; read once
                res.image_sha256 = hashlib.sha256(data).hexdigest()
                rgb = decode_image(data, str(image))
                del data
            else:
                rgb = np.asarray(image)
                if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3 or min(rgb.shape[:2]) < 8:
                    raise ImageError(f"frame of {rgb.dtype} {rgb.shape} is not an RGB image")
                res.image_sha256 = hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest()
        except LeukEdgeError as exc:
            res.error = exc.one_line()
            res.timings = {"total": (time.perf_counter() - t0) * 1000}
            return res
        t["decode"] = time.perf_counter()
        q = check_quality(rgb, self.quality_cfg)
        res.quality, res.quality_details = q.status, q.to_dict()
        t["quality"] = time.perf_counter()
        cap = self.spec.preprocess.capture
        if cap is not None and cap.magnification:
            self._screen_tiles(res, rgb, heatmap, t)
            return self._decide(res, t, t0)
        shown = preprocess_uint8(rgb, self.spec.preprocess)
        x = normalize(shown, self.spec.preprocess)
        t["preprocess"] = time.perf_counter()
        out = self._run(x)
        t["inference"] = time.perf_counter()
        probs = np.asarray(out["probability"], np.float64).reshape(-1)
        res.probability = float(self.spec.positive_probability(probs))
        if self.spec.task == "subtype":
            res.probabilities = {c: float(p) for c, p in zip(self.spec.class_names, probs)}
        res.image = shown
        if heatmap and "cam" in out:
            res.heatmap = normalise(out["cam"], (shown.shape[1], shown.shape[0]))
            res.heatmap_rgb = colorize(res.heatmap)
        t["heatmap"] = time.perf_counter()
        gate = self.release.ood
        if gate is not None:
            res.ood, score, details = gate.check(gate.vector(out), rgb)
            res.ood_score, res.ood_details = round(score, 4), details
        t["ood"] = time.perf_counter()
        return self._decide(res, t, t0)

    def _decide(self, res: Screening, t: dict, t0: float) -> Screening:
        """The decision from the gates and the probability, and the stage timings."""
        if res.quality != "ok":
            res.rule_in = not res.ood and self.quality_cfg.rules_in(res.quality, res.probability, self.threshold)
            res.decision = self.spec.decide(res.probability, self.threshold) if res.rule_in else RETAKE
        elif res.ood:
            res.decision = OOD
        elif self.in_grey_zone(res.probability):
            res.borderline, res.decision = True, RETAKE
        else:
            res.decision = self.spec.decide(res.probability, self.threshold)
        prev = t0
        for k, v in t.items():
            res.timings[k] = round((v - prev) * 1000, 3)
            prev = v
        res.timings["total"] = round((prev - t0) * 1000, 3)
        return res
