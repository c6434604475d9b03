"""``predictions.csv``: one row per scored image, written by ``evaluate`` and read by the
report and the run comparison (:mod:`leukedge.compare`)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from .fileio import atomic_write_text

PRED_COLUMNS = ["path", "split", "class", "y_true", "probability", "prediction", "correct", "group",
                "probability_masked",
                "label", "predicted_label"]


def write_predictions(path, rows: list[dict]) -> Path:
    """Write ``rows`` with the known columns first (in :data:`PRED_COLUMNS` order)."""
    cols = [c for c in PRED_COLUMNS if rows and c in rows[0]]
    cols += [c for c in (rows[0] if rows else {}) if c not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def read_predictions(path) -> list[dict]:
    """The rows of a ``predictions.csv`` as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
