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

import sys

import numpy as np
from _ood_study import Study, collect

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


def main(model: str = "models/efficientnet-lite0-subtype", cache: str = "") -> int:
    from leukedge.edge_app.inference import load_release

    rel = load_release(model, allow_unsigned=True)
    runner = TapRunner(rel.model_path)
    z = collect(runner, rel, warm=True, cache=cache)
    st = Study(z)
    dims = np.asarray(z["dims"]) if "dims" in z else np.asarray(runner.dims)
    off = np.r_[0, np.cumsum(dims)]
    print(f"{model}: flagged by the features alone (32 directions), per photo")
    for i, name in enumerate(BLOCKS + ("features",)):
        cols = slice(off[i], off[i + 1])
        print(f"  {name:13s} {st.line(st.row(st.fit(cols), cols, 'flagged_by_features'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
