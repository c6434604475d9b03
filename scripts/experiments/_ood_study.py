"""Shared by the OOD-gate studies in this folder (ood_feature_pca.py, ood_feature_taps.py,
ood_map_study.py): the image sets they score and how they read the flag rates back.

The sets are the ones ``leukedge app calibrate-ood`` fits and checks on: 300 training smears and
the 393 validation smears with 3 field views each (seeds 0 and 1), the test split, the 1,012
lymphocyte crops; ``warm`` adds half of the validation smears under every moderate white balance.
Each set is scored like the app (tiles when the spec screens tiles).
"""
from __future__ import annotations

import glob
import os

import numpy as np

SETS = ("train", "val", "test", "pbc")


def collect(runner, rel, data: str = "../shared/data/aria-all", warm: bool = False, cache: str = "") -> dict:
    """``{<set>_f, <set>_s, <set>_d, <set>_g}`` (features, image statistics, view names, view index
    of each row) of every set, scored with ``runner``; read from / written to ``cache`` (.npz) when given."""
    if cache and os.path.exists(cache):
        return dict(np.load(cache, allow_pickle=False))
    from leukedge.edge_app.calibrate import TRAIN_LIMIT, _subsample, split_paths
    from leukedge.edge_app.ood import gate_image, image_stats
    from leukedge.edge_app.ood_views import FieldViews, capture_views, collect_views, field_views, identity_views

    sp = split_paths(f"{rel.folder}/split.csv", data)
    pbc = sorted(glob.glob(f"{data}/../pbc-lymphocytes/**/*.jpg", recursive=True))
    cap = rel.spec.preprocess.capture
    tiles = bool(cap is not None and cap.magnification)
    sets = [("train", _subsample(sp["train"], TRAIN_LIMIT), field_views(FieldViews())),
            ("val", sp["val"], field_views(FieldViews(seed=1))), ("test", sp["test"], identity_views),
            ("pbc", pbc, identity_views)]
    if warm:
        sets.append(("wb", sp["val"][::2], capture_views(["white_balance"])))
    z = {}
    for name, paths, views in sets:
        f, s, d, g = collect_views(runner, rel.spec, paths, views, lambda rgb: image_stats(gate_image(rgb, "field")),
                                   name, tiles=tiles, return_groups=True)
        z.update({f"{name}_f": f.astype(np.float32), f"{name}_s": s, f"{name}_d": d, f"{name}_g": g})
    if cache:
        np.savez(cache, **z)
    return z


class Study:
    """Fit gates on columns of the collected features and read their flag rates per photo."""

    def __init__(self, z: dict):
        from leukedge.edge_app.ood_views import first_rows, view_of

        names = [k[:-2] for k in z if k.endswith("_f")]
        self.K = {k: np.asarray(z[f"{k}_f"], np.float64) for k in names}
        self.S = {k: z[f"{k}_s"] for k in names}
        self.G = {k: z[f"{k}_g"] for k in names}
        self.views = {k: view_of(z[f"{k}_d"])[first_rows(self.G[k])] for k in names}
        self.half = np.arange(len(self.views["pbc"])) % 2 == 0  # crops: choose on one half, read the other

    def fit(self, cols=slice(None), n_components: int = 32, image_margin: float = 1.25):
        from leukedge.edge_app.ood import fit_gate
        from leukedge.edge_app.ood_views import first_rows

        return fit_gate(self.K["train"][:, cols], self.K["val"][:, cols], self.S["train"][first_rows(self.G["train"])],
                        self.S["val"][first_rows(self.G["val"])], n_components=n_components, image_margin=image_margin)

    def row(self, gate, cols=slice(None), by: str = "flagged") -> dict:
        """The standard rows of a study, one number each (``by``: ``flagged`` by either distance, or
        ``flagged_by_features`` / ``flagged_by_image``): validation (identity views), test, the crops
        in two halves and, when collected, the validation smears under warm +0.3 / cool -0.3 light."""
        out = {"val": self.rates(gate, "val", cols, "identity")[by], "test": self.rates(gate, "test", cols)[by],
               "crops even": self.rates(gate, "pbc", cols, half=True)[by],
               "crops odd": self.rates(gate, "pbc", cols, half=False)[by]}
        if "wb" in self.K:
            out["warm+0.3"] = self.rates(gate, "wb", cols, "white_balance@0.3")[by]
            out["cool-0.3"] = self.rates(gate, "wb", cols, "white_balance@-0.3")[by]
        return out

    @staticmethod
    def line(row: dict) -> str:
        """``row`` as one printed line."""
        return " ".join(f"{k} {v:.3f}" for k, v in row.items())

    def rates(self, gate, key: str, cols=slice(None), view: str | None = None, half=None) -> dict:
        """:func:`view_rates` of set ``key`` (only its views named ``view``; crops: ``half`` True/False)."""
        from leukedge.edge_app.ood_views import view_rates

        sel = None if view is None else self.views[key] == view
        if half is not None:
            sel = self.half if half else ~self.half
        return view_rates(gate, self.K[key][:, cols], self.S[key], self.G[key], sel)
