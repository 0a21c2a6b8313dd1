"""Gather: the database reads for digests, batched (STYLE §2 digests).

Input: a session, a batch of person ids with their window starts, and ``now``. Output:
one :class:`MemberView` per member and the :class:`DiscussionFacts` they share. The
number of queries is fixed per batch — it does not grow with the number of members —
so a 10,000-member morning is a few hundred queries, not tens of thousands (the issue's
"Gathering is batched", asserted in tests/digests/test_gather.py).

Which lists a member's digest draws from: lists they belong to (any delivery mode but
"none") that ``mailgate.access.may_read`` lets them read — the one place that decides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from digests.facts import DiscussionFacts, LedgerEntry, MemberClock, MemberView, PostFacts
from digests.rank import visible_question_posts
from mailgate import access, questions
from mailgate.models import (
    Address,
    BounceState,
    Delivery,
    Discussion,
    Like,
    MailingList,
    Membership,
    Mute,
    Person,
    Post,
    PostingPolicy,
    Question,
    QuestionKind,
    QuestionViewer,
    Role,
)
from mailgate.models import Digest as DigestRow


@dataclass(frozen=True)
class Gathered:
    views: dict[int, MemberView]
    discussions: list[DiscussionFacts]
    ledger: tuple[LedgerEntry, ...] = ()


def digest_clocks(session: Session) -> list[MemberClock]:
    """Everyone who may get a digest: active, not suspended, and either on a list that
    delivers by digest or opted into a daily summary. One query."""
    last = (
        select(func.max(DigestRow.local_date))
        .where(DigestRow.person_id == Person.id)
        .correlate(Person)
        .scalar_subquery()
    )
    has_digest_list = (
        select(Membership.id)
        .where(Membership.person_id == Person.id, Membership.delivery == Delivery.DIGEST)
        .exists()
    )
    suspended = (
        select(BounceState.id)
        .where(BounceState.person_id == Person.id, BounceState.suspended_at.is_not(None))
        .exists()
    )
    rows = session.execute(
        select(
            Person.id, Person.timezone, Person.digest_hour, Person.digest_weekdays_only, last
        ).where(
            Person.active.is_(True),
            ~suspended,
            or_(has_digest_list, Person.daily_summary.is_(True)),
        )
    ).all()
    return [
        MemberClock(pid, tz or "UTC", hour, weekdays, date.fromisoformat(d) if d else None)
        for pid, tz, hour, weekdays, d in rows
    ]


def gather(session: Session, since: Mapping[int, datetime], now: datetime) -> Gathered:
    """Views for the members in ``since`` (person id → window start) and the discussions
    with activity in the union of their windows."""
    person_ids = sorted(since)
    if not person_ids:
        return Gathered({}, [])
    window_start = min(since.values())

    # 1. The members and their memberships (with each list's access facts).
    people = {
        pid: (name, active)
        for pid, name, active in session.execute(
            select(Person.id, Person.name, Person.active).where(Person.id.in_(person_ids))
        )
    }
    memberships = session.execute(
        select(
            Membership.person_id,
            Membership.role,
            MailingList.id,
            MailingList.visibility,
            MailingList.posting,
            MailingList.mandatory,
            MailingList.archived_at,
        )
        .join(MailingList, MailingList.id == Membership.list_id)
        .where(Membership.person_id.in_(person_ids), Membership.delivery != Delivery.NONE)
    ).all()
    readable: dict[int, set[int]] = defaultdict(set)
    for pid, role, list_id, visibility, posting, mandatory, archived in memberships:
        facts = access.ListFacts(list_id, visibility, posting, mandatory, archived is not None)
        name, active = people.get(pid, ("", False))
        if access.may_read(facts, access.Viewer(pid, active, Role(role))):
            readable[pid].add(list_id)
    # Company-wide questions live on a system list everyone in the company may read.
    company = session.execute(
        select(
            MailingList.id,
            MailingList.visibility,
            MailingList.posting,
            MailingList.mandatory,
            MailingList.archived_at,
        ).where(MailingList.slug == questions.COMPANY_SLUG)
    ).first()
    if company is not None:
        facts = access.ListFacts(company[0], company[1], company[2], company[3], False)
        for pid, (_name, active) in people.items():
            if access.may_read(facts, access.Viewer(pid, active, None)):
                readable[pid].add(company[0])
    list_ids = sorted(set().union(*readable.values())) if readable else []

    # 2. Posts in the window on those lists, with their discussion, list and author (and
    # the author's address, which names a person who has no name set).
    primary_address = (
        select(func.min(Address.email))
        .where(Address.person_id == Person.id, Address.is_primary.is_(True))
        .correlate(Person)
        .scalar_subquery()
    )
    rows = (
        session.execute(
            select(
                Post.id,
                Post.discussion_id,
                Post.author_id,
                Person.name,
                primary_address,
                Person.department,
                Post.created_at,
                Post.text,
                Discussion.list_id,
                Discussion.subject,
                Discussion.started_by_id,
                Discussion.created_at,
                MailingList.slug,
                MailingList.name,
                MailingList.posting,
            )
            .join(Discussion, Discussion.id == Post.discussion_id)
            .join(MailingList, MailingList.id == Discussion.list_id)
            .outerjoin(Person, Person.id == Post.author_id)
            .where(
                # posts(list_id, created_at) is indexed: the window costs what it holds,
                # not the whole history of the lists.
                Post.list_id.in_(list_ids),
                Post.created_at > window_start,
                Post.created_at <= now,
            )
            .order_by(Post.discussion_id, Post.created_at, Post.id)
        ).all()
        if list_ids
        else []
    )
    discussion_ids = sorted({r[1] for r in rows})
    asked = _question_facts(session, discussion_ids)
    posts_by_discussion: dict[int, list[PostFacts]] = defaultdict(list)
    heads: dict[int, tuple[int, str, int | None, datetime, str, str, bool]] = {}
    for r in rows:
        prompt = r[1] in asked and asked[r[1]][3] and r[0] == asked[r[1]][1]
        name = "" if prompt else author_label(r[2], r[3], r[4])
        posts_by_discussion[r[1]].append(PostFacts(r[0], r[1], r[2], name, r[5] or "", r[6], r[7]))
        heads[r[1]] = (r[8], r[9], r[10], r[11], r[12], r[13], r[14] is PostingPolicy.ANNOUNCE)

    # 3. Total posts per discussion ("N replies") and their +1s.
    totals = (
        dict(
            session.execute(
                select(Post.discussion_id, func.count())
                .where(Post.discussion_id.in_(discussion_ids))
                .group_by(Post.discussion_id)
            ).all()
        )
        if discussion_ids
        else {}
    )
    likes = _likes(session, discussion_ids, asked)

    # 4. Mutes and participation of these members in these discussions.
    muted: dict[int, set[int]] = defaultdict(set)
    participated: dict[int, set[int]] = defaultdict(set)
    if discussion_ids:
        for pid, did in session.execute(
            select(Mute.person_id, Mute.discussion_id).where(
                Mute.person_id.in_(person_ids), Mute.discussion_id.in_(discussion_ids)
            )
        ):
            muted[pid].add(did)
        authored = session.execute(
            select(Post.author_id, Post.discussion_id)
            .where(Post.author_id.in_(person_ids), Post.discussion_id.in_(discussion_ids))
            .distinct()
        ).all()
        started = session.execute(
            select(Discussion.started_by_id, Discussion.id).where(
                Discussion.started_by_id.in_(person_ids), Discussion.id.in_(discussion_ids)
            )
        ).all()
        for author, did in [*authored, *started]:
            if author is not None:
                participated[author].add(did)

    discussions = [
        DiscussionFacts(
            discussion_id=did,
            list_id=heads[did][0],
            list_slug=heads[did][4],
            list_name=heads[did][5],
            announce=heads[did][6],
            subject=heads[did][1],
            started_by_id=heads[did][2],
            created_at=heads[did][3],
            posts=tuple(posts_by_discussion[did]),
            total_posts=int(totals.get(did, len(posts_by_discussion[did]))),
            question=asked[did][0] if did in asked else None,
            question_post_id=asked[did][1] if did in asked else None,
            list_facts=asked[did][2] if did in asked else None,
            likes=likes.get(did, 0),
        )
        for did in discussion_ids
    ]
    views = {
        pid: MemberView(
            person_id=pid,
            name=people.get(pid, ("", False))[0],
            readable_list_ids=frozenset(readable.get(pid, set())),
            muted=frozenset(muted.get(pid, set())),
            participated=frozenset(participated.get(pid, set())),
            since=since[pid],
        )
        for pid in person_ids
    }
    return Gathered(views, discussions, _ledger(session, now))


def author_label(author_id: int | None, name: str | None, address: str | None) -> str:
    """How a digest names a post's author: their name; a person with no name set by
    their address's local part (as list copies do); a post whose author row is gone
    (erased, mailgate.privacy) as "a former member"."""
    if author_id is None:
        return "a former member"
    return " ".join((name or "").split()) or (address or "").rpartition("@")[0] or "a member"


def _likes(
    session: Session,
    discussion_ids: Sequence[int],
    asked: Mapping[int, tuple[access.QuestionFacts, int, access.ListFacts, bool]],
) -> dict[int, int]:
    """+1s per discussion, one query. In a question's discussion only the question's
    own +1s count: answers (and so their +1s) are not everyone's to see (PRIV-01)."""
    if not discussion_ids:
        return {}
    out: dict[int, int] = defaultdict(int)
    for did, post_id, count in session.execute(
        select(Post.discussion_id, Post.id, func.count(Like.id))
        .join(Like, Like.post_id == Post.id)
        .where(Post.discussion_id.in_(discussion_ids))
        .group_by(Post.discussion_id, Post.id)
    ):
        if did not in asked or asked[did][1] == post_id:
            out[did] += int(count)
    return dict(out)


def _question_facts(
    session: Session, discussion_ids: Sequence[int]
) -> dict[int, tuple[access.QuestionFacts, int, access.ListFacts, bool]]:
    """Access facts for the discussions that are questions (with their first post's id
    and whether the question is a prompt, asked by no one): three queries in all."""
    if not discussion_ids:
        return {}
    rows = session.execute(
        select(
            Question.id,
            Question.discussion_id,
            Question.asker_id,
            Question.visibility,
            Question.anonymous,
            Question.kind,
            MailingList.id,
            MailingList.visibility,
            MailingList.posting,
            MailingList.mandatory,
            MailingList.archived_at,
        )
        .join(MailingList, MailingList.id == Question.list_id)
        .where(Question.discussion_id.in_(discussion_ids))
    ).all()
    if not rows:
        return {}
    viewers: dict[int, set[int]] = defaultdict(set)
    for qid, pid in session.execute(
        select(QuestionViewer.question_id, QuestionViewer.person_id).where(
            QuestionViewer.question_id.in_([r[0] for r in rows])
        )
    ):
        viewers[qid].add(pid)
    authors: dict[int, set[int]] = defaultdict(set)
    firsts: dict[int, int] = {}
    for did, author, first in session.execute(
        select(Post.discussion_id, Post.author_id, func.min(Post.id))
        .where(Post.discussion_id.in_([r[1] for r in rows]))
        .group_by(Post.discussion_id, Post.author_id)
    ):
        if author is not None:
            authors[did].add(author)
        firsts[did] = min(first, firsts.get(did, first))
    out = {}
    for qid, did, asker, visibility, anonymous, kind, lid, lvis, lpost, lmand, larch in rows:
        facts = access.QuestionFacts(
            asker_id=asker,
            open=visibility == "open",
            anonymous=anonymous,
            viewers=frozenset(viewers[qid]),
            answerers=0,
        )
        out[did] = (
            replace(facts, answerers=len(authors[did] - facts.leaders)),
            firsts[did],
            access.ListFacts(lid, lvis, lpost, lmand, larch is not None),
            kind is QuestionKind.PROMPT and asker is None,
        )
    return out


def _ledger(session: Session, now: datetime) -> tuple[LedgerEntry, ...]:
    """Open leadership questions (not prompts), oldest first; filtered per member."""
    statuses = questions.question_statuses(session, open_only=True, kind=QuestionKind.QUESTION)
    return tuple(
        LedgerEntry(
            list_id=s.list_id,
            subject=s.subject,
            asker=s.asker,
            age_days=s.age_days(now),
            answered=s.answered,
            asked=s.asked,
            pending_until=s.pending_until,
        )
        for s in statuses
    )


def discussions_for(
    view: MemberView, discussions: Sequence[DiscussionFacts]
) -> list[DiscussionFacts]:
    """The shared discussions trimmed to one member's window (posts after their since)."""
    out = []
    for facts in discussions:
        if facts.list_id not in view.readable_list_ids:
            continue
        posts = tuple(p for p in facts.posts if p.created_at > view.since)
        if facts.question is not None and facts.list_facts is not None:
            posts = visible_question_posts(view, facts, posts)
        if posts:
            out.append(facts if len(posts) == len(facts.posts) else _with_posts(facts, posts))
    return out


def _with_posts(facts: DiscussionFacts, posts: tuple[PostFacts, ...]) -> DiscussionFacts:
    from dataclasses import replace

    return replace(facts, posts=posts)
