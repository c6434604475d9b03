"""Progress bars for long work (rate and ETA), silent when not on a terminal unless asked."""
from __future__ import annotations

import os
import sys


def progress(iterable, desc: str = "", total: int | None = None, unit: str = "it", **kw):
    """Wrap an iterable in a tqdm bar on stderr (rate, ETA).

    Disabled when ``LEUKEDGE_PROGRESS=0``. On a terminal the bar refreshes twice a second;
    in a log file (background jobs, CI) it writes a line at most every 30 seconds.
    """
    from tqdm.auto import tqdm

    disable = os.environ.get("LEUKEDGE_PROGRESS") == "0"
    tty = sys.stderr.isatty()
    kw.setdefault("mininterval", 0.5 if tty else 30.0)
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, file=sys.stderr,
                dynamic_ncols=tty, **kw)
