"""A phone's full-resolution eyepiece photo: answered, flagged or misread? (validation; docs/captures.md 18)

For ``n`` validation smears of a release's split (spread evenly), the eyepiece photo (level 1) is
upsampled k = 1, 2, 4, 6, 8 times (the ``resolution`` family: a 12 MP phone gives k ~ 6) and
screened through the release's Screener like ``leukedge predict``. ``--min-scale`` replaces the
spec's ``preprocess.capture.min_scale`` in memory (the releases before 2026-12-07 had 0.5, which
leaves k > 2 photos at k/2 times the training cell size). Prints correct / retake / flagged / wrong /
missed per k and the median measured red-cell diameter and rescale factor. ~2 min for 40 smears.

    python scripts/experiments/phone_resolution.py models/<name> [--n 40] [--min-scale 0.5]
"""
from __future__ import annotations

import argparse


def main(argv=None) -> int:
    import dataclasses

    import numpy as np

    from leukedge.benchmarks.captures import pick_rows
    from leukedge.capture import crop_fov, magnification_estimate
    from leukedge.capture_sim import FAMILIES, apply_capture
    from leukedge.edge_app.inference import Screener, load_release
    from leukedge.imageio import load_image
    from leukedge.split import read_manifest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("release")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--min-scale", type=float, default=None)
    ap.add_argument("--data", default="../shared/data/aria-all")
    a = ap.parse_args(argv)
    rel = load_release(a.release)
    if a.min_scale is not None:
        cap = dataclasses.replace(rel.spec.preprocess.capture, min_scale=a.min_scale)
        rel.spec = dataclasses.replace(rel.spec, preprocess=rel.spec.preprocess.replace(capture=cap))
    cap = rel.spec.preprocess.capture
    scr = Screener(rel, num_threads=1)
    rows = pick_rows([r for r in read_manifest(rel.folder / "split.csv", a.data) if r["split"] == "val"], a.n)
    ks = (1, 2, 4, 6, 8)
    out: dict[int, list] = {k: [] for k in ks}
    for i, r in enumerate(rows):
        eye = FAMILIES["eyepiece"].apply(load_image(r["abspath"]), 1, np.random.default_rng(i))
        pos = r["class"] != "Benign"
        for k in ks:
            img = eye if k == 1 else apply_capture("resolution", eye, k)
            s = scr.screen_image(img, heatmap=False)
            f, d = magnification_estimate(crop_fov(img)[0], cap)
            o = ("flagged" if s.ood else "retake" if s.decision == "retake"
                 else "correct" if (s.decision == "positive") == pos else "missed" if pos else "wrong")
            out[k].append((o, d or 0.0, f))
    print(f"{rel.name}, min_scale {cap.min_scale}, {len(rows)} validation smears, eyepiece level 1 photos")
    print(f"{'k':>3} {'photo px':>12} {'correct':>8} {'retake':>7} {'flagged':>8} {'wrong':>6} {'missed':>7} "
          f"{'cell px':>8} {'rescale':>8}")
    for k in ks:
        o = [x[0] for x in out[k]]
        h, w = eye.shape[0] * k, eye.shape[1] * k
        print(f"{k:>3} {f'{w}x{h}':>12} " + " ".join(f"{o.count(c):>{n}}" for c, n in
              (("correct", 8), ("retake", 7), ("flagged", 8), ("wrong", 6), ("missed", 7)))
              + f" {np.median([x[1] for x in out[k]]):8.1f} {np.median([x[2] for x in out[k]]):8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
