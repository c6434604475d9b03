"""Where should the "blurry" retake start? The quality gate's sharpness limit against the release's answers (validation only).

Every 2nd validation smear under motion blur 7 / 13 px and defocus 2 / 3 / 5 (the bench's families,
seeded), screened once by the release's Screener with the sharpness test off
(`QualityConfig(min_sharpness=0)`), with each photo's sharpness (variance of the Laplacian, the
gate's measure). Prints, for limits 15 (the default before session 22) ... 0, what the photos at or
above the limit get: correct / flagged / wrong / missed leukemia (the rest would be "focus" retakes).

    python scripts/experiments/blur_gate.py models/<name>
"""
from __future__ import annotations

import sys

from overexposure_gate import outcome

CASES = (("motion", (7, 13)), ("defocus", (2, 3, 5)))
LIMITS = (15, 12, 10, 8, 5, 0)


def main(folder: str = "models/efficientnet-lite0-subtype") -> int:
    from leukedge.capture_sim import apply_capture
    from leukedge.edge_app.inference import Screener
    from leukedge.edge_app.quality import QualityConfig, measure
    from leukedge.imageio import load_image
    from leukedge.split import read_manifest

    s = Screener(folder, num_threads=2, quality=QualityConfig(min_sharpness=0.0))
    rows = [r for r in read_manifest(f"{folder}/split.csv", "../shared/data/aria-all") if r["split"] == "val"][::2]
    out = []
    for fam, sevs in CASES:
        for sev in sevs:
            for i, r in enumerate(rows):
                img = apply_capture(fam, load_image(r["abspath"]), sev, seed=i)
                out.append((f"{fam}@{sev}", measure(img)["sharpness"],
                            outcome(s.screen_image(img, heatmap=False), r["class"] != "Benign")))
    print(f"{folder}: {len(rows)} validation smears; at each sharpness limit, correct / flagged / wrong / missed")
    for lim in LIMITS:
        cells = []
        for fam, sevs in CASES:
            for sev in sevs:
                got = [o for k, sh, o in out if k == f"{fam}@{sev}" and sh >= lim]
                cells.append(f"{fam} {sev}: " + "/".join(str(got.count(c)) for c in ("correct", "flagged", "wrong", "missed")))
        print(f"  limit {lim:>2}: " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
