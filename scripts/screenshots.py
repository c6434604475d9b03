#!/usr/bin/env python
"""Render issue 22's two-sample session offscreen to PNG files (for the README): `make screenshots`.

Drives the real app (leukedge.edge_app.autopilot "session") with the recommended release
(models/index.json) on real test-split smears at three screen sizes: a phone in portrait (360x640),
a Raspberry Pi 7" display in landscape (800x480) and a tablet (768x1024), plus the phone in French.
Sample A has three fields (a leukemia smear, the same smear blurred as by a shaking hand: unusable,
and a second leukemia smear), is finished and handed over (referral PDF, FHIR, CSV); "New sample"
clears everything; sample B has two benign smears; then History, a sample's detail, voiding a
field with a reason, the model, guide, PIN and settings screens. Files:
``docs/screenshots/session_<step>-<size>.png`` (French: ``session_<step>-360x640-fr.png``).
The smears are the first test-split ones (manifest order) that the release classifies correctly, so
that both the "refer" and the "no signs found" screens are shown; the ones skipped (the release's
errors, e.g. a benign smear it refers) are printed, and its error rates are in its model card.
Each run also audits the widget sizes (see tests/test_app_layout.py) and fails on a problem.

Usage: python scripts/screenshots.py [--model models/<name>] [--out docs/screenshots] [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

from leukedge.capture_sim import apply_capture
from leukedge.edge_app.models_index import resolve_model
from leukedge.errors import LeukEdgeError
from leukedge.imageio import load_image

#: Gaussian blur (sigma, px) of the unusable field: well past the quality gate's blur limit.
BLUR_SIGMA = 3.0


def first_correct(paths: list[Path], model: Path, decision: str, n: int = 2) -> list[Path]:
    """The first ``n`` of ``paths`` the release screens as ``decision``; the others are printed."""
    from leukedge.edge_app.inference import Screener

    screener, kept = Screener(model), []
    for f in paths:
        res = screener.screen_image(f, heatmap=False)
        if res.decision == decision:
            kept.append(f)
            if len(kept) == n:
                break
        else:
            print(f"screenshots: skipped {f.name}: the release gives {res.decision or res.error} "
                  f"(expected {decision})", file=sys.stderr)
    return kept


def pick_inputs(data: Path, model: Path | None = None) -> dict[str, list[Path]]:
    """Test-split smears: two of a leukemia class for sample A, two benign ones for sample B
    (with ``model``: the first ones it classifies correctly)."""
    aria = data / "aria-all"
    manifest = Path("splits/aria-all.split.csv")
    pre, benign = [], []
    if manifest.exists():
        with open(manifest, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
        pre = [aria / r["path"] for r in rows if r["class"] == "Pre"]
        benign = [aria / r["path"] for r in rows if r["class"] == "Benign"]
    pre = pre or sorted((aria / "Pre").glob("*.jpg"))
    benign = benign or sorted((aria / "Benign").glob("*.jpg"))
    if model is not None:
        return {"a": first_correct(pre, model, "positive"), "b": first_correct(benign, model, "negative")}
    return {"a": pre[:2], "b": benign[:2]}


def save_png(src, target: Path) -> None:
    """Re-encode a screenshot at PNG's highest compression (lossless, about half the size)."""
    cv2.imwrite(str(target), cv2.imread(str(src)), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def make_video(path: Path, images: list) -> None:
    """The smears as a phone sees them through an eyepiece (leukedge.capture_sim), as a video for the
    camera button: the preview then shows the framing guide's circle and square."""
    frames = [apply_capture("eyepiece", load_image(f), 1, seed=i) for i, f in enumerate(images)]
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (w, h))
    for frame in frames:
        writer.write(cv2.cvtColor(cv2.resize(frame, (w, h)), cv2.COLOR_RGB2BGR))
    writer.release()


#: (file suffix, window size, language, steps kept (None: all))
TARGETS = (("360x640", "360x640", None, None), ("800x480", "800x480", None, None),
           ("768x1024", "768x1024", None, ("01_capture", "03_a_field1", "04_a_field2", "06_a_finished",
                                           "09_b_finished", "10_history", "11_detail")),
           ("360x640-fr", "360x640", "fr", ("01_capture", "03_a_field1", "04_a_field2", "06_a_finished",
                                            "09_b_finished", "10_history")))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="release folder (default: the recommended one in models/index.json)")
    ap.add_argument("--out", default="docs/screenshots")
    ap.add_argument("--data", default=os.environ.get("LEUKEDGE_SHARED_DATA", "../shared/data"))
    ap.add_argument("--only", default=None, help="one size suffix of TARGETS (e.g. 800x480)")
    args = ap.parse_args(argv)
    try:
        model = resolve_model(args.model, "models")
    except LeukEdgeError as exc:
        print(f"screenshots: error: {exc.one_line()}", file=sys.stderr)
        return 2
    inputs = pick_inputs(Path(args.data), model)
    if len(inputs["a"]) < 2 or len(inputs["b"]) < 2:
        print(f"screenshots: error: fewer than two correctly classified test smears per class in {args.data}",
              file=sys.stderr)
        return 2
    for suffix, size, language, keep in TARGETS:
        if args.only and suffix != args.only:
            continue
        rc = render(model, inputs, Path(args.out), suffix, size, language, keep)
        if rc:
            return rc
    return 0


def render(model: Path, inputs: dict, out: Path, suffix: str, size: str, language: str | None, keep=None) -> int:
    """Run the autopilot session scenario on ``model`` at ``size``; copy its screenshots to ``out``."""
    with tempfile.TemporaryDirectory() as d:
        chooser = Path(d, "images")
        chooser.mkdir()
        a1, a3 = (chooser / f"A{i}-{f.name}" for i, f in zip((1, 3), inputs["a"]))
        a1.symlink_to(inputs["a"][0].resolve())
        a3.symlink_to(inputs["a"][1].resolve())
        a2 = chooser / f"A2-blurred-{inputs['a'][0].stem}.png"    # a shaken photo of A1's field: unusable
        cv2.imwrite(str(a2), cv2.GaussianBlur(cv2.imread(str(inputs["a"][0])), (0, 0), BLUR_SIGMA))
        b = []
        for i, f in enumerate(inputs["b"], 1):
            b.append(chooser / f"B{i}-{f.name}")
            b[-1].symlink_to(f.resolve())
        camera = Path(d, "camera.avi")   # a "camera" for devices without one: the smears through an eyepiece
        make_video(camera, inputs["a"])
        env = {**os.environ, "SDL_VIDEODRIVER": os.environ.get("SDL_VIDEODRIVER", "offscreen"),
               "KIVY_NO_ARGS": "1", "KIVY_NO_CONFIG": "1",
               "KIVY_NO_FILELOG": "1", "KIVY_LOG_MODE": "PYTHON", "OPENBLAS_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "leukedge.edge_app.autopilot", "session", "--model", str(model),
               "--db", f"{d}/history.sqlite3", "--out", f"{d}/report.json", "--shots", f"{d}/shots",
               "--size", size, "--timeout", "400", "--start-dir", str(chooser), "--camera", str(camera),
               "--fields-a", str(a1), str(a2), str(a3), "--fields-b", *map(str, b)]
        if language:
            cmd += ["--language", language]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=500)
        if r.returncode != 0:
            print(r.stderr[-3000:], file=sys.stderr)
            print(f"screenshots: error: the app run with {model} at {size} failed", file=sys.stderr)
            return 1
        report = json.loads(Path(d, "report.json").read_text())
        problems = {k: v["problems"] for k, v in report["audit"].items() if v["problems"]}
        if problems:
            print(f"screenshots: error: layout problems at {size}: {problems}", file=sys.stderr)
            return 1
        out.mkdir(parents=True, exist_ok=True)
        for name, path in report["screenshots"].items():
            step = name[len("session_"):-len(size) - 1]
            if keep is None or step in keep:
                target = out / f"session_{step}-{suffix}.png"
                save_png(path, target)
                print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
