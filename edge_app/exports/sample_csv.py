"""Samples as CSV: one row per field of view, with its sample's verdict (formula-safe cells)."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..records.store import SampleRecord
from ..records.wording import HEADLINES
from .csv_safe import to_csv
from .naming import export_name, write_new

COLUMNS = ("sample_id", "sample_uid", "id_source", "sample_time_local", "sample_time_utc", "verdict", "verdict_words",
           "sample_finished", "sample_voided", "sample_void_reason", "field", "field_time_local", "field_status",
           "probability", "threshold", "quality", "ood", "field_voided", "field_void_reason", "image_file",
           "image_sha256", "image_deleted", "model_name", "model_version", "model_variant", "model_sha256",
           "signature_status")


def rows(samples: Iterable[SampleRecord]) -> list[list]:
    out = []
    for s in samples:
        head = [s.sample_id, s.uid, s.id_source, s.created.display(), s.created.utc, s.verdict.code,
                HEADLINES[s.verdict.code], s.finished, s.voided, s.void_reason or ""]
        if not s.fields:
            out.append(head + [""] * (len(COLUMNS) - len(head)))
        for f in s.fields:
            out.append(head + [f.seq, f.created.display(), f.status,
                               "" if f.probability is None else round(f.probability, 6),  # None unless scored
                               "" if f.threshold is None else f.threshold, f.quality or "", f.ood, f.voided,
                               f.void_reason or "", f.image_path.name if f.image_path else "", f.image_sha256 or "",
                               f.image_deleted, f.model_name, f.model_version, f.model_variant, f.model_sha256,
                               f.signature_status])
    return out


def samples_csv(samples: Iterable[SampleRecord]) -> str:
    return to_csv(COLUMNS, rows(samples))


def export_samples_csv(samples: Iterable[SampleRecord], folder: str | os.PathLike) -> Path:
    """A new timestamped ``leukedge-samples-<time>.csv`` in ``folder``."""
    return write_new(folder, export_name("leukedge-samples", "csv"), samples_csv(samples).encode("utf-8"))
