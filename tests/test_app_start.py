"""The app's start and one field with the recommended release, offscreen: the first frame needs only
the first screen and none of the model's heavy imports (the model is verified and loaded after it),
and the probability the app stores equals ``leukedge predict``'s for the same image and release.

Times are measured, not asserted: ``python -m leukedge.edge_app.measure`` (docs/app.md).
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from test_app import ENV, pilot

pytestmark = pytest.mark.app

RELEASE = Path("models/efficientnet-lite0-subtype")


def test_first_frame_comes_before_the_model_and_its_heavy_imports(tmp_path):
    r = pilot("startup", "--model", RELEASE, "--db", tmp_path / "h.sqlite3", "--out", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["ok"] and rep["model_error"] is None
    assert rep["capture_status"].startswith("Ready: efficientnet-lite0-subtype")   # loaded and verified after
    assert rep["screens_at_first_frame"] == ["capture"]       # the other screens are made on their first visit
    heavy = {"numpy", "cv2", "ai_edge_litert", "pydantic", "tensorflow", "fpdf", "reportlab", "fhir"}
    assert heavy.isdisjoint(rep["imported_at_first_frame"]), rep["imported_at_first_frame"]
    marks = rep["marks"]
    assert marks["main"]["unix"] <= marks["imported"]["unix"] <= marks["built"]["unix"] \
        <= marks["first_frame"]["unix"] <= marks["model_ready"]["unix"]
    assert rep["tensorflow_imported"] == []


def test_app_without_model_opens_the_recommended_release_not_the_first_by_name(tmp_path):
    """Issue 22 defect 5: started as Android's main.py starts it (no --model, the repository's models/
    folder), the app verifies and loads the release models/index.json recommends."""
    index = json.loads(Path("models/index.json").read_text())
    first_by_name = sorted(p.parent.name for p in Path("models").glob("*/card.json"))[0]
    assert index["recommended"] != first_by_name          # otherwise this test could not tell them apart
    r = pilot("startup", "--models-root", "models", "--db", tmp_path / "h.sqlite3", "--out", tmp_path / "r.json",
              "--size", "360x640")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["model_error"] is None and rep["release"] == index["recommended"]
    assert rep["capture_status"].startswith(f"Ready: {index['recommended']}")


def test_app_probability_equals_leukedge_predict(tmp_path, smear_paths):
    image = smear_paths["Pre"][1]
    db = tmp_path / "h.sqlite3"
    r = pilot("latency", "--model", RELEASE, "--db", db, "--out", tmp_path / "r.json", "--images", image,
              "--repeat", "1", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    con = sqlite3.connect(db)
    status, prob, probs = con.execute("SELECT status, probability, probabilities FROM fields").fetchone()
    con.close()
    p = subprocess.run([sys.executable, "-m", "leukedge.cli", "predict", str(image), "--model", str(RELEASE),
                        "--json"], capture_output=True, text=True, timeout=120, env=ENV)
    assert p.returncode == 0, p.stderr[-2000:]
    ref = json.loads(p.stdout)[0]
    assert ref["decision"] in ("positive", "negative") and prob is not None, (status, ref["decision"])
    assert abs(prob - ref["probability"]) <= 1e-6
    stored = json.loads(probs)
    assert set(stored) == set(ref["probabilities"])
    assert all(abs(stored[k] - ref["probabilities"][k]) <= 1e-6 for k in stored)
