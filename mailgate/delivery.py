"""Delivery: fan-out of a post into delivery rows, and sending those rows in batches.

Input: a post id (fan-out); a batch of delivery ids (send), a relay port and a clock.
Output: one ``deliveries`` row per (post, member) (DUR-04) and, for each, a final state:
``sent``, ``failed`` (5xx or retries exhausted) or ``pending`` again with a
``next_attempt_at`` (4xx, connection trouble; BNC-05). Long retry delays live in the
database, not in the broker (CEL-03): the sweeper publishes rows that are due.

Who receives a post is decided by memberships and preferences: every-message members
of a list that the member may read (``mailgate.access.may_read``), not muted, not
suspended for bounces, and the author only if they asked for their own posts.

Sending claims rows first (pending → sending with a lease), so two workers never send
the same row at once and a worker that dies mid-batch leaves rows whose lease expires
and which the sweeper hands out again: at-least-once, duplicates at most the batch in
flight (DUR-05); every copy of a post carries the same Message-ID so clients merge them.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailgate import access, questions
from mailgate.copies import (
    CopySettings,
    PostSource,
    PreparedPost,
    Recipient,
    envelope_sender,
    prepare_post,
    render_copy,
)
from mailgate.db import insert_ignoring_duplicates, unit_of_work
from mailgate.models import (
    Address,
    BounceState,
    Delivery,
    DeliveryRecord,
    DeliveryStatus,
    Discussion,
    Follow,
    MailingList,
    Membership,
    Mute,
    OutboxEntry,
    Person,
    Post,
    PostingPolicy,
    Question,
    Role,
    utcnow,
)
from mailgate.relay import Relay, TransientRelayError
from mailgate.tokens import TokenKind, make_token

log = logging.getLogger("mailgate.delivery")

SEND_TASK = "mailgate.send"
BATCH_SIZE = 100  # copies per send task: one SMTP connection, one claim, one commit
# The second argument of a post's first send batch. The broker adapter puts that batch
# ahead of older posts' remaining batches, so a new post starts going out at once
# instead of after a busy list's backlog (issue 12, item 5: 1.86 s to the first copy).
FIRST_BATCH = "first-batch"
LEASE = timedelta(minutes=5)
MAX_AGE = timedelta(days=4)  # give up on a temporarily failing copy (RFC 5321: 4-5 days)


# ---------------------------------------------------------------- ports


class CopyBuilder(Protocol):
    """Builds each recipient's copy (:class:`TokenCopyBuilder` over ``mailgate.copies``)."""

    def prepare(self, source: PostSource, discussion_id: int) -> Any: ...

    def render(self, prepared: Any, recipient: RecipientFacts) -> tuple[str, bytes]:
        """(envelope sender, message bytes) for one recipient."""


@dataclass(frozen=True)
class RecipientFacts:
    delivery_id: int
    person_id: int
    address: str
    name: str
    list_id: int


class TokenCopyBuilder:
    """The production :class:`CopyBuilder`: ``mailgate.copies`` plus signed tokens.

    Each copy carries that member's reply token (person, discussion), a VERP token
    naming the delivery row (BNC-01) and an unsubscribe token (person, list).
    """

    def __init__(self, settings: CopySettings, secret: str) -> None:
        self.settings = settings
        self.secret = secret

    def prepare(self, source: PostSource, discussion_id: int) -> tuple[int, PreparedPost]:
        return discussion_id, prepare_post(source, self.settings)

    def render(
        self, prepared: tuple[int, PreparedPost], recipient: RecipientFacts
    ) -> tuple[str, bytes]:
        discussion_id, post = prepared
        copy_recipient = Recipient(
            address=recipient.address,
            name=recipient.name,
            reply_token=make_token(
                self.secret, TokenKind.REPLY, recipient.person_id, discussion_id
            ),
            verp_token=make_token(self.secret, TokenKind.BOUNCE, recipient.delivery_id),
            unsubscribe_token=make_token(
                self.secret, TokenKind.UNSUBSCRIBE, recipient.person_id, recipient.list_id
            ),
        )
        return envelope_sender(post, copy_recipient), render_copy(post, copy_recipient)


def post_source(session: Session, post_id: int) -> tuple[PostSource, int]:
    """What the copy builder needs to know about a stored post, and its discussion id
    (which goes into each member's reply token)."""
    post = session.get_one(Post, post_id)
    ml = session.get_one(MailingList, post.list_id)
    discussion = session.get_one(Discussion, post.discussion_id)
    author = session.get(Person, post.author_id) if post.author_id else None
    # THR-01: References = the parent chain, oldest first (bounded: copies trim it anyway).
    chain: list[str] = []
    parent_id = post.parent_id
    while parent_id is not None and len(chain) < 50:
        parent = session.get_one(Post, parent_id)
        chain.append(parent.message_id)
        parent_id = parent.parent_id
    chain.reverse()
    # In a question's discussion, replies come from mails only their reader got (a
    # reminder "Due today: your answer on …", a follow-up): their own subject is not for
    # other eyes, so copies carry the discussion's (issue 12, item 4).
    private_subjects = questions.question_of_discussion(session, discussion.id) is not None
    return PostSource(
        post_id=post.id,
        message_id=post.message_id,
        parent_message_id=chain[-1] if chain else None,
        references=tuple(chain[:-1]),
        subject=discussion.subject if private_subjects else (post.subject or discussion.subject),
        text=post.text,
        author_name=author.name if author else "",
        author_address=author.primary_address if author else "",
        created_at=post.created_at,
        list_slug=ml.slug,
        list_name=ml.name,
        list_description=ml.description,
        announce_only=ml.posting is PostingPolicy.ANNOUNCE,
        mandatory=ml.mandatory,
        discussion_subject=discussion.subject,
    ), discussion.id


# ---------------------------------------------------------------- fan-out


def fan_out(session: Session, post_id: int, *, batch_size: int = BATCH_SIZE) -> int:
    """Create delivery rows and send tasks for a post; idempotent. Returns new rows."""
    post = session.get(Post, post_id)
    if post is None:
        raise LookupError(f"post {post_id} does not exist")
    ml = session.get_one(MailingList, post.list_id)
    if ml.archived_at is not None:
        return 0
    facts = access.ListFacts.of(ml)
    question = questions.question_of_discussion(session, post.discussion_id)
    if question is not None:
        return _fan_out_answer(session, post, ml, facts, question, batch_size)
    muted = exists().where(Mute.discussion_id == post.discussion_id, Mute.person_id == Person.id)
    followed = exists().where(
        Follow.discussion_id == post.discussion_id, Follow.person_id == Person.id
    )
    suspended = exists().where(
        BounceState.person_id == Person.id, BounceState.suspended_at.is_not(None)
    )
    # Authors get their own posts only if they asked to (a member preference).
    author_rule = (
        [or_(Person.id != post.author_id, Person.self_copy.is_(True))]
        if post.author_id is not None
        else []
    )
    rows = session.execute(
        select(Person.id, Person.active, Membership.role, Address.email)
        .join(Membership, Membership.person_id == Person.id)
        .join(Address, and_(Address.person_id == Person.id, Address.is_primary.is_(True)))
        .where(
            Membership.list_id == ml.id,
            # Every-message members, and digest readers who follow this discussion.
            or_(
                Membership.delivery == Delivery.EVERY,
                and_(Membership.delivery == Delivery.DIGEST, followed),
            ),
            Person.active.is_(True),
            ~muted,
            ~suspended,
            *author_rule,
        )
        .order_by(Person.id)
    ).all()
    values = [
        {
            "post_id": post.id,
            "person_id": person_id,
            "list_id": ml.id,
            "address": address,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "last_error": "",
            "created_at": utcnow(),
        }
        for person_id, active, role, address in rows
        # The one place that decides reading also decides who gets a copy (PRIV-01).
        if access.may_read(facts, access.Viewer(person_id, active, Role(role)))
    ]
    return _queue_copies(session, post, values, batch_size)


def _fan_out_answer(
    session: Session,
    post: Post,
    ml: MailingList,
    facts: access.ListFacts,
    question: Question,
    batch_size: int,
) -> int:
    """A post in a question's discussion. The question itself goes out as per-member
    asks at their local time (``digests.questions``), not here. An answer goes to the
    asker and the people they named, a leader's reply to the author it answers — each
    recipient checked by ``access.may_see_question_post``; anonymous answers never go
    out one by one (they are only in the summary, without names)."""
    if post.id == questions.first_post_id(session, post.discussion_id):
        return 0
    qfacts = questions.question_facts(session, question)
    parent_author = (
        session.scalar(select(Post.author_id).where(Post.id == post.parent_id))
        if post.parent_id
        else None
    )
    candidates = {question.asker_id, *qfacts.viewers, parent_author} - {None, post.author_id}
    muted = exists().where(Mute.discussion_id == post.discussion_id, Mute.person_id == Person.id)
    suspended = exists().where(
        BounceState.person_id == Person.id, BounceState.suspended_at.is_not(None)
    )
    people = session.scalars(
        select(Person).where(Person.id.in_(candidates), ~muted, ~suspended).order_by(Person.id)
    ).all()
    readers = questions.viewers(session, ml, people)
    values = [
        {
            "post_id": post.id,
            "person_id": person.id,
            "list_id": ml.id,
            "address": person.primary_address,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "last_error": "",
            "created_at": utcnow(),
        }
        for person in people
        if person.primary_address
        and access.may_see_question_post(
            qfacts,
            facts,
            readers[person.id],
            author_id=post.author_id,
            is_question=False,
            parent_author_id=parent_author,
        )
    ]
    return _queue_copies(session, post, values, batch_size)


def _queue_copies(
    session: Session, post: Post, values: list[dict[str, object]], batch_size: int
) -> int:
    """Insert the delivery rows (idempotent) and an outbox row per batch of pending."""
    created = 0
    if values:
        created = insert_ignoring_duplicates(session, DeliveryRecord, values)
    pending = session.scalars(
        select(DeliveryRecord.id)
        .where(DeliveryRecord.post_id == post.id, DeliveryRecord.status == DeliveryStatus.PENDING)
        .order_by(DeliveryRecord.id)
    ).all()
    outbox = [
        {
            "key": f"send:{post.id}:{pending[i]}",
            "task": SEND_TASK,
            "args": [list(pending[i : i + batch_size]), *([FIRST_BATCH] if i == 0 else [])],
            "created_at": utcnow(),
        }
        for i in range(0, len(pending), batch_size)
    ]
    if outbox:
        insert_ignoring_duplicates(session, OutboxEntry, outbox)
    return created


def is_first_batch(task: str, args: Sequence[Any]) -> bool:
    """Whether a published task is a post's first send batch (see ``FIRST_BATCH``)."""
    return task == SEND_TASK and len(args) > 1 and args[1] == FIRST_BATCH


# ---------------------------------------------------------------- claiming and marking


def claim(
    session: Session, delivery_ids: Sequence[int], now: datetime, lease: timedelta = LEASE
) -> list[int]:
    """pending (and due) or sending-with-expired-lease → sending; returns claimed ids."""
    claimable = or_(
        and_(
            DeliveryRecord.status == DeliveryStatus.PENDING,
            or_(DeliveryRecord.next_attempt_at.is_(None), DeliveryRecord.next_attempt_at <= now),
        ),
        and_(DeliveryRecord.status == DeliveryStatus.SENDING, DeliveryRecord.lease_until < now),
    )
    claimed = session.scalars(
        update(DeliveryRecord)
        .where(DeliveryRecord.id.in_(list(delivery_ids)), claimable)
        .values(
            status=DeliveryStatus.SENDING,
            lease_until=now + lease,
            attempts=DeliveryRecord.attempts + 1,
        )
        .returning(DeliveryRecord.id)
    ).all()
    return sorted(claimed)


def retry_delay(attempts: int, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff with full jitter: 5 min doubling to a 1 h cap (BNC-05)."""
    base = min(300 * 2 ** max(0, attempts - 1), 3600)
    return timedelta(seconds=(rng or random).uniform(base / 2, base))


@dataclass
class SendReport:
    sent: int = 0
    failed: int = 0
    deferred: int = 0


def send_batch(
    factory: sessionmaker[Session],
    delivery_ids: Sequence[int],
    *,
    builder: CopyBuilder,
    relay: Relay,
    now: Callable[[], datetime] = utcnow,
    throttle: Callable[[], None] | None = None,
    lease: timedelta = LEASE,
) -> SendReport:
    """Claim, render and send one batch over one relay connection; record each outcome.

    No database transaction is open while we talk to the relay: claim and load in one,
    send, then record the outcomes in another. A crash in between leaves rows in
    ``sending`` whose lease expires (the sweeper re-sends them).
    """
    stamp = now()
    with unit_of_work(factory) as session:
        claimed = claim(session, delivery_ids, stamp, lease)
        if not claimed:
            return SendReport()
        rows = session.execute(
            select(
                DeliveryRecord.id,
                DeliveryRecord.person_id,
                DeliveryRecord.address,
                DeliveryRecord.list_id,
                DeliveryRecord.post_id,
                DeliveryRecord.attempts,
                DeliveryRecord.created_at,
                Person.name,
            )
            .join(Person, Person.id == DeliveryRecord.person_id)
            .where(DeliveryRecord.id.in_(claimed))
            .order_by(DeliveryRecord.id)
        ).all()
        prepared = {
            post_id: builder.prepare(*post_source(session, post_id))
            for post_id in {r.post_id for r in rows}
        }
    outcomes: dict[int, tuple[DeliveryStatus, str]] = {}
    try:
        with relay.open() as connection:
            for r in rows:
                if throttle is not None:
                    throttle()
                sender, data = builder.render(
                    prepared[r.post_id],
                    RecipientFacts(r.id, r.person_id, r.address, r.name, r.list_id),
                )
                result = connection.send(sender, [r.address], data)
                if r.address in result.permanent:
                    outcomes[r.id] = (DeliveryStatus.FAILED, result.permanent[r.address])
                elif r.address in result.temporary:
                    outcomes[r.id] = (DeliveryStatus.PENDING, result.temporary[r.address])
                else:
                    outcomes[r.id] = (DeliveryStatus.SENT, "")
    except TransientRelayError as exc:
        log.warning("relay unavailable (%s); %d copies deferred", exc, len(rows) - len(outcomes))
        for r in rows:
            outcomes.setdefault(r.id, (DeliveryStatus.PENDING, f"relay: {exc}"[:400]))
    return _record(factory, rows, outcomes, stamp)


def _record(
    factory: sessionmaker[Session],
    rows: Sequence[Any],
    outcomes: dict[int, tuple[DeliveryStatus, str]],
    stamp: datetime,
) -> SendReport:
    report = SendReport()
    sent = [r.id for r in rows if outcomes[r.id][0] is DeliveryStatus.SENT]
    with unit_of_work(factory) as session:
        if sent:
            session.execute(
                update(DeliveryRecord)
                .where(DeliveryRecord.id.in_(sent))
                .values(status=DeliveryStatus.SENT, sent_at=stamp, lease_until=None)
            )
        report.sent = len(sent)
        for r in rows:
            status, error = outcomes[r.id]
            if status is DeliveryStatus.SENT:
                continue
            values: dict[str, Any] = {"last_error": error[:400], "lease_until": None}
            if status is DeliveryStatus.PENDING and stamp - r.created_at < MAX_AGE:
                values.update(status=status, next_attempt_at=stamp + retry_delay(r.attempts))
                report.deferred += 1
            else:
                values.update(status=DeliveryStatus.FAILED)
                report.failed += 1
            session.execute(
                update(DeliveryRecord).where(DeliveryRecord.id == r.id).values(**values)
            )
    return report


def due_deliveries(
    factory: sessionmaker[Session],
    *,
    now: datetime | None = None,
    stale_after: timedelta = timedelta(seconds=60),
    limit: int = 5000,
) -> list[int]:
    """Rows a send task should (re)try now: deferred rows that are due, rows whose
    lease expired, and pending rows whose task seems lost."""
    stamp = now or utcnow()
    with unit_of_work(factory) as session:
        return list(
            session.scalars(
                select(DeliveryRecord.id)
                .where(
                    or_(
                        and_(
                            DeliveryRecord.status == DeliveryStatus.PENDING,
                            DeliveryRecord.next_attempt_at <= stamp,
                        ),
                        and_(
                            DeliveryRecord.status == DeliveryStatus.PENDING,
                            DeliveryRecord.next_attempt_at.is_(None),
                            DeliveryRecord.created_at < stamp - stale_after,
                        ),
                        and_(
                            DeliveryRecord.status == DeliveryStatus.SENDING,
                            DeliveryRecord.lease_until < stamp,
                        ),
                    )
                )
                .order_by(DeliveryRecord.id)
                .limit(limit)
            )
        )


class Throttle:
    """At most ``rate`` copies per second towards the relay, per process (LIM-07)."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self.next_at = 0.0

    def __call__(self) -> None:
        if not self.interval:
            return
        now = self.clock()
        if now < self.next_at:
            self.sleep(self.next_at - now)
            now = self.next_at
        self.next_at = max(self.next_at, now) + self.interval
