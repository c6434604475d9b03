"""`leukedge pipeline` (`make run`): the main job, from smears to a release the app opens.

check -> split -> EDA -> train -> evaluate -> compress (int8 + parity gates, by the recipe)
-> bench (quick) -> sign -> the command that opens the release in the app.

Each step is exactly what a user would type: the pipeline runs ordinary subcommands through
the command registry of :mod:`leukedge.cli` (so this core module imports no stage), and a
step whose subcommand is not in this install is skipped with one line. The release is written
to ``<out>/release/<name>`` (or ``--release-out``), never over the committed ``models/``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .cli import build_parser, main
from .data import resolve_data_dir
from .errors import ConfigError
from .quiet import native_noise_filtered, quiet_environment
from .spec import ModelSpec

log = logging.getLogger(__name__)

#: Where ``make run`` looks for the project's release-signing key (relative to the working directory).
DEFAULT_KEY = "../shared/release-key/leukedge-release.key"


@dataclass
class Step:
    """One stage: its name and the subcommand line (``argv`` may be computed when the stage
    starts, from what the earlier stages wrote)."""

    name: str
    argv: list[str] | Callable[[], list[str]]
    own_progress: bool = False  # the stage draws its own bar (training: epoch, step, ETA)
    notes: list[str] = field(default_factory=list)

    def resolve(self) -> list[str]:
        return self.argv() if callable(self.argv) else list(self.argv)


def release_name(run: Path) -> str:
    """``<backbone>-<task>`` of a training run (from its spec.json)."""
    spec = ModelSpec.load(run)
    return f"{spec.backbone}-{spec.task}"


def plan(data: str, preset: str, out: str, release_out: str | None = None, recipe: str | None = None,
         key: str | None = DEFAULT_KEY, available: set[str] | None = None,
         allow_unsigned: frozenset[str] = frozenset()) -> list[Step]:
    """The pipeline's stages for a data folder and training preset.

    ``available`` (the registered subcommands) drops the stages this install cannot run;
    ``key`` is the release-signing key, used when the file exists; ``allow_unsigned`` names the
    subcommands that refuse an unsigned release without ``--allow-unsigned`` (bench measures the
    new release before it is signed, so the card lists its benchmarks when it is).
    """
    manifest = f"{out}/split.csv"
    run = f"{out}/runs/latest"
    rel_parent = release_out or f"{out}/release"

    def release() -> str:
        return f"{rel_parent}/{release_name(Path(run))}"

    def compress() -> list[str]:
        return ["compress", run, "--out", release(), "--data", data] + (["--recipe", recipe] if recipe else [])

    steps = [
        Step("check", ["data", "check", data, "--json", f"{out}/data_check.json"]),
        Step("split", ["data", "split", data, "--out", manifest]),
        Step("eda", ["data", "eda", data, "--out", f"{out}/eda"]),
        Step("train", ["train", "--preset", preset, "--data", data, "--split", manifest, "--runs", f"{out}/runs",
                       "--resume-latest"], own_progress=True),
        Step("evaluate", ["evaluate", "--model", run, "--data", data, "--split", manifest,
                          "--json", f"{out}/evaluation.json", "--report", f"{out}/evaluation"]),
        Step("compress", compress),
        Step("bench", lambda: ["bench", release(), "--quick", "--no-peak", "--runtimes", "litert", "--save-release",
                               "--json", f"{out}/bench.json"] + (["--allow-unsigned"] if "bench" in allow_unsigned else [])),
    ]
    if key and Path(key).is_file():
        steps.append(Step("sign", lambda: ["release", "sign", release(), "--key", key]))
    if available is not None:
        kept = [s for s in steps if _command(s) in available]
        for s in steps:
            if s not in kept:
                log.info("skipping %s: `leukedge %s` is not in this install", s.name, _command(s))
        steps = kept
    return steps


def _command(step: Step) -> str:
    return {"compress": "compress", "bench": "bench", "sign": "release"}.get(step.name) or \
        step.resolve()[0]


def register(sub) -> None:
    p = sub.add_parser("pipeline", help="the main job: check -> split -> EDA -> train -> evaluate -> compress -> "
                                        "bench -> a signed release",
                       description="Run the whole pipeline on a data folder (each step is a leukedge subcommand) "
                                   "and end with a release folder in the models/<name> layout, signed when the "
                                   "project key is there, and the command that opens it in the app.")
    p.add_argument("--data", default=None, help="data folder (default: $LEUKEDGE_DATA or ../shared/data/aria-all)")
    p.add_argument("--preset", default="quick", help="training preset (quick: minutes on a CPU; paper: DenseNet201)")
    p.add_argument("--out", default="runs/pipeline", help="output folder (default runs/pipeline)")
    p.add_argument("--release-out", default=None, metavar="DIR",
                   help="parent folder of the release (default OUT/release); not the committed models/")
    p.add_argument("--recipe", default=None, metavar="FILE", help="compression recipe (default: int8 + parity gates)")
    p.add_argument("--key", default=DEFAULT_KEY, help=f"release-signing key, used when it exists (default {DEFAULT_KEY})")
    p.set_defaults(func=cmd_pipeline)


def _refuse_committed(release_out: str | None) -> None:
    if release_out and Path(release_out).resolve() == Path("models").resolve():
        raise ConfigError("the pipeline does not write over the committed releases in models/",
                          "pass --release-out DIR elsewhere (e.g. runs/release) and copy a release in by hand")


class StageBar:
    """One bar per stage: ``[4/8] train  1:23`` ticking on a terminal, then ``done in 83 s``."""

    def __init__(self, index: int, total: int, name: str, ticking: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=1, desc=f"[{index}/{total}] {name:<9}", file=sys.stderr, leave=True,
                        bar_format="{desc} {elapsed}{postfix}", disable=False)
        self._stop = threading.Event()
        self._tick = threading.Thread(target=self._run, daemon=True) if ticking and sys.stderr.isatty() else None
        if self._tick:
            self._tick.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.bar.refresh()

    def close(self, status: str) -> None:
        self._stop.set()
        if self._tick:
            self._tick.join()
        self.bar.set_postfix_str(status, refresh=False)
        self.bar.update(1)
        self.bar.close()


def cmd_pipeline(args: argparse.Namespace) -> int:
    debug = bool(getattr(args, "debug", False))
    _refuse_committed(args.release_out)
    if not debug:
        quiet_environment()
        os.environ.setdefault("LEUKEDGE_PROGRESS", "0")  # the pipeline draws one bar per stage
        for handler in logging.getLogger().handlers:  # the console; a run's train.log keeps its INFO lines
            handler.setLevel(logging.WARNING)
    data = str(resolve_data_dir(args.data))
    parser = build_parser()
    available = set(parser._subparsers._group_actions[0].choices)  # the registered subcommands
    commands = parser._subparsers._group_actions[0].choices
    unsigned_ok = frozenset(n for n, p in commands.items() if "--allow-unsigned" in p._option_string_actions)
    steps = plan(data, args.preset, args.out, args.release_out, args.recipe, args.key, available, unsigned_ok)
    quiet_unsigned = UnsignedUntilSigned() if not debug and any(s.name == "sign" for s in steps) else None
    if "release" not in available:
        print("pipeline: signing not available in this build: the release will be unsigned")
    elif not (args.key and Path(args.key).is_file()):
        print(f"pipeline: no signing key at {args.key}: the release will be unsigned")
    handlers = list(logging.getLogger().handlers) if quiet_unsigned else []
    for handler in handlers:
        handler.addFilter(quiet_unsigned)
    try:
        with native_noise_filtered(not debug):
            for i, step in enumerate(steps, 1):
                argv = step.resolve()
                if debug:
                    print(f"==> leukedge {' '.join(argv)}", flush=True)
                rc = _run_stage(i, len(steps), step, argv, main, debug, Path(args.out) / "logs")
                if rc != 0:
                    print(f"pipeline: step `{step.name}` (leukedge {' '.join(argv[:2])}) failed (exit {rc})")
                    return rc
    finally:  # only the pipeline's own stages: a later command in the same process logs as usual
        for handler in handlers:
            handler.removeFilter(quiet_unsigned)
    _finish(args, steps, available, parser)
    return 0


class UnsignedUntilSigned(logging.Filter):
    """Keeps the "unsigned release" warnings of the stages that run before the pipeline's own
    sign stage (compress evaluates, bench measures the release it is about to sign) off the
    console: they go to the stage's log (the redirected stdout) instead. Every other warning
    still reaches the console."""

    LOGGERS = ("leukedge.release_check", "leukedge.benchmarks.cli", "leukedge.compress.cli")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage().upper()
        if record.name in self.LOGGERS and ("UNSIGNED" in text or "NOT SIGNED" in text):
            print(f"{record.levelname} {record.name}: {record.getMessage()}", file=sys.stdout)
            return False
        return True


def _run_stage(i: int, n: int, step: Step, argv: list[str], main, debug: bool, logs: Path) -> int:
    """One stage; unless ``debug``, what it prints goes to ``logs/<stage>.log`` (the console
    keeps one bar per stage, warnings and errors)."""
    if debug:
        return main(argv)
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{step.name}.log", "w", encoding="utf-8") as fh, contextlib.redirect_stdout(fh):
        return _run_quiet(i, n, step, argv, main)


def _run_quiet(i: int, n: int, step: Step, argv: list[str], main) -> int:
    t0 = time.time()
    if step.own_progress:
        os.environ.pop("LEUKEDGE_PROGRESS", None)
        print(f"[{i}/{n}] {step.name}", file=sys.stderr, flush=True)
        try:
            rc = main(argv)
        finally:
            os.environ["LEUKEDGE_PROGRESS"] = "0"
        print(f"[{i}/{n}] {step.name:<9} done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        return rc
    bar = StageBar(i, n, step.name, ticking=True)
    try:
        rc = main(argv)
    except BaseException:
        bar.close("interrupted")
        raise
    bar.close("done" if rc == 0 else f"exit {rc}")
    return rc


def summary_lines(out: Path, rel: Path) -> list[str]:
    """What the run measured: test metrics of the trained model and the release's parity gates."""
    lines = []
    ev = _read(out / "evaluation.json")
    if ev:
        m = ev["metrics"]
        lines.append("test split (trained model): " + ", ".join(
            f"{k} {m[k]['value']:.4f} [{m[k]['ci95'][0]:.3f}, {m[k]['ci95'][1]:.3f}]"
            for k in ("accuracy", "recall", "specificity", "roc_auc") if k in m) + f" (n = {ev.get('n')})")
    made = _read(rel / "compress.json")
    for label, r in ((made or {}).get("parity") or {}).items():
        lines.append(f"parity {label}: {'PASS' if r['passed'] else 'FAIL ' + ', '.join(r['failed'])}")
    return lines


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _finish(args, steps: list[Step], available: set[str], parser) -> None:
    names = [s.name for s in steps]
    if "compress" not in names:
        print(f"pipeline: outputs in {args.out}/ (no compress stage in this install: no release)")
        return
    rel = Path(args.release_out or f"{args.out}/release") / release_name(Path(f"{args.out}/runs/latest"))
    signed = "sign" in names
    for line in summary_lines(Path(args.out), rel):
        print(line)
    print(f"pipeline: outputs in {args.out}/ (each stage's output in {args.out}/logs/); "
          f"release {rel}/ ({'signed' if signed else 'unsigned'})")
    if "app" in available:
        app = parser._subparsers._group_actions[0].choices["app"]
        extra = "" if signed or "--allow-unsigned" not in app._option_string_actions else " --allow-unsigned"
        print(f"open it in the app:  leukedge app --model {rel}{extra}")
