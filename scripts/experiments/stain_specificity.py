"""How many benign smears does a release refer when the stain is stronger or weaker? (measured, not fixed)

Every benign smear of the release's validation or test split, clean and under the capture
families ``stain_intensity`` and ``stain_balance`` at -0.4 / -0.2 / +0.2 / +0.4 (seeded per smear),
screened by the release's Screener like ``leukedge predict``. Prints, per condition, the decisions
and the five highest probabilities. The capture bench's 60 test smears hold only 10 benign ones,
so this is where the stain rows' wrong answers are measured with all of them (docs/captures.md 15).

    python scripts/experiments/stain_specificity.py models/<name> [val|test] [--allow-unsigned]
"""
from __future__ import annotations

import sys
from collections import Counter


def main(folder: str = "models/efficientnet-lite0-binary", subset: str = "test", *flags: str) -> int:
    from leukedge.capture_sim import apply_capture
    from leukedge.edge_app.inference import Screener
    from leukedge.imageio import load_image
    from leukedge.split import read_manifest

    s = Screener(folder, num_threads=2, allow_unsigned="--allow-unsigned" in flags)
    rows = [r for r in read_manifest(f"{folder}/split.csv", "../shared/data/aria-all")
            if r["split"] == subset and r["class"] == "Benign"]
    images = [load_image(r["abspath"]) for r in rows]
    print(f"{folder}: {len(rows)} benign {subset} smears, threshold {s.threshold:.4f}")
    for fam, sev in [("none", 0)] + [(f, v) for f in ("stain_intensity", "stain_balance") for v in (-0.4, -0.2, 0.2, 0.4)]:
        n, top = Counter(), []
        for i, img in enumerate(images):
            res = s.screen_image(img if fam == "none" else apply_capture(fam, img, sev, seed=i), heatmap=False)
            n[res.decision] += 1
            top.append(res.probability)
        print(f"{fam:16s} {sev:+.1f}  referred {n['positive']:2d}  cleared {n['negative']:2d}  flagged "
              f"{n['out-of-distribution']}  retake {n['retake']}  highest p "
              + " ".join(f"{p:.2f}" for p in sorted(top)[-5:]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
