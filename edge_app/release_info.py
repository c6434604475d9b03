"""Release folders and card fields without numpy, OpenCV or LiteRT: what the app's first screen
needs (the settings' release list, the card's test metrics) before :mod:`.inference` is imported.
:mod:`.inference` re-exports these names."""
from __future__ import annotations

import os
from pathlib import Path


def card_metrics(card: dict) -> dict:
    """The card's test metrics ``{name: {"value", "ci95"}}`` (``evaluation.metrics``, else ``metrics``)."""
    ev = card.get("evaluation") or {}
    m = ev.get("metrics") if isinstance(ev, dict) else None
    if not m:
        m = card.get("metrics") or {}
        if isinstance(m.get("test"), dict):
            m = m["test"].get("metrics", m["test"])
    return m if isinstance(m, dict) else {}


def find_metric(card: dict, name: str):
    """The value of test metric ``name`` in a card, or None."""
    v = card_metrics(card).get(name)
    if isinstance(v, dict):
        v = v.get("value")
    return v if isinstance(v, (int, float)) else None


def list_releases(models_dir: str | os.PathLike = "models") -> list[Path]:
    """Release folders (with a ``card.json`` and a ``spec.json``) under ``models_dir``."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "card.json").is_file() and (p / "spec.json").is_file())
