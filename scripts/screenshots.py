#!/usr/bin/env python
"""Render every screen of the app offscreen to PNG files (for the README): `make screenshots`.

Drives the real app (leukedge.edge_app.autopilot "tour") with a released model on real
smears: capture screen, result with the Grad-CAM overlay, the camera preview (a video file as
the camera), an out-of-domain lymphocyte crop, a corrupt file, history, a record, the model
card, settings; and the result screen of a subtype model when one is released.

Usage: python scripts/screenshots.py [--model models/<name>] [--out docs/screenshots]
       [--data ../shared/data] [--size 480x800]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def pick_inputs(data: Path) -> dict[str, Path]:
    """A test-split smear of each decision side, a lymphocyte crop; from the split manifest when present."""
    aria, lymph = data / "aria-all", data / "pbc-lymphocytes"
    manifest = Path("splits/aria-all.split.csv")
    smear = smear2 = None
    if manifest.exists():
        import csv

        with open(manifest, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
        smear = next((aria / r["path"] for r in rows if r["class"] == "Pre"), None)
        smear2 = next((aria / r["path"] for r in rows if r["class"] == "Benign"), None)
    smear = smear or sorted((aria / "Pre").glob("*.jpg"))[0]
    smear2 = smear2 or sorted((aria / "Benign").glob("*.jpg"))[0]
    ood = sorted(lymph.glob("*/*.jpg"))[0] if lymph.is_dir() else None
    return {"smear": smear, "smear2": smear2, "ood": ood}


def make_video(path: Path, images: list) -> None:
    import cv2

    from leukedge.imageio import load_image

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (224, 224))
    for f in images:
        writer.write(cv2.cvtColor(cv2.resize(load_image(f), (224, 224)), cv2.COLOR_RGB2BGR))
    writer.release()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="release folder (default: the first models/*/card.json)")
    ap.add_argument("--out", default="docs/screenshots")
    ap.add_argument("--data", default=os.environ.get("LEUKEDGE_SHARED_DATA", "../shared/data"))
    ap.add_argument("--size", default="480x800")
    args = ap.parse_args(argv)
    cards = sorted(Path("models").glob("*/card.json"))
    model = Path(args.model) if args.model else (cards[0].parent if cards else None)
    if model is None or not (model / "card.json").exists():
        print("screenshots: error: no release folder (pass --model models/<name>; make one with `leukedge compress`)",
              file=sys.stderr)
        return 2
    inputs = pick_inputs(Path(args.data))
    out = Path(args.out)
    rc = tour(model, inputs, out, args.size, full=True)
    # The result screen of a subtype model (subtype probabilities), when one is released.
    subtype = next((c.parent for c in cards if c.parent != model and _task(c.parent) == "subtype"), None)
    if rc == 0 and subtype is not None and _task(model) != "subtype":
        rc = tour(subtype, inputs, out, args.size, full=False)
    return rc


def _task(release: Path) -> str:
    try:
        return json.loads((release / "spec.json").read_text()).get("task", "")
    except (OSError, ValueError):
        return ""


def tour(model: Path, inputs: dict, out: Path, size: str, full: bool) -> int:
    """Run the autopilot tour on ``model``; copy its screenshots (only the result one unless ``full``)."""
    with tempfile.TemporaryDirectory() as d:
        chooser = Path(d, "images")
        chooser.mkdir()
        links = {}
        for k, f in inputs.items():   # a small folder so the file chooser shows only these
            if f is not None and (full or k == "smear"):
                links[k] = chooser / Path(f).name
                links[k].symlink_to(Path(f).resolve())
        if full:
            links["corrupt"] = chooser / "corrupt-photo.jpg"
            links["corrupt"].write_bytes(b"\xff\xd8\xff\xe0 truncated JPEG")
            links["camera"] = Path(d, "camera.avi")   # a "camera" for devices without one: the smears as a video
            make_video(links["camera"], [inputs["smear"], inputs["smear2"]])
        env = {**os.environ, "SDL_VIDEODRIVER": os.environ.get("SDL_VIDEODRIVER", "offscreen"),
               "KIVY_NO_ARGS": "1", "KIVY_NO_CONFIG": "1",
               "KIVY_NO_FILELOG": "1", "KIVY_LOG_MODE": "PYTHON", "OPENBLAS_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "leukedge.edge_app.autopilot", "tour", "--model", str(model),
               "--db", f"{d}/history.sqlite3", "--out", f"{d}/report.json", "--shots", f"{d}/shots",
               "--size", size] + [a for k, v in links.items() for a in (f"--{k}", str(v))]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            print(r.stderr[-3000:], file=sys.stderr)
            print(f"screenshots: error: the app run with {model} failed", file=sys.stderr)
            return 1
        report = json.loads(Path(d, "report.json").read_text())
        out.mkdir(parents=True, exist_ok=True)
        for name, path in report["screenshots"].items():
            if name.startswith("result_heat"):   # the opacity checks of the tests, not for the docs
                continue
            if not full:
                if name != "result":
                    continue
                name = f"result_{_task(model)}"
            shutil.copyfile(path, out / f"{name}.png")
            print(out / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
