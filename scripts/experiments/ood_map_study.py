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

import os
import sys
import tempfile

import numpy as np
from _ood_study import Study, collect

from leukedge.compress.ood_map import add_ood_output
from leukedge.runtime import LiteRunner


class W:
    """A runner whose ``features`` are the pooled map (mean, spread) followed by the pooled features."""

    def __init__(self, path):
        self.r = LiteRunner(path, 2)

    def run(self, x):
        o = self.r.run(x)
        m = o["ood_map"].reshape(-1, o["ood_map"].shape[-1])
        return {"features": np.concatenate([m.mean(0), m.std(0), o["features"].reshape(-1)])}


def main(model: str = "models/densenet201-binary", cache: str = "") -> int:
    from leukedge.edge_app.inference import load_release

    rel = load_release(model)
    data, info = add_ood_output(rel.model_path.read_bytes())
    tmp = os.path.join(tempfile.mkdtemp(), f"{rel.name}.ood.tflite")
    with open(tmp, "wb") as fh:
        fh.write(data)
    c = int(info["shape"][-1])
    print(f"{model}: ood_map = {info['tensor']} {info['shape']}")
    st = Study(collect(W(tmp), rel, warm=True, cache=cache))
    for name, cols in (("map mean+std", slice(0, 2 * c)), ("map mean", slice(0, c)), ("map std", slice(c, 2 * c)),
                       ("features", slice(2 * c, None))):
        for k in (8, 32, 128):
            for margin in (1.25, 1.5):
                g = st.fit(cols, k, margin)
                print(f"{name:13s} k={k:3d} margin {margin}: {st.line(st.row(g, cols))}; by the features alone: "
                      f"{st.line(st.row(g, cols, 'flagged_by_features'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
