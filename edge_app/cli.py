"""`leukedge app`, `leukedge app calibrate-ood` and `leukedge predict`.

Only argparse is imported here; Kivy, LiteRT and numpy are imported inside the handlers.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

log = logging.getLogger(__name__)


def _limit_blas_threads() -> None:
    """numpy's OpenBLAS threads fight LiteRT's (ENVIRONMENT.md): use one BLAS thread."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        from threadpoolctl import threadpool_limits  # present with scikit-learn; optional

        threadpool_limits(1, user_api="blas")
    except ImportError:
        pass


def register(sub) -> None:
    a = sub.add_parser("app", help="the screening app (Kivy): choose or capture a smear, get a result",
                       description="Start the Kivy screening app, or fit a release's out-of-distribution gate.")
    a.set_defaults(func=cmd_app, _parser=a)
    a.add_argument("--model", help="release folder models/<name> (default: the recommended one in "
                                   "--models-root/index.json)")
    a.add_argument("--models-root", default="models", help="folder of release folders (default: models)")
    a.add_argument("--db", help="history database (default: $LEUKEDGE_DB or ~/.local/share/leukedge/history.sqlite3)")
    a.add_argument("--fullscreen", action="store_true", help="fullscreen (kiosk / Raspberry Pi touch display)")
    a.add_argument("--threads", type=int, default=None, help="interpreter threads")
    a.add_argument("--camera", default=None,
                   help="camera source: index (0), kivy:0 (Kivy's camera, Android) or a video file")
    a.add_argument("--start-dir", default=None, help="folder the file chooser opens in")
    asub = a.add_subparsers(dest="app_command", metavar="ACTION")

    c = asub.add_parser("calibrate-ood", help="fit the out-of-distribution gate of a release (train/val splits)",
                        description="Run the release's int8 model over the training split (fit) and the validation "
                                    "split (threshold), write ood.npz/ood.json, set spec.ood and the card's hashes, "
                                    "and report the flag rate on the test split and on out-of-domain folders.")
    c.add_argument("release", help="release folder models/<name>")
    c.add_argument("--data", default=None, help="data folder (default: $LEUKEDGE_DATA or ../shared/data/aria-all)")
    c.add_argument("--split", default=None,
                   help="split manifest (default: the release's split.csv, else splits/<data folder>.split.csv)")
    c.add_argument("--ood-data", nargs="*", default=None,
                   help="out-of-domain folders to report (default: ../shared/data/pbc-lymphocytes when present)")
    c.add_argument("--percentile", type=float, default=99.0, help="validation percentile for thresholds (default 99)")
    c.add_argument("--components", type=int, default=32, help="PCA directions of the feature model (default 32)")
    c.add_argument("--image-margin", type=float, default=1.5,
                   help="image-statistics threshold = this x its validation percentile (default 1.5)")
    c.add_argument("--max-per-split", type=int, default=None, help="subsample each split (default: all images)")
    c.add_argument("--threads", type=int, default=None)
    c.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("predict", help="screen image files with a release (JSON or a table)",
                       description="Screen images with a released model: quality gate, out-of-distribution gate, "
                                   "probability and decision at the model card's threshold.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", default=None,
                   help="release folder models/<name> (default: the recommended release in models/index.json)")
    p.add_argument("--models-root", default="models", help="folder of releases and index.json (default: models)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads")
    p.add_argument("--variant", default=None, help="model file variant: int8 (default), pruned-int8, float32")
    p.add_argument("--operating-point", default=None, help="a validated operating point of the card (default: spec's)")
    p.set_defaults(func=cmd_predict)


def cmd_app(args: argparse.Namespace) -> int:
    if getattr(args, "app_command", None):
        return args.func(args)
    _limit_blas_threads()
    from .app import run_app

    from .inference import load_release
    from .models_index import resolve_model

    model = resolve_model(args.model, args.models_root)
    load_release(model)  # a bad or tampered release: one-line error before a window opens
    return run_app(model=model, db=args.db, models_root=args.models_root, fullscreen=args.fullscreen,
                   threads=args.threads, camera=args.camera, start_dir=args.start_dir)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from leukedge.data import resolve_data_dir

    from .calibrate import calibrate_from_data

    _limit_blas_threads()
    data = resolve_data_dir(args.data)
    ood_dirs = args.ood_data
    if ood_dirs is None:
        default = data.parent / "pbc-lymphocytes"
        ood_dirs = [default] if default.is_dir() else []
    report = calibrate_from_data(args.release, data, args.split, ood_dirs, n_components=args.components,
                                 percentile=args.percentile, num_threads=args.threads,
                                 max_per_split=args.max_per_split, image_margin=args.image_margin)
    print(f"OOD gate of {Path(args.release).name}: feature threshold {report['threshold']:.3f} "
          f"({args.percentile:g}th percentile of validation), image threshold {report['image_threshold']:.3f} "
          f"({args.image_margin:g} x that percentile)")
    print(f"{'set':<20} {'n':>6} {'flagged':>8} {'features':>9} {'image':>7}")
    for name, r in report["rates"].items():
        print(f"{name:<20} {r['n']:>6} {r['flagged']:>8.1%} {r['flagged_by_features']:>9.1%} "
              f"{r['flagged_by_image']:>7.1%}")
    return 0


def _table(results) -> str:
    lines = [f"{'image':<40} {'prob':>6} {'decision':<20} {'quality':<14} {'ood':<5} error"]
    for r in results:
        name = r.path if len(r.path or "") <= 40 else "..." + r.path[-37:]
        prob = "" if r.probability is None else f"{r.probability:.3f}"
        lines.append(f"{name:<40} {prob:>6} {r.decision or '-':<20} {r.quality or '-':<14} "
                     f"{'yes' if r.ood else 'no':<5} {r.error or ''}")
    return "\n".join(lines)


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from .inference import Screener
    from .models_index import resolve_model

    _limit_blas_threads()
    screener = Screener(resolve_model(args.model, args.models_root), num_threads=args.threads, variant=args.variant)
    if args.operating_point:
        screener.set_operating_point(args.operating_point)
    results = [screener.screen_image(path, heatmap=False) for path in args.images]
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        print(_table(results))
        n_err = sum(1 for r in results if r.error)
        print(f"{len(results) - n_err} screened, {n_err} unreadable; model {screener.release.name} "
              f"v{screener.release.version}, threshold {screener.threshold:.2f}", file=sys.stderr)
    return 2 if any(r.error for r in results) else 0
