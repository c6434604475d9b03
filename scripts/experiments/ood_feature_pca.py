"""Can a release's OOD feature gate separate the lymphocyte crops with more or fewer PCA directions?

Scores the release's int8 file once (the field fit's views: 300 training smears x 4, 393 validation
smears x 4, the test split, the 1,012 lymphocyte crops; ~4 min for DenseNet201 on 2 cores), then
fits the gate (`leukedge.edge_app.ood.fit_gate`, threshold at the 99th percentile of the validation
views, image margin 1.25) with 8 ... 512 directions and prints the flag rates per photo: validation,
test, and the crops split in two halves (choose on one, read the other). A release with the tile
screen is scored as `calibrate-ood` does (every usable tile, the field rule).

    python scripts/experiments/ood_feature_pca.py [models/<name>]
"""
from __future__ import annotations

import glob
import sys

import numpy as np

from leukedge.edge_app.calibrate import TRAIN_LIMIT, _subsample, split_paths
from leukedge.edge_app.inference import load_release, make_runner
from leukedge.edge_app.ood import fit_gate, gate_image, image_stats
from leukedge.edge_app.ood_views import FieldViews, collect_views, field_views, first_rows, identity_views, view_rates


def main(model: str = "models/densenet201-binary", data: str = "../shared/data/aria-all") -> int:
    rel = load_release(model)
    runner = make_runner(rel.model_path, 2)
    sp = split_paths(f"{model}/split.csv", data)
    stats_fn = lambda rgb: image_stats(gate_image(rgb, "field"))  # noqa: E731
    pbc = sorted(glob.glob(f"{data}/../pbc-lymphocytes/**/*.jpg", recursive=True))
    cap = rel.spec.preprocess.capture
    tiles = bool(cap is not None and cap.magnification)
    z = {}
    for name, paths, views in (("train", _subsample(sp["train"], TRAIN_LIMIT), field_views(FieldViews())),
                               ("val", sp["val"], field_views(FieldViews(seed=1))), ("test", sp["test"], identity_views),
                               ("pbc", pbc, identity_views)):
        z[name] = collect_views(runner, rel.spec, paths, views, stats_fn, name, tiles=tiles, return_groups=True)
    (trf, trs, _, trg), (vaf, vas, vad, vag), (tef, tes, _, teg), (pf, ps, _, pg) = (z[k] for k in ("train", "val", "test", "pbc"))
    vfirst, pfirst = first_rows(vag), first_rows(pg)
    ident = vad[vfirst] == "identity"
    half = np.arange(int(pfirst.sum())) % 2 == 0
    print(f"{model} ({'tiles' if tiles else 'one input'}): flagged (features or image; features alone in brackets)")
    for k in (8, 16, 32, 64, 128, 256, 512):
        g = fit_gate(trf, vaf, trs[first_rows(trg)], vas[vfirst], n_components=k, percentile=99.0, image_margin=1.25)

        def rate(f, s, grp, sel=None):
            r = view_rates(g, f, s, grp, sel)
            return f"{r['flagged']:.3f} ({r['flagged_by_features']:.3f})"
        print(f"  {k:3d} directions: val {rate(vaf, vas, vag, ident)}, test {rate(tef, tes, teg)}, "
              f"crops even {rate(pf, ps, pg, half)}, odd {rate(pf, ps, pg, ~half)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
