"""Would averaging the model over rotated / flipped copies of each input (test-time augmentation)
cut the capture bench's wrong answers? (an experiment: the releases screen one view)

The release's spec gets ``preprocess.capture.views = k`` (:mod:`leukedge.views`: every model
input run in k dihedral views, k = 1: as released; 8: the four 90-degree rotations and their
mirror images; the probability averaged, heatmap and OOD features from the unrotated input) and
``leukedge bench captures`` runs as usual (``run_captures``: quality gate, tiles, OOD gate) **at
the release's threshold**, chosen for one view: a quick look only. The real candidate is made by
``leukedge compress models/<name> --recipe models/<name>/recipe.json --set screening.views=8 ...``,
which chooses the operating points again on validation with the views (docs/captures.md 16).
Results are written like the bench's (JSON + Markdown) plus a side-by-side table.

    python scripts/experiments/tta.py models/<name> OUT_DIR [--views 1,8] [--subset val] [--limit 60]
        [--families a,b] [--allow-unsigned]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def with_views(release, k: int):
    """``release`` with ``preprocess.capture.views = k`` in its spec (nothing else changed)."""
    spec = release.spec
    cap = dataclasses.replace(spec.preprocess.capture, views=k)
    return dataclasses.replace(release, spec=dataclasses.replace(spec, preprocess=spec.preprocess.replace(capture=cap)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--views", default="1,8")
    ap.add_argument("--subset", default="val")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--families", default=None)
    ap.add_argument("--data", default="../shared/data/aria-all")
    ap.add_argument("--allow-unsigned", action="store_true")
    a = ap.parse_args(argv)

    from leukedge.benchmarks import captures
    from leukedge.benchmarks.captures_report import compare_markdown, markdown
    from leukedge.capture_sim import FAMILIES

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    load = captures.load_release
    docs, labels = [], []
    for k in (int(v) for v in a.views.split(",")):
        captures.load_release = lambda *args, _k=k, **kw: with_views(load(*args, **kw), _k)
        try:
            cfg = captures.CaptureBenchConfig(model=a.model, data=a.data, limit=a.limit, subset=a.subset, threads=1,
                                              families=a.families.split(",") if a.families else list(FAMILIES),
                                              allow_unsigned=a.allow_unsigned)
            doc = captures.run_captures(cfg)
        finally:
            captures.load_release = load
        doc["tta_views"] = k
        name = f"{Path(a.model).name}.{a.subset}.views{k}"
        (out / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
        (out / f"{name}.md").write_text(markdown(doc))
        s = doc["summary"]
        print(f"views {k}: moderate min correct {s['moderate_min_correct']}, max wrong {s['moderate_max_wrong']}, "
              f"missed {s['moderate_missed']} (caused by the capture {s['moderate_missed_new']}), "
              f"max wrong caused {s['moderate_max_wrong_new']:.4f}, {doc['seconds']} s", flush=True)
        docs.append(doc)
        labels.append(f"{k} view{'s' if k > 1 else ''}")
    (out / f"{Path(a.model).name}.{a.subset}.compare.md").write_text(compare_markdown(docs, labels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
