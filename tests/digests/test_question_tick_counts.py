"""``mailgate ask tick`` tells the truth about what it queued (issue 17).

It printed "reminders: 0, followups: 0" while two reminders and a follow-up went out:
the counts came from ``insert_ignoring_duplicates``, whose ORM-enabled INSERT has no
rowcount. A question is asked, one member answers through the gateway, the asker
promises "don't know yet, by Friday"; on Friday the step queues two reminders and the
promise's reminder, and says so — in its line and in ``--json`` — exactly as many as the
rows it wrote.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from mailgate import questions
from mailgate.addressing import reply_address
from mailgate.db import unit_of_work
from mailgate.directory import find_person
from mailgate.ingest import run_ingest
from mailgate.models import Followup, QuestionMail
from mailgate.tokens import TokenKind, make_token
from tests.conftest import DOMAIN, SECRET, build_mail

CEO = "ceo@corp.example"
MEMBERS = ["m0@corp.example", "m1@corp.example", "m2@corp.example"]
T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # a Wednesday, noon in London
FRIDAY = T0 + timedelta(days=2, hours=1)


def reply(gateway, session_factory, ctx, sender: str, discussion: int, body: str) -> None:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        person = find_person(s, sender)
        assert person is not None
        token = make_token(SECRET, TokenKind.REPLY, person.id, discussion)
    rcpt = reply_address(token, DOMAIN)
    raw_id = gateway.submit(
        build_mail(sender=sender, to=rcpt, subject="Re: Offsite", body=body), rcpt, sender
    )
    run_ingest(session_factory, raw_id, ctx)


def tick(mailgate_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``mailgate ask tick`` in its own process, as an operator runs it: the step uses the
    worker's per-process runtime, which an in-process call would share with whichever
    test built it first (another database)."""
    return subprocess.run(
        [sys.executable, "-m", "mailgate.cli", "ask", "tick", *args],
        env={**os.environ, **mailgate_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def queued(session_factory, kind: str) -> int:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        return int(s.scalar(select(func.count()).where(QuestionMail.kind == kind)) or 0)


def test_tick_counts_what_it_queued(  # type: ignore[no-untyped-def]
    directory, session_factory, gateway, ingest_context, mailgate_env
) -> None:
    directory.list("staff", name="Staff")
    directory.member("staff", CEO, name="Cleo", timezone="Europe/London")
    directory.grant(CEO, "executive")
    for address in MEMBERS:
        directory.member("staff", address, name=address.split("@")[0], timezone="Europe/London")
    with unit_of_work(session_factory) as s:
        question = questions.create_question(
            s,
            asker=find_person(s, CEO),
            spec=questions.QuestionSpec(subject="Offsite", text="Where?", audience="staff"),
            now=T0 - timedelta(minutes=5),
            domain=DOMAIN,
        )
        discussion = question.discussion_id

    first = tick(mailgate_env, "--now", T0.isoformat(), "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["asks"] == 3 == queued(session_factory, "ask")

    ctx = dataclasses.replace(ingest_context, now=lambda: T0 + timedelta(hours=1))
    reply(gateway, session_factory, ctx, MEMBERS[0], discussion, "Lisbon, please.")
    friday = FRIDAY.date().isoformat()
    reply(gateway, session_factory, ctx, CEO, discussion, f"Don't know yet, by {friday}.")
    with session_factory() as s:
        assert s.scalar(select(func.count(Followup.id))) == 1

    step = tick(mailgate_env, "--now", FRIDAY.isoformat())
    assert step.returncode == 0, step.stderr
    assert queued(session_factory, "reminder") == 2
    assert queued(session_factory, "followup-due") == 1
    assert "reminders: 2" in step.stdout and "followups: 1" in step.stdout, step.stdout

    # The same step again queues nothing new, and says so.
    again = json.loads(tick(mailgate_env, "--now", FRIDAY.isoformat(), "--json").stdout)
    assert (again["reminders"], again["followups"]) == (0, 0)
