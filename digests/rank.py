"""Rank: choose and order what one member's digest says (pure).

Input: a :class:`~digests.facts.MemberView` (what the member may read, has muted, took part
in, and when their last digest was), the batch's :class:`~digests.facts.DiscussionFacts`
(shared by every member of the batch, so they may include lists this member cannot read),
the member's local digest date, and the ``questions`` slot (items the prompts stage fills).
Output: a :class:`~digests.facts.DigestPlan`: numbered items, a count of what else happened,
and (discussion id, reason) for what was left out, for ``mailgate digest preview``.

Visibility comes first: a discussion on a list outside ``member.readable_list_ids`` is
dropped before anything else looks at it, so it cannot reach the items, the ``others``
count or ``left_out`` (the preview is shown to admins, but the plan is per member and must
be safe to show to the member).

A discussion is eligible when it has posts after ``member.since``, is not muted, and not all
of those posts are the member's own. Each eligible discussion takes the highest category it
qualifies for, in this order (the issue's order):

1. ``replies-to-you``: others replied in a discussion the member started or took part in;
2. ``question``: the ``questions`` passed in, in their order;
3. ``announcement``: posts by others on an announce-only list;
4. ``lively``: at least two people wrote in the window; ranked by
   ``participants + 0.5 × (departments − 1)`` (cross-team conversations are what we want
   more of), then by the latest post, then by discussion id;
5. ``new``: started in the window by someone else.

Everything else with activity (one person added to an older discussion) is ``quiet``: not an
item, but counted in ``others``. Items are capped at ``max_items``; ties break on
discussion id so the plan does not depend on the order of the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import NamedTuple

from digests.facts import DigestItem, DigestPlan, DiscussionFacts, MemberView, PostFacts
from mailgate import access
from mailgate.models import Role

KIND_REPLIES = "replies-to-you"
KIND_QUESTION = "question"
KIND_ANNOUNCEMENT = "announcement"
KIND_LIVELY = "lively"
KIND_NEW = "new"

# left_out reasons (kebab-case; shown by `mailgate digest preview` and in logs)
LEFT_MUTED = "muted"
LEFT_OWN_ONLY = "only-your-own-posts"
LEFT_QUIET = "quiet"
LEFT_OVER_LIMIT = "over-limit"

_RANK = {KIND_REPLIES: 0, KIND_QUESTION: 1, KIND_ANNOUNCEMENT: 2, KIND_LIVELY: 3, KIND_NEW: 4}
_ELLIPSIS = "…"


class _Candidate(NamedTuple):
    """An eligible discussion with what ranking needs; the item is built only if chosen.

    A NamedTuple rather than a frozen dataclass: hundreds are made per member and only a
    dozen survive, so construction cost matters (see the performance test).
    """

    kind: str
    sort_key: tuple[float, ...]
    discussion_id: int
    facts: DiscussionFacts | None  # None for a question item passed in
    window: tuple[PostFacts, ...]
    item: DigestItem | None  # set for question items
    tally: int  # new replies (replies-to-you); participants otherwise
    departments: int


def _author_key(post: PostFacts) -> int | str | None:
    # Former members have no person id; their label stands in for identity. A prompt's
    # question has no author at all (None): it is nobody's post and counts as no one.
    if post.author_id is not None:
        return post.author_id
    return post.author_name.casefold() or None


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def make_excerpt(text: str, limit: int) -> str:
    """Whitespace collapsed; cut at a word boundary so the result, "…" included, fits."""
    if limit <= 0:
        return ""
    # Collapsing never shortens a run of non-space characters, so a bounded prefix of the
    # text is enough; this keeps a 20 KB post from costing more than a short one.
    head = text[: limit * 4 + 64]
    words = head.split()
    collapsed = " ".join(words)
    if len(head) < len(text) and len(collapsed) <= limit:
        # The prefix was mostly whitespace: fall back to the whole text (rare).
        collapsed = " ".join(text.split())
    if len(collapsed) <= limit:
        return collapsed
    cut = collapsed[: limit - 1]
    if collapsed[limit - 1] != " ":
        space = cut.rfind(" ")
        if space > 0:
            cut = cut[:space]
    return cut.rstrip() + _ELLIPSIS


def _reason(candidate: _Candidate, started: bool) -> str:
    facts = candidate.facts
    assert facts is not None
    if candidate.kind == KIND_REPLIES:
        replies = _plural(candidate.tally, "new reply", "new replies")
        where = "you started" if started else "you took part in"
        return f"{replies} in a discussion {where}"
    if candidate.kind == KIND_ANNOUNCEMENT:
        return f"announcement on {facts.list_name}"
    if candidate.kind == KIND_LIVELY:
        people = _plural(candidate.tally, "person", "people")
        if not candidate.departments:  # nobody has a department set: say nothing of them
            return f"lively: {people}"
        departments = _plural(candidate.departments, "department", "departments")
        return f"lively: {people} from {departments}"
    return f"new discussion on {facts.list_name}"


def _build_item(candidate: _Candidate, member: MemberView, excerpt_chars: int) -> DigestItem:
    if candidate.item is not None:
        return candidate.item
    facts = candidate.facts
    assert facts is not None
    me = member.person_id
    authors: list[str] = []
    seen: set[int | str] = set()
    people: set[int | str] = set()
    departments: set[str] = set()
    latest_other: PostFacts | None = None
    for post in reversed(candidate.window):  # most recent first
        key = _author_key(post)
        if key is not None:
            people.add(key)
        if post.author_department:
            departments.add(post.author_department)
        if post.author_id == me:
            continue  # the member knows they wrote; "who" means who else
        if latest_other is None:
            latest_other = post
        if key is not None and key not in seen:
            seen.add(key)
            authors.append(post.author_name)
    text = latest_other.text if latest_other is not None else ""
    return DigestItem(
        kind=candidate.kind,
        discussion_id=facts.discussion_id,
        list_slug=facts.list_slug,
        list_name=facts.list_name,
        subject=facts.subject,
        excerpt=make_excerpt(text, excerpt_chars),
        authors=tuple(authors),
        replies=max(facts.total_posts - 1, 0),
        participants=len(people),
        departments=len(departments),
        reason=_reason(candidate, started=facts.started_by_id == me),
        likes=facts.likes,
    )


def _classify(
    facts: DiscussionFacts, window: tuple[PostFacts, ...], member: MemberView
) -> _Candidate | str:
    """The discussion's best category as a candidate, or a left-out reason."""
    me = member.person_id
    # One pass: this runs for every readable discussion of every member.
    from_others = 0
    last_other: PostFacts | None = None
    people: set[int | str] = set()
    for post in window:
        author = post.author_id
        if author is not None:
            people.add(author)
        elif post.author_name:  # a prompt's question (no name) is nobody
            people.add(post.author_name.casefold())
        if author != me:
            from_others += 1
            last_other = post
    if last_other is None:
        return LEFT_OWN_ONLY
    latest = last_other.created_at.timestamp()
    did = facts.discussion_id
    created_in_window = facts.created_at > member.since

    if facts.started_by_id == me or did in member.participated:
        # The opening post of a discussion started in the window is not a reply to anyone.
        replies = from_others
        if created_in_window and window[0].author_id != me:
            replies -= 1
        if replies:
            return _Candidate(KIND_REPLIES, (-latest, did), did, facts, window, None, replies, 0)
    if facts.announce:
        return _Candidate(KIND_ANNOUNCEMENT, (-latest, did), did, facts, window, None, 0, 0)
    participants = len(people)
    if participants >= 2:
        departments = len({p.author_department for p in window if p.author_department})
        # participants + 0.5 * (departments - 1), doubled to stay in integers.
        score = 2 * participants + max(departments - 1, 0)
        lively_key = (-score, -latest, did)
        return _Candidate(
            KIND_LIVELY, lively_key, did, facts, window, None, participants, departments
        )
    if created_in_window:
        new_key = (-facts.created_at.timestamp(), did)
        return _Candidate(KIND_NEW, new_key, did, facts, window, None, participants, 0)
    return LEFT_QUIET


def visible_question_posts(
    view: MemberView, facts: DiscussionFacts, posts: tuple[PostFacts, ...]
) -> tuple[PostFacts, ...]:
    """Only the posts of a question's discussion that ``access`` lets this member see:
    the question, answers when they are shared by name, their own. Anonymous answers
    never appear one by one (only in the summary)."""
    assert facts.question is not None and facts.list_facts is not None
    # The list is readable (checked above), so a member viewer stands for them here.
    viewer = access.Viewer(view.person_id, True, Role.MEMBER)
    return tuple(
        p
        for p in posts
        if access.may_see_question_post(
            facts.question,
            facts.list_facts,
            viewer,
            author_id=p.author_id,
            is_question=p.post_id == facts.question_post_id,
            parent_author_id=None,
        )
    )


def plan_digest(
    member: MemberView,
    discussions: Sequence[DiscussionFacts],
    *,
    local_date: date,
    max_items: int = 12,
    excerpt_chars: int = 200,
    questions: Sequence[DigestItem] = (),
) -> DigestPlan:
    """Choose, rank and cap the items of one member's digest for ``local_date``."""
    readable = member.readable_list_ids
    since: datetime = member.since
    unreadable_ids: set[int] = set()
    active: set[int] = set()  # readable discussions with posts in the window
    candidates: dict[int, _Candidate] = {}
    skipped: dict[int, str] = {}
    for facts in discussions:
        did = facts.discussion_id
        if facts.list_id not in readable:
            unreadable_ids.add(did)
            continue
        if did in candidates or did in skipped:
            continue  # a duplicate row; the first one stands
        posts = facts.posts
        if facts.question is not None and facts.list_facts is not None:
            # A question's answers reach this member only as access allows (PRIV-01).
            posts = visible_question_posts(member, facts, posts)
            facts = replace(facts, posts=posts, total_posts=len(posts))
        if posts and posts[0].created_at > since:
            window = posts  # oldest first (facts.DiscussionFacts): all of them are new
        else:
            window = tuple(p for p in posts if p.created_at > since)
        if not window:
            continue  # nothing new since the last digest: not activity at all
        active.add(did)
        if did in member.muted:
            skipped[did] = LEFT_MUTED
            continue
        verdict = _classify(facts, window, member)
        if isinstance(verdict, str):
            skipped[did] = verdict
        else:
            candidates[did] = verdict

    # Questions take their slot unless the discussion already has a higher category. A
    # question pointing at a discussion we know is unreadable (or muted) is dropped: the
    # prompts stage should never produce one, and this stage is where visibility is final.
    question_candidates: list[_Candidate] = []
    seen_questions: set[int] = set()
    for position, question in enumerate(questions):
        qid = question.discussion_id
        if qid in unreadable_ids or qid in member.muted or qid in seen_questions:
            continue
        seen_questions.add(qid)
        existing = candidates.get(qid)
        if existing is not None and _RANK[existing.kind] < _RANK[KIND_QUESTION]:
            continue
        candidates.pop(qid, None)
        skipped.pop(qid, None)  # a quiet or own-only discussion can still hold a question
        question_candidates.append(
            _Candidate(KIND_QUESTION, (float(position),), qid, None, (), question, 0, 0)
        )

    ranked = sorted(
        [*candidates.values(), *question_candidates],
        key=lambda c: (_RANK[c.kind], c.sort_key),
    )
    limit = max(max_items, 0)
    chosen = ranked[:limit]
    cut = ranked[limit:]
    items = tuple(_build_item(c, member, excerpt_chars) for c in chosen)

    others = sum(1 for c in cut if c.discussion_id in active)
    others += sum(1 for reason in skipped.values() if reason == LEFT_QUIET)
    left_out = [(c.discussion_id, LEFT_OVER_LIMIT) for c in cut]
    left_out.extend(sorted(skipped.items()))
    return DigestPlan(
        person_id=member.person_id,
        local_date=local_date,
        items=items,
        others=others,
        left_out=tuple(left_out),
    )
