"""What to measure: models named on the command line, their files' facts and accuracy.

:func:`discover` turns a MODEL argument (a ``.tflite`` file, a release folder
``models/<name>`` or a run folder) into :class:`~leukedge.benchmarks.runtimes.Target` s;
:func:`file_facts` gives sha256, size and gzip size; :func:`find_metric` reads the accuracy
of one file from the release's ``parity.json`` / ``evaluation.json``; :func:`card_check`
compares the file's hash with ``card.json``.
"""
from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

from leukedge.errors import ConfigError, ModelError
from leukedge.fileio import sha256_file

from .runtimes import Target

log = logging.getLogger(__name__)

KNOWN_VARIANTS = ("pruned-int8", "int16x8", "int8", "float32", "float16", "dynamic")  # longest suffix first
VARIANT_ORDER = ("int8", "pruned-int8", "int16x8", "float16", "dynamic", "float32")    # order of the rows
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


# ----- discovery --------------------------------------------------------------------------------
def _split_name(path: Path) -> tuple[str, str]:
    stem = path.name[: -len(".tflite")]
    for v in KNOWN_VARIANTS:
        if stem.endswith("." + v):
            return stem[: -len(v) - 1], v
    return stem, "tflite"


def _backbone(spec_path: Path | None) -> str | None:
    if spec_path and spec_path.exists():
        try:
            return json.loads(spec_path.read_text()).get("backbone")
        except (OSError, json.JSONDecodeError):
            return None
    return None


def _keras_source(folder: Path) -> Path | None:
    """The trained Keras model of a run folder (best.h5) or of a release (compress.json's source)."""
    if (folder / "best.h5").exists():
        return folder / "best.h5"
    record = _read_json(folder / "compress.json")
    src = Path(str(record.get("source"))) if isinstance(record, dict) and record.get("source") else None
    return src if src and src.suffix == ".h5" and src.exists() else None


def discover(arg: str, with_keras: bool) -> list[Target]:
    """Targets named by one MODEL argument.

    Raises:
        ModelError: the path does not exist or holds no model.
    """
    p = Path(arg)
    if not p.exists():
        raise ModelError(f"{arg}: no such file or folder", "name .tflite files or release folders (models/<name>)")
    if p.is_file():
        spec = p.parent / "spec.json"
        spec_path = str(spec) if spec.exists() else None
        if p.suffix == ".tflite":
            name, variant = _split_name(p)
            return [Target(name, variant, str(p), str(p.parent) if spec_path else None, spec_path, _backbone(spec))]
        if p.suffix == ".h5":
            return [Target(p.parent.name if spec_path else p.stem, "keras-float32", str(p),
                           str(p.parent) if spec_path else None, spec_path, _backbone(spec))]
        raise ModelError(f"{arg}: not a model file (expected .tflite or .h5)", "name .tflite files or release folders")
    spec = p / "spec.json"
    spec_path = str(spec) if spec.exists() else None
    targets = []
    tflites = sorted(p.glob("*.tflite"), key=lambda f: (VARIANT_ORDER.index(_split_name(f)[1])
                                                       if _split_name(f)[1] in VARIANT_ORDER else 99, f.name))
    for f in tflites:
        _, variant = _split_name(f)
        targets.append(Target(p.name, variant, str(f), str(p), spec_path, _backbone(spec)))
    h5 = _keras_source(p)
    if with_keras and (h5 or spec_path):
        targets.append(Target(p.name, "keras-float32", str(h5) if h5 else None, str(p), spec_path, _backbone(spec)))
    if not targets:
        raise ModelError(f"{arg}: no .tflite, best.h5 or spec.json in this folder",
                         "name a release folder (models/<name>), a run folder or .tflite files")
    return targets


def find_images(folder: str | None, limit: int = 16) -> list[str]:
    """Up to ``limit`` image files spread over ``folder`` (recursively; classes interleaved by sorting)."""
    if not folder:
        return []
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{folder}: no such image folder", "pass --images DIR with smear images")
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_EXTS and f.is_file())
    if not files:
        raise ConfigError(f"{folder}: no images found", "pass --images DIR with .jpg/.png smears")
    step = max(1, len(files) // limit)
    return [str(f) for f in files[::step][:limit]]


# ----- file facts and metrics --------------------------------------------------------------------
def file_facts(path: str | None) -> dict:
    if not path:
        return {"sha256": None, "size_mb": None, "gzip_mb": None}
    data = Path(path).read_bytes()
    mb = 1024 * 1024
    return {"sha256": sha256_file(path), "size_mb": round(len(data) / mb, 3),
            "gzip_mb": round(len(gzip.compress(data, compresslevel=6)) / mb, 3)}


def _metric_in(obj, variant: str, file: str):
    """Accuracy for ``variant``/``file`` anywhere in a parity/evaluation JSON (tolerant of layout)."""
    if isinstance(obj, dict):
        acc = obj.get("accuracy")
        if isinstance(acc, dict) and isinstance(acc.get("value"), (int, float)):
            return float(acc["value"])
        if isinstance(acc, (int, float)) and not isinstance(acc, bool):
            return float(acc)
        if "metrics" in obj:
            v = _metric_in(obj["metrics"], variant, file)
            if v is not None:
                return v
    return None


def find_metric(model_dir: str | None, variant: str, file: str) -> dict | None:
    """Accuracy of one release file from ``parity.json`` (per variant) or ``evaluation.json``.

    parity.json (``leukedge compress``): the ``metrics_ci`` of the comparison side whose ``file``
    is this file (or whose ``kind`` is ``keras`` for the Keras reference); other layouts: the
    first object keyed by the variant or naming the file that holds ``accuracy``;
    evaluation.json (``{"metrics": {"accuracy": {"value": v}}}``) applies to the file it names
    (``model``/``file`` key) or, when it names none, to the release's default int8 file.
    """
    if not model_dir:
        return None
    d = Path(model_dir)
    parity = _read_json(d / "parity.json")
    if isinstance(parity, dict) and isinstance(parity.get("comparisons"), dict):
        # leukedge compress: {"comparisons": {label: {"reference": {file, kind}, "candidate": {...},
        #                                          "metrics_ci": {"reference": {accuracy: {value}}, ...}}}}
        for comp in parity["comparisons"].values():
            for role in ("candidate", "reference"):
                who = (comp.get(role) or {}) if isinstance(comp, dict) else {}
                hit = (str(who.get("file", "")).endswith(file) if who.get("file")
                       else variant.startswith("keras") and who.get("kind") == "keras")
                v = _metric_in((comp.get("metrics_ci") or {}).get(role), variant, file) if hit else None
                if v is not None:
                    return {"name": "accuracy", "value": v, "source": "parity.json"}
    if parity is not None:
        for node in _walk(parity):
            for key, val in node.items():
                named = key == variant or (isinstance(val, dict) and str(val.get("file", val.get("model", ""))).endswith(file))
                if named and isinstance(val, dict):
                    v = _metric_in(val, variant, file)
                    if v is not None:
                        return {"name": "accuracy", "value": v, "source": "parity.json"}
    ev = _read_json(d / "evaluation.json")
    if ev is not None:
        who = ev.get("model") or ev.get("file") or ""
        names = str(who.get("file") or "") if isinstance(who, dict) else str(who)  # evaluate: {"model": {file...}}
        if (names and names.endswith(file)) or (not names and variant == "int8"):
            v = _metric_in(ev, variant, file)
            if v is not None:
                return {"name": "accuracy", "value": v, "source": "evaluation.json"}
    return None


def card_check(t: Target, sha256: str | None) -> bool | None:
    """Does the file's sha256 match the release's ``card.json["files"]``? (None: no card entry)."""
    if not (t.model_dir and sha256):
        return None
    card = _read_json(Path(t.model_dir) / "card.json")
    want = (card.get("files") or {}).get(t.file) if isinstance(card, dict) else None
    return None if not want else want == sha256


def _read_json(p: Path):
    try:
        return json.loads(p.read_text()) if p.exists() else None
    except (OSError, json.JSONDecodeError):
        log.warning("%s: not valid JSON, ignored", p)
        return None


def _walk(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)
