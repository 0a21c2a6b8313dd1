"""A recurring prompt across two weeks, end to end: the admin creates it with the CLI;
the scheduler step (``mailgate ask tick --now …``, what beat runs every minute) starts each
week's run; a real worker on Redis sends each member the week's question at 09:30 their
time; answers arrive by reply through the real gateway; the weekly roundup goes to the
audience; week two asks a different question; a member on leave is skipped.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from mailgate.models import Ask, Post, PromptRun, Question
from tests.worker.conftest import wait_for
from tests.worker.test_questions_e2e import mails, send, start, text_of, tick

pytestmark = pytest.mark.one_engine  # a week of scheduling, not an engine test: once

BERLIN = [f"b{i}@corp.example" for i in range(6)]
TOKYO = [f"t{i}@corp.example" for i in range(2)]
ON_LEAVE = BERLIN[5]
BANK = [
    "What is the one thing you most want to finish by Friday?",
    "Which tool or habit saved you the most time this month, and how did you find it?",
]


def next_monday(now: datetime) -> datetime:
    day = now.date() + timedelta(days=1)
    while day.weekday() != 0:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def test_weekly_prompt_rotates_and_rounds_up(  # type: ignore[no-untyped-def]
    directory, run_cli, mailgate_env, session_factory, processes, relay_sink, tmp_path
) -> None:
    directory.list("team")
    for address in BERLIN:
        directory.member(
            "team", address, name=address.split("@")[0].upper(), timezone="Europe/Berlin"
        )
    for address in TOKYO:
        directory.member("team", address, name=address.split("@")[0].upper(), timezone="Asia/Tokyo")
    monday = next_monday(datetime.now(UTC))
    back = (monday + timedelta(days=3)).date()
    assert run_cli("people", "away", ON_LEAVE, "--until", back.isoformat()).exit_code == 0
    # A bank of our own, so the test does not depend on which starter question rotation
    # picks. The first one is the subject the 3.11 folder broke straight after
    # "Subject:" (issue 12, item 1): it fits on a continuation line but not the first.
    bank = tmp_path / "bank.txt"
    bank.write_text("\n".join(BANK) + "\n")
    created = run_cli(
        "prompts",
        "create",
        "weekly",
        "--to",
        "team",
        "--schedule",
        "monday 09:30",
        "--bank-file",
        str(bank),
    )
    assert created.exit_code == 0, created.stderr
    assert "Mondays 09:30 local time" in created.stdout
    port, env = start(processes, mailgate_env, relay_sink, tmp_path)

    # Week one. At 00:40 UTC it is 09:40 in Tokyo and 01:40 in Berlin.
    tick(processes, env, tmp_path, monday + timedelta(minutes=40))
    wait_for(lambda: set(mails(relay_sink, "ask")) == set(TOKYO), timeout=60, what="Tokyo")
    assert set(mails(relay_sink, "ask")) == set(TOKYO)  # Berlin is still asleep
    tick(processes, env, tmp_path, monday + timedelta(hours=8, minutes=31))  # 09:31 Berlin
    week_one = set(TOKYO) | set(BERLIN) - {ON_LEAVE}
    wait_for(lambda: set(mails(relay_sink, "ask")) == week_one, timeout=60, what="week one")
    first = mails(relay_sink, "ask")
    subjects = {m["Subject"] for m in first.values()}
    assert len(subjects) == 1
    (subject_one,) = subjects
    assert subject_one == f"This week's question: {BANK[0]}"

    # Three answer by reply.
    for address in BERLIN[:2] + TOKYO[:1]:
        ask = first[address]
        reply = EmailMessage()
        reply["From"] = address
        reply["To"] = ask["Reply-To"].addresses[0].addr_spec
        reply["Subject"] = f"Re: {ask['Subject']}"
        reply["Message-ID"] = f"<{time.time_ns()}.{address}>"
        reply["In-Reply-To"] = ask["In-Reply-To"]
        reply.set_content(f"My answer, from {address}.\n\n> quoted question\n")
        send(port, address, reply["To"], reply.as_bytes())

    def answered() -> int:
        with session_factory() as s:
            return len(s.scalars(select(Ask).where(Ask.answered_at.is_not(None))).all())

    wait_for(lambda: answered() == 3, timeout=60, what="three answers")

    # Saturday evening: the roundup to everyone asked, with the answers by name.
    tick(processes, env, tmp_path, monday + timedelta(days=5, hours=20))
    wait_for(lambda: set(mails(relay_sink, "summary")) == week_one, timeout=60, what="roundup")
    roundup = text_of(mails(relay_sink, "summary")[BERLIN[3]])
    roundup_subjects = {m["Subject"] for m in mails(relay_sink, "summary").values()}
    assert roundup_subjects == {f"Weekly roundup: {BANK[0]}"}
    assert "3 of 7 people answered." in roundup
    assert "My answer, from b0@corp.example." in roundup and "B0:" in roundup
    assert "quoted question" not in roundup

    # Week two: a different question, and the member back from leave is asked too.
    relay_sink.messages.clear()
    # Each in their own working hours: a run first seen at 17:31 in Tokyo would wait for
    # Tuesday morning there (issue 17), so the step runs in Tokyo's morning too.
    tick(processes, env, tmp_path, monday + timedelta(days=7, minutes=40))
    tick(processes, env, tmp_path, monday + timedelta(days=7, hours=8, minutes=31))
    everyone = set(TOKYO) | set(BERLIN)
    wait_for(lambda: set(mails(relay_sink, "ask")) == everyone, timeout=60, what="week two")
    subjects_two = {m["Subject"] for m in mails(relay_sink, "ask").values()}
    assert subjects_two == {f"This week's question: {BANK[1]}"}

    with session_factory() as s:
        runs = s.scalars(select(PromptRun).order_by(PromptRun.week)).all()
        assert [r.week for r in runs] == [
            f"{monday.isocalendar()[0]}-W{monday.isocalendar()[1]:02d}",
            f"{(monday + timedelta(days=7)).isocalendar()[0]}-"
            f"W{(monday + timedelta(days=7)).isocalendar()[1]:02d}",
        ]
        assert runs[0].bank_index != runs[1].bank_index
        assert len(s.scalars(select(Question)).all()) == 2
        assert len(s.scalars(select(Post)).all()) == 2 + 3  # two questions, three answers

    # The admin view shows both weeks.
    shown = json.loads(run_cli("prompts", "show", "weekly", "--json").stdout)
    assert [h["question"] for h in shown["history"]] == [
        subject_one.removeprefix("This week's question: "),
        next(iter(subjects_two)).removeprefix("This week's question: "),
    ]
    paused = run_cli("prompts", "pause", "weekly")
    assert paused.exit_code == 0
    assert json.loads(run_cli("prompts", "list", "--json").stdout)[0]["state"] == "paused"
