"""Where should the grey zone start? A release's answers on validation photos under the capture families.

Every validation smear of the release's split is screened clean and under every capture family's
severities (the bench's families; every smear for the clean, defocus and motion rows, every 2nd
smear for the others, each perturbation seeded by smear, family and severity) by the release's
Screener with no grey zone (``Screener.rule_out = None``; the quality gate's status, the OOD gate
and the probability are all recorded). Each candidate ``rule_out`` is then applied to the photos
the release answers (quality ok, not flagged) of the clean and the *moderate* rows (issue 19's
targets): leukemia photos below it stay missed, photos from it up to the threshold become
"borderline, take another field" (leukemia ones: a miss turned into a retake; benign ones: a
retake that was a correct answer).

The rule (docs/captures.md 17): ``rule_out`` = the lowest probability of a leukemia photo the
release answers in those rows, rounded down to a multiple of 0.05; no validation leukemia photo
of the clean or moderate rows is then missed. It is printed with the table of candidates.

    python scripts/experiments/rule_out.py models/<name> [records.json] [--allow-unsigned]

(~12 min per EfficientNet-Lite0 release on 2 cores; ``records.json`` caches the screening.)
"""
from __future__ import annotations

import math
import sys

CANDIDATES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
#: families screened on every validation smear (the others on every 2nd)
EVERY_SMEAR = ("none", "defocus", "motion")


def conditions() -> list[tuple[str, float, bool]]:
    from leukedge.capture_sim import FAMILIES

    return [("none", 0, True)] + [(f.name, s, s in f.moderate) for f in FAMILIES.values() for s in f.severities
                                  if f.name in EVERY_SMEAR or s in f.moderate]


def record(folder: str, allow_unsigned: bool = False) -> list[dict]:
    """One record per (smear, condition): class, quality status, OOD, probability, threshold."""
    import numpy as np

    from leukedge.capture_sim import FAMILIES, get_family
    from leukedge.edge_app.inference import Screener
    from leukedge.imageio import load_image
    from leukedge.split import read_manifest

    s = Screener(folder, num_threads=1, allow_unsigned=allow_unsigned)
    s.rule_out = None
    rows = [r for r in read_manifest(f"{folder}/split.csv", "../shared/data/aria-all") if r["split"] == "val"]
    out = []
    for i, r in enumerate(rows):
        img0 = load_image(r["abspath"])
        for fam, sev, _ in conditions():
            if fam not in EVERY_SMEAR and i % 2:
                continue
            rng = np.random.default_rng([i, list(FAMILIES).index(fam), int(abs(sev) * 100)]) if fam != "none" else None
            res = s.screen_image(img0 if fam == "none" else get_family(fam).apply(img0, sev, rng), heatmap=False)
            out.append({"i": i, "path": r["path"], "benign": r["class"] == "Benign", "fam": fam, "sev": sev,
                        "quality": res.quality, "ood": bool(res.ood), "p": res.probability, "thr": res.threshold})
    return out


def choose(recs: list[dict]) -> float:
    """The rule: the lowest answered leukemia probability of the clean and moderate rows, rounded down to 0.05."""
    moderate = {(f, s) for f, s, m in conditions() if m}
    low = min(r["p"] for r in recs if (r["fam"], r["sev"]) in moderate and r["quality"] == "ok" and not r["ood"]
              and not r["benign"])
    return math.floor(low / 0.05 + 1e-9) * 0.05


def row_correct(recs: list[dict], rule_out: float | None, rule_in: float | None) -> dict:
    """Share of correct answers per moderate row (clean excluded) with the zone from ``rule_out``: a
    degraded photo is "refer" when the release's ``rule_in`` answers it, else a retake; a flagged photo
    is not an answer; a photo in the zone is a retake (issue 19's other target: >= 90% correct)."""
    from leukedge.edge_app.quality import QualityConfig

    q = QualityConfig(rule_in=rule_in)
    rows: dict = {}
    for r in recs:
        key = (r["fam"], r["sev"])
        if key not in {(f, s) for f, s, m in conditions() if m and f != "none"}:
            continue
        if r["quality"] != "ok":
            ok = not r["ood"] and not r["benign"] and q.rules_in(r["quality"], r["p"], r["thr"])
        elif r["ood"] or (rule_out is not None and rule_out <= r["p"] < r["thr"]):
            ok = False
        else:
            ok = (r["p"] >= r["thr"]) != r["benign"]
        n, c = rows.get(key, (0, 0))
        rows[key] = (n + 1, c + int(ok))
    return {k: c / n for k, (n, c) in rows.items()}


def main(folder: str = "models/efficientnet-lite0-subtype", *args: str) -> int:
    import json
    from pathlib import Path

    from rule_in import cached

    rule_in = json.loads(Path(folder, "spec.json").read_text())["preprocess"].get("capture", {}).get("rule_in")

    recs = cached(folder, args, record)
    thr = recs[0]["thr"]
    moderate = {(f, s) for f, s, m in conditions() if m}
    ans = [r for r in recs if (r["fam"], r["sev"]) in moderate and r["quality"] == "ok" and not r["ood"]]
    leuk = sorted(r["p"] for r in ans if not r["benign"])
    ben = [r["p"] for r in ans if r["benign"]]
    print(f"{folder}: {len({r['i'] for r in recs})} validation smears, threshold {thr:.4f}; clean + moderate rows: "
          f"{len(leuk)} leukemia and {len(ben)} benign photos answered (quality ok, not flagged); "
          f"lowest leukemia probabilities {', '.join(f'{p:.3f}' for p in leuk[:8])}")
    print("| rule_out | leukemia missed (below it) | leukemia borderline (were missed) | benign borderline "
          "(were correct) | clean row: benign / leukemia borderline | moderate rows >= 90% correct (lowest) |")
    print("|---|---|---|---|---|---|")
    clean = [r for r in ans if r["fam"] == "none"]
    for c in (None,) + CANDIDATES:
        lo = thr if c is None else c
        miss = sum(p < lo for p in leuk)
        band_l = sum(lo <= p < thr for p in leuk)
        band_b = sum(lo <= p < thr for p in ben)
        cb = sum(lo <= r["p"] < thr for r in clean if r["benign"])
        cl = sum(lo <= r["p"] < thr for r in clean if not r["benign"])
        rc = row_correct(recs, c, rule_in)
        print(f"| {'none' if c is None else c} | {miss} | {band_l} | {band_b} of {len(ben)} "
              f"({100 * band_b / max(len(ben), 1):.1f}%) | {cb} / {cl} | {sum(v >= 0.9 for v in rc.values())} of "
              f"{len(rc)} ({100 * min(rc.values()):.1f}%, {min(rc, key=rc.get)[0]} {min(rc, key=rc.get)[1]}) |")
    print(f"rule (lowest answered leukemia probability, rounded down to 0.05): rule_out = {choose(recs):.2f}; "
          "check the last column against issue 19's >= 90% correct per row before releasing it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
