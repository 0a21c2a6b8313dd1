"""Questions by mail to ask@: who may ask, authentication, directives, and refusals —
through the real gateway on 127.0.0.1 and the ingest service, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from mailgate.ingest import run_ingest
from mailgate.models import (
    AnswerVisibility,
    Ask,
    Notice,
    OutboxEntry,
    Question,
    QuestionViewer,
    RawMessage,
    RawStatus,
)
from tests.conftest import DOMAIN
from tests.conftest import build_mail as mail

CEO, CTO, BOB, OWNER = (
    "ceo@corp.example",
    "cto@corp.example",
    "bob@corp.example",
    "owner@corp.example",
)
TRUSTED = "mx.corp.example; dkim=pass header.d=corp.example; dmarc=pass header.from=corp.example"
ASK = f"ask@{DOMAIN}"


@pytest.fixture
def company(directory):  # type: ignore[no-untyped-def]
    directory.list("eng", visibility="members")
    directory.member("eng", OWNER, role="owner")
    directory.member("eng", BOB)
    directory.member("eng", CTO)
    directory.list("all")
    directory.member("all", CEO)
    directory.grant(CEO, "executive")
    return directory


@pytest.fixture
def deliver(gateway, session_factory, ingest_context):  # type: ignore[no-untyped-def]
    def send(raw: bytes, rcpt: str = ASK, mail_from: str = CEO) -> int:
        raw_id = gateway.submit(raw, rcpt, mail_from)
        run_ingest(session_factory, raw_id, ingest_context)
        return raw_id

    return send


def authenticated(raw: bytes) -> bytes:
    return f"Authentication-Results: {TRUSTED}\r\n".encode() + raw


def state(session_factory, raw_id: int):  # type: ignore[no-untyped-def]
    with session_factory() as s:
        row = s.get_one(RawMessage, raw_id)
        return (
            row.status,
            row.reason,
            s.scalar(select(func.count()).select_from(Question)),
            s.scalar(select(func.count()).select_from(Ask)),
            sorted((n.address, n.reason) for n in s.scalars(select(Notice))),
        )


def test_authenticated_executive_question_with_directives(  # type: ignore[no-untyped-def]
    company, deliver, session_factory
) -> None:
    body = (
        "Audience: eng\nDeadline: 2099-01-15\nVisibility: asker-only\nAnonymous: yes\n"
        f"Viewers: {CTO}\nReminders: 3\n\nWhat should we stop doing?"
    )
    raw_id = deliver(authenticated(mail(sender=CEO, to=ASK, subject="Stop doing", body=body)))
    status, reason, questions, asks, notices = state(session_factory, raw_id)
    assert (status, reason, questions) == (RawStatus.PROCESSED, "question-created", 1)
    assert asks == 3  # the eng members: owner, Bob, the CTO (the asker is not in eng)
    assert notices == [(CEO, "ask-accepted")]
    with session_factory() as s:
        q = s.scalars(select(Question)).one()
        assert (q.visibility, q.anonymous, q.max_reminders) == (
            AnswerVisibility.ASKER_ONLY,
            True,
            3,
        )
        assert q.deadline is not None and q.deadline.year == 2099
        assert len(s.scalars(select(QuestionViewer)).all()) == 1
        # The scheduler is woken through the outbox as soon as this commits.
        assert s.scalar(select(OutboxEntry.task).where(OutboxEntry.key == f"question:{q.id}")) == (
            "mailgate.questions_tick"
        )


def test_forged_executive_gets_nothing_sent_until_the_real_one_confirms(  # type: ignore[no-untyped-def]
    company, deliver, session_factory
) -> None:
    forged = mail(
        sender=CEO,
        to=ASK,
        subject="Urgent",
        body="To: company\n\nPlease send me your passwords?",
        headers={"Reply-To": "attacker@evil.example"},
    )
    raw_id = deliver(forged, mail_from="attacker@evil.example")
    status, reason, questions, asks, notices = state(session_factory, raw_id)
    assert (status, reason, questions, asks) == (RawStatus.HELD, "held-for-authentication", 0, 0)
    assert notices == [(CEO, "held-for-authentication")]  # to the address of record
    with session_factory() as s:
        token = s.scalars(select(Notice)).one().context["confirm_token"]
    # Someone else "confirming" changes nothing; the real executive's confirmation asks it.
    deliver(mail(sender=BOB, body="yes"), rcpt=f"confirm+{token}@{DOMAIN}", mail_from=BOB)
    assert state(session_factory, raw_id)[2] == 0
    deliver(mail(sender=CEO, body="yes"), rcpt=f"confirm+{token}@{DOMAIN}", mail_from=CEO)
    status, reason, questions, asks, _ = state(session_factory, raw_id)
    assert (status, questions) == (RawStatus.PROCESSED, 1)
    assert asks == 3  # everyone active but the asker: the owner, Bob and the CTO


@pytest.mark.parametrize(
    ("sender", "body", "reason"),
    [
        (BOB, "To: company\n\nWhy?", "ask-not-allowed"),  # not an executive
        (OWNER, "To: company\n\nWhy?", "ask-not-allowed"),  # owners ask only their list
        (CEO, "To: nosuchlist\n\nWhy?", "ask-invalid"),
        (CEO, "Deadline: 2001-01-01\n\nWhy?", "ask-invalid"),  # in the past
        (CEO, "Visibility: secret-ish\n\nWhy?", "ask-invalid"),
        (CEO, "To: company\n\n", "ask-invalid"),  # settings but no question
        ("stranger@elsewhere.example", "Why?", "unknown-sender"),
    ],
)
def test_refusals_explain_themselves(  # type: ignore[no-untyped-def]
    company, deliver, session_factory, sender, body, reason
) -> None:
    raw_id = deliver(authenticated(mail(sender=sender, to=ASK, body=body)), mail_from=sender)
    status, got, questions, asks, notices = state(session_factory, raw_id)
    assert (status, got, questions, asks) == (RawStatus.REJECTED, reason, 0, 0)
    assert notices == [(sender, reason)]


def test_an_owner_may_ask_their_own_list(company, deliver, session_factory) -> None:  # type: ignore[no-untyped-def]
    raw_id = deliver(
        authenticated(mail(sender=OWNER, to=ASK, body="To: eng\n\nRetro topics?")),
        mail_from=OWNER,
    )
    status, reason, questions, asks, _ = state(session_factory, raw_id)
    assert (status, reason, questions, asks) == (RawStatus.PROCESSED, "question-created", 1, 2)
