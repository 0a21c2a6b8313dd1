"""Local time: members' wall clocks, DST-safe (pure).

Input: IANA zone names, local dates and times, and aware instants. Output: aware UTC
instants. Used by digests (the member's digest hour), questions (never ask at 3 a.m.) and
prompts ("Mondays 09:30 local time"). Unknown zone names count as UTC, so one bad row
never stops a scheduler.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WORKDAY_START = time(9, 0)  # questions arrive in working hours, local time
WORKDAY_END = time(17, 0)


@lru_cache(maxsize=1024)
def zone(name: str) -> tzinfo:
    # Unknown names fall back to UTC (facts.MemberClock says so). Cached because a miss
    # costs a file-system probe on every call and ZoneInfo caches only the hits.
    if not isinstance(name, str) or not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC


def _wall(instant: datetime, zone: tzinfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def first_instant_at(day: date, hour: int, zone: tzinfo, minute: int = 0) -> datetime:
    """The first instant (UTC) at which the wall clock in ``zone`` reads ``day
    hour:minute`` or later: that time itself, its first occurrence when repeated, the end
    of the gap when skipped."""
    wall = datetime.combine(day, time(hour, minute))
    early = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    late = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if _wall(early, zone) == wall or _wall(late, zone) == wall:
        # Exists; when repeated (fall back) both folds exist and the earlier one counts.
        return min(t for t in (early, late) if _wall(t, zone) == wall)
    # Skipped: the transition lies in (late, early]; wall times before it are below
    # ``wall`` and after it above, so bisect on whole seconds (tz data has no finer).
    # Integer seconds since the epoch: halving a timedelta would wander into microseconds.
    low = int(min(early, late).timestamp())
    high = int(max(early, late).timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(datetime.fromtimestamp(middle, UTC), zone) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def next_sensible_time(
    now: datetime, zone_name: str, *, start: time = WORKDAY_START, end: time = WORKDAY_END
) -> datetime:
    """``now`` if it is a weekday between ``start`` and ``end`` on the member's wall
    clock, else the next weekday's ``start``: a question is not a 3 a.m. ping."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    tz = zone(zone_name)
    local = now.astimezone(tz)
    if local.weekday() < 5 and start <= local.time() < end:
        return now.astimezone(UTC)
    day = local.date() if local.time() < start else local.date() + timedelta(days=1)
    while True:
        if day.weekday() < 5:
            instant = first_instant_at(day, start.hour, tz, start.minute)
            # A day a zone skipped entirely (Samoa, 2011-12-30) lands on the next one.
            if instant.astimezone(tz).date() == day:
                return instant
        day += timedelta(days=1)


def local_date(now: datetime, zone_name: str) -> date:
    return now.astimezone(zone(zone_name)).date()
