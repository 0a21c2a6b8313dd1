"""Engagement: how much the company (or one list) talks, answers and takes part.

Three stages, kept apart so the arithmetic can be tested without a database:

- :func:`gather_engagement` (adapter): a handful of queries over posts, discussions,
  people, memberships, questions and asks, restricted to one list or to the whole
  company, returning plain :class:`EngagementFacts`.
- :func:`compute_stats` (pure): facts + the window ``[since, now)`` →
  :class:`EngagementStats`. ``now`` is injected; nothing here reads the clock.
- :func:`render_html` / :func:`stats_as_json` (pure): the report as a self-contained HTML
  page (``templates/stats/report.html``: inline CSS, inline SVG charts, no JavaScript, no
  external resources) or as a JSON-safe dict.

Definitions (the report's footnotes say the same):

- The window is ``since <= t < now``, in UTC. Weeks are ISO weeks in UTC, labelled like
  ``PromptRun.week`` (``2026-W05``); the first and last may be partial.
- *Active members*: distinct authors of posts in the window. *Members*: active people
  in the directory, or with a list the list's memberships of active people.
- *Response rate*: of the asks sent in the window, the share answered by ``now``; one
  rate for leaders' questions and one for prompts.
- *Time to first answer*: per question or prompt run created in the window, its first
  answer (by ``now``) minus its creation; the median in hours over those answered.
- *Cross-department discussion*: a discussion whose posts in the window come from people
  of at least two distinct, non-empty departments.
- *Unanswered questions*: leaders' questions (not prompts) created in the window with no
  answer by ``now``.

With a list, questions count when the question's audience list (``Question.list_id``) is
that list; company-wide questions belong to their system list.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailgate.models import Ask, Discussion, Membership, Person, Post, Question, QuestionKind
from mailgate.notices import template_env

# ---------------------------------------------------------------- value objects


@dataclass(frozen=True)
class PostFact:
    discussion_id: int
    author_id: int | None  # None: the author left the directory (erased)
    department: str  # the author's department, "" when unknown
    is_reply: bool
    created_at: datetime


@dataclass(frozen=True)
class AskFact:
    question_id: int
    kind: QuestionKind
    sent_at: datetime
    answered_at: datetime | None


@dataclass(frozen=True)
class QuestionFact:
    question_id: int
    kind: QuestionKind
    created_at: datetime
    first_answered_at: datetime | None


@dataclass(frozen=True)
class EngagementFacts:
    """What the database said; :func:`compute_stats` filters by the window again, so
    facts from outside it are harmless."""

    members: int
    posts: tuple[PostFact, ...] = ()
    # Who the members are: only their posts make them "active" (posts by people who
    # left the list, or answers on the company's question list, would push
    # participation past 100 %). None: every author counts (pure tests).
    member_ids: frozenset[int] | None = None
    discussions_started: tuple[datetime, ...] = ()  # Discussion.created_at
    asks: tuple[AskFact, ...] = ()
    questions: tuple[QuestionFact, ...] = ()


@dataclass(frozen=True)
class ResponseRate:
    sent: int
    answered: int

    @property
    def rate(self) -> float | None:
        return self.answered / self.sent if self.sent else None


@dataclass(frozen=True)
class WeekParticipation:
    week: str  # ISO week, e.g. 2026-W05
    starts: date  # its Monday
    authors: int  # distinct authors of posts that week
    posts: int


@dataclass(frozen=True)
class EngagementStats:
    since: datetime
    until: datetime
    members: int
    active_members: int
    posts: int
    replies: int
    new_discussions: int
    questions: ResponseRate
    prompts: ResponseRate
    median_hours_to_first_answer: float | None
    cross_department_discussions: int
    unanswered_questions: int
    weeks: tuple[WeekParticipation, ...]
    other_authors: int = 0  # authors in the window who are not (or no longer) members

    @property
    def participation(self) -> float | None:
        """Active members as a share of members (None without members)."""
        return self.active_members / self.members if self.members else None


# ---------------------------------------------------------------- compute (pure)


def iso_week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def compute_stats(facts: EngagementFacts, since: datetime, now: datetime) -> EngagementStats:
    """The report's figures for the window ``since <= t < now``."""
    if since >= now:
        raise ValueError(f"the window is empty: since {since.isoformat()} is not before now")

    def inside(moment: datetime) -> bool:
        return since <= moment < now

    def answered(moment: datetime | None) -> bool:
        # Answers "by now": a report for a past window must not count later answers.
        return moment is not None and moment < now

    posts = [p for p in facts.posts if inside(p.created_at)]
    authors = {p.author_id for p in posts if p.author_id is not None}
    members = authors if facts.member_ids is None else authors & facts.member_ids

    departments: dict[int, set[str]] = defaultdict(set)
    for p in posts:
        if p.department.strip():
            departments[p.discussion_id].add(p.department.strip())

    rates: dict[QuestionKind, ResponseRate] = {}
    for kind in QuestionKind:
        sent = [a for a in facts.asks if a.kind is kind and inside(a.sent_at)]
        rates[kind] = ResponseRate(len(sent), sum(answered(a.answered_at) for a in sent))

    new_questions = [q for q in facts.questions if inside(q.created_at)]
    waits = [
        (q.first_answered_at - q.created_at).total_seconds() / 3600
        for q in new_questions
        if q.first_answered_at is not None and answered(q.first_answered_at)
    ]

    return EngagementStats(
        since=since,
        until=now,
        members=facts.members,
        active_members=len(members),
        other_authors=len(authors - members),
        posts=len(posts),
        replies=sum(p.is_reply for p in posts),
        new_discussions=sum(inside(at) for at in facts.discussions_started),
        questions=rates[QuestionKind.QUESTION],
        prompts=rates[QuestionKind.PROMPT],
        median_hours_to_first_answer=statistics.median(waits) if waits else None,
        cross_department_discussions=sum(len(d) >= 2 for d in departments.values()),
        unanswered_questions=sum(
            q.kind is QuestionKind.QUESTION and not answered(q.first_answered_at)
            for q in new_questions
        ),
        weeks=_weekly(posts, since, now),
    )


def _weekly(posts: list[PostFact], since: datetime, now: datetime) -> tuple[WeekParticipation, ...]:
    """One row per ISO week touching the window, oldest first, empty weeks included."""
    first = since.astimezone(UTC).date()
    last = (now - timedelta(microseconds=1)).astimezone(UTC).date()  # the window is open
    monday = first - timedelta(days=first.weekday())
    by_week: dict[date, list[PostFact]] = defaultdict(list)
    for p in posts:
        day = p.created_at.astimezone(UTC).date()
        by_week[day - timedelta(days=day.weekday())].append(p)
    weeks = []
    while monday <= last:
        these = by_week.get(monday, [])
        weeks.append(
            WeekParticipation(
                week=iso_week(monday),
                starts=monday,
                authors=len({p.author_id for p in these if p.author_id is not None}),
                posts=len(these),
            )
        )
        monday += timedelta(days=7)
    return tuple(weeks)


# ---------------------------------------------------------------- gather (database)


def gather_engagement(
    session: Session, *, list_id: int | None, since: datetime, now: datetime
) -> EngagementFacts:
    """The facts for ``[since, now)``: one list's with ``list_id``, else the company's.

    Five queries, whatever the size of the window: posts with their authors'
    departments, discussions started, members, asks sent, questions created with their
    first answer.
    """
    post_rows = select(
        Post.discussion_id,
        Post.author_id,
        Person.department,
        Post.parent_id.is_not(None),
        Post.created_at,
    ).outerjoin(Person, Person.id == Post.author_id)
    post_rows = post_rows.where(Post.created_at >= since, Post.created_at < now)

    started = select(Discussion.created_at).where(
        Discussion.created_at >= since, Discussion.created_at < now
    )

    if list_id is None:
        members = select(Person.id).where(Person.active.is_(True))
    else:
        members = (
            select(Membership.person_id)
            .join(Person, Person.id == Membership.person_id)
            .where(Membership.list_id == list_id, Person.active.is_(True))
        )

    asks = (
        select(Ask.question_id, Question.kind, Ask.sent_at, Ask.answered_at)
        .join(Question, Question.id == Ask.question_id)
        .where(Ask.sent_at >= since, Ask.sent_at < now)
    )

    created_in_window = select(Question.id).where(
        Question.created_at >= since, Question.created_at < now
    )
    first_answer = (
        # Only the window's questions, so the aggregate does not scan every answer ever.
        select(Ask.question_id, func.min(Ask.answered_at).label("first"))
        .where(
            Ask.question_id.in_(created_in_window),
            Ask.answered_at.is_not(None),
            Ask.answered_at < now,
        )
        .group_by(Ask.question_id)
        .subquery()
    )
    questions = (
        select(Question.id, Question.kind, Question.created_at, first_answer.c.first)
        .outerjoin(first_answer, first_answer.c.question_id == Question.id)
        .where(Question.created_at >= since, Question.created_at < now)
    )

    if list_id is not None:
        post_rows = post_rows.where(Post.list_id == list_id)
        started = started.where(Discussion.list_id == list_id)
        asks = asks.where(Question.list_id == list_id)
        questions = questions.where(Question.list_id == list_id)

    member_ids = frozenset(session.scalars(members))
    return EngagementFacts(
        members=len(member_ids),
        member_ids=member_ids,
        posts=tuple(
            PostFact(discussion, author, department or "", bool(reply), created)
            for discussion, author, department, reply, created in session.execute(post_rows)
        ),
        discussions_started=tuple(session.scalars(started)),
        asks=tuple(
            AskFact(question, QuestionKind(kind), sent, answered_at)
            for question, kind, sent, answered_at in session.execute(asks)
            if sent is not None  # always, by the window; this tells the type checker
        ),
        questions=tuple(
            QuestionFact(question, QuestionKind(kind), created, first)
            for question, kind, created, first in session.execute(questions)
        ),
    )


# ---------------------------------------------------------------- output (pure)

CHART_BAR = 48  # px: width of one bar
CHART_GAP = 24  # px: space between bars, room for the week label
CHART_HEIGHT = 160  # px: the tallest bar
CHART_TOP = 20  # px above the tallest bar for its value
CHART_BOTTOM = 24  # px below the bars for the week label


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def stats_as_json(stats: EngagementStats) -> dict[str, Any]:
    """The figures as JSON-safe values: ISO datetimes, floats to 3 decimals."""

    def rate(r: ResponseRate) -> dict[str, Any]:
        return {"sent": r.sent, "answered": r.answered, "rate": _rounded(r.rate)}

    return {
        "since": stats.since.isoformat(),
        "until": stats.until.isoformat(),
        "members": stats.members,
        "active_members": stats.active_members,
        "other_authors": stats.other_authors,
        "participation": _rounded(stats.participation),
        "posts": stats.posts,
        "replies": stats.replies,
        "new_discussions": stats.new_discussions,
        "response_rate": {"question": rate(stats.questions), "prompt": rate(stats.prompts)},
        "median_hours_to_first_answer": _rounded(stats.median_hours_to_first_answer),
        "cross_department_discussions": stats.cross_department_discussions,
        "unanswered_questions": stats.unanswered_questions,
        "weekly": [
            {"week": w.week, "starts": w.starts.isoformat(), "authors": w.authors, "posts": w.posts}
            for w in stats.weeks
        ],
    }


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    description: str  # "2026-W10: 1 post", the bar's <title>
    x: int
    y: int
    height: int

    @property
    def center(self) -> int:
        return self.x + CHART_BAR // 2


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    bar_width: int
    width: int
    height: int
    baseline: int
    bars: tuple[Bar, ...]


def bar_chart(
    chart_id: str, title: str, units: tuple[str, str], points: list[tuple[str, int]]
) -> Chart:
    """Bar geometry for the template: heights scaled to the largest value. ``units`` is
    the singular and plural, e.g. ``("post", "posts")``, for each bar's description."""
    peak = max((value for _, value in points), default=0)
    baseline = CHART_TOP + CHART_HEIGHT
    bars = []
    for i, (label, value) in enumerate(points):
        height = round(CHART_HEIGHT * value / peak) if peak else 0
        x = CHART_GAP // 2 + i * (CHART_BAR + CHART_GAP)
        unit = units[0] if value == 1 else units[1]
        bars.append(Bar(label, value, f"{label}: {value} {unit}", x, baseline - height, height))
    return Chart(
        id=chart_id,
        title=title,
        bar_width=CHART_BAR,
        width=max(1, len(points)) * (CHART_BAR + CHART_GAP),
        height=baseline + CHART_BOTTOM,
        baseline=baseline,
        bars=tuple(bars),
    )


NO_DATA = "\u2013"  # an en dash: nothing to count yet, which is not 0


def percent(value: float | None, why: str = "nothing to count yet") -> str:
    """A rate for people to read: "42%", or "– (why)" when there was nothing to count
    (a rate of nothing is not 0 %)."""
    return f"{NO_DATA} ({why})" if value is None else f"{value:.0%}"


def duration(hours: float | None) -> str:
    """A median wait for people to read: "3.5 h", "12 min" under an hour (a quick answer
    is not "0.0 h"), or "– (why)" when nothing was answered yet."""
    if hours is None:
        return f"{NO_DATA} (no question answered yet in this window)"
    if hours < 1:
        return f"{max(1, round(hours * 60))} min"
    return f"{hours:.1f} h"


def rate_text(rate: float | None, answered: int, sent: int, what: str) -> str:
    if rate is None:
        return f"{NO_DATA} (no {what} sent in this window)"
    return f"{rate:.0%} ({answered} of {sent} asks)"


WHY_NO_MEMBERS = "no members"


def render_html(stats: EngagementStats, title: str) -> str:
    """The report as one self-contained HTML page."""
    weeks = stats.weeks
    charts = (
        bar_chart(
            "authors",
            "Distinct authors per week",
            ("author", "authors"),
            [(w.week, w.authors) for w in weeks],
        ),
        bar_chart("posts", "Posts per week", ("post", "posts"), [(w.week, w.posts) for w in weeks]),
    )
    hours = stats.median_hours_to_first_answer
    figures = [
        ("Members", str(stats.members)),
        ("Active members", str(stats.active_members)),
        ("Participation", percent(stats.participation, WHY_NO_MEMBERS)),
        ("Posts", str(stats.posts)),
        ("Replies", str(stats.replies)),
        ("New discussions", str(stats.new_discussions)),
        ("Cross-department discussions", str(stats.cross_department_discussions)),
        (
            "Questions answered",
            rate_text(
                stats.questions.rate, stats.questions.answered, stats.questions.sent, "questions"
            ),
        ),
        (
            "Prompts answered",
            rate_text(stats.prompts.rate, stats.prompts.answered, stats.prompts.sent, "prompts"),
        ),
        ("Median time to first answer", duration(hours)),
        ("Unanswered questions", str(stats.unanswered_questions)),
    ]
    if stats.other_authors:
        figures.insert(2, ("Other authors (not members)", str(stats.other_authors)))
    return (
        template_env()
        .get_template("stats/report.html")
        .render(
            title=title,
            since=stats.since.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            until=stats.until.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            figures=figures,
            charts=charts,
            weeks=weeks,
        )
    )
