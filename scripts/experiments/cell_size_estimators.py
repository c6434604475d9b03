"""Red-cell size estimators compared on the lab's own smears (docs/captures.md section 12).

    python scripts/experiments/cell_size_estimators.py [--data ../shared/data/aria-all]
        [--split models/efficientnet-lite0-subtype/split.csv]

For each estimator: the reference diameter (median over every 6th training smear), on the
validation smears the share unmeasurable and the share whose factor reference/diameter is off 1
by more than 25% / 40% (the lab photographs every smear at one magnification), and on every 4th
validation smear shrunk to 0.5x / 0.7x / 0.85x with the ``magnification`` capture family the
median signed log error of measured/true ratio and the share off by more than 25%.
Estimators: ``single_cells`` (until session 19: median of round single components),
``granulometry_1pass`` and ``granulometry`` (leukedge.capture.estimate_cell_diameter, now).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np

from leukedge.capture import _granulometry_diameter, cell_mask, estimate_cell_diameter
from leukedge.capture_sim import get_family
from leukedge.imageio import load_image


def single_cells(rgb: np.ndarray) -> float | None:
    """The estimator until session 19 (core/capture.py at 2c46d73), for comparison."""
    fg = cell_mask(rgb)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    ih, iw = fg.shape
    diams = []
    for i in range(1, n):
        x, y, bw, bh, a = stats[i]
        if a < 12 or x == 0 or y == 0 or x + bw >= iw or y + bh >= ih or max(bw, bh) / max(1, min(bw, bh)) > 1.4:
            continue
        comp = (labels[y:y + bh, x:x + bw] == i).astype(np.uint8)
        cnts, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        hull = cv2.contourArea(cv2.convexHull(max(cnts, key=cv2.contourArea)))
        if hull > 0 and a / hull >= 0.9:
            diams.append(np.sqrt(4 * a / np.pi))
    return float(np.median(diams)) if len(diams) >= 3 else None


ESTIMATORS = {"single_cells": single_cells, "granulometry_1pass": _granulometry_diameter,
              "granulometry": estimate_cell_diameter}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/aria-all")
    ap.add_argument("--split", default="models/efficientnet-lite0-subtype/split.csv")
    args = ap.parse_args()
    rows = list(csv.DictReader(open(args.split)))
    load = lambda r: load_image(Path(args.data) / r["path"])  # noqa: E731
    train = [r for r in rows if r["split"] == "train"][::6]
    val = [r for r in rows if r["split"] == "val"]
    mag = get_family("magnification")
    print("| estimator | reference px | val unmeasurable | off > 25% | off > 40% | "
          "0.85x / 0.7x / 0.5x: median log error, share off > 25% |\n|---|---|---|---|---|---|")
    for name, f in ESTIMATORS.items():
        rng = np.random.default_rng(0)
        ref = float(np.median([d for d in (f(load(r)) for r in train) if d]))
        vd = {r["path"]: f(load(r)) for r in val}
        fa = np.array([ref / d for d in vd.values() if d])
        cells = []
        for m in (0.85, 0.7, 0.5):
            e, fails = [], 0
            for r in val[::4]:
                dm = f(mag.apply(load(r), m, rng))
                if not dm or not vd[r["path"]]:
                    fails += 1
                    continue
                e.append(np.log(dm / vd[r["path"]] / m))
            e = np.array(e)
            cells.append(f"{np.median(e):+.3f}, {(np.abs(e) > np.log(1.25)).mean():.0%}" + (f" ({fails} unmeasurable)" if fails else ""))
        miss = sum(1 for d in vd.values() if not d) / len(vd)
        print(f"| {name} | {ref:.2f} | {miss:.1%} | {(np.abs(fa - 1) > 0.25).mean():.1%} | "
              f"{(np.abs(fa - 1) > 0.4).mean():.1%} | {' / '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
