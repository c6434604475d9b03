"""What a release's OOD gate flags, through the app's Screener (tile screen, per-photo decision).

Every 2nd lymphocyte crop (506), 52 photos of other things (13 scikit-image sample photos:
astronaut, coffee, cat, rocket, immunohistochemistry, Hubble, retina, colour wheel, coins, camera,
moon, page, text, and 3 random crops of each) and every 4th validation smear (99) under warm /
cool light, exposure 0.5, stain balance -0.4, stain intensity +0.4. Prints the share flagged, by
either distance and by each one (validation and out-of-domain images only: nothing from the test
split). ~3 min for EfficientNet-Lite0 on 2 cores.

    python scripts/experiments/ood_gate_check.py models/<name> [--allow-unsigned]
"""
from __future__ import annotations

import glob
import sys

import numpy as np


def main(folder: str, *flags: str) -> int:
    import skimage.data as skd

    from leukedge.capture_sim import apply_capture
    from leukedge.edge_app.inference import Screener
    from leukedge.imageio import load_image
    from leukedge.split import read_manifest

    s = Screener(folder, num_threads=2, allow_unsigned="--allow-unsigned" in flags)

    def ratios(img):
        r = s.screen_image(np.ascontiguousarray(img), heatmap=False)
        d = r.ood_details or {}
        return bool(r.ood), d.get("image", 0.0) > 1, d.get("features", 0.0) > 1

    sets = {"lymphocyte crops": [ratios(load_image(p)) for p in
                                 sorted(glob.glob("../shared/data/pbc-lymphocytes/**/*.jpg", recursive=True))[::2]]}
    other, rng = [], np.random.default_rng(0)
    for n in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
              "colorwheel", "coins", "camera", "moon", "page", "text"):
        im = getattr(skd, n)()
        im = np.ascontiguousarray((np.stack([im] * 3, -1) if im.ndim == 2 else im)[..., :3])
        other.append(ratios(im))
        h, w = im.shape[:2]
        for _ in range(3):
            c = int(min(h, w) * 0.6)
            y, x = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
            other.append(ratios(im[y:y + c, x:x + c]))
    sets["photos of other things"] = other
    rows = [r for r in read_manifest(f"{folder}/split.csv", "../shared/data/aria-all") if r["split"] == "val"][::4]
    imgs = [load_image(r["abspath"]) for r in rows]
    sets["validation smears"] = [ratios(im) for im in imgs]
    for fam, sev in (("white_balance", 0.3), ("white_balance", -0.3), ("exposure", 0.5), ("stain_balance", -0.4),
                     ("stain_intensity", 0.4)):
        sets[f"validation, {fam} {sev:g}"] = [ratios(apply_capture(fam, im, sev, seed=i)) for i, im in enumerate(imgs)]
    print(f"{folder}: flagged (by the image statistics, by the features)")
    for name, r in sets.items():
        a = np.array(r, bool)
        print(f"  {name:34s} n={len(a):4d}  {a[:, 0].mean():6.1%}  ({a[:, 1].mean():.1%}, {a[:, 2].mean():.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
