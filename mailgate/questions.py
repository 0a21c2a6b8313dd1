"""Questions: leaders ask an audience, members answer by reply (the use cases).

Input: a session (the caller's transaction), people, lists and the parsed text of mail.
Output: rows — a question is a discussion whose first post is the question, a
``questions`` row with its audience and visibility, one ``asks`` row per audience member
(when it is due in their local time), ``followups`` for "don't know yet" promises, and
``question_mails`` for the notes this module decides to send (the digests package's
question scheduler sends them and everything else on time).

Who may ask and who sees answers is decided in ``mailgate.access`` (``may_ask``,
``answer_view``, ``may_see_question_post``); this module only gathers the facts.
Everything here is idempotent: unique keys on asks, mails and follow-ups.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import cast

from sqlalchemy import Table, func, insert, or_, select, true, update
from sqlalchemy.orm import Session

from mailgate import access
from mailgate.asking import parse_not_yet
from mailgate.db import insert_ignoring_duplicates
from mailgate.directory import find_person, person_snapshot, record
from mailgate.local_time import first_instant_at, local_date, next_sensible_time, zone
from mailgate.models import (
    AnswerVisibility,
    Ask,
    BounceState,
    Delivery,
    Discussion,
    Followup,
    Like,
    MailingList,
    Membership,
    OutboxEntry,
    Person,
    PersonRole,
    Post,
    PostingPolicy,
    Question,
    QuestionKind,
    QuestionMail,
    QuestionViewer,
    Role,
    SiteRole,
    Visibility,
)
from mailgate.threads import message_key

COMPANY_SLUG = "questions"  # the system list holding company-wide questions (reserved)
COMPANY = "company"  # the audience name for "everyone"
DEFAULT_REMINDERS = 2
NOT_YET_DEFAULT_DAYS = 7  # "don't know yet" without a date promises an answer in a week
TICK_TASK = "mailgate.questions_tick"


class QuestionError(ValueError):
    """A question that cannot be asked as given; the message says why, for a person."""


@dataclass(frozen=True)
class QuestionSpec:
    subject: str
    text: str
    audience: str  # "company" or a list slug
    deadline: datetime | None = None
    visibility: AnswerVisibility = AnswerVisibility.OPEN
    anonymous: bool = False
    viewers: tuple[str, ...] = ()  # addresses of people who may see answers
    max_reminders: int = DEFAULT_REMINDERS


# ---------------------------------------------------------------- facts


def company_list(session: Session) -> MailingList:
    """The system list that holds company-wide questions: readable by everyone in the
    company, postable only through ask@ and reply addresses (its slug is reserved)."""
    ml = session.scalar(select(MailingList).where(MailingList.slug == COMPANY_SLUG))
    if ml is None:
        ml = MailingList(
            slug=COMPANY_SLUG,
            name="Company questions",
            description="Questions from leadership to everyone",
            visibility=Visibility.COMPANY,
            posting=PostingPolicy.ANNOUNCE,
        )
        session.add(ml)
        session.flush()
    return ml


def audience_list(session: Session, audience: str, *, asker: Person | None = None) -> MailingList:
    """The list a question to ``audience`` ("company" or a list slug) lives on; raises
    :class:`QuestionError` for a list that does not exist or is archived — or, when an
    ``asker`` mailed the question, one they may not know exists (a hidden list looks
    like no list at all, ``access.may_know_exists``)."""
    if audience == COMPANY:
        return company_list(session)
    found = session.scalar(select(MailingList).where(MailingList.slug == audience))
    if (
        found is None
        or found.archived_at is not None
        or (
            asker is not None
            and not access.may_know_exists(
                access.ListFacts.of(found), viewer(session, found, asker)
            )
        )
    ):
        raise QuestionError(f"no list named {audience!r} to ask")
    return found


def viewer(session: Session, ml: MailingList, person: Person | None) -> access.Viewer:
    """A person as access control sees them for ``ml``, with their site roles."""
    if person is None:
        return access.Viewer(None)
    return viewers(session, ml, [person])[person.id]


def viewers(
    session: Session, ml: MailingList, people: Sequence[Person]
) -> dict[int, access.Viewer]:
    """:func:`viewer` for many people at once, in two queries (summaries, batches)."""
    ids = [p.id for p in people]
    roles: dict[int, str] = {}
    granted: dict[int, set[SiteRole]] = {}
    for start in range(0, len(ids), 500):  # bounded IN lists
        chunk = ids[start : start + 500]
        roles.update(
            session.execute(
                select(Membership.person_id, Membership.role).where(
                    Membership.list_id == ml.id, Membership.person_id.in_(chunk)
                )
            ).all()
        )
        for person_id, role in session.execute(
            select(PersonRole.person_id, PersonRole.role).where(PersonRole.person_id.in_(chunk))
        ):
            granted.setdefault(person_id, set()).add(SiteRole(role))
    return {
        p.id: access.Viewer(
            p.id,
            p.active,
            Role(roles[p.id]) if p.id in roles else None,
            site_roles=frozenset(granted.get(p.id, ())),
        )
        for p in people
    }


def question_of_discussion(session: Session, discussion_id: int) -> Question | None:
    # Asked for every reply (ingest) and every fan-out: a Core lookup of the id keeps the
    # common "not a question" answer cheap; the entity is loaded only for questions.
    table = cast(Table, Question.__table__)
    qid = session.connection().scalar(
        select(table.c.id).where(table.c.discussion_id == discussion_id)
    )
    return session.get(Question, qid) if qid is not None else None


def answerer_ids(session: Session, question: Question, leaders: frozenset[int]) -> set[int]:
    """People who answered: authors of posts in the discussion other than the leaders."""
    authors = session.scalars(
        select(Post.author_id)
        .where(Post.discussion_id == question.discussion_id, Post.author_id.is_not(None))
        .distinct()
    ).all()
    return {a for a in authors if a is not None and a not in leaders}


def answerer_count(session: Session, question: Question, leaders: frozenset[int]) -> int:
    """How many distinct people answered: one COUNT in the database, so that asking it
    for every answer of a 10,000-person question stays cheap (bench/questions)."""
    query = select(func.count(func.distinct(Post.author_id))).where(
        Post.discussion_id == question.discussion_id, Post.author_id.is_not(None)
    )
    if leaders:
        query = query.where(Post.author_id.not_in(sorted(leaders)))
    return int(session.scalar(query) or 0)


def question_facts(
    session: Session, question: Question, *, count_answers: bool = True
) -> access.QuestionFacts:
    """Access facts for a question. ``count_answers=False`` skips the answer count for
    callers that only ask who the leaders are (it then reads 0)."""
    viewers = frozenset(
        session.scalars(
            select(QuestionViewer.person_id).where(QuestionViewer.question_id == question.id)
        )
    )
    facts = access.QuestionFacts(
        asker_id=question.asker_id,
        open=question.visibility is AnswerVisibility.OPEN,
        anonymous=question.anonymous,
        viewers=viewers,
        answerers=0,
    )
    if not count_answers:
        return facts
    return replace(facts, answerers=answerer_count(session, question, facts.leaders))


def audience_size(session: Session, audience: access.AnswerAudience, list_id: int) -> int:
    """How many people ``audience`` lets see a reply (for the line that says so): the
    same people :meth:`access.AnswerAudience.includes` admits — everyone active for a
    list open to the company; the list's active members and the named people for a
    list; only the named people otherwise."""
    named = set(
        session.scalars(
            select(Person.id).where(Person.id.in_(sorted(audience.people)), Person.active.is_(True))
        )
    )
    if audience.scope is access.AnswerScope.COMPANY:
        return int(
            session.scalar(select(func.count(Person.id)).where(Person.active.is_(True))) or 0
        )
    if audience.scope is access.AnswerScope.NAMED_ONLY:
        return len(named)
    members = set(
        session.scalars(
            select(Membership.person_id)
            .join(Person, Person.id == Membership.person_id)
            .where(Membership.list_id == list_id, Person.active.is_(True))
        )
    )
    return len(members | named)


def leader_names(session: Session, facts: access.QuestionFacts) -> list[tuple[int, str]]:
    """The asker and the people they named, as (id, name), the asker first."""
    ids = sorted(facts.viewers - {facts.asker_id})
    if facts.asker_id is not None:
        ids.insert(0, facts.asker_id)
    found = {
        p.id: p.name or p.primary_address
        for p in session.scalars(select(Person).where(Person.id.in_(ids)))
    }
    return [(pid, found[pid]) for pid in ids if pid in found]


def first_post_id(session: Session, discussion_id: int) -> int | None:
    return session.scalar(
        select(Post.id).where(Post.discussion_id == discussion_id).order_by(Post.id).limit(1)
    )


def who_may_see(session: Session, post_id: int, person_ids: Iterable[int]) -> set[int]:
    """Of ``person_ids``, those who may see post ``post_id`` with its author named.

    The one decision behind every path that shows or mails anything about a post other
    than its copy: likes (by reply or from a digest), the people told that a promise
    was kept, the text quoted in follow-up mails (issue 12, item 4). In a question's
    discussion it is ``access.may_see_question_post``, as for fan-out and digests;
    elsewhere reading the list (``access.may_read``).
    """
    wanted = sorted(set(person_ids))
    post = session.get(Post, post_id)
    if post is None or not wanted:
        return set()
    ml = session.get_one(MailingList, post.list_id)
    people = session.scalars(select(Person).where(Person.id.in_(wanted))).all()
    readers = viewers(session, ml, people)
    list_facts = access.ListFacts.of(ml)
    question = question_of_discussion(session, post.discussion_id)
    if question is None:
        return {pid for pid, reader in readers.items() if access.may_read(list_facts, reader)}
    qfacts = question_facts(session, question)
    parent_author = (
        session.scalar(select(Post.author_id).where(Post.id == post.parent_id))
        if post.parent_id
        else None
    )
    is_question = post.id == first_post_id(session, post.discussion_id)
    return {
        pid
        for pid, reader in readers.items()
        if access.may_see_question_post(
            qfacts,
            list_facts,
            reader,
            author_id=post.author_id,
            is_question=is_question,
            parent_author_id=parent_author,
        )
    }


def may_see(session: Session, post_id: int, person_id: int) -> bool:
    """:func:`who_may_see` for one person."""
    return person_id in who_may_see(session, post_id, [person_id])


def is_away(away_until: str | None, timezone: str, now: datetime) -> date | None:
    """The date someone is back (``people.away_until``), if they are away at ``now``
    (their local date in ``timezone``)."""
    if not away_until:
        return None
    try:
        back = date.fromisoformat(away_until)
    except ValueError:
        return None
    return back if local_date(now, timezone) < back else None


def back_at(timezone: str, back: date) -> datetime:
    """The start of their first working day back, in their local time."""
    tz = zone(timezone)
    day = back
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return first_instant_at(day, 9, tz)


# ---------------------------------------------------------------- asking


def audience_people(session: Session, question: Question, ml: MailingList) -> list[Person]:
    """Who is asked: everyone active (company-wide) or the list's members who may read
    it and take mail (every message or digest), minus suspended addresses."""
    suspended = (
        select(BounceState.id)
        .where(BounceState.person_id == Person.id, BounceState.suspended_at.is_not(None))
        .exists()
    )
    query = select(Person).where(Person.active.is_(True), ~suspended).order_by(Person.id)
    if not question.company_wide:
        query = query.join(Membership, Membership.person_id == Person.id).where(
            Membership.list_id == ml.id,
            # "nomail" members opted out of list mail, except on mandatory lists.
            Membership.delivery != Delivery.NONE if not ml.mandatory else true(),
        )
    people = list(session.scalars(query))
    roles = (
        dict(
            session.execute(
                select(Membership.person_id, Membership.role).where(Membership.list_id == ml.id)
            ).all()
        )
        if not question.company_wide
        else {}
    )
    facts = access.ListFacts.of(ml)
    return [
        p
        for p in people
        if access.may_read(facts, access.Viewer(p.id, p.active, _role(roles.get(p.id))))
    ]


def _role(value: object) -> Role | None:
    return Role(str(value)) if value is not None else None


def schedule_asks(
    session: Session,
    question: Question,
    people: Sequence[Person],
    now: datetime,
    *,
    due_for: Callable[[Person], datetime] | None = None,
    skip_away: bool = False,
) -> int:
    """One ask per person, due at a sensible local time (``due_for`` decides for
    prompts); someone away is asked when back, or skipped (``skip_away``, or when they
    are back only after the deadline)."""
    values = []
    for person in people:
        if question.asker_id == person.id:
            continue
        due = due_for(person) if due_for else next_sensible_time(now, person.timezone)
        skipped = ""
        back = is_away(person.away_until, person.timezone, max(now, due))
        if back is not None:
            due = back_at(person.timezone, back)
            if skip_away or (question.deadline is not None and due >= question.deadline):
                skipped = "away"
        values.append(
            {
                "question_id": question.id,
                "person_id": person.id,
                "due_at": due,
                "reminders": 0,
                "skipped": skipped,
            }
        )
    return insert_ignoring_duplicates(session, Ask, values) if values else 0


def _message_id(domain: str) -> str:
    return f"question.{secrets.token_hex(12)}@{domain}"


def create_question(
    session: Session,
    *,
    asker: Person | None,
    spec: QuestionSpec,
    now: datetime,
    domain: str,
    kind: QuestionKind = QuestionKind.QUESTION,
    prompt_id: int | None = None,
    message_id: str | None = None,
    raw_id: int | None = None,
    due_for: Callable[[Person], datetime] | None = None,
    skip_away: bool = False,
) -> Question:
    """Store a question and schedule its asks; raises :class:`QuestionError`."""
    if not spec.text.strip():
        raise QuestionError("the question has no text")
    if spec.deadline is not None and spec.deadline <= now:
        raise QuestionError("the deadline is in the past")
    company_wide = spec.audience == COMPANY
    ml = audience_list(session, spec.audience)
    # Prompts (no asker) are created by an administrator through the CLI.
    if asker is not None and not access.may_ask(
        viewer(session, ml, asker), company_wide=company_wide
    ):
        raise QuestionError(
            "only executives (any audience) and list owners (their list) may ask questions"
        )
    viewer_people = []
    for address in spec.viewers:
        person = find_person(session, address)
        if person is None:
            raise QuestionError(f"{address} is not in the directory")
        viewer_people.append(person)

    subject = " ".join(spec.subject.split())[:998] or spec.text.strip().splitlines()[0][:200]
    discussion_id = session.scalars(
        insert(Discussion).returning(Discussion.id),
        [
            {
                "list_id": ml.id,
                "subject": subject,
                "started_by_id": asker.id if asker else None,
                "created_at": now,
                "last_post_at": now,
                "closed": False,
            }
        ],
    ).one()
    mid = message_id or _message_id(domain)
    session.execute(
        insert(Post),
        [
            {
                "discussion_id": discussion_id,
                "list_id": ml.id,
                "author_id": asker.id if asker else None,
                "parent_id": None,
                "raw_id": raw_id,
                "message_id": mid[:998],
                "message_key": message_key(mid),
                "subject": subject,
                "text": spec.text.strip() + "\n",
                "elided": "",
                "created_at": now,
            }
        ],
    )
    question = Question(
        discussion_id=discussion_id,
        list_id=ml.id,
        company_wide=company_wide,
        kind=kind,
        asker_id=asker.id if asker else None,
        visibility=spec.visibility,
        anonymous=spec.anonymous,
        deadline=spec.deadline,
        max_reminders=max(0, min(spec.max_reminders, 10)),
        prompt_id=prompt_id,
        created_at=now,
    )
    session.add(question)
    session.flush()
    for person in viewer_people:
        session.add(QuestionViewer(question_id=question.id, person_id=person.id))
    schedule_asks(
        session,
        question,
        audience_people(session, question, ml),
        now,
        due_for=due_for,
        skip_away=skip_away,
    )
    wake_scheduler(session, f"question:{question.id}", now)
    return question


def wake_scheduler(session: Session, key: str, now: datetime) -> None:
    """Run the question scheduler as soon as this transaction commits (through the
    outbox), so a question goes out now rather than at the next periodic tick.

    The step runs for ``now``, the instant of the event, not for the worker's clock: an
    event stamped by an operator's (or a test's) ``--now`` must not start prompt runs for
    the real week (a CI run on a real Monday did). The periodic tick covers real time."""
    insert_ignoring_duplicates(
        session,
        OutboxEntry,
        [{"key": key, "task": TICK_TASK, "args": [now.isoformat()], "created_at": now}],
    )


# ---------------------------------------------------------------- answers


def queue_mail(
    session: Session,
    *,
    key: str,
    kind: str,
    question_id: int,
    person_ids: Sequence[int],
    now: datetime,
    followup_id: int | None = None,
) -> int:
    values = [
        {
            "key": f"{key}:{pid}",
            "kind": kind,
            "question_id": question_id,
            "person_id": pid,
            "followup_id": followup_id,
            "status": "pending",
            "attempts": 0,
            "last_error": "",
            "created_at": now,
        }
        for pid in sorted(set(person_ids))
    ]
    return insert_ignoring_duplicates(session, QuestionMail, values) if values else 0


def on_post_stored(
    session: Session,
    question: Question,
    *,
    post_id: int,
    author: Person | None,
    parent_id: int | None,
    text: str,
    now: datetime,
) -> str:
    """What a new post in a question's discussion means; returns a short fact for the
    admin view: ``answer``, ``not-yet``, ``follow-up-answered`` or ``leader-reply``."""
    if author is None:
        return "anonymous-post"
    facts = question_facts(session, question, count_answers=False)
    if not facts.is_leader(author.id):
        session.execute(
            update(Ask)
            .where(
                Ask.question_id == question.id,
                Ask.person_id == author.id,
                Ask.answered_at.is_(None),
            )
            .values(answered_at=now)
        )
        return "answer"
    today = local_date(now, author.timezone)
    not_yet = parse_not_yet(text, today)
    target = parent_id or first_post_id(session, question.discussion_id)
    if not_yet is not None and target is not None:
        by = not_yet.by or today + timedelta(days=NOT_YET_DEFAULT_DAYS)
        insert_ignoring_duplicates(
            session,
            Followup,
            [
                {
                    "question_id": question.id,
                    "post_id": target,
                    "promise_post_id": post_id,
                    "promised_by_id": author.id,
                    "due_date": by.isoformat(),
                    "created_at": now,
                }
            ],
        )
        return "not-yet"
    open_followups = session.scalars(
        select(Followup).where(
            Followup.question_id == question.id,
            Followup.resolved_at.is_(None),
            # The post it promised to answer, or the promise itself replied to.
            or_(Followup.post_id == target, Followup.promise_post_id == target),
        )
    ).all()
    for followup in open_followups:
        followup.resolved_post_id = post_id
        followup.resolved_at = now
        # "Answered" quotes the post promised an answer and the leader's answer to it
        # (a reply in that post's thread: no wider than the post). Only people who may
        # see that post and the promise are told; a +1 on a private answer is no ticket.
        told = people_who_asked(session, question, followup.post_id) - {author.id}
        for shown in (followup.post_id, followup.promise_post_id):
            told &= who_may_see(session, shown, told)
        queue_mail(
            session,
            key=f"answered:{followup.id}",
            kind="answered",
            question_id=question.id,
            person_ids=sorted(told),
            now=now,
            followup_id=followup.id,
        )
    if open_followups:
        wake_scheduler(session, f"answered:{open_followups[0].id}", now)
        return "follow-up-answered"
    return "leader-reply"


def people_who_asked(session: Session, question: Question, post_id: int) -> set[int]:
    """Who is waiting for the answer to ``post_id``: its author and those who +1'd it;
    for the question's own post, everyone who answered."""
    first = first_post_id(session, question.discussion_id)
    if post_id == first:
        facts = question_facts(session, question, count_answers=False)
        return answerer_ids(session, question, facts.leaders)
    author = session.scalar(select(Post.author_id).where(Post.id == post_id))
    likers = set(session.scalars(select(Like.person_id).where(Like.post_id == post_id)))
    return ({author} if author else set()) | likers


def note_return_date(session: Session, person_id: int, back: date) -> bool:
    """An out-of-office reply said when they are back: pause questions until then."""
    person = session.get(Person, person_id)
    if person is None:
        return False
    if person.away_until and person.away_until >= back.isoformat():
        return False
    before = person_snapshot(person)
    person.away_until = back.isoformat()
    # Audited like ``mailgate people away``: who is paused, since when and why (issue 17).
    target = f"person:{person.primary_address}"
    record(session, "mail:out-of-office", "person.away", target, before, person_snapshot(person))
    return True


# ---------------------------------------------------------------- ledger


@dataclass(frozen=True)
class QuestionStatus:
    """A question as the ledger and ``mailgate ask list`` show it."""

    id: int
    list_id: int
    subject: str
    asker: str
    audience: str
    kind: str
    visibility: str
    anonymous: bool
    created_at: datetime
    deadline: datetime | None
    closed: bool
    asked: int
    answered: int
    pending_until: str | None  # the earliest open "don't know yet" promise

    def age_days(self, now: datetime) -> int:
        return max(0, (now - self.created_at).days)


def question_statuses(
    session: Session, *, open_only: bool = False, kind: QuestionKind | None = None
) -> list[QuestionStatus]:
    asked = (
        select(func.count(Ask.id))
        .where(Ask.question_id == Question.id, Ask.skipped == "")
        .correlate(Question)
        .scalar_subquery()
    )
    answered = (
        select(func.count(Ask.id))
        .where(Ask.question_id == Question.id, Ask.answered_at.is_not(None))
        .correlate(Question)
        .scalar_subquery()
    )
    pending = (
        select(func.min(Followup.due_date))
        .where(Followup.question_id == Question.id, Followup.resolved_at.is_(None))
        .correlate(Question)
        .scalar_subquery()
    )
    query = (
        select(
            Question,
            Discussion.subject,
            Person.name,
            MailingList.slug,
            asked,
            answered,
            pending,
        )
        .join(Discussion, Discussion.id == Question.discussion_id)
        .join(MailingList, MailingList.id == Question.list_id)
        .outerjoin(Person, Person.id == Question.asker_id)
        .order_by(Question.id)
    )
    if open_only:
        query = query.where(Question.closed_at.is_(None))
    if kind is not None:
        query = query.where(Question.kind == kind)
    return [
        QuestionStatus(
            id=q.id,
            list_id=q.list_id,
            subject=subject,
            asker=name or "",
            audience=COMPANY if q.company_wide else slug,
            kind=str(q.kind),
            visibility=str(q.visibility),
            anonymous=q.anonymous,
            created_at=q.created_at,
            deadline=q.deadline,
            closed=q.closed_at is not None,
            asked=int(n_asked or 0),
            answered=int(n_answered or 0),
            pending_until=pending_until,
        )
        for q, subject, name, slug, n_asked, n_answered, pending_until in session.execute(query)
    ]


def end_of_day(day: date, zone_name: str) -> datetime:
    """A deadline given as a date means the end of that working day, local time."""
    return first_instant_at(day, 17, zone(zone_name))
