"""The layering rule (tests/layering.py) holds on the source, and the checker catches breaches."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from layering import ALLOWED, check

ROOT = Path(__file__).resolve().parents[1]


def test_the_source_follows_the_layering_rule():
    assert check(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(text))
    return tmp_path


def test_the_checker_catches_each_kind_of_breach(tmp_path):
    root = _tree(tmp_path, {
        "core/bad.py": """
            from .train import io
            from . import compress

            def load():
                from leukedge.train.io import load_keras_model  # deferred does not hide it
                return load_keras_model
            """,
        "edge_app/bad.py": "from leukedge.compress.export import embed_spec\n",
        "compress/bad.py": """
            from leukedge.train.model import _private_helper
            import leukedge.train.model as m
            m._another(1)
            """,
        "train/sub/bad.py": "from ...edge_app.inference import Screener\n",
        "benchmarks/ok.py": """
            from leukedge.train.io import load_keras_model
            from leukedge import spec
            from ._local import helper
            from .cost import _op_macs
            """,
        "compress/ok.py": "from leukedge.train.io import load_keras_model\nfrom leukedge.edge_app.calibrate import calibrate_from_data\n",
    })
    found = check(root)
    text = "\n".join(found)
    assert "core/bad.py:2: core may not import train (leukedge.train)" in text
    assert "core/bad.py:3: core may not import compress (leukedge.compress)" in text
    assert "core/bad.py:6: core may not import train (leukedge.train.io)" in text
    assert "edge_app/bad.py:1: edge_app may not import compress" in text
    assert "compress/bad.py:2: private name _private_helper of leukedge.train.model" in text
    assert "compress/bad.py:4: private name _another of leukedge.train.model" in text
    assert "train/sub/bad.py:1: train may not import edge_app (leukedge.edge_app.inference)" in text
    assert not [v for v in found if "/ok.py" in v]  # allowed edges, own privates
    assert len(found) == 7, found


def test_no_layer_may_import_a_layer_that_imports_it():
    for a, deps in ALLOWED.items():
        assert a not in deps
        for b in deps:
            assert a not in ALLOWED[b], f"{a} <-> {b}"
    assert ALLOWED["core"] == set()


def test_help_and_the_tf_free_modules_import_no_tensorflow():
    """`leukedge --help` (every stage's CLI module) and core, the app's inference and the
    benchmarks' modules import without TensorFlow."""
    mods = sorted(f"leukedge.{p.stem}" for p in (ROOT / "core").glob("*.py") if p.stem not in ("__init__", "__main__"))
    mods += [f"leukedge.edge_app.{m}" for m in ("inference", "cli", "ood", "quality", "calibrate", "history")]
    mods += [f"leukedge.benchmarks.{p.stem}" for p in (ROOT / "benchmarks").glob("*.py")
             if p.stem not in ("__init__", "input_pipeline")]  # input_pipeline times TensorFlow training
    mods += ["leukedge.train", "leukedge.train.cli", "leukedge.compress.cli"]
    code = ("import importlib, sys\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            "from leukedge.cli import build_parser\n"
            "build_parser().format_help()\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', "
            "'tensorflow_model_optimization', 'kivy'))\n"
            "print(len(heavy), heavy[:5])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("0 "), out.stdout
