"""Which layer should the OOD gate read? Per-channel mean and spread of EfficientNet-Lite0's residual blocks.

Scores a release's int8 file once with every tensor kept (LiteRT ``experimental_preserve_all_tensors``,
reference kernels: ~10 min on 2 cores), on the field fit's views (300 training smears x 4,
393 validation smears x 4), the test split, the 1,012 lymphocyte crops and half of the
validation smears under white balance -0.3 ... +0.3, each as the app's tiles; then fits the gate
(`leukedge.edge_app.ood.fit_gate`, 32 PCA directions, threshold at the 99th percentile of the
validation tiles) on the pooled statistics of one block at a time (and on the 1280 pooled
``features``) and prints the flag rates by the features alone, per photo under the field rule:
validation (identity views), test, the crops in two halves, warm / cool light.
Section 14 of docs/captures.md has the result; `leukedge compress` now exposes the last block
(`leukedge.compress.ood_map`).

    python scripts/experiments/ood_feature_taps.py [models/<name>] [cache.npz]
"""
from __future__ import annotations

import glob
import os
import sys

import numpy as np

BLOCKS = ("lite_b2_add", "lite_b4_add", "lite_b7_add", "lite_b10_add", "lite_b14_add")


class TapRunner:
    """LiteRT interpreter returning, as ``features``, the pooled mean/std of each block then the 1280 features."""

    def __init__(self, path):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.it = Interpreter(model_path=str(path), num_threads=2, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]
        td = self.it.get_tensor_details()
        self.taps = [next(d for d in td if d["name"].endswith(b + "/add")) for b in BLOCKS]
        self.taps.append(next(d for d in self.it.get_output_details() if d["shape"][-1] == 1280))
        self.dims = [2 * int(d["shape"][-1]) if len(d["shape"]) == 4 else int(d["shape"][-1]) for d in self.taps]

    def run(self, x):
        s, z = self.inp["quantization"]
        self.it.set_tensor(self.inp["index"], np.clip(np.round(x / s + z), -128, 127).astype(self.inp["dtype"])[None])
        self.it.invoke()
        out = []
        for d in self.taps:
            sc, zp = d["quantization"]
            a = (self.it.get_tensor(d["index"]).astype(np.float32) - zp) * sc
            a = a.reshape(-1, a.shape[-1])
            out.append(a[0] if len(a) == 1 else np.concatenate([a.mean(0), a.std(0)]))
        return {"features": np.concatenate(out)}


def collect(model: str, data: str) -> dict:
    from leukedge.edge_app.calibrate import TRAIN_LIMIT, _subsample, split_paths
    from leukedge.edge_app.inference import load_release
    from leukedge.edge_app.ood import gate_image, image_stats
    from leukedge.edge_app.ood_views import FieldViews, capture_views, collect_views, field_views, identity_views

    rel = load_release(model, allow_unsigned=True)
    runner = TapRunner(rel.model_path)
    sp = split_paths(f"{model}/split.csv", data)
    pbc = sorted(glob.glob(f"{data}/../pbc-lymphocytes/**/*.jpg", recursive=True))
    stats_fn = lambda rgb: image_stats(gate_image(rgb, "field"))  # noqa: E731
    z = {"dims": np.array(runner.dims)}
    for name, paths, views in (("train", _subsample(sp["train"], TRAIN_LIMIT), field_views(FieldViews())),
                               ("val", sp["val"], field_views(FieldViews(seed=1))),
                               ("test", sp["test"], identity_views), ("pbc", pbc, identity_views),
                               ("wb", sp["val"][::2], capture_views(["white_balance"]))):
        f, s, d, g = collect_views(runner, rel.spec, paths, views, stats_fn, name, tiles=True, return_groups=True)
        z.update({f"{name}_f": f.astype(np.float32), f"{name}_s": s, f"{name}_d": d, f"{name}_g": g})
    return z


def main(model: str = "models/efficientnet-lite0-subtype", cache: str = "", data: str = "../shared/data/aria-all") -> int:
    from leukedge.edge_app.ood import fit_gate
    from leukedge.edge_app.ood_views import first_rows, view_of, view_rates

    if cache and os.path.exists(cache):
        z = dict(np.load(cache, allow_pickle=False))
    else:
        z = collect(model, data)
        if cache:
            np.savez(cache, **z)
    off = np.r_[0, np.cumsum(z["dims"])]
    K = {k: z[f"{k}_f"].astype(np.float64) for k in ("train", "val", "test", "pbc", "wb")}
    G = {k: z[f"{k}_g"] for k in K}
    S = {k: z[f"{k}_s"] for k in K}
    ident = view_of(z["val_d"])[first_rows(G["val"])] == "identity"
    wb = view_of(z["wb_d"])[first_rows(G["wb"])]
    half = np.arange(int(first_rows(G["pbc"]).sum())) % 2 == 0
    print(f"{model}: flagged by the features alone (32 directions), per photo")
    for i, name in enumerate(BLOCKS + ("features",)):
        cols = slice(off[i], off[i + 1])
        g = fit_gate(K["train"][:, cols], K["val"][:, cols], n_components=32)

        def rate(key, sel=None):
            return view_rates(g, K[key][:, cols], S[key], G[key], sel)["flagged_by_features"]
        print(f"  {name:13s} val {rate('val', ident):.3f} test {rate('test'):.3f} crops {rate('pbc', half):.3f}/"
              f"{rate('pbc', ~half):.3f} warm+0.3 {rate('wb', wb == 'white_balance@0.3'):.3f} "
              f"cool-0.3 {rate('wb', wb == 'white_balance@-0.3'):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
