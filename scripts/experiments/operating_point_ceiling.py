"""Issue 21: how far is "test specificity >= 0.97 at sensitivity >= 0.99" from what any release reaches?

Reads each committed release's ``predictions.csv`` (its int8 file on the test split, written by
``leukedge evaluate``) and reports, with the threshold chosen *on the test split itself* (an oracle,
so an upper bound of what a validation-chosen threshold can give):

* the best specificity at sensitivity >= 0.99 (at most floor(0.01 * n) leukemia smears missed),
* the benign blocks (``group``: runs of consecutive file numbers, a proxy for patients) that the
  threshold refers, and the leukemia smears that set it (the lowest-scored ones).

    python scripts/experiments/operating_point_ceiling.py [models/<name> ...]

Runs in a second; needs only the committed releases.
"""
from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def ceiling(rows: list[dict], min_sens: float = 0.99) -> dict:
    pos = sorted((float(r["probability"]), r["path"]) for r in rows if r["y_true"] == "1")
    neg = [(float(r["probability"]), r["group"]) for r in rows if r["y_true"] == "0"]
    k = int(len(pos) * (1 - min_sens) + 1e-9)  # leukemia smears allowed below the threshold
    thr = pos[k][0]
    referred = [g for p, g in neg if p >= thr]
    return {"leukemia": len(pos), "benign": len(neg), "allowed_missed": k, "threshold": thr,
            "specificity": 1 - len(referred) / len(neg), "referred_by_block": dict(Counter(referred)),
            "lowest_leukemia": [(Path(p).name, round(s, 4)) for s, p in pos[:k + 5]]}


def main(argv: list[str]) -> int:
    folders = [Path(a) for a in argv] or sorted(p for p in (ROOT / "models").iterdir() if (p / "predictions.csv").is_file())
    for f in folders:
        rows = [r for r in csv.DictReader(open(f / "predictions.csv")) if r["split"] == "test"]
        c = ceiling(rows)
        print(f"{f.name}: test specificity at sensitivity >= 0.99 (threshold chosen on test: an upper bound) "
              f"= {c['specificity']:.3f} ({c['benign']} benign, {c['leukemia']} leukemia, at most "
              f"{c['allowed_missed']} missed; threshold {c['threshold']:.4g})")
        print(f"  benign smears referred, by block: {c['referred_by_block']}")
        print(f"  lowest-scored leukemia smears: {c['lowest_leukemia']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
