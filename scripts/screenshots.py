#!/usr/bin/env python
"""Render every screen of the app offscreen to PNG files (for the README): `make screenshots`.

Drives the real app (leukedge.edge_app.autopilot "layout") with the recommended release
(models/index.json) on real test-split smears, at three screen sizes: a phone in portrait
(360x640 dp, files at the top of docs/screenshots/), a Raspberry Pi 7" display in landscape
(800x480, docs/screenshots/pi7-800x480/) and a tablet (768x1024, docs/screenshots/tablet-768x1024/),
plus the phone in French (docs/screenshots/fr/). Screens: capture, capture_error (corrupt file),
capture_camera (a video file as the camera), result (refer), result_other (no signs found),
result_ood (a lymphocyte crop: cannot assess), history, detail, model, guide, pin, settings.
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

from leukedge.edge_app.models_index import resolve_model
from leukedge.errors import LeukEdgeError
from leukedge.imageio import load_image


def pick_inputs(data: Path) -> dict[str, Path]:
    """A test-split smear of each decision side, a lymphocyte crop; from the split manifest when present."""
    aria, lymph = data / "aria-all", data / "pbc-lymphocytes"
    manifest = Path("splits/aria-all.split.csv")
    smear = smear2 = None
    if manifest.exists():
        with open(manifest, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
        smear = next((aria / r["path"] for r in rows if r["class"] == "Pre"), None)
        smear2 = next((aria / r["path"] for r in rows if r["class"] == "Benign"), None)
    smear = smear or sorted((aria / "Pre").glob("*.jpg"))[0]
    smear2 = smear2 or sorted((aria / "Benign").glob("*.jpg"))[0]
    ood = sorted(lymph.glob("*/*.jpg"))[0] if lymph.is_dir() else None
    return {"smear": smear, "smear2": smear2, "ood": ood}


def save_png(src, target: Path) -> None:
    """Re-encode a screenshot at PNG's highest compression (lossless, about half the size)."""
    cv2.imwrite(str(target), cv2.imread(str(src)), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def make_video(path: Path, images: list) -> None:

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (224, 224))
    for f in images:
        writer.write(cv2.cvtColor(cv2.resize(load_image(f), (224, 224)), cv2.COLOR_RGB2BGR))
    writer.release()


#: (sub-folder of --out, window size, language, screens kept (None: all))
TARGETS = (("", "360x640", None, None), ("pi7-800x480", "800x480", None, None),
           ("tablet-768x1024", "768x1024", None, ("capture", "result", "history", "settings", "guide")),
           ("fr", "360x640", "fr", ("capture", "result", "result_other", "result_ood", "settings", "guide")))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="release folder (default: the recommended one in models/index.json)")
    ap.add_argument("--out", default="docs/screenshots")
    ap.add_argument("--data", default=os.environ.get("LEUKEDGE_SHARED_DATA", "../shared/data"))
    args = ap.parse_args(argv)
    try:
        model = resolve_model(args.model, "models")
    except LeukEdgeError as exc:
        print(f"screenshots: error: {exc.one_line()}", file=sys.stderr)
        return 2
    inputs = pick_inputs(Path(args.data))
    for sub, size, language, keep in TARGETS:
        rc = render(model, inputs, Path(args.out) / sub, size, language, keep)
        if rc:
            return rc
    return 0


def render(model: Path, inputs: dict, out: Path, size: str, language: str | None, keep=None) -> int:
    """Run the autopilot layout scenario on ``model`` at ``size``; copy its screenshots to ``out``."""
    with tempfile.TemporaryDirectory() as d:
        chooser = Path(d, "images")
        chooser.mkdir()
        links = {}
        for k, f in inputs.items():   # a small folder so the file list shows only these
            if f is not None:
                links[k] = chooser / Path(f).name
                links[k].symlink_to(Path(f).resolve())
        links["corrupt"] = chooser / "corrupt-photo.jpg"
        links["corrupt"].write_bytes(b"\xff\xd8\xff\xe0 truncated JPEG")
        links["camera"] = Path(d, "camera.avi")   # a "camera" for devices without one: the smears as a video
        make_video(links["camera"], [inputs["smear"], inputs["smear2"]])
        env = {**os.environ, "SDL_VIDEODRIVER": os.environ.get("SDL_VIDEODRIVER", "offscreen"),
               "KIVY_NO_ARGS": "1", "KIVY_NO_CONFIG": "1",
               "KIVY_NO_FILELOG": "1", "KIVY_LOG_MODE": "PYTHON", "OPENBLAS_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "leukedge.edge_app.autopilot", "layout", "--model", str(model),
               "--db", f"{d}/history.sqlite3", "--out", f"{d}/report.json", "--shots", f"{d}/shots",
               "--size", size, "--timeout", "240"] + [a for k, v in links.items() for a in (f"--{k}", str(v))]
        if language:
            cmd += ["--language", language]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
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
            name = name[:-len(size) - 1]
            if keep is None or name in keep:
                save_png(path, out / f"{name}.png")
                print(out / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
