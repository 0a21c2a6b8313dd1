"""``mailgate ask send --deadline`` reads the same phrases as a ``Deadline:`` line of a
mail to ask@ ("in 3 days"), relative to the asker's local date, so the README's example
never goes stale (issue 17); a past day is refused with the date."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from mailgate.models import Question

CEO = "ceo@corp.example"
# Monday 7 December 2026, 23:30 UTC: already Tuesday the 8th in Tokyo.
NOW = "2026-12-07T23:30:00+00:00"


@pytest.fixture
def company(directory):  # type: ignore[no-untyped-def]
    directory.list("eng", visibility="members")
    directory.member("eng", "bob@corp.example")
    directory.member("eng", CEO, timezone="Asia/Tokyo")
    directory.grant(CEO, "executive")


@pytest.mark.db
@pytest.mark.parametrize(
    ("deadline", "day"),
    [("in 3 days", "2026-12-11"), ("2026-12-09", "2026-12-09"), ("friday", "2026-12-11")],
)
def test_relative_deadline_is_read_in_the_askers_day(  # type: ignore[no-untyped-def]
    company, run_cli, session_factory, deadline, day
) -> None:
    result = run_cli(
        "ask", "send", "--from", CEO, "--to", "eng", "--deadline", deadline, "--now", NOW,
        "--json", "Retro topics?",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["asked"] == 1
    with session_factory() as s:
        stored = s.scalars(select(Question.deadline)).one()
    assert stored is not None
    local = stored.replace(tzinfo=stored.tzinfo or UTC).astimezone(ZoneInfo("Asia/Tokyo"))
    assert local.date().isoformat() == day
    assert local > datetime.fromisoformat(NOW)


@pytest.mark.db
@pytest.mark.parametrize(
    ("deadline", "error"),
    [
        ("2026-12-07", "--deadline 2026-12-07 is in the past (today is 2026-12-08)"),
        ("sometime", "use YYYY-MM-DD or a phrase like 'in 3 days'"),
    ],
)
def test_past_or_unreadable_deadline_is_refused(company, run_cli, deadline, error) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(
        "ask", "send", "--from", CEO, "--to", "eng", "--deadline", deadline, "--now", NOW, "Why?"
    )
    assert result.exit_code != 0
    assert error in result.stderr
