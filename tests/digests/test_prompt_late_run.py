"""A prompt run created late still asks within working hours (issue 17): a prompt
created on a Monday evening (its day) went out at 19:15 local time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from digests.prompts import create_prompt, parse_schedule
from digests.questions import tick
from mailgate.db import unit_of_work
from mailgate.models import Ask, Person, QuestionMail

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_EVENING = datetime(2026, 11, 30, 19, 15, tzinfo=BERLIN)


def test_a_prompt_created_on_monday_evening_asks_on_tuesday_morning(  # type: ignore[no-untyped-def]
    directory, session_factory
) -> None:
    directory.list("eng", name="Engineering")
    directory.member("eng", "b@corp.example", name="B", timezone="Europe/Berlin")
    directory.member("eng", "t@corp.example", name="T", timezone="Asia/Tokyo")
    now = MONDAY_EVENING.astimezone(UTC)
    with unit_of_work(session_factory) as s:
        prompt = create_prompt(
            s, name="weekly", audience="eng", schedule=parse_schedule("monday 09:30")
        )
        prompt.created_at = now - timedelta(minutes=1)
    with unit_of_work(session_factory) as s:
        counts = tick(s, now, "lists.corp.example")
    assert counts["prompts"] == 1 and counts["asks"] == 0
    with session_factory() as s:
        due = {
            address: at
            for address, at in s.execute(
                select(Person.id, Ask.due_at).join(Ask, Ask.person_id == Person.id)
            ).all()
        }
        zones = dict(s.execute(select(Person.id, Person.timezone)).all())
        assert s.scalar(select(QuestionMail.id)) is None  # nothing sent at 19:15
    for pid, at in due.items():
        local = at.astimezone(ZoneInfo(zones[pid]))
        assert local.weekday() < 5 and 9 <= local.hour < 17, (zones[pid], local)
    berlin = next(at for pid, at in due.items() if zones[pid] == "Europe/Berlin")
    assert berlin.astimezone(BERLIN) == datetime(2026, 12, 1, 9, 0, tzinfo=BERLIN)
