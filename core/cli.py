"""The `leukedge` command: a thin dispatcher over each stage's CLI module.

Each stage module named in :data:`COMMAND_MODULES` has ``register(subparsers)``, which adds
its subcommands with argparse and sets ``func`` on them. Those modules import only argparse
at import time; heavy work (TensorFlow, Kivy) is imported inside the handlers, so
``leukedge --help`` is fast and the app install works without TensorFlow.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from . import __version__
from .errors import LeukEdgeError
from .fileio import check_byte_limits

#: Stage CLI modules, in the order their commands are listed by ``leukedge --help``.
COMMAND_MODULES = [
    "leukedge.data_cli",
    "leukedge.evaluate_cli",
    "leukedge.train.cli",
    "leukedge.compress.cli",
    "leukedge.benchmarks.cli",
    "leukedge.edge_app.cli",
    "leukedge.edge_app.records.cli",
    "leukedge.pipeline",
    "leukedge.release_cli",
]

log = logging.getLogger("leukedge")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leukedge",
        description="LeukEdge: leukemia screening models from training to the edge "
                    "(data -> train -> evaluate -> compress -> parity -> bench -> app).",
    )
    parser.add_argument("--version", action="version", version=f"leukedge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def setup_logging(debug: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "PIL"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    # File names that are not valid in the terminal's encoding (bytes from another system)
    # print as \xff escapes instead of raising UnicodeEncodeError in the middle of a report.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, OSError, ValueError):
            # not a TextIOWrapper, or its fd was swapped for a pipe (the pipeline's noise filter)
            # after Python saw a seekable file there: keep the stream as it is
            pass
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.debug, args.quiet)
    if not getattr(args, "func", None):
        # `leukedge` or `leukedge data` alone: show the help of that level.
        (getattr(args, "_parser", None) or parser).print_help()
        return 0 if args.command is None else 2
    try:
        check_byte_limits()  # a bad LEUKEDGE_MAX_*_BYTES fails the command once, not every file
        rc = args.func(args)
        return int(rc or 0)
    except LeukEdgeError as exc:
        if args.debug:
            raise
        print(f"leukedge: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("leukedge: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        if args.debug:
            raise
        extra = {"tensorflow": "train", "tf_keras": "train", "tensorflow_model_optimization": "train",
                 "kivy": "app", "ai_edge_litert": "app"}.get((exc.name or "").split(".")[0])
        hint = f"; install it with: pip install 'leukedge[{extra}]'" if extra else ""
        print(f"leukedge: error: {exc.name} is not installed{hint}", file=sys.stderr)
        return 2
    except MemoryError:
        print("leukedge: error: out of memory; use smaller inputs or a smaller batch", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `leukedge predict ... | head`: the reader left; stay quiet (stdout is gone) like other Unix tools.
        _silence_stdout()
        return 141
    except OSError as exc:
        if args.debug:
            raise
        # A file the user named could not be read or written (full disk, read-only folder, a path
        # through a file...): one line naming it, not a traceback.
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f) or "a file"
        print(f"leukedge: error: cannot use {where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - last resort: a bug must still not print a traceback
        if args.debug:
            raise
        log.debug("unexpected error", exc_info=True)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"leukedge: internal error: {type(exc).__name__}{': ' + msg if msg else ''} "
              "(rerun with --debug for the traceback, and please report it)", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's exit-time flush of a closed pipe raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
