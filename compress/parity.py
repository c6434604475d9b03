"""Parity: does the edge file behave like the model that was evaluated?

:func:`compare` scores the same images with a reference (usually the float32 TFLite, or the
Keras run) and a candidate (int8, pruned int8...) and reports, for the binary leukemia
decision at the spec's threshold: each metric for both models, the paired delta with a
bootstrap 95% CI, agreement of decisions, McNemar's test, mean and max |p_ref - p_cand|,
calibration error of both, per-class results for subtype models, and heatmap parity
(per-image Pearson correlation of the two Grad-CAM maps and IoU of their top-20% regions).
:class:`Gates` decides pass/fail. The CLI, the release reports and the tests all call it.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from leukedge import metrics as M
from leukedge.data import scan
from leukedge.errors import ConfigError, DataError, ImageError, did_you_mean
from leukedge.fileio import sha256_file
from leukedge.imageio import load_image
from leukedge.predictors import load_predictor
from leukedge.preprocess import preprocess
from leukedge.progress import progress
from leukedge.spec import ModelSpec

log = logging.getLogger(__name__)

SCHEMA = 1
TOP_FRACTION = 0.2


@dataclass
class Gates:
    """Parity gates (limits on candidate-vs-reference differences).

    Attributes:
        max_delta_accuracy: |delta accuracy| allowed (1 percentage point).
        max_delta_sensitivity: |delta sensitivity (recall of leukemia)| allowed.
        max_delta_roc_auc: |delta ROC-AUC| allowed.
        min_agreement: fraction of images with the same decision at the threshold.
        min_heatmap_correlation: mean per-image Pearson correlation of the Grad-CAM maps.
    """

    max_delta_accuracy: float = 0.01
    max_delta_sensitivity: float = 0.01
    max_delta_roc_auc: float = 0.005
    min_agreement: float = 0.99
    min_heatmap_correlation: float = 0.9

    @classmethod
    def parse(cls, items: list[str] | None) -> "Gates":
        """``["max_delta_accuracy=0.02", ...]`` -> Gates (short names without max_/min_ work too)."""
        g = cls()
        names = {f.name for f in dataclasses.fields(cls)}
        short = {n.split("_", 1)[1]: n for n in names}
        for item in items or []:
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            key = short.get(key, key)
            if not sep or key not in names:
                raise ConfigError(f"bad gate '{item}'", "use NAME=VALUE with NAME " + did_you_mean(key, names))
            try:
                setattr(g, key, float(value))
            except ValueError:
                raise ConfigError(f"gate {key}: '{value}' is not a number") from None
        return g


@dataclass
class GateResult:
    name: str
    value: float | None
    limit: float
    rule: str      # "<=" on |value| or ">="
    passed: bool
    evaluated: bool = True


class ParityData:
    """The images both models score: paths and folder classes, preprocessed once per spec."""

    def __init__(self, paths: list[str], classes: list[str], split: str = "test", names: list[str] | None = None):
        if len(paths) != len(classes) or (names is not None and len(names) != len(paths)):
            raise ValueError("paths and classes differ in length")
        if not paths:
            raise DataError("no images to compare the models on")
        self.paths = [str(p) for p in paths]
        #: how records name each image: its path inside the dataset (``Benign/x.jpg``), never a machine's
        self.names = list(names) if names is not None else [Path(p).name for p in self.paths]
        self.classes = list(classes)
        self.split = split
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._outputs: dict[tuple, tuple[object, dict]] = {}

    @classmethod
    def from_manifest(cls, rows: list[dict], split: str = "test") -> "ParityData":
        """From ``read_manifest(csv, data_dir)`` rows (``abspath``), one split."""
        chosen = [r for r in rows if r["split"] == split]
        if not chosen:
            raise DataError(f"the split manifest has no '{split}' rows")
        return cls([r["abspath"] for r in chosen], [r["class"] for r in chosen], split, [r["path"] for r in chosen])

    @classmethod
    def from_folder(cls, data_dir) -> "ParityData":
        """Every image of every class folder (``--all``)."""
        recs = scan(data_dir)
        return cls([r.path for r in recs], [r.cls for r in recs], "all", [r.relpath for r in recs])

    def images(self, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
        """(float32 batch, mask of readable images) preprocessed with ``spec``; cached."""
        key = repr(spec.preprocess)
        if key not in self._cache:
            s = spec.preprocess.input_size
            xs = np.zeros((len(self.paths), s, s, 3), np.float32)
            ok = np.zeros(len(self.paths), bool)
            for i, p in enumerate(progress(self.paths, desc=f"parity: preprocessing {self.split}", unit="img")):
                try:
                    xs[i] = preprocess(load_image(p), spec.preprocess)
                    ok[i] = True
                except ImageError as exc:
                    log.warning("skipping %s", exc.one_line())
            self._cache[key] = (xs, ok)
        return self._cache[key]


    def outputs(self, predictor, x: np.ndarray, ok: np.ndarray) -> dict[str, np.ndarray]:
        """A predictor's outputs on the readable images, computed once per predictor object
        (the float32 reference is compared with several candidates)."""
        key = (id(predictor), hash(ok.tobytes()))
        hit = self._outputs.get(key)
        if hit is not None and hit[0] is predictor:
            return hit[1]
        out = run_predictor(predictor, x[ok], desc=f"parity: {predictor.name}")
        self._outputs[key] = (predictor, out)
        return out


@dataclass
class ParityResult:
    """Everything :func:`compare` measured (``to_dict`` is the parity.json content)."""

    reference: dict
    candidate: dict
    n: int
    threshold: dict
    metrics: dict                   # {metric: {reference, candidate, delta, ci95}}
    metrics_ci: dict                # {"reference": metrics_with_ci, "candidate": ...}
    agreement: float
    mcnemar: dict
    probability_diff: dict
    calibration: dict
    heatmap: dict
    gates: list[GateResult]
    gate_settings: dict
    per_class: dict | None = None
    per_image: list[dict] = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        d["schema"] = SCHEMA
        return d

    def table(self) -> str:
        """A readable gate table for the terminal."""
        lines = [f"{'gate':<26} {'value':>10} {'rule':>4} {'limit':>8}  result"]
        for g in self.gates:
            v = "n/a" if g.value is None else f"{g.value:.4f}"
            res = "PASS" if g.passed and g.evaluated else ("n/a" if not g.evaluated else "FAIL")
            lines.append(f"{g.name:<26} {v:>10} {g.rule:>4} {g.limit:>8.4f}  {res}")
        return "\n".join(lines)


# ----- scoring -----------------------------------------------------------------------------------
def describe(predictor) -> dict:
    """Name, kind, file and sha256 of a predictor (for the report)."""
    d = {"name": predictor.name, "kind": predictor.kind, "spec": predictor.spec.name,
         "backbone": predictor.spec.backbone, "task": predictor.spec.task}
    runner = getattr(predictor, "runner", None)
    if runner is not None:
        d.update(file=Path(runner.path).name, bytes=Path(runner.path).stat().st_size, sha256=sha256_file(runner.path),
                 input_dtype=np.dtype(runner.input_dtype).name)
    return d


def run_predictor(predictor, x: np.ndarray, batch_size: int = 32, desc: str = "scoring") -> dict[str, np.ndarray]:
    """Score a preprocessed batch; adds GradientTape Grad-CAM for a Keras predictor (no ``cam`` output)."""
    outs: dict[str, list] = {}
    starts = range(0, len(x), batch_size)
    for s in progress(starts, desc=desc, total=len(starts), unit="batch"):
        o = predictor.predict(x[s:s + batch_size])
        if "cam" not in o and getattr(predictor, "kind", "") == "keras":
            o["cam"] = predictor.heatmaps(x[s:s + batch_size])  # GradientTape, the spec's heatmap method
        for k in ("probability", "probabilities", "cam"):
            if k in o:
                outs.setdefault(k, []).append(np.asarray(o[k]))
    return {k: np.concatenate(v) for k, v in outs.items()}


# ----- heatmaps ----------------------------------------------------------------------------------
def cam_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two maps; None when either is constant (e.g. all zero)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    sa, sb = a.std(), b.std()
    if sa == 0 or sb == 0:
        return None
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))


def top_iou(a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION) -> float | None:
    """IoU of the top-``fraction`` cells of two maps (None when either map is constant)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return None
    k = max(1, int(math.ceil(fraction * a.size)))
    ta, tb = set(np.argsort(-a, kind="stable")[:k]), set(np.argsort(-b, kind="stable")[:k])
    return len(ta & tb) / len(ta | tb)


def _mean_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> list | None:
    """Percentile bootstrap 95% CI of a mean over images (scipy.stats.bootstrap)."""
    if values.size < 2 or np.ptp(values) == 0:
        return None
    from scipy.stats import bootstrap

    ci = bootstrap((values,), np.mean, n_resamples=n_boot, method="percentile", random_state=seed).confidence_interval
    return [float(ci.low), float(ci.high)]


def heatmap_parity(cam_ref: np.ndarray | None, cam_cand: np.ndarray | None) -> tuple[dict, list, list]:
    """Summary + per-image correlation and IoU lists (None where undefined)."""
    if cam_ref is None or cam_cand is None:
        return {"available": False, "reason": "a model has no cam output"}, [], []
    if cam_ref.shape != cam_cand.shape:
        return {"available": False, "reason": f"cam shapes differ {cam_ref.shape} vs {cam_cand.shape}"}, [], []
    corr = [cam_correlation(a, b) for a, b in zip(cam_ref, cam_cand)]
    iou = [top_iou(a, b) for a, b in zip(cam_ref, cam_cand)]
    c = np.array([v for v in corr if v is not None])
    i = np.array([v for v in iou if v is not None])
    both_zero = int(sum(1 for a, b in zip(cam_ref, cam_cand) if not a.any() and not b.any()))
    summary = {"available": True, "n": len(corr), "n_defined": int(c.size), "n_both_zero": both_zero,
               "n_one_constant": int(len(corr) - c.size - both_zero),
               "mean_correlation": float(c.mean()) if c.size else None,
               "mean_correlation_ci95": _mean_ci(c),
               "median_correlation": float(np.median(c)) if c.size else None,
               "min_correlation": float(c.min()) if c.size else None,
               "p05_correlation": float(np.percentile(c, 5)) if c.size else None,
               "mean_top20_iou": float(i.mean()) if i.size else None,
               "min_top20_iou": float(i.min()) if i.size else None,
               "cam_shape": list(cam_ref.shape[1:]), "top_fraction": TOP_FRACTION}
    return summary, corr, iou


# ----- the comparison ----------------------------------------------------------------------------
def _abs_gate(name, value, limit) -> GateResult:
    if value is None or not np.isfinite(value):
        return GateResult(name, None, limit, "<=", True, evaluated=False)
    return GateResult(name, float(value), limit, "<=", abs(value) <= limit + 1e-12)


def _min_gate(name, value, limit) -> GateResult:
    if value is None or not np.isfinite(value):
        return GateResult(name, None, limit, ">=", True, evaluated=False)
    return GateResult(name, float(value), limit, ">=", value >= limit - 1e-12)


def evaluate_gates(metrics: dict, agreement: float, heatmap: dict, gates: Gates) -> list[GateResult]:
    return [
        _abs_gate("delta_accuracy", metrics["accuracy"]["delta"], gates.max_delta_accuracy),
        _abs_gate("delta_sensitivity", metrics["recall"]["delta"], gates.max_delta_sensitivity),
        _abs_gate("delta_roc_auc", metrics["roc_auc"]["delta"], gates.max_delta_roc_auc),
        _min_gate("agreement", agreement, gates.min_agreement),
        _min_gate("heatmap_correlation", heatmap.get("mean_correlation"), gates.min_heatmap_correlation),
    ]


def binary_truth(classes: list[str], spec: ModelSpec) -> np.ndarray:
    return np.array([0 if c == spec.negative_class else 1 for c in classes], dtype=int)


def candidate_record(res: ParityResult, **extra) -> dict:
    """A candidate's parity in brief (``extra`` names the candidate), for :func:`closest`."""
    return {**extra, "passed": res.passed, "failed": [g.name for g in res.failed],
            "gates": {g.name: g.value for g in res.gates}, "agreement": res.agreement,
            "mean_abs_dp": res.probability_diff["mean_abs"]}


def closest(candidates: list[dict]) -> dict:
    """The :func:`candidate_record` closest to the reference: passes the gates, then fewest
    failed gates, then highest agreement, then lowest mean ``|p_ref - p_cand|`` (the first on ties)."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    return max(candidates, key=lambda a: (a["passed"], -len(a["failed"]), a["agreement"], -a["mean_abs_dp"]))


def compare(reference, candidate, data: ParityData, gates: Gates | None = None, n_boot: int = 1000,
            seed: int = 0, keep_per_image: bool = True) -> ParityResult:
    """Compare two predictors on the same images.

    Args:
        reference: a :class:`leukedge.predictors.Predictor` (or anything ``load_predictor``
            accepts: a .tflite, a release folder, a run folder).
        candidate: the same for the model under test.
        data: the images (:class:`ParityData`).
        gates: limits (default :class:`Gates`).
        n_boot: bootstrap replicates for the CIs.
        seed: bootstrap seed.
        keep_per_image: keep per-image probabilities and heatmap scores in the result.

    Raises:
        DataError: no image readable; ConfigError: the two models' tasks or classes differ.
    """
    gates = gates or Gates()
    ref = reference if hasattr(reference, "predict") else load_predictor(reference)
    cand = candidate if hasattr(candidate, "predict") else load_predictor(candidate)
    rs, cs = ref.spec, cand.spec
    if (rs.task, list(rs.class_names)) != (cs.task, list(cs.class_names)):
        raise ConfigError(f"the models differ in task/classes ({rs.task} {rs.class_names} vs "
                          f"{cs.task} {cs.class_names})", "compare two exports of the same model")
    xr, okr = data.images(rs)
    xc, okc = (xr, okr) if repr(rs.preprocess) == repr(cs.preprocess) else data.images(cs)
    ok = okr & okc
    if not ok.any():
        raise DataError("none of the images could be read")
    errors = {p: "unreadable" for p, good in zip(data.names, ok) if not good}
    out_r = data.outputs(ref, xr, ok)
    out_c = data.outputs(cand, xc, ok)
    classes = [c for c, good in zip(data.classes, ok) if good]
    paths = [p for p, good in zip(data.names, ok) if good]  # as records name them (inside the dataset)
    y = binary_truth(classes, rs)
    pr, pc = out_r["probability"].astype(np.float64), out_c["probability"].astype(np.float64)
    tr, tc = float(rs.threshold), float(cs.threshold)
    dr, dc = (pr >= tr).astype(int), (pc >= tc).astype(int)
    metrics = M.paired_delta(y, pr, pc, tr, n_boot=n_boot, seed=seed, threshold_cand=tc)
    metrics_ci = {"reference": M.metrics_with_ci(y, pr, tr, n_boot, seed),
                  "candidate": M.metrics_with_ci(y, pc, tc, n_boot, seed)}
    agreement = float(np.mean(dr == dc))
    diff = np.abs(pr - pc)
    prob_diff = {"mean_abs": float(diff.mean()), "max_abs": float(diff.max()),
                 "p95_abs": float(np.percentile(diff, 95)), "n_disagree": int(np.sum(dr != dc))}
    calibration = {"reference_ece": M.expected_calibration_error(y, pr), "candidate_ece": M.expected_calibration_error(y, pc)}
    calibration["delta_ece"] = calibration["candidate_ece"] - calibration["reference_ece"]
    heat, corr, iou = heatmap_parity(out_r.get("cam"), out_c.get("cam"))
    per_class = None
    if rs.task == "subtype":
        ys = np.array([rs.class_names.index(c) for c in classes])
        mr = M.multiclass_metrics(ys, out_r["probabilities"], rs.class_names, n_boot, seed)
        mc = M.multiclass_metrics(ys, out_c["probabilities"], cs.class_names, n_boot, seed)
        per_class = {"reference": mr, "candidate": mc,
                     "argmax_agreement": float(np.mean(out_r["probabilities"].argmax(1) == out_c["probabilities"].argmax(1))),
                     "delta_accuracy": mc["accuracy"]["value"] - mr["accuracy"]["value"],
                     "delta_recall": {n: mc["per_class"][n]["recall"] - mr["per_class"][n]["recall"] for n in rs.class_names}}
    per_image = []
    if keep_per_image:
        for i, p in enumerate(paths):
            per_image.append({"path": p, "class": classes[i], "y": int(y[i]), "p_reference": float(pr[i]),
                              "p_candidate": float(pc[i]), "cam_correlation": corr[i] if corr else None,
                              "top20_iou": iou[i] if iou else None})
    result = ParityResult(
        reference=describe(ref), candidate=describe(cand), n=int(len(y)),
        threshold={"reference": tr, "candidate": tc}, metrics=metrics, metrics_ci=metrics_ci,
        agreement=agreement, mcnemar=M.mcnemar(y, dr, dc), probability_diff=prob_diff, calibration=calibration,
        heatmap=heat, gates=evaluate_gates(metrics, agreement, heat, gates), gate_settings=asdict(gates),
        per_class=per_class, per_image=per_image, errors=errors,
        data={"split": data.split, "n_images": len(data.paths), "n_positive": int(y.sum()), "n_negative": int((1 - y).sum()),
              "n_boot": n_boot, "seed": seed})
    log.info("parity %s vs %s on %d images: %s", cand.name, ref.name, result.n, "PASS" if result.passed else
             "FAIL (" + ", ".join(g.name for g in result.failed) + ")")
    return result
