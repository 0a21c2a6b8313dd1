"""Question scheduler and mail: asks on time, reminders, summaries, follow-ups.

Input: a session and ``now`` (the scheduler tick, injected). Output: ``question_mails``
rows — one per (kind, question, person[, n]), unique, so a tick can run twice or
concurrently without mailing anyone twice — and, in :func:`send_question_mails`, those
rows sent through the relay port and marked.

One tick, in order:
1. recurring prompts due this week get their run (``digests.prompts``);
2. asks whose local time has come are queued (or postponed while the member is away);
3. members who have not answered get a reminder every ``REMINDER_EVERY`` in their working
   hours, at most the question's ``max_reminders`` — none once they answered or while an
   out-of-office reply says they are away;
4. questions past their deadline close and their "what we heard" summary is queued for
   everyone ``access.answer_view`` lets see answers (and the asker always, counts only if
   the answers may not be shown yet);
5. "don't know yet" promises due today remind whoever made them.

Who sees what in each mail is decided when it is composed, by ``mailgate.access``.
"""

from __future__ import annotations

import email.utils
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from digests.prompts import run_due_prompts
from digests.summary import AnswerFacts, Summary, summarise
from mailgate import access, questions
from mailgate.addressing import reply_address
from mailgate.db import read_only, unit_of_work
from mailgate.headers import named_address, new_message, thread_fields
from mailgate.local_time import local_date, next_sensible_time
from mailgate.models import (
    Ask,
    Discussion,
    Followup,
    MailingList,
    Person,
    Post,
    Question,
    QuestionKind,
    QuestionMail,
    utcnow,
)
from mailgate.notices import template_env
from mailgate.relay import Relay, TransientRelayError
from mailgate.tokens import TokenKind, make_token

log = logging.getLogger("mailgate.questions")

REMINDER_EVERY = timedelta(days=2)
SEND_TASK = "mailgate.send_question_mails"
BATCH = 100
LEASE = timedelta(minutes=5)
MAX_ATTEMPTS = 8


# ---------------------------------------------------------------- the tick


def tick(session: Session, now: datetime, domain: str) -> dict[str, int]:
    """One scheduler step; returns counts of what it queued (for logs and tests)."""
    counts = {"prompts": run_due_prompts(session, now, domain)}
    counts["asks"] = _queue_due_asks(session, now)
    counts["reminders"] = _queue_reminders(session, now)
    counts["summaries"] = _close_due_questions(session, now)
    counts["followups"] = _queue_due_followups(session, now)
    return counts


FRESH = timedelta(seconds=90)  # queued by this tick or the last: publish now
LOST = timedelta(minutes=10)  # never claimed: the broker lost the task; publish again


def pending_mail_ids(session: Session, now: datetime, limit: int = 50_000) -> list[int]:
    """Mails to hand to send tasks: fresh ones, ones whose claim lapsed (a worker died,
    or a retry's backoff is over) and ones a broker lost. Mails merely waiting in the
    queue are left alone, so a backlog is not published again every minute."""
    unclaimed = QuestionMail.lease_until.is_(None)
    return list(
        session.scalars(
            select(QuestionMail.id)
            .where(
                QuestionMail.status == "pending",
                or_(
                    unclaimed & (QuestionMail.created_at >= now - FRESH),
                    unclaimed & (QuestionMail.created_at <= now - LOST),
                    QuestionMail.lease_until < now,
                ),
            )
            .order_by(QuestionMail.id)
            .limit(limit)
        )
    )


def _queue_due_asks(session: Session, now: datetime) -> int:
    rows = session.execute(
        select(Ask, Person.timezone, Person.away_until, Question.deadline)
        .join(Person, Person.id == Ask.person_id)
        .join(Question, Question.id == Ask.question_id)
        .where(
            Ask.sent_at.is_(None),
            Ask.skipped == "",
            Ask.due_at <= now,
            Question.closed_at.is_(None),
        )
        .order_by(Ask.id)
        .limit(20_000)
    ).all()
    queued: dict[int, list[int]] = {}
    for ask, tz, away_until, deadline in rows:
        back = questions.is_away(away_until, tz, now)
        if back is not None:
            later = questions.back_at(tz, back)
            if deadline is not None and later >= deadline:
                ask.skipped = "away"
            else:
                ask.due_at = later
            continue
        ask.sent_at = now
        queued.setdefault(ask.question_id, []).append(ask.person_id)
    for question_id, people in queued.items():
        questions.queue_mail(
            session,
            key=f"ask:{question_id}",
            kind="ask",
            question_id=question_id,
            person_ids=people,
            now=now,
        )
    return sum(len(p) for p in queued.values())


def _queue_reminders(session: Session, now: datetime) -> int:
    last = func.coalesce(Ask.last_reminded_at, Ask.sent_at)
    rows = session.execute(
        select(Ask, Person.timezone, Person.away_until)
        .join(Person, Person.id == Ask.person_id)
        .join(Question, Question.id == Ask.question_id)
        .where(
            Ask.sent_at.is_not(None),
            Ask.answered_at.is_(None),
            Ask.skipped == "",
            Ask.reminders < Question.max_reminders,
            last <= now - REMINDER_EVERY,
            Question.closed_at.is_(None),
            or_(Question.deadline.is_(None), Question.deadline > now),
            Person.active.is_(True),
        )
        .order_by(Ask.id)
        .limit(20_000)
    ).all()
    count = 0
    for ask, tz, away_until in rows:
        if questions.is_away(away_until, tz, now) is not None:
            continue  # paused until they are back (their out-of-office said when)
        if next_sensible_time(now, tz) != now:
            continue  # not in their working hours: a later tick will do it
        ask.reminders += 1
        ask.last_reminded_at = now
        count += questions.queue_mail(
            session,
            key=f"remind:{ask.question_id}:{ask.reminders}",
            kind="reminder",
            question_id=ask.question_id,
            person_ids=[ask.person_id],
            now=now,
        )
    return count


def summary_recipients(session: Session, question: Question) -> list[int]:
    """The asker always; the people they named; for open questions everyone asked —
    each only if ``access.answer_view`` lets them see answers (the asker may get a
    counts-only summary)."""
    ml = session.get_one(MailingList, question.list_id)
    facts = questions.question_facts(session, question)
    lfacts = access.ListFacts.of(ml)
    candidates = set(facts.viewers)
    if facts.open:
        # Everyone asked; not those skipped (on leave when it was asked).
        candidates |= set(
            session.scalars(
                select(Ask.person_id).where(Ask.question_id == question.id, Ask.skipped == "")
            )
        )
    people = session.scalars(select(Person).where(Person.id.in_(candidates))).all()
    readers = questions.viewers(session, ml, people)
    allowed = [
        p.id
        for p in people
        if access.answer_view(facts, lfacts, readers[p.id]) is not access.AnswerView.NONE
    ]
    if question.asker_id is not None:
        allowed.append(question.asker_id)
    return sorted(set(allowed))


def _close_due_questions(session: Session, now: datetime) -> int:
    due = session.scalars(
        select(Question)
        .where(Question.closed_at.is_(None), Question.deadline.is_not(None))
        .where(Question.deadline <= now)
        .order_by(Question.id)
        .with_for_update(skip_locked=True)
    ).all()
    count = 0
    for question in due:
        question.closed_at = now
        count += questions.queue_mail(
            session,
            key=f"summary:{question.id}",
            kind="summary",
            question_id=question.id,
            person_ids=summary_recipients(session, question),
            now=now,
        )
    return count


def _queue_due_followups(session: Session, now: datetime) -> int:
    rows = session.execute(
        select(Followup, Person.timezone)
        .join(Person, Person.id == Followup.promised_by_id)
        .where(Followup.resolved_at.is_(None))
    ).all()
    count = 0
    for followup, tz in rows:
        if followup.due_date > local_date(now, tz).isoformat():
            continue
        if next_sensible_time(now, tz) != now:
            continue
        count += questions.queue_mail(
            session,
            key=f"followup-due:{followup.id}",
            kind="followup-due",
            question_id=followup.question_id,
            person_ids=[followup.promised_by_id] if followup.promised_by_id else [],
            now=now,
            followup_id=followup.id,
        )
    return count


# ---------------------------------------------------------------- composing


@dataclass(frozen=True)
class QuestionMailSettings:
    domain: str
    secret: str


def _answers(session: Session, question: Question, first_post: int) -> list[AnswerFacts]:
    facts = questions.question_facts(session, question, count_answers=False)
    leaders = facts.leaders
    rows = session.execute(
        select(Post.author_id, Person.name, Person.department, Post.text, Post.created_at)
        .join(Person, Person.id == Post.author_id)
        .where(Post.discussion_id == question.discussion_id, Post.id != first_post)
        .order_by(Post.id)
    ).all()
    return [
        AnswerFacts(aid, name or "", dept or "", text, created)
        for aid, name, dept, text, created in rows
        if aid is not None and aid not in leaders
    ]


@dataclass
class _QuestionShared:
    """What every mail of one question shares, loaded once per batch."""

    question: Question
    discussion: Discussion
    ml: MailingList
    first: Post
    asker: Person | None
    facts: access.QuestionFacts
    list_facts: access.ListFacts
    answers: list[AnswerFacts] | None = None
    asked: int | None = None
    leader_names: list[tuple[int, str]] | None = None
    sizes: dict[access.AnswerScope, int] | None = None

    def audience_line(self, session: Session, reader_id: int) -> str:
        """Who will see this reader's reply, worded from the decision that enforces it
        (``access.audience_of_answers``)."""
        audience = access.audience_of_answers(self.facts, self.list_facts, reader_id)
        if self.leader_names is None:
            self.leader_names = questions.leader_names(session, self.facts)
        if self.sizes is None:
            self.sizes = {}
        if audience.scope not in self.sizes:
            self.sizes[audience.scope] = questions.audience_size(session, audience, self.ml.id)
        return access.answer_audience_line(
            audience,
            reader_id=reader_id,
            names=self.leader_names,
            group=self.ml.name or self.ml.slug,
            size=self.sizes[audience.scope],
        )


def _shared(
    session: Session, question_id: int, cache: dict[int, _QuestionShared] | None
) -> _QuestionShared:
    if cache is not None and question_id in cache:
        return cache[question_id]
    question = session.get_one(Question, question_id)
    discussion = session.get_one(Discussion, question.discussion_id)
    ml = session.get_one(MailingList, question.list_id)
    first = session.scalars(
        select(Post).where(Post.discussion_id == discussion.id).order_by(Post.id).limit(1)
    ).one()
    shared = _QuestionShared(
        question=question,
        discussion=discussion,
        ml=ml,
        first=first,
        asker=session.get(Person, question.asker_id) if question.asker_id else None,
        facts=questions.question_facts(session, question),
        list_facts=access.ListFacts.of(ml),
    )
    if cache is not None:
        cache[question_id] = shared
    return shared


def mail_context(
    session: Session,
    mail: QuestionMail,
    person: Person,
    cache: dict[int, _QuestionShared] | None = None,
    reader: access.Viewer | None = None,
) -> dict[str, Any]:
    """Everything a question template needs, computed for this reader. A batch passes
    ``cache`` so that what all readers of a question share is read once, and ``reader``
    (this person as access control sees them, read for the whole batch at once)."""
    shared = _shared(session, mail.question_id, cache)
    question, first, facts = shared.question, shared.first, shared.facts
    # Decided for this reader, at the last moment (PRIV-01).
    if reader is None:
        reader = questions.viewer(session, shared.ml, person)
    view = access.answer_view(facts, shared.list_facts, reader)
    summary: Summary | None = None
    if mail.kind == "summary":
        if shared.answers is None:
            shared.asked = session.scalar(
                select(func.count()).where(Ask.question_id == question.id, Ask.skipped == "")
            )
            shared.answers = _answers(session, question, first.id)
        summary = summarise(shared.answers, asked=shared.asked or 0, view=view)
    followup = session.get(Followup, mail.followup_id) if mail.followup_id else None
    followup_post = session.get(Post, followup.post_id) if followup else None
    resolution = (
        session.get(Post, followup.resolved_post_id)
        if followup and followup.resolved_post_id
        else None
    )
    # Quoted only to a reader who may see the post now (recipients were checked when
    # queued; access can have changed since): the same decision as reading the post. The
    # leader's answer to it is a reply in its thread, no wider than the post itself.
    if followup_post is not None and not questions.may_see(session, followup_post.id, person.id):
        followup_post = resolution = None
    deadline = (
        question.deadline.astimezone(questions.zone(person.timezone)) if question.deadline else None
    )
    reminders = (
        session.scalar(
            select(Ask.reminders).where(Ask.question_id == question.id, Ask.person_id == person.id)
        )
        if mail.kind == "reminder"
        else 0
    )
    asker = shared.asker
    prompt = question.kind is QuestionKind.PROMPT
    asker_name = (asker.name or asker.primary_address) if asker else "Mailgate"
    promised_question = followup_post is not None and followup_post.id == first.id
    return {
        "name": person.name or person.primary_address,
        "asker": asker_name,
        # The From name: a person's question comes from them (via Mailgate); a prompt
        # has no asker, it comes from the weekly question itself.
        "sender": "Weekly question (Mailgate)" if prompt else f"{asker_name} (via Mailgate)",
        "audience_line": shared.audience_line(session, person.id),
        "subject": shared.discussion.subject,
        "question": first.text.strip(),
        "audience": "everyone in the company" if question.company_wide else shared.ml.name,
        "prompt": prompt,
        "open": facts.open,
        "anonymous": question.anonymous,
        "threshold": access.ANONYMITY_THRESHOLD,
        "deadline": deadline.strftime("%A %d %B %Y, %H:%M") if deadline else "",
        "reminder_number": reminders or 0,
        "summary": summary,
        "is_asker": question.asker_id == person.id,
        "followup_due": followup.due_date if followup else "",
        # The post a "don't know yet" promised to answer (the question itself, or one
        # answer to it, with its author: only quoted to a reader who may see it).
        "followup_text": (followup_post.text.strip()[:600] if followup_post else ""),
        "followup_is_question": promised_question,
        "followup_author": _author_name(session, followup_post) if followup_post else "",
        "answer_text": resolution.text.strip() if resolution else "",
        "first_message_id": first.message_id,
        # Replies to a follow-up mail thread under the post it is about, so the answer
        # resolves the promise (mailgate.questions.on_post_stored).
        "thread_message_id": (
            followup_post.message_id
            if followup_post and mail.kind == "followup-due"
            else first.message_id
        ),
    }


def _author_name(session: Session, post: Post) -> str:
    author = session.get(Person, post.author_id) if post.author_id else None
    return (author.name or author.primary_address) if author else ""


def compose_question_mail(
    mail: QuestionMail,
    person: Person,
    discussion_id: int,
    context: dict[str, Any],
    settings: QuestionMailSettings,
) -> bytes:
    template = template_env().get_template(f"questions/{mail.kind}.txt")
    subject = " ".join("".join(template.blocks["subject"](template.new_context(context))).split())
    body = template.render(context).strip() + "\n"
    token = make_token(settings.secret, TokenKind.REPLY, person.id, discussion_id)
    reply_to = reply_address(token, settings.domain)
    # headers.COMPOSE cleans every field: the subject quotes a question, the names and
    # the thread ids came from mail (issue 12, item 3).
    msg = new_message()
    msg["From"] = named_address(context["sender"], reply_to)
    msg["To"] = named_address(person.name or "", person.primary_address)
    msg["Reply-To"] = reply_to
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = f"<qm.{mail.id}.{secrets.token_hex(6)}@{settings.domain}>"
    first = context["first_message_id"]
    parent = context["thread_message_id"]
    for name, value in thread_fields(parent, [first]):
        msg[name] = value
    msg["X-Mailgate-Question"] = str(mail.question_id)
    msg["X-Mailgate-Kind"] = mail.kind
    if mail.kind not in ("ask", "reminder"):
        # Asks and reminders leave these out on purpose: we want the out-of-office
        # replies (RFC 3834 responders skip auto-generated mail) to learn return dates.
        msg["Auto-Submitted"] = "auto-generated"
        msg["Precedence"] = "bulk"
    msg.set_content(body)
    return msg.as_bytes()


# ---------------------------------------------------------------- sending


def _claim(factory: sessionmaker[Session], ids: Sequence[int], now: datetime) -> list[int]:
    with unit_of_work(factory) as session:
        return list(
            session.scalars(
                update(QuestionMail)
                .where(
                    QuestionMail.id.in_(list(ids)),
                    QuestionMail.status == "pending",
                    or_(QuestionMail.lease_until.is_(None), QuestionMail.lease_until < now),
                )
                .values(lease_until=now + LEASE, attempts=QuestionMail.attempts + 1)
                .returning(QuestionMail.id)
            )
        )


def send_question_mails(
    factory: sessionmaker[Session],
    ids: Sequence[int],
    *,
    relay: Relay,
    settings: QuestionMailSettings,
    now: datetime | None = None,
) -> dict[str, int]:
    """Send a batch over one relay connection; at-least-once (a crash between the
    relay's 250 and the commit sends that one mail again after the lease)."""
    now = now or utcnow()
    claimed = _claim(factory, ids, now)
    report = {"sent": 0, "failed": 0, "retry": 0}
    if not claimed:
        return report
    # Compose with no write transaction open: on SQLite a writer holding the lock while
    # rendering would stall every other worker (bench/questions).
    rendered: list[tuple[int, str, bytes]] = []
    outcomes: dict[int, tuple[str, str]] = {}
    cache: dict[int, _QuestionShared] = {}
    with read_only(factory) as session:
        mails = session.scalars(
            select(QuestionMail).where(QuestionMail.id.in_(claimed)).order_by(QuestionMail.id)
        ).all()
        people = {
            p.id: p
            for p in session.scalars(
                select(Person).where(Person.id.in_({m.person_id for m in mails}))
            )
        }
        # Who each reader is to access control, per question's list, in two queries.
        readers: dict[tuple[int, int], access.Viewer] = {}
        for question_id in {m.question_id for m in mails}:
            batch = [people[m.person_id] for m in mails if m.question_id == question_id]
            shared_ml = _shared(session, question_id, cache).ml
            for person_id, reader in questions.viewers(session, shared_ml, batch).items():
                readers[(question_id, person_id)] = reader
        for mail in mails:
            person = people[mail.person_id]
            address = person.primary_address
            if not person.active or not address:
                outcomes[mail.id] = ("failed", "no active address")
                continue
            context = mail_context(
                session, mail, person, cache, reader=readers[(mail.question_id, person.id)]
            )
            discussion_id = cache[mail.question_id].question.discussion_id
            message = compose_question_mail(mail, person, discussion_id, context, settings)
            rendered.append((mail.id, address, message))
    try:
        with relay.open() as connection:
            for mail_id, address, message in rendered:
                result = connection.send("", [address], message)
                if address in result.accepted:
                    outcomes[mail_id] = ("sent", "")
                elif address in result.permanent:
                    outcomes[mail_id] = ("failed", result.permanent[address])
                else:
                    outcomes[mail_id] = ("retry", result.temporary.get(address, "no reply"))
    except TransientRelayError as exc:
        for mail_id, _address, _message in rendered:
            outcomes.setdefault(mail_id, ("retry", str(exc)))
    with unit_of_work(factory) as session:
        for mail in session.scalars(
            select(QuestionMail).where(QuestionMail.id.in_(list(outcomes)))
        ):
            outcome, error = outcomes[mail.id]
            if outcome == "sent":
                mail.status, mail.sent_at, mail.lease_until = "sent", utcnow(), None
            elif outcome == "failed" or mail.attempts >= MAX_ATTEMPTS:
                mail.status, mail.last_error = "failed", error[:400]
                outcome = "failed"
            else:
                mail.last_error = error[:400]
                mail.lease_until = now + _backoff(mail.attempts)
            report[outcome] += 1
    log.info("question mails: %s", report)
    return report


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(3600, 30 * 2 ** max(0, attempts - 1)))
