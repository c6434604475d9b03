"""Would a release's OOD gate separate the lymphocyte crops if it read `ood_map`? (no re-release needed)

Adds the `ood_map` output to a copy of the release's int8 file (`leukedge.compress.ood_map`), scores
it on the field fit's views (300 training and 393 validation smears x 4), the test split, the 1,012
lymphocyte crops and half of the validation smears under white balance -0.3 ... +0.3 (as tiles when
the spec screens tiles), then fits the gate on the pooled map (mean + spread), its mean, its spread
and the pooled `features` with 8 / 32 / 128 PCA directions and prints the flag rates (features or
image statistics at margin 1.25 and 1.5; by the features alone in brackets). DenseNet201: ~10 min
on 2 cores. docs/captures.md section 14.

    python scripts/experiments/ood_map_study.py models/<name> [cache.npz]
"""
from __future__ import annotations

import glob
import os
import sys
import time

import numpy as np

from leukedge.compress.ood_map import add_ood_output
from leukedge.edge_app.calibrate import TRAIN_LIMIT, _subsample, split_paths
from leukedge.edge_app.inference import load_release
from leukedge.edge_app.ood import gate_image, image_stats
from leukedge.edge_app.ood_views import FieldViews, capture_views, collect_views, field_views, identity_views
from leukedge.runtime import LiteRunner


class W:
    """A runner whose ``features`` are the pooled map (mean, spread) followed by the pooled features."""

    def __init__(self, path):
        self.r = LiteRunner(path, 2)
    def run(self, x):
        o = self.r.run(x)
        m = o["ood_map"].reshape(-1, o["ood_map"].shape[-1])
        return {"features": np.concatenate([m.mean(0), m.std(0), o["features"].reshape(-1)])}


def collect(model, data="../shared/data/aria-all"):
    import tempfile
    rel = load_release(model)
    d, info = add_ood_output(rel.model_path.read_bytes())
    print(info, flush=True)
    tmp = os.path.join(tempfile.mkdtemp(), f"{rel.name}.ood.tflite")
    with open(tmp, "wb") as fh:
        fh.write(d)
    r = W(tmp)
    sp = split_paths(f"{model}/split.csv", data)
    stats_fn = lambda rgb: image_stats(gate_image(rgb, "field"))
    pbc = sorted(glob.glob(f"{data}/../pbc-lymphocytes/**/*.jpg", recursive=True))
    cap = rel.spec.preprocess.capture
    tiles = bool(cap is not None and cap.magnification)
    z = {}
    for name, paths, views in (("train", _subsample(sp["train"], TRAIN_LIMIT), field_views(FieldViews())),
                               ("val", sp["val"], field_views(FieldViews(seed=1))), ("test", sp["test"], identity_views),
                               ("pbc", pbc, identity_views), ("wb", sp["val"][::2], capture_views(["white_balance"]))):
        t = time.time()
        f, s, dd, g = collect_views(r, rel.spec, paths, views, stats_fn, name, tiles=tiles, return_groups=True)
        z[name + "_f"], z[name + "_s"], z[name + "_d"], z[name + "_g"] = f.astype(np.float32), s, dd, g
        print(name, f.shape, f"{time.time()-t:.0f}s", flush=True)
    c = info["shape"][-1]
    z["dims"] = np.array([2 * c, z["train_f"].shape[1] - 2 * c])
    return z


def main(model="models/densenet201-binary", cache=""):
    from leukedge.edge_app.ood import fit_gate
    from leukedge.edge_app.ood_views import first_rows, view_of, view_rates

    if cache and os.path.exists(cache):
        z = dict(np.load(cache, allow_pickle=False))
    else:
        z = collect(model)
        if cache:
            np.savez(cache, **z)
    c = int(z["dims"][0]) // 2
    K = {k: z[k + "_f"].astype(np.float64) for k in ("train", "val", "test", "pbc", "wb")}
    S = {k: z[k + "_s"] for k in K}
    G = {k: z[k + "_g"] for k in K}
    ident = view_of(z["val_d"])[first_rows(G["val"])] == "identity"
    wd = view_of(z["wb_d"])[first_rows(G["wb"])]
    for name, cols in (("map mean+std", slice(0, 2 * c)), ("map mean", slice(0, c)), ("map std", slice(c, 2 * c)),
                       ("features", slice(2 * c, None))):
        for k in (8, 32, 128):
            for margin in (1.25, 1.5):
                g = fit_gate(K["train"][:, cols], K["val"][:, cols], S["train"][first_rows(G["train"])],
                             S["val"][first_rows(G["val"])], n_components=k, image_margin=margin)

                def r(key, sel=None):
                    return view_rates(g, K[key][:, cols], S[key], G[key], sel)
                v, t, p, w = r("val", ident), r("test"), r("pbc"), r("wb", wd == "white_balance@0.3")
                print(f"{name:13s} k={k:3d} margin {margin}: val {v['flagged']:.3f} test {t['flagged']:.3f} "
                      f"({t['flagged_by_features']:.3f}) crops {p['flagged']:.3f} ({p['flagged_by_features']:.3f}) "
                      f"warm+0.3 {w['flagged']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
