"""`leukedge app`, `leukedge app calibrate-ood` and `leukedge predict`.

Only argparse is imported here; Kivy, LiteRT and numpy are imported inside the handlers.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
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
    a.add_argument("--threads", type=int, default=None, help="interpreter threads (1 or more)")
    a.add_argument("--camera", default=None,
                   help="camera source: index (0), kivy:0 (Kivy's camera, Android) or a video file")
    a.add_argument("--start-dir", default=None, help="folder the file chooser opens in")
    a.add_argument("--allow-unsigned", action="store_true",
                   help="development only: run a release whose signature is missing, wrong or untrusted (results say \"unsigned\")")
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
    c.add_argument("--image-margin", type=float, default=None,
                   help="image-statistics threshold = this x its validation percentile (default 1.5 for the "
                        "field fit on ood_map and for plain, 1.25 for the field fit on features)")
    c.add_argument("--feature-input", choices=("auto", "ood_map", "features"), default="auto",
                   help="model output the feature distance reads: ood_map (the last residual block's map, "
                        "added by `leukedge compress`), features (the pooled features), auto (default): "
                        "ood_map when the model file has it")
    c.add_argument("--fit", choices=("field", "plain"), default="field",
                   help="field (default): fit on training images plus random rotated/flipped and capture-augmented "
                        "views of them (one inference per image at run time); plain: the images as they are "
                        "(releases before issue 19)")
    c.add_argument("--views", type=int, default=3, help="field fit: random views per image (default 3)")
    c.add_argument("--capture-p", type=float, default=0.75,
                   help="field fit: probability a view also gets a moderate capture family (default 0.75)")
    c.add_argument("--view-families", default=None,
                   help="field fit: comma list of the capture families the views sample (default: all but flip and the "
                        "benchmark-only resolution and phone); "
                        "leave out a family the model does not answer correctly (see `leukedge bench captures`), "
                        "so the gate keeps flagging it")
    c.add_argument("--train-limit", type=int, default=300,
                   help="field fit: training images used, evenly subsampled (default 300; 0 = all)")
    c.add_argument("--capture-limit", type=int, default=60,
                   help="field fit: test images checked under every capture family's moderate severities "
                        "(default 60; 0 = skip)")
    c.add_argument("--inputs", choices=("auto", "tiles", "centre"), default="auto",
                   help="what the gate is fitted and measured on: tiles (each usable tile of a view at the training "
                        "cell size, what the app's tile screen feeds the gate), centre (one centre input per view); "
                        "auto (default): tiles when the spec has magnification on")
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
    p.add_argument("--threads", type=int, default=None,
                   help="interpreter threads (1 or more; above 4 x the CPUs is clamped with a warning)")
    p.add_argument("--variant", default=None, help="model file variant: int8 (default), pruned-int8, float32")
    p.add_argument("--operating-point", default=None, help="a validated operating point of the card (default: spec's)")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="development only: run a release whose signature is missing, wrong or untrusted (results say \"unsigned\")")
    p.set_defaults(func=cmd_predict)


def cmd_app(args: argparse.Namespace) -> int:
    if getattr(args, "app_command", None):
        return args.func(args)
    from leukedge.runtime import check_threads

    args.threads = check_threads(args.threads)
    _limit_blas_threads()
    from .inference import load_release
    from .models_index import resolve_model

    model = resolve_model(args.model, args.models_root)
    # a bad, tampered or unsigned release: one-line error before Kivy is imported or a window opens
    load_release(model, allow_unsigned=args.allow_unsigned)
    from .app import run_app

    return run_app(model=model, db=args.db, models_root=args.models_root, fullscreen=args.fullscreen,
                   threads=args.threads, camera=args.camera, start_dir=args.start_dir,
                   allow_unsigned=args.allow_unsigned)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from leukedge.data import resolve_data_dir
    from leukedge.runtime import check_threads

    from .calibrate import calibrate_from_data
    from .ood_views import FieldViews

    args.threads = check_threads(args.threads)
    _limit_blas_threads()
    data = resolve_data_dir(args.data)
    ood_dirs = args.ood_data
    if ood_dirs is None:
        default = data.parent / "pbc-lymphocytes"
        ood_dirs = [default] if default.is_dir() else []
    views = None
    if args.fit == "field":
        fams = [f.strip() for f in args.view_families.split(",") if f.strip()] if args.view_families else None
        views = FieldViews(n_views=args.views, capture_p=args.capture_p,
                           **({"families": tuple(fams)} if fams is not None else {}))
    report = calibrate_from_data(args.release, data, args.split, ood_dirs, n_components=args.components,
                                 percentile=args.percentile, num_threads=args.threads,
                                 max_per_split=args.max_per_split, image_margin=args.image_margin,
                                 method=args.fit, views=views, train_limit=args.train_limit or None,
                                 capture_limit=args.capture_limit,
                                 tiles={"auto": None, "tiles": True, "centre": False}[args.inputs],
                                 feature_input=None if args.feature_input == "auto" else args.feature_input)
    print(f"OOD gate of {Path(args.release).name} ({args.fit} fit, reads {report['fit']['feature_input']}): "
          f"feature threshold {report['threshold']:.3f} "
          f"({args.percentile:g}th percentile of validation), image threshold {report['image_threshold']:.3f} "
          f"({report['image_margin']:g} x that percentile)")
    print(f"{'set':<28} {'n':>6} {'flagged':>8} {'features':>9} {'image':>7}")
    rows = list(report["rates"].items())
    rows += [(f"test {k}", r) for k, r in (report.get("dihedral") or {}).get("test", {}).items()]
    rows += [(f"test + {k}", r) for k, r in (report.get("captures") or {}).get("families", {}).items()]
    for name, r in rows:
        print(f"{name:<28} {r['n']:>6} {r['flagged']:>8.1%} {r['flagged_by_features']:>9.1%} "
              f"{r['flagged_by_image']:>7.1%}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from leukedge.runtime import check_threads

    from .inference import Screener
    from .models_index import resolve_model
    from .stream import JsonListWriter, TableWriter

    threads = check_threads(args.threads)
    _limit_blas_threads()
    screener = Screener(resolve_model(args.model, args.models_root), num_threads=threads, variant=args.variant,
                        allow_unsigned=args.allow_unsigned)
    if args.operating_point:
        screener.set_operating_point(args.operating_point)
    writer = JsonListWriter(sys.stdout) if args.json else TableWriter(sys.stdout)
    n = n_err = 0
    stop: list[int] = []
    # Ctrl-C / SIGTERM stop between two images (never in the middle of a write), so the JSON
    # list on stdout is always closed and valid.
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    writer.start()
    try:
        # One image at a time, written as soon as it is scored and then dropped: memory stays
        # flat for any number of images. A bad image gets its own `error`; the others are scored.
        for path in args.images:
            if stop:
                break
            r = screener.screen_image(path, heatmap=False)
            writer.write(r)
            n += 1
            n_err += r.error is not None
    finally:
        writer.end()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop:
        print(f"leukedge: interrupted after {n} of {len(args.images)} images", file=sys.stderr)
        return 130
    if not args.json:
        print(f"{n - n_err} screened, {n_err} unreadable; model {screener.release.name} "
              f"v{screener.release.version}, threshold {screener.threshold:.2f}, "
              f"signature {screener.release.signature_status}", file=sys.stderr)
    return 2 if n_err else 0
