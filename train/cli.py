"""`leukedge train`: train a classifier, resume a run, search hyperparameters, or fit the LR baseline.

Only argparse at import time; TensorFlow is imported inside the handler.
"""
from __future__ import annotations

import argparse

EPILOG = """examples:
  leukedge train --preset quick --split splits/aria-all.split.csv
  leukedge train --preset quick --task subtype --split splits/aria-all.split.csv
  leukedge train --preset paper --weights none --split splits/aria-all.split.csv
  leukedge train --resume runs/20261125-190000-densenet201-224
  leukedge train --preset paper --weights none --split s.csv --teacher models/efficientnet-lite0-subtype  # distill
  leukedge train --preset smoke --split s.csv --workers node0:2222,node1:2222 --worker-index 0   (docs/distributed.md)
  leukedge train --search --preset smoke --folds 2 --grid dropout=0.3,0.5 --grid lr=1e-3
  leukedge train --baseline lr --backbone efficientnet-lite0 --weights imagenet --split splits/aria-all.split.csv
"""


def register(sub) -> None:
    p = sub.add_parser("train", help="train a classifier (run folders, resume, presets, --search, LR baseline)",
                       description="Train a LeukEdge classifier into runs/<time>-<backbone>-<size>/. "
                                   "Options override the preset.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help="quick | paper | vgg16 | vgg16-bn | resnet50 | mobilenetv2 | smoke")
    p.add_argument("--backbone", help="backbone registry name (densenet201, efficientnet-lite0, tiny-cnn, ...)")
    p.add_argument("--weights", help="imagenet | none | PATH to a weights file")
    p.add_argument("--task", choices=("binary", "subtype"), help="binary (negative class vs rest) or subtype")
    p.add_argument("--negative-class", help="negative class folder of the binary task (default Benign)")
    p.add_argument("--input-size", type=int, help="input side in pixels (default: the backbone's)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", type=int, help="maximum epochs (both phases together)")
    p.add_argument("--lr", type=float, help="Adam learning rate (phase 1 / from scratch)")
    p.add_argument("--fine-tune-lr", type=float, help="Adam learning rate of fine-tuning")
    p.add_argument("--freeze-epochs", type=int, help="epochs with the pretrained backbone frozen")
    p.add_argument("--fine-tune-layers", type=int, help="unfreeze the top N backbone layers (0 = all)")
    p.add_argument("--dropout", type=float)
    p.add_argument("--dense-units", type=int)
    p.add_argument("--patience", type=int, help="early stopping patience (epochs)")
    p.add_argument("--balance", choices=("class_weight", "oversample", "both", "none"))
    p.add_argument("--no-augment", action="store_true", help="turn training augmentation off")
    p.add_argument("--seed", type=int)
    p.add_argument("--data", help="data folder (default $LEUKEDGE_DATA or ../shared/data/aria-all)")
    p.add_argument("--split", help="split manifest CSV (default: split the data into the run folder)")
    p.add_argument("--runs", help="parent folder of run folders (default runs)")
    p.add_argument("--max-steps-per-epoch", type=int, help="cap steps per epoch (smoke runs)")
    p.add_argument("--limit-per-class", type=int, help="use at most N images per class and split (tests)")
    p.add_argument("--threads", type=int, help="TensorFlow threads (default: all CPUs)")
    p.add_argument("--workers", metavar="H:P,H:P,...",
                   help="multi-worker training (MultiWorkerMirroredStrategy): every worker's host:port, the same "
                        "list on every worker; writes TF_CONFIG (or set TF_CONFIG yourself). --batch-size is global")
    p.add_argument("--worker-index", type=int, metavar="I", help="with --workers: this worker's position (0 = chief)")
    p.add_argument("--teacher", metavar="RELEASE",
                   help="knowledge distillation: a release (models/<name>) scores the training images once "
                        "(soft_targets.npz in the run folder); target = (1 - alpha) * label + alpha * teacher")
    p.add_argument("--distill-alpha", type=float, metavar="A", help="with --teacher: the teacher's weight in [0, 1] "
                                                                    "(default 0.5)")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="with --teacher: accept a teacher that is not a release signed by a trusted key")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other TrainConfig field (JSON value)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", metavar="RUN", help="continue the run folder RUN from its last completed epoch "
                   "(or a --search folder from its last finished fit)")
    g.add_argument("--resume-latest", action="store_true",
                   help="continue RUNS/latest if it is a run of the same backbone/task/size (a finished one is left as it is); "
                        "start a new run otherwise")
    g.add_argument("--finalize", metavar="RUN",
                   help="write spec.json/predictions.csv from RUN's current best.h5 (an unfinished run stays resumable)")
    g.add_argument("--search", action="store_true", help="grid search with grouped k-fold CV on train+val")
    g.add_argument("--baseline", choices=("lr",), help="lr: logistic regression + SMOTE on pooled backbone features")
    p.add_argument("--recalibrate-bn", type=int, default=0, metavar="N",
                   help="with --finalize: re-estimate BatchNorm statistics of the latest weights (last.h5) from N "
                        "un-augmented training batches first (precise BN; for backbones trained from scratch)")
    p.add_argument("--grid", action="append", metavar="NAME=V1,V2",
                   help="--search grid axis (dropout, batch_size, lr); repeat per axis")
    p.add_argument("--folds", type=int, help="--search: grouped k-fold folds (default 3)")
    p.add_argument("--features-from", metavar="RUN", help="--baseline lr: pooled features of a trained run's best.h5")
    p.set_defaults(func=cmd_train, _parser=p)


def config_from_args(args):
    from .config import AugmentConfig, from_preset, parse_set

    overrides = dict(backbone=args.backbone, weights=args.weights, task=args.task,
                     negative_class=args.negative_class, input_size=args.input_size, batch_size=args.batch_size,
                     epochs=args.epochs, lr=args.lr, fine_tune_lr=args.fine_tune_lr, freeze_epochs=args.freeze_epochs,
                     fine_tune_layers=args.fine_tune_layers, dropout=args.dropout, dense_units=args.dense_units,
                     patience=args.patience, balance=args.balance, seed=args.seed, data_dir=args.data,
                     split=args.split, runs_dir=args.runs, max_steps_per_epoch=args.max_steps_per_epoch,
                     limit_per_class=args.limit_per_class, threads=args.threads, search_folds=args.folds,
                     teacher=args.teacher, distill_alpha=args.distill_alpha,
                     teacher_allow_unsigned=True if args.allow_unsigned else None)
    overrides.update(parse_set(args.set))
    if args.no_augment:
        overrides["augment"] = AugmentConfig(enabled=False)
    if args.grid:
        from .search import parse_grid

        overrides["search_grid"] = parse_grid(args.grid)
    cfg = from_preset(args.preset, **overrides)
    if args.backbone and args.input_size is None and "input_size" not in overrides:
        cfg.input_size = None  # another backbone than the preset's: its own default size
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    log = logging.getLogger("leukedge.train")
    cluster = _cluster_from_args(args)
    if cluster is not None and (args.search or args.baseline or args.finalize):
        from leukedge.errors import ConfigError

        raise ConfigError("--search, --baseline and --finalize run on one machine", "unset TF_CONFIG / drop --workers")
    if args.resume:
        from .search import is_search_folder, run_search

        if is_search_folder(args.resume):  # a --search stopped part-way: continue its grid
            out = run_search(resume=args.resume)
            print(f"search results: {out / 'search.md'}")
            return 0
        from .trainer import train

        run = train(resume=args.resume)
        print(f"run folder: {run}")
        return 0
    if args.finalize:
        from .trainer import finalize

        summary = finalize(args.finalize, recalibrate_bn=args.recalibrate_bn)
        print(f"{args.finalize}: best epoch {summary.get('best_epoch')}, test " +
              ", ".join(f"{k} {v:.4f}" for k, v in summary["test"]["at_threshold"].items() if isinstance(v, float)))
        return 0
    cfg = config_from_args(args)
    if not cfg.teacher and (args.distill_alpha is not None or args.allow_unsigned):
        from leukedge.errors import ConfigError

        raise ConfigError("--distill-alpha and --allow-unsigned apply to a --teacher", "add --teacher models/<name>")
    if cfg.teacher and (args.search or args.baseline):
        from leukedge.errors import ConfigError

        raise ConfigError("--teacher (distillation) works with plain training runs only, not --search or --baseline",
                          "drop --teacher, or train without --search/--baseline")
    if args.search:
        from .search import run_search

        out = run_search(cfg)
        print(f"search results: {out / 'search.md'}")
        return 0
    if args.baseline == "lr":
        from .baseline_lr import run_baseline

        run = run_baseline(cfg, features_from=args.features_from)
        print(f"run folder: {run}")
        return 0
    from .trainer import latest_to_resume, train

    if args.resume_latest:
        prev = latest_to_resume(cfg)
        if prev is not None:
            log.info("resuming %s", prev)
            run = train(resume=prev)
            print(f"run folder: {run}")
            return 0
    run = train(cfg)
    if cluster is not None and not cluster.is_chief:
        print(f"worker {cluster.rank} of {cluster.n_workers} finished (the chief writes the run folder)")
        return 0
    print(f"run folder: {Path(run)}")
    return 0


def _cluster_from_args(args):
    """``--workers``/``--worker-index`` -> ``TF_CONFIG`` (exclusive with a set one); the validated cluster."""
    import os

    from leukedge.errors import ConfigError

    from .distribute import ENV, cluster_from_env, tf_config_for

    if args.workers is not None:
        if os.environ.get(ENV, "").strip():
            raise ConfigError(f"both --workers and {ENV} are set", f"use one of them (unset {ENV} or drop --workers)")
        os.environ[ENV] = tf_config_for(args.workers, args.worker_index)
    elif args.worker_index is not None:
        raise ConfigError("--worker-index needs --workers")
    return cluster_from_env()
