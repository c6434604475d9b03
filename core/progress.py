"""Progress bars for long work (rate and ETA), silent when not on a terminal unless asked."""
from __future__ import annotations

import os
import sys


def progress(iterable, desc: str = "", total: int | None = None, unit: str = "it", **kw):
    """Wrap an iterable in a tqdm bar on stderr (rate, ETA).

    Disabled when ``LEUKEDGE_PROGRESS=0``; shown on a terminal or when ``LEUKEDGE_PROGRESS=1``.
    """
    from tqdm.auto import tqdm

    env = os.environ.get("LEUKEDGE_PROGRESS")
    disable = (env == "0") or (env is None and not sys.stderr.isatty())
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5, **kw)
