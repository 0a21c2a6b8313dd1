"""Local time: working hours on each member's wall clock, across zones and DST changes.

Expected instants are written out in UTC, worked by hand from each zone's offset, so a
change in the arithmetic shows up as a failing row. 2026-01-12 is a Monday; Berlin springs
forward on Sunday 2026-03-29 and falls back on Sunday 2026-10-25 (both at 01:00 UTC); Los
Angeles springs forward on 2026-03-08 (10:00 UTC) and falls back on 2026-11-01 (09:00 UTC).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.local_time import (
    WORKDAY_END,
    WORKDAY_START,
    first_instant_at,
    local_date,
    next_sensible_time,
    zone,
)


def utc(month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


# (now in UTC, zone, expected in UTC) — the comment gives the local wall clock of ``now``.
SENSIBLE = [
    # UTC: the plain rules
    pytest.param(utc(1, 12, 10), "UTC", utc(1, 12, 10), id="utc-mon-within"),
    pytest.param(utc(1, 12, 9), "UTC", utc(1, 12, 9), id="utc-mon-at-start"),
    pytest.param(utc(1, 12, 16, 59, 59), "UTC", utc(1, 12, 16, 59, 59), id="utc-just-before-end"),
    pytest.param(utc(1, 12, 0), "UTC", utc(1, 12, 9), id="utc-mon-midnight"),
    pytest.param(utc(1, 12, 8, 59), "UTC", utc(1, 12, 9), id="utc-mon-before-9"),
    pytest.param(utc(1, 12, 17), "UTC", utc(1, 13, 9), id="utc-mon-at-end"),
    pytest.param(utc(1, 14, 23), "UTC", utc(1, 15, 9), id="utc-wed-night"),
    pytest.param(utc(1, 16, 17, 30), "UTC", utc(1, 19, 9), id="utc-fri-evening"),
    pytest.param(utc(1, 17, 12), "UTC", utc(1, 19, 9), id="utc-saturday"),
    pytest.param(utc(1, 18, 8), "UTC", utc(1, 19, 9), id="utc-sunday-morning"),
    pytest.param(utc(1, 18, 23, 59), "UTC", utc(1, 19, 9), id="utc-sunday-night"),
    # Tokyo, UTC+9
    pytest.param(utc(1, 12, 0), "Asia/Tokyo", utc(1, 12, 0), id="tokyo-mon-09:00"),
    pytest.param(utc(1, 12, 8), "Asia/Tokyo", utc(1, 13, 0), id="tokyo-mon-17:00"),
    pytest.param(utc(1, 11, 23), "Asia/Tokyo", utc(1, 12, 0), id="tokyo-mon-08:00-sun-utc"),
    pytest.param(utc(1, 16, 10), "Asia/Tokyo", utc(1, 19, 0), id="tokyo-fri-19:00"),
    pytest.param(utc(1, 16, 20), "Asia/Tokyo", utc(1, 19, 0), id="tokyo-sat-05:00-fri-utc"),
    # Los Angeles, UTC-8 in January
    pytest.param(utc(1, 12, 17), "America/Los_Angeles", utc(1, 12, 17), id="la-mon-09:00"),
    pytest.param(utc(1, 12, 10), "America/Los_Angeles", utc(1, 12, 17), id="la-mon-02:00"),
    pytest.param(utc(1, 12, 3), "America/Los_Angeles", utc(1, 12, 17), id="la-sun-19:00-mon-utc"),
    pytest.param(utc(1, 16, 23), "America/Los_Angeles", utc(1, 16, 23), id="la-fri-15:00"),
    pytest.param(
        utc(1, 17, 0, 30), "America/Los_Angeles", utc(1, 17, 0, 30), id="la-fri-16:30-sat-utc"
    ),
    pytest.param(utc(1, 17, 2), "America/Los_Angeles", utc(1, 19, 17), id="la-fri-18:00"),
    # Kiritimati, UTC+14: Monday 09:00 there is Sunday 19:00 UTC
    pytest.param(utc(1, 18, 19), "Pacific/Kiritimati", utc(1, 18, 19), id="lint-mon-09:00"),
    pytest.param(utc(1, 18, 12), "Pacific/Kiritimati", utc(1, 18, 19), id="lint-mon-02:00"),
    pytest.param(utc(1, 16, 3), "Pacific/Kiritimati", utc(1, 18, 19), id="lint-fri-17:00"),
    pytest.param(utc(1, 16, 12), "Pacific/Kiritimati", utc(1, 18, 19), id="lint-sat-02:00"),
    # Berlin across spring forward (CET +1 before, CEST +2 after)
    pytest.param(utc(3, 27, 16, 30), "Europe/Berlin", utc(3, 30, 7), id="berlin-fri-17:30-cet"),
    pytest.param(utc(3, 28, 12), "Europe/Berlin", utc(3, 30, 7), id="berlin-sat-before-change"),
    pytest.param(utc(3, 29, 1, 30), "Europe/Berlin", utc(3, 30, 7), id="berlin-sun-after-change"),
    pytest.param(utc(3, 30, 6, 30), "Europe/Berlin", utc(3, 30, 7), id="berlin-mon-08:30-cest"),
    pytest.param(utc(3, 30, 7), "Europe/Berlin", utc(3, 30, 7), id="berlin-mon-09:00-cest"),
    pytest.param(utc(3, 30, 15), "Europe/Berlin", utc(3, 31, 7), id="berlin-mon-17:00-cest"),
    # Berlin across fall back (CEST +2 before, CET +1 after)
    pytest.param(utc(10, 23, 15), "Europe/Berlin", utc(10, 26, 8), id="berlin-fri-17:00-cest"),
    pytest.param(utc(10, 25, 0, 30), "Europe/Berlin", utc(10, 26, 8), id="berlin-sun-02:30-1st"),
    pytest.param(utc(10, 25, 1, 30), "Europe/Berlin", utc(10, 26, 8), id="berlin-sun-02:30-2nd"),
    pytest.param(utc(10, 26, 7, 30), "Europe/Berlin", utc(10, 26, 8), id="berlin-mon-08:30-cet"),
    pytest.param(utc(10, 26, 8), "Europe/Berlin", utc(10, 26, 8), id="berlin-mon-09:00-cet"),
    pytest.param(utc(10, 26, 15, 59), "Europe/Berlin", utc(10, 26, 15, 59), id="berlin-16:59"),
    # Los Angeles across its own spring forward: Friday evening PST → Monday 09:00 PDT
    pytest.param(utc(3, 7, 2), "America/Los_Angeles", utc(3, 9, 16), id="la-fri-pst-to-mon-pdt"),
]


@pytest.mark.parametrize(("now", "zone_name", "expected"), SENSIBLE)
def test_next_sensible_time(now: datetime, zone_name: str, expected: datetime) -> None:
    result = next_sensible_time(now, zone_name)
    assert result == expected
    assert result.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "offset", [timezone(timedelta(hours=5)), timezone(timedelta(hours=-7)), ZoneInfo("Asia/Tokyo")]
)
def test_now_in_any_aware_zone_is_the_same_instant(offset: timezone | ZoneInfo) -> None:
    for now, zone_name, expected in (p.values for p in SENSIBLE):
        assert isinstance(now, datetime)
        assert isinstance(zone_name, str)
        assert next_sensible_time(now.astimezone(offset), zone_name) == expected


@pytest.mark.parametrize(
    "name", ["Mars/Olympus_Mons", "", "not a zone", "../../etc/passwd", "utc+"]
)
@pytest.mark.parametrize("now", [utc(1, 12, 10), utc(1, 12, 7), utc(1, 16, 18), utc(1, 17, 12)])
def test_unknown_zone_behaves_as_utc(name: str, now: datetime) -> None:
    assert zone(name) is UTC
    assert next_sensible_time(now, name) == next_sensible_time(now, "UTC")
    assert local_date(now, name) == now.date()


@pytest.mark.parametrize("now", [datetime(2026, 1, 12, 10), datetime(2026, 1, 17, 3)])
def test_naive_now_is_refused(now: datetime) -> None:
    with pytest.raises(ValueError, match="aware"):
        next_sensible_time(now, "Europe/Berlin")


@pytest.mark.parametrize(
    ("now", "start", "end", "expected"),
    [
        (utc(1, 12, 8, 30), time(8, 30), time(12), utc(1, 12, 8, 30)),
        (utc(1, 12, 8, 29), time(8, 30), time(12), utc(1, 12, 8, 30)),
        (utc(1, 12, 12), time(8, 30), time(12), utc(1, 13, 8, 30)),
        (utc(1, 16, 12), time(8, 30), time(12), utc(1, 19, 8, 30)),
    ],
)
def test_custom_working_hours(now: datetime, start: time, end: time, expected: datetime) -> None:
    assert next_sensible_time(now, "UTC", start=start, end=end) == expected


def test_a_skipped_weekday_moves_on_to_the_next_weekday() -> None:
    apia = ZoneInfo("Pacific/Apia")
    now = datetime(2011, 12, 29, 18, 0, tzinfo=apia)  # Thursday evening, UTC-10
    result = next_sensible_time(now, "Pacific/Apia").astimezone(apia)
    assert result.replace(tzinfo=None) == datetime(2012, 1, 2, 9, 0)


# ------------------------------------------------------------------ first_instant_at


@pytest.mark.parametrize(
    ("day", "hour", "minute", "zone_name", "expected"),
    [
        pytest.param(date(2026, 1, 12), 9, 30, "Europe/Berlin", utc(1, 12, 8, 30), id="berlin"),
        pytest.param(date(2026, 7, 13), 9, 30, "Europe/Berlin", utc(7, 13, 7, 30), id="summer"),
        pytest.param(date(2026, 1, 12), 9, 30, "Asia/Tokyo", utc(1, 12, 0, 30), id="tokyo"),
        pytest.param(
            date(2026, 1, 12), 9, 0, "Pacific/Kiritimati", utc(1, 11, 19), id="kiritimati"
        ),
        pytest.param(date(2026, 1, 12), 9, 15, "America/Los_Angeles", utc(1, 12, 17, 15), id="la"),
        pytest.param(date(2026, 1, 12), 9, 30, "UTC", utc(1, 12, 9, 30), id="utc"),
        pytest.param(date(2026, 1, 12), 9, 30, "Nowhere/Special", utc(1, 12, 9, 30), id="unknown"),
        # spring forward in Berlin: 02:00–02:59 do not exist; the gap ends at 03:00 CEST
        pytest.param(date(2026, 3, 29), 1, 59, "Europe/Berlin", utc(3, 29, 0, 59), id="pre-gap"),
        pytest.param(date(2026, 3, 29), 2, 0, "Europe/Berlin", utc(3, 29, 1), id="gap-start"),
        pytest.param(date(2026, 3, 29), 2, 30, "Europe/Berlin", utc(3, 29, 1), id="gap-middle"),
        pytest.param(date(2026, 3, 29), 3, 0, "Europe/Berlin", utc(3, 29, 1), id="post-gap"),
        pytest.param(date(2026, 3, 29), 9, 30, "Europe/Berlin", utc(3, 29, 7, 30), id="cest"),
        # fall back in Berlin: 02:00–02:59 happen twice; the first one counts
        pytest.param(date(2026, 10, 25), 2, 30, "Europe/Berlin", utc(10, 25, 0, 30), id="repeat"),
        pytest.param(date(2026, 10, 25), 3, 0, "Europe/Berlin", utc(10, 25, 2), id="post-repeat"),
        pytest.param(date(2026, 10, 25), 9, 30, "Europe/Berlin", utc(10, 25, 8, 30), id="cet"),
        # Los Angeles: the 02:00 hour is skipped in March and 01:00 repeated in November
        pytest.param(date(2026, 3, 8), 2, 30, "America/Los_Angeles", utc(3, 8, 10), id="la-gap"),
        pytest.param(
            date(2026, 11, 1), 1, 30, "America/Los_Angeles", utc(11, 1, 8, 30), id="la-repeat"
        ),
    ],
)
def test_first_instant_at(
    day: date, hour: int, minute: int, zone_name: str, expected: datetime
) -> None:
    result = first_instant_at(day, hour, zone(zone_name), minute)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("day", "hour", "minute", "zone_name", "expected"),
    [
        pytest.param(date(2026, 3, 29), 2, 1, "Europe/Berlin", utc(3, 29, 1), id="berlin-02:01"),
        pytest.param(date(2026, 3, 29), 2, 59, "Europe/Berlin", utc(3, 29, 1), id="berlin-02:59"),
        pytest.param(date(2026, 3, 8), 2, 10, "America/Los_Angeles", utc(3, 8, 10), id="la-02:10"),
    ],
)
def test_a_skipped_time_is_exactly_the_end_of_the_gap(
    day: date, hour: int, minute: int, zone_name: str, expected: datetime
) -> None:
    assert first_instant_at(day, hour, zone(zone_name), minute) == expected


def test_first_instant_at_minute_defaults_to_zero() -> None:
    assert first_instant_at(date(2026, 1, 12), 9, zone("Europe/Berlin")) == utc(1, 12, 8)


# ------------------------------------------------------------------ local_date


@pytest.mark.parametrize(
    ("now", "zone_name", "expected"),
    [
        (utc(1, 11, 23), "Asia/Tokyo", date(2026, 1, 12)),
        (utc(1, 11, 23), "America/Los_Angeles", date(2026, 1, 11)),
        (utc(1, 12, 7), "America/Los_Angeles", date(2026, 1, 11)),
        (utc(1, 11, 23), "UTC", date(2026, 1, 11)),
        (utc(1, 11, 10), "Pacific/Kiritimati", date(2026, 1, 12)),
        (utc(1, 11, 9, 59), "Pacific/Kiritimati", date(2026, 1, 11)),
        (utc(3, 28, 23), "Europe/Berlin", date(2026, 3, 29)),
        (utc(10, 25, 22, 59), "Europe/Berlin", date(2026, 10, 25)),
        (utc(10, 25, 23), "Europe/Berlin", date(2026, 10, 26)),
    ],
)
def test_local_date(now: datetime, zone_name: str, expected: date) -> None:
    assert local_date(now, zone_name) == expected


# ------------------------------------------------------------------ property

ZONES = [
    "UTC",
    "Asia/Tokyo",
    "America/Los_Angeles",
    "Pacific/Kiritimati",
    "Europe/Berlin",
    "Australia/Lord_Howe",  # a half-hour DST shift
    "Asia/Kathmandu",  # a +05:45 offset
    "No/Such_Zone",
]
AWARE = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2040, 1, 1),
    timezones=st.sampled_from([UTC, ZoneInfo("Europe/Berlin"), timezone(timedelta(hours=-3))]),
    allow_imaginary=False,
)


@settings(max_examples=300, deadline=None)
@given(now=AWARE, zone_name=st.sampled_from(ZONES))
def test_next_sensible_time_is_in_working_hours(now: datetime, zone_name: str) -> None:
    result = next_sensible_time(now, zone_name)
    local = result.astimezone(zone(zone_name))
    assert result >= now
    assert local.weekday() < 5
    assert WORKDAY_START <= local.time() < WORKDAY_END
    # It is the earliest such instant: unchanged when already sensible, and stable.
    now_local = now.astimezone(zone(zone_name))
    if now_local.weekday() < 5 and WORKDAY_START <= now_local.time() < WORKDAY_END:
        assert result == now
    else:
        assert local.time() == WORKDAY_START
        assert result - now < timedelta(days=3, hours=10)
    assert next_sensible_time(result, zone_name) == result
