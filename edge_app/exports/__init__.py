"""Hand-over exports of screening records: CSV (formula-safe), referral PDF, FHIR R4 JSON.

Every export is a new timestamped file (:mod:`.naming`): none overwrites an earlier one,
and a failed export (full disk) leaves nothing behind and the database untouched.
"""
from .csv_safe import FORMULA_START, neutralise, to_csv
from .naming import ExportError, export_name, write_new

__all__ = ["FORMULA_START", "neutralise", "to_csv", "ExportError", "export_name", "write_new"]
