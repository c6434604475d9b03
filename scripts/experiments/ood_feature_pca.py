"""Can a release's OOD feature gate separate the lymphocyte crops with more or fewer PCA directions?

Scores the release's int8 file once (the field fit's views: 300 training smears x 4, 393 validation
smears x 4, the test split, the 1,012 lymphocyte crops; ~4 min for DenseNet201 on 2 cores;
`_ood_study.collect`), then fits the gate (`leukedge.edge_app.ood.fit_gate`, threshold at the 99th
percentile of the validation views, image margin 1.25) on what the release's gate reads with
8 ... 512 directions and prints the flag rates per photo: validation, test, and the crops split in
two halves (choose on one, read the other). A release with the tile screen is scored as
`calibrate-ood` does (every usable tile, the field rule).

    python scripts/experiments/ood_feature_pca.py [models/<name>] [cache.npz]
"""
from __future__ import annotations

import sys

from _ood_study import Study, collect


class GateInput:
    """The release's runner, returning as ``features`` what its OOD gate reads."""

    def __init__(self, runner, gate):
        self.runner, self.gate = runner, gate

    def run(self, x):
        return {"features": self.gate.vector(self.runner.run(x))}


def main(model: str = "models/densenet201-binary", cache: str = "") -> int:
    from leukedge.edge_app.inference import load_release, make_runner

    rel = load_release(model)
    st = Study(collect(GateInput(make_runner(rel.model_path, 2), rel.ood), rel, cache=cache))
    print(f"{model} (gate reads {rel.ood.feature_input}): flagged per photo "
          "(features or image, then the features alone)")
    for k in (8, 16, 32, 64, 128, 256, 512):
        g = st.fit(n_components=k)
        print(f"  {k:3d} directions: {st.line(st.row(g))}; by the features alone: "
              f"{st.line(st.row(g, by='flagged_by_features'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
