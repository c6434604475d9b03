"""Can the quality gate tell a shaken photo from a sharp one? Gradient coherence on validation smears.

For every validation smear of a release's split, clean and under motion blur 3 / 7 / 13 px and a few
other families (seeded like ``scripts/experiments/rule_out.py``), the coherence of the image
gradient's structure tensor, ``(l1 - l2) / (l1 + l2)`` of the mean of ``[gx^2, gx gy; gx gy, gy^2]``
(Sobel on the grey image the quality gate measures: the square inside an eyepiece's field of view,
resized to 256 px on the long side). Motion blur removes gradient energy along its direction, so a
shaken photo should be more coherent than a sharp one. Prints the percentiles per condition and the
share above the clean photos' 99th percentile. No model is run (~1 min). docs/captures.md 17.

    python scripts/experiments/motion_coherence.py [models/<name>]
"""
from __future__ import annotations

import sys

CONDITIONS = [("none", 0), ("motion", 3), ("motion", 7), ("motion", 13), ("eyepiece", 2), ("rotation", 45),
              ("magnification", 0.5), ("jpeg", 20)]


def coherence(rgb) -> float:
    """Structure-tensor coherence of the region the quality gate measures."""
    import cv2
    import numpy as np

    from leukedge.capture import detect_fov

    fov = detect_fov(rgb) if min(rgb.shape[:2]) >= 112 else None
    region, upscale = rgb, True
    if fov is not None:
        x0, y0, x1, y1 = fov.square(rgb.shape)
        if min(x1 - x0, y1 - y0) >= 16:
            region, upscale = np.ascontiguousarray(rgb[y0:y1, x0:x1]), False
    h, w = region.shape[:2]
    s = 256 / max(h, w) if upscale else min(256 / max(h, w), 1.0)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    grey = cv2.cvtColor(cv2.resize(region, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR),
                        cv2.COLOR_RGB2GRAY).astype(np.float64)
    gx, gy = cv2.Sobel(grey, cv2.CV_64F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_64F, 0, 1, ksize=3)
    a, b, c = (gx * gx).mean(), (gy * gy).mean(), (gx * gy).mean()
    root = np.sqrt(max((a - b) ** 2 / 4 + c * c, 0.0))
    return float(2 * root / (a + b + 1e-12))


def main(folder: str = "models/efficientnet-lite0-subtype") -> int:
    import numpy as np

    from leukedge.capture_sim import FAMILIES, get_family
    from leukedge.imageio import load_image
    from leukedge.split import read_manifest

    rows = [r for r in read_manifest(f"{folder}/split.csv", "../shared/data/aria-all") if r["split"] == "val"]
    out = {c: [] for c in CONDITIONS}
    for i, r in enumerate(rows):
        img = load_image(r["abspath"])
        for fam, sev in CONDITIONS:
            if fam == "none":
                x = img
            else:
                x = get_family(fam).apply(img, sev, np.random.default_rng([i, list(FAMILIES).index(fam), int(abs(sev) * 100)]))
            out[(fam, sev)].append(coherence(x))
    t99 = float(np.percentile(out[("none", 0)], 99))
    print(f"{len(rows)} validation smears; clean photos' 99th percentile {t99:.3f}")
    print("| condition | 5th / 50th / 95th percentile | above the clean 99th percentile |")
    print("|---|---|---|")
    for (fam, sev), v in out.items():
        p = np.percentile(v, [5, 50, 95])
        print(f"| {fam} {sev} | {p[0]:.2f} / {p[1]:.2f} / {p[2]:.2f} | {100 * np.mean(np.array(v) > t99):.1f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
