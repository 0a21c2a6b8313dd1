"""Tests that kill mutations the suite used to let through (issue 12, item 15).

Each test below fails when its mutation is applied to the code, and each goes along the
real path: mail in through a real gateway on 127.0.0.1 and the ingest service on a real
database (SQLite, and PostgreSQL in the second pass); copies out through fan-out and the
send step to a recording relay; digests and question summaries out through their own
send steps. The clock is fixed (``NOW``), never the wall clock.

Mutations, each applied by hand, seen to fail the tests named, then reverted:

M1  ``mailgate/ingest.py`` ``_notice``: drop ``reading.automatic or`` from its guard (the
    check that keeps two robots from starting a storm). Mail that ``classify`` calls a
    post but ``is_automatic`` calls automatic (``X-Auto-Response-Suppress: All``, as
    Exchange rules, Power Automate and build servers stamp it) then gets a notice.
    Fails: ``test_automatic_mail_earns_no_notice_but_is_logged[x-auto-response-*]``,
    ``test_automatic_command_mail_earns_no_notice_not_even_a_confirmation``.
M2  ``mailgate/ingest.py`` ``_handle_request``: drop ``or not access.may_read(...)`` from
    the subscribe check: anyone in the directory subscribes by mail to a members-only
    list (and to a hidden one, when the message gets past the gateway's RCPT check).
    Fails: ``test_subscribe_by_mail_to_a_list_one_may_not_read_is_refused[*]``,
    ``test_private_posts_never_reach_a_non_member_by_copy_or_digest``,
    ``test_automatic_command_mail_earns_no_notice_not_even_a_confirmation``.
M3  ``mailgate/delivery.py`` ``_fan_out_answer``: drop ``~muted`` from the recipients
    query: answers in a question's discussion reach a leader who muted it.
    Fails: ``test_answers_do_not_reach_a_leader_who_muted_the_question``.
M4  ``mailgate/access.py`` ``may_read``: ``return True`` as its first line.
    Fails: ``test_private_posts_never_reach_a_non_member_by_copy_or_digest`` (subscribe
    by mail, then fan-out copies and digests: both leak),
    ``test_a_member_who_left_gets_no_answers_in_the_question_summary`` (summaries),
    and the subscribe tests above. Fan-out and digest gathering select memberships
    first, so there ``may_read`` repeats what the query decided; these tests take the
    paths on which someone who may not read the list is a candidate at all.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import smtplib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from digests.questions import QuestionMailSettings, send_question_mails, tick
from digests.sending import DigestMail, due_now, send_digests
from mailgate import questions
from mailgate.addressing import reply_address
from mailgate.copies import CopySettings
from mailgate.db import unit_of_work
from mailgate.delivery import TokenCopyBuilder, fan_out, send_batch
from mailgate.directory import remove_member
from mailgate.inbox import SqlInbox
from mailgate.ingest import IngestContext, run_ingest
from mailgate.models import (
    AnswerVisibility,
    DeliveryRecord,
    MailingList,
    Membership,
    Mute,
    Notice,
    OutboxEntry,
    PendingAction,
    Person,
    Post,
    QuestionMail,
    RawMessage,
    RawStatus,
)
from mailgate.outbox import mark_done
from mailgate.smtp import Accepted
from mailgate.tokens import TokenKind, make_token
from tests.conftest import DOMAIN, FIXTURES, SECRET
from worker.mailer import SmtpMailer

NOW = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # a Tuesday morning: when mail comes in
NOON = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)  # when digests go out (hour 8 is past)

OWNER = "olga@corp.example"  # owns eng, member of secret
MEMBER = "mia@corp.example"  # member of eng and secret, every message
OSCAR = "oscar@corp.example"  # in the directory; reads social by digest; not eng or secret
DORA = "dora@corp.example"  # like Oscar
STRANGER = "eve@elsewhere.example"  # not in the directory
ROBOT = "builds@ci.corp.example"  # not in the directory either

ENG_SECRET = "eng-only: the rollout date is 14 March"
HIDDEN_SECRET = "secret-only: the reorganisation plan"


# ---------------------------------------------------------------- the world and its mail


@pytest.fixture
def ctx() -> IngestContext:
    return IngestContext(
        domain=DOMAIN,
        secrets=(SECRET,),
        authserv_ids=frozenset({"mx.corp.example"}),
        now=lambda: NOW,
    )


@pytest.fixture
def world(directory: Any) -> Any:
    directory.list("eng", name="Engineering", visibility="members")
    directory.member("eng", OWNER, name="Olga", role="owner")
    directory.member("eng", MEMBER, name="Mia")
    directory.list("secret", name="Special projects", visibility="hidden")
    directory.member("secret", OWNER, name="Olga")
    directory.member("secret", MEMBER, name="Mia")
    directory.list("social", name="Social", visibility="company")
    directory.member("social", OWNER)
    directory.member("social", OSCAR, name="Oscar", delivery="digest")
    directory.member("social", DORA, name="Dora", delivery="digest")
    return directory


def mail(
    sender: str,
    to: str,
    subject: str,
    body: str,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A plain message as a mail client puts it on the wire, dated by the fixed clock."""
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {email.utils.format_datetime(NOW)}",
        f"Message-ID: {email.utils.make_msgid(domain='corp.example')}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n") + "\r\n").encode()


@pytest.fixture
def deliver(gateway: Any, session_factory: Any, ctx: IngestContext) -> Callable[..., RawMessage]:
    """Through the real gateway, then the ingest service (the task body) on what it
    stored; returns the raw row as the rejected-mail log shows it."""

    def send(raw: bytes, rcpt: str, mail_from: str) -> RawMessage:
        return ingest(session_factory, ctx, gateway.submit(raw, rcpt, mail_from))

    return send


@pytest.fixture
def try_deliver(deliver: Any) -> Callable[..., RawMessage | None]:
    """``deliver``, except that the gateway may refuse the recipient at RCPT as unknown
    (``550 5.1.1``: what a hidden list looks like to those who may not know it); then
    nothing is stored and this returns None."""

    def send(raw: bytes, rcpt: str, mail_from: str) -> RawMessage | None:
        try:
            return deliver(raw, rcpt, mail_from)
        except smtplib.SMTPRecipientsRefused as exc:
            ((code, text),) = exc.recipients.values()
            assert (code, text[:6]) == (550, b"5.1.1 "), exc.recipients
            return None

    return send


@pytest.fixture
def store(session_factory: Any, ctx: IngestContext) -> Callable[..., RawMessage]:
    """The gateway's storage port without its RCPT checks, then ingest: what ingest gets
    when the gateway's answer came from its list cache, or from another MX. Ingest must
    decide on its own, not trust that RCPT already did."""

    def run(raw: bytes, rcpt: str, mail_from: str) -> RawMessage:
        inbox = SqlInbox(session_factory)
        (raw_id,) = inbox.store_many([Accepted(raw, mail_from, (rcpt,), "127.0.0.1", "mx1")])
        return ingest(session_factory, ctx, raw_id)

    return run


def ingest(session_factory: Any, ctx: IngestContext, raw_id: int) -> RawMessage:
    run_ingest(session_factory, raw_id, ctx)
    with session_factory() as s:
        return s.get_one(RawMessage, raw_id)


def notices(session_factory: Any) -> list[tuple[str, str]]:
    with session_factory() as s:
        return [(n.address, n.reason) for n in s.scalars(select(Notice).order_by(Notice.id))]


def notice_outbox(session_factory: Any) -> list[str]:
    with session_factory() as s:
        return list(
            s.scalars(
                select(OutboxEntry.key)
                .where(OutboxEntry.task == "mailgate.send_notice")
                .order_by(OutboxEntry.id)
            )
        )


def memberships(session_factory: Any, address: str) -> dict[str, str]:
    with session_factory() as s:
        rows = s.execute(
            select(MailingList.slug, Membership.delivery)
            .join(Membership, Membership.list_id == MailingList.id)
            .join(Person, Person.id == Membership.person_id)
            .where(Person.id.in_(select(Person.id).where(Person.addresses.any(email=address))))
            .order_by(MailingList.slug)
        ).all()
    return {slug: str(delivery) for slug, delivery in rows}


def run_outbound(session_factory: Any, relay_url: str) -> None:
    """What the worker does with the outbox: fan-out tasks, then send tasks (the task
    bodies of ``worker.tasks.fanout`` and ``worker.tasks.send``), until none is left."""
    builder = TokenCopyBuilder(
        CopySettings(domain=DOMAIN, base_url="https://mg.corp.example"), SECRET
    )
    done: set[str] = set()
    while True:
        with session_factory() as s:
            work = [
                (row.key, row.task, row.args)
                for row in s.scalars(
                    select(OutboxEntry)
                    .where(OutboxEntry.task.in_(["mailgate.fanout", "mailgate.send"]))
                    .order_by(OutboxEntry.id)
                )
                if row.key not in done
            ]
        if not work:
            return
        for key, task, args in work:
            done.add(key)
            if task == "mailgate.fanout":
                with unit_of_work(session_factory) as s:
                    fan_out(s, args[0])
                    mark_done(s, key)
            else:
                send_batch(session_factory, args[0], builder=builder, relay=SmtpMailer(relay_url))


def readable_text(data: bytes) -> str:
    """Every text part of a message, decoded (what a reader can see in any view)."""
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    parts = [str(parsed["Subject"] or "")]
    for part in parsed.walk():
        if part.get_content_maintype() == "text":
            parts.append(part.get_content())
    return "\n".join(parts)


def received_by(relay_sink: Any, address: str) -> list[str]:
    """The readable text of every message the relay accepted for ``address``."""
    return [readable_text(m.data) for m in relay_sink.messages if address in m.rcpt_to]


# ---------------------------------------------------------------- M1: automatic mail


def _fixture(name: str) -> bytes:
    """A captured robot's message; the tests deliver it to the list address (a robot
    answering a copy, or list traffic forwarded to us)."""
    return (FIXTURES / "mail" / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def robot(
    case: str,
    reason: str,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    sender: str = STRANGER,
    mail_from: str | None = None,
    status: RawStatus = RawStatus.SUPPRESSED,
    automatic: str | None = None,
) -> Any:
    """One automatic message to eng@: (raw, envelope sender, status, reason logged,
    why ``is_automatic`` says never to answer it)."""
    raw = raw or mail(sender, f"eng@{DOMAIN}", f"Robot mail: {case}", "Beep.", headers)
    envelope = sender if mail_from is None else mail_from
    return pytest.param(raw, envelope, status, reason, automatic or reason, id=case)


SUPPRESS_ALL = {"X-Auto-Response-Suppress": "All"}
SUPPRESS_OOF = {"X-Auto-Response-Suppress": "DR, RN, NRN, OOF, AutoReply"}
AUTOMATIC = [
    # Posts to classify (no auto-reply or list marks), automatic to is_automatic: only the
    # guard in _notice stands between them and a notice (M1).
    robot(
        "x-auto-response-suppress-all",
        "unknown-sender",
        headers=SUPPRESS_ALL,
        sender=ROBOT,
        status=RawStatus.REJECTED,
        automatic="x-auto-response-suppress",
    ),
    robot(
        "x-auto-response-suppress-oof",
        "unknown-sender",
        headers=SUPPRESS_OOF,
        sender=ROBOT,
        status=RawStatus.REJECTED,
        automatic="x-auto-response-suppress",
    ),
    # Suppressed before any decision (the route in _handle_recipient), and silent too.
    robot(
        "auto-submitted-auto-replied", "auto-submitted", headers={"Auto-Submitted": "auto-replied"}
    ),
    robot(
        "auto-submitted-auto-generated",
        "auto-submitted",
        headers={"Auto-Submitted": "auto-generated"},
    ),
    robot("precedence-bulk", "precedence-bulk", headers={"Precedence": "bulk"}),
    robot("precedence-list", "precedence-list", headers={"Precedence": "list"}),
    robot("precedence-junk", "precedence-junk", headers={"Precedence": "junk"}),
    robot("precedence-auto-reply", "precedence-auto-reply", headers={"Precedence": "auto_reply"}),
    robot("x-autoreply", "x-autoreply", headers={"X-Autoreply": "yes"}),
    robot("null-envelope-sender", "null-sender", mail_from=""),
    robot(
        "outlook-automatic-reply",
        "auto-submitted",
        raw=_fixture("autoreply-outlook-en.eml"),
        mail_from="t.nguyen@corp.example",
    ),
    robot(
        "other-mailman-list",
        "precedence-list",
        raw=_fixture("mailman-other-list.eml"),
        mail_from="infra-bounces+eng=lists.corp.example@other.example.org",
    ),
    robot(
        "dsn-to-the-posting-address",
        "bounce-to-posting-address",
        raw=_fixture("dsn-postfix-hard.eml"),
        mail_from="",
        automatic="null-sender",
    ),
]


@pytest.mark.parametrize("sender", [ROBOT, STRANGER])
def test_the_same_mail_without_automatic_marks_earns_its_notice(
    world: Any, deliver: Any, session_factory: Any, sender: str
) -> None:
    """The control for the table below: without the automatic marks, the same senders
    are refused with a notice — so the silence below is the guard's doing."""
    raw = mail(sender, f"eng@{DOMAIN}", "Robot mail: x-auto-response-suppress-all", "Beep.")
    row = deliver(raw, f"eng@{DOMAIN}", sender)
    assert (row.status, row.reason) == (RawStatus.REJECTED, "unknown-sender")
    assert row.explanation["automatic"] is None
    assert notices(session_factory) == [(sender, "unknown-sender")]
    assert len(notice_outbox(session_factory)) == 1


@pytest.mark.parametrize(("raw", "mail_from", "status", "reason", "automatic"), AUTOMATIC)
def test_automatic_mail_earns_no_notice_but_is_logged(
    world: Any,
    deliver: Any,
    session_factory: Any,
    raw: bytes,
    mail_from: str,
    status: RawStatus,
    reason: str,
    automatic: str,
) -> None:
    """LOOP-01 (M1): never an automatic response to automatic mail; the refusal is
    still in the rejected-mail log with its reason, for ``mailgate inbound explain``."""
    row = deliver(raw, "eng@" + DOMAIN, mail_from)
    assert (row.status, row.reason) == (status, reason)
    assert row.explanation["automatic"] == automatic
    assert [r["reason"] for r in row.explanation["recipients"]] == [reason]
    assert notices(session_factory) == []
    assert notice_outbox(session_factory) == []
    with session_factory() as s:
        assert s.scalars(select(Post)).all() == []


def test_automatic_command_mail_earns_no_notice_not_even_a_confirmation(
    world: Any, deliver: Any, session_factory: Any
) -> None:
    """M1 on the command address: a refusal and a forced confirmation alike stay silent
    for automatic mail (``force`` skips the daily limits, never the automatic rule)."""
    robot = {"X-Auto-Response-Suppress": "All"}
    refused = deliver(
        mail(OSCAR, f"eng-request@{DOMAIN}", "subscribe", "subscribe", robot),
        f"eng-request@{DOMAIN}",
        OSCAR,
    )
    assert (refused.status, refused.reason) == (RawStatus.REJECTED, "subscribe-not-allowed")
    held = deliver(
        mail(DORA, f"social-request@{DOMAIN}", "unsubscribe", "unsubscribe", robot),
        f"social-request@{DOMAIN}",
        DORA,
    )
    assert (held.status, held.reason) == (RawStatus.HELD, "awaiting-confirmation")
    assert notices(session_factory) == []
    assert notice_outbox(session_factory) == []


# ---------------------------------------------------------------- M2: subscribe by mail


@pytest.mark.parametrize("slug", ["eng", "secret"], ids=["members-only", "hidden"])
def test_subscribe_by_mail_to_a_list_one_may_not_read_is_refused(
    world: Any, try_deliver: Any, store: Any, session_factory: Any, slug: str
) -> None:
    """M2 (and M4): subscribing is reading; a members-only or hidden list takes members
    from its owners, not by mail. No pending action, no confirmation, no membership —
    whether the gateway refuses the address at RCPT (a hidden list, to an outsider) or
    the message reaches ingest (through the gateway, or stored past its RCPT check)."""
    rcpt = f"{slug}-request@{DOMAIN}"
    through_gateway = try_deliver(mail(OSCAR, rcpt, "subscribe", "subscribe"), rcpt, OSCAR)
    stored = store(mail(OSCAR, rcpt, "subscribe", "subscribe"), rcpt, OSCAR)
    # A hidden list may be refused at RCPT or answered as if it did not exist.
    refusals = {"subscribe-not-allowed"} | ({"unknown-list"} if slug == "secret" else set())
    rows = [stored] if through_gateway is None and slug == "secret" else [through_gateway, stored]
    for row in rows:
        assert row is not None, "only a hidden list may be refused at RCPT"
        assert row.status is RawStatus.REJECTED and row.reason in refusals, (row.status, row.reason)
    with session_factory() as s:
        assert s.scalars(select(PendingAction)).all() == []
    assert all(reason != "confirm-command" for _, reason in notices(session_factory))
    assert memberships(session_factory, OSCAR) == {"social": "digest"}


def test_subscribe_by_mail_to_a_company_list_asks_for_confirmation(
    world: Any, deliver: Any, session_factory: Any
) -> None:
    """The control for the refusals above: the same mail to a company list works."""
    rcpt = f"social-request@{DOMAIN}"
    row = deliver(mail(MEMBER, rcpt, "subscribe", "subscribe"), rcpt, MEMBER)
    assert (row.status, row.reason) == (RawStatus.HELD, "awaiting-confirmation")
    assert notices(session_factory) == [(MEMBER, "confirm-command")]


# ---------------------------------------------------------------- M2/M4: copies and digests


def test_private_posts_never_reach_a_non_member_by_copy_or_digest(
    world: Any, deliver: Any, try_deliver: Any, session_factory: Any, relay_sink: Any
) -> None:
    """The safety property along the whole path (M2, M4). Two people in the directory who
    are not on eng (members-only) or secret (hidden) do everything a non-member can do
    by mail — subscribe, answer every confirmation they get, ask for the digest — and
    then members post. Neither may receive those posts, by copy or in a digest."""
    confirmed: set[str] = set()

    def answer_confirmations(address: str) -> None:
        with session_factory() as s:
            tokens = [
                n.context["confirm_token"]
                for n in s.scalars(
                    select(Notice).where(Notice.address == address).order_by(Notice.id)
                )
                if "confirm_token" in n.context
            ]
        for token in tokens:
            if token not in confirmed:
                confirmed.add(token)
                rcpt = f"confirm+{token}@{DOMAIN}"
                deliver(mail(address, rcpt, "Re: confirm", "yes"), rcpt, address)

    for slug in ("eng", "secret"):
        rcpt = f"{slug}-request@{DOMAIN}"
        for who in (OSCAR, DORA):
            try_deliver(mail(who, rcpt, "subscribe", "subscribe"), rcpt, who)
            answer_confirmations(who)
        # Dora would rather read it in her digest.
        try_deliver(mail(DORA, rcpt, "digest", "digest"), rcpt, DORA)
        answer_confirmations(DORA)

    posted = [
        deliver(mail(OWNER, f"eng@{DOMAIN}", "Rollout", ENG_SECRET), f"eng@{DOMAIN}", OWNER),
        deliver(mail(OWNER, f"secret@{DOMAIN}", "Reorg", HIDDEN_SECRET), f"secret@{DOMAIN}", OWNER),
        deliver(
            mail(OWNER, f"social@{DOMAIN}", "Friday lunch", "Pizza at noon."),
            f"social@{DOMAIN}",
            OWNER,
        ),
    ]
    assert [p.reason for p in posted] == ["posted", "posted", "posted"]
    run_outbound(session_factory, relay_sink.url)
    copies = len(relay_sink.messages)
    report = send_digests(
        session_factory,
        due_now(session_factory, NOON),
        mail=DigestMail(domain=DOMAIN, secret=SECRET, base_url="https://mg.corp.example"),
        relay=SmtpMailer(relay_sink.url),
        now=NOON,
    )

    def seen(messages: list[Any], who: str) -> list[str]:
        text = "\n".join(readable_text(m.data) for m in messages if who in m.rcpt_to)
        return [s for s in ("Rollout", ENG_SECRET, "Reorg", HIDDEN_SECRET) if s in text]

    leaks = {
        f"{who} by {path}": found
        for who in (OSCAR, DORA)
        for path, found in (
            ("copy", seen(relay_sink.messages[:copies], who)),
            ("digest", seen(relay_sink.messages[copies:], who)),
        )
        if found
    }
    assert leaks == {}
    with session_factory() as s:
        rows = s.scalars(
            select(DeliveryRecord.address).where(DeliveryRecord.address.in_([OSCAR, DORA]))
        )
        assert list(rows) == []
    assert memberships(session_factory, OSCAR) == {"social": "digest"}
    assert memberships(session_factory, DORA) == {"social": "digest"}
    # Not vacuous: the member got both private posts by copy, and each outsider got a
    # digest of the list they do read.
    member_copies = "\n".join(received_by(relay_sink, MEMBER))
    assert ENG_SECRET in member_copies and HIDDEN_SECRET in member_copies
    assert report.sent == 2
    for who in (OSCAR, DORA):
        (digest,) = [m for m in relay_sink.messages[copies:] if m.rcpt_to == [who]]
        assert "Friday lunch" in readable_text(digest.data)


# ---------------------------------------------------------------- M4: question summaries


def test_a_member_who_left_gets_no_answers_in_the_question_summary(
    world: Any, deliver: Any, session_factory: Any, relay_sink: Any
) -> None:
    """M4 on the summary path: an open question on a members-only list asks every
    member; one of them leaves the list before it closes. The summary, with everyone's
    answers by name, goes to the asker and to the members still there — not to them."""
    leaver = "lee@corp.example"
    world.member("eng", leaver, name="Lee")
    with unit_of_work(session_factory) as s:
        asker = s.scalar(select(Person).where(Person.addresses.any(email=OWNER)))
        question = questions.create_question(
            s,
            asker=asker,
            spec=questions.QuestionSpec(
                subject="Retro",
                text="What should we stop doing?",
                audience="eng",
                visibility=AnswerVisibility.OPEN,
                deadline=NOW + timedelta(hours=2),
            ),
            now=NOW - timedelta(hours=1),
            domain=DOMAIN,
        )
        question_id, discussion_id = question.id, question.discussion_id
        ids = {a.email: a.person_id for p in s.scalars(select(Person)) for a in p.addresses}
    answer = "Stop the Friday deploys, said Mia."
    rcpt = reply_address(make_token(SECRET, TokenKind.REPLY, ids[MEMBER], discussion_id), DOMAIN)
    row = deliver(mail(MEMBER, rcpt, "Re: Retro", answer), rcpt, MEMBER)
    assert row.reason == "posted"
    with unit_of_work(session_factory) as s:  # Lee moves to another team
        remove_member(s, "test", "eng", leaver)
    with unit_of_work(session_factory) as s:
        tick(s, NOW + timedelta(hours=3), DOMAIN)
    with session_factory() as s:
        summaries = s.scalars(
            select(QuestionMail).where(
                QuestionMail.question_id == question_id, QuestionMail.kind == "summary"
            )
        ).all()
        mail_ids = [m.id for m in summaries]
        to = {m.person_id for m in summaries}
    assert ids[OWNER] in to and ids[MEMBER] in to
    assert ids[leaver] not in to
    send_question_mails(
        session_factory,
        mail_ids,
        relay=SmtpMailer(relay_sink.url),
        settings=QuestionMailSettings(domain=DOMAIN, secret=SECRET),
        now=NOW + timedelta(hours=3),
    )
    assert any(answer in t for t in received_by(relay_sink, OWNER))
    assert received_by(relay_sink, leaver) == []


# ---------------------------------------------------------------- M3: muted questions


def test_answers_do_not_reach_a_leader_who_muted_the_question(
    world: Any, deliver: Any, session_factory: Any, relay_sink: Any
) -> None:
    """M3: the asker mutes the question's discussion by replying "mute"; the next answer
    reaches the named viewer and not the asker; after "unmute" the asker gets answers
    again (so it is the mute, and nothing else, that kept that copy away)."""
    viewer = MEMBER
    answerers = ["ann@corp.example", "ben@corp.example"]
    for address in answerers:
        world.member("eng", address, name=address.split("@")[0].title())
    with unit_of_work(session_factory) as s:
        asker = s.scalar(select(Person).where(Person.addresses.any(email=OWNER)))
        question = questions.create_question(
            s,
            asker=asker,
            spec=questions.QuestionSpec(
                subject="Offsite",
                text="Where should the offsite be?",
                audience="eng",
                visibility=AnswerVisibility.ASKER_ONLY,
                viewers=(viewer,),
            ),
            now=NOW - timedelta(hours=1),
            domain=DOMAIN,
        )
        discussion_id = question.discussion_id
        ids = {a.email: a.person_id for p in s.scalars(select(Person)) for a in p.addresses}

    def via_reply_address(sender: str, body: str) -> RawMessage:
        token = make_token(SECRET, TokenKind.REPLY, ids[sender], discussion_id)
        rcpt = reply_address(token, DOMAIN)
        return deliver(mail(sender, rcpt, "Re: Offsite", body), rcpt, sender)

    assert via_reply_address(OWNER, "mute").reason == "command-mute"
    with session_factory() as s:
        assert s.scalars(select(Mute.person_id)).all() == [ids[OWNER]]
    assert via_reply_address(answerers[0], "Lisbon, in May.").reason == "posted"
    run_outbound(session_factory, relay_sink.url)
    assert any("Lisbon" in t for t in received_by(relay_sink, viewer))
    assert not any("Lisbon" in t for t in received_by(relay_sink, OWNER))

    assert via_reply_address(OWNER, "unmute").reason == "command-unmute"
    assert via_reply_address(answerers[1], "Porto, in June.").reason == "posted"
    run_outbound(session_factory, relay_sink.url)
    assert any("Porto" in t for t in received_by(relay_sink, OWNER))
