"""digests.rank: what one member's digest says, in which order, and what it leaves out."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digests.facts import DigestItem, DigestPlan, DiscussionFacts, MemberView, PostFacts
from digests.rank import make_excerpt, plan_digest

SINCE = datetime(2026, 3, 9, 7, 0, tzinfo=UTC)  # Dana's previous digest (08:00 Berlin)
TODAY = date(2026, 3, 10)

# person id, display name, department
DANA = (7, "Dana Whitfield", "Engineering")  # the member
ALICE = (11, "Alice Moreno", "Engineering")
BOB = (12, "Bob Okafor", "Sales")
CHEN = (13, "Chen Wei", "Finance")
PRIYA = (14, "Priya Raman", "Legal")
TOM = (15, "Tom Becker", "Engineering")
SARA = (16, "Sara Lindqvist", "Operations")
MARTA = (17, "Marta Kowalska", "Engineering")
OUTSIDER = (None, "Jordan Blake (Acme Corp)", "")  # an allowed outside sender

# list id, slug, name, announce-only
ENG = (1, "eng", "Engineering", False)
SALES = (2, "sales", "Sales", False)
ALL_HANDS = (3, "all-hands", "All hands", True)
RANDOM = (4, "random", "Random", False)
EXEC = (9, "exec-staff", "Executive staff", False)  # Dana may not read it
HR_CASES = (10, "hr-cases", "HR cases", False)  # nor this

_post_ids = iter(range(1000, 10**9))

Person = tuple[int | None, str, str]
MailingList = tuple[int, str, str, bool]


def post(who: Person, minutes: int, text: str = "", discussion_id: int = 0) -> PostFacts:
    person_id, name, department = who
    return PostFacts(
        post_id=next(_post_ids),
        discussion_id=discussion_id,
        author_id=person_id,
        author_name=name,
        author_department=department,
        created_at=SINCE + timedelta(minutes=minutes),
        text=text or f"Note from {name} at +{minutes} min.",
    )


def discussion(
    discussion_id: int,
    mailing_list: MailingList,
    subject: str,
    posts: Sequence[PostFacts],
    *,
    new: bool = False,
    started_by: Person | None = None,
    total_posts: int | None = None,
) -> DiscussionFacts:
    """``new``: started in the window by the first post's author; else started days ago."""
    list_id, slug, name, announce = mailing_list
    if new:
        created = posts[0].created_at
        starter = posts[0].author_id
    else:
        created = SINCE - timedelta(days=3)
        starter = started_by[0] if started_by else ALICE[0]
    return DiscussionFacts(
        discussion_id=discussion_id,
        list_id=list_id,
        list_slug=slug,
        list_name=name,
        announce=announce,
        subject=subject,
        started_by_id=starter,
        created_at=created,
        posts=tuple(posts),
        total_posts=total_posts if total_posts is not None else len(posts) + (0 if new else 4),
    )


def member(
    *,
    readable: Sequence[int] = (1, 2, 3, 4),
    muted: Sequence[int] = (),
    participated: Sequence[int] = (),
) -> MemberView:
    return MemberView(
        person_id=DANA[0],
        name=DANA[1],
        readable_list_ids=frozenset(readable),
        muted=frozenset(muted),
        participated=frozenset(participated),
        since=SINCE,
    )


def plan(view: MemberView, discussions: Sequence[DiscussionFacts], **kwargs: object) -> DigestPlan:
    return plan_digest(view, discussions, local_date=TODAY, **kwargs)  # type: ignore[arg-type]


def kinds(result: DigestPlan) -> list[tuple[str, int]]:
    return [(item.kind, item.discussion_id) for item in result.items]


def question(discussion_id: int, subject: str) -> DigestItem:
    return DigestItem(
        kind="question",
        discussion_id=discussion_id,
        list_slug="all-hands",
        list_name="All hands",
        subject=subject,
        excerpt="What should we stop doing next quarter?",
        authors=("Chen Wei",),
        replies=0,
        participants=1,
        departments=1,
        reason="a question waiting for your answer",
    )


# --- each category ------------------------------------------------------------------------

ROLLOUT_REPLIES = [
    post(ALICE, 30, "I pushed the canary config.\n\nCan you double-check the  timeouts?"),
    post(BOB, 95, "Sales demo on Thursday depends on this,   please keep us posted!"),
]


def test_replies_in_a_discussion_you_took_part_in() -> None:
    rollout = discussion(101, ENG, "Rollout plan for the new SMTP relay", ROLLOUT_REPLIES)
    result = plan(member(participated=[101]), [rollout])
    (item,) = result.items
    assert item.kind == "replies-to-you"
    assert item.reason == "2 new replies in a discussion you took part in"
    assert item.authors == ("Bob Okafor", "Alice Moreno")  # most recent first
    assert item.excerpt == "Sales demo on Thursday depends on this, please keep us posted!"
    assert (item.list_slug, item.list_name) == ("eng", "Engineering")
    assert item.subject == "Rollout plan for the new SMTP relay"
    assert item.replies == 5  # total_posts (6) - 1
    assert (item.participants, item.departments) == (2, 2)
    assert result.worth_sending and result.others == 0 and result.left_out == ()
    assert (result.person_id, result.local_date) == (7, TODAY)


def test_replies_in_a_discussion_you_started() -> None:
    rollout = discussion(101, ENG, "Rollout plan", ROLLOUT_REPLIES, started_by=DANA)
    (item,) = plan(member(), [rollout]).items  # started counts even if not in participated
    assert item.kind == "replies-to-you"
    assert item.reason == "2 new replies in a discussion you started"


def test_replies_to_your_new_discussion_do_not_count_your_opening_post() -> None:
    posts = [post(DANA, 5, "Who owns the staging certs?"), post(TOM, 40, "Ops, I think.")]
    started = discussion(102, ENG, "Staging certs", posts, new=True)
    (item,) = plan(member(participated=[102]), [started]).items
    assert item.kind == "replies-to-you"
    assert item.reason == "1 new reply in a discussion you started"
    assert item.authors == ("Tom Becker",)  # not Dana herself
    assert item.participants == 2


def test_someone_elses_opening_post_is_not_a_reply_to_you() -> None:
    # Alice opened it in the window, Dana answered; nobody has replied to Dana yet.
    posts = [post(ALICE, 5, "Lunch order?"), post(DANA, 20, "Thai please")]
    lunch = discussion(103, RANDOM, "Lunch", posts, new=True)
    (item,) = plan(member(participated=[103]), [lunch]).items
    assert item.kind != "replies-to-you"
    assert item.excerpt == "Lunch order?"  # the latest post by someone else


def test_questions_fill_their_slot_in_order() -> None:
    rollout = discussion(101, ENG, "Rollout", ROLLOUT_REPLIES)
    memo = discussion(301, ALL_HANDS, "Q2 priorities", [post(CHEN, 10, "Memo attached.")])
    questions = [question(900, "Stop doing?"), question(901, "Start doing?")]
    result = plan(member(participated=[101]), [memo, rollout], questions=questions)
    assert kinds(result) == [
        ("replies-to-you", 101),
        ("question", 900),
        ("question", 901),
        ("announcement", 301),
    ]
    assert result.items[1] is questions[0]  # passed through untouched


def test_announcement() -> None:
    memo = discussion(
        301, ALL_HANDS, "Q2 priorities", [post(CHEN, 10, "Please read the Q2 memo.")], new=True
    )
    (item,) = plan(member(), [memo]).items
    assert item.kind == "announcement"
    assert item.reason == "announcement on All hands"
    assert item.replies == 0


def test_lively_reason_counts_people_and_departments() -> None:
    posts = [
        post(ALICE, 10),
        post(BOB, 20),
        post(CHEN, 30),
        post(ALICE, 40),
        post(PRIYA, 50),
        post(TOM, 60),
    ]
    lively = discussion(401, RANDOM, "Office move", posts)
    (item,) = plan(member(), [lively]).items
    assert item.kind == "lively"
    assert item.reason == "lively: 5 people from 4 departments"
    assert (item.participants, item.departments) == (5, 4)
    assert item.authors == ("Tom Becker", "Priya Raman", "Alice Moreno", "Chen Wei", "Bob Okafor")


def test_lively_reason_says_nothing_of_departments_when_nobody_has_one() -> None:
    nobody = [(ALICE[0], ALICE[1], ""), (BOB[0], BOB[1], "")]
    posts = [post(nobody[0], 10), post(nobody[1], 20)]
    (item,) = plan(member(), [discussion(402, RANDOM, "Lunch", posts)]).items
    assert item.reason == "lively: 2 people"
    assert item.departments == 0


def test_a_prompts_question_is_nobodys_post() -> None:
    # gather names a prompt's question "" (it has no asker): not an author, not a person.
    prompt = (None, "", "")
    posts = [post(prompt, 5, "What did you ship?"), post(BOB, 20, "The pricing page.")]
    (item,) = plan(member(), [discussion(403, SALES, "What did you ship?", posts, new=True)]).items
    assert item.kind == "new"
    assert item.authors == ("Bob Okafor",)
    assert item.participants == 1


def test_new_discussion() -> None:
    started = discussion(
        501, SALES, "Pricing page copy", [post(BOB, 15, "Draft is in the doc.")], new=True
    )
    (item,) = plan(member(), [started]).items
    assert item.kind == "new"
    assert item.reason == "new discussion on Sales"
    assert item.authors == ("Bob Okafor",)


def test_one_post_in_an_old_discussion_is_quiet_and_counted_in_others() -> None:
    quiet = discussion(601, ENG, "Old thread", [post(TOM, 15, "Bumping this.")])
    result = plan(member(), [quiet])
    assert result.items == ()
    assert result.others == 1
    assert result.left_out == ((601, "quiet"),)
    assert not result.worth_sending


# --- priority and dedup -------------------------------------------------------------------


def test_each_discussion_appears_once_in_its_highest_category() -> None:
    # Announce list + Dana took part + several people: replies-to-you wins.
    busy_memo = discussion(
        302, ALL_HANDS, "Reorg FAQ", [post(CHEN, 10), post(BOB, 20), post(PRIYA, 30)]
    )
    # Lively and new: lively wins.
    new_lively = discussion(
        402, RANDOM, "Book club", [post(SARA, 5), post(BOB, 6), post(CHEN, 7)], new=True
    )
    # A question about a lively discussion: the question's slot wins.
    asked = discussion(403, ENG, "On-call pay", [post(TOM, 5), post(MARTA, 9)])
    # A question about a replies-to-you discussion: replies-to-you wins.
    rollout = discussion(101, ENG, "Rollout", ROLLOUT_REPLIES)
    questions = [question(403, "On-call pay?"), question(101, "Rollout?")]
    result = plan(
        member(participated=[302, 101]),
        [busy_memo, new_lively, asked, rollout],
        questions=questions,
    )
    assert kinds(result) == [
        ("replies-to-you", 101),  # latest reply +95 min
        ("replies-to-you", 302),  # latest reply +30 min
        ("question", 403),
        ("lively", 402),
    ]
    ids = [item.discussion_id for item in result.items]
    assert len(ids) == len(set(ids))


def test_priority_order_across_all_categories() -> None:
    discussions = [
        discussion(501, SALES, "New", [post(BOB, 80)], new=True),
        discussion(401, RANDOM, "Lively", [post(ALICE, 1), post(BOB, 2)]),
        discussion(301, ALL_HANDS, "Memo", [post(CHEN, 3)], new=True),
        discussion(101, ENG, "Mine", [post(TOM, 4)], started_by=DANA),
    ]
    result = plan(member(), discussions, questions=[question(900, "Q?")])
    assert [item.kind for item in result.items] == [
        "replies-to-you",
        "question",
        "announcement",
        "lively",
        "new",
    ]


# --- ranking within "lively" --------------------------------------------------------------


def test_cross_department_bonus_beats_a_same_size_single_department_discussion() -> None:
    one_team = discussion(
        410,
        ENG,
        "Linter config",
        [post(ALICE, 10), post(TOM, 20), post(MARTA, 30), post(DANA, 40), post(ALICE, 200)],
    )
    cross_team = discussion(
        420, RANDOM, "Quarter close", [post(BOB, 5), post(CHEN, 6), post(PRIYA, 7), post(SARA, 8)]
    )
    result = plan(member(), [one_team, cross_team])
    # Both have 4 people; the single-department one is more recent, yet the cross-team one wins.
    assert kinds(result) == [("lively", 420), ("lively", 410)]
    assert result.items[0].reason == "lively: 4 people from 4 departments"
    assert result.items[1].reason == "lively: 4 people from 1 department"


@pytest.mark.parametrize(
    ("people_a", "people_b", "first"),
    [
        # 4 people, 4 departments (score 5.5) beats 5 people, 1 department (5.0)
        (
            [BOB, CHEN, PRIYA, SARA],
            [ALICE, TOM, MARTA, DANA, (18, "Ivo Petrov", "Engineering")],
            "a",
        ),
        # 5 people, 1 department (5.0) beats 3 people, 3 departments (4.0)
        ([ALICE, TOM, MARTA, DANA, (18, "Ivo Petrov", "Engineering")], [BOB, CHEN, PRIYA], "a"),
        # 3 people, 2 departments (3.5) beats 3 people, 1 department (3.0)
        ([ALICE, TOM, BOB], [ALICE, TOM, MARTA], "a"),
        # 2 people, 2 departments (2.5) loses to 3 people, 1 department (3.0)
        ([ALICE, BOB], [ALICE, TOM, MARTA], "b"),
    ],
)
def test_lively_score(people_a: list[Person], people_b: list[Person], first: str) -> None:
    # b's posts are later, so b would win any tie on score: a must win on score alone.
    a = discussion(431, RANDOM, "A", [post(p, 1 + i) for i, p in enumerate(people_a)])
    b = discussion(432, RANDOM, "B", [post(p, 100 + i) for i, p in enumerate(people_b)])
    expected = [431, 432] if first == "a" else [432, 431]
    assert [item.discussion_id for item in plan(member(), [a, b]).items] == expected


def test_lively_ties_break_on_latest_post_then_discussion_id() -> None:
    early = discussion(441, ENG, "Early", [post(ALICE, 10), post(BOB, 20)])
    late = discussion(442, ENG, "Late", [post(ALICE, 10), post(BOB, 50)])
    twin = discussion(440, ENG, "Twin of late", [post(TOM, 12), post(CHEN, 50)])
    result = plan(member(), [early, late, twin])
    assert [item.discussion_id for item in result.items] == [440, 442, 441]


def test_plan_does_not_depend_on_input_order() -> None:
    discussions = [
        discussion(400 + i, RANDOM, f"Topic {i}", [post(ALICE, 1 + i % 3), post(BOB, 5 + i % 4)])
        for i in range(20)
    ]
    view = member()
    expected = plan(view, discussions, max_items=5)
    shuffled = list(discussions)
    random.Random(4).shuffle(shuffled)
    assert plan(view, shuffled, max_items=5) == expected
    assert plan(view, list(reversed(discussions)), max_items=5) == expected


# --- cap, others, left out --------------------------------------------------------------------


def test_cap_and_others() -> None:
    lively = [
        discussion(700 + i, RANDOM, f"Topic {i}", [post(ALICE, 1 + i), post(BOB, 1 + 2 * i)])
        for i in range(15)
    ]
    quiet = discussion(601, ENG, "Old thread", [post(TOM, 15)])
    muted = discussion(602, ENG, "Muted", [post(TOM, 15), post(BOB, 16)])
    mine = discussion(603, ENG, "Mine only", [post(DANA, 15)])
    result = plan(member(muted=[602]), [*lively, quiet, muted, mine])
    assert len(result.items) == 12
    assert [item.discussion_id for item in result.items] == list(range(714, 702, -1))
    assert result.others == 4  # three cut lively + the quiet one; not muted, not own-only
    assert result.left_out == (
        (702, "over-limit"),
        (701, "over-limit"),
        (700, "over-limit"),
        (601, "quiet"),
        (602, "muted"),
        (603, "only-your-own-posts"),
    )


@pytest.mark.parametrize(
    ("max_items", "shown", "others"), [(0, 0, 3), (1, 1, 2), (3, 3, 0), (50, 3, 0)]
)
def test_max_items(max_items: int, shown: int, others: int) -> None:
    discussions = [
        discussion(450 + i, RANDOM, f"T{i}", [post(ALICE, 1 + i), post(BOB, 1 + i)])
        for i in range(3)
    ]
    result = plan(member(), discussions, max_items=max_items)
    assert (len(result.items), result.others) == (shown, others)


def test_muted_discussion_is_left_out_even_with_replies_to_you() -> None:
    rollout = discussion(101, ENG, "Rollout", ROLLOUT_REPLIES)
    result = plan(member(participated=[101], muted=[101]), [rollout])
    assert result.items == ()
    assert result.left_out == ((101, "muted"),)
    assert result.others == 0
    assert not result.worth_sending


def test_only_your_own_posts() -> None:
    mine = discussion(
        104, ENG, "My RFC", [post(DANA, 5, "RFC attached"), post(DANA, 9, "typo fixed")], new=True
    )
    result = plan(member(participated=[104]), [mine])
    assert result.items == ()
    assert result.left_out == ((104, "only-your-own-posts"),)


def test_posts_before_the_last_digest_do_not_count() -> None:
    stale = discussion(105, ENG, "Stale", [post(ALICE, -60), post(BOB, -5)])
    only_old_reply = discussion(106, ENG, "Half", [post(ALICE, -60), post(DANA, 30)])
    result = plan(member(participated=[106]), [stale, only_old_reply])
    assert result.items == ()
    assert result.left_out == ((106, "only-your-own-posts"),)  # stale: no activity at all
    assert result.others == 0


@pytest.mark.parametrize(
    "discussions",
    [
        [],
        [discussion(602, ENG, "Muted", [post(TOM, 15), post(BOB, 16)])],
        [discussion(603, ENG, "Mine", [post(DANA, 15)])],
        [discussion(901, EXEC, "Layoffs", [post(CHEN, 5), post(PRIYA, 6)])],
    ],
    ids=["nothing", "muted", "own-only", "unreadable"],
)
def test_nothing_worth_sending(discussions: list[DiscussionFacts]) -> None:
    result = plan(member(muted=[602]), discussions)
    assert not result.worth_sending
    assert result.items == ()


# --- excerpts and authors ---------------------------------------------------------------------

EXCERPTS = [
    ("short", "Looks good to me.", 200, "Looks good to me."),
    ("collapse", "Looks\n\n  good\tto\r\nme.  ", 200, "Looks good to me."),
    ("exact fit", "abcd efgh", 9, "abcd efgh"),
    ("word boundary", "The quick brown fox jumps", 15, "The quick…"),
    ("boundary on a space", "The quick brown fox", 11, "The quick…"),
    ("long word", "Supercalifragilistic", 8, "Superca…"),
    ("limit one", "Hello there", 1, "…"),
    ("limit zero", "Hello there", 0, ""),
    ("empty", "", 200, ""),
    ("unicode", "Grüße aus Köln, bis später", 14, "Grüße aus…"),
    ("mostly whitespace", " " * 5000 + "Finally some text", 30, "Finally some text"),
]


@pytest.mark.parametrize(
    ("text", "limit", "expected"), [e[1:] for e in EXCERPTS], ids=[e[0] for e in EXCERPTS]
)
def test_make_excerpt(text: str, limit: int, expected: str) -> None:
    result = make_excerpt(text, limit)
    assert result == expected
    assert len(result) <= max(limit, 0)


@given(st.text(max_size=3000), st.integers(1, 400))
def test_make_excerpt_bounds(text: str, limit: int) -> None:
    result = make_excerpt(text, limit)
    full = " ".join(text.split())
    assert len(result) <= limit
    if len(full) <= limit:
        assert result == full
    else:
        assert result.endswith("…")
        assert full.startswith(result[:-1])


def test_excerpt_is_from_the_latest_post_by_someone_else() -> None:
    long_text = "Agreed. " + "We should move the cutover to Saturday night because " * 20
    posts = [post(ALICE, 10, "First"), post(BOB, 20, long_text), post(DANA, 30, "My answer")]
    thread = discussion(107, ENG, "Cutover", posts)
    (item,) = plan(member(participated=[107]), [thread], excerpt_chars=60).items
    assert item.excerpt == "Agreed. We should move the cutover to Saturday night…"
    assert len(item.excerpt) <= 60
    assert item.authors == ("Bob Okafor", "Alice Moreno")


def test_outside_senders_are_deduplicated_by_name() -> None:
    posts = [
        post(OUTSIDER, 10, "Quote attached."),
        post(BOB, 20),
        post((None, "jordan blake (ACME corp)", ""), 30),
    ]
    thread = discussion(108, SALES, "Acme renewal", posts)
    (item,) = plan(member(), [thread]).items
    assert item.participants == 2
    assert item.authors == ("jordan blake (ACME corp)", "Bob Okafor")
    assert item.departments == 1  # unknown departments are not a department


# --- visibility (safety) ----------------------------------------------------------------------


def test_unreadable_lists_never_appear_anywhere() -> None:
    secret = discussion(
        901, EXEC, "Layoffs", [post(CHEN, 5), post(PRIYA, 6), post(BOB, 7)], started_by=DANA
    )
    hr = discussion(902, HR_CASES, "Case 118", [post(SARA, 5)], new=True)
    visible = discussion(401, RANDOM, "Office move", [post(ALICE, 1), post(BOB, 2)])
    view = member(participated=[901, 902], muted=[902])
    result = plan(view, [secret, hr, visible], max_items=0)
    assert result.left_out == ((401, "over-limit"),)
    assert result.others == 1
    # A question pointing at an unreadable discussion is dropped too.
    result = plan(view, [secret, hr, visible], questions=[question(901, "Layoffs?")])
    assert kinds(result) == [("lively", 401)]


_LISTS = [
    (1, "eng", "Engineering", False),
    (2, "sales", "Sales", False),
    (3, "all-hands", "All hands", True),
    (4, "random", "Random", False),
    (5, "exec-staff", "Executive staff", False),
    (6, "board", "Board", True),
]
_PEOPLE = [DANA, ALICE, BOB, CHEN, PRIYA, TOM, SARA, OUTSIDER]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[MemberView, list[DiscussionFacts], list[DigestItem]]:
    readable = draw(st.sets(st.integers(1, 6)))
    count = draw(st.integers(0, 25))
    discussions = []
    for did in draw(st.lists(st.integers(1, 60), min_size=count, max_size=count, unique=True)):
        mailing_list = draw(st.sampled_from(_LISTS))
        authors = draw(st.lists(st.sampled_from(_PEOPLE), min_size=1, max_size=6))
        minutes = sorted(draw(st.lists(st.integers(-120, 600), min_size=len(authors))))
        posts = [post(a, m, discussion_id=did) for a, m in zip(authors, minutes, strict=False)]
        new = draw(st.booleans())
        starter = draw(st.sampled_from(_PEOPLE))
        discussions.append(
            discussion(did, mailing_list, f"S{did}", posts, new=new, started_by=starter)
        )
    ids = st.integers(1, 60)
    view = member(
        readable=sorted(readable),
        muted=draw(st.lists(ids, max_size=5)),
        participated=draw(st.lists(ids, max_size=15)),
    )
    questions = [question(q, f"Q{q}") for q in draw(st.lists(st.integers(1, 80), max_size=4))]
    return view, discussions, questions


@settings(max_examples=400, deadline=None)
@given(scenarios(), st.integers(0, 15))
def test_visibility_property(
    scenario: tuple[MemberView, list[DiscussionFacts], list[DigestItem]], max_items: int
) -> None:
    view, discussions, questions = scenario
    readable_ids = {d.discussion_id for d in discussions if d.list_id in view.readable_list_ids}
    unreadable_ids = {d.discussion_id for d in discussions} - readable_ids
    result = plan(view, discussions, max_items=max_items, questions=questions)

    for item in result.items:
        assert item.discussion_id not in unreadable_ids
        if item.kind != "question":
            assert item.discussion_id in readable_ids
            assert item.discussion_id not in view.muted
    for discussion_id, _reason in result.left_out:
        assert discussion_id not in unreadable_ids
    assert result.others <= len(readable_ids)
    assert len(result.items) <= max_items
    shown = [item.discussion_id for item in result.items]
    assert len(shown) == len(set(shown))

    # Non-interference: the unreadable discussions have no effect at all on the plan.
    readable_only = [d for d in discussions if d.list_id in view.readable_list_ids]
    safe_questions = [q for q in questions if q.discussion_id not in unreadable_ids]
    assert result == plan(view, readable_only, max_items=max_items, questions=safe_questions)


# --- performance --------------------------------------------------------------------------------


def _busy_month(count: int = 300, posts_each: int = 5) -> tuple[MemberView, list[DiscussionFacts]]:
    rng = random.Random(20260310)
    departments = ["Engineering", "Sales", "Finance", "Legal", "Operations", "People"]
    people = [(pid, f"Person {pid}", departments[pid % 6]) for pid in range(20, 120)]
    paragraph = (
        "Thanks for the summary. I think we should keep the current rollout order, but "
        "move the Frankfurt relay last because of the certificate renewal window.\n\n"
    )
    discussions = []
    for did in range(count):
        authors = [rng.choice(people) for _ in range(posts_each)]
        authors[0] = DANA if did % 11 == 0 else authors[0]
        posts = [
            post(a, rng.randint(-60, 1400) // posts_each * (k + 1), paragraph * rng.randint(1, 30))
            for k, a in enumerate(authors)
        ]
        posts.sort(key=lambda p: p.created_at)
        mailing_list = (did % 12, f"list-{did % 12}", f"List {did % 12}", did % 12 == 0)
        discussions.append(
            discussion(did, mailing_list, f"Subject {did}", posts, new=did % 3 == 0, total_posts=40)
        )
    view = member(
        readable=range(10),
        muted=range(0, count, 37),
        participated=range(0, count, 5),
    )
    return view, discussions


def test_plan_digest_for_300_discussions_is_a_full_plan() -> None:
    """A busy month: the plan is full and the rest is counted, not listed. What planning
    costs is bench/digest.py's "plan" stage, measured against a same-run baseline."""
    view, discussions = _busy_month()
    result = plan(view, discussions)
    assert len(result.items) == 12 and result.others > 100  # a realistic, full plan
    assert plan(view, discussions) == result  # and the same plan every time
