"""Engagement statistics: the pure arithmetic on hand-made facts, the gather step against
a real database (SQLite and PostgreSQL), and the HTML and JSON renderings."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from itertools import count

import pytest

from digests.engagement import (
    CHART_HEIGHT,
    AskFact,
    EngagementFacts,
    EngagementStats,
    PostFact,
    QuestionFact,
    bar_chart,
    compute_stats,
    gather_engagement,
    iso_week,
    render_html,
    stats_as_json,
)
from mailgate.models import (
    Ask,
    Discussion,
    MailingList,
    Membership,
    Person,
    Post,
    Question,
    QuestionKind,
)

Q, P = QuestionKind.QUESTION, QuestionKind.PROMPT
SINCE = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday: 2026-W10
NOW = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)  # Wednesday of 2026-W12


def at(day: int, hour: int = 12) -> datetime:
    """A moment in March 2026 (UTC)."""
    return datetime(2026, 3, day, hour, tzinfo=UTC)


def post(
    discussion: int = 1,
    author: int | None = 1,
    department: str = "",
    when: datetime | None = None,
    reply: bool = False,
) -> PostFact:
    return PostFact(discussion, author, department, reply, when or at(3))


# ---------------------------------------------------------------- pure: compute_stats


@pytest.mark.parametrize(
    ("since", "now", "weeks"),
    [
        (SINCE, NOW, ["2026-W10", "2026-W11", "2026-W12"]),
        # A window ending exactly at Monday midnight does not touch that week.
        (SINCE, datetime(2026, 3, 16, tzinfo=UTC), ["2026-W10", "2026-W11"]),
        # A window starting mid-week takes the whole ISO week as its first row.
        (at(4), at(5), ["2026-W10"]),
        # ISO years: 2025-12-29 is in 2026-W01, 2025-12-28 in 2025-W52.
        (
            datetime(2025, 12, 27, tzinfo=UTC),
            datetime(2026, 1, 6, tzinfo=UTC),
            ["2025-W52", "2026-W01", "2026-W02"],
        ),
    ],
)
def test_weeks_cover_the_window_oldest_first(
    since: datetime, now: datetime, weeks: list[str]
) -> None:
    stats = compute_stats(EngagementFacts(members=0), since, now)
    assert [w.week for w in stats.weeks] == weeks
    assert all(w.starts.weekday() == 0 for w in stats.weeks)
    assert [(w.authors, w.posts) for w in stats.weeks] == [(0, 0)] * len(weeks)


def test_weekly_participation_keeps_weeks_without_posts() -> None:
    facts = EngagementFacts(
        members=5,
        posts=(
            post(author=1, when=at(2, 0)),
            post(author=1, when=at(3)),
            post(author=2, when=at(8, 23)),
            post(author=None, when=at(17)),  # an erased author: a post, not an author
            post(author=3, when=at(18, 11)),
            post(author=3, when=at(18, 12)),  # at now: outside the window
            post(author=4, when=at(1)),  # before since
        ),
    )
    stats = compute_stats(facts, SINCE, NOW)
    assert [(w.week, w.starts, w.authors, w.posts) for w in stats.weeks] == [
        ("2026-W10", date(2026, 3, 2), 2, 3),
        ("2026-W11", date(2026, 3, 9), 0, 0),
        ("2026-W12", date(2026, 3, 16), 1, 2),
    ]
    assert (stats.posts, stats.active_members, stats.members) == (5, 3, 5)
    assert stats.participation == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("waits_in_hours", "median"),
    [
        ([], None),
        ([5.0], 5.0),
        ([1.0, 2.0, 10.0], 2.0),
        ([10.0, 1.0, 4.0, 2.0], 3.0),  # even count: the mean of the middle two
        ([0.5, 1.5], 1.0),
    ],
)
def test_median_time_to_first_answer(waits_in_hours: list[float], median: float | None) -> None:
    created = at(3, 9)
    questions = tuple(
        QuestionFact(i, Q if i % 2 else P, created, created + timedelta(hours=h))
        for i, h in enumerate(waits_in_hours)
    )
    stats = compute_stats(EngagementFacts(members=0, questions=questions), SINCE, NOW)
    assert stats.median_hours_to_first_answer == median


def test_median_ignores_unanswered_late_and_older_questions() -> None:
    questions = (
        QuestionFact(1, Q, at(3, 9), at(3, 11)),  # 2 h
        QuestionFact(2, Q, at(4, 9), None),  # never answered
        QuestionFact(3, Q, at(5, 9), at(19)),  # answered after now
        QuestionFact(4, Q, at(1, 9), at(2, 9)),  # created before the window
        QuestionFact(5, P, at(6, 9), at(6, 15)),  # 6 h
    )
    stats = compute_stats(EngagementFacts(members=0, questions=questions), SINCE, NOW)
    assert stats.median_hours_to_first_answer == 4.0
    assert stats.unanswered_questions == 2  # 2 and 3; 4 is older, 5 is a prompt


def test_unanswered_questions_count_questions_not_prompts() -> None:
    questions = (
        QuestionFact(1, Q, at(3), None),
        QuestionFact(2, P, at(3), None),
        QuestionFact(3, Q, at(3), at(4)),
        QuestionFact(4, Q, at(18, 13), None),  # after now
    )
    stats = compute_stats(EngagementFacts(members=0, questions=questions), SINCE, NOW)
    assert stats.unanswered_questions == 1


@pytest.mark.parametrize(
    ("posts", "expected"),
    [
        ([], 0),
        ([post(1, 1, "Eng"), post(1, 2, "Eng")], 0),  # one department
        ([post(1, 1, "Eng"), post(1, 2, "Sales")], 1),
        ([post(1, 1, "Eng"), post(1, 2, "")], 0),  # no department is not a department
        ([post(1, 1, "Eng"), post(1, 2, "   ")], 0),
        ([post(1, 1, "Eng"), post(1, 2, " Eng ")], 0),  # the same, padded
        ([post(1, 1, "Eng"), post(1, None, "")], 0),
        ([post(1, 1, "Eng"), post(2, 2, "Sales")], 0),  # two discussions, one each
        ([post(1, 1, "Eng"), post(1, 2, "Sales", when=at(1))], 0),  # one post before since
        (
            [
                post(1, 1, "Eng"),
                post(1, 2, "Sales"),
                post(2, 3, "Support"),
                post(2, 4, "Legal"),
                post(2, 5, "Eng"),
                post(3, 1, "Eng"),
            ],
            2,
        ),
    ],
)
def test_cross_department_discussions(posts: list[PostFact], expected: int) -> None:
    stats = compute_stats(EngagementFacts(members=0, posts=tuple(posts)), SINCE, NOW)
    assert stats.cross_department_discussions == expected


def test_response_rates_per_kind() -> None:
    asks = (
        AskFact(1, Q, at(3), at(3, 14)),
        AskFact(1, Q, at(3), None),
        AskFact(1, Q, at(3), at(19)),  # answered after now: not yet answered
        AskFact(2, Q, at(1), at(3)),  # sent before the window
        AskFact(3, P, at(10), at(10, 13)),
        AskFact(3, P, at(10), at(11)),
    )
    stats = compute_stats(EngagementFacts(members=0, asks=asks), SINCE, NOW)
    assert (stats.questions.sent, stats.questions.answered) == (3, 1)
    assert stats.questions.rate == pytest.approx(1 / 3)
    assert (stats.prompts.sent, stats.prompts.answered, stats.prompts.rate) == (2, 2, 1.0)


def test_rates_and_participation_are_none_without_data() -> None:
    stats = compute_stats(EngagementFacts(members=0), SINCE, NOW)
    assert stats.questions.rate is None and stats.prompts.rate is None
    assert stats.participation is None and stats.median_hours_to_first_answer is None


def test_posts_replies_and_new_discussions() -> None:
    facts = EngagementFacts(
        members=3,
        posts=(post(1, 1), post(1, 2, reply=True), post(2, 3, reply=True), post(2, 3, when=at(1))),
        discussions_started=(at(3), at(18, 11), at(1), at(18, 12)),
    )
    stats = compute_stats(facts, SINCE, NOW)
    assert (stats.posts, stats.replies, stats.new_discussions) == (3, 2, 2)


@pytest.mark.parametrize("now", [SINCE, SINCE - timedelta(seconds=1)])
def test_an_empty_window_is_refused(now: datetime) -> None:
    with pytest.raises(ValueError, match="window is empty"):
        compute_stats(EngagementFacts(members=0), SINCE, now)


@pytest.mark.parametrize(
    ("day", "label"),
    [
        (date(2026, 3, 2), "2026-W10"),
        (date(2026, 1, 1), "2026-W01"),
        (date(2027, 1, 1), "2026-W53"),
        (date(2025, 12, 29), "2026-W01"),
    ],
)
def test_iso_week_labels(day: date, label: str) -> None:
    assert iso_week(day) == label


# ---------------------------------------------------------------- pure: output


def sample_stats() -> EngagementStats:
    facts = EngagementFacts(
        members=3,
        posts=(post(1, 1, "Eng"), post(1, 2, "Sales", reply=True), post(2, 2, when=at(17))),
        discussions_started=(at(3),),
        asks=(AskFact(1, Q, at(3), at(3, 14)), AskFact(1, Q, at(3), None)),
        # answered after 2 h 20 min
        questions=(QuestionFact(1, Q, at(3, 12), at(3, 14) + timedelta(minutes=20)),),
    )
    return compute_stats(facts, SINCE, NOW)


def test_stats_as_json_is_json_safe_and_rounded() -> None:
    data = stats_as_json(sample_stats())
    assert json.loads(json.dumps(data)) == data
    assert data["since"] == "2026-03-02T00:00:00+00:00"
    assert data["until"] == "2026-03-18T12:00:00+00:00"
    assert data["participation"] == 0.667
    assert data["response_rate"] == {
        "question": {"sent": 2, "answered": 1, "rate": 0.5},
        "prompt": {"sent": 0, "answered": 0, "rate": None},
    }
    assert data["median_hours_to_first_answer"] == 2.333
    assert (data["posts"], data["replies"], data["cross_department_discussions"]) == (3, 1, 1)
    assert data["weekly"] == [
        {"week": "2026-W10", "starts": "2026-03-02", "authors": 2, "posts": 2},
        {"week": "2026-W11", "starts": "2026-03-09", "authors": 0, "posts": 0},
        {"week": "2026-W12", "starts": "2026-03-16", "authors": 1, "posts": 1},
    ]


def test_bar_chart_scales_to_the_tallest_bar() -> None:
    units = ("post", "posts")
    chart = bar_chart("c", "Posts", units, [("2026-W10", 4), ("2026-W11", 1), ("2026-W12", 2)])
    assert [b.height for b in chart.bars] == [CHART_HEIGHT, CHART_HEIGHT // 4, CHART_HEIGHT // 2]
    assert [b.description for b in chart.bars] == [
        "2026-W10: 4 posts",
        "2026-W11: 1 post",
        "2026-W12: 2 posts",
    ]
    assert all(b.y + b.height == chart.baseline for b in chart.bars)
    xs = [b.x for b in chart.bars]
    assert xs == sorted(xs) and xs[-1] + chart.bar_width <= chart.width
    empty = bar_chart("c", "Posts", units, [("2026-W10", 0)])
    assert [b.height for b in empty.bars] == [0]


def test_render_html_is_self_contained_with_two_accessible_charts() -> None:
    html = render_html(sample_stats(), "Engagement <eng> & friends")
    assert html.startswith("<!DOCTYPE html>")
    assert "<title>Engagement &lt;eng&gt; &amp; friends</title>" in html
    assert "<eng>" not in html  # autoescaped
    assert html.count("<svg") == 2
    assert '<title id="authors-title">Distinct authors per week</title>' in html
    assert '<title id="posts-title">Posts per week</title>' in html
    for week in ("2026-W10", "2026-W11", "2026-W12"):
        # a label under each bar in both charts, and a row in the table fallback
        assert html.count(f">{week}</text>") == 2
        assert f'<th scope="row">{week}</th>' in html
    assert "<title>2026-W10: 2 authors</title>" in html
    assert "<title>2026-W10: 2 posts</title>" in html
    assert "<title>2026-W12: 1 author</title>" in html
    assert "<table>" in html and "Weekly participation" in html
    lowered = html.lower()
    for forbidden in ("<script", "javascript:", "src=", "href=", "@import", "url("):
        assert forbidden not in lowered, forbidden
    # The only URL is the SVG namespace, which names no resource to load.
    assert re.findall(r"https?://[^\"' ]+", html) == ["http://www.w3.org/2000/svg"] * 2
    assert "2.3 h" in html and "50% (1 of 2 asks)" in html


# ---------------------------------------------------------------- gather (database)


def build_world(session):  # type: ignore[no-untyped-def]
    """Two lists, a system list, five people, four discussions, five questions.

    Numbers the tests below expect are worked out next to each row.
    """
    keys = count(1)
    eng = MailingList(slug="eng", name="Engineering")
    sales = MailingList(slug="sales", name="Sales")
    everyone = MailingList(slug="all", name="Everyone")
    session.add_all([eng, sales, everyone])
    ana = Person(name="Ana", department="Eng")
    bo = Person(name="Bo", department="Sales")
    cy = Person(name="Cy", department="Eng")
    dee = Person(name="Dee", department="")
    eve = Person(name="Eve", department="Eng", active=False)
    session.add_all([ana, bo, cy, dee, eve])
    session.flush()
    session.add_all(Membership(list_id=eng.id, person_id=p.id) for p in (ana, bo, cy, eve))
    session.add(Membership(list_id=sales.id, person_id=bo.id))

    def discussion(ml: MailingList, created: datetime) -> Discussion:
        d = Discussion(list_id=ml.id, subject="s", created_at=created, last_post_at=created)
        session.add(d)
        session.flush()
        return d

    def write(d: Discussion, author: Person, created: datetime, parent: Post | None = None) -> Post:
        n = next(keys)
        p = Post(
            discussion_id=d.id,
            list_id=d.list_id,
            author_id=author.id,
            parent_id=parent.id if parent else None,
            message_id=f"m{n}@corp.example",
            message_key=f"{n:064d}",
            text="hello",
            created_at=created,
        )
        session.add(p)
        session.flush()
        return p

    # eng: a new discussion across Eng and Sales, in week 10.
    d1 = discussion(eng, at(3, 9))
    root = write(d1, ana, at(3, 9))
    write(d1, bo, at(4, 10), root)
    write(d1, cy, at(4, 11), root)
    # eng: an older discussion with one reply in week 11 (Eng only in the window).
    d2 = discussion(eng, datetime(2026, 2, 20, tzinfo=UTC))
    old = write(d2, ana, datetime(2026, 2, 20, tzinfo=UTC))
    write(d2, cy, at(10), old)
    # sales: a new discussion in week 12, one author without a department.
    d3 = discussion(sales, at(17, 8))
    top = write(d3, bo, at(17, 8))
    write(d3, dee, at(17, 9), top)
    write(d3, bo, at(18, 13), top)  # after now

    def question(ml: MailingList, kind: QuestionKind, created: datetime, asks: list[tuple]) -> None:
        q = Question(
            discussion_id=discussion(ml, created).id,
            list_id=ml.id,
            kind=kind,
            company_wide=ml is everyone,
            created_at=created,
        )
        session.add(q)
        session.flush()
        for person, sent, answered in asks:
            session.add(
                Ask(
                    question_id=q.id,
                    person_id=person.id,
                    due_at=sent or at(20),
                    sent_at=sent,
                    answered_at=answered,
                )
            )

    # Q1, eng: first answer after 2 h; 3 sent, 2 answered.
    question(
        eng,
        Q,
        at(5, 10),
        [(ana, at(5, 10), at(5, 12)), (bo, at(5, 10), at(6, 10)), (cy, at(5, 10), None)],
    )
    # Q2, an eng prompt run: first answer after 6 h; 2 sent, 1 answered.
    question(eng, P, at(9, 9), [(ana, at(9, 9), at(9, 15)), (bo, at(9, 9), None)])
    # Q3, company-wide: the only answer comes after now, so it is unanswered.
    question(everyone, Q, at(10, 8), [(dee, at(10, 8), at(18, 13)), (ana, at(10, 8), None)])
    # Q4, eng, created before the window but asked inside it: a rate, not a median.
    question(eng, Q, datetime(2026, 2, 25, tzinfo=UTC), [(cy, at(2, 9), at(2, 10))])
    # Q5, sales: first answer after 10 h; one ask not sent yet.
    question(sales, Q, at(12, 0), [(bo, at(12, 0), at(12, 10)), (eve, None, None)])
    session.flush()
    return eng, sales


def test_gather_and_compute_for_the_company(session) -> None:  # type: ignore[no-untyped-def]
    build_world(session)
    facts = gather_engagement(session, list_id=None, since=SINCE, now=NOW)
    stats = compute_stats(facts, SINCE, NOW)
    assert stats_as_json(stats) == {
        "since": "2026-03-02T00:00:00+00:00",
        "until": "2026-03-18T12:00:00+00:00",
        "members": 4,  # active people: Eve is not
        "active_members": 4,
        "other_authors": 0,
        "participation": 1.0,
        "posts": 6,
        "replies": 4,
        "new_discussions": 6,  # d1, d3 and the discussions of Q1, Q2, Q3, Q5
        "response_rate": {
            "question": {"sent": 7, "answered": 4, "rate": 0.571},
            "prompt": {"sent": 2, "answered": 1, "rate": 0.5},
        },
        "median_hours_to_first_answer": 6.0,  # 2, 6, 10
        "cross_department_discussions": 1,
        "unanswered_questions": 1,
        "weekly": [
            {"week": "2026-W10", "starts": "2026-03-02", "authors": 3, "posts": 3},
            {"week": "2026-W11", "starts": "2026-03-09", "authors": 1, "posts": 1},
            {"week": "2026-W12", "starts": "2026-03-16", "authors": 2, "posts": 2},
        ],
    }


def test_gather_and_compute_for_one_list(session) -> None:  # type: ignore[no-untyped-def]
    eng, sales = build_world(session)
    stats = compute_stats(
        gather_engagement(session, list_id=eng.id, since=SINCE, now=NOW), SINCE, NOW
    )
    data = stats_as_json(stats)
    assert (data["members"], data["active_members"], data["posts"], data["replies"]) == (3, 3, 4, 3)
    assert data["new_discussions"] == 3  # d1 and the discussions of Q1 and Q2
    assert data["response_rate"] == {
        "question": {"sent": 4, "answered": 3, "rate": 0.75},  # Q1 and Q4
        "prompt": {"sent": 2, "answered": 1, "rate": 0.5},
    }
    assert data["median_hours_to_first_answer"] == 4.0  # 2 and 6: an even count
    assert (data["cross_department_discussions"], data["unanswered_questions"]) == (1, 0)
    assert [(w["week"], w["authors"], w["posts"]) for w in data["weekly"]] == [
        ("2026-W10", 3, 3),
        ("2026-W11", 1, 1),
        ("2026-W12", 0, 0),
    ]

    sales_stats = compute_stats(
        gather_engagement(session, list_id=sales.id, since=SINCE, now=NOW), SINCE, NOW
    )
    # Two authors, one of them not in sales: participation stays at 100 % (issue 17).
    assert (sales_stats.members, sales_stats.posts, sales_stats.active_members) == (1, 2, 1)
    assert sales_stats.other_authors == 1 and sales_stats.participation == 1.0
    assert sales_stats.median_hours_to_first_answer == 10.0
    assert sales_stats.questions.sent == 1  # Eve's ask was never sent
