"""`leukedge samples evaluate`: validate the sample verdict rule on a release's test split.

Only argparse at import; the evaluation (LiteRT, numpy) is imported by the handler.
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub) -> None:
    s = sub.add_parser("samples", help="samples of several fields of view: validate the verdict rule",
                       description="Sample-level verdicts (several fields of view per sample).")
    s.set_defaults(_parser=s)
    ssub = s.add_subparsers(dest="samples_command", metavar="ACTION")
    e = ssub.add_parser("evaluate", help="sample-level sensitivity/specificity of each verdict rule on the test split",
                        description="Group the test split's images into simulated samples (by the split's group "
                                    "column, in file order), screen every image with the release (quality gate, OOD "
                                    "gate, threshold) and score the verdict rules (any-positive vs majority, K usable "
                                    "fields) with exact 95%% CIs.")
    e.add_argument("--model", action="append", required=True, help="release folder models/<name> (repeatable)")
    e.add_argument("--data", default=None, help="data folder (default: $LEUKEDGE_DATA or ../shared/data/aria-all)")
    e.add_argument("--split", default=None, help="split manifest (default: the release's split.csv)")
    e.add_argument("--fields", type=int, nargs="+", default=[3, 5], help="fields of view per sample (default: 3 5)")
    e.add_argument("--k", type=int, nargs="+", default=[1, 2, 3], help="usable fields needed (default: 1 2 3)")
    e.add_argument("--threads", type=int, default=None)
    e.add_argument("--json", default=None, help="write the full result as JSON")
    e.add_argument("--csv", default=None, help="write one row per release x fields x rule x K")
    e.add_argument("--md", default=None, help="write the Markdown tables")
    e.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from leukedge.errors import ConfigError, DataError
    from leukedge.fileio import atomic_write_json, atomic_write_text

    from .evaluate import csv_rows, evaluate_release, markdown_table

    if any(f < 1 for f in args.fields) or any(k < 1 for k in args.k):
        raise ConfigError("--fields and --k must be >= 1")
    data = Path(args.data or os.environ.get("LEUKEDGE_DATA") or "../shared/data/aria-all")
    if not data.is_dir():
        raise DataError(f"no data folder {data}", "pass --data DIR")
    results = [evaluate_release(m, data, args.split, tuple(args.fields), tuple(args.k), args.threads)
               for m in args.model]
    md = "\n".join(markdown_table(r) for r in results)
    print(md)
    if args.json:
        atomic_write_json(args.json, results)
    if args.md:
        atomic_write_text(args.md, md + "\n")
    if args.csv:
        rows = [row for r in results for row in csv_rows(r)]
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
    return 0
