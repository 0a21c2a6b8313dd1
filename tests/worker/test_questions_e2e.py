"""Questions end to end: a real gateway, a real worker on Redis, a recording relay.

An executive mails ask@ a question to the whole company (50 people); each member gets
it as their own email with their own reply address; answers arrive by reply from
several mail clients; the asker gets each answer; "don't know yet, by <date>" becomes a
promise that is reminded on its date and, once answered, told to the person who asked;
reminders go only to those who did not answer (and not to someone whose out-of-office
named a return date); at the deadline everyone gets "what we heard".

The scheduler step runs as ``mailgate ask tick --now …`` (the same step beat runs every
minute) at instants days ahead, so the test covers a week in a few seconds.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from mailgate.db import unit_of_work
from mailgate.models import Ask, Followup, Person, Post, Question, QuestionMail
from tests.conftest import DOMAIN, free_port
from tests.worker.conftest import (
    REDIS_URL,
    port_open,
    require_fresh_redis,
    wait_for,
)

CEO = "ceo@corp.example"
AR = "mx.corp.example; dkim=pass header.d=corp.example; dmarc=pass header.from=corp.example"
ZONES = ("Europe/Berlin", "Europe/London", "UTC", "Europe/Lisbon", "Asia/Tokyo")
DEPARTMENTS = ("Engineering", "Sales", "Operations")


def member(i: int) -> str:
    return f"m{i:02d}@corp.example"


def next_wednesday_noon(now: datetime) -> datetime:
    day = now.date() + timedelta(days=1)
    while day.weekday() != 2:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)


@pytest.fixture
def company(directory, session_factory):  # type: ignore[no-untyped-def]
    directory.list("staff")
    directory.member("staff", CEO, name="Cleo Executive", timezone="Europe/London")
    directory.grant(CEO, "executive")
    for i in range(50):
        directory.member(
            "staff",
            member(i),
            name=f"Member {i:02d}",
            timezone=ZONES[i % len(ZONES)],
            department=DEPARTMENTS[i % len(DEPARTMENTS)],
        )


def start(processes, mailgate_env, relay_sink, tmp_path, extra=None):  # type: ignore[no-untyped-def]
    require_fresh_redis()
    port = free_port()
    env = {
        **mailgate_env,
        "MAILGATE_SMTP_PORT": str(port),
        "MAILGATE_RELAY_URL": relay_sink.url,
        "MAILGATE_BROKER_URL": REDIS_URL,
        "MAILGATE_AUTHSERV_IDS": "mx.corp.example",
        "MAILGATE_AUTHRES_RELAYS": "127.0.0.1/32",  # the test's relay: explicitly trusted
        "MAILGATE_HTTP_PORT": str(free_port()),
        **(extra or {}),
    }
    processes(["serve"], env, tmp_path / "serve.log")
    processes(["worker", "--concurrency", "2"], env, tmp_path / "worker.log")
    wait_for(lambda: port_open(port), what="the gateway")
    return port, env


def tick(processes, env, tmp_path, at: datetime) -> str:  # type: ignore[no-untyped-def]
    log = tmp_path / f"tick-{at:%Y%m%d%H%M}.log"
    step = processes(["ask", "tick", "--now", at.isoformat()], env, log)
    assert step.wait(timeout=60) == 0, log.read_text()
    return log.read_text()


def send(port: int, sender: str, rcpt: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(sender, [rcpt], raw)


def parsed(message) -> EmailMessage:  # type: ignore[no-untyped-def]
    return email.message_from_bytes(message.data, policy=email.policy.default)  # type: ignore[return-value]


def mails(relay_sink, kind: str) -> dict[str, EmailMessage]:  # type: ignore[no-untyped-def]
    """The relay's messages of one question-mail kind, by recipient."""
    out = {}
    for message in list(relay_sink.messages):
        msg = parsed(message)
        if msg.get("X-Mailgate-Kind") == kind:
            out[message.rcpt_to[0]] = msg
    return out


def text_of(msg: EmailMessage) -> str:
    body = msg.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


# Replies as real clients write them: the new text on top, the quoted question below.
def gmail_reply(sender: str, to: str, parent: str, text: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: Re: Offsite\r\n"
        f"Message-ID: <{time.time_ns()}.g@mail.gmail.com>\r\nIn-Reply-To: {parent}\r\n"
        f"References: {parent}\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n"
        f"{text}\r\n\r\nOn Wed, 2 Dec 2026 at 12:00, Cleo Executive <{to}> wrote:\r\n"
        "> Where should we hold the offsite?\r\n"
    ).encode()


def outlook_reply(sender: str, to: str, parent: str, text: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: RE: Offsite\r\n"
        f"Message-ID: <{time.time_ns()}.o@EXCH.corp.example>\r\nIn-Reply-To: {parent}\r\n"
        f"Thread-Topic: Offsite\r\nContent-Type: text/plain; charset=windows-1252\r\n\r\n"
        f"{text}\r\n\r\n-----Original Message-----\r\nFrom: Cleo Executive\r\n"
        "Sent: Wednesday, December 2, 2026 12:00 PM\r\nSubject: Offsite\r\n\r\n"
        "Where should we hold the offsite?\r\n"
    ).encode()


def apple_reply(sender: str, to: str, parent: str, text: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: Re: Offsite\r\n"
        f"Message-ID: <{time.time_ns()}.a@corp.example>\r\nIn-Reply-To: {parent}\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"{text}\r\n\r\nSent from my iPhone\r\n\r\n"
        "> On 2 Dec 2026, at 12:00, Cleo Executive wrote:\r\n>\r\n"
        "> Where should we hold the offsite?\r\n"
    ).encode()


CLIENTS = (gmail_reply, outlook_reply, apple_reply)
ANSWERS = {
    0: "Lisbon, please.",
    1: "Lisbon, please.",
    2: "Somewhere we can walk to from the station.",
    3: "Lisbon, please.",
    4: "The mountains: fewer distractions.",
    5: "Berlin - half of us are there already.",
    6: "Anywhere with good coffee.",
    7: "Lisbon, please.",
    8: "Berlin - half of us are there already.",
    9: "The mountains: fewer distractions.",
}


def test_question_to_the_company_end_to_end(  # type: ignore[no-untyped-def]
    company, mailgate_env, session_factory, processes, relay_sink, tmp_path, dkim_key
) -> None:
    port, env = start(processes, mailgate_env, relay_sink, tmp_path, dkim_key.env)
    t0 = next_wednesday_noon(datetime.now(UTC))
    deadline_day = (t0 + timedelta(days=3)).date()  # Saturday: closes Sat 17:00 London

    # 1. The executive asks, authenticated by the company's MX (a trusted A-R).
    question = EmailMessage()
    question["Authentication-Results"] = AR
    question["From"] = f"Cleo Executive <{CEO}>"
    question["To"] = f"ask@{DOMAIN}"
    question["Subject"] = "Offsite"
    question["Message-ID"] = f"<{time.time_ns()}.ask@corp.example>"
    question.set_content(
        f"To: company\nDeadline: {deadline_day.isoformat()}\nVisibility: open\n\n"
        "Where should we hold the offsite?\n"
    )
    send(port, CEO, f"ask@{DOMAIN}", question.as_bytes())

    def asks() -> list[Ask]:
        with session_factory() as s:
            return list(s.scalars(select(Ask).order_by(Ask.person_id)))

    wait_for(lambda: len(asks()) == 50, timeout=30, what="50 asks")
    with session_factory() as s:
        zones = dict(s.execute(select(Person.id, Person.timezone)).all())
        (q,) = s.scalars(select(Question)).all()
        assert q.deadline is not None
        assert q.deadline.astimezone(ZoneInfo("Europe/London")).date() == deadline_day
    for ask in asks():
        local = ask.due_at.astimezone(ZoneInfo(zones[ask.person_id]))
        assert local.weekday() < 5 and 9 <= local.hour < 17, local  # never at 3 a.m.
    # The asker was told it is on its way.
    wait_for(lambda: any(CEO in m.rcpt_to for m in relay_sink.messages), what="ask-accepted")

    # 2. The scheduler step at Wednesday noon sends every ask: one each, own reply address.
    tick(processes, env, tmp_path, t0)
    wait_for(lambda: len(mails(relay_sink, "ask")) == 50, timeout=60, what="50 asks sent")
    sent = mails(relay_sink, "ask")
    assert sorted(sent) == sorted(member(i) for i in range(50))
    reply_addresses = {}
    for rcpt, msg in sent.items():
        assert msg["Subject"] == "Question from Cleo Executive: Offsite"
        assert "Where should we hold the offsite?" in text_of(msg)
        (reply_to,) = msg["Reply-To"].addresses
        assert reply_to.username.startswith("reply+") and reply_to.domain == DOMAIN
        reply_addresses[rcpt] = reply_to.addr_spec
        assert msg["Auto-Submitted"] is None  # so out-of-office replies tell us dates
    assert len(set(reply_addresses.values())) == 50

    # 3. Ten answer from three kinds of client; one is away and says until when.
    for i, text in ANSWERS.items():
        parent = sent[member(i)]["In-Reply-To"]
        raw = CLIENTS[i % 3](member(i), reply_addresses[member(i)], parent, text)
        send(port, member(i), reply_addresses[member(i)], raw)
    back = t0.date() + timedelta(days=12)
    ooo = EmailMessage()
    ooo["From"] = member(11)
    ooo["To"] = reply_addresses[member(11)]
    ooo["Subject"] = "Automatic reply: Offsite"
    ooo["Auto-Submitted"] = "auto-replied"
    ooo["Message-ID"] = f"<{time.time_ns()}.ooo@corp.example>"
    ooo.set_content(f"I am out of the office until {back.strftime('%d %B %Y')}.")
    send(port, "", reply_addresses[member(11)], ooo.as_bytes())

    def answered() -> set[int]:
        with session_factory() as s:
            return set(s.scalars(select(Ask.person_id).where(Ask.answered_at.is_not(None))))

    wait_for(lambda: len(answered()) == 10, timeout=60, what="ten answers")

    def away_until() -> str | None:
        with session_factory() as s:
            return s.scalar(select(Person.away_until).where(Person.addresses.any(email=member(11))))

    # The auto-reply is never posted or answered, but its return date is kept.
    wait_for(lambda: away_until() == back.isoformat(), timeout=30, what="the return date")
    with session_factory() as s:
        texts = sorted(
            s.scalars(select(Post.text).where(Post.discussion_id == q.discussion_id)).all()
        )
    # Quoted history, attributions and "Sent from my iPhone" are gone.
    assert sorted(t.strip() for t in texts) == sorted(
        ["Where should we hold the offsite?", *ANSWERS.values()]
    )

    # 4. The asker got each answer as it arrived (and nobody else did).
    def answer_copies() -> list[EmailMessage]:
        return [
            parsed(m)
            for m in list(relay_sink.messages)
            if parsed(m).get("X-Mailgate-Kind") is None
            and m.rcpt_to != [CEO]
            and "List-Id" in parsed(m)
        ]

    def ceo_copies() -> list[EmailMessage]:
        return [
            parsed(m)
            for m in list(relay_sink.messages)
            if m.rcpt_to == [CEO] and "List-Id" in parsed(m)
        ]

    wait_for(lambda: len(ceo_copies()) == 10, timeout=60, what="answers to the asker")
    assert answer_copies() == []
    lisbon = next(
        c for c in ceo_copies() if "m00@" in str(c["From"]) or "Member 00" in str(c["From"])
    )

    # 5. The asker: "don't know yet" to one answer, by Friday.
    friday = t0.date() + timedelta(days=2)
    promise = EmailMessage()
    promise["From"] = CEO
    promise["To"] = lisbon["Reply-To"].addresses[0].addr_spec
    promise["Subject"] = "Re: Offsite"
    promise["Message-ID"] = f"<{time.time_ns()}.dky@corp.example>"
    promise["In-Reply-To"] = lisbon["Message-ID"]
    promise.set_content(f"Don't know yet, by {friday.isoformat()} - checking the budget.")
    send(port, CEO, promise["To"], promise.as_bytes())

    def followups() -> list[Followup]:
        with session_factory() as s:
            return list(s.scalars(select(Followup)))

    wait_for(lambda: len(followups()) == 1, timeout=30, what="the promise")
    assert followups()[0].due_date == friday.isoformat()

    # 6. Friday afternoon: reminders to everyone who did not answer — not to the ten,
    # not to the one away — and the asker is reminded of the promise.
    tick(processes, env, tmp_path, t0 + timedelta(days=2, hours=1))
    expected = {member(i) for i in range(50)} - {member(i) for i in ANSWERS} - {member(11)}
    # Tokyo is at 22:00 then: not a time to nag; their reminder waits for their morning.
    with session_factory() as s:
        ids = {p.id: p.primary_address for p in s.scalars(select(Person))}
    tokyo = {ids[pid] for pid, zone in zones.items() if zone == "Asia/Tokyo"}
    wait_for(
        lambda: set(mails(relay_sink, "reminder")) == expected - tokyo,
        timeout=60,
        what="reminders",
    )
    wait_for(lambda: CEO in mails(relay_sink, "followup-due"), timeout=30, what="promise due")
    due = mails(relay_sink, "followup-due")[CEO]
    assert "Lisbon, please." in text_of(due)

    # 7. The asker answers the promise; the member who asked is told.
    answer = EmailMessage()
    answer["From"] = CEO
    answer["To"] = due["Reply-To"].addresses[0].addr_spec
    answer["Subject"] = "Re: Due today"
    answer["Message-ID"] = f"<{time.time_ns()}.ans@corp.example>"
    answer["In-Reply-To"] = due["In-Reply-To"]
    answer.set_content("Budget approved: Lisbon it is.")
    send(port, CEO, answer["To"], answer.as_bytes())
    wait_for(lambda: member(0) in mails(relay_sink, "answered"), timeout=60, what="answered")
    assert "Budget approved: Lisbon it is." in text_of(mails(relay_sink, "answered")[member(0)])
    assert set(mails(relay_sink, "answered")) == {member(0)}

    # 8. After the deadline: "what we heard" to everyone asked and the asker.
    tick(processes, env, tmp_path, t0 + timedelta(days=4))
    wait_for(lambda: len(mails(relay_sink, "summary")) == 51, timeout=60, what="summaries")
    summary = text_of(mails(relay_sink, "summary")[member(30)])
    assert "10 of 50 people answered." in summary
    assert "4 x Lisbon, please" in summary
    assert "Member 05:" in summary  # open: answers with names
    with unit_of_work(session_factory) as s:
        assert s.scalar(select(func.count()).where(QuestionMail.status != "sent")) == 0

    # 9. Everything the relay got carries a DKIM signature a receiver verifies: asks,
    # reminders, summaries, the notices, and the answers' list copies (DMARC-01).
    kinds = {parsed(m).get("X-Mailgate-Kind", "other") for m in relay_sink.messages}
    assert {"ask", "reminder", "summary", "answered", "other"} <= kinds
    unsigned = [m.rcpt_to for m in relay_sink.messages if not dkim_key.verifies(m.data)]
    assert unsigned == []
