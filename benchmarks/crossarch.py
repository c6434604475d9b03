"""Do a ``.tflite``'s outputs agree across machines? Run, save and compare (x86-64 vs aarch64).

``benchmarks/qemu_aarch64.sh`` calls this module on both sides (it needs only numpy, LiteRT
and LeukEdge's core, so it runs inside the emulated arm64 root too)::

    python -m leukedge.benchmarks.crossarch prepare MODEL.tflite INPUTS_DIR IMAGE...
    python -m leukedge.benchmarks.crossarch run MODEL.tflite INPUTS_DIR OUT.npz
    python -m leukedge.benchmarks.crossarch compare REF.npz CAND.npz [--json OUT]

Every output the runtime returns (:meth:`LiteRunner.run`) has a kind, and each kind its own
tolerance (:class:`Tolerance`):

- ``quantized``: a file output stored as an integer tensor (int8 ``logit``, ``features``;
  the file's own sigmoid, which the runtime returns as ``probability_raw``): max difference
  in quantization steps of that tensor (default <= 2 steps).
- ``heatmap``: the float ``cam`` output (the Grad-CAM branch runs in float): per image,
  max absolute difference <= 2e-3 and, for maps whose range (max - min) is at least 0.05,
  Pearson correlation >= 0.99 (on a flatter map a few 1e-4 of noise are a large share of
  it; the shipped releases' maps span 0.005-0.8). Measured on emulated Cortex-A72/A76 and
  Neoverse-N1 cores: up to 5e-4 (summation order of float kernels), 4x below the bound.
- ``float``: any other float file output (a float32 file): max absolute difference <= 1e-4.
- ``derived``: computed by the runtime, not stored in the file (``probability`` from
  ``logit``): per image, max absolute difference <= the function's Lipschitz bound (0.5
  for a sigmoid or softmax of the logit) times that image's own ``logit`` difference,
  + 1e-6. Identical logits must give identical probabilities, so a wrong probability
  fails even when every stored tensor passes.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from leukedge.errors import LeukEdgeError, ModelError
from leukedge.preprocess import PreprocessConfig, preprocess_file
from leukedge.runtime import LiteRunner, probability_from_logit
from leukedge.spec import ModelSpec

log = logging.getLogger(__name__)

HEATMAP_OUTPUTS = ("cam",)
#: Outputs the runtime computes from another output: name -> (source output, Lipschitz bound).
DERIVED = {"probability": ("logit", 0.5)}
META_KEY = "_kinds"


@dataclass
class Tolerance:
    """What counts as "the same output" on another machine (see the module docstring)."""

    int8_steps: float = 2.0
    float_abs: float = 1e-4
    heatmap_abs: float = 2e-3
    heatmap_min_r: float = 0.99
    heatmap_r_min_range: float = 0.05
    derived_extra: float = 1e-6


def output_kinds(runner: LiteRunner) -> dict[str, dict]:
    """Kind (and quantization step) of every output :meth:`LiteRunner.run` returns, by name."""
    raw = {name: np.zeros(tuple(d["shape"])[1:], np.float32) for name, d in runner.outputs.items()}
    returned = probability_from_logit(raw)
    kinds: dict[str, dict] = {}
    for name, arr in returned.items():
        tensor = next((t for t, a in raw.items() if a is arr), None)
        if tensor is None:
            source, lipschitz = DERIVED.get(name, (None, 1.0))
            kinds[name] = {"kind": "derived", "source": source, "lipschitz": lipschitz}
            continue
        d = runner.outputs[tensor]
        scale = float(d["quantization"][0])
        if np.dtype(d["dtype"]).kind in "iu" and scale > 0:
            kinds[name] = {"kind": "quantized", "tensor": tensor, "step": scale}
        else:
            kinds[name] = {"kind": "heatmap" if name in HEATMAP_OUTPUTS else "float", "tensor": tensor}
    return kinds


def run_outputs(model: str | Path, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``model`` on preprocessed images; returns ``img###/<output>`` arrays plus the kinds."""
    runner = LiteRunner(model, num_threads=1)
    res: dict[str, np.ndarray] = {}
    for i, x in enumerate(inputs):
        for name, v in runner.run(x).items():
            res[f"img{i:03d}/{name}"] = np.asarray(v)
    res[META_KEY] = np.array(json.dumps(output_kinds(runner)))
    return res


def _allowed(name: str, kinds: dict, tol: Tolerance) -> float:
    """Max absolute difference allowed for a stored (not heatmap, not derived) output."""
    k = kinds[name]
    return tol.int8_steps * k["step"] if k["kind"] == "quantized" else tol.float_abs


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() < 1e-12 or b.std() < 1e-12:
        return None  # a constant map: correlation undefined, the max difference decides
    return float(np.corrcoef(a, b)[0, 1])


def compare(ref: dict[str, np.ndarray], cand: dict[str, np.ndarray], tol: Tolerance | None = None) -> dict:
    """Compare two :func:`run_outputs` results; ``result["pass"]`` says whether every output agrees.

    Raises:
        LeukEdgeError: the two results hold different images or outputs.
    """
    tol = tol or Tolerance()
    keys_a, keys_b = set(ref) - {META_KEY}, set(cand) - {META_KEY}
    if keys_a != keys_b:
        raise LeukEdgeError(f"the two runs hold different outputs: {sorted(keys_a ^ keys_b)[:6]}",
                            "run the same model on the same inputs on both machines")
    kinds = json.loads(str(ref[META_KEY]))
    per: dict[str, dict] = {}
    diffs: dict[str, float] = {}
    for key in sorted(keys_a):
        name = key.split("/", 1)[1]
        a, b = np.asarray(ref[key], np.float64), np.asarray(cand[key], np.float64)
        if a.shape != b.shape:
            raise LeukEdgeError(f"{key}: shape {a.shape} vs {b.shape}", "run the same model on both machines")
        k = kinds[name]
        row = per.setdefault(name, {"kind": k["kind"], "max_abs_diff": 0.0, "fraction_differing": 0.0})
        diff = diffs[key] = float(np.abs(a - b).max()) if a.size else 0.0
        row["max_abs_diff"] = max(row["max_abs_diff"], diff)
        row["fraction_differing"] = max(row["fraction_differing"], round(float((a != b).mean()), 4) if a.size else 0.0)
        if k["kind"] == "quantized":
            row["max_diff_steps"] = round(row["max_abs_diff"] / k["step"], 2)
        if k["kind"] == "heatmap" and a.size and float(a.max() - a.min()) >= tol.heatmap_r_min_range:
            r = _pearson(a, b)
            if r is not None:
                row["min_r"] = min(row.get("min_r", 1.0), round(r, 6))
    for key, diff in diffs.items():  # derived outputs: per image, against their own source's difference
        img, name = key.split("/", 1)
        k = kinds[name]
        if k["kind"] == "derived":
            source_diff = diffs.get(f"{img}/{k['source']}", 0.0)
            excess = diff - (k["lipschitz"] * source_diff + tol.derived_extra)
            per[name]["max_excess"] = max(per[name].get("max_excess", -np.inf), excess)
    for name, row in per.items():
        if row["kind"] == "derived":
            row["allowed"] = {"max_abs_diff": f"{kinds[name]['lipschitz']} x |d {kinds[name]['source']}| + "
                                              f"{tol.derived_extra:g}, per image"}
            row["pass"] = row["max_excess"] <= 0.0
        elif row["kind"] == "heatmap":
            row["allowed"] = {"max_abs_diff": tol.heatmap_abs, "min_r": tol.heatmap_min_r,
                              "min_r_applies_from_range": tol.heatmap_r_min_range}
            row["pass"] = row["max_abs_diff"] <= tol.heatmap_abs and row.get("min_r", 1.0) >= tol.heatmap_min_r
        else:
            row["allowed"] = {"max_abs_diff": _allowed(name, kinds, tol)}
            row["pass"] = row["max_abs_diff"] <= row["allowed"]["max_abs_diff"]
    images = {k.split("/", 1)[0] for k in keys_a}
    return {"images": len(images), "outputs": per, "tolerance": asdict(tol),
            "pass": all(r["pass"] for r in per.values())}


def prepare(model: str | Path, out_dir: str | Path, images: list[str]) -> list[Path]:
    """Preprocess ``images`` with the model's spec (``spec.json`` beside the file) into ``.npy`` files."""
    model, out_dir = Path(model), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_file = model.parent / "spec.json"
    if spec_file.exists():
        cfg = ModelSpec.load(spec_file).preprocess
    else:
        cfg = PreprocessConfig(input_size=LiteRunner(model).input_shape[1])
    written = []
    for i, p in enumerate(images):
        written.append(out_dir / f"img{i:03d}.npy")
        np.save(written[-1], preprocess_file(p, cfg))
    return written


def _load_inputs(folder: Path) -> list[np.ndarray]:
    files = sorted(Path(folder).glob("img*.npy"))
    if not files:
        raise LeukEdgeError(f"{folder}: no preprocessed inputs (img*.npy)", "run `crossarch prepare` first")
    return [np.load(f) for f in files]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m leukedge.benchmarks.crossarch",
                                 description="Compare a .tflite's outputs across machines.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="preprocess images with the model's spec into INPUTS/*.npy")
    p.add_argument("model"), p.add_argument("inputs"), p.add_argument("images", nargs="+")
    r = sub.add_parser("run", help="run the model on INPUTS/*.npy and save every output to OUT.npz")
    r.add_argument("model"), r.add_argument("inputs"), r.add_argument("out")
    c = sub.add_parser("compare", help="compare two saved runs; exit 1 when an output differs too much")
    c.add_argument("ref"), c.add_argument("cand"), c.add_argument("--json")
    c.add_argument("--int8-steps", type=float, default=Tolerance.int8_steps)
    c.add_argument("--float-abs", type=float, default=Tolerance.float_abs)
    c.add_argument("--heatmap-abs", type=float, default=Tolerance.heatmap_abs)
    c.add_argument("--heatmap-min-r", type=float, default=Tolerance.heatmap_min_r)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "prepare":
            print(f"{len(prepare(args.model, args.inputs, args.images))} inputs in {args.inputs}")
        elif args.cmd == "run":
            res = run_outputs(args.model, _load_inputs(Path(args.inputs)))
            np.savez(args.out, **res)
            print(platform.machine(), len(res) - 1, "arrays")
        else:
            tol = Tolerance(int8_steps=args.int8_steps, float_abs=args.float_abs, heatmap_abs=args.heatmap_abs,
                            heatmap_min_r=args.heatmap_min_r)
            with np.load(args.ref) as a, np.load(args.cand) as b:
                res = compare(dict(a), dict(b), tol)
            text = json.dumps(res, indent=2)
            print(text)
            if args.json:
                Path(args.json).write_text(text + "\n")
            return 0 if res["pass"] else 1
    except (LeukEdgeError, ModelError, OSError) as exc:
        print(f"crossarch: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
