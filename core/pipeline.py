"""`leukedge pipeline`: the README's main job, run as a list of ordinary subcommands.

Each step is exactly what a user would type, so the pipeline adds no behaviour of its
own; a step is run only when its subcommand exists in this install.
"""
from __future__ import annotations

import argparse
import logging
import time

log = logging.getLogger(__name__)


def steps(data: str, preset: str, out: str) -> list[list[str]]:
    """The pipeline's steps for a data folder and training preset."""
    manifest = f"{out}/split.csv"
    return [
        ["data", "check", data, "--json", f"{out}/data_check.json"],
        ["data", "split", data, "--out", manifest],
        ["data", "eda", data, "--out", f"{out}/eda"],
        ["train", "--preset", preset, "--data", data, "--split", manifest, "--runs", f"{out}/runs", "--resume-latest"],
        ["evaluate", "--model", f"{out}/runs/latest", "--data", data, "--split", manifest,
         "--json", f"{out}/evaluation.json", "--report", f"{out}/evaluation"],
    ]


def register(sub) -> None:
    p = sub.add_parser("pipeline", help="the main job: check -> split -> EDA -> train -> evaluate",
                       description="Run the whole pipeline on a data folder (each step is a leukedge subcommand).")
    p.add_argument("--data", default=None, help="data folder (default: $LEUKEDGE_DATA or ../shared/data/aria-all)")
    p.add_argument("--preset", default="quick", help="training preset (quick: minutes on a CPU; paper: DenseNet201)")
    p.add_argument("--out", default="reports/pipeline", help="output folder (default reports/pipeline)")
    p.set_defaults(func=cmd_pipeline)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from .cli import build_parser, main
    from .data import resolve_data_dir

    data = str(resolve_data_dir(args.data))
    parser = build_parser()
    available = set(parser._subparsers._group_actions[0].choices)  # the registered subcommands
    for step in steps(data, args.preset, args.out):
        if step[0] not in available:
            log.info("skipping `leukedge %s`: not in this install", step[0])
            continue
        print(f"==> leukedge {' '.join(step)}", flush=True)
        t0 = time.time()
        rc = main(step)
        if rc != 0:
            print(f"pipeline: step `leukedge {' '.join(step[:2])}` failed (exit {rc})")
            return rc
        print(f"    done in {time.time() - t0:.0f} s", flush=True)
    print(f"pipeline: outputs in {args.out}/")
    return 0
