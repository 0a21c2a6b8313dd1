"""digests.schedule: one digest per local day, at the member's hour, across zones and DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digests.facts import MemberClock
from digests.schedule import due, due_members, first_instant_at, local_date_now

TICK = timedelta(minutes=5)


def clock(
    zone: str = "Europe/Berlin",
    hour: int = 8,
    *,
    last: date | None = None,
    weekdays_only: bool = False,
    person_id: int = 1,
) -> MemberClock:
    return MemberClock(
        person_id=person_id,
        timezone=zone,
        digest_hour=hour,
        weekdays_only=weekdays_only,
        last_digest_date=last,
    )


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def brute_first_instant(zone: str, day: date, hour: int) -> datetime:
    """Independent oracle: scan minute by minute for the first wall time >= day hour:00."""
    tz = ZoneInfo(zone)
    target = datetime.combine(day, time(hour))
    instant = datetime.combine(day, time(hour), tzinfo=UTC) - timedelta(hours=15)
    for _ in range(31 * 60):
        if instant.astimezone(tz).replace(tzinfo=None) >= target:
            return instant
        instant += timedelta(minutes=1)
    raise AssertionError("no instant found")


def simulate(
    member: MemberClock, start: datetime, end: datetime, step: timedelta = TICK
) -> list[tuple[datetime, date]]:
    """A scheduler ticking every ``step``; a due digest is 'sent' and recorded at once."""
    sent: list[tuple[datetime, date]] = []
    now = start
    while now < end:
        day = due(member, now)
        if day is not None:
            sent.append((now, day))
            member = clock(
                member.timezone,
                member.digest_hour,
                last=day,
                weekdays_only=member.weekdays_only,
            )
        now += step
    return sent


# --- the instant a digest becomes due, on ordinary and DST days -------------------------

DUE_INSTANTS = [
    # zone, local date, hour, first instant (UTC) the digest for that date is due
    ("America/New_York", "2026-03-08", 1, "2026-03-08 06:00"),  # EST, before the jump
    ("America/New_York", "2026-03-08", 2, "2026-03-08 07:00"),  # 02:00 skipped → 03:00 EDT
    ("America/New_York", "2026-03-08", 8, "2026-03-08 12:00"),
    ("America/New_York", "2026-11-01", 1, "2026-11-01 05:00"),  # first 01:00 (EDT)
    ("America/New_York", "2026-11-01", 2, "2026-11-01 07:00"),  # 02:00 EST
    ("America/New_York", "2026-11-01", 8, "2026-11-01 13:00"),
    ("Europe/Berlin", "2026-03-29", 2, "2026-03-29 01:00"),  # 02:00 skipped → 03:00 CEST
    ("Europe/Berlin", "2026-03-29", 8, "2026-03-29 06:00"),
    ("Europe/Berlin", "2026-10-25", 2, "2026-10-25 00:00"),  # first 02:00 (CEST)
    ("Europe/Berlin", "2026-10-25", 8, "2026-10-25 07:00"),
    ("Australia/Lord_Howe", "2026-10-04", 2, "2026-10-03 15:30"),  # 02:00-02:30 skipped
    ("Australia/Lord_Howe", "2026-10-04", 8, "2026-10-03 21:00"),  # +11:00
    ("Australia/Lord_Howe", "2026-04-05", 1, "2026-04-04 14:00"),  # +11:00, before fall back
    ("Australia/Lord_Howe", "2026-04-05", 2, "2026-04-04 15:30"),  # +10:30 after it
    ("America/Santiago", "2026-04-04", 23, "2026-04-05 02:00"),  # first 23:00 (24:00→23:00)
    ("America/Santiago", "2026-04-05", 0, "2026-04-05 04:00"),
    ("America/Santiago", "2026-09-06", 0, "2026-09-06 04:00"),  # 00:00 skipped → 01:00
    ("America/Nuuk", "2026-03-28", 23, "2026-03-29 01:00"),  # 23:00 skipped into next day
    ("Pacific/Kiritimati", "2026-03-10", 8, "2026-03-09 18:00"),  # UTC+14
    ("Etc/GMT+12", "2026-03-10", 8, "2026-03-10 20:00"),  # UTC-12
    ("Asia/Kolkata", "2026-03-10", 8, "2026-03-10 02:30"),  # UTC+05:30
    ("UTC", "2026-03-10", 0, "2026-03-10 00:00"),
]


@pytest.mark.parametrize(("zone", "day", "hour", "expected"), DUE_INSTANTS)
def test_due_exactly_from_the_first_instant(zone: str, day: str, hour: int, expected: str) -> None:
    local_day = date.fromisoformat(day)
    instant = utc(expected)
    assert brute_first_instant(zone, local_day, hour) == instant  # the table itself is right
    assert first_instant_at(local_day, hour, ZoneInfo(zone)) == instant
    member = clock(zone, hour, last=local_day - timedelta(days=1))
    assert due(member, instant - timedelta(seconds=1)) is None
    assert due(member, instant) == local_day
    assert due(member, instant + timedelta(minutes=59)) == local_day
    assert due(clock(zone, hour, last=local_day), instant + timedelta(minutes=30)) is None


# --- simulated scheduler over three days around each transition ------------------------

ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Etc/GMT+12",
    "Pacific/Kiritimati",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Nuuk",
    "UTC",
]
TRANSITION_DAYS = ["2026-03-08", "2026-03-29", "2026-10-25", "2026-11-01"]
# America/Nuuk's own transitions (2026-03-28/29, 2026-10-24/25) fall inside the common days.
EXTRA_DAYS = {
    "Australia/Lord_Howe": ["2026-04-05", "2026-10-04"],
    "America/Santiago": ["2026-04-05", "2026-09-06"],
}
HOURS = [0, 1, 2, 3, 8, 22, 23]
SIMULATIONS = [
    (zone, day, hour, phase)
    for zone in ZONES
    for day in TRANSITION_DAYS + EXTRA_DAYS.get(zone, [])
    for hour in HOURS
    for phase in (0, 3)  # ticks on the 5-minute grid, and 3 minutes off it
]


@pytest.mark.parametrize(("zone", "day", "hour", "phase"), SIMULATIONS)
def test_scheduler_sends_one_digest_per_local_day(
    zone: str, day: str, hour: int, phase: int
) -> None:
    tz = ZoneInfo(zone)
    middle = date.fromisoformat(day)
    days = [middle - timedelta(days=1), middle, middle + timedelta(days=1)]
    # From local midnight of the first day to local midnight after the third.
    start = datetime.combine(days[0], time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(days[-1] + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    start += timedelta(minutes=phase)
    member = clock(zone, hour, last=days[0] - timedelta(days=1))

    sent = simulate(member, start, end + timedelta(hours=2))
    sent = [(tick, d) for tick, d in sent if d in days]
    assert [d for _, d in sent] == days  # exactly one each, in order
    for tick, d in sent:
        first = first_instant_at(d, hour, tz)
        assert first <= tick < first + TICK  # at the first tick at or after the hour
        wall = tick.astimezone(tz).replace(tzinfo=None)
        assert wall >= datetime.combine(d, time(hour))  # never before the hour


@pytest.mark.parametrize("zone", ZONES)
def test_weekdays_only_skips_the_weekend(zone: str) -> None:
    # 2026-03-06 is a Friday; run from Thursday to Tuesday.
    tz = ZoneInfo(zone)
    start = datetime(2026, 3, 5, 0, 0, tzinfo=tz).astimezone(UTC)
    end = datetime(2026, 3, 11, 0, 0, tzinfo=tz).astimezone(UTC)
    member = clock(zone, 8, last=date(2026, 3, 4), weekdays_only=True)
    sent = [d for _, d in simulate(member, start, end)]
    assert sent == [date(2026, 3, d) for d in (5, 6, 9, 10)]
    assert all(d.weekday() < 5 for d in sent)


# --- single decisions -------------------------------------------------------------------

LOCAL_DATES = [
    ("Pacific/Kiritimati", "2026-03-09 10:00", "2026-03-10"),
    ("Etc/GMT+12", "2026-03-09 10:00", "2026-03-08"),
    ("Asia/Kolkata", "2026-03-09 18:29", "2026-03-09"),
    ("Asia/Kolkata", "2026-03-09 18:30", "2026-03-10"),
    ("Australia/Lord_Howe", "2026-03-09 13:00", "2026-03-10"),  # +11:00 in March
    ("Mars/Olympus_Mons", "2026-03-09 23:59", "2026-03-09"),  # unknown → UTC
]


@pytest.mark.parametrize(("zone", "now", "expected"), LOCAL_DATES)
def test_local_date_now(zone: str, now: str, expected: str) -> None:
    assert local_date_now(clock(zone), utc(now)) == date.fromisoformat(expected)


@pytest.mark.parametrize("zone", ["", "Nope/Nowhere", "../../etc/passwd", "/etc/localtime", "utc"])
def test_unknown_timezone_is_utc(zone: str) -> None:
    member = clock(zone, 8, last=date(2026, 3, 9))
    assert due(member, utc("2026-03-10 07:59")) is None
    assert due(member, utc("2026-03-10 08:00")) == date(2026, 3, 10)


DECISIONS = [
    # (description, clock kwargs, now UTC, expected)
    ("before the hour", {"last": date(2026, 3, 9)}, "2026-03-10 06:59", None),  # Berlin +1
    ("at the hour", {"last": date(2026, 3, 9)}, "2026-03-10 07:00", "2026-03-10"),
    ("late in the day", {"last": date(2026, 3, 9)}, "2026-03-10 22:59", "2026-03-10"),
    ("already sent today", {"last": date(2026, 3, 10)}, "2026-03-10 12:00", None),
    ("last date in the future", {"last": date(2026, 3, 11)}, "2026-03-10 12:00", None),
    ("never had one", {"last": None}, "2026-03-10 07:00", "2026-03-10"),
    ("missed days: only today", {"last": date(2026, 3, 1)}, "2026-03-10 07:00", "2026-03-10"),
    ("missed yesterday, before hour", {"last": date(2026, 3, 8)}, "2026-03-10 06:00", None),
    ("weekday ok", {"weekdays_only": True}, "2026-03-13 07:00", "2026-03-13"),  # Friday
    ("saturday", {"weekdays_only": True}, "2026-03-14 07:00", None),
    ("sunday", {"weekdays_only": True}, "2026-03-15 12:00", None),
    ("sunday without the option", {}, "2026-03-15 12:00", "2026-03-15"),
    ("hour out of range is clamped", {"hour": 99}, "2026-03-10 22:00", "2026-03-10"),
    ("negative hour is clamped", {"hour": -5}, "2026-03-09 23:00", "2026-03-10"),
]


@pytest.mark.parametrize(
    ("kwargs", "now", "expected"),
    [case[1:] for case in DECISIONS],
    ids=[case[0] for case in DECISIONS],
)
def test_due_decisions(kwargs: dict[str, object], now: str, expected: str | None) -> None:
    member = clock("Europe/Berlin", **kwargs)  # type: ignore[arg-type]
    want = date.fromisoformat(expected) if expected else None
    assert due(member, utc(now)) == want


def test_nuuk_gap_gives_yesterdays_digest_after_midnight_then_todays() -> None:
    member = clock("America/Nuuk", 23, last=date(2026, 3, 27))
    after_gap = utc("2026-03-29 01:00")  # local 2026-03-29 00:00 (-01:00)
    assert local_date_now(member, after_gap) == date(2026, 3, 29)
    assert due(member, after_gap) == date(2026, 3, 28)
    sent = clock("America/Nuuk", 23, last=date(2026, 3, 28))
    assert due(sent, after_gap + timedelta(hours=1)) is None
    assert due(sent, utc("2026-03-30 00:00")) == date(2026, 3, 29)  # 23:00 local
    # Missed the gap's digest entirely: not back-filled once today's hour comes.
    assert due(member, utc("2026-03-30 00:00")) == date(2026, 3, 29)


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="aware"):
        due(clock(), datetime(2026, 3, 10, 8, 0))


def test_now_in_another_offset_means_the_same_instant() -> None:
    member = clock("Asia/Kolkata", 8, last=date(2026, 3, 9))
    berlin = datetime(2026, 3, 10, 3, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # 02:30 UTC
    assert due(member, berlin) == date(2026, 3, 10)
    assert due(member, berlin - timedelta(seconds=1)) is None


def test_due_members_in_input_order_and_rerun_sends_nothing_twice() -> None:
    now = utc("2026-03-10 07:30")
    clocks = [
        clock("Europe/Berlin", 8, person_id=3, last=date(2026, 3, 9)),  # 08:30 → due
        clock("America/New_York", 8, person_id=1, last=date(2026, 3, 9)),  # 03:30 → no
        clock("Pacific/Kiritimati", 8, person_id=2, last=date(2026, 3, 9)),  # 21:30 → due
        clock("Asia/Kolkata", 8, person_id=4, last=date(2026, 3, 10)),  # sent already
    ]
    assert due_members(clocks, now) == [(3, date(2026, 3, 10)), (2, date(2026, 3, 10))]
    recorded = {pid: day for pid, day in due_members(clocks, now)}
    rerun = [
        clock(c.timezone, c.digest_hour, person_id=c.person_id, last=recorded[c.person_id])
        if c.person_id in recorded
        else c
        for c in clocks
    ]
    assert due_members(rerun, now) == []
    assert due_members([], now) == []


# --- property: never two digests on one local date ---------------------------------------

ALL_ZONES = sorted(available_timezones())


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ALL_ZONES),
    hour=st.integers(0, 23),
    weekdays_only=st.booleans(),
    start=st.datetimes(
        min_value=datetime(1995, 1, 1), max_value=datetime(2045, 12, 31), timezones=st.just(UTC)
    ),
    step_minutes=st.integers(1, 240),
    ticks=st.integers(1, 400),
    last_offset=st.one_of(st.none(), st.integers(-3, 3)),
)
def test_never_two_digests_on_one_local_date(
    zone: str,
    hour: int,
    weekdays_only: bool,
    start: datetime,
    step_minutes: int,
    ticks: int,
    last_offset: int | None,
) -> None:
    tz = ZoneInfo(zone)
    today = start.astimezone(tz).date()
    last = None if last_offset is None else today + timedelta(days=last_offset)
    member = clock(zone, hour, last=last, weekdays_only=weekdays_only)
    step = timedelta(minutes=step_minutes)
    sent = simulate(member, start, start + step * ticks, step)
    dates = [d for _, d in sent]
    assert len(dates) == len(set(dates))
    assert dates == sorted(dates)
    for tick, d in sent:
        assert last is None or d > last
        assert not (weekdays_only and d.weekday() >= 5)
        assert tick >= first_instant_at(d, hour, tz)  # never before the hour
        wall_date = tick.astimezone(tz).date()
        # Today's digest, or yesterday's whose hour was skipped into today: no back-fill.
        assert d == wall_date or (
            d == wall_date - timedelta(days=1)
            and first_instant_at(d, hour, tz).astimezone(tz).date() == wall_date
        )


@settings(max_examples=200, deadline=None)
@given(
    zone=st.sampled_from(ALL_ZONES),
    hour=st.integers(0, 23),
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31)),
)
def test_first_instant_matches_a_minute_scan(zone: str, hour: int, day: date) -> None:
    assert first_instant_at(day, hour, ZoneInfo(zone)) == brute_first_instant(zone, day, hour)
