"""Times with their zone: stored as UTC plus the local offset and zone name, shown local.

A record keeps the instant (UTC, ISO 8601 with ``Z``) and where the clock was (offset in
minutes east of UTC and the zone's name, e.g. ``CET``), so a report printed later in
another zone still says the local time the sample was screened, with its zone.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone


@dataclass(frozen=True)
class Stamp:
    """One instant: ``utc`` (ISO 8601, ``Z``), ``offset_min`` east of UTC, ``tz_name``."""

    utc: str
    offset_min: int
    tz_name: str

    @classmethod
    def now(cls, when: datetime | None = None) -> "Stamp":
        """The current instant (or ``when``, an aware datetime) in the machine's local zone."""
        local = (when or datetime.now(timezone.utc)).astimezone()
        off = local.utcoffset() or timedelta(0)
        utc = local.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return cls(utc, int(off.total_seconds() // 60), local.tzname() or offset_text(int(off.total_seconds() // 60)))

    @property
    def utc_datetime(self) -> datetime:
        return parse_utc(self.utc)

    @property
    def local(self) -> datetime:
        return self.utc_datetime.astimezone(timezone(timedelta(minutes=self.offset_min)))

    def iso_local(self) -> str:
        """ISO 8601 with the offset, e.g. ``2026-12-06T04:10:00.123+01:00`` (FHIR ``dateTime``)."""
        return self.local.isoformat(timespec="milliseconds")

    def display(self) -> str:
        """``2026-12-06 04:10 CET (UTC+01:00)``: what a person reads."""
        name = self.tz_name if self.tz_name and self.tz_name != offset_text(self.offset_min) else ""
        if self.offset_min == 0 and name in ("UTC", "GMT", ""):
            return f"{self.local:%Y-%m-%d %H:%M} UTC"
        return f"{self.local:%Y-%m-%d %H:%M} {name + ' ' if name else ''}({offset_text(self.offset_min)})"


def offset_text(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    h, m = divmod(abs(int(minutes)), 60)
    return f"UTC{sign}{h:02d}:{m:02d}"


def parse_utc(text: str) -> datetime:
    """A stored UTC time (``...Z`` or with an offset) as an aware datetime."""
    dt = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def stamp_of(utc: str, offset_min: int | None, tz_name: str | None) -> Stamp:
    """A stored row's time (old rows without a zone are shown in UTC, saying so)."""
    if offset_min is None:
        return Stamp(str(utc), 0, "UTC")
    return Stamp(str(utc), int(offset_min), tz_name or offset_text(int(offset_min)))


def file_stamp(stamp: Stamp | None = None) -> str:
    """A file-name-safe local time, e.g. ``20261206-041000-123``."""
    s = stamp or Stamp.now()
    return s.local.strftime("%Y%m%d-%H%M%S-") + f"{s.local.microsecond // 1000:03d}"
