"""Question mails say what they mean (issue 17): the "due today" reminder of a promise
shows the question as the question and the answer it promised under its own heading;
an open prompt's roundup never claims its answers are private, and comes from the
weekly question, not "Mailgate (via Mailgate)"."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from digests.prompts import create_prompt, parse_schedule
from digests.questions import QuestionMailSettings, compose_question_mail, mail_context, tick
from mailgate import questions
from mailgate.db import unit_of_work
from mailgate.directory import find_person
from mailgate.models import Question, QuestionMail
from tests.conftest import DOMAIN, SECRET
from tests.digests.test_question_tick_counts import CEO, MEMBERS, T0, reply


def composed(session, kind: str, question: Question, address: str):  # type: ignore[no-untyped-def]
    person = find_person(session, address)
    mail = session.scalars(
        select(QuestionMail).where(
            QuestionMail.kind == kind,
            QuestionMail.question_id == question.id,
            QuestionMail.person_id == person.id,
        )
    ).one()
    context = mail_context(session, mail, person)
    raw = compose_question_mail(
        mail, person, question.discussion_id, context, QuestionMailSettings(DOMAIN, SECRET)
    )
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return msg, msg.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]


def test_due_today_shows_the_question_and_the_promised_answer_apart(  # type: ignore[no-untyped-def]
    directory, session_factory, gateway, ingest_context
) -> None:
    directory.list("staff", name="Staff")
    directory.member("staff", CEO, name="Cleo", timezone="Europe/London")
    directory.grant(CEO, "executive")
    for address in MEMBERS:
        directory.member("staff", address, name=address.split("@")[0], timezone="Europe/London")
    with unit_of_work(session_factory) as s:
        q = questions.create_question(
            s,
            asker=find_person(s, CEO),
            spec=questions.QuestionSpec(
                subject="Offsite", text="Where should we hold the offsite?", audience="staff"
            ),
            now=T0 - timedelta(minutes=5),
            domain=DOMAIN,
        )
        qid, discussion = q.id, q.discussion_id
    with unit_of_work(session_factory) as s:
        tick(s, T0, DOMAIN)
    ctx = dataclasses.replace(ingest_context, now=lambda: T0 + timedelta(hours=1))
    reply(gateway, session_factory, ctx, MEMBERS[0], discussion, "Lisbon, please.")
    # The asker answers the answer (its copy's reply address threads under it).
    with session_factory() as s:
        from mailgate.models import Post

        answer = s.scalars(select(Post).where(Post.text.like("Lisbon%"))).one()
    from mailgate.addressing import reply_address
    from mailgate.ingest import run_ingest
    from mailgate.tokens import TokenKind, make_token
    from tests.conftest import build_mail

    with session_factory() as s:
        ceo = find_person(s, CEO)
        rcpt = reply_address(make_token(SECRET, TokenKind.REPLY, ceo.id, discussion), DOMAIN)
    raw = build_mail(
        sender=CEO,
        to=rcpt,
        subject="Re: Offsite",
        body="Don't know yet, by 2026-12-04.",
        headers={"In-Reply-To": f"<{answer.message_id}>"},
    )
    run_ingest(session_factory, gateway.submit(raw, rcpt, CEO), ctx)
    with unit_of_work(session_factory) as s:
        assert tick(s, datetime(2026, 12, 4, 13, 0, tzinfo=UTC), DOMAIN)["followups"] == 1
    with session_factory() as s:
        _msg, body = composed(s, "followup-due", s.get_one(Question, qid), CEO)
    question_part = body.split("The question was:")[1]
    asked, _, promised = question_part.partition("You promised an answer to this reply from m0:")
    assert "Where should we hold the offsite?" in asked and "Lisbon" not in asked, body
    assert "Lisbon, please." in promised, body


def test_open_prompt_roundup_is_not_called_private_and_comes_from_the_prompt(  # type: ignore[no-untyped-def]
    directory, session_factory
) -> None:
    directory.list("eng", name="Engineering")
    for address in MEMBERS:
        directory.member("eng", address, name=address.split("@")[0])
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    with unit_of_work(session_factory) as s:
        prompt = create_prompt(
            s, name="weekly", audience="eng", schedule=parse_schedule("monday 09:30"), bank=["Q1?"]
        )
        prompt.created_at = monday - timedelta(days=7)
    with unit_of_work(session_factory) as s:
        tick(s, monday + timedelta(minutes=30), DOMAIN)
    with unit_of_work(session_factory) as s:
        (q,) = s.scalars(select(Question)).all()
        assert q.deadline is not None
        tick(s, q.deadline + timedelta(minutes=1), DOMAIN)
    with session_factory() as s:
        q = s.scalars(select(Question)).one()
        msg, body = composed(s, "summary", q, MEMBERS[0])
        ask, _ = composed(s, "ask", q, MEMBERS[1])
    assert "visible only to the asker" not in body
    assert "Nobody answered this week" in body, body
    assert "(via Mailgate)" not in str(msg["From"]) and "Mailgate (via" not in str(msg["From"])
    assert msg["From"].addresses[0].display_name == "Weekly question (Mailgate)"
    assert ask["From"].addresses[0].display_name == "Weekly question (Mailgate)"
