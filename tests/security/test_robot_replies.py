"""Robots that do not say they are robots (issue 12, items 9 and 10).

Item 9: two members whose autoresponders answer every copy through its Reply-To, with no
Auto-Submitted and no Precedence, were posted 8 rounds out of 8. Defences that do not
depend on headers (``mailgate.loops``) hold the message — never lose it — and tell the
list's owner; ``mailgate inbound release`` posts it.

Item 10: a stranger sent an Auto-Submitted reply to a member's reply address saying "out
of the office until 30 June 2027", and that member was not asked any question until then.
Only the reply address's owner can say they are away.

Real gateway on 127.0.0.1, real database (SQLite and PostgreSQL), the ingest service,
a fixed clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from mailgate.addressing import reply_address
from mailgate.ingest import IngestContext, run_ingest
from mailgate.loops import MAX_PER_DISCUSSION_HOUR
from mailgate.models import Discussion, Notice, Person, Post, RawMessage, RawStatus
from mailgate.notices import compose_notice
from mailgate.tokens import TokenKind, make_token
from tests.conftest import DOMAIN, SECRET
from tests.conftest import build_mail as mail

ALICE, BOB, CAROL, OWNER = (f"{n}@corp.example" for n in ("alice", "bob", "carol", "owner"))
EVE = "eve@elsewhere.example"
START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
# Not an out-of-office text the classifier knows: what gets past the header checks.
ROBOT = (
    "Thanks for your email. I read my messages twice a day and will get back to you "
    "as soon as I can.\n\nKind regards"
)


class Clock:
    def __init__(self) -> None:
        self.at = START

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def eng(directory):  # type: ignore[no-untyped-def]
    directory.list("eng", name="Engineering")
    directory.member("eng", OWNER, name="Owner", role="owner")
    for address in (ALICE, BOB, CAROL):
        directory.member("eng", address, name=address.split("@")[0].title())
    return directory


@pytest.fixture
def deliver(gateway, session_factory, clock):  # type: ignore[no-untyped-def]
    ctx = IngestContext(domain=DOMAIN, secrets=(SECRET,), now=clock)

    def send(raw: bytes, rcpt: str, mail_from: str) -> int:
        raw_id = gateway.submit(raw, rcpt, mail_from)
        run_ingest(session_factory, raw_id, ctx)
        return raw_id

    return send


def reply_to(session_factory: Any, address: str, discussion_id: int) -> str:
    with session_factory() as s:
        person = s.scalar(select(Person).where(Person.addresses.any(email=address)))
        assert person is not None
        return reply_address(make_token(SECRET, TokenKind.REPLY, person.id, discussion_id), DOMAIN)


def status(session_factory: Any, raw_id: int) -> tuple[RawStatus, str]:
    with session_factory() as s:
        row = s.get_one(RawMessage, raw_id)
        return row.status, row.reason


def post_texts(session_factory: Any) -> list[str]:
    with session_factory() as s:
        return [p.text for p in s.scalars(select(Post).order_by(Post.id))]


def test_two_autoresponders_answering_every_copy_are_held_after_one_round(  # type: ignore[no-untyped-def]
    eng, deliver, session_factory, clock, run_cli
) -> None:
    deliver(
        mail(sender=ALICE, subject="Release plan", body="Plan attached."), f"eng@{DOMAIN}", ALICE
    )
    with session_factory() as s:
        (discussion,) = s.scalars(select(Discussion.id))
    outcomes: dict[str, list[tuple[RawStatus, str]]] = {BOB: [], CAROL: []}
    held_ids: list[int] = []
    for _round in range(8):  # each robot answers the copy of the other's last answer
        for robot in (BOB, CAROL):
            clock.at += timedelta(seconds=20)
            rcpt = reply_to(session_factory, robot, discussion)
            raw_id = deliver(
                mail(sender=robot, to=rcpt, subject="Re: [eng] Release plan", body=ROBOT),
                rcpt,
                robot,
            )
            outcomes[robot].append(status(session_factory, raw_id))
            if outcomes[robot][-1][0] is RawStatus.HELD:
                held_ids.append(raw_id)
    for robot in (BOB, CAROL):
        assert outcomes[robot][0] == (RawStatus.PROCESSED, "posted")
        assert outcomes[robot][1:] == [(RawStatus.HELD, "held-repeated-text")] * 7
    assert post_texts(session_factory).count(ROBOT.replace("\n\n", "\n\n")) <= 2
    assert len(post_texts(session_factory)) == 3  # Alice's post and one answer each
    # The owner is told, once a day — never the robots.
    with session_factory() as s:
        told = [(n.address, n.reason) for n in s.scalars(select(Notice).order_by(Notice.id))]
        notice = s.scalars(select(Notice).where(Notice.reason == "held-for-moderation")).first()
        assert notice is not None
        msg = compose_notice(
            notice_id=notice.id,
            reason=notice.reason,
            address=notice.address,
            stored=notice.context,
            domain=DOMAIN,
        )
    assert told == [(OWNER, "held-for-moderation")]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert f"mailgate inbound release {held_ids[0]}" in text and BOB in text
    # Nothing is lost: the owner releases one and it is posted.
    result = run_cli("inbound", "release", str(held_ids[0]))
    assert result.exit_code == 0, result.stderr
    assert status(session_factory, held_ids[0]) == (RawStatus.PROCESSED, "posted")
    assert len(post_texts(session_factory)) == 4


def test_the_same_text_later_or_a_short_one_is_posted(  # type: ignore[no-untyped-def]
    eng, deliver, session_factory, clock
) -> None:
    for body in ("Thanks!", "Thanks!", ROBOT):
        clock.at += timedelta(minutes=1)
        raw_id = deliver(mail(sender=BOB, body=body), f"eng@{DOMAIN}", BOB)
        assert status(session_factory, raw_id) == (RawStatus.PROCESSED, "posted")
    clock.at += timedelta(minutes=31)  # past the repeat window
    raw_id = deliver(mail(sender=BOB, body=ROBOT), f"eng@{DOMAIN}", BOB)
    assert status(session_factory, raw_id) == (RawStatus.PROCESSED, "posted")


def test_posts_per_author_per_discussion_per_hour_are_capped(  # type: ignore[no-untyped-def]
    eng, deliver, session_factory, clock
) -> None:
    deliver(mail(sender=ALICE, body="Start"), f"eng@{DOMAIN}", ALICE)
    with session_factory() as s:
        (discussion,) = s.scalars(select(Discussion.id))
    rcpt = reply_to(session_factory, BOB, discussion)
    results = []
    for n in range(MAX_PER_DISCUSSION_HOUR + 1):
        clock.at += timedelta(minutes=2)
        raw_id = deliver(mail(sender=BOB, to=rcpt, body=f"Reply number {n} differs."), rcpt, BOB)
        results.append(status(session_factory, raw_id))
    assert results[:-1] == [(RawStatus.PROCESSED, "posted")] * MAX_PER_DISCUSSION_HOUR
    assert results[-1] == (RawStatus.HELD, "held-post-rate")
    clock.at += timedelta(hours=1)  # the hour has passed
    raw_id = deliver(mail(sender=BOB, to=rcpt, body="And one later."), rcpt, BOB)
    assert status(session_factory, raw_id) == (RawStatus.PROCESSED, "posted")


# ---------------------------------------------------------------- item 10


def away_until(session_factory: Any, address: str) -> str | None:
    with session_factory() as s:
        return s.scalar(select(Person.away_until).where(Person.addresses.any(email=address)))


def out_of_office(sender: str, to: str) -> bytes:
    return mail(
        sender=sender,
        to=to,
        subject="Automatic reply: Release plan",
        body="I am out of the office until 30 June 2027 with no access to email.",
        headers={"Auto-Submitted": "auto-replied"},
    )


def test_only_the_reply_addresss_owner_can_say_they_are_away(  # type: ignore[no-untyped-def]
    eng, deliver, session_factory
) -> None:
    deliver(mail(sender=ALICE, body="Plan"), f"eng@{DOMAIN}", ALICE)
    with session_factory() as s:
        (discussion,) = s.scalars(select(Discussion.id))
    bobs = reply_to(session_factory, BOB, discussion)
    # A stranger, and a colleague, holding Bob's reply address (a forwarded copy).
    for stranger in (EVE, CAROL):
        raw_id = deliver(out_of_office(stranger, bobs), bobs, stranger)
        assert status(session_factory, raw_id)[0] is RawStatus.SUPPRESSED
        assert away_until(session_factory, BOB) is None
    # Bob's own out-of-office does pause his questions.
    deliver(out_of_office(BOB, bobs), bobs, BOB)
    assert away_until(session_factory, BOB) == "2027-06-30"
