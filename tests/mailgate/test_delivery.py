"""Fan-out and sending against a real database and a recording relay on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from mailgate.copies import CopySettings
from mailgate.db import unit_of_work
from mailgate.delivery import (
    Throttle,
    TokenCopyBuilder,
    claim,
    due_deliveries,
    fan_out,
    send_batch,
)
from mailgate.ingest import IngestContext, run_ingest
from mailgate.models import (
    BounceState,
    DeliveryRecord,
    DeliveryStatus,
    Mute,
    OutboxEntry,
    Person,
    Post,
    utcnow,
)
from mailgate.tokens import TokenKind, read_token
from tests.conftest import DOMAIN, SECRET
from worker.mailer import SmtpMailer

MEMBERS = [f"m{i}@corp.example" for i in range(6)]


@pytest.fixture
def posted(directory, gateway, session_factory):  # type: ignore[no-untyped-def]
    """A members-only list with six every-message members, one digest member, and a post."""
    directory.list("eng", name="Engineering", visibility="members")
    for address in MEMBERS:
        directory.member("eng", address, name=address.split("@")[0].upper())
    directory.member("eng", "digest@corp.example", delivery="digest")
    directory.member("eng", "quiet@corp.example", delivery="none")
    raw = (
        b"From: M0 <m0@corp.example>\r\nTo: eng@lists.corp.example\r\nSubject: Deploy plan\r\n"
        b"Message-ID: <deploy@corp.example>\r\n\r\nWe ship on Friday.\r\n"
    )
    with gateway.smtp() as client:
        client.sendmail("m0@corp.example", [f"eng@{DOMAIN}"], raw)
    (raw_id,) = gateway.published_after(0)
    run_ingest(session_factory, raw_id, IngestContext(domain=DOMAIN, secrets=(SECRET,)))
    with session_factory() as s:
        return s.scalars(select(Post.id)).one()


def builder() -> TokenCopyBuilder:
    return TokenCopyBuilder(CopySettings(domain=DOMAIN, base_url="https://mg.corp.example"), SECRET)


def delivery_rows(session_factory) -> list[DeliveryRecord]:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        return list(s.scalars(select(DeliveryRecord).order_by(DeliveryRecord.id)))


def test_fan_out_picks_every_message_members_except_author_and_is_idempotent(  # type: ignore[no-untyped-def]
    posted, session_factory
) -> None:
    with unit_of_work(session_factory) as s:
        fan_out(s, posted, batch_size=2)
    with unit_of_work(session_factory) as s:
        fan_out(s, posted, batch_size=2)  # at-least-once: a second run adds nothing
    rows = delivery_rows(session_factory)
    assert [r.address for r in rows] == MEMBERS[1:]  # not the author, digest or no-mail
    with session_factory() as s:
        keys = s.scalars(select(OutboxEntry.key).where(OutboxEntry.task == "mailgate.send")).all()
    assert len(keys) == 3  # 5 rows in batches of 2, the same keys on both runs


def test_fan_out_skips_muted_suspended_and_honours_self_copy(  # type: ignore[no-untyped-def]
    posted, session_factory, directory
) -> None:
    # Look the people up first: SQLite allows one writer, and this test's own
    # transaction below is it.
    author, muted, suspended = (directory.person_id(m) for m in MEMBERS[:3])
    with unit_of_work(session_factory) as s:
        post = s.get_one(Post, posted)
        s.add(Mute(discussion_id=post.discussion_id, person_id=muted))
        s.add(BounceState(person_id=suspended, score=9.0, bounces=9, suspended_at=utcnow()))
        s.execute(update(Person).where(Person.id == author).values(self_copy=True))
    with unit_of_work(session_factory) as s:
        fan_out(s, posted)
    assert [r.address for r in delivery_rows(session_factory)] == [MEMBERS[0], *MEMBERS[3:]]


def test_send_batch_delivers_each_copy_with_its_own_tokens(  # type: ignore[no-untyped-def]
    posted, session_factory, relay_sink
) -> None:
    with unit_of_work(session_factory) as s:
        fan_out(s, posted)
    ids = [r.id for r in delivery_rows(session_factory)]
    report = send_batch(session_factory, ids, builder=builder(), relay=SmtpMailer(relay_sink.url))
    assert (report.sent, report.failed, report.deferred) == (5, 0, 0)
    assert relay_sink.connections == 1  # one connection for the whole batch
    assert sorted(m.rcpt_to[0] for m in relay_sink.messages) == MEMBERS[1:]
    seen_ids = set()
    for message in relay_sink.messages:
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        assert parsed.defects == []
        seen_ids.add(parsed["Message-ID"])
        (delivery_id,) = read_token(
            (SECRET,), TokenKind.BOUNCE, message.mail_from.split("+", 1)[1].split("@")[0]
        )
        with session_factory() as s:
            row = s.get_one(DeliveryRecord, delivery_id)
        assert row.address == message.rcpt_to[0]  # VERP names this very copy (BNC-01)
        reply_token = parsed["Reply-To"].addresses[0].username.split("+", 1)[1]
        person_id, _ = read_token((SECRET,), TokenKind.REPLY, reply_token)
        assert person_id == row.person_id
        assert parsed["List-Id"] == '"Engineering" <eng.lists.corp.example>'
        assert parsed["Subject"] == "[eng] Deploy plan"
    assert seen_ids == {"<deploy@corp.example>"}  # one Message-ID for every copy
    assert {r.status for r in delivery_rows(session_factory)} == {DeliveryStatus.SENT}
    # Sending the same batch again sends nothing: the rows are no longer claimable.
    again = send_batch(session_factory, ids, builder=builder(), relay=SmtpMailer(relay_sink.url))
    assert again.sent == 0 and len(relay_sink.messages) == 5


def test_relay_4xx_defers_and_5xx_fails_per_recipient(  # type: ignore[no-untyped-def]
    posted, session_factory, relay_sink
) -> None:
    relay_sink.rcpt_once[MEMBERS[1]] = "451 4.3.0 try later"
    relay_sink.rcpt_replies[MEMBERS[2]] = "550 5.1.1 no such user"
    with unit_of_work(session_factory) as s:
        fan_out(s, posted)
    ids = [r.id for r in delivery_rows(session_factory)]
    report = send_batch(session_factory, ids, builder=builder(), relay=SmtpMailer(relay_sink.url))
    assert (report.sent, report.failed, report.deferred) == (3, 1, 1)
    rows = {r.address: r for r in delivery_rows(session_factory)}
    assert rows[MEMBERS[2]].status is DeliveryStatus.FAILED and "550" in rows[MEMBERS[2]].last_error
    deferred = rows[MEMBERS[1]]
    assert deferred.status is DeliveryStatus.PENDING
    assert deferred.next_attempt_at is not None and deferred.next_attempt_at > utcnow()
    # Not due yet: a send now does nothing; once due, the sweeper finds it and it goes.
    assert due_deliveries(session_factory) == []
    later = utcnow() + timedelta(hours=2)
    assert due_deliveries(session_factory, now=later) == [deferred.id]
    retry = send_batch(
        session_factory,
        [deferred.id],
        builder=builder(),
        relay=SmtpMailer(relay_sink.url),
        now=lambda: later,
    )
    assert retry.sent == 1
    assert sorted(m.rcpt_to[0] for m in relay_sink.messages) == sorted([MEMBERS[1], *MEMBERS[3:]])


def test_relay_down_defers_the_whole_batch(posted, session_factory) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import free_port

    with unit_of_work(session_factory) as s:
        fan_out(s, posted)
    ids = [r.id for r in delivery_rows(session_factory)]
    report = send_batch(
        session_factory, ids, builder=builder(), relay=SmtpMailer(f"smtp://127.0.0.1:{free_port()}")
    )
    assert (report.sent, report.deferred) == (0, 5)
    assert {r.status for r in delivery_rows(session_factory)} == {DeliveryStatus.PENDING}


def test_expired_lease_is_sent_again(posted, session_factory, relay_sink) -> None:  # type: ignore[no-untyped-def]
    """A worker that died mid-batch leaves rows in sending; after the lease they go out."""
    with unit_of_work(session_factory) as s:
        fan_out(s, posted)
    ids = [r.id for r in delivery_rows(session_factory)]
    with unit_of_work(session_factory) as s:
        assert claim(s, ids, utcnow()) == ids  # the "dead" worker's claim
    with unit_of_work(session_factory) as s:
        assert claim(s, ids, utcnow()) == []  # nobody else may take them meanwhile
    later = utcnow() + timedelta(minutes=6)
    assert due_deliveries(session_factory, now=later) == ids
    report = send_batch(
        session_factory, ids, builder=builder(), relay=SmtpMailer(relay_sink.url), now=lambda: later
    )
    assert report.sent == 5
    with session_factory() as s:
        attempts = s.scalars(select(func.max(DeliveryRecord.attempts))).one()
    assert attempts == 2


def test_throttle_spaces_copies() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    throttle = Throttle(10.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(21):
        throttle()
    assert now[0] == pytest.approx(2.0)  # 21 copies at 10/s take 2 s


def test_relay_4xx_at_data_defers_and_the_retry_delivers(  # type: ignore[no-untyped-def]
    posted, session_factory, relay_sink
) -> None:
    relay_sink.data_replies = ["451 4.3.0 queue full"]  # the first DATA only
    with unit_of_work(session_factory) as s:
        fan_out(s, posted)
    ids = [r.id for r in delivery_rows(session_factory)]
    first = send_batch(session_factory, ids, builder=builder(), relay=SmtpMailer(relay_sink.url))
    assert (first.sent, first.deferred) == (0, 5)  # the batch stops at the relay's 4xx
    later = utcnow() + timedelta(hours=2)
    retry = send_batch(
        session_factory,
        due_deliveries(session_factory, now=later),
        builder=builder(),
        relay=SmtpMailer(relay_sink.url),
        now=lambda: later,
    )
    assert retry.sent == 5 and len(relay_sink.messages) == 5
    assert {r.attempts for r in delivery_rows(session_factory)} == {2}
