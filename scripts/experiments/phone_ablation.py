"""Which part of a compound phone photo makes the OOD gate flag it? (validation; docs/captures.md 18)

For ``n`` validation smears of a release's split (spread evenly), one compound ``phone`` photo at
``level`` is drawn per smear (``leukedge.capture_sim.phone_parts``), then screened with every part
and with each part left out in turn (the same drawn strengths, the same noise stream), through the
release's Screener like ``leukedge predict``. Prints, per left-out part, the photos the OOD gate
flags, its median score and the retakes. ~5 min for 150 smears on 2 cores.

``--lab-pixels`` leaves out the ``resolution`` step (the family's first version, at the lab's pixel
size: docs/captures.md 18.2); otherwise it is one of the parts left out in turn.

    python scripts/experiments/phone_ablation.py models/<name> [--level 2] [--n 150] [--lab-pixels]
"""
from __future__ import annotations

import argparse


def main(argv=None) -> int:
    import numpy as np

    from leukedge.benchmarks.captures import pick_rows
    from leukedge.capture_sim import FAMILIES, phone_parts
    from leukedge.edge_app.inference import Screener, load_release
    from leukedge.imageio import load_image
    from leukedge.split import read_manifest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("release")
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--data", default="../shared/data/aria-all")
    ap.add_argument("--lab-pixels", action="store_true", help="leave out the resolution step (the first version)")
    a = ap.parse_args(argv)
    rel = load_release(a.release)
    scr = Screener(rel, num_threads=1)
    rows = pick_rows([r for r in read_manifest(rel.folder / "split.csv", a.data) if r["split"] == "val"], a.n)
    drops = ["none", "stain_intensity", "rotation", "eyepiece", "white_balance", "exposure", "noise", "jpeg"]
    if not a.lab_pixels:
        drops.insert(4, "resolution")
    out: dict[str, list] = {d: [] for d in drops}
    for i, r in enumerate(rows):
        rgb = load_image(r["abspath"])
        parts = [p for p in phone_parts(a.level, np.random.default_rng([3, i]))
                 if not (a.lab_pixels and p[0] == "resolution")]
        for d in drops:
            img, rng = rgb, np.random.default_rng([4, i])
            for fam, sev in parts:
                if fam != d:
                    img = FAMILIES[fam].fn(img, sev, rng)
            res = scr.screen_image(img, heatmap=False)
            out[d].append((res.ood_score, bool(res.ood), res.decision))
    print(f"{rel.name}, phone level {a.level}{' at the lab pixel size' if a.lab_pixels else ''}, "
          f"{len(rows)} validation smears")
    print(f"{'left out':16s} {'flagged':>8s} {'median OOD':>11s} {'retake':>7s}")
    for d in drops:
        o = out[d]
        scores = [x[0] for x in o if x[0] is not None]
        print(f"{'(nothing)' if d == 'none' else d:16s} {sum(x[1] for x in o):8d} "
              f"{np.median(scores) if scores else float('nan'):11.2f} {sum(x[2] == 'retake' for x in o):7d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
