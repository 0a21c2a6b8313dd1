"""Prompt schedules: "Mondays 09:30" parsed and labelled, and which ISO week a tick runs.

Pure: ``_run_day`` reads only the prompt's ``weekday``, so a stand-in object replaces the
database row. 2026-03-29 is a Sunday; UTC+14 reaches each day first, so a run whose day
is Monday may begin at Sunday 10:00 UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digests.prompts import PromptError, PromptSchedule, _run_day, parse_schedule
from mailgate.models import Prompt


@pytest.mark.parametrize(
    ("text", "weekday", "minute_of_day"),
    [
        ("monday 09:30", 0, 9 * 60 + 30),
        ("Mondays 9:30", 0, 9 * 60 + 30),
        ("tue 14:00", 1, 14 * 60),
        ("tues 14:00", 1, 14 * 60),
        ("Tuesdays 10", 1, 10 * 60),
        ("  wednesday   7:05 ", 2, 7 * 60 + 5),
        ("wed 12:00", 2, 12 * 60),
        ("thurs 23:59", 3, 23 * 60 + 59),
        ("thu 0:00", 3, 0),
        ("FRIDAY 8", 4, 8 * 60),
        ("Sat 12:00", 5, 12 * 60),
        ("saturdays 06:45", 5, 6 * 60 + 45),
        ("sundays 6:15", 6, 6 * 60 + 15),
        ("monday, 09:30", 0, 9 * 60 + 30),
    ],
)
def test_parse_schedule(text: str, weekday: int, minute_of_day: int) -> None:
    assert parse_schedule(text) == PromptSchedule(weekday, minute_of_day)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("someday 09:00", "unknown weekday"),
        ("mo 09:00", "unknown weekday"),  # too short to be sure
        ("s 09:00", "unknown weekday"),
        ("xyz 09:00", "unknown weekday"),
        ("monday 25:00", "time must look like"),
        ("monday 24:00", "time must look like"),
        ("monday 09:60", "time must look like"),
        ("monday -1:00", "time must look like"),
        ("monday 9.30", "time must look like"),
        ("monday nine", "time must look like"),
        ("monday 09:30:00", "time must look like"),
        ("monday", "use a weekday and a time"),
        ("", "use a weekday and a time"),
        ("09:30", "use a weekday and a time"),
        ("monday 09:30 utc", "use a weekday and a time"),
    ],
)
def test_parse_schedule_errors(text: str, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        parse_schedule(text)


def test_prompt_error_is_a_value_error() -> None:
    # Callers that catch ValueError (the CLI's option parsing) see schedule mistakes too.
    assert issubclass(PromptError, ValueError)


@pytest.mark.parametrize("text", ["monkey 09:00", "sunshine 09:00", "satan 10:00"])
def test_words_that_merely_start_like_a_weekday_are_refused(text: str) -> None:
    with pytest.raises(PromptError):
        parse_schedule(text)


@pytest.mark.parametrize(
    ("schedule", "label"),
    [
        (PromptSchedule(0, 9 * 60 + 30), "Mondays 09:30 local time"),
        (PromptSchedule(4, 8 * 60), "Fridays 08:00 local time"),
        (PromptSchedule(6, 0), "Sundays 00:00 local time"),
        (PromptSchedule(3, 23 * 60 + 59), "Thursdays 23:59 local time"),
    ],
)
def test_label(schedule: PromptSchedule, label: str) -> None:
    assert schedule.label() == label


@given(weekday=st.integers(0, 6), minute_of_day=st.integers(0, 24 * 60 - 1))
def test_label_reads_back(weekday: int, minute_of_day: int) -> None:
    schedule = PromptSchedule(weekday, minute_of_day)
    assert parse_schedule(schedule.label().removesuffix(" local time")) == schedule


# ------------------------------------------------------------------ which week runs


@dataclass(frozen=True)
class StandIn:
    weekday: int  # all that _run_day reads of a Prompt


def run_day(weekday: int, now: datetime) -> tuple[str, date]:
    return _run_day(cast(Prompt, StandIn(weekday)), now)


@pytest.mark.parametrize(
    ("weekday", "now", "week", "day"),
    [
        # Sunday 11:00 UTC is Monday 01:00 in UTC+14: this week's Monday run may start.
        pytest.param(
            0, datetime(2026, 3, 29, 11, tzinfo=UTC), "2026-W14", date(2026, 3, 30), id="sun-11"
        ),
        # Sunday 09:00 UTC is still Sunday everywhere: last week's run, last Monday.
        pytest.param(
            0, datetime(2026, 3, 29, 9, tzinfo=UTC), "2026-W13", date(2026, 3, 23), id="sun-09"
        ),
        pytest.param(
            0,
            datetime(2026, 3, 29, 9, 59, 59, tzinfo=UTC),
            "2026-W13",
            date(2026, 3, 23),
            id="sun-09:59:59",
        ),
        pytest.param(
            0, datetime(2026, 3, 29, 10, tzinfo=UTC), "2026-W14", date(2026, 3, 30), id="sun-10"
        ),
        # Later weekdays fall in the same ISO week, even when still ahead.
        pytest.param(
            4, datetime(2026, 3, 29, 11, tzinfo=UTC), "2026-W14", date(2026, 4, 3), id="fri-run"
        ),
        pytest.param(
            6, datetime(2026, 4, 1, 12, tzinfo=UTC), "2026-W14", date(2026, 4, 5), id="sun-run"
        ),
        # ISO years: 2027-01-01 (Friday) belongs to 2026-W53; 2024-12-30 to 2025-W01.
        pytest.param(
            0, datetime(2026, 12, 31, 12, tzinfo=UTC), "2026-W53", date(2026, 12, 28), id="w53"
        ),
        pytest.param(
            6, datetime(2024, 12, 30, 12, tzinfo=UTC), "2025-W01", date(2025, 1, 5), id="iso-year"
        ),
        pytest.param(
            0, datetime(2025, 12, 29, 0, tzinfo=UTC), "2026-W01", date(2025, 12, 29), id="w01"
        ),
        pytest.param(
            2, datetime(2026, 1, 5, 12, tzinfo=UTC), "2026-W02", date(2026, 1, 7), id="padded"
        ),
    ],
)
def test_run_day(weekday: int, now: datetime, week: str, day: date) -> None:
    assert run_day(weekday, now) == (week, day)


@given(
    weekday=st.integers(0, 6),
    now=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)
def test_run_day_is_in_its_week(weekday: int, now: datetime) -> None:
    week, day = run_day(weekday, now)
    assert re.fullmatch(r"\d{4}-W\d{2}", week)
    year, number, iso_weekday = day.isocalendar()
    assert week == f"{year}-W{number:02d}"
    assert iso_weekday == weekday + 1
