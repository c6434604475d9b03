"""Would the over-exposure retake still be needed with the release's OOD gate? (validation only)

Every 2nd validation smear under exposure 1.3x / 1.5x / 2.0x (the bench's family, seeded), screened
by the release's Screener twice: with its quality gate, and with the over-exposure test switched
off (`QualityConfig(max_mean=256, max_bright_fraction=1.01)`), so the OOD gate and the model see the
photos the gate would have sent back. Prints, per factor: correct / retake / flagged / wrong (missed
leukemia) both ways, and the mean grey and near-white fraction of the photos answered wrongly
without the gate. Section 11.2 of docs/captures.md ran this with the gate reading the pooled features.

    python scripts/experiments/overexposure_gate.py models/<name>
"""
from __future__ import annotations

import sys

import numpy as np


def outcome(res, positive: bool) -> str:
    if res.quality != "ok":
        return "retake"
    if res.ood:
        return "flagged"
    called = res.probability >= res.threshold
    if called == positive:
        return "correct"
    return "missed" if positive else "wrong"


def main(folder: str = "models/efficientnet-lite0-subtype") -> int:
    from leukedge.capture_sim import apply_capture
    from leukedge.edge_app.inference import Screener
    from leukedge.edge_app.quality import QualityConfig, measure
    from leukedge.imageio import load_image
    from leukedge.split import read_manifest

    gated = Screener(folder, num_threads=2)
    open_ = Screener(folder, num_threads=2, quality=QualityConfig(max_mean=256, max_bright_fraction=1.01))
    rows = [r for r in read_manifest(f"{folder}/split.csv", "../shared/data/aria-all") if r["split"] == "val"][::2]
    for factor in (1.3, 1.5, 2.0):
        counts = {"gate on": {}, "gate off": {}}
        bad = []
        for i, r in enumerate(rows):
            img = apply_capture("exposure", load_image(r["abspath"]), factor, seed=i)
            pos = r["class"] != "Benign"
            for name, s in (("gate on", gated), ("gate off", open_)):
                o = outcome(s.screen_image(img, heatmap=False), pos)
                counts[name][o] = counts[name].get(o, 0) + 1
                if name == "gate off" and o in ("wrong", "missed"):
                    m = measure(img)
                    bad.append((r["path"], o, round(m["mean"], 1), round(m["bright_fraction"], 2)))
        print(f"exposure {factor}x, {len(rows)} validation smears: " + "; ".join(
            f"{k}: " + ", ".join(f"{c} {v.get(c, 0)}" for c in ("correct", "retake", "flagged", "wrong", "missed"))
            for k, v in counts.items()))
        for b in bad:
            print("   wrong without the gate:", *b)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
