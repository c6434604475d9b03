"""One screening session at a time: the workflow the app's screens drive, without widgets.

:class:`ScreeningSession` holds the current sample and nothing else: starting a sample
forgets the previous one (its image, its result, its ID), so nothing can carry over
from one patient to the next. Call :meth:`add_field` on the worker thread (it screens
and commits); everything it returns is plain data for the UI thread.

Example::

    res = open_records(db_path)                  # show res.notice / res.problem if set
    session = ScreeningSession(res.store, screener)
    session.start("P-0042", id_source="scanned")
    step = session.add_field("smear1.jpg")       # on the worker thread
    step.field.status, step.verdict.code, step.text.headline
    session.finish()                             # verdict recorded; the session is empty again
    paths = session.hand_over(sample_uid, "exports/")   # PDF + FHIR + CSV, new files each time
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from leukedge.errors import ConfigError

from .errors import RecordsError
from .store import FieldRecord, RecordStore, SampleRecord
from .verdict import Verdict
from .wording import VerdictText, verdict_text

log = logging.getLogger(__name__)

EXPORT_KINDS = ("pdf", "fhir", "csv")


@dataclass(frozen=True)
class Step:
    """What one field changed: the field as recorded, the sample's verdict now, and its words."""

    field: FieldRecord
    verdict: Verdict
    text: VerdictText
    sample: SampleRecord


class ScreeningSession:
    """The current sample of a screening session.

    Args:
        store: an open :class:`RecordStore`.
        screener: a :class:`~leukedge.edge_app.inference.Screener` (its release names the model,
            version, variant and signature status recorded with every field).
    """

    def __init__(self, store: RecordStore, screener):
        self.store = store
        self.screener = screener
        self.sample_uid: str | None = None

    @property
    def card(self) -> dict:
        return getattr(getattr(self.screener, "release", None), "card", None) or {}

    def start(self, sample_id: str, id_source: str = "typed") -> SampleRecord:
        """Start a new sample; an unfinished previous one is finished first (its verdict recorded)."""
        if self.sample_uid is not None:
            self.finish()
        rec = self.store.start_sample(sample_id, id_source)
        self.sample_uid = rec.uid
        return rec

    def current(self) -> SampleRecord | None:
        return None if self.sample_uid is None else self.store.sample(self.sample_uid)

    def add_field(self, image) -> Step:
        """Screen ``image`` (a path or an RGB frame) and record it as the next field of the current sample."""
        self._need_sample()
        return self.record_field(self.screener.screen_image(image), image)

    def record_field(self, screening, source, sample_uid: str | None = None) -> Step:
        """Record an already screened image as the next field (the app shows the result first, then saves).

        ``sample_uid`` (default: the current sample) must be the sample the image was taken for:
        a field is never recorded under a sample started after it was chosen.
        """
        uid = sample_uid or self._need_sample()
        if uid != self.sample_uid:
            raise ConfigError("this field belongs to a sample that is no longer open",
                              "start the sample again and retake the field")
        field = self.store.add_field(uid, screening, source=source, release=self.screener.release)
        rec = self.store.sample(uid)
        return Step(field, rec.verdict, verdict_text(rec.verdict, self.card), rec)

    def _need_sample(self) -> str:
        if self.sample_uid is None:
            raise ConfigError("no sample is open", "enter or scan the sample ID first")
        return self.sample_uid

    def finish(self) -> Verdict | None:
        """Finish the current sample (its verdict is recorded); the session is empty afterwards."""
        uid, self.sample_uid = self.sample_uid, None
        return None if uid is None else self.store.finish_sample(uid)

    def hand_over(self, sample_uid: str, folder: str | os.PathLike, kinds=EXPORT_KINDS) -> list[Path]:
        """Write the sample's referral PDF, FHIR bundle and/or CSV as new files; the export is audited."""
        from ..exports.fhir import export_sample_fhir
        from ..exports.pdf_report import export_sample_pdf
        from ..exports.sample_csv import export_samples_csv

        unknown = [k for k in kinds if k not in EXPORT_KINDS]
        if unknown:
            raise ConfigError(f"unknown export {unknown[0]!r}", f"choose from {', '.join(EXPORT_KINDS)}")
        rec = self.store.sample(sample_uid)
        writers = {"pdf": lambda: export_sample_pdf(rec, folder, self.card),
                   "fhir": lambda: export_sample_fhir(rec, folder, self.card),
                   "csv": lambda: export_samples_csv([rec], folder)}
        paths = [writers[k]() for k in kinds]
        try:
            self.store.log_event("exported", data={"files": [p.name for p in paths]}, sample_uid=sample_uid)
        except RecordsError as exc:  # a read-only history can still hand a sample over
            log.warning("export not recorded in the audit trail: %s", exc.one_line())
        return paths
