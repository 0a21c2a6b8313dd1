"""Inbound end to end: real gateway on 127.0.0.1 → committed raw row → the ingest
service (what the worker task calls) → posts, commands, refusals and notices.

Runs on SQLite and again on PostgreSQL. The worker process itself is exercised in
tests/worker/test_worker_e2e.py; here the task body is called directly (STYLE §6).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from mailgate.db import unit_of_work
from mailgate.ingest import run_ingest
from mailgate.models import (
    Discussion,
    Like,
    Membership,
    Mute,
    Notice,
    OutboxEntry,
    PendingAction,
    Post,
    RawMessage,
    RawStatus,
)
from mailgate.tokens import TokenKind, make_token
from mailgate.trace import without_own_trace
from tests.conftest import DOMAIN, SECRET
from tests.conftest import build_mail as mail

ALICE, BOB, EVE = "alice@corp.example", "bob@corp.example", "eve@elsewhere.example"


@pytest.fixture
def eng(directory):  # type: ignore[no-untyped-def]
    directory.list("eng", name="Engineering", visibility="members")
    directory.member("eng", ALICE, name="Alice", department="Platform")
    directory.member("eng", BOB, name="Bob", department="Sales")
    return directory


@pytest.fixture
def deliver(gateway, session_factory, ingest_context):  # type: ignore[no-untyped-def]
    """Send through the real gateway, then run the ingest service on what it stored."""

    def send(raw: bytes, rcpt: str | list[str] = f"eng@{DOMAIN}", mail_from: str = ALICE) -> int:
        raw_id = gateway.submit(raw, rcpt, mail_from)
        run_ingest(session_factory, raw_id, ingest_context)
        return raw_id

    return send


def raw_row(session_factory, raw_id: int) -> RawMessage:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        return s.get_one(RawMessage, raw_id)


def posts(session_factory) -> list[Post]:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        return list(s.scalars(select(Post).order_by(Post.id)))


def notices(session_factory) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        return [(n.address, n.reason) for n in s.scalars(select(Notice).order_by(Notice.id))]


def test_post_starts_a_discussion_and_queues_fanout(eng, deliver, session_factory) -> None:  # type: ignore[no-untyped-def]
    raw_id = deliver(mail(subject="[eng] Launch plan", message_id="p1@corp.example"))
    (post,) = posts(session_factory)
    assert post.text == "Here is the plan."
    assert post.message_id == "p1@corp.example"
    row = raw_row(session_factory, raw_id)
    assert (row.status, row.reason) == (RawStatus.PROCESSED, "posted")
    assert row.explanation["recipients"][0]["thread"] == "new-discussion"
    with session_factory() as s:
        discussion = s.get_one(Discussion, post.discussion_id)
        assert discussion.subject == "Launch plan"  # list tag and prefixes removed
        outbox = s.scalars(select(OutboxEntry.key)).all()
    assert outbox == [f"fanout:{post.id}"]


def test_reply_address_and_in_reply_to_both_land_in_the_discussion(  # type: ignore[no-untyped-def]
    eng, deliver, session_factory
) -> None:
    deliver(mail(message_id="root@corp.example"))
    (root,) = posts(session_factory)
    token = make_token(SECRET, TokenKind.REPLY, eng.person_id(BOB), root.discussion_id)
    quoted = "Sounds good to me.\n\nOn Tue, Alice <alice@corp.example> wrote:\n> Here is the plan."
    deliver(
        mail(
            sender=BOB, to=f"reply+{token}@{DOMAIN}", subject="Re: [eng] Launch plan", body=quoted
        ),
        rcpt=f"reply+{token}@{DOMAIN}",
        mail_from=BOB,
    )
    deliver(
        mail(
            sender=ALICE,
            subject="Re: Launch plan",
            body="Thanks Bob!",
            headers={"In-Reply-To": "<root@corp.example>"},
        ),
    )
    root_post, by_token, by_header = posts(session_factory)
    assert {by_token.discussion_id, by_header.discussion_id} == {root.discussion_id}
    assert by_token.text == "Sounds good to me."
    assert "Here is the plan." in by_token.elided and "wrote:" in by_token.elided
    assert by_token.parent_id == root_post.id and by_header.parent_id == root_post.id


def test_subject_alone_never_joins_a_thread(eng, deliver, session_factory) -> None:  # type: ignore[no-untyped-def]
    deliver(mail(subject="Lunch?"))
    deliver(mail(sender=BOB, subject="Re: Lunch?", body="Yes"), mail_from=BOB)
    first, second = posts(session_factory)
    assert first.discussion_id != second.discussion_id


def test_token_wins_over_conflicting_references(eng, deliver, session_factory) -> None:  # type: ignore[no-untyped-def]
    deliver(mail(subject="One", message_id="one@corp.example"))
    deliver(mail(subject="Two", message_id="two@corp.example"))
    one, two = posts(session_factory)
    token = make_token(SECRET, TokenKind.REPLY, eng.person_id(BOB), one.discussion_id)
    deliver(
        mail(
            sender=BOB,
            subject="Re: Two",
            body="About one",
            headers={"In-Reply-To": "<two@corp.example>", "References": "<two@corp.example>"},
        ),
        rcpt=f"reply+{token}@{DOMAIN}",
        mail_from=BOB,
    )
    assert posts(session_factory)[-1].discussion_id == one.discussion_id


def test_duplicate_delivery_adds_nothing(eng, deliver, session_factory) -> None:  # type: ignore[no-untyped-def]
    raw = mail(message_id="same@corp.example")
    first = deliver(raw)
    second = deliver(raw)  # as after a lost 250: the relay sends it again
    assert len(posts(session_factory)) == 1
    assert raw_row(session_factory, second).reason == "duplicate"
    assert raw_row(session_factory, first).reason == "posted"


def test_cross_post_gives_one_post_per_list(eng, deliver, session_factory) -> None:  # type: ignore[no-untyped-def]
    eng.list("sales", visibility="company")
    eng.member("sales", ALICE)
    deliver(mail(to=f"eng@{DOMAIN}, sales@{DOMAIN}"), rcpt=[f"eng@{DOMAIN}", f"sales@{DOMAIN}"])
    assert sorted(p.list_id for p in posts(session_factory)) == [1, 2]


def test_reply_from_another_member_with_someone_elses_reply_address_is_refused(  # type: ignore[no-untyped-def]
    eng, deliver, session_factory
) -> None:
    deliver(mail())
    (root,) = posts(session_factory)
    bobs = make_token(SECRET, TokenKind.REPLY, eng.person_id(BOB), root.discussion_id)
    raw_id = deliver(mail(sender=ALICE, body="I am not Bob"), rcpt=f"reply+{bobs}@{DOMAIN}")
    assert raw_row(session_factory, raw_id).reason == "reply-address-mismatch"
    assert len(posts(session_factory)) == 1
    assert notices(session_factory) == [(ALICE, "reply-address-mismatch")]


@pytest.mark.parametrize(
    ("sender", "body", "reason"),
    [
        (EVE, "Hi, I'm not from here", "unknown-sender"),
        ("carol@corp.example", "I'm in the company but not on eng", "not-a-member"),
        (ALICE, "\n\nOn Mon, Bob wrote:\n> only quoted text", "empty-reply"),
    ],
)
def test_refusals_are_logged_and_explained_once_a_day(  # type: ignore[no-untyped-def]
    eng, deliver, session_factory, sender, body, reason
) -> None:
    if sender == "carol@corp.example":
        eng.list("other")
        eng.member("other", sender)
    first = deliver(mail(sender=sender, body=body), mail_from=sender)
    deliver(mail(sender=sender, body=body), mail_from=sender)
    row = raw_row(session_factory, first)
    assert (row.status, row.reason) == (RawStatus.REJECTED, reason)
    assert posts(session_factory) == []
    assert notices(session_factory) == [(sender, reason)]  # the second refusal: no notice


def test_notices_are_capped_per_address_per_day(  # type: ignore[no-untyped-def]
    eng, gateway, session_factory, ingest_context
) -> None:
    eng.list("other")
    # The cap counts every notice to an address that day, whatever the reason; ten
    # earlier notices fill it. The clock is fixed: a minute before midnight UTC, then
    # a minute after, when the new day's cap is empty again.
    evening = datetime(2026, 3, 3, 23, 59, tzinfo=UTC)
    with unit_of_work(session_factory) as s:
        for i in range(10):
            s.add(Notice(address=EVE, reason=f"filler-{i}", day="2026-03-03", context={}))
    for at in (evening, evening + timedelta(minutes=2)):
        ctx = dataclasses.replace(ingest_context, now=lambda at=at: at)
        run_ingest(session_factory, gateway.submit(mail(sender=EVE), f"eng@{DOMAIN}", EVE), ctx)
    with session_factory() as s:
        sent = s.scalars(select(Notice.day).where(Notice.reason == "unknown-sender")).all()
    assert sent == ["2026-03-04"]  # none on the full day; one the next


@pytest.mark.parametrize(
    "headers",
    [
        {"Auto-Submitted": "auto-replied"},
        {"Precedence": "bulk"},
        {"List-Id": "<news.vendor.example>", "List-Unsubscribe": "<mailto:x@vendor.example>"},
        {"List-Id": f"<eng.{DOMAIN}>", "X-Loop": f"mailgate@{DOMAIN}"},
    ],
)
def test_automatic_mail_is_never_posted_or_answered(  # type: ignore[no-untyped-def]
    eng, deliver, session_factory, headers
) -> None:
    raw_id = deliver(mail(sender=EVE, headers=headers), mail_from=EVE)
    row = raw_row(session_factory, raw_id)
    assert row.status is RawStatus.SUPPRESSED
    assert posts(session_factory) == [] and notices(session_factory) == []


def test_out_of_office_by_subject_is_suppressed(eng, deliver, session_factory) -> None:  # type: ignore[no-untyped-def]
    raw_id = deliver(mail(sender=BOB, subject="Automatische Antwort: Launch plan"), mail_from=BOB)
    assert raw_row(session_factory, raw_id).status is RawStatus.SUPPRESSED
    assert posts(session_factory) == []


def test_bounce_to_the_posting_address_is_logged_not_posted(  # type: ignore[no-untyped-def]
    eng, deliver, session_factory
) -> None:
    from tests.conftest import FIXTURES

    raw = (FIXTURES / "mail" / "dsn-postfix-hard.eml").read_bytes()
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # on the wire: CRLF
    raw_id = deliver(raw, mail_from="")
    row = raw_row(session_factory, raw_id)
    assert (row.status, row.reason) == (RawStatus.SUPPRESSED, "bounce-to-posting-address")
    assert notices(session_factory) == []


def test_plus_one_and_mute_are_commands(eng, deliver, session_factory) -> None:  # type: ignore[no-untyped-def]
    deliver(mail(message_id="root@corp.example"))
    (root,) = posts(session_factory)
    token = make_token(SECRET, TokenKind.REPLY, eng.person_id(BOB), root.discussion_id)
    deliver(
        mail(sender=BOB, body="+1\n\nOn Tue, Alice wrote:\n> plan"),
        rcpt=f"reply+{token}@{DOMAIN}",
        mail_from=BOB,
    )
    deliver(mail(sender=BOB, body="mute"), rcpt=f"reply+{token}@{DOMAIN}", mail_from=BOB)
    assert len(posts(session_factory)) == 1
    with session_factory() as s:
        assert s.scalars(select(Like.post_id)).all() == [root.id]
        assert s.scalars(select(Mute.discussion_id)).all() == [root.discussion_id]


def test_announce_list_holds_unauthenticated_post_until_confirmed(  # type: ignore[no-untyped-def]
    eng, deliver, session_factory
) -> None:
    eng.list("all", posting="announce", mandatory=True)
    eng.member("all", "ceo@corp.example", role="owner")
    raw_id = deliver(
        mail(sender="ceo@corp.example", to=f"all@{DOMAIN}", body="Big news"),
        rcpt=f"all@{DOMAIN}",
        mail_from="ceo@corp.example",
    )
    assert raw_row(session_factory, raw_id).status is RawStatus.HELD
    assert posts(session_factory) == []
    assert notices(session_factory) == [("ceo@corp.example", "held-for-authentication")]
    with session_factory() as s:
        notice = s.scalars(select(Notice)).one()
    token = notice.context["confirm_token"]
    deliver(
        mail(sender="ceo@corp.example", subject="Re: Confirm", body="yes"),
        rcpt=f"confirm+{token}@{DOMAIN}",
        mail_from="ceo@corp.example",
    )
    (post,) = posts(session_factory)
    assert post.text == "Big news"
    assert raw_row(session_factory, raw_id).status is RawStatus.PROCESSED


def test_trusted_authentication_results_let_an_announce_post_through(  # type: ignore[no-untyped-def]
    eng, deliver, session_factory
) -> None:
    eng.list("all", posting="announce")
    eng.member("all", "ceo@corp.example", role="owner")
    ar = "mx.corp.example; dkim=pass header.d=corp.example; dmarc=pass header.from=corp.example"
    raw = mail(sender="ceo@corp.example", to=f"all@{DOMAIN}", body="Verified news", headers={})
    raw = f"Authentication-Results: {ar}\r\n".encode() + raw
    deliver(raw, rcpt=f"all@{DOMAIN}", mail_from="ceo@corp.example")
    (post,) = posts(session_factory)
    assert post.text == "Verified news"


@pytest.mark.parametrize(
    ("relays", "posted"),
    [
        pytest.param(None, False, id="no-relay-configured-only-dkim-counts"),
        pytest.param(("10.20.0.25/32",), False, id="a-local-process-is-not-the-relay"),
        pytest.param(("127.0.0.1/32",), True, id="the-configured-relay"),
    ],
)
def test_authentication_results_count_only_from_a_configured_relay(  # type: ignore[no-untyped-def]
    eng, gateway, session_factory, relays, posted
) -> None:
    """Issue 12 item 14: loopback may connect (MAILGATE_TRUSTED_PEERS), but an A-R naming
    a configured authserv-id counts only on mail a configured A-R relay handed over; else
    any local process could present one and post as an executive."""
    from mailgate.ingest import IngestContext

    eng.list("all", posting="announce")
    eng.member("all", "ceo@corp.example", role="owner")
    ctx = IngestContext(
        domain=DOMAIN,
        secrets=(SECRET,),
        authserv_ids=frozenset({"mx.corp.example"}),
        **({"authres_relays": relays} if relays is not None else {}),
    )
    ar = "mx.corp.example; dkim=pass header.d=corp.example; dmarc=pass header.from=corp.example"
    raw = f"Authentication-Results: {ar}\r\n".encode() + mail(
        sender="ceo@corp.example", to=f"all@{DOMAIN}", body="Payroll moves to a new bank"
    )
    raw_id = gateway.submit(raw, f"all@{DOMAIN}", "ceo@corp.example")
    run_ingest(session_factory, raw_id, ctx)
    row = raw_row(session_factory, raw_id)
    if posted:
        assert [p.text for p in posts(session_factory)] == ["Payroll moves to a new bank"]
        assert row.explanation["recipients"][0]["authentication"]["method"] == "trusted-ar-dmarc"
        return
    assert posts(session_factory) == []
    assert (row.status, row.reason) == (RawStatus.HELD, "held-for-authentication")
    assert row.explanation["recipients"][0]["authentication"] == {
        "verdict": "gray",
        "method": "none",
    }
    assert notices(session_factory) == [("ceo@corp.example", "held-for-authentication")]


def test_forged_executive_is_held_and_confirmation_goes_to_the_real_address(  # type: ignore[no-untyped-def]
    eng, deliver, session_factory
) -> None:
    eng.list("all", posting="announce")
    eng.member("all", "ceo@corp.example", role="owner")
    forged = "mx.corp.example; dmarc=fail header.from=corp.example"
    raw = f"Authentication-Results: {forged}\r\n".encode() + mail(
        sender="ceo@corp.example",
        to=f"all@{DOMAIN}",
        body="Wire money now",
        headers={"Reply-To": "attacker@evil.example"},
    )
    deliver(raw, rcpt=f"all@{DOMAIN}", mail_from="attacker@evil.example")
    assert posts(session_factory) == []
    assert notices(session_factory) == [("ceo@corp.example", "held-for-authentication")]


def test_request_address_subscribe_needs_confirmation(eng, deliver, session_factory) -> None:  # type: ignore[no-untyped-def]
    eng.list("social", visibility="company")
    raw_id = deliver(
        mail(sender=BOB, to=f"social-request@{DOMAIN}", subject="subscribe", body=""),
        rcpt=f"social-request@{DOMAIN}",
        mail_from=BOB,
    )
    assert raw_row(session_factory, raw_id).status is RawStatus.HELD
    with session_factory() as s:
        assert (
            s.scalar(select(func.count()).select_from(Membership).where(Membership.list_id == 2))
            == 0
        )
        notice = s.scalars(select(Notice)).one()
    assert (notice.address, notice.reason) == (BOB, "confirm-command")
    token = notice.context["confirm_token"]
    # A confirmation from someone else changes nothing (LIST-07).
    deliver(mail(sender=ALICE, body="ok"), rcpt=f"confirm+{token}@{DOMAIN}")
    with session_factory() as s:
        assert (
            s.scalar(select(func.count()).select_from(Membership).where(Membership.list_id == 2))
            == 0
        )
    deliver(mail(sender=BOB, body="ok"), rcpt=f"confirm+{token}@{DOMAIN}", mail_from=BOB)
    with session_factory() as s:
        assert (
            s.scalar(select(func.count()).select_from(Membership).where(Membership.list_id == 2))
            == 1
        )
        assert s.scalars(select(PendingAction.done_at)).one() is not None


def test_unsubscribe_from_mandatory_list_switches_to_digest(eng, deliver, session_factory) -> None:  # type: ignore[no-untyped-def]
    eng.list("all", mandatory=True)
    eng.member("all", BOB)
    deliver(
        mail(sender=BOB, to=f"all-request@{DOMAIN}", subject="x", body="unsubscribe"),
        rcpt=f"all-request@{DOMAIN}",
        mail_from=BOB,
    )
    with session_factory() as s:
        token = s.scalars(select(Notice)).one().context["confirm_token"]
    deliver(mail(sender=BOB, body="yes"), rcpt=f"confirm+{token}@{DOMAIN}", mail_from=BOB)
    with session_factory() as s:
        (membership,) = s.scalars(select(Membership).where(Membership.list_id == 2)).all()
    assert membership.delivery == "digest"


def test_unknown_request_command_gets_help(eng, deliver, session_factory) -> None:  # type: ignore[no-untyped-def]
    deliver(
        mail(sender=BOB, to=f"eng-request@{DOMAIN}", subject="please", body="gimme"),
        rcpt=f"eng-request@{DOMAIN}",
        mail_from=BOB,
    )
    assert notices(session_factory) == [(BOB, "unknown-command")]


def test_crashing_message_is_parked_after_three_attempts(  # type: ignore[no-untyped-def]
    eng, gateway, session_factory, ingest_context, monkeypatch
) -> None:
    import mailgate.ingest as ingest

    with gateway.smtp() as client:
        client.sendmail(ALICE, [f"eng@{DOMAIN}"], mail())
    (raw_id,) = gateway.published_after(0)

    def explode(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("parser bug")

    monkeypatch.setattr(ingest, "read_message", explode)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            run_ingest(session_factory, raw_id, ingest_context)
    assert run_ingest(session_factory, raw_id, ingest_context) is RawStatus.FAILED
    row = raw_row(session_factory, raw_id)
    assert (row.status, row.reason, row.attempts) == (RawStatus.FAILED, "crash:RuntimeError", 3)
    assert without_own_trace(row.raw).startswith(b"From: alice@corp.example")  # kept for replay


def test_rerunning_ingest_changes_nothing(eng, deliver, session_factory, ingest_context) -> None:  # type: ignore[no-untyped-def]
    raw_id = deliver(mail())
    assert run_ingest(session_factory, raw_id, ingest_context) is RawStatus.PROCESSED
    assert len(posts(session_factory)) == 1


def test_logs_never_contain_reply_or_confirmation_tokens(  # type: ignore[no-untyped-def]
    eng, deliver, gateway, session_factory, caplog
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    deliver(mail())
    (root,) = posts(session_factory)
    token = make_token(SECRET, TokenKind.REPLY, eng.person_id(BOB), root.discussion_id)
    deliver(mail(sender=BOB, body="Reply by token"), rcpt=f"reply+{token}@{DOMAIN}", mail_from=BOB)
    deliver(mail(sender=ALICE, body="wrong person"), rcpt=f"reply+{token}@{DOMAIN}")
    forged = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    with gateway.smtp() as client:
        code, _ = client.ehlo()
        client.mail(ALICE)
        assert client.rcpt(f"reply+{forged}@{DOMAIN}")[0] == 550
    eng.list("social", visibility="company")
    deliver(mail(sender=BOB, body="subscribe"), rcpt=f"social-request@{DOMAIN}", mail_from=BOB)
    with session_factory() as s:
        confirm = [
            n.context["confirm_token"]
            for n in s.scalars(select(Notice))
            if "confirm_token" in n.context
        ]
    assert confirm
    deliver(mail(sender=BOB, body="yes"), rcpt=f"confirm+{confirm[0]}@{DOMAIN}", mail_from=BOB)
    text = caplog.text
    assert "reply+" in text or "raw " in text  # the run did log
    for secret in [token, forged, *confirm]:
        assert secret not in text


def test_attachments_are_stored_with_sanitised_names(eng, deliver, session_factory) -> None:  # type: ignore[no-untyped-def]
    from mailgate.models import StoredAttachment

    body = (
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
        "--zz\r\nContent-Type: text/plain\r\n\r\nSee the attached report.\r\n"
        "--zz\r\nContent-Type: application/pdf\r\n"
        "Content-Disposition: attachment; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--zz--\r\n"
    )
    raw = (
        f"From: {ALICE}\r\nTo: eng@{DOMAIN}\r\nSubject: Report\r\n"
        f"Message-ID: <att@corp.example>\r\n"
    ).encode() + body.encode()
    deliver(raw)
    (post,) = posts(session_factory)
    assert post.text == "See the attached report."
    with session_factory() as s:
        (att,) = s.scalars(select(StoredAttachment)).all()
    assert "/" not in att.filename and ".." not in att.filename
    assert (att.content_type, att.size) == ("application/pdf", 9)


def test_a_batch_processes_like_single_messages(
    eng, gateway, session_factory, ingest_context
) -> None:  # type: ignore[no-untyped-def]
    """The gateway hands over a group commit as one batch: one transaction, shared
    lookups, one status write. It must decide exactly as message-by-message would."""
    from mailgate.ingest import run_ingest_batch

    raws = [
        mail(message_id="b1@corp.example", body="First"),
        mail(
            sender=BOB,
            subject="Re: Launch plan",
            body="Reply within the batch",
            headers={"In-Reply-To": "<b1@corp.example>"},
        ),
        mail(message_id="b1@corp.example", body="First"),  # the same message again
        mail(sender=EVE, body="Not a member"),
        mail(headers={"Auto-Submitted": "auto-replied"}, body="Away"),
    ]
    with gateway.smtp() as client:
        for raw in raws:
            client.sendmail(ALICE, [f"eng@{DOMAIN}"], raw)
    ids = gateway.published_after(0, count=len(raws))
    run_ingest_batch(session_factory, ids, ingest_context)
    with session_factory() as s:
        reasons = [s.get_one(RawMessage, i).reason for i in ids]
        first, reply = s.scalars(select(Post).order_by(Post.id)).all()
    assert reasons == ["posted", "posted", "duplicate", "unknown-sender", "auto-submitted"]
    assert reply.discussion_id == first.discussion_id and reply.parent_id == first.id
    assert notices(session_factory) == [(EVE, "unknown-sender")]
