"""`leukedge data check|split|eda`."""
from __future__ import annotations

import argparse
import json
import logging
import sys

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("data", help="check, split and explore a folder of class subfolders",
                       description="Check, split and explore an image folder with one subfolder per class.")
    p.set_defaults(_parser=p)
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")

    c = dsub.add_parser("check", help="counts, sizes, unreadable files, exact and near duplicates")
    c.add_argument("dir", nargs="?", help="data folder (default: $LEUKEDGE_DATA or ../shared/data/aria-all)")
    c.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    c.add_argument("--max-distance", type=int, default=10, help="perceptual-hash distance for near duplicates (default 10)")
    c.set_defaults(func=cmd_check)

    s = dsub.add_parser("split", help="grouped, stratified 70/15/15 split -> manifest CSV")
    s.add_argument("dir", nargs="?", help="data folder (default: $LEUKEDGE_DATA or ../shared/data/aria-all)")
    s.add_argument("--out", default=None, metavar="CSV",
                   help="manifest CSV, must end in .csv (default: splits/<folder>.split.csv); the summary is "
                        "written beside it as <name>.json")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--block-size", type=int, default=25, help="consecutive file numbers per group (default 25)")
    s.add_argument("--group-regex", default=None, help="group key: first capture group of this regex on the path")
    s.add_argument("--max-distance", type=int, default=10, help="near-duplicate perceptual-hash distance (default 10)")
    s.add_argument("--fractions", type=float, nargs=3, default=(0.70, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST"))
    s.set_defaults(func=cmd_split)

    e = dsub.add_parser("eda", help="EDA report: class balance, colour/texture, PCA, samples, corner stamps")
    e.add_argument("dir", nargs="?", help="data folder (default: $LEUKEDGE_DATA or ../shared/data/aria-all)")
    e.add_argument("--out", default="reports/eda", help="output folder (default reports/eda)")
    e.add_argument("--max-per-class", type=int, default=None, help="sample at most N images per class")
    e.set_defaults(func=cmd_eda)


def cmd_check(args: argparse.Namespace) -> int:
    from .check import check_folder
    from .data import resolve_data_dir
    from .fileio import atomic_write_json, check_output_path

    if args.json:
        check_output_path(args.json, "--json report", ".json")
    report = check_folder(resolve_data_dir(args.dir), max_distance=args.max_distance)
    print(report.to_text())
    if args.json:
        atomic_write_json(args.json, report.to_dict())
        log.info("wrote %s", args.json)
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .data import resolve_data_dir
    from .fileio import check_output_path
    from .split import SplitConfig, make_split, summary_path, write_manifest

    data_dir = resolve_data_dir(args.dir)
    out = Path(args.out or f"splits/{Path(data_dir).resolve().name}.split.csv")
    check_output_path(out, "split manifest (--out)", ".csv")
    check_output_path(summary_path(out), "split summary")
    cfg = SplitConfig(fractions=tuple(args.fractions), seed=args.seed, block_size=args.block_size,
                      group_regex=args.group_regex, near_dup_distance=args.max_distance)
    res = make_split(data_dir, cfg)
    write_manifest(res, out)
    s = res.summary
    print(f"wrote {out} ({sum(s['n'].values())} rows) and its summary {summary_path(out)}")
    for split in ("train", "val", "test", "excluded"):
        if split in s["counts"]:
            print(f"  {split:<9} n={s['n'][split]:<5} groups={s['groups'][split]:<4} {json.dumps(s['counts'][split])}")
    print(f"  near-duplicate pairs: {res.near_pairs} (merged {res.merged_groups} groups so none crosses splits)")
    return 0


def cmd_eda(args: argparse.Namespace) -> int:
    from .data import resolve_data_dir
    from .eda import run_eda
    from .fileio import check_output_dir

    check_output_dir(args.out, "EDA report folder (--out)")
    path = run_eda(resolve_data_dir(args.dir), args.out, max_per_class=args.max_per_class)
    print(f"wrote {path}")
    return 0
