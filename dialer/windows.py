"""Calling windows: call people only when it is decent where they live.

A row's time zones come from its ``timezone_column`` cell (an IANA name) when given, else from
its number (phonenumbers' time zone data). A number whose country spans several zones is inside
the window only when it is inside in **every** zone it may be in. A number with no known zone
uses ``fallback_timezone``, or is outside the window, with a reason.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones

__all__ = ["CallingWindow", "WindowCheck", "WindowPolicy", "Decision", "DAYS", "SCHEDULE_HORIZON"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SCHEDULE_HORIZON = dt.timedelta(days=30)
_HOURS = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
_UNKNOWN_ZONE = "Etc/Unknown"


class WindowCheck(NamedTuple):
    """Open now, or when it next opens (``None``: not within the horizon), or why it can't be known."""

    open: bool
    opens_at: dt.datetime | None = None
    reason: str = ""


@dataclass(frozen=True)
class CallingWindow:
    """Local hours and days when calls may start, e.g. 09:00-20:00 Monday to Friday."""

    start: dt.time
    end: dt.time
    days: frozenset[int]
    timezone_column: str | None = None
    fallback_timezone: str | None = None

    def __repr__(self) -> str:
        days = ",".join(DAYS[d] for d in sorted(self.days))
        return (f"CallingWindow({self.start:%H:%M}-{self.end:%H:%M} {days}, "
                f"timezone_column={self.timezone_column!r}, fallback={self.fallback_timezone!r})")

    @classmethod
    def parse(cls, hours: str, days: list[str] | tuple[str, ...] = DAYS[:5], *,
              timezone_column: str | None = None, fallback_timezone: str | None = None) -> CallingWindow:
        """Build from ``"09:00-20:00"`` and day names; raise ``ValueError`` with what is allowed."""
        match = _HOURS.fullmatch(hours.strip())
        if not match:
            raise ValueError(f"hours = {hours!r} should look like \"09:00-20:00\"")
        h1, m1, h2, m2 = (int(part) for part in match.groups())
        if not (h1 < 24 and h2 <= 24 and m1 < 60 and m2 < 60) or (h2 == 24 and m2):
            raise ValueError(f"hours = {hours!r} has a time that does not exist")
        start, end = dt.time(h1, m1), dt.time.max if h2 == 24 else dt.time(h2, m2)
        if end <= start:
            raise ValueError(f"hours = {hours!r} must end after it starts, on the same day")
        unknown = [day for day in days if day.lower()[:3] not in DAYS]
        if unknown or not days:
            raise ValueError(f"days = {list(days)!r} should be names among {', '.join(DAYS)}")
        if fallback_timezone is not None:
            try:
                _zone(fallback_timezone)
            except ValueError:
                raise ValueError(f"fallback_timezone = {fallback_timezone!r} is not a known time zone; "
                                 "use an IANA name such as America/New_York") from None
        return cls(start, end, frozenset(DAYS.index(day.lower()[:3]) for day in days),
                   timezone_column, fallback_timezone)

    def zones(self, e164: str, zone_cell: str = "") -> tuple[ZoneInfo, ...] | str:
        """The zones the person may be in, or the reason they are not known."""
        if zone_cell.strip():
            try:
                return (_zone(zone_cell.strip()),)
            except ValueError:
                return f"unknown time zone {zone_cell.strip()!r} in {self.timezone_column}"
        names = _zones_for_number(e164)
        if names:
            return tuple(_zone(name) for name in names)
        if self.fallback_timezone:
            return (_zone(self.fallback_timezone),)
        return "time zone unknown for this number; set fallback_timezone"

    def check(self, e164: str, now: dt.datetime, zone_cell: str = "") -> WindowCheck:
        """Whether a call may start at ``now`` (aware), and if not, when it next may."""
        zones = self.zones(e164, zone_cell)
        if isinstance(zones, str):
            return WindowCheck(False, None, zones)
        if self._open_everywhere(zones, now):
            return WindowCheck(True)
        return WindowCheck(False, self._next_opening(zones, now))

    def _open_everywhere(self, zones: tuple[ZoneInfo, ...], when: dt.datetime) -> bool:
        for zone in zones:
            local = when.astimezone(zone)
            if local.weekday() not in self.days or not self.start <= local.time() < self.end:
                return False
        return True

    def _next_opening(self, zones: tuple[ZoneInfo, ...], now: dt.datetime) -> dt.datetime | None:
        """The first instant within the horizon when the window is open in every zone: always one
        of the zones' local opening times (or a DST jump), so only those are tried."""
        candidates = []
        for zone in zones:
            today = now.astimezone(zone).date()
            for offset in range(SCHEDULE_HORIZON.days + 1):
                local = dt.datetime.combine(today + dt.timedelta(days=offset), self.start, zone)
                candidates.append(local.astimezone(dt.timezone.utc))
        for when in sorted(candidates):
            if now < when <= now + SCHEDULE_HORIZON and self._open_everywhere(zones, when):
                return when
        return None


@lru_cache(maxsize=None)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as America/New_York") from None


@lru_cache(maxsize=65536)
def _zones_for_number(e164: str) -> tuple[str, ...]:
    names = phone_timezones.time_zones_for_number(phonenumbers.parse(e164))
    return tuple(name for name in names if name != _UNKNOWN_ZONE)


class Decision(NamedTuple):
    """What to do with a row now: ``send`` (maybe ``scheduled_for``), ``wait`` until ``until``,
    or ``skip`` it for a later run, with ``reason``."""

    action: str
    until: dt.datetime | None = None
    scheduled_for: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class WindowPolicy:
    """A window and what to do outside it: ``skip`` (report ``outside_window``; a later run picks
    the row up), ``wait`` (keep the run alive and call when the window opens), or ``schedule``
    (send now with ``scheduled_for`` at the next opening)."""

    window: CallingWindow
    action: str = "skip"

    def decide(self, e164: str, now: dt.datetime, zone_cell: str = "") -> Decision:
        check = self.window.check(e164, now, zone_cell)
        if check.open:
            return Decision("send")
        if check.opens_at is None:
            reason = check.reason or f"the calling window does not open in the next {SCHEDULE_HORIZON.days} days"
            return Decision("skip", reason=reason)
        opens = check.opens_at.strftime("%Y-%m-%d %H:%M UTC")
        if self.action == "wait":
            return Decision("wait", until=check.opens_at, reason=f"waiting for the calling window ({opens})")
        if self.action == "schedule":
            return Decision("send", scheduled_for=check.opens_at.strftime("%Y-%m-%dT%H:%M:%SZ"))
        return Decision("skip", reason=f"outside the calling window; it opens {opens}")
