"""Full-resolution photos: shrink to the training cell size (``exact``), or only as far as the tolerance needs (``fewest``)?

``preprocess.capture.shrink`` (recipe key ``screening.shrink``): with ``exact`` a photo whose cells
are k times the training size is shrunk to exactly the training cell size, which can leave a field
a little larger than one model input, screened as overlapping tiles. ``fewest`` shrinks by the
smallest factor that still puts the cells within the tolerance (``cell_diameter / (1 +
tolerance)``), never below one model input, so such a photo becomes one input, as a lab photo is.

For the validation smears (all of them, or ``--n`` spread evenly), the lab photo, the lab photo
upsampled k = 2, 4 and 6 times (the ``resolution`` family) and the compound ``phone`` photo at
``--phone-levels`` (seeded per smear) are screened with the release's spec under each rule (a
photo both rules rescale alike is screened once). Prints correct / retake / flagged / wrong /
missed per rule and photo, and the smears whose answer differs; ``--json`` keeps every answer.
docs/captures.md 19. With the defaults below ~12 s of CPU per smear here (the level-3 phone photos are
2,000 x 2,700 px): ~80 min for the 393 validation smears.

    python scripts/experiments/shrink_rule.py models/<name> [--n 100] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def outcome(s, pos: bool) -> str:
    return ("flagged" if s.ood else "retake" if s.decision == "retake"
            else "correct" if (s.decision == "positive") == pos else "missed" if pos else "wrong")


def main(argv=None) -> int:
    import leukedge.capture as capture
    from leukedge.benchmarks.captures import pick_rows
    from leukedge.capture_sim import apply_capture
    from leukedge.edge_app.inference import Screener, load_release
    from leukedge.imageio import load_image
    from leukedge.split import read_manifest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("release")
    ap.add_argument("--n", type=int, default=0, help="smears spread evenly over the split (0: all)")
    ap.add_argument("--subset", default="val")
    ap.add_argument("--ks", default="1,2,4,6", help="resolution factors (1: the lab photo)")
    ap.add_argument("--phone-levels", default="1,2,3")
    ap.add_argument("--data", default="../shared/data/aria-all")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    rules = ("exact", "fewest")
    screeners, caps = {}, {}
    for rule in rules:
        rel = load_release(a.release)
        cap = dataclasses.replace(rel.spec.preprocess.capture, shrink=rule)
        rel.spec = dataclasses.replace(rel.spec, preprocess=rel.spec.preprocess.replace(capture=cap))
        screeners[rule], caps[rule] = Screener(rel, num_threads=1), cap
    rows = pick_rows([r for r in read_manifest(rel.folder / "split.csv", a.data) if r["split"] == a.subset], a.n)
    photos = [f"resolution {k}" if k > 1 else "lab" for k in map(int, a.ks.split(","))]
    photos += [f"phone {lv}" for lv in a.phone_levels.split(",") if lv]
    out: dict = {p: {rule: [] for rule in rules} for p in photos}
    for i, r in enumerate(rows):
        rgb, pos = load_image(r["abspath"]), r["class"] != "Benign"
        for p in photos:
            fam, _, sev = p.partition(" ")
            img = rgb if p == "lab" else apply_capture(fam, rgb, int(sev), seed=i)
            field = capture.crop_fov(img)[0] if caps["exact"].fov_crop else img
            same = len({capture.magnification_estimate(field, caps[rule])[0] for rule in rules}) == 1
            first = outcome(screeners["exact"].screen_image(img, heatmap=False), pos)
            second = first if same else outcome(screeners["fewest"].screen_image(img, heatmap=False), pos)
            out[p]["exact"].append(first)
            out[p]["fewest"].append(second)
        if (i + 1) % 25 == 0:
            print(f"{i + 1} / {len(rows)} smears", file=sys.stderr, flush=True)
    cols = ("correct", "retake", "flagged", "wrong", "missed")
    print(f"{rel.name}, {len(rows)} {a.subset} smears")
    print(f"{'photo':>13} {'rule':>7} " + " ".join(f"{c:>8}" for c in cols))
    for p in photos:
        for rule in rules:
            print(f"{p:>13} {rule:>7} " + " ".join(f"{out[p][rule].count(c):>8}" for c in cols))
        for r, e, f in zip(rows, out[p]["exact"], out[p]["fewest"]):
            if e != f:
                print(f"{'':>13} {Path(r['path']).name}: {e} -> {f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"release": rel.name, "subset": a.subset, "smears": [r["path"] for r in rows],
                                            "answers": out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
