"""Is the `magnification` capture family's mirror tiling a fair stand-in for a real wider field?

The family (leukedge.capture_sim.magnification) enlarges one smear's field with its mirror
images before shrinking it, so a 0.5x photo shows one smear four times, mirrored (a kaleidoscope).
A real lower-power photo shows *different* cells. Closer to that: a 3 x 3 mosaic of nine
*neighbouring* smears of one split group (consecutive file numbers of one class: one patient's
slide), a window of the enlarged field's size (side / factor) cut at a random offset (so the
app's tiles do not line up with the seams between smears), shrunk by the same INTER_AREA resize. Both are screened through the release's Screener
(the path of `leukedge predict` and the app: quality gate, tile screen, OOD gate, threshold), on
VALIDATION smears, and the outcomes compared (correct / retake / flagged / wrong / missed).

    python scripts/experiments/magnification_mosaic.py [models/<name>] [--factor 0.5] [--limit 100]

~3 min per release on 2 cores.
"""
from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import cv2
import numpy as np

from leukedge.benchmarks.captures import outcome
from leukedge.capture_sim import apply_capture
from leukedge.edge_app.inference import Screener
from leukedge.imageio import load_image
from leukedge.split import read_manifest


def mosaic(images: list[np.ndarray], factor: float, rng: np.random.Generator) -> np.ndarray:
    """A photo of the first smear's size at ``factor``: a window of side / factor, at a random
    offset, of the 3 x 3 mosaic of nine smears (each resized to the first one's size), shrunk."""
    h, w = images[0].shape[:2]
    tiles = [cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) if im.shape[:2] != (h, w) else im for im in images]
    field = np.vstack([np.hstack(tiles[k:k + 3]) for k in (0, 3, 6)])
    ch, cw = round(h / factor), round(w / factor)
    y0, x0 = int(rng.integers(0, 3 * h - ch + 1)), int(rng.integers(0, 3 * w - cw + 1))
    return cv2.resize(np.ascontiguousarray(field[y0:y0 + ch, x0:x0 + cw]), (w, h), interpolation=cv2.INTER_AREA)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="models/efficientnet-lite0-subtype")
    ap.add_argument("--data", default="../shared/data/aria-all")
    ap.add_argument("--factor", type=float, default=0.5)
    ap.add_argument("--limit", type=int, default=100)
    args = ap.parse_args()
    s = Screener(args.model, num_threads=2)
    spec = s.spec
    rows = [r for r in read_manifest(f"{args.model}/split.csv", args.data) if r["split"] == "val"]
    by_group = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    quads = [g[i:i + 9] for g in by_group.values() for i in range(0, len(g) - 8, 3)]  # overlapping: 3 new smears each
    quads = [quads[i] for i in np.linspace(0, len(quads) - 1, min(args.limit, len(quads))).astype(int)]
    counts = {"mirror": Counter(), "mosaic": Counter()}
    for i, q in enumerate(quads):
        positive = q[0]["class"] in spec.positive_classes if spec.task == "subtype" else spec.label_of(q[0]["class"]) != 0
        imgs = [load_image(r["abspath"]) for r in q]
        photos = {"mirror": apply_capture("magnification", imgs[0], args.factor, seed=i),
                  "mosaic": mosaic(imgs, args.factor, np.random.default_rng(i))}
        for kind, photo in photos.items():
            o = outcome(s.screen_image(photo, heatmap=False), positive)
            counts[kind][o] += 1
            if o == "wrong" and positive:
                counts[kind]["missed"] += 1
    n = len(quads)
    print(f"{args.model}, factor {args.factor}, {n} validation photos (groups of 9 neighbouring smears; "
          f"{sum(1 for q in quads if q[0]['class'] == spec.negative_class)} benign)")
    for kind, c in counts.items():
        print(f"  {kind:7s} " + ", ".join(f"{k} {c[k]} ({c[k] / n:.0%})" for k in ("correct", "retake", "flagged", "wrong", "missed")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
