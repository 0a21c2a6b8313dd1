"""Schedule: which members' digests are due at a given instant (pure).

Input: :class:`~digests.facts.MemberClock` values (timezone, digest hour, weekdays-only,
the local date of the last digest) and ``now``, an aware instant passed in by the caller
(the scheduler tick). Output: the local date whose digest is due, or ``None``.

The rule is stated on the member's wall clock, not on an instant computed ahead of time:
a digest for local date D is due once the local time on D reads ``digest_hour:00`` or
later, and D is after the last digest's date. That comparison covers the DST cases, with
one addition for gaps that cross midnight:

* spring forward: when the digest hour is skipped (02:00 → 03:00), the wall clock jumps
  past it and the digest is due at the first instant after the gap;
* fall back: the repeated hour only matters before the first digest of D is recorded;
  after that ``last_digest_date == D`` stops a second one;
* a gap across midnight (America/Nuuk goes from 22:59:59 to 00:00 of the next day): a
  digest hour of 23 is skipped on that day, so its digest is due at the first instant
  after, which is just after midnight; ``due`` then returns yesterday's date;
* transitions at midnight (America/Santiago goes from 00:00 back to 23:00 of the day
  before): the local date can move backwards, so a digest is never due for a date at or
  before the last one ("not after D"), which also keeps dates strictly increasing.

Only today's digest is ever due (the gap-across-midnight case is today's by its instant):
a day missed while the system was down is not
back-filled, because yesterday's news is in today's digest anyway (its window starts at
the previous digest). Uniqueness across concurrent runs is the store's job (a unique
(member, digest date) row, DUR-06); this stage only decides.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

from digests.facts import MemberClock
from mailgate.local_time import _wall, first_instant_at
from mailgate.local_time import zone as _zone

_SATURDAY = 5  # date.weekday(): Monday is 0
_DAY = timedelta(days=1)


def _hour(clock: MemberClock) -> int:
    # A bad stored hour must not stop everyone's digests; clamp it into the day.
    hour = clock.digest_hour
    if not isinstance(hour, int):
        return 8
    return min(max(hour, 0), 23)


def _local(clock: MemberClock, now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    return now.astimezone(_zone(clock.timezone))


def local_date_now(clock: MemberClock, now: datetime) -> date:
    """The member's local calendar date at the instant ``now``."""
    return _local(clock, now).date()


def _wanted(clock: MemberClock, day: date) -> bool:
    """Not yet had (dates only move forward), and on a day they want one."""
    if clock.last_digest_date is not None and clock.last_digest_date >= day:
        return False
    return not (clock.weekdays_only and day.weekday() >= _SATURDAY)


def due(clock: MemberClock, now: datetime) -> date | None:
    """The local date whose digest is due at ``now``, or ``None``."""
    zone = _zone(clock.timezone)
    local = _local(clock, now)
    today = local.date()
    hour = _hour(clock)
    if local.hour >= hour:
        return today if _wanted(clock, today) else None
    # Before today's hour. Yesterday's digest can still be today's news in one case: its
    # hour was skipped by a gap that ended after midnight (America/Nuuk goes from 22:59:59
    # to 00:00 of the next day), so "the first instant after" is today. Anything else
    # from yesterday is a missed day, which is not back-filled.
    yesterday = today - _DAY
    if not _wanted(clock, yesterday):
        return None  # the common case (yesterday's was sent) costs no zone arithmetic
    wall = datetime.combine(yesterday, time(hour))
    if _wall(wall.replace(tzinfo=zone).astimezone(UTC), zone) == wall:
        return None  # yesterday's hour existed: a missed day
    if _wall(first_instant_at(yesterday, hour, zone), zone).date() == today:
        return yesterday
    return None


def due_members(clocks: Iterable[MemberClock], now: datetime) -> list[tuple[int, date]]:
    """(person id, local digest date) for every member due at ``now``, in input order."""
    result: list[tuple[int, date]] = []
    for clock in clocks:
        day = due(clock, now)
        if day is not None:
            result.append((clock.person_id, day))
    return result
