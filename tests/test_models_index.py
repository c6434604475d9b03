"""models/index.json: the recommended release is the default of the app and `leukedge predict`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_app import RELEASE_NAME, tiny_release  # noqa: F401  (fixture)
from leukedge.edge_app.models_index import recommended_release, resolve_model
from leukedge.errors import ModelError
from leukedge.spec import ModelSpec


def test_repository_index_recommends_the_best_validated_screen():
    index = json.loads(Path("models/index.json").read_text())
    assert recommended_release("models") == Path("models") / index["recommended"]
    assert {r["name"] for r in index["releases"]} == {p.parent.name for p in Path("models").glob("*/card.json")}
    assert index["reason"] and index["chosen_by"]

    # The rule written in the index, recomputed from each release's own validated operating point:
    # highest validation specificity among releases with validation sensitivity >= 0.99.
    def default_op(name):
        spec = ModelSpec.load(Path("models") / name)
        return next(o for o in spec.operating_points if abs(o.threshold - spec.threshold) < 1e-9)

    ops = {r["name"]: default_op(r["name"]) for r in index["releases"]}
    ok = {n: o for n, o in ops.items() if o.sensitivity >= 0.99}
    best = max(ok.values(), key=lambda o: o.specificity).specificity
    assert ops[index["recommended"]].specificity == best
    assert ops["densenet201-binary"].specificity < best       # the first by name is not the default
    for r in index["releases"]:                                # the index quotes the specs' numbers
        assert r["validation"]["specificity"] == pytest.approx(ops[r["name"]].specificity, abs=1e-4)


def test_without_an_index_one_release_is_used_and_several_are_refused(tmp_path, tiny_release):
    root = tmp_path / "models"
    root.mkdir()
    (root / RELEASE_NAME).symlink_to(tiny_release, target_is_directory=True)
    assert recommended_release(root) == root / RELEASE_NAME
    (root / "other").symlink_to(tiny_release, target_is_directory=True)
    assert recommended_release(root) is None
    with pytest.raises(ModelError, match="no --model given"):
        resolve_model(None, root)
    (root / "index.json").write_text(json.dumps({"recommended": "missing"}))
    with pytest.raises(ModelError, match="'missing' is not in"):
        resolve_model(None, root)
    assert resolve_model(root / "other", root) == root / "other"   # an explicit --model wins


def test_predict_without_model_uses_the_recommended_release(tmp_path, tiny_release, smear_paths):
    root = tmp_path / "models"
    root.mkdir()
    (root / RELEASE_NAME).symlink_to(tiny_release, target_is_directory=True)
    (root / "second").symlink_to(tiny_release, target_is_directory=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "leukedge.cli", "predict", str(smear_paths["Pre"][0]), "--models-root", str(root)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "no --model given" in r.stderr and "Traceback" not in r.stderr
    (root / "index.json").write_text(json.dumps({"recommended": RELEASE_NAME}))
    r = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out[0]["model"] == RELEASE_NAME and out[0]["error"] is None
