"""`leukedge bench MODEL...` and `leukedge bench compare RESULT.json...`.

Every measurement runs in a fresh child process with ``OPENBLAS_NUM_THREADS=1`` set in its
environment before numpy loads (numpy's BLAS threads otherwise fight the interpreter's
threads and double LiteRT latency); this process only plans, collects and reports.
Exit codes: 0 when the benchmark ran (rows of failing runtimes are in the results with
``status: "error"``; ``--fail-on-error`` makes that exit 1), 2 for unusable input.
"""
from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger(__name__)

USAGE = """leukedge bench MODEL... [--json OUT] [--md OUT.md] [--plot OUT.png] [options]
       leukedge bench compare RESULT.json... [--json MERGED] [--md OUT.md] [--plot OUT.png]
       leukedge bench captures --model M [--data DIR] [--limit N] [--json OUT] [--md OUT.md] [--plot OUT.png]
       leukedge bench tiles --model M [--data DIR] [--limit N] [--factors LIST] [--field mirror|mosaic] [--json OUT] [--md OUT.md]"""
DESCRIPTION = """Measure what a model costs on this device: load time, batch-1 latency (p50/p90/p99,
mean, std), throughput, peak memory, file and gzip size, a thread sweep, MACs and efficiency
against a measured matmul peak, end to end (decode -> preprocess -> inference -> Grad-CAM) and
the harness's own overhead. MODEL: .tflite files, release folders (models/<name>: every .tflite
in it, spec.json for the preprocessing, the Keras reference rebuilt or read from best.h5) or
run folders. `bench compare` merges result files from several devices into one table and plot.
`bench captures` perturbs real test-split smears with each capture family (eyepiece photo, white
balance, exposure, stain, JPEG, noise, rotation/flip, magnification, defocus, motion) at several
severities and screens them like `leukedge predict`: correct / retake / flagged / wrong / missed
leukemia per family and severity. `bench tiles` validates the rule that combines a full-field
photo's tiles: validation smears as full-field photos at lower magnification (and through an
eyepiece), screened as tiles at the training cell size, sensitivity / specificity per rule
(max, mean, noisy_or) and factor, and the rule chosen (sensitivity >= 0.99, then specificity)."""


def register(sub) -> None:
    p = sub.add_parser("bench", help="latency, memory, size and accuracy per model, runtime and device",
                       usage=USAGE, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL", help="models to measure, or `compare` followed by result JSON files")
    p.add_argument("--json", metavar="OUT", help="write the results (schema leukedge-bench v1) / the merged results")
    p.add_argument("--md", metavar="OUT.md", help="write the Markdown report")
    p.add_argument("--plot", metavar="OUT.png", help="write the latency / latency-vs-accuracy plot")
    p.add_argument("--runtimes", metavar="LIST", help="comma list of litert,tflite-runtime,keras "
                   "(default: litert plus those installed)")
    p.add_argument("--threads", metavar="LIST", default=None, help="comma list of thread counts, `all` = all cores "
                   "(default 1,2,all; --quick: all)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--runs", type=int, metavar="N", help="timed invocations per row (fixed count)")
    g.add_argument("--min-time", type=float, metavar="S", help="seconds of timed invocations per row (default 2)")
    p.add_argument("--warmup", type=int, default=None, metavar="N", help="warm-up invocations (default 5; --quick 1)")
    p.add_argument("--rounds", type=int, default=1, metavar="N", help="repeat the latency rows N times round-robin "
                   "and pool the samples (steadier on a shared machine; default 1)")
    p.add_argument("--quick", action="store_true", help="CI mode: 5 runs, 1 warm-up, all cores only, short e2e/overhead")
    p.add_argument("--images", metavar="DIR", help="smears for the timed input and end to end "
                   "(default: $LEUKEDGE_DATA or ../shared/data/aria-all when present)")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end timing")
    p.add_argument("--no-overhead", action="store_true", help="skip the harness-overhead measurement")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak probe (no efficiency %%)")
    p.add_argument("--save-release", action="store_true",
                   help="also write models/<name>/bench/<device-id>-<runtime>.json for release folders")
    p.add_argument("--timeout", type=float, default=900.0, metavar="S", help="seconds allowed per measurement (default 900)")
    p.add_argument("--fail-on-error", action="store_true", help="exit 1 when any row has status error")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="development only: measure a release whose signature is missing, wrong or untrusted "
                        "(the result says \"unsigned\")")
    c = p.add_argument_group("bench captures")
    c.add_argument("--model", metavar="M", help="captures: the release folder")
    c.add_argument("--data", metavar="DIR", help="captures: data folder of the split manifest "
                   "(default: $LEUKEDGE_DATA or ../shared/data/aria-all)")
    c.add_argument("--split", metavar="CSV", help="captures: split manifest (default: the release's split.csv)")
    c.add_argument("--limit", type=int, metavar="N", help="captures: at most N test smears, spread evenly; tiles: N validation smears")
    c.add_argument("--families", metavar="LIST", help="captures: comma list of families (default: all)")
    c.add_argument("--variant", metavar="V", help="captures: model file variant (default int8)")
    c.add_argument("--normalize", default="none", metavar="N", help="captures: capture normalisation before "
                   "screening: none, fov, fov+background, fov+reinhard, fov+macenko (indication only)")
    c.add_argument("--seed", type=int, default=0, help="captures: perturbation seed (default 0)")
    c.add_argument("--subset", default="test", choices=("test", "val"),
                   help="captures: manifest split the smears come from (default test; val for tuning)")
    t = p.add_argument_group("bench tiles (also --model, --data, --split, --limit, --variant, --seed, --threads)")
    t.add_argument("--factors", metavar="LIST", default="0.5,0.7,0.85,1.0",
                   help="tiles: magnification factors of the full-field photos (default 0.5,0.7,0.85,1.0)")
    t.add_argument("--eyepiece-level", type=int, default=2, metavar="L",
                   help="tiles: each factor also through an eyepiece of this level (1-3; 0: none; default 2)")
    t.add_argument("--field", choices=("mirror", "mosaic"), default="mirror",
                   help="captures and tiles: a lower-magnification photo is the smear tiled with its mirror images "
                        "(mirror, the default) or a mosaic of the smear and 8 neighbouring smears of its split "
                        "group (mosaic: real, different cells; docs/captures.md 13, 16)")
    p.set_defaults(func=cmd_bench, _parser=p)


def _threads(text: str | None, quick: bool) -> list[int]:
    from leukedge.errors import ConfigError
    from leukedge.runtime import max_threads

    if text is None:
        return [0] if quick else [1, 2, 0]
    out = []
    for tok in text.split(","):
        tok = tok.strip().lower()
        if tok == "all":
            out.append(0)
        elif tok.isdigit() and int(tok) > 0:
            n = int(tok)
            if n > max_threads():
                log.warning("--threads %d is more than %d (4 x the CPUs): using %d", n, max_threads(), max_threads())
                n = max_threads()
            out.append(n)
        else:
            raise ConfigError(f"--threads: '{tok}' is not a positive number or 'all'", "e.g. --threads 1,2,all")
    return out


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse unusable --json/--md/--plot paths before minutes of measuring."""
    from leukedge.fileio import check_output_path

    for flag in ("json", "md", "plot"):
        if getattr(args, flag, None):
            check_output_path(getattr(args, flag), f"--{flag} output")


def _default_images(arg: str | None) -> str | None:
    if arg:
        return arg
    from leukedge.data import resolve_data_dir

    try:
        d = resolve_data_dir(None)
    except Exception:  # noqa: BLE001 - no default data is fine: the input is then random
        return None
    return str(d) if d.is_dir() else None


def _signatures(models: list[str], allow_unsigned: bool) -> dict[str, str]:
    """``{MODEL: verified | unsigned | unverified}``. A release folder that fails verification
    raises (one line); with ``allow_unsigned`` it is measured as ``unsigned`` (its rows still
    refuse any file whose sha256 differs from the card). A lone file is ``unverified``."""
    from pathlib import Path

    from leukedge.errors import ModelError
    from leukedge.release_check import UNSIGNED, UNVERIFIED, verify_release

    out = {}
    for m in models:
        p = Path(m)
        if p.is_dir() and (p / "card.json").exists():
            try:
                out[m] = verify_release(p, allow_unsigned).status
            except ModelError as exc:
                if not allow_unsigned:
                    raise
                log.warning("%s", exc.one_line())
                out[m] = UNSIGNED
        else:
            out[m] = UNVERIFIED
        if out[m] != "verified":
            log.warning("%s: %s (not a signed release; its numbers say so)", m, out[m].upper())
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    if args.models[0] == "compare":
        return cmd_compare(args)
    if args.models[0] == "captures":
        return cmd_captures(args)
    if args.models[0] == "tiles":
        return cmd_tiles(args)
    from leukedge.errors import ConfigError
    from leukedge.fileio import atomic_write_json

    from . import report
    from .schema import validate
    from .suite import BenchConfig, release_files, run_benchmark

    for flag in ("runs", "warmup", "rounds"):
        v = getattr(args, flag)
        if v is not None and v < (0 if flag == "warmup" else 1):
            raise ConfigError(f"--{flag} must be {'zero or more' if flag == 'warmup' else 'positive'}, got {v}")
    if args.min_time is not None and args.min_time <= 0:
        raise ConfigError(f"--min-time must be positive, got {args.min_time}")
    _check_outputs(args)
    cfg = BenchConfig(
        models=args.models,
        runtimes=[r.strip() for r in args.runtimes.split(",") if r.strip()] if args.runtimes else None,
        threads=_threads(args.threads, args.quick),
        runs=args.runs if args.runs else (5 if args.quick and args.min_time is None else None),
        min_time=args.min_time if args.min_time else 2.0,
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 5),
        images=_default_images(args.images), quick=args.quick, e2e=not args.no_e2e,
        overhead=not args.no_overhead, peak=not args.no_peak,
        e2e_runs=5 if args.quick else 30, overhead_rounds=2 if args.quick else 12, timeout=args.timeout,
        rounds=args.rounds)
    signatures = _signatures(args.models, args.allow_unsigned)  # refuse unsigned releases before measuring
    doc = validate(run_benchmark(cfg), "benchmark result")
    doc["signatures"] = signatures
    _write_outputs(args, doc, report.markdown(doc),
                   lambda out: report.plot(doc["results"], out, title=f"LeukEdge benchmark on {doc['device']['id']}"))
    if args.save_release:
        from leukedge.card import refresh_benchmarks
        from leukedge.portable import portable_record

        written = release_files(doc)
        for path, sub in written.items():
            # paths relative to the release (or data set names), never this machine's absolute paths
            atomic_write_json(path, validate(portable_record(sub, path.parent.parent), str(path)))
            log.info("wrote %s", path)
        for folder in sorted({p.parent.parent for p in written}):
            refresh_benchmarks(folder)
    failed = [r for r in doc["results"] if r["status"] == "error"]
    if failed:
        log.warning("%d of %d rows failed (see the status column)", len(failed), len(doc["results"]))
    return 1 if (failed and args.fail_on_error) else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from leukedge.errors import ConfigError
    from leukedge.fileio import atomic_write_json, atomic_write_text

    from . import report

    files = args.models[1:]
    if not files:
        raise ConfigError("bench compare needs result files", "leukedge bench compare A.json B.json ...")
    _check_outputs(args)
    docs = [report.load_result(f) for f in files]
    merged = report.merge(docs, files)
    md = report.compare_markdown(merged)
    print(md)
    if args.json:
        atomic_write_json(args.json, merged)
    if args.md:
        atomic_write_text(args.md, md)
    if args.plot:
        report.plot(merged["results"], args.plot, title="LeukEdge benchmark: devices compared")
    return 0


def _check_one_model(args: argparse.Namespace, action: str) -> None:
    """``bench captures|tiles`` take one ``--model`` (no positional models) and a positive ``--limit``."""
    from leukedge.errors import ConfigError

    if len(args.models) > 1:
        raise ConfigError(f"bench {action} takes --model, not positional models ({args.models[1:]})",
                          f"leukedge bench {action} --model models/<name> --data DIR")
    if not args.model:
        raise ConfigError(f"bench {action} needs --model", f"leukedge bench {action} --model models/<name>")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be positive, got {args.limit}")


def cmd_captures(args: argparse.Namespace) -> int:
    from leukedge.data import resolve_data_dir

    from . import captures_report
    from .captures import CaptureBenchConfig, run_captures

    _check_one_model(args, "captures")

    cfg = CaptureBenchConfig(model=args.model, data=str(resolve_data_dir(args.data)), split=args.split,
                             limit=args.limit, seed=args.seed, variant=args.variant, normalize=args.normalize,
                             subset=args.subset, allow_unsigned=args.allow_unsigned, field=args.field,
                             threads=int(args.threads) if args.threads and args.threads.isdigit() else None)
    if args.families:
        cfg.families = [f.strip() for f in args.families.split(",") if f.strip()]
    doc = run_captures(cfg)
    _write_outputs(args, doc, captures_report.markdown(doc), lambda out: captures_report.plot(doc, out))
    return 0


def cmd_tiles(args: argparse.Namespace) -> int:
    from leukedge.data import resolve_data_dir
    from leukedge.errors import ConfigError

    from .tile_rule import TileRuleConfig, markdown, run_tile_rule

    _check_one_model(args, "tiles")
    try:
        factors = [float(f) for f in args.factors.split(",") if f.strip()]
    except ValueError:
        raise ConfigError(f"--factors: '{args.factors}' is not a comma list of numbers", "e.g. --factors 0.5,0.7,1.0") from None
    if not factors:
        raise ConfigError("--factors is empty", "e.g. --factors 0.5,0.7,0.85,1.0")
    _check_outputs(args)
    cfg = TileRuleConfig(model=args.model, data=str(resolve_data_dir(args.data)), split=args.split,
                         limit=args.limit, factors=factors, eyepiece_level=args.eyepiece_level, seed=args.seed,
                         variant=args.variant, allow_unsigned=args.allow_unsigned, field_kind=args.field,
                         threads=int(args.threads) if args.threads and args.threads.isdigit() else None)
    doc = run_tile_rule(cfg)
    _write_outputs(args, doc, markdown(doc), None)
    return 0


def _write_outputs(args: argparse.Namespace, doc: dict, md: str, plot) -> None:
    """Print the Markdown table and write what was asked: ``--json``, ``--md``, ``--plot``."""
    from leukedge.fileio import atomic_write_json, atomic_write_text

    print(md)
    for out, write in ((args.json, lambda: atomic_write_json(args.json, doc)),
                       (args.md, lambda: atomic_write_text(args.md, md)), (args.plot, lambda: plot(args.plot))):
        if out and out is args.plot and plot is None:
            log.warning("--plot: this benchmark has no plot (ignored)")
            continue
        if out:
            write()
            log.info("wrote %s", out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: leukedge bench ...")
