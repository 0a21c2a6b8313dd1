"""Digests end to end: posts enter through the real gateway, digests are built from the
database in batches and handed to a recording relay; replies to an item and to the
digest itself come back through the gateway. One test runs a real Celery worker on
Redis for the scheduler step.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, select, update

from digests.gather import gather
from digests.sending import DigestMail, due_now, send_digests
from mailgate.db import unit_of_work
from mailgate.ingest import IngestContext, run_ingest
from mailgate.models import Digest, Mute, Notice, Person, Post, RawMessage
from tests.conftest import DOMAIN, SECRET, free_port
from tests.worker.conftest import REDIS_URL, require_fresh_redis, wait_for
from worker.mailer import SmtpMailer

MAIL = DigestMail(domain=DOMAIN, secret=SECRET, base_url="https://mg.corp.example")
READER = "reader@corp.example"  # takes eng by digest, is not on secret
NOON = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def world(directory, gateway, session_factory):  # type: ignore[no-untyped-def]
    directory.list("eng", name="Engineering", visibility="members")
    directory.list("secret", name="Secret", visibility="hidden")
    for who, dept in [("ana", "Eng"), ("bo", "Sales"), ("cy", "Support")]:
        directory.member("eng", f"{who}@corp.example", name=who.title(), department=dept)
        directory.member("secret", f"{who}@corp.example", name=who.title(), department=dept)
    directory.member("eng", READER, name="Reader", timezone="Europe/Berlin", delivery="digest")

    def send(sender: str, list_slug: str, subject: str, body: str, **headers: str) -> int:
        head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
        raw = (
            f"From: {sender}\r\nTo: {list_slug}@{DOMAIN}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}.{sender}>\r\n{head}\r\n{body}\r\n"
        ).encode()
        raw_id = gateway.submit(raw, f"{list_slug}@{DOMAIN}", sender)
        ctx = IngestContext(domain=DOMAIN, secrets=(SECRET,), now=lambda: NOON - timedelta(hours=3))
        run_ingest(session_factory, raw_id, ctx)
        return raw_id

    send("ana@corp.example", "eng", "Cache rollout", "Rolling out the new cache today.")
    with session_factory() as s:
        first = s.scalars(select(Post)).one()
    send(
        "bo@corp.example",
        "eng",
        "Re: Cache rollout",
        "Sales sees faster pages.",
        In_Reply_To=f"<{first.message_id}>",
    )
    send(
        "cy@corp.example",
        "eng",
        "Re: Cache rollout",
        "Support too.",
        In_Reply_To=f"<{first.message_id}>",
    )
    send("ana@corp.example", "secret", "Layoff plans", "Confidential: do not forward.")
    return send


def test_due_members_follow_their_local_morning(world, session_factory) -> None:  # type: ignore[no-untyped-def]
    # 06:30 UTC is 07:30 in Berlin: not yet; 07:05 UTC is 08:05: due.
    assert due_now(session_factory, datetime(2026, 3, 3, 6, 30, tzinfo=UTC)) == []
    due = due_now(session_factory, datetime(2026, 3, 3, 7, 5, tzinfo=UTC))
    assert [d for _, d in due] == [date(2026, 3, 3)]


def test_digest_is_sent_once_with_readable_items_only(  # type: ignore[no-untyped-def]
    world, session_factory, relay_sink
) -> None:
    due = due_now(session_factory, NOON)
    report = send_digests(
        session_factory, due, mail=MAIL, relay=SmtpMailer(relay_sink.url), now=NOON
    )
    assert report.sent == 1
    (message,) = relay_sink.messages
    assert message.rcpt_to == [READER] and message.mail_from in ("", "<>")  # null sender
    digest = email.message_from_bytes(message.data, policy=email.policy.default)
    assert digest.defects == []
    assert digest["Auto-Submitted"] == "auto-generated"
    assert digest["References"] is None and digest["In-Reply-To"] is None
    text = digest.get_body(("plain",)).get_content()
    assert "Cache rollout" in text
    assert "Layoff" not in text and "Confidential" not in text  # hidden list: never
    html = digest.get_body(("html",)).get_content()
    assert "Layoff" not in html
    # Running the step again sends nothing twice (DUR-06).
    again = send_digests(
        session_factory,
        due_now(session_factory, NOON),
        mail=MAIL,
        relay=SmtpMailer(relay_sink.url),
        now=NOON,
    )
    assert again.sent == 0 and len(relay_sink.messages) == 1
    with session_factory() as s:
        (row,) = s.scalars(select(Digest)).all()
    assert row.status == "sent" and len(row.items) >= 1


def test_nothing_worth_reading_sends_nothing(directory, session_factory, relay_sink) -> None:  # type: ignore[no-untyped-def]
    directory.list("quiet")
    directory.member("quiet", READER, delivery="digest")
    report = send_digests(
        session_factory,
        due_now(session_factory, NOON),
        mail=MAIL,
        relay=SmtpMailer(relay_sink.url),
        now=NOON,
    )
    assert (report.sent, report.empty) == (0, 1)
    assert relay_sink.messages == []


def test_gathering_costs_the_same_queries_for_any_batch_size(  # type: ignore[no-untyped-def]
    world, directory, session_factory
) -> None:
    for i in range(40):
        directory.member("eng", f"extra{i}@corp.example", delivery="digest")
    with session_factory() as s:
        ids = s.scalars(select(Post.author_id).distinct()).all()
        from mailgate.models import Person

        people = s.scalars(select(Person.id).order_by(Person.id)).all()
    counts = []
    for size in (2, len(people)):
        statements: list[str] = []

        def count(conn, cursor, statement, *args, seen=statements):  # type: ignore[no-untyped-def]
            seen.append(statement)

        with session_factory() as s:
            engine = s.get_bind()
            event.listen(engine, "before_cursor_execute", count)
            try:
                gathered = gather(s, {pid: NOON - timedelta(days=1) for pid in people[:size]}, NOON)
            finally:
                event.remove(engine, "before_cursor_execute", count)
        assert len(gathered.views) == size
        counts.append(len(statements))
    assert ids and counts[0] == counts[1]


def reply(port: int, sender: str, rcpt: str, body: str) -> None:
    raw = (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: Re: digest\r\n"
        f"Message-ID: <{time.time_ns()}@corp.example>\r\n\r\n{body}\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(sender, [rcpt], raw)


def test_replies_to_an_item_and_commands_to_the_digest(  # type: ignore[no-untyped-def]
    world, gateway, session_factory, relay_sink, ingest_context
) -> None:
    send_digests(
        session_factory,
        due_now(session_factory, NOON),
        mail=MAIL,
        relay=SmtpMailer(relay_sink.url),
        now=NOON,
    )
    digest = email.message_from_bytes(relay_sink.messages[0].data, policy=email.policy.default)
    text = digest.get_body(("plain",)).get_content()
    item_reply = next(
        word.removeprefix("mailto:").split("?")[0]
        for word in text.split()
        if word.startswith(("mailto:reply+", "<mailto:reply+", "reply+"))
    ).strip("<>")
    digest_reply = digest["Reply-To"].addresses[0].addr_spec

    def deliver(rcpt: str, body: str) -> RawMessage:
        before = len(gateway.published)
        reply(gateway.port, READER, rcpt, body)
        (raw_id,) = gateway.published_after(before)
        run_ingest(session_factory, raw_id, ingest_context)
        with session_factory() as s:
            return s.get_one(RawMessage, raw_id)

    deliver(item_reply, "Great news, thanks!")
    with session_factory() as s:
        posts = s.scalars(select(Post).order_by(Post.id)).all()
    assert posts[-1].text == "Great news, thanks!"
    assert posts[-1].discussion_id == posts[0].discussion_id  # into that very discussion

    assert deliver(digest_reply, "mute 1").reason == "digest-commands"
    with session_factory() as s:
        assert s.scalars(select(Mute.discussion_id).order_by(Mute.id)).all() == [
            posts[0].discussion_id
        ]
    not_understood = deliver(digest_reply, "What a lovely digest!")
    assert not_understood.reason == "digest-reply-not-understood"
    with session_factory() as s:
        assert s.scalars(select(Notice.reason).order_by(Notice.id)).all() == ["digest-reply-help"]
        # No new post: the latest is still the reply (rows in id order; without ORDER BY
        # PostgreSQL may return them in any order).
        latest = s.scalars(select(Post).order_by(Post.id.desc()).limit(1)).one()
        assert latest.text == "Great news, thanks!"


def test_scheduler_step_through_a_real_worker_on_redis(  # type: ignore[no-untyped-def]
    world, mailgate_env, processes, relay_sink, session_factory, tmp_path, dkim_key
) -> None:
    require_fresh_redis()
    # The scheduler runs on the real clock: make the posts from the last hour.
    with unit_of_work(session_factory) as s:
        s.execute(update(Post).values(created_at=datetime.now(UTC) - timedelta(hours=1)))
        # Due now whatever the time of day: the digest hour is the reader's current hour.
        berlin_hour = datetime.now(ZoneInfo("Europe/Berlin")).hour
        s.execute(update(Person).values(digest_hour=berlin_hour, digest_weekdays_only=False))
    env = {
        **mailgate_env,
        "MAILGATE_BROKER_URL": REDIS_URL,
        "MAILGATE_RELAY_URL": relay_sink.url,
        "MAILGATE_SMTP_PORT": str(free_port()),
        **dkim_key.env,
    }
    processes(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")
    step = processes(["digest", "send-due"], env, tmp_path / "send-due.log")
    assert step.wait(timeout=60) == 0
    assert "queued digests for 1 member" in (tmp_path / "send-due.log").read_text()
    wait_for(lambda: relay_sink.messages, timeout=60, what="the digest at the relay")
    assert relay_sink.messages[0].rcpt_to == [READER]
    assert dkim_key.verifies(relay_sink.messages[0].data)  # signed by the worker (DMARC-01)


def test_unsubscribe_by_replying_to_the_digest(  # type: ignore[no-untyped-def]
    world, directory, gateway, session_factory, relay_sink, ingest_context
) -> None:
    from mailgate.models import MailingList, Membership

    directory.list("all", mandatory=True)
    directory.member("all", READER, delivery="digest")
    send_digests(
        session_factory,
        due_now(session_factory, NOON),
        mail=MAIL,
        relay=SmtpMailer(relay_sink.url),
        now=NOON,
    )
    digest = email.message_from_bytes(relay_sink.messages[0].data, policy=email.policy.default)
    before = len(gateway.published)
    # What a mail client sends for the digest's List-Unsubscribe mailto.
    reply(gateway.port, READER, digest["Reply-To"].addresses[0].addr_spec, "unsubscribe")
    (raw_id,) = gateway.published_after(before)
    run_ingest(session_factory, raw_id, ingest_context)
    reader_id = directory.person_id(READER)
    with session_factory() as s:
        modes = dict(
            s.execute(
                select(MailingList.slug, Membership.delivery)
                .join(Membership, Membership.list_id == MailingList.id)
                .where(Membership.person_id == reader_id)
            ).all()
        )
    assert modes == {"eng": "none", "all": "digest"}  # a mandatory list cannot be silenced


def test_one_click_on_a_digest_stops_it_as_its_mailto_does(  # type: ignore[no-untyped-def]
    world, directory, gateway, session_factory, relay_sink, ingest_context
) -> None:
    """Issue 12 item 8: a digest's https one-click link and its mailto do the same thing,
    stop that member's digest (GET only says what will happen), through one service."""
    import http.client
    import urllib.parse

    from mailgate.models import MailingList, Membership
    from mailgate.unsubscribe_http import make_server, unsubscribe_app_over

    other = "other@corp.example"
    directory.member("eng", other, name="Other", timezone="Europe/Berlin", delivery="digest")
    # "all" sorts before "eng": the one-click link used to name that list and change nothing.
    directory.list("all", name="Everyone", mandatory=True)
    directory.list("ops", name="Operations")
    for who in (READER, other):
        directory.member("all", who, delivery="digest")
        directory.member("ops", who, delivery="digest")
    ids = {who: directory.person_id(who) for who in (READER, other)}
    with unit_of_work(session_factory) as s:
        s.execute(update(Person).where(Person.id.in_(ids.values())).values(daily_summary=True))
    send_digests(
        session_factory,
        due_now(session_factory, NOON),
        mail=MAIL,
        relay=SmtpMailer(relay_sink.url),
        now=NOON,
    )
    digests = {
        m.rcpt_to[0]: email.message_from_bytes(m.data, policy=email.policy.default)
        for m in relay_sink.messages
    }
    assert set(digests) == {READER, other}

    def links(who: str) -> tuple[str, str]:
        value = " ".join(str(digests[who]["List-Unsubscribe"]).split())
        https, mailto = (part.strip().strip("<>") for part in value.split(","))
        assert digests[who]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        return https, mailto

    def state(who: str) -> tuple[dict[str, str], bool]:
        with session_factory() as s:
            modes = dict(
                s.execute(
                    select(MailingList.slug, Membership.delivery)
                    .join(Membership, Membership.list_id == MailingList.id)
                    .where(Membership.person_id == ids[who])
                ).all()
            )
            return {k: str(v) for k, v in modes.items()}, s.get_one(Person, ids[who]).daily_summary

    before = ({"eng": "digest", "all": "digest", "ops": "digest"}, True)
    assert state(READER) == state(other) == before

    # The other reader's mail client follows the mailto (subject only, no body).
    mailto = urllib.parse.urlsplit(links(other)[1])
    assert urllib.parse.parse_qs(mailto.query) == {"subject": ["unsubscribe"]}
    raw = (
        f"From: {other}\r\nTo: {mailto.path}\r\nSubject: unsubscribe\r\n"
        f"Message-ID: <{time.time_ns()}@corp.example>\r\n\r\n"
    ).encode()
    run_ingest(session_factory, gateway.submit(raw, mailto.path, other), ingest_context)
    stopped = ({"eng": "none", "all": "digest", "ops": "none"}, False)
    assert state(other) == stopped  # a mandatory list cannot be silenced (Decision 4)

    # The reader's mailbox provider uses the one-click link against our real endpoint.
    server = make_server(unsubscribe_app_over(session_factory, (SECRET,)), "127.0.0.1", 0)
    try:

        def request(method: str, body: bytes | None = None) -> tuple[int, str]:
            path = urllib.parse.urlsplit(links(READER)[0]).path
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            try:
                headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read().decode()
            finally:
                conn.close()

        status, page = request("GET")  # a link scanner, or the member reading the page
        assert status == 200 and 'method="post"' in page
        assert "Stop your daily digest?" in page
        assert "Engineering, Operations" in page and "Everyone" in page
        assert state(READER) == before  # GET changed nothing

        status, page = request("POST", b"List-Unsubscribe=One-Click")
        assert status == 200 and "Your daily digest is stopped" in page
        assert "Everyone" in page  # still in the digest, and the page says so
        assert state(READER) == state(other) == stopped

        status, page = request("POST", b"List-Unsubscribe=One-Click")  # a retry: harmless
        assert status == 200 and state(READER) == stopped
        status, page = request("GET")  # nothing left to stop: no button
        assert status == 200 and 'method="post"' not in page
    finally:
        server.shutdown()
