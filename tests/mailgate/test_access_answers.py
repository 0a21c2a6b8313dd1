"""Who sees, answers and asks questions: ``answer_view`` and its neighbours, as full tables.

The expected cells are written from the rules, not computed from ``mailgate.access``:

- open: the asker, their named viewers and whoever may read the list see answers by name;
- asker-only: the asker and the named viewers see them; others see only their own;
- anonymous: nobody (the asker included) sees any answer until 5 people answered; then
  those entitled see them without names — and no individual answer by name, ever;
- inactive people and strangers see nothing.

A hypothesis property then checks the safety statements over every combination of facts.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.access import (
    ANONYMITY_THRESHOLD,
    AnswerView,
    ListFacts,
    QuestionFacts,
    Verdict,
    Viewer,
    answer_view,
    may_answer,
    may_ask,
    may_see_question_post,
)
from mailgate.models import PostingPolicy, Role, SiteRole, Visibility

ASKER, NAMED_VIEWER, MEMBER, OUTSIDER, INACTIVE, OTHER = 1, 2, 3, 4, 5, 6

WHO = {
    # The asker is an executive who is not on the list: leaders need not be members.
    "asker": Viewer(ASKER, active=True, site_roles=frozenset({SiteRole.EXECUTIVE})),
    "named-viewer": Viewer(NAMED_VIEWER, active=True),
    "member": Viewer(MEMBER, active=True, role=Role.MEMBER),
    "outsider": Viewer(OUTSIDER, active=True),  # not a member of a members-only list
    "inactive": Viewer(INACTIVE, active=False, role=Role.MEMBER),
    "inactive-asker": Viewer(ASKER, active=False, role=Role.OWNER),
    "stranger": Viewer(None),
}

MEMBERS_LIST = ListFacts(7, Visibility.MEMBERS, PostingPolicy.MEMBERS, False, False)
HIDDEN_LIST = ListFacts(7, Visibility.HIDDEN, PostingPolicy.MEMBERS, False, False)
COMPANY_LIST = ListFacts(7, Visibility.COMPANY, PostingPolicy.COMPANY, False, False)


def question(*, open: bool, anonymous: bool, answerers: int = 0) -> QuestionFacts:
    return QuestionFacts(
        asker_id=ASKER,
        open=open,
        anonymous=anonymous,
        viewers=frozenset({NAMED_VIEWER}),
        answerers=answerers,
    )


BELOW = ANONYMITY_THRESHOLD - 1
KINDS = {
    "open": question(open=True, anonymous=False, answerers=1),
    "asker-only": question(open=False, anonymous=False, answerers=1),
    "open-anon-below": question(open=True, anonymous=True, answerers=BELOW),
    "open-anon-at": question(open=True, anonymous=True, answerers=ANONYMITY_THRESHOLD),
    "asker-only-anon-below": question(open=False, anonymous=True, answerers=BELOW),
    "asker-only-anon-at": question(open=False, anonymous=True, answerers=ANONYMITY_THRESHOLD),
}

N, A, X = AnswerView.NAMED, AnswerView.ANONYMOUS, AnswerView.NONE
# columns: open, asker-only, open-anon-below, open-anon-at, asker-only-anon-below/-at
VIEW_TABLE = {
    "asker": (N, N, X, A, X, A),
    "named-viewer": (N, N, X, A, X, A),
    "member": (N, X, X, A, X, X),
    "outsider": (X, X, X, X, X, X),
    "inactive": (X, X, X, X, X, X),
    "inactive-asker": (X, X, X, X, X, X),
    "stranger": (X, X, X, X, X, X),
}


def cells(*axes: Iterable[str]) -> list[Any]:
    """Every combination of the axes' keys, each test id naming its cell."""
    return [pytest.param(*combo, id="/".join(combo)) for combo in itertools.product(*axes)]


def test_threshold_is_five() -> None:
    assert ANONYMITY_THRESHOLD == 5


@pytest.mark.parametrize("list_facts", [MEMBERS_LIST, HIDDEN_LIST], ids=["members", "hidden"])
@pytest.mark.parametrize(("who", "kind"), cells(VIEW_TABLE, KINDS))
def test_answer_view_matrix(list_facts: ListFacts, who: str, kind: str) -> None:
    expected = VIEW_TABLE[who][list(KINDS).index(kind)]
    assert answer_view(KINDS[kind], list_facts, WHO[who]) is expected


@pytest.mark.parametrize("kind", KINDS)
def test_company_list_employee_is_audience(kind: str) -> None:
    # On a company-wide list any active employee reads the list, so is treated as audience.
    employee = Viewer(OUTSIDER, active=True)
    expected = VIEW_TABLE["member"][list(KINDS).index(kind)]
    assert answer_view(KINDS[kind], COMPANY_LIST, employee) is expected


@pytest.mark.parametrize(
    ("answerers", "expected"),
    [(0, X), (1, X), (4, X), (5, A), (6, A), (500, A)],
)
def test_anonymous_threshold_boundary(answerers: int, expected: AnswerView) -> None:
    q = question(open=True, anonymous=True, answerers=answerers)
    for who in ("asker", "named-viewer", "member"):
        assert answer_view(q, MEMBERS_LIST, WHO[who]) is expected


def test_prompt_question_without_asker() -> None:
    # Prompts have no asker: nobody is a leader, the audience sees open answers by name.
    q = QuestionFacts(asker_id=None, open=True, anonymous=False, viewers=frozenset(), answerers=1)
    assert answer_view(q, MEMBERS_LIST, WHO["member"]) is N
    assert answer_view(q, MEMBERS_LIST, WHO["stranger"]) is X
    assert not q.is_leader(None)


# ------------------------------------------------------------------ one post at a time

# Posts: (author_id, is_question, parent_author_id)
POSTS = {
    "question": (ASKER, True, None),
    "others-answer": (OTHER, False, ASKER),
    "own-answer": (MEMBER, False, ASKER),
    "reply-to-member": (ASKER, False, MEMBER),
    "viewer-reply-to-member": (NAMED_VIEWER, False, MEMBER),
    "reply-to-other": (ASKER, False, OTHER),
}

# who → post → the kinds (see KINDS) in which the post reaches them
SEE_TABLE: dict[str, dict[str, set[str]]] = {
    "asker": {
        "question": set(KINDS),
        "others-answer": {"open", "asker-only"},
        "own-answer": {"open", "asker-only"},
        "reply-to-member": set(KINDS),  # their own post
        "viewer-reply-to-member": {"open", "asker-only"},
        "reply-to-other": set(KINDS),  # their own post
    },
    "member": {
        "question": set(KINDS),
        "others-answer": {"open"},
        "own-answer": set(KINDS),
        "reply-to-member": set(KINDS),  # a leader answering them
        "viewer-reply-to-member": set(KINDS),
        "reply-to-other": {"open"},
    },
    "outsider": {post: set() for post in POSTS},
    "inactive": {post: set() for post in POSTS},
    "inactive-asker": {post: set() for post in POSTS},
    "stranger": {post: set() for post in POSTS},
}


@pytest.mark.parametrize(("who", "post", "kind"), cells(SEE_TABLE, POSTS, KINDS))
def test_may_see_question_post_matrix(who: str, post: str, kind: str) -> None:
    author_id, is_question, parent = POSTS[post]
    seen = may_see_question_post(
        KINDS[kind],
        MEMBERS_LIST,
        WHO[who],
        author_id=author_id,
        is_question=is_question,
        parent_author_id=parent,
    )
    assert seen is (kind in SEE_TABLE[who][post])


@pytest.mark.parametrize("kind", KINDS)
def test_named_viewer_sees_the_question_without_reading_the_list(kind: str) -> None:
    assert may_see_question_post(
        KINDS[kind],
        HIDDEN_LIST,
        WHO["named-viewer"],
        author_id=ASKER,
        is_question=True,
        parent_author_id=None,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_removed_answerer_still_gets_the_leaders_reply(kind: str) -> None:
    # They answered and then left the list: the reply to them is no wider than their answer.
    assert may_see_question_post(
        KINDS[kind],
        MEMBERS_LIST,
        WHO["outsider"],
        author_id=ASKER,
        is_question=False,
        parent_author_id=OUTSIDER,
    )


# ------------------------------------------------------------------ answering

DECISIONS = [
    # (viewer, asked, question's asker, verdict, reason)
    (Viewer(None), True, ASKER, Verdict.REFUSE, "unknown-sender"),
    (Viewer(None), False, ASKER, Verdict.REFUSE, "unknown-sender"),
    (
        Viewer(MEMBER, active=False, role=Role.MEMBER),
        True,
        ASKER,
        Verdict.REFUSE,
        "inactive-member",
    ),
    (Viewer(ASKER, active=False), False, ASKER, Verdict.REFUSE, "inactive-member"),
    (Viewer(MEMBER, active=True, role=Role.MEMBER), True, ASKER, Verdict.ALLOW, "ok"),
    (Viewer(OUTSIDER, active=True), True, ASKER, Verdict.ALLOW, "ok"),  # asked, not a member
    (Viewer(MEMBER, active=True, role=Role.MEMBER), False, ASKER, Verdict.REFUSE, "not-asked"),
    (Viewer(ASKER, active=True), False, ASKER, Verdict.ALLOW, "ok"),
    (Viewer(NAMED_VIEWER, active=True), False, ASKER, Verdict.ALLOW, "ok"),
    (Viewer(MEMBER, active=True, role=Role.MEMBER), False, None, Verdict.REFUSE, "not-asked"),
    (Viewer(MEMBER, active=True, role=Role.OWNER), False, ASKER, Verdict.REFUSE, "not-asked"),
]


@pytest.mark.parametrize(("viewer", "asked", "asker_id", "verdict", "reason"), DECISIONS)
def test_may_answer(
    viewer: Viewer, asked: bool, asker_id: int | None, verdict: Verdict, reason: str
) -> None:
    for open_, anonymous in itertools.product((True, False), repeat=2):
        q = QuestionFacts(asker_id, open_, anonymous, frozenset({NAMED_VIEWER}), answerers=0)
        decision = may_answer(q, viewer, asked=asked)
        assert (decision.verdict, decision.reason) == (verdict, reason)


# ------------------------------------------------------------------ asking

EXEC = frozenset({SiteRole.EXECUTIVE})
ADMIN = frozenset({SiteRole.ADMIN})
ASKERS = [
    # (viewer, may ask the company, may ask this list)
    pytest.param(Viewer(1, active=True, site_roles=EXEC), True, True, id="executive"),
    pytest.param(
        Viewer(1, active=True, role=Role.OWNER, site_roles=EXEC), True, True, id="exec-owner"
    ),
    pytest.param(Viewer(1, active=True, role=Role.OWNER), False, True, id="owner"),
    pytest.param(Viewer(1, active=True, role=Role.MODERATOR), False, False, id="moderator"),
    pytest.param(Viewer(1, active=True, role=Role.MEMBER), False, False, id="member"),
    pytest.param(Viewer(1, active=True), False, False, id="employee"),
    pytest.param(Viewer(1, active=True, site_roles=ADMIN), False, False, id="admin"),
    pytest.param(
        Viewer(1, active=True, role=Role.OWNER, site_roles=ADMIN), False, True, id="admin-owner"
    ),
    pytest.param(Viewer(1, active=False, site_roles=EXEC), False, False, id="inactive-exec"),
    pytest.param(Viewer(1, active=False, role=Role.OWNER), False, False, id="inactive-owner"),
    pytest.param(Viewer(None, active=True, site_roles=EXEC), False, False, id="stranger-exec"),
    pytest.param(Viewer(None, active=True, role=Role.OWNER), False, False, id="stranger-owner"),
]


@pytest.mark.parametrize(("viewer", "company", "one_list"), ASKERS)
def test_may_ask(viewer: Viewer, company: bool, one_list: bool) -> None:
    assert may_ask(viewer, company_wide=True) is company
    assert may_ask(viewer, company_wide=False) is one_list


# ------------------------------------------------------------------ safety property

IDS = st.sampled_from([None, 1, 2, 3, 4, 5, 6])
QUESTIONS = st.builds(
    QuestionFacts,
    asker_id=IDS,
    open=st.booleans(),
    anonymous=st.booleans(),
    viewers=st.frozensets(st.integers(1, 6), max_size=3),
    answerers=st.integers(0, 12),
)
LISTS = st.builds(
    ListFacts,
    id=st.just(7),
    visibility=st.sampled_from(Visibility),
    posting=st.sampled_from(PostingPolicy),
    mandatory=st.booleans(),
    archived=st.booleans(),
)
VIEWERS = st.builds(
    Viewer,
    person_id=IDS,
    active=st.booleans(),
    role=st.none() | st.sampled_from(Role),
    allowed_poster=st.booleans(),
    site_roles=st.frozensets(st.sampled_from(SiteRole)),
)


@settings(max_examples=1000, deadline=None)
@given(q=QUESTIONS, facts=LISTS, viewer=VIEWERS, author_id=IDS, parent=IDS)
def test_answers_never_leak(
    q: QuestionFacts, facts: ListFacts, viewer: Viewer, author_id: int | None, parent: int | None
) -> None:
    view = answer_view(q, facts, viewer)
    seen = may_see_question_post(
        q, facts, viewer, author_id=author_id, is_question=False, parent_author_id=parent
    )
    own_post = author_id is not None and author_id == viewer.person_id
    reply_to_viewer = q.is_leader(author_id) and parent is not None and parent == viewer.person_id
    an_answer = not q.is_leader(author_id)

    if not viewer.active or viewer.person_id is None:
        assert view is AnswerView.NONE
        assert not seen
    if view is AnswerView.NONE and not own_post and not reply_to_viewer:
        assert not seen
    if not own_post and not reply_to_viewer:
        # Someone else's post reaches a viewer only through a named answer view.
        assert seen is (view is AnswerView.NAMED)
    if not q.open and not q.is_leader(viewer.person_id):
        assert view is AnswerView.NONE
        if an_answer and not own_post:
            assert not seen
    if q.anonymous:
        assert view is not AnswerView.NAMED
        if an_answer and not own_post:
            assert not seen  # no answer is ever shown by name
        if q.answerers < ANONYMITY_THRESHOLD:
            assert view is AnswerView.NONE


@settings(max_examples=300, deadline=None)
@given(viewer=VIEWERS, company_wide=st.booleans())
def test_who_may_ask(viewer: Viewer, company_wide: bool) -> None:
    allowed = may_ask(viewer, company_wide=company_wide)
    if not viewer.active or viewer.person_id is None:
        assert not allowed
    elif SiteRole.EXECUTIVE in viewer.site_roles:
        assert allowed
    else:
        assert allowed is (not company_wide and viewer.role is Role.OWNER)
