"""README.md's examples cannot go stale: every `leukedge ...` line of its bash blocks parses with
the real command-line parser (subcommand and every flag exist), every path it names under
models/ or docs/ exists, the cheap ones actually run, and the README stays a user's README."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path("README.md")
MAX_LINES = 400
PLACEHOLDER = re.compile(r"<[^>]+>|\$|\*|\.\.\.|^[A-Z][A-Z_0-9]*(\.[a-z]+)?$")


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S)


def commands(text: str) -> list[list[str]]:
    """Each shell command of the README's bash blocks as tokens (comments, continuations,
    `sudo` and VAR=value prefixes removed)."""
    out = []
    for block in bash_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            while tokens and (tokens[0] == "sudo" or re.match(r"^[A-Z_]+=", tokens[0])):
                tokens = tokens[1:]
            if tokens:
                out.append(tokens)
    return out


ALL = commands(README.read_text())
LEUKEDGE = [t for t in ALL if Path(t[0]).name == "leukedge"]


def _subparsers(parser):
    import argparse

    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def resolve(parser, args: list[str]):
    """The (sub)parser a command line ends in, and every option string valid there."""
    options = set()
    for a in parser._actions:
        options.update(a.option_strings)
    for tok in args:
        sub = _subparsers(parser)
        if tok.startswith("-") or sub is None:
            continue
        if tok not in sub.choices:
            break  # a positional argument of the current parser
        parser = sub.choices[tok]
        for a in parser._actions:
            options.update(a.option_strings)
    return parser, options


def test_readme_is_short_and_keeps_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_LINES
    first = bash_blocks(text)[0]
    assert [t[:2] for t in commands("```bash\n" + first + "```\n")] == [["make", "run"], ["make", "test"]]
    makefile = Path("Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in Path(".ci/run").read_text()
    assert len(LEUKEDGE) >= 15  # the tour is there


def test_links_and_paths_in_the_readme_exist():
    text = README.read_text()
    links = re.findall(r"\]\(([^)#:]+)\)", text)
    assert links and all(Path(p).exists() for p in links), [p for p in links if not Path(p).exists()]
    for tokens in ALL:
        for tok in tokens:
            path = tok.split("=", 1)[-1]
            if re.match(r"^(models|docs|benchmarks)/", path) and not PLACEHOLDER.search(path):
                assert Path(path).exists(), f"{' '.join(tokens)}: {path} does not exist"


@pytest.mark.parametrize("tokens", LEUKEDGE, ids=[" ".join(t[1:4]) for t in LEUKEDGE])
def test_every_leukedge_example_parses(tokens, capsys):
    from leukedge.cli import build_parser

    parser = build_parser()
    args = tokens[1:]
    if args and args[0] not in _subparsers(parser).choices and not args[0].startswith("-"):
        pytest.skip(f"`leukedge {args[0]}` is not registered in this build (added by another branch)")
    _, options = resolve(parser, args)
    for tok in args:
        if tok.startswith("--"):
            assert tok.split("=", 1)[0] in options, f"{' '.join(tokens)}: no option {tok}"
    if "--help" in args or "-h" in args:
        return  # run by test_cheap_examples_run
    try:
        ns = parser.parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"{' '.join(tokens)}: argparse refused it ({capsys.readouterr().err.strip()[-300:]}, exit {exc.code})")
    assert getattr(ns, "func", None) is not None, f"{' '.join(tokens)}: names no runnable subcommand"


def _run(args, timeout=120):
    env = {**os.environ, "LEUKEDGE_PROGRESS": "0", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "leukedge.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_help_example_runs_and_lists_every_subcommand_the_readme_uses():
    assert ["leukedge", "--help"] in LEUKEDGE
    res = _run(["--help"])
    assert res.returncode == 0, res.stderr[-500:]
    from leukedge.cli import build_parser

    registered = set(_subparsers(build_parser()).choices)
    used = {t[1] for t in LEUKEDGE if len(t) > 1 and not t[1].startswith("-")}
    for name in used & registered:
        assert re.search(rf"^\s+{name}\s", res.stdout, re.M), name


def test_release_verify_example_runs():
    from leukedge.cli import build_parser

    examples = [t for t in LEUKEDGE if t[1:3] == ["release", "verify"] and not PLACEHOLDER.search(t[3])]
    assert examples, "the README shows `leukedge release verify models/...`"
    if "release" not in _subparsers(build_parser()).choices:
        pytest.skip("`leukedge release` is not registered in this build (added by the release-signing branch)")
    for tokens in examples:
        res = _run(tokens[1:])
        assert res.returncode == 0, f"{' '.join(tokens)}: exit {res.returncode}: {res.stderr[-300:]}"


def test_predict_example_runs_on_real_smears(smear_paths):
    tokens = next(t for t in LEUKEDGE if t[1] == "predict")
    images = [str(smear_paths["Benign"][0]), str(smear_paths["Pro"][0])]
    args = [a for a in tokens[1:] if a != "IMG..."]
    args[1:1] = images
    res = _run(args)
    assert res.returncode == 0, res.stderr[-500:]
    out = json.loads(res.stdout)
    assert [o["path"] for o in out] == images
    for o in out:
        assert {"path", "probability", "decision", "ood", "quality", "error"} <= set(o) and o["error"] is None
