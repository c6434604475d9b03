"""CSV that a spreadsheet opens as data, never as formulas (OWASP CSV-injection rule).

A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is prefixed
with a single quote, so ``=HYPERLINK(...)`` or ``=cmd|' /C calc'!A0`` in a sample ID is
shown as text. Numbers written by the program (a probability, a count) are not text
cells and are left as they are; a negative number typed as a sample ID is text and is
quoted like any other.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

#: Leading characters a spreadsheet may treat as the start of a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value):
    """``value`` safe for a CSV cell: strings starting with a formula character get a leading quote."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str):
        return value
    return "'" + value if value.startswith(FORMULA_START) else value


def to_csv(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """CSV text (header first) with every text cell neutralised."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")  # RFC 4180; a cell holding a lone CR is then quoted too
    w.writerow([neutralise(h) for h in header])
    for r in rows:
        w.writerow([neutralise(v) for v in r])
    return buf.getvalue()
