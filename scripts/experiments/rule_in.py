"""Can an over-exposed or blurred photo with a strong leukemia score be answered? (validation only)

Every 2nd validation smear of the release's split, clean and under exposure 1.3-2.5x, defocus
2/3/5 and motion 7/13 px (the bench's families, seeded per smear), is screened once by the
release's Screener with the rule switched off (``QualityConfig.rule_in = None``: the quality
gate's status, the OOD gate and the probability are all recorded). Each candidate ``rule_in``
is then applied to those records the way ``Screener._decide`` does (an over-exposed or blurred
photo, not flagged, probability >= max(rule_in, threshold): "refer"; else "retake") and
printed per family and severity as correct / retake / flagged / wrong / missed leukemia, with
the benign photos it would refer (``false refer``) and the highest probability of a benign photo
the quality gate sends back. docs/captures.md 15 ran this.

    python scripts/experiments/rule_in.py models/<name> [records.json] [--allow-unsigned]
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

CONDITIONS = [("none", 0), ("exposure", 1.3), ("exposure", 1.5), ("exposure", 2.0), ("exposure", 2.5),
              ("defocus", 2), ("defocus", 3), ("defocus", 5), ("motion", 7), ("motion", 13)]
CANDIDATES = (None, "threshold", 0.8, 0.9, 0.95)


def record(folder: str, allow_unsigned: bool = False) -> list[dict]:
    """One record per (smear, condition): class, quality status, OOD, probability, threshold."""
    import dataclasses

    from leukedge.capture_sim import apply_capture
    from leukedge.edge_app.inference import Screener
    from leukedge.edge_app.quality import QualityConfig
    from leukedge.imageio import load_image
    from leukedge.split import read_manifest

    release = Screener(folder, num_threads=2, allow_unsigned=allow_unsigned)
    s = Screener(release.release, num_threads=2,
                 quality=dataclasses.replace(QualityConfig.for_spec(release.spec), rule_in=None))
    rows = [r for r in read_manifest(f"{folder}/split.csv", "../shared/data/aria-all") if r["split"] == "val"][::2]
    out = []
    for i, r in enumerate(rows):
        img0 = load_image(r["abspath"])
        for fam, sev in CONDITIONS:
            res = s.screen_image(img0 if fam == "none" else apply_capture(fam, img0, sev, seed=i), heatmap=False)
            out.append({"path": r["path"], "benign": r["class"] == "Benign", "fam": fam, "sev": sev,
                        "quality": res.quality, "ood": bool(res.ood), "p": res.probability, "thr": res.threshold})
    return out


def outcome(r: dict, rule_in) -> str:
    from leukedge.edge_app.quality import QualityConfig

    if r["quality"] != "ok":
        if r["ood"] or not QualityConfig(rule_in=rule_in).rules_in(r["quality"], r["p"], r["thr"]):
            return "retake"
        return "false refer" if r["benign"] else "correct"
    if r["ood"]:
        return "flagged"
    if (r["p"] >= r["thr"]) != r["benign"]:
        return "correct"
    return "wrong" if r["benign"] else "missed"


def cached(folder: str, args, make=None) -> list[dict]:
    """The records of ``make(folder, allow_unsigned)`` (default :func:`record`), read from / written to
    the first non-option argument when one is given (``rule_out.py`` shares it)."""
    cache = next((a for a in args if not a.startswith("--")), None)
    if cache and Path(cache).is_file():
        return json.loads(Path(cache).read_text())
    recs = (make or record)(folder, "--allow-unsigned" in args)
    if cache:
        Path(cache).write_text(json.dumps(recs))
    return recs


def main(folder: str = "models/efficientnet-lite0-binary", *args: str) -> int:
    recs = cached(folder, args)
    thr = recs[0]["thr"]
    sent_back = [r for r in recs if r["benign"] and r["quality"] != "ok" and not r["ood"]]
    print(f"{folder}: {len(recs) // len(CONDITIONS)} validation smears, threshold {thr:.4f}; benign photos the "
          f"quality gate sends back: {len(sent_back)}, highest probability "
          + ", ".join(f"{f} {s}: {max(r['p'] for r in sent_back if (r['fam'], r['sev']) == (f, s)):.3f}"
                      for f, s in CONDITIONS if any((r["fam"], r["sev"]) == (f, s) for r in sent_back)))
    kinds = ("correct", "retake", "flagged", "wrong", "missed", "false refer")
    print("| family | severity | " + " | ".join(f"rule_in {c if c is not None else 'off'}" for c in CANDIDATES) + " |")
    print("|---|---|" + "---|" * len(CANDIDATES))
    for fam, sev in CONDITIONS:
        rs = [r for r in recs if (r["fam"], r["sev"]) == (fam, sev)]
        cells = []
        for c in CANDIDATES:
            n = Counter(outcome(r, thr if c == "threshold" else c) for r in rs)
            cells.append(" / ".join(str(n.get(k, 0)) for k in kinds))
        print(f"| {fam} | {sev} | " + " | ".join(cells) + " |")
    print("cells: " + " / ".join(kinds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
