"""Write `leukedge predict` results as they are ready: a JSON list or a table, one image at a time.

Nothing is kept per image, so memory stays flat however many images are screened, and a
reader (a pipe, a log viewer) sees each result as soon as it exists. The JSON writer always
closes the list, even when screening stops half-way (Ctrl-C), so stdout stays valid JSON.
"""
from __future__ import annotations

import json
from typing import TextIO


class JsonListWriter:
    """``[`` + one object per result, comma-separated, + ``]``; flushed after every result."""

    def __init__(self, out: TextIO):
        self.out = out
        self.n = 0

    def start(self) -> None:
        self.out.write("[")
        self.out.flush()

    def write(self, result) -> None:
        text = json.dumps(result.to_json(), indent=2)
        self.out.write(("," if self.n else "") + "\n  " + text.replace("\n", "\n  "))
        self.out.flush()
        self.n += 1

    def end(self) -> None:
        self.out.write("\n]\n" if self.n else "]\n")
        self.out.flush()


class TableWriter:
    """A header, then one line per result."""

    HEADER = f"{'image':<40} {'prob':>6} {'decision':<20} {'quality':<14} {'ood':<5} error"

    def __init__(self, out: TextIO):
        self.out = out

    def start(self) -> None:
        self.out.write(self.HEADER + "\n")
        self.out.flush()

    def write(self, r) -> None:
        self.out.write(self.row(r) + "\n")
        self.out.flush()

    def end(self) -> None:
        self.out.flush()

    @staticmethod
    def row(r) -> str:
        path = printable(r.path or "")
        name = path if len(path) <= 40 else "..." + path[-37:]
        prob = "" if r.probability is None or not r.scored else f"{r.probability:.3f}"  # hidden scores stay hidden
        return (f"{name:<40} {prob:>6} {('retake (borderline)' if getattr(r, 'borderline', False) else r.decision) or '-':<20} {r.quality or '-':<14} "
                f"{'yes' if r.ood else 'no':<5} {printable(r.error or '')}")


def printable(text: str) -> str:
    """One printable line: file-name bytes that are not UTF-8 as ``\\xff``, newlines as ``\\n``
    (so any terminal encoding can print it and a row stays one row)."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text.replace("\r", "\\r").replace("\n", "\\n")
