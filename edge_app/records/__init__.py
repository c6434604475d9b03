"""Screening records: samples of several fields of view, one verdict each, an append-only audit trail.

No widgets here: the app's screens and the exports call this API.

- :class:`RecordStore` (``store.py``): ``start_sample``, ``add_field``, ``finish_sample``,
  ``void_field``, ``void_sample``, ``correct_sample_id``, ``sample``, ``samples``, ``audit``,
  ``set_retention``, ``apply_retention``.
- :class:`ScreeningSession` (``session.py``): the current sample; ``start``, ``add_field``,
  ``finish``, ``hand_over`` (PDF + FHIR + CSV). What the app's screens call.
- :func:`open_records` (``recovery.py``): open, create, or recover a database; never raises
  for its state (damaged, read-only, missing, uncreatable folder).
- :func:`sample_verdict`, :class:`VerdictRule` (``verdict.py``): the documented rule.
- :func:`verdict_text`, :func:`score_text` (``wording.py``): what the screen and reports say.
"""
from .clock import Stamp
from .errors import RecordsError
from .recovery import OpenResult, open_records
from .session import ScreeningSession, Step
from .store import FieldRecord, RecordStore, SampleRecord, clean_sample_id
from .verdict import (CANNOT_ASSESS, NO_SIGNS, REFER, TAKE_MORE, Verdict, VerdictRule, field_status,
                      sample_verdict)
from .wording import VerdictText, performance_sentence, score_text, shown_probability, verdict_text

__all__ = ["ScreeningSession", "Step", "Stamp", "RecordsError", "OpenResult", "open_records", "FieldRecord", "RecordStore", "SampleRecord",
           "clean_sample_id", "CANNOT_ASSESS", "NO_SIGNS", "REFER", "TAKE_MORE", "Verdict", "VerdictRule",
           "field_status", "sample_verdict", "VerdictText", "performance_sentence", "score_text",
           "shown_probability", "verdict_text"]
