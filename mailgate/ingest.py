"""Ingest: the use case that turns one stored raw message into posts, commands or a
logged refusal.

Input: a session (the caller's transaction), a ``raw_messages`` id and an
:class:`IngestContext`. Output: the raw row moved to a final status with an
``explanation`` (what ``mailgate inbound explain`` prints), and — for posts — a post row
plus an outbox row for fan-out; for refusals a notice row (at most one per reason per
address per day, never to automatic mail).

Flow: read (pure: parse → classify → sender → body) → per recipient: identify the
person → authorise (``mailgate.access``) → assign the thread (``mailgate.threads``) →
store. Re-running it on a processed row does nothing (idempotent, at-least-once safe).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, func, insert, select, union_all, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailgate import access, questions
from mailgate.addressing import AddressKind, decode_recipient, redact_address
from mailgate.classify import MailClass, OurAddresses
from mailgate.loops import RATE_WINDOW, REPEAT_WINDOW, loop_reason
from mailgate.models import (
    Address,
    AllowedPoster,
    AnswerVisibility,
    Ask,
    Delivery,
    Discussion,
    Like,
    MailingList,
    Membership,
    Mute,
    Notice,
    OutboxEntry,
    PendingAction,
    Person,
    PersonRole,
    Post,
    Question,
    RawMessage,
    RawStatus,
    Role,
    SiteRole,
    StoredAttachment,
    utcnow,
)
from mailgate.reading import Reading, read_message
from mailgate.senders import AuthVerdict, authenticate
from mailgate.threads import (
    KnownPost,
    ThreadChoice,
    assign_thread,
    base_subject,
    message_key,
    referenced_ids,
)
from mailgate.tokens import TokenError, TokenKind, read_token

log = logging.getLogger("mailgate.ingest")

MAX_NOTICES_PER_DAY = 10  # per address, all reasons together (LOOP-04, Mailman's default)
REQUEST_COMMANDS = ("subscribe", "unsubscribe", "digest", "every", "nomail", "help")


class RawLike(Protocol):
    """What the stages read of a stored message (a row of columns or the ORM entity)."""

    @property
    def id(self) -> int: ...

    @property
    def raw(self) -> bytes: ...

    @property
    def mail_from(self) -> str: ...


@dataclass(frozen=True)
class IngestContext:
    domain: str
    secrets: tuple[str, ...]
    authserv_ids: frozenset[str] = frozenset()
    # Peers (IP networks) whose A-R count at all; none by default: only DKIM counts
    # (senders.trusted_authserv_ids, issue 12 item 14).
    authres_relays: tuple[str, ...] = ()
    # Trusted A-R fields may sit under this many Received fields: our own trace (the
    # gateway prepends one, SMTP-16) plus the relay hops settings.authres_hops allows.
    received_above: int = 1
    dnsfunc: Callable[[bytes], bytes | None] | None = None
    now: Callable[[], datetime] = utcnow

    @property
    def ours(self) -> OurAddresses:
        return OurAddresses(
            domain=self.domain, list_ids=frozenset(), loop_marker=f"mailgate@{self.domain}"
        )


@dataclass
class Outcome:
    """What happened for one recipient of the message."""

    recipient: str  # redacted for logs and the admin view
    status: RawStatus
    reason: str
    facts: dict[str, Any] = field(default_factory=dict)


# Aggregation: the "best" outcome names the raw message's status.
_RANK = {
    RawStatus.PROCESSED: 0,
    RawStatus.HELD: 1,
    RawStatus.REJECTED: 2,
    RawStatus.SUPPRESSED: 3,
}


def _storable(text: str) -> str:
    """Text fit for every engine: PostgreSQL refuses NUL in text columns."""
    return text.replace("\x00", "\ufffd")


# Tables for Core statements on the hot path (see store_post).
_POSTS = cast(Table, Post.__table__)
_DISCUSSIONS = cast(Table, Discussion.__table__)
_OUTBOX = cast(Table, OutboxEntry.__table__)
# Built once: constructing a statement (coercions, cache key) costs about as much as
# running it on SQLite, and these run for every post.
_SAME = select(
    _POSTS.c.id, _POSTS.c.discussion_id, _POSTS.c.message_id, _POSTS.c.message_key
).where(_POSTS.c.list_id == bindparam("list_id"), _POSTS.c.message_key == bindparam("key"))
# A UNION ALL of two index lookups, not one WHERE with OR: given "list AND (key OR id
# IN …)", SQLite's planner scans the whole list (migration 0008 tells the story).
_CITED_OR_SAME = union_all(
    _SAME,
    select(_POSTS.c.id, _POSTS.c.discussion_id, _POSTS.c.message_id, _POSTS.c.message_key).where(
        _POSTS.c.list_id == bindparam("list_id"),
        _POSTS.c.message_id.in_(bindparam("wanted", expanding=True)),
    ),
)
_NEW_DISCUSSION = insert(_DISCUSSIONS).returning(_DISCUSSIONS.c.id)
_TOUCH_DISCUSSION = (
    update(_DISCUSSIONS)
    .where(_DISCUSSIONS.c.id == bindparam("discussion_id"))
    .values(last_post_at=bindparam("now"))
)
_NEW_POST = insert(_POSTS).returning(_POSTS.c.id)
_NEW_OUTBOX = insert(_OUTBOX)

_RAW_COLUMNS = (
    RawMessage.id,
    RawMessage.raw,
    RawMessage.mail_from,
    RawMessage.rcpt_to,
    RawMessage.status,
)


def process_raw(
    session: Session,
    raw_id: int,
    ctx: IngestContext,
    *,
    row: Any = None,
    results: list[dict[str, Any]] | None = None,
) -> RawStatus:
    """Decide one stored message. A batch passes the ``row`` it loaded for all its
    messages and collects the status writes in ``results`` to apply them at once."""
    if row is None:
        # Columns, not the ORM entity: loading and flushing the whole row (bytes and
        # JSON) costs more than the decisions themselves.
        row = session.execute(
            select(*_RAW_COLUMNS).where(RawMessage.id == raw_id).with_for_update()
        ).first()
    if row is None:
        raise LookupError(f"raw message {raw_id} does not exist")
    if RawStatus(row.status) is not RawStatus.RECEIVED:
        return RawStatus(row.status)  # already done: a redelivered task changes nothing
    reading = read_message(row.raw, mail_from=row.mail_from, ours=ctx.ours)
    outcomes = [_handle_recipient(session, row, reading, rcpt, ctx) for rcpt in row.rcpt_to]
    best = min(outcomes, key=lambda o: _RANK[o.status]) if outcomes else None
    status = best.status if best else RawStatus.REJECTED
    reason = best.reason if best else "no-recipients"
    values = {"status": status, "reason": reason, "explanation": explain(reading, outcomes)}
    if results is not None:
        results.append({"id": raw_id, **values})
    else:
        session.execute(update(RawMessage).where(RawMessage.id == raw_id).values(**values))
    log.info("raw %s: %s (%s) for %d recipient(s)", raw_id, status, reason, len(outcomes))
    return status


def explain(reading: Reading, outcomes: list[Outcome]) -> dict[str, Any]:
    return {
        "class": reading.mail_class,
        "class_reason": reading.reason,
        "classification": str(reading.classification.kind),
        "automatic": reading.automatic,
        "from": reading.sender.address if reading.sender else None,
        "from_error": reading.sender_error,
        "subject": reading.msg.subject,
        "message_id": reading.msg.message_id,
        "bounced": [b.address for b in reading.classification.bounced],
        "recipients": [
            {"recipient": o.recipient, "status": str(o.status), "reason": o.reason, **o.facts}
            for o in outcomes
        ],
    }


# ---------------------------------------------------------------- per recipient


def _handle_recipient(
    session: Session, row: RawLike, reading: Reading, rcpt: str, ctx: IngestContext
) -> Outcome:
    shown = redact_address(rcpt)
    recipient = decode_recipient(rcpt, ctx.domain)
    kind = reading.classification.kind
    if recipient is None:
        return Outcome(shown, RawStatus.REJECTED, "unknown-recipient")
    if recipient.kind is AddressKind.BOUNCE:
        return _handle_bounce(session, row, reading, shown, recipient.value, ctx)
    if kind is not MailClass.POST:
        # Automatic mail is never posted and never answered (LOOP-01/02, BNC-04).
        reason = "bounce-to-posting-address" if kind is MailClass.BOUNCE else reading.reason
        facts: dict[str, Any] = {"class": str(kind)}
        if kind is MailClass.AUTO_REPLY and recipient.kind is AddressKind.REPLY:
            facts.update(_note_away(session, reading, recipient.value, ctx))
        return Outcome(shown, RawStatus.SUPPRESSED, reason, facts)
    if reading.sender is None:
        _notice(session, row, reading, ctx, row.mail_from, reading.mail_class, {})
        return Outcome(shown, RawStatus.REJECTED, reading.mail_class)
    person = _person_by_address(session, reading.sender.address)
    if recipient.kind is AddressKind.CONFIRM:
        return _handle_confirm(session, row, reading, ctx, shown, recipient.value, person)
    if recipient.kind is AddressKind.COMMAND:
        return _handle_request(session, row, reading, ctx, shown, recipient.value, person)
    if recipient.kind is AddressKind.DIGEST:
        return _handle_digest_reply(session, row, reading, ctx, shown, recipient.value, person)

    if reading.mail_class == "reject-empty":
        return _refuse(session, row, reading, ctx, shown, "empty-reply", {})
    if recipient.kind is AddressKind.ASK:
        return _ask(session, row, reading, ctx, shown, person, confirmed=False)
    token_discussion: Discussion | None = None
    if recipient.kind is AddressKind.REPLY:
        try:
            person_id, discussion_id = read_token(ctx.secrets, TokenKind.REPLY, recipient.value)
        except (TokenError, ValueError):
            return _refuse(session, row, reading, ctx, shown, "bad-reply-address", {})
        token_discussion = session.get(Discussion, discussion_id)
        if token_discussion is None:
            return _refuse(session, row, reading, ctx, shown, "bad-reply-address", {})
        if person is None or person.id != person_id:
            # SPOOF-06: a reply address works only for the member it was issued to.
            return _refuse(session, row, reading, ctx, shown, "reply-address-mismatch", {})
        ml = session.get(MailingList, token_discussion.list_id)
    else:
        ml = _list_by_slug(session, recipient.value)
    if ml is None:
        return Outcome(shown, RawStatus.REJECTED, "unknown-list")
    return _post(session, row, reading, ctx, shown, ml, person, token_discussion)


def _post(
    session: Session,
    row: RawLike,
    reading: Reading,
    ctx: IngestContext,
    shown: str,
    ml: MailingList,
    person: Person | None,
    token_discussion: Discussion | None,
    *,
    confirmed: bool = False,
    guard: bool = True,
) -> Outcome:
    """Decide and store a post. ``confirmed``: the sender proved the address (a
    confirmation, a moderator's release), which counts as authenticated; ``guard``: run
    the loop guard (a moderator's release skips it)."""
    facts: dict[str, Any] = {"list": ml.slug}
    if confirmed:
        facts["released"] = True
    if token_discussion is not None:
        question = questions.question_of_discussion(session, token_discussion.id)
        if question is not None:
            return _answer(
                session, row, reading, ctx, shown, ml, person, question, facts, guard=guard
            )
    list_facts = access.ListFacts.of(ml)
    viewer = viewer_of(session, ml, person)
    authenticated = confirmed
    if access.is_privileged(list_facts) and reading.sender is not None and not confirmed:
        auth = authenticate(
            reading.msg,
            row.raw,
            reading.sender,
            authserv_ids=ctx.authserv_ids,
            dnsfunc=ctx.dnsfunc,
            received_above=ctx.received_above,
            relays=ctx.authres_relays,
        )
        authenticated = auth.verdict is AuthVerdict.PASS
        facts["authentication"] = {"verdict": str(auth.verdict), "method": auth.method}
    decision = access.may_post(list_facts, viewer, authenticated=authenticated)
    facts["decision"] = decision.reason
    if decision.verdict is access.Verdict.REFUSE:
        return _refuse(session, row, reading, ctx, shown, decision.reason, facts)
    if decision.verdict is access.Verdict.HOLD:
        assert person is not None
        return _hold_for_confirmation(session, row, reading, ctx, shown, ml, person, facts)
    return store_post(
        session, row, reading, ctx, shown, ml, person, token_discussion, facts, guard=guard
    )


def store_post(
    session: Session,
    row: RawLike,
    reading: Reading,
    ctx: IngestContext,
    shown: str,
    ml: MailingList,
    person: Person | None,
    token_discussion: Discussion | None,
    facts: dict[str, Any],
    *,
    token_parent: int | None = None,
    guard: bool = True,
) -> Outcome:
    """Thread, deduplicate and store one post (also used to release a held post).

    ``token_parent`` is the post a reply through a reply address answers when the mail
    names none (default: the discussion's latest post; for a question, the question).
    ``guard``: hold what looks like a robot loop for the list owner (``mailgate.loops``)."""
    msg = reading.msg
    assert reading.body is not None
    key = message_key(msg.message_id, row.raw)
    wanted = referenced_ids(msg.in_reply_to, msg.references)[:50]
    # One query answers both "is this a duplicate?" and "which posts does it cite?".
    # Core statements on the session's connection: the ORM's bulk-insert and result
    # machinery cost more per post than the SQL itself (bench/ingest). Nothing here
    # needs the identity map.
    conn = session.connection()
    matches = conn.execute(
        _CITED_OR_SAME if wanted else _SAME, {"list_id": ml.id, "key": key, "wanted": wanted}
    ).all()
    existing = next((m.id for m in matches if m.message_key == key), None)
    if existing is not None:
        return Outcome(shown, RawStatus.PROCESSED, "duplicate", {**facts, "post": existing})
    known = {m.message_id: KnownPost(m.id, m.discussion_id) for m in matches}
    if token_discussion is not None and token_parent is None:
        token_parent = conn.scalar(
            select(_POSTS.c.id)
            .where(_POSTS.c.discussion_id == token_discussion.id)
            .order_by(_POSTS.c.id.desc())
            .limit(1)
        )
    choice = assign_thread(
        token_discussion_id=token_discussion.id if token_discussion else None,
        token_parent_post_id=token_parent,
        in_reply_to=msg.in_reply_to,
        references=msg.references,
        known=known,
    )
    facts["thread"] = choice.reason

    if reading.command is not None and choice.discussion_id is not None and person is not None:
        return _reply_command(session, shown, reading.command, choice, person, facts)
    if guard and person is not None:
        held = _hold_loop(session, row, reading, ctx, shown, ml, person, choice, facts)
        if held is not None:
            return held

    # Plain INSERT … RETURNING rather than ORM objects: the unit of work's bookkeeping
    # costs more per post than the statements (bench/ingest).
    now = ctx.now()
    if choice.discussion_id is None:
        discussion_id = conn.execute(
            _NEW_DISCUSSION,
            {
                "list_id": ml.id,
                "subject": _storable(base_subject(msg.subject, ml.slug))[:998],
                "started_by_id": person.id if person else None,
                "created_at": now,
                "last_post_at": now,
                "closed": False,
            },
        ).scalar_one()
    else:
        discussion_id = choice.discussion_id
        conn.execute(_TOUCH_DISCUSSION, {"discussion_id": discussion_id, "now": now})
    message_id = _storable(msg.message_id or f"mailgate.{row.id}.{key[:16]}@{ctx.domain}")
    # A concurrent worker storing the same Message-ID for this list makes this insert
    # raise IntegrityError; run_ingest then runs the message again and the duplicate
    # check above answers (DUR-02). Cheaper than a SAVEPOINT on every post.
    post_id = conn.execute(
        _NEW_POST,
        {
            "discussion_id": discussion_id,
            "list_id": ml.id,
            "author_id": person.id if person else None,
            "parent_id": choice.parent_post_id,
            "raw_id": row.id,
            "message_id": message_id[:998],
            "message_key": key,
            "subject": _storable(msg.subject)[:998],
            "text": _storable(reading.body.text),
            "elided": _storable(reading.body.elided),
            "created_at": now,
        },
    ).scalar_one()
    for attachment in reading.body.attachments:
        session.add(
            StoredAttachment(
                post_id=post_id,
                filename=attachment.filename,
                content_type=attachment.content_type[:255],
                size=attachment.size,
                sha256=attachment.sha256,
            )
        )
    # Hand the post to outbound through the transactional outbox (DUR-03).
    conn.execute(
        _NEW_OUTBOX,
        {
            "key": f"fanout:{post_id}",
            "task": "mailgate.fanout",
            "args": [post_id],
            "created_at": now,
        },
    )
    facts.update(post=post_id, discussion=discussion_id)
    if choice.discussion_id is not None:
        question = questions.question_of_discussion(session, discussion_id)
        if question is not None:
            facts["question"] = questions.on_post_stored(
                session,
                question,
                post_id=post_id,
                author=person,
                parent_id=choice.parent_post_id,
                text=reading.body.text,
                now=now,
            )
    return Outcome(shown, RawStatus.PROCESSED, "posted", facts)


def _hold_loop(
    session: Session,
    row: RawLike,
    reading: Reading,
    ctx: IngestContext,
    shown: str,
    ml: MailingList,
    person: Person,
    choice: ThreadChoice,
    facts: dict[str, Any],
) -> Outcome | None:
    """Hold a post that looks like a robot loop (``mailgate.loops``) and tell the list's
    owners; never the sender, who may be the robot. None: post it."""
    now = ctx.now()
    assert reading.body is not None
    text = _storable(reading.body.text)  # as store_post writes it: equal texts compare equal
    # Two counts over the author's last hour (ix_posts_author_created); no text travels.
    repeats, in_discussion = (
        session.connection()
        .execute(
            select(
                func.count().filter(
                    _POSTS.c.text == text, _POSTS.c.created_at >= now - REPEAT_WINDOW
                ),
                func.count().filter(_POSTS.c.discussion_id == choice.discussion_id),
            ).where(_POSTS.c.author_id == person.id, _POSTS.c.created_at >= now - RATE_WINDOW)
        )
        .one()
    )
    reason = loop_reason(text, repeats, in_discussion if choice.discussion_id else 0)
    if reason is None:
        return None
    owners = session.scalars(
        select(Person)
        .join(Membership, Membership.person_id == Person.id)
        .where(Membership.list_id == ml.id, Membership.role == Role.OWNER)
        .order_by(Person.id)
    ).all()
    details = {
        "held-repeated-text": "the same text from the same author again within minutes",
        "held-post-rate": "more posts by one author in one discussion within an hour than "
        "people write",
    }[reason]
    for owner in owners:
        _notice(
            session,
            row,
            reading,
            ctx,
            owner.primary_address,
            "held-for-moderation",
            {
                **_ctx(ml),
                "member": person.primary_address,
                "details": details,
                "command": f"mailgate inbound release {row.id}",
            },
            answers_sender=False,
        )
    log.info("raw %s: held for the owner of %s (%s)", row.id, ml.slug, reason)
    return Outcome(shown, RawStatus.HELD, reason, {**facts, "owners_told": len(owners)})


# ---------------------------------------------------------------- questions


def _answer(
    session: Session,
    row: RawLike,
    reading: Reading,
    ctx: IngestContext,
    shown: str,
    ml: MailingList,
    person: Person | None,
    question: Question,
    facts: dict[str, Any],
    *,
    guard: bool = True,
) -> Outcome:
    """A reply through someone's own reply address to a question: an answer (or a
    leader's reply); ``access.may_answer`` decides."""
    asked = person is not None and (
        session.scalar(
            select(Ask.id).where(Ask.question_id == question.id, Ask.person_id == person.id)
        )
        is not None
    )
    viewer = access.Viewer(person.id, person.active) if person else access.Viewer(None)
    facts_q = questions.question_facts(session, question, count_answers=False)
    decision = access.may_answer(facts_q, viewer, asked=asked)
    facts.update(decision=decision.reason, question_id=question.id)
    if decision.verdict is not access.Verdict.ALLOW:
        return _refuse(session, row, reading, ctx, shown, decision.reason, facts)
    discussion = session.get_one(Discussion, question.discussion_id)
    # An answer without In-Reply-To answers the question, not the latest answer.
    first = questions.first_post_id(session, discussion.id)
    return store_post(
        session,
        row,
        reading,
        ctx,
        shown,
        ml,
        person,
        discussion,
        facts,
        token_parent=first,
        guard=guard,
    )


def _note_away(
    session: Session, reading: Reading, token: str, ctx: IngestContext
) -> dict[str, Any]:
    """An out-of-office reply to a question (or any reply address) that names a return
    date pauses questions and reminders for that member until then.

    Only the reply address's owner can say they are away: a reply address is not a
    secret once it has been forwarded, and a stranger's "out of the office until June"
    would otherwise silence a member's questions (issue 12, item 10). The author (From)
    must be one of the owner's addresses."""
    from mailgate.asking import return_date
    from mailgate.bodies import extract_body

    try:
        person_id, _discussion_id = read_token(ctx.secrets, TokenKind.REPLY, token)
    except (TokenError, ValueError):
        return {}
    author = _person_by_address(session, reading.sender.address) if reading.sender else None
    if author is None or author.id != person_id:
        return {"away_ignored": "not-the-owner"}
    try:
        text = extract_body(reading.msg).text
    except Exception:  # noqa: BLE001 - a date is a bonus; suppression must still happen
        text = ""
    back = return_date(text, reading.msg.subject or "", ctx.now().date())
    if back is None:
        return {}
    questions.note_return_date(session, person_id, back)
    return {"away_until": back.isoformat()}


def _ask(
    session: Session,
    row: RawLike,
    reading: Reading,
    ctx: IngestContext,
    shown: str,
    person: Person | None,
    *,
    confirmed: bool,
) -> Outcome:
    """A question mailed to ask@: directives in its first lines, then the question.
    The sender must be allowed to ask (``access.may_ask``) and authenticated; a question
    we cannot authenticate waits for the asker's own confirmation (SPOOF-03), so a forged
    executive gets nothing sent."""
    from mailgate.asking import parse_ask_directives
    from mailgate.local_time import local_date

    if person is None:
        return _refuse(session, row, reading, ctx, shown, "unknown-sender", {})
    assert reading.body is not None
    now = ctx.now()
    directives = parse_ask_directives(reading.body.text, local_date(now, person.timezone))
    audience = directives.audience or questions.COMPANY
    facts: dict[str, Any] = {"audience": audience}
    if directives.errors:
        return _refuse(
            session,
            row,
            reading,
            ctx,
            shown,
            "ask-invalid",
            {**facts, "details": "\n".join(directives.errors)},
        )
    try:
        ml = questions.audience_list(session, audience, asker=person)
    except questions.QuestionError as exc:
        return _refuse(
            session, row, reading, ctx, shown, "ask-invalid", {**facts, "details": str(exc)}
        )
    if not access.may_ask(
        questions.viewer(session, ml, person), company_wide=audience == questions.COMPANY
    ):
        why = (
            "questions to the whole company come from people with the executive role, and "
            f"{person.primary_address} does not have it"
            if audience == questions.COMPANY
            else f"{person.primary_address} is not an owner of the list {ml.slug} (its "
            "owners may ask it; executives may ask anyone)"
        )
        return _refuse(
            session, row, reading, ctx, shown, "ask-not-allowed", {**facts, "details": why}
        )
    if not confirmed and reading.sender is not None:
        auth = authenticate(
            reading.msg,
            row.raw,
            reading.sender,
            authserv_ids=ctx.authserv_ids,
            dnsfunc=ctx.dnsfunc,
            received_above=ctx.received_above,
            relays=ctx.authres_relays,
        )
        facts["authentication"] = {"verdict": str(auth.verdict), "method": auth.method}
        if auth.verdict is not AuthVerdict.PASS:
            return _hold_for_confirmation(
                session, row, reading, ctx, shown, ml, person, facts, action="ask"
            )
    spec = questions.QuestionSpec(
        subject=reading.msg.subject or "",
        text=directives.text,
        audience=audience,
        deadline=(
            questions.end_of_day(directives.deadline, person.timezone)
            if directives.deadline
            else None
        ),
        visibility=AnswerVisibility(directives.visibility or "open"),
        anonymous=bool(directives.anonymous),
        viewers=directives.viewers,
        max_reminders=(
            directives.reminders
            if directives.reminders is not None
            else questions.DEFAULT_REMINDERS
        ),
    )
    try:
        question = questions.create_question(
            session,
            asker=person,
            spec=spec,
            now=now,
            domain=ctx.domain,
            message_id=reading.msg.message_id,
            raw_id=row.id,
        )
    except questions.QuestionError as exc:
        return _refuse(
            session, row, reading, ctx, shown, "ask-invalid", {**facts, "details": str(exc)}
        )
    asked = session.scalar(select(func.count()).where(Ask.question_id == question.id)) or 0
    _notice(
        session,
        row,
        reading,
        ctx,
        person.primary_address,
        "ask-accepted",
        {**_ctx(ml), "details": f"{asked}"},
        force=True,
    )
    facts.update(question=question.id, asked=asked)
    return Outcome(shown, RawStatus.PROCESSED, "question-created", facts)


def _reply_command(
    session: Session,
    shown: str,
    command: str,
    choice: Any,
    person: Person,
    facts: dict[str, Any],
) -> Outcome:
    facts["command"] = command
    if command == "like":
        target = choice.parent_post_id or session.scalar(
            select(Post.id).where(Post.discussion_id == choice.discussion_id).order_by(Post.id)
        )
        if target is not None and not questions.may_see(session, target, person.id):
            # In-Reply-To can name any Message-ID: a like is a way of seeing the post
            # (its follow-ups reach the likers), so it takes the same decision. No
            # notice: saying "you may not see that" would confirm that it exists.
            facts["discussion"] = choice.discussion_id
            return Outcome(shown, RawStatus.REJECTED, "like-not-visible", facts)
        _add_like(session, target, person.id)
        facts["liked_post"] = target
    elif command == "mute":
        if (
            session.scalar(
                select(Mute.id).where(
                    Mute.discussion_id == choice.discussion_id, Mute.person_id == person.id
                )
            )
            is None
        ):
            session.add(Mute(discussion_id=choice.discussion_id, person_id=person.id))
    else:  # unmute
        mute = session.scalar(
            select(Mute).where(
                Mute.discussion_id == choice.discussion_id, Mute.person_id == person.id
            )
        )
        if mute is not None:
            session.delete(mute)
    facts["discussion"] = choice.discussion_id
    return Outcome(shown, RawStatus.PROCESSED, f"command-{command}", facts)


def _add_like(session: Session, post_id: int | None, person_id: int) -> None:
    if post_id is None:
        return
    if (
        session.scalar(select(Like.id).where(Like.post_id == post_id, Like.person_id == person_id))
        is None
    ):
        session.add(Like(post_id=post_id, person_id=person_id))


def _handle_bounce(
    session: Session,
    row: RawLike,
    reading: Reading,
    shown: str,
    token: str,
    ctx: IngestContext,
) -> Outcome:
    """Mail to a VERP address: score the member's bounce (BNC-01..03); never answer it.

    The VERP token names the delivery, so a bounce whose report no parser can read still
    identifies the member; it then counts as a soft failure.
    """
    bounced = reading.classification.bounced
    facts: dict[str, Any] = {
        "bounces": [
            {"address": b.address, "permanent": b.permanent, "status": b.status} for b in bounced
        ]
    }
    if reading.classification.kind is not MailClass.BOUNCE:
        # A vacation notice or a person writing to our envelope sender: not a failure.
        return Outcome(shown, RawStatus.SUPPRESSED, reading.reason, facts)
    if _success_report(reading):
        # "delivered"/"relayed"/"expanded" (RFC 3464 §2.3.3): the copy arrived. The
        # report's Action fields win over free-text fallbacks, which read "250 2.0.0" as a
        # failure.
        return Outcome(shown, RawStatus.SUPPRESSED, "delivery-report", facts)
    try:
        (delivery_id,) = read_token(ctx.secrets, TokenKind.BOUNCE, token)
    except (TokenError, ValueError):
        return Outcome(shown, RawStatus.SUPPRESSED, "bad-bounce-token", facts)
    from mailgate.bounces import record_bounce

    # Delay notices (4.x.x) count as soft bounces: their weight is small and they decay.
    facts.update(
        record_bounce(
            session,
            delivery_id,
            permanent=any(b.permanent for b in bounced),
            diagnostic=next((b.diagnostic for b in bounced if b.diagnostic), ""),
            now=ctx.now(),
            raw_id=row.id,
        )
    )
    return Outcome(shown, RawStatus.SUPPRESSED, "bounce", facts)


_SUCCESS_ACTIONS = frozenset({"delivered", "relayed", "expanded"})


def _success_report(reading: Reading) -> bool:
    """A delivery-status report whose every per-recipient Action is a success.

    A report without readable Action fields is not one, so a bounce nobody can read still
    counts (as soft); a success notice (NOTIFY=SUCCESS, or a relay's "relayed") never does.
    """
    actions: set[str] = set()
    for part in reading.msg.message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        for block in blocks if isinstance(blocks, list) else ():
            action = block.get("action") if hasattr(block, "get") else None
            if action:
                actions.add(str(action).strip().lower().split(" ", 1)[0])
    return bool(actions) and actions <= _SUCCESS_ACTIONS


# ---------------------------------------------------------------- replies to a digest

_DIGEST_COMMAND_RE = re.compile(
    r"^\s*(?:(\+1|mute|follow|unmute|unfollow)\s+#?(\d{1,3})|(every|digest)\s+([a-z0-9._-]{1,64}))"
    r"\s*[.!]?\s*$",
    re.IGNORECASE,
)


def _wants_unsubscribe(reading: Reading) -> bool:
    words = [reading.msg.subject, *(reading.body.text.splitlines() if reading.body else [])]
    return any(w.strip().lower().rstrip(".!") == "unsubscribe" for w in words if w.strip())


def digest_commands(text: str) -> list[tuple[str, str]]:
    """``+1 3`` / ``mute 2`` / ``follow 5`` / ``every eng`` / ``digest eng``, one per line."""
    commands = []
    for line in text.splitlines():
        match = _DIGEST_COMMAND_RE.match(line)
        if match:
            verb = (match.group(1) or match.group(3)).lower()
            commands.append((verb, match.group(2) or match.group(4).lower()))
    return commands


def _handle_digest_reply(
    session: Session,
    row: RawLike,
    reading: Reading,
    ctx: IngestContext,
    shown: str,
    token: str,
    person: Person | None,
) -> Outcome:
    """A reply to a digest: commands that name items by number; anything else gets a
    notice explaining how to reply to an item (THR-04: never a post)."""
    from mailgate.models import Digest, Follow

    try:
        person_id, digest_id = read_token(ctx.secrets, TokenKind.DIGEST, token)
    except (TokenError, ValueError):
        return _refuse(session, row, reading, ctx, shown, "bad-reply-address", {})
    if person is None or person.id != person_id:
        return _refuse(session, row, reading, ctx, shown, "reply-address-mismatch", {})
    digest = session.get(Digest, digest_id)
    items = list(digest.items) if digest is not None else []
    assert reading.body is not None
    done: list[str] = []
    if _wants_unsubscribe(reading):
        # The digest's List-Unsubscribe mailto; its https one-click link does the same.
        stop_digests(session, person)
        done.append("unsubscribe")
    for verb, arg in digest_commands(reading.body.text):
        if verb in ("every", "digest"):
            ml = _list_by_slug(session, arg)
            membership = (
                session.scalar(
                    select(Membership).where(
                        Membership.list_id == ml.id, Membership.person_id == person.id
                    )
                )
                if ml is not None
                else None
            )
            if ml is None or membership is None:
                continue
            apply_membership_command(session, ml, person, verb)
            done.append(f"{verb} {arg}")
            continue
        number = int(arg)
        if not 1 <= number <= len(items):
            continue
        discussion_id = items[number - 1]
        if verb == "+1":
            # The latest post by someone else that this member may see: in a question's
            # discussion that is not always the latest post (an asker-only answer).
            recent = session.scalars(
                select(Post.id)
                .where(Post.discussion_id == discussion_id, Post.author_id != person.id)
                .order_by(Post.id.desc())
                .limit(50)
            ).all()
            latest = next(
                (pid for pid in recent if questions.may_see(session, pid, person.id)), None
            )
            _add_like(session, latest, person.id)
        else:
            model = Mute if verb in ("mute", "unmute") else Follow
            existing = session.scalar(
                select(model).where(
                    model.discussion_id == discussion_id, model.person_id == person.id
                )
            )
            if verb in ("mute", "follow") and existing is None:
                session.add(model(discussion_id=discussion_id, person_id=person.id))
            elif verb in ("unmute", "unfollow") and existing is not None:
                session.delete(existing)
        done.append(f"{verb} {number}")
    if not done:
        _notice(
            session,
            row,
            reading,
            ctx,
            reading.sender.address if reading.sender else "",
            "digest-reply-help",
            {},
        )
        return Outcome(shown, RawStatus.REJECTED, "digest-reply-not-understood", {})
    return Outcome(shown, RawStatus.PROCESSED, "digest-commands", {"commands": done})


# ---------------------------------------------------------------- -request@ commands


def _request_command(reading: Reading) -> str | None:
    assert reading.body is not None
    for line in [*reading.body.text.splitlines(), reading.msg.subject]:
        word = line.strip().lower().split(" ", 1)[0] if line.strip() else ""
        if word:
            return word if word in REQUEST_COMMANDS else None
    return None


def _handle_request(
    session: Session,
    row: RawLike,
    reading: Reading,
    ctx: IngestContext,
    shown: str,
    slug: str,
    person: Person | None,
) -> Outcome:
    assert reading.sender is not None
    ml = _list_by_slug(session, slug)
    if ml is None:
        return Outcome(shown, RawStatus.REJECTED, "unknown-list")
    command = _request_command(reading)
    facts: dict[str, Any] = {"list": ml.slug, "command": command}
    if command is None:
        return _refuse(session, row, reading, ctx, shown, "unknown-command", facts, ml)
    if command == "help":
        _notice(session, row, reading, ctx, reading.sender.address, "command-help", _ctx(ml))
        return Outcome(shown, RawStatus.PROCESSED, "command-help", facts)
    viewer = viewer_of(session, ml, person)
    if command == "subscribe":
        if viewer.is_member:
            return _refuse(session, row, reading, ctx, shown, "already-member", facts, ml)
        if not access.may_subscribe(access.ListFacts.of(ml), viewer):
            return _refuse(session, row, reading, ctx, shown, "subscribe-not-allowed", facts, ml)
    elif not viewer.is_member:
        return _refuse(session, row, reading, ctx, shown, "not-a-member", facts, ml)
    assert person is not None
    # LIST-07: the change waits for an answer from the address of record, so a forged
    # From cannot change someone else's membership.
    pending = PendingAction(
        action=command, address=person.primary_address, list_id=ml.id, raw_id=row.id
    )
    session.add(pending)
    session.flush()
    token = _confirm_token(ctx, pending.id)
    _notice(
        session,
        row,
        reading,
        ctx,
        person.primary_address,
        "confirm-command",
        {**_ctx(ml), "command": command, "confirm_token": token},
        force=True,
    )
    return Outcome(shown, RawStatus.HELD, "awaiting-confirmation", {**facts, "pending": pending.id})


def _confirm_token(ctx: IngestContext, pending_id: int) -> str:
    from mailgate.tokens import make_token

    return make_token(ctx.secrets[0], TokenKind.CONFIRM, pending_id)


def _handle_confirm(
    session: Session,
    row: RawLike,
    reading: Reading,
    ctx: IngestContext,
    shown: str,
    token: str,
    person: Person | None,
) -> Outcome:
    try:
        (pending_id,) = read_token(ctx.secrets, TokenKind.CONFIRM, token)
    except (TokenError, ValueError):
        return _refuse(session, row, reading, ctx, shown, "bad-confirmation", {})
    pending = session.get(PendingAction, pending_id, with_for_update=True)
    if pending is None or pending.done_at is not None:
        return Outcome(shown, RawStatus.PROCESSED, "already-confirmed", {"pending": pending_id})
    if person is None or pending.address not in {a.email for a in person.addresses}:
        return _refuse(session, row, reading, ctx, shown, "confirmation-mismatch", {})
    ml = session.get_one(MailingList, pending.list_id)
    pending.done_at = ctx.now()
    facts: dict[str, Any] = {"list": ml.slug, "action": pending.action, "pending": pending.id}
    if pending.action in ("post", "ask"):
        return _release_held(session, pending, ctx, shown, facts)
    # Queued before the change: whether they may know the list (a hidden one they are
    # leaving) is decided on the membership they had when they asked.
    _notice(
        session,
        row,
        reading,
        ctx,
        pending.address,
        "command-done",
        {**_ctx(ml), "command": pending.action},
        force=True,
    )
    apply_membership_command(session, ml, person, pending.action)
    _settle_held_command(session, pending, row.id)
    return Outcome(shown, RawStatus.PROCESSED, f"confirmed-{pending.action}", facts)


def _settle_held_command(session: Session, pending: PendingAction, confirmed_by: int) -> None:
    """The command mail held for this confirmation is done: processed, "confirmed-<action>"
    (issue 17: it stayed "held / awaiting-confirmation" in ``inbound list`` for ever)."""
    held = session.get(RawMessage, pending.raw_id, with_for_update=True) if pending.raw_id else None
    if held is None or held.status is not RawStatus.HELD:
        return
    held.status = RawStatus.PROCESSED
    held.reason = f"confirmed-{pending.action}"
    held.explanation = {
        **(held.explanation or {}),
        "confirmed": {"pending": pending.id, "by_raw": confirmed_by, "action": pending.action},
    }


def apply_membership_command(
    session: Session, ml: MailingList, person: Person, action: str
) -> None:
    _memo(session).clear()  # memberships change: cached viewers are stale
    membership = session.scalar(
        select(Membership).where(Membership.list_id == ml.id, Membership.person_id == person.id)
    )
    actor = f"mail:{person.primary_address}"
    from mailgate.directory import membership_snapshot, record

    target = f"list:{ml.slug}/{person.primary_address}"
    if action == "subscribe":
        if membership is None:
            membership = Membership(list_id=ml.id, person_id=person.id)
            session.add(membership)
            session.flush()
            record(session, actor, "member.add", target, None, membership_snapshot(membership))
        return
    if membership is None:
        return
    before = membership_snapshot(membership)
    if action == "unsubscribe" and not ml.mandatory:
        record(session, actor, "member.remove", target, before, None)
        session.delete(membership)
        return
    # Decision 4: leaving a mandatory list switches to digest-only, never to silence.
    membership.delivery = {
        "unsubscribe": Delivery.DIGEST,
        "digest": Delivery.DIGEST,
        "every": Delivery.EVERY,
        "nomail": Delivery.DIGEST if ml.mandatory else Delivery.NONE,
    }[action]
    record(session, actor, "member.set", target, before, membership_snapshot(membership))


@dataclass(frozen=True)
class DigestStop:
    """What stopping a member's digest does: the lists whose digest stops and those that
    stay in it because everyone must be on them (Decision 4), as display names in slug
    order, and whether the daily summary was on."""

    stopped: tuple[str, ...]
    kept: tuple[str, ...]
    summary: bool

    @property
    def changes(self) -> bool:
        return bool(self.stopped) or self.summary


def stop_digests(session: Session, person: Person, *, dry_run: bool = False) -> DigestStop:
    """Stop ``person``'s digest: each digest list that may be silenced goes to no mail and
    the daily summary is switched off; mandatory lists stay. The one service behind the
    digest's mailto ``unsubscribe`` and its one-click link (whose confirmation page asks
    with ``dry_run``, which changes nothing)."""
    lists = session.scalars(
        select(MailingList)
        .join(Membership, Membership.list_id == MailingList.id)
        .where(Membership.person_id == person.id, Membership.delivery == Delivery.DIGEST)
        .order_by(MailingList.slug)
    ).all()
    plan = DigestStop(
        stopped=tuple(ml.name or ml.slug for ml in lists if not ml.mandatory),
        kept=tuple(ml.name or ml.slug for ml in lists if ml.mandatory),
        summary=bool(person.daily_summary),
    )
    if not dry_run:
        for ml in lists:
            if not ml.mandatory:
                apply_membership_command(session, ml, person, "nomail")
        person.daily_summary = False
    return plan


def _hold_for_confirmation(
    session: Session,
    row: RawLike,
    reading: Reading,
    ctx: IngestContext,
    shown: str,
    ml: MailingList,
    person: Person,
    facts: dict[str, Any],
    *,
    action: str = "post",
) -> Outcome:
    """SPOOF-03: a privileged post without proof of origin waits for the author's own
    confirmation, mailed to their address of record (never to Reply-To or From)."""
    pending = PendingAction(
        action=action, address=person.primary_address, list_id=ml.id, raw_id=row.id
    )
    session.add(pending)
    session.flush()
    _notice(
        session,
        row,
        reading,
        ctx,
        person.primary_address,
        "held-for-authentication",
        {**_ctx(ml), "confirm_token": _confirm_token(ctx, pending.id)},
        force=True,
    )
    return Outcome(
        shown, RawStatus.HELD, "held-for-authentication", {**facts, "pending": pending.id}
    )


def _release_held(
    session: Session, pending: PendingAction, ctx: IngestContext, shown: str, facts: dict[str, Any]
) -> Outcome:
    held = session.get(RawMessage, pending.raw_id, with_for_update=True) if pending.raw_id else None
    if held is None or held.status is not RawStatus.HELD:
        return Outcome(shown, RawStatus.PROCESSED, "already-released", facts)
    outcome = release_post(session, held, ctx)
    return Outcome(shown, RawStatus.PROCESSED, f"released-{outcome.reason}", facts)


def release_post(session: Session, held: RawMessage, ctx: IngestContext) -> Outcome:
    """Post a held message now (after confirmation or by a moderator's release).

    A confirmation (or a moderator) proves that the sender owns the address — nothing
    more. So each recipient is decided again, now, exactly as a fresh post from an
    authenticated sender would be (``_post`` with ``confirmed``): a message held for
    ``all@`` and also addressed to a hidden list or an announce-only list the sender may
    not post to reaches only ``all@`` (issue 12, item 2). The loop guard is not run again:
    releasing what it held is the moderator's decision.
    """
    reading = read_message(held.raw, mail_from=held.mail_from, ours=ctx.ours)
    person = _person_by_address(session, reading.sender.address) if reading.sender else None
    outcomes: list[Outcome] = []
    for rcpt in held.rcpt_to:
        recipient = decode_recipient(rcpt, ctx.domain)
        shown = redact_address(rcpt)
        if recipient is None or reading.body is None:
            continue
        if recipient.kind is AddressKind.ASK:
            outcomes.append(_ask(session, held, reading, ctx, shown, person, confirmed=True))
            continue
        token_discussion: Discussion | None = None
        if recipient.kind is AddressKind.LIST:
            ml = _list_by_slug(session, recipient.value)
        elif recipient.kind is AddressKind.REPLY:
            try:
                owner, discussion_id = read_token(ctx.secrets, TokenKind.REPLY, recipient.value)
            except (TokenError, ValueError):
                continue
            token_discussion = session.get(Discussion, discussion_id)
            if token_discussion is None or person is None or person.id != owner:
                continue
            ml = session.get(MailingList, token_discussion.list_id)
        else:
            continue
        if ml is None:
            continue
        outcomes.append(
            _post(
                session,
                held,
                reading,
                ctx,
                shown,
                ml,
                person,
                token_discussion,
                confirmed=True,
                guard=False,
            )
        )
    outcome = (
        min(outcomes, key=lambda o: _RANK[o.status])
        if outcomes
        else Outcome("", RawStatus.REJECTED, "not-a-post")
    )
    held.status = outcome.status
    held.reason = outcome.reason
    held.explanation = {
        **(held.explanation or {}),
        "released": [
            {"recipient": o.recipient, "status": str(o.status), "reason": o.reason, **o.facts}
            for o in outcomes
        ],
    }
    return outcome


# ---------------------------------------------------------------- refusals and notices


def _ctx(ml: MailingList) -> dict[str, Any]:
    return {"list_slug": ml.slug, "list_name": ml.name, "mandatory": ml.mandatory}


def _refuse(
    session: Session,
    row: RawLike,
    reading: Reading,
    ctx: IngestContext,
    shown: str,
    reason: str,
    facts: dict[str, Any],
    ml: MailingList | None = None,
) -> Outcome:
    """Refuse the mail for ``reason`` and tell the sender. ``facts["details"]``, when
    given, is the reason in words: it goes into the notice as well as the outcome, so a
    notice that says "because" always says what (issue 17)."""
    if ml is None and "list" in facts:
        ml = _list_by_slug(session, facts["list"])
    context = _ctx(ml) if ml is not None else {}
    if facts.get("details"):
        context["details"] = str(facts["details"])
    to = reading.sender.address if reading.sender else row.mail_from
    if ml is not None and reason in JOIN_ADVICE_REASONS:
        context.update(_join_advice(session, ml, to))
    _notice(session, row, reading, ctx, to, reason, context)
    return Outcome(shown, RawStatus.REJECTED, reason, facts)


JOIN_ADVICE_REASONS = frozenset({"not-a-member", "subscribe-not-allowed"})


def _join_advice(session: Session, ml: MailingList, address: str) -> dict[str, Any]:
    """How the addressee of a notice can join ``ml``: "subscribe" only when the -request
    handler would accept it (``access.may_subscribe``, the same decision); otherwise
    whom to ask — the list's owners, or the admins when it has none (issue 17)."""
    person = _person_by_address(session, address)
    if access.may_subscribe(access.ListFacts.of(ml), viewer_of(session, ml, person)):
        return {"may_subscribe": True, "owners": ""}
    primary = Address.is_primary.is_(True)
    owners = session.scalars(
        select(Address.email)
        .join(Membership, (Membership.person_id == Address.person_id) & primary)
        .where(Membership.list_id == ml.id, Membership.role == Role.OWNER)
        .order_by(Address.email)
    ).all()
    if not owners:
        owners = session.scalars(
            select(Address.email)
            .join(PersonRole, (PersonRole.person_id == Address.person_id) & primary)
            .where(PersonRole.role == SiteRole.ADMIN)
            .order_by(Address.email)
        ).all()
    return {"may_subscribe": False, "owners": ", ".join(owners)}


def _notice(
    session: Session,
    row: RawLike,
    reading: Reading,
    ctx: IngestContext,
    to: str,
    reason: str,
    context: dict[str, Any],
    *,
    force: bool = False,
    answers_sender: bool = True,
) -> None:
    """Queue one explanatory notice, unless the mail was automatic or the address has
    had this reason today (or ``MAX_NOTICES_PER_DAY`` notices of any kind).

    ``answers_sender=False`` marks a notice about the mail to someone else (a list
    owner): the automatic-mail rule, which keeps two robots from answering each other,
    does not apply to it; the daily limits do.

    ``force`` skips the per-day limits for confirmations, which a member asked for, but
    never the automatic-mail rule.

    Every notice passes here, so this is where a hidden list stays hidden: a notice that
    names a list its addressee may not know exists is not queued, which is exactly what
    an unknown list gets (``access.may_know_exists``; issue 12, item 6).
    """
    address = (to or "").strip().lower()
    if not address or (answers_sender and (reading.automatic or row.mail_from == "")):
        return
    if not _may_know_named_list(session, address, context):
        log.info("raw %s: no %s notice, the list is hidden from its addressee", row.id, reason)
        return
    day = ctx.now().date().isoformat()
    if not force:
        if (
            session.scalar(
                select(Notice.id).where(
                    Notice.address == address, Notice.reason == reason, Notice.day == day
                )
            )
            is not None
        ):
            return
        today = session.scalar(
            select(func.count()).where(Notice.address == address, Notice.day == day)
        )
        if (today or 0) >= MAX_NOTICES_PER_DAY:
            return
    notice = Notice(
        address=address,
        reason=reason,
        # Confirmations are exempt from the daily key; the raw id keeps them unique.
        day=f"{day}#{row.id}" if force else day,
        raw_id=row.id,
        context={
            **context,
            "subject": reading.msg.subject[:200],
            "message_id": reading.msg.message_id or "",
        },
    )
    try:
        with session.begin_nested():
            session.add(notice)
            session.flush()
    except IntegrityError:
        return  # a concurrent worker queued the same notice
    session.add(
        OutboxEntry(key=f"notice:{notice.id}", task="mailgate.send_notice", args=[notice.id])
    )


def _may_know_named_list(session: Session, address: str, context: dict[str, Any]) -> bool:
    """Whether the person at ``address`` may know the list a notice context names (one
    that names none: yes)."""
    slug = context.get("list_slug")
    if not slug:
        return True
    ml = _list_by_slug(session, slug)
    if ml is None:
        return False  # gone since: say nothing about it, as for any unknown list
    person = _person_by_address(session, address)
    return access.may_know_exists(access.ListFacts.of(ml), viewer_of(session, ml, person))


# ---------------------------------------------------------------- directory facts


def _memo(session: Session) -> dict[tuple[str, str], Any]:
    # Lookups repeat across the messages of one batch (same list, same few senders);
    # the session lives for one transaction, so its info dict is a safe cache.
    memo: dict[tuple[str, str], Any] = session.info.setdefault("mailgate.lookups", {})
    return memo


def _person_by_address(session: Session, address: str) -> Person | None:
    key = ("person", address.strip().lower())
    memo = _memo(session)
    if key not in memo:
        memo[key] = session.scalar(select(Person).join(Address).where(Address.email == key[1]))
    return memo[key]


def _list_by_slug(session: Session, slug: str) -> MailingList | None:
    key = ("list", slug)
    memo = _memo(session)
    if key not in memo:
        memo[key] = session.scalar(select(MailingList).where(MailingList.slug == slug))
    return memo[key]


def viewer_of(session: Session, ml: MailingList, person: Person | None) -> access.Viewer:
    """The person as access control sees them for ``ml``: one query."""
    if person is None:
        return access.Viewer(person_id=None)
    key = ("viewer", f"{ml.id}:{person.id}")
    memo = _memo(session)
    if key in memo:
        return memo[key]
    row = session.execute(
        select(Membership.role, AllowedPoster.id)
        .select_from(Person)
        .outerjoin(Membership, (Membership.person_id == Person.id) & (Membership.list_id == ml.id))
        .outerjoin(
            AllowedPoster,
            (AllowedPoster.person_id == Person.id) & (AllowedPoster.list_id == ml.id),
        )
        .where(Person.id == person.id)
    ).first()
    role, allowed = row if row is not None else (None, None)
    viewer = access.Viewer(
        person_id=person.id,
        active=person.active,
        role=Role(role) if role is not None else None,
        allowed_poster=allowed is not None,
    )
    memo[key] = viewer
    return viewer


# ---------------------------------------------------------------- the task's service

MAX_ATTEMPTS = 3  # then the message is parked as failed (LIM-06; Mailman uses 3 too)


def run_ingest(factory: Any, raw_id: int, ctx: IngestContext) -> RawStatus:
    """Process one raw message with a crash-loop guard.

    The attempt is counted in its own committed transaction first, so a worker that dies
    mid-message (OOM, SIGKILL, ``os._exit``) still counts it; after ``MAX_ATTEMPTS`` the
    message is parked as ``failed`` with its bytes kept for ``mailgate inbound replay``.
    Database outages (``OperationalError``) are not counted: they are re-raised for the
    task to retry with backoff.
    """
    from sqlalchemy.exc import OperationalError

    from mailgate.db import unit_of_work

    with unit_of_work(factory) as session:
        attempts = session.scalar(
            update(RawMessage)
            .where(RawMessage.id == raw_id, RawMessage.status == RawStatus.RECEIVED)
            .values(attempts=RawMessage.attempts + 1)
            .returning(RawMessage.attempts)
        )
        if attempts is None:
            status = session.scalar(select(RawMessage.status).where(RawMessage.id == raw_id))
            if status is None:
                raise LookupError(f"raw message {raw_id} does not exist")
            return RawStatus(status)
        if attempts > MAX_ATTEMPTS:
            session.execute(
                update(RawMessage)
                .where(RawMessage.id == raw_id)
                .values(status=RawStatus.FAILED, reason="too-many-attempts")
            )
            return RawStatus.FAILED
    try:
        try:
            with unit_of_work(factory) as session:
                return process_raw(session, raw_id, ctx)
        except IntegrityError:
            # Lost a race with another worker on a unique key (post, notice): run the
            # message again; this time the duplicate checks see the winner's rows.
            with unit_of_work(factory) as session:
                return process_raw(session, raw_id, ctx)
    except OperationalError:
        raise
    except Exception as exc:
        log.exception("ingest of raw %s failed (attempt %d)", raw_id, attempts)
        if attempts < MAX_ATTEMPTS:
            raise
        with unit_of_work(factory) as session:
            row = session.get_one(RawMessage, raw_id, with_for_update=True)
            if row.status is RawStatus.RECEIVED:
                row.status, row.reason = RawStatus.FAILED, f"crash:{type(exc).__name__}"
        return RawStatus.FAILED


def run_ingest_batch(factory: Any, raw_ids: list[int], ctx: IngestContext) -> None:
    """Process several raw messages in one transaction (what the gateway's group commit
    hands over); fall back to one transaction per message if anything goes wrong, so a
    poison message only ever fails alone.
    """
    from sqlalchemy.exc import OperationalError

    from mailgate.db import unit_of_work

    if len(raw_ids) == 1:
        run_ingest(factory, raw_ids[0], ctx)
        return
    try:
        with unit_of_work(factory) as session:
            counted = dict(
                session.execute(
                    update(RawMessage)
                    .where(RawMessage.id.in_(raw_ids), RawMessage.status == RawStatus.RECEIVED)
                    .values(attempts=RawMessage.attempts + 1)
                    .returning(RawMessage.id, RawMessage.attempts)
                ).all()
            )
        if any(attempts > 1 for attempts in counted.values()):
            raise _SingleFile  # a redelivery: some message may be a poison pill
        with unit_of_work(factory) as session:
            rows = {
                r.id: r
                for r in session.execute(
                    select(*_RAW_COLUMNS).where(RawMessage.id.in_(list(counted))).with_for_update()
                )
            }
            results: list[dict[str, Any]] = []
            for raw_id in raw_ids:
                if raw_id in rows:
                    process_raw(session, raw_id, ctx, row=rows[raw_id], results=results)
            if results:
                session.execute(update(RawMessage), results)  # one executemany by id
    except OperationalError:
        raise
    except Exception as exc:  # noqa: BLE001 - retried one by one below
        if not isinstance(exc, _SingleFile):
            log.warning("batch of %d failed (%s); one by one", len(raw_ids), type(exc).__name__)
        for raw_id in raw_ids:
            try:
                run_ingest(factory, raw_id, ctx)
            except OperationalError:
                raise
            except Exception:
                log.exception("ingest of raw %s failed", raw_id)


class _SingleFile(Exception):
    """Internal: process this batch one message per transaction."""
