"""Hidden lists are indistinguishable from no list at all to whoever may not know them
(issue 12, item 6).

What the gateway and ingest know, and so what each decides:

- at RCPT only the envelope sender (MAIL FROM, forgeable): a hidden list, its
  ``-request`` address and an archived hidden list answer a sender who is not an active
  member exactly as an unknown list does (``550 5.1.1``, the same text);
- after acceptance the parsed From decides: a notice that would name a hidden list to
  someone who may not know it exists is not queued — an unknown list gets no notice
  either — and ask@ treats the list as an unknown audience.

``mailgate.access.may_know_exists`` is the one decision; the tables below enumerate it,
then the same cases run through the gateway (transcripts without sockets, then smtplib on
127.0.0.1) and through ingest on the real database.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from mailgate import access, replies
from mailgate.db import unit_of_work
from mailgate.inbox import SqlInbox
from mailgate.ingest import IngestContext, run_ingest
from mailgate.models import Notice, PendingAction, PostingPolicy, Role, SiteRole, Visibility
from mailgate.notices import notice_context, render_notice
from mailgate.smtp import Accepted, GatewayHandler, Limits
from mailgate.tokens import TokenKind, make_token
from tests.conftest import DOMAIN, SECRET
from tests.conftest import build_mail as mail

ALICE = "alice@corp.example"  # member of the hidden list "secret"
BOB = "bob@corp.example"  # employee (in the directory), not a member of "secret"
CAROL = "carol@corp.example"  # executive, not a member of "secret"
MALLORY = "mallory@elsewhere.example"  # not in the directory at all

SECRET_LIST = f"secret@{DOMAIN}"
SECRET_REQUEST = f"secret-request@{DOMAIN}"
VAULT_LIST = f"vault@{DOMAIN}"  # hidden and archived
GHOST_LIST = f"ghost@{DOMAIN}"  # does not exist
GHOST_REQUEST = f"ghost-request@{DOMAIN}"


class Clock:
    """A frozen monotonic clock for the gateway (list cache, rate windows)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lists(directory: Any, session_factory: sessionmaker[DbSession]) -> Any:
    from mailgate import directory as d

    directory.list(
        "secret",
        name="Secret Project",
        description="Acquisition of Initech",
        visibility="hidden",
    )
    directory.member("secret", ALICE, name="Alice")
    directory.list("vault", name="Vault Archive", visibility="hidden")
    directory.member("vault", ALICE)
    with unit_of_work(session_factory) as s:
        d.archive_list(s, "test", "vault")
    directory.list("eng", name="Engineering")
    directory.member("eng", BOB, name="Bob")
    directory.member("eng", CAROL, name="Carol")
    directory.grant(CAROL, "executive")
    return directory


def unknown(address: str) -> str:
    """The reply an address that is not ours at all gets."""
    return replies.UNKNOWN_RECIPIENT.format(address=address)


# ---------------------------------------------------------------- the decision (pure)

WHO = {
    "stranger": access.Viewer(person_id=None),
    "employee": access.Viewer(2, active=True),
    "executive": access.Viewer(7, active=True, site_roles=frozenset({SiteRole.EXECUTIVE})),
    "inactive-member": access.Viewer(1, active=False, role=Role.MEMBER),
    "member": access.Viewer(3, active=True, role=Role.MEMBER),
    "moderator": access.Viewer(4, active=True, role=Role.MODERATOR),
    "owner": access.Viewer(5, active=True, role=Role.OWNER),
}
KNOW_HIDDEN = {"member", "moderator", "owner"}


@pytest.mark.parametrize(
    ("visibility", "posting", "archived", "who"),
    list(itertools.product(Visibility, PostingPolicy, (False, True), WHO)),
)
def test_who_may_know_a_list_exists(
    visibility: Visibility, posting: PostingPolicy, archived: bool, who: str
) -> None:
    facts = access.ListFacts(1, visibility, posting, False, archived)
    expected = visibility is not Visibility.HIDDEN or who in KNOW_HIDDEN
    assert access.may_know_exists(facts, WHO[who]) is expected


# ---------------------------------------------------------------- RCPT transcripts


def transcript(handler: GatewayHandler, mail_from: str, rcpts: Sequence[str]) -> list[str]:
    """The handler's replies to MAIL FROM and each RCPT TO, as a relay would read them."""

    async def run() -> list[str]:
        session, envelope = Session(asyncio.get_running_loop()), Envelope()
        server = SimpleNamespace(hostname=DOMAIN)
        lines = [await handler.handle_MAIL(server, session, envelope, mail_from, [])]  # type: ignore[arg-type]
        for rcpt in rcpts:
            lines.append(await handler.handle_RCPT(server, session, envelope, rcpt, []))  # type: ignore[arg-type]
        return lines

    return asyncio.run(run())


@pytest.fixture
def handler(lists: Any, session_factory: sessionmaker[DbSession]) -> Any:
    gateway = GatewayHandler(
        SqlInbox(session_factory), domain=DOMAIN, secrets=(SECRET,), limits=Limits(), clock=Clock()
    )
    yield gateway
    gateway.committer.close()


ALL_RCPTS = (SECRET_LIST, SECRET_REQUEST, VAULT_LIST, f"eng@{DOMAIN}", GHOST_LIST, GHOST_REQUEST)


@pytest.mark.parametrize(
    ("mail_from", "expected"),
    [
        pytest.param(
            MALLORY,
            [
                unknown(SECRET_LIST),
                unknown(SECRET_REQUEST),
                unknown(VAULT_LIST),
                replies.RCPT_OK,
                unknown(GHOST_LIST),
                unknown(GHOST_REQUEST),
            ],
            id="stranger",
        ),
        pytest.param(
            BOB,
            [
                unknown(SECRET_LIST),
                unknown(SECRET_REQUEST),
                unknown(VAULT_LIST),
                replies.RCPT_OK,
                unknown(GHOST_LIST),
                unknown(GHOST_REQUEST),
            ],
            id="employee-not-member",
        ),
        pytest.param(
            "",
            [
                unknown(SECRET_LIST),
                unknown(SECRET_REQUEST),
                unknown(VAULT_LIST),
                replies.RCPT_OK,
                unknown(GHOST_LIST),
                unknown(GHOST_REQUEST),
            ],
            id="null-sender",
        ),
        pytest.param(
            ALICE,
            [
                replies.RCPT_OK,
                replies.RCPT_OK,
                replies.LIST_ARCHIVED.format(address=VAULT_LIST),
                replies.RCPT_OK,
                unknown(GHOST_LIST),
                unknown(GHOST_REQUEST),
            ],
            id="member",
        ),
        pytest.param(
            ALICE.upper(),
            [
                replies.RCPT_OK,
                replies.RCPT_OK,
                replies.LIST_ARCHIVED.format(address=VAULT_LIST),
                replies.RCPT_OK,
                unknown(GHOST_LIST),
                unknown(GHOST_REQUEST),
            ],
            id="member-any-case",
        ),
    ],
)
def test_rcpt_transcript(handler: Any, mail_from: str, expected: list[str]) -> None:
    assert transcript(handler, mail_from, ALL_RCPTS) == ["250 2.1.0 OK", *expected]


def test_hidden_reply_is_byte_identical_to_an_unknown_list(handler: Any) -> None:
    """Same bytes once the address itself is swapped: nothing else tells them apart."""
    _, *hidden = transcript(handler, MALLORY, (SECRET_LIST, SECRET_REQUEST, VAULT_LIST))
    _, *ghost = transcript(handler, MALLORY, (GHOST_LIST, GHOST_REQUEST, f"vault2@{DOMAIN}"))
    swapped = [line.replace("secret", "ghost").replace("vault", "vault2") for line in hidden]
    assert swapped == ghost
    assert all(line.startswith("550 5.1.1 No such list or address here: ") for line in hidden)


def test_a_members_answer_is_not_cached_for_a_stranger(handler: Any) -> None:
    """The list cache must not hand one sender's answer to the next (frozen clock: every
    lookup after the first is inside the cache window)."""
    assert transcript(handler, ALICE, (SECRET_LIST,))[1] == replies.RCPT_OK
    assert transcript(handler, MALLORY, (SECRET_LIST,))[1] == unknown(SECRET_LIST)
    assert transcript(handler, ALICE, (SECRET_LIST,))[1] == replies.RCPT_OK


# ---------------------------------------------------------------- over a real socket


@pytest.fixture
def gw(lists: Any, gateway_factory: Any) -> Any:
    return gateway_factory(clock=Clock())


def test_rcpt_over_smtp_refuses_strangers_as_for_no_list(gw: Any) -> None:
    with gw.smtp() as smtp:
        smtp.ehlo("mx1.corp.example")
        assert smtp.mail(MALLORY) == (250, b"2.1.0 OK")
        for rcpt in (SECRET_LIST, SECRET_REQUEST, VAULT_LIST, GHOST_LIST, GHOST_REQUEST):
            code, text = smtp.rcpt(rcpt)
            assert f"{code} {text.decode()}" == unknown(rcpt), rcpt
        assert smtp.docmd("DATA") == (503, b"5.5.1 Error: need RCPT command")


def test_rcpt_over_smtp_accepts_members(gw: Any) -> None:
    raw_id = gw.submit(mail(sender=ALICE, to=SECRET_LIST), [SECRET_LIST, SECRET_REQUEST], ALICE)
    assert raw_id > 0


# ---------------------------------------------------------------- after acceptance

# (recipient, body): what a non-member may send once a forged MAIL FROM got it past RCPT.
AFTER_ACCEPTANCE = [
    pytest.param("secret", "Let me in.", id="post"),
    pytest.param("secret-request", "help", id="help"),
    pytest.param("secret-request", "subscribe", id="subscribe"),
    pytest.param("secret-request", "unsubscribe", id="unsubscribe"),
    pytest.param("secret-request", "digest", id="digest"),
    pytest.param("secret-request", "frobnicate", id="unknown-command"),
]


def ingest(
    session_factory: sessionmaker[DbSession], ctx: Any, raw: bytes, rcpt: str, mail_from: str
) -> None:
    """Store as the gateway would (bypassing RCPT, which an unknown list never passes)
    and run the ingest service on it."""
    (raw_id,) = SqlInbox(session_factory).store_many(
        [Accepted(raw, mail_from, (rcpt,), "127.0.0.1", "mx1.corp.example")]
    )
    run_ingest(session_factory, raw_id, ctx)


def rendered_notices(
    session_factory: sessionmaker[DbSession], address: str, after: int = 0
) -> list[Any]:
    """(reason, subject, body) of the notices queued for ``address`` (ids above ``after``),
    as they would be sent."""
    with session_factory() as s:
        rows = s.scalars(
            select(Notice).where(Notice.address == address, Notice.id > after).order_by(Notice.id)
        )
        return [
            (n.reason, *render_notice(n.reason, notice_context(n.address, n.context, DOMAIN)))
            for n in rows
        ]


def last_notice_id(session_factory: sessionmaker[DbSession]) -> int:
    with session_factory() as s:
        return int(s.scalar(select(func.max(Notice.id))) or 0)


class Days:
    """Ingest's clock: a fixed instant, moved a day on so that the once-a-day notice limit
    does not hide the second of two runs being compared."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def next_day(self) -> None:
        self.now += timedelta(days=1)


@pytest.fixture
def days() -> Days:
    return Days()


@pytest.fixture
def ctx(days: Days) -> IngestContext:
    return IngestContext(domain=DOMAIN, secrets=(SECRET,), now=days)


@pytest.mark.parametrize("sender", [BOB, MALLORY], ids=["employee", "stranger"])
@pytest.mark.parametrize(("local", "body"), AFTER_ACCEPTANCE)
def test_notices_to_a_non_member_are_those_of_an_unknown_list(
    lists: Any,
    session_factory: sessionmaker[DbSession],
    ctx: IngestContext,
    days: Days,
    sender: str,
    local: str,
    body: str,
) -> None:
    """A forged envelope (a member's) got the mail in; the parsed From is not a member."""
    hidden = f"{local}@{DOMAIN}"
    ghost = hidden.replace("secret", "ghost")
    ingest(session_factory, ctx, mail(sender=sender, to=hidden, body=body), hidden, ALICE)
    for_hidden = rendered_notices(session_factory, sender)
    days.next_day()
    mark = last_notice_id(session_factory)
    ingest(session_factory, ctx, mail(sender=sender, to=ghost, body=body), ghost, ALICE)
    for_ghost = rendered_notices(session_factory, sender, after=mark)
    assert for_hidden == for_ghost
    everything = repr(for_hidden)
    assert "Secret Project" not in everything and "secret" not in everything.lower()


def test_forged_envelope_through_the_gateway_gets_no_help_for_the_list(
    gw: Any, session_factory: sessionmaker[DbSession], ctx: IngestContext
) -> None:
    """RCPT trusted the forged MAIL FROM (a member's); ingest goes by the parsed From."""
    raw_id = gw.submit(mail(sender=BOB, to=SECRET_REQUEST, body="help"), SECRET_REQUEST, ALICE)
    run_ingest(session_factory, raw_id, ctx)
    assert rendered_notices(session_factory, BOB) == []
    assert rendered_notices(session_factory, ALICE) == []


def test_members_still_get_their_notices(
    lists: Any, session_factory: sessionmaker[DbSession], ctx: IngestContext
) -> None:
    ingest(
        session_factory,
        ctx,
        mail(sender=ALICE, to=SECRET_REQUEST, body="help"),
        SECRET_REQUEST,
        ALICE,
    )
    [(reason, subject, body)] = rendered_notices(session_factory, ALICE)
    assert (reason, subject) == ("command-help", "Help for Secret Project")
    assert SECRET_LIST in body


def test_leaving_a_hidden_list_is_confirmed_to_the_member_who_left(
    lists: Any, session_factory: sessionmaker[DbSession], ctx: IngestContext
) -> None:
    """The "done" notice is decided before the membership goes, not after."""
    ingest(
        session_factory,
        ctx,
        mail(sender=ALICE, to=SECRET_REQUEST, body="unsubscribe"),
        SECRET_REQUEST,
        ALICE,
    )
    with session_factory() as s:
        pending = s.scalars(select(PendingAction)).one()
    confirm = f"confirm+{make_token(SECRET, TokenKind.CONFIRM, pending.id)}@{DOMAIN}"
    ingest(
        session_factory,
        ctx,
        mail(sender=ALICE, to=confirm, subject="Re: Confirm", body="yes"),
        confirm,
        ALICE,
    )
    reasons = [(reason, subject) for reason, subject, _ in rendered_notices(session_factory, ALICE)]
    assert reasons == [
        ("confirm-command", "Confirm: unsubscribe on Secret Project"),
        ("command-done", "Done: unsubscribe on Secret Project"),
    ]


@pytest.mark.parametrize("asker", [CAROL, BOB], ids=["executive", "employee"])
def test_asking_a_hidden_list_is_asking_no_list(
    lists: Any, session_factory: sessionmaker[DbSession], ctx: IngestContext, days: Days, asker: str
) -> None:
    ask = f"ask@{DOMAIN}"
    question = "To: {}\n\nShould we buy Initech?"
    ingest(
        session_factory,
        ctx,
        mail(sender=asker, to=ask, body=question.format("secret")),
        ask,
        asker,
    )
    for_hidden = rendered_notices(session_factory, asker)
    days.next_day()
    mark = last_notice_id(session_factory)
    ingest(
        session_factory,
        ctx,
        mail(sender=asker, to=ask, body=question.format("ghost")),
        ask,
        asker,
    )
    for_ghost = rendered_notices(session_factory, asker, after=mark)
    assert [n[0] for n in for_ghost] == ["ask-invalid"]
    assert repr(for_hidden).replace("secret", "ghost") == repr(for_ghost)
    assert "Secret Project" not in repr(for_hidden)
