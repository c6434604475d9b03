"""Full-resolution photos: rescale to the training cell size, or shrink only as far as the tolerance needs?

With ``min_scale`` 0.05 a photo whose cells are k times the training size is shrunk to exactly the
training cell size (``leukedge.capture.magnification_estimate``), which can leave a field a little
larger than one model input, screened as overlapping tiles. The alternative measured here
("fewest"): shrink by the smallest factor that still puts the cells within the tolerance (cells at
``cell_diameter / (1 + tolerance)``), never below one model input, so such a photo becomes one input,
as a lab photo is. For ``n`` validation smears (spread evenly), the lab photo upsampled k = 2, 4, 6
times (the ``resolution`` family) is screened with each rule; prints correct / retake / flagged /
wrong / missed per rule and k. docs/captures.md 18. ~5 min for 100 smears.

    python scripts/experiments/shrink_rule.py models/<name> [--n 100]
"""
from __future__ import annotations

import argparse


def main(argv=None) -> int:
    import numpy as np

    import leukedge.capture as capture
    from leukedge.benchmarks.captures import pick_rows
    from leukedge.capture_sim import apply_capture
    from leukedge.edge_app.inference import Screener, load_release
    from leukedge.imageio import load_image
    from leukedge.split import read_manifest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("release")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--data", default="../shared/data/aria-all")
    a = ap.parse_args(argv)
    exact = capture.magnification_estimate

    def fewest(rgb, cfg):
        f, d = exact(rgb, cfg)
        if d and f < 1.0:
            f = max(cfg.cell_diameter / (d * (1.0 + cfg.scale_tolerance)), cfg.min_scale)
        return f, d

    rel = load_release(a.release)
    scr = Screener(rel, num_threads=1)
    rows = pick_rows([r for r in read_manifest(rel.folder / "split.csv", a.data) if r["split"] == "val"], a.n)
    ks = (1, 2, 4, 6)
    out = {(rule, k): [] for rule in ("exact", "fewest") for k in ks}
    for r in rows:
        rgb, pos = load_image(r["abspath"]), r["class"] != "Benign"
        for k in ks:
            img = rgb if k == 1 else apply_capture("resolution", rgb, k)
            for rule, fn in (("exact", exact), ("fewest", fewest)):
                capture.magnification_estimate = fn
                s = scr.screen_image(img, heatmap=False)
                out[(rule, k)].append("flagged" if s.ood else "retake" if s.decision == "retake" else
                                      "correct" if (s.decision == "positive") == pos else "missed" if pos else "wrong")
    capture.magnification_estimate = exact
    print(f"{rel.name}, {len(rows)} validation smears (lab photos upsampled k times)")
    print(f"{'rule':>7} {'k':>2} {'correct':>8} {'retake':>7} {'flagged':>8} {'wrong':>6} {'missed':>7}")
    for (rule, k), o in out.items():
        print(f"{rule:>7} {k:>2} " + " ".join(f"{o.count(c):>{w}}" for c, w in
                                              (("correct", 8), ("retake", 7), ("flagged", 8), ("wrong", 6), ("missed", 7))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
