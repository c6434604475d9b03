"""How a release's OOD gate treats rotated and flipped smears, and what would fix it.

Measured (not changed): the released gate statistics stay as they are. For real test-split
smears and the out-of-domain lymphocyte crops, the gate is run on

* each of the 8 dihedral views (rotations by quarter turns, with and without a flip);
* the features averaged over the 8 views (test-time averaging; the distance then uses the
  released threshold, which was fitted on single-view features);
* the smears after capture normalisation (``fov+reinhard``: an indication only).

Run: ``python -m leukedge.benchmarks.ood_study models/<name> [--limit N] [--json OUT]``.

``--gate-report`` instead measures the release's gate exactly as ``calibrate-ood`` reports a
new one (:func:`leukedge.edge_app.calibrate.measure_test`): flag rates of the validation and
test splits, of each of the 8 dihedral views of the test split, of the test smears under each
capture family at its moderate severities and of the lymphocyte crops, so a gate fitted
before issue 19 can be compared with a refitted one.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from leukedge.colornorm import fit_targets, normalize_color
from leukedge.data import resolve_data_dir
from leukedge.imageio import load_image
from leukedge.preprocess import preprocess
from leukedge.split import read_manifest

from .captures import pick_rows

log = logging.getLogger(__name__)


def _features(runner, spec, rgb, gate) -> np.ndarray:
    return gate.vector(runner.run(preprocess(rgb, spec.preprocess)))


def study(model, data=None, lymph=None, limit: int = 100) -> dict:
    """Flag rates per view, with averaged features and after colour normalisation."""
    from leukedge.edge_app.inference import load_release, make_runner
    from leukedge.edge_app.ood import DIHEDRAL, dihedral

    rel = load_release(model)
    gate, spec = rel.ood, rel.spec
    runner = make_runner(rel.model_path, 2)
    data = resolve_data_dir(data)
    rows = read_manifest(rel.folder / "split.csv", data)
    test = pick_rows([r for r in rows if r["split"] == "test"], limit)
    target = fit_targets(load_image(r["abspath"]) for r in pick_rows([r for r in rows if r["split"] == "train"], 100))
    lymph_dir = Path(lymph) if lymph else data.parent / "pbc-lymphocytes"
    lymph_paths = sorted(lymph_dir.rglob("*.jpg"))
    lymph_paths = [lymph_paths[i] for i in np.linspace(0, len(lymph_paths) - 1, min(limit, len(lymph_paths))).astype(int)]

    def rates(images):
        views = {k: [] for k in DIHEDRAL}
        mean_flag, norm_flag = [], []
        for rgb in images:
            feats = []
            stat_flag = gate.image_distance(gate.stats(rgb))[0] > gate.img_threshold
            for k in DIHEDRAL:
                f = _features(runner, spec, dihedral(rgb, k), gate)
                feats.append(f)
                views[k].append(bool(gate.feature_distance(f)[0] > gate.threshold) or stat_flag)
            mean_flag.append(bool(gate.feature_distance(np.mean(feats, 0))[0] > gate.threshold) or stat_flag)
            n = normalize_color(rgb, "reinhard", target)
            nf = _features(runner, spec, n, gate)
            norm_flag.append(bool(gate.check(nf, n)[0]))
        per = {k: float(np.mean(v)) for k, v in views.items()}
        any_view = float(np.mean(np.any(np.array([views[k] for k in DIHEDRAL]), axis=0)))
        return {"n": len(images), "per_view": per, "any_view": any_view,
                "non_identity_mean": float(np.mean([per[k] for k in DIHEDRAL if k != "identity"])),
                "features_averaged": float(np.mean(mean_flag)), "reinhard_normalised": float(np.mean(norm_flag))}

    return {"model": spec.name, "variant": rel.variant, "limit": limit,
            "smears": rates([load_image(r["abspath"]) for r in test]),
            "lymphocytes": rates([load_image(p) for p in lymph_paths])}


def gate_report(model, data=None, lymph=None, capture_limit: int = 60, allow_unsigned: bool = False) -> dict:
    """The release's gate measured like ``calibrate-ood`` reports it (module docstring)."""
    from leukedge.edge_app.calibrate import image_files, measure_test
    from leukedge.edge_app.inference import load_release, make_runner
    from leukedge.edge_app.ood import flag_rate
    from leukedge.edge_app.ood_views import collect_views

    rel = load_release(model, allow_unsigned=allow_unsigned)
    gate, spec = rel.ood, rel.spec
    runner = make_runner(rel.model_path, 1)
    data = resolve_data_dir(data)
    rows = read_manifest(rel.folder / "split.csv", data)
    split = {s: [r["abspath"] for r in rows if r["split"] == s] for s in ("val", "test")}
    lymph_dir = Path(lymph) if lymph else data.parent / "pbc-lymphocytes"
    out = {"model": spec.name, "fit": gate.fit_method, "image_input": gate.image_input,
           "threshold": gate.threshold, "image_threshold": gate.img_threshold, "rates": {}}
    for name, paths in (("val", split["val"]), (lymph_dir.name, [str(p) for p in image_files(lymph_dir)])):
        f, st, _ = collect_views(runner, spec, paths, stats_fn=gate.stats, desc=f"ood: {name}")
        out["rates"][name] = flag_rate(gate, f, st)
    out.update(measure_test(gate, runner, spec, split["test"], capture_limit))
    out["rates"]["test"] = out["dihedral"]["test"]["identity"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m leukedge.benchmarks.ood_study", description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--data")
    p.add_argument("--lymph")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json")
    p.add_argument("--gate-report", action="store_true",
                   help="measure the release's gate like calibrate-ood reports it (val, test, 8 views, captures, "
                        "lymphocytes)")
    p.add_argument("--capture-limit", type=int, default=60, help="--gate-report: test smears under capture families")
    p.add_argument("--allow-unsigned", action="store_true")
    a = p.parse_args(argv)
    if a.gate_report:
        doc = gate_report(a.model, a.data, a.lymph, a.capture_limit, a.allow_unsigned)
    else:
        doc = study(a.model, a.data, a.lymph, a.limit)
    text = json.dumps(doc, indent=2)
    if a.json:
        Path(a.json).write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
