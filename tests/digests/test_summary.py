"""Summary: "what we heard" — grouping, counting and the poll tally, per answer view.

Pure: answers are built here as :class:`AnswerFacts`; nothing touches the database. The
anonymous rows check that no name and no small department survive into the output.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from digests.summary import (
    NO_DEPARTMENT,
    OTHER_TEAMS,
    AnswerFacts,
    AnswerGroup,
    ShownAnswer,
    Summary,
    summarise,
)
from mailgate.access import ANONYMITY_THRESHOLD, AnswerView

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def ans(author_id: int, department: str, text: str, minute: int = 0) -> AnswerFacts:
    return AnswerFacts(
        author_id=author_id,
        author_name=f"Person {author_id}",
        department=department,
        text=text,
        created_at=T0 + timedelta(minutes=minute),
    )


def team(department: str, first_id: int, size: int, text: str = "fine") -> list[AnswerFacts]:
    return [ans(first_id + i, department, f"{text} {i}", minute=first_id + i) for i in range(size)]


def test_threshold_is_five() -> None:
    # The folding rows below are written against five; a change should be deliberate.
    assert ANONYMITY_THRESHOLD == 5


# ------------------------------------------------------------------- named view


def test_named_groups_by_department_with_names_in_time_order() -> None:
    answers = [
        ans(3, "Sales", "third", minute=30),
        ans(1, "Sales", "first", minute=10),
        ans(2, "Ops", "ops says", minute=20),
        ans(4, "Sales", "second", minute=15),
    ]
    summary = summarise(answers, asked=10, view=AnswerView.NAMED)
    assert summary == Summary(
        asked=10,
        answered=4,
        shown=True,
        groups=(
            AnswerGroup(
                "Sales",
                3,
                (
                    ShownAnswer("Person 1", "first"),
                    ShownAnswer("Person 4", "second"),
                    ShownAnswer("Person 3", "third"),
                ),
            ),
            AnswerGroup("Ops", 1, (ShownAnswer("Person 2", "ops says"),)),
        ),
        tally=(),
    )


def test_named_view_never_folds_small_departments() -> None:
    answers = [ans(1, "Legal", "a"), ans(2, "Finance", "b", 1)]
    names = [g.name for g in summarise(answers, asked=2, view=AnswerView.NAMED).groups]
    assert sorted(names) == ["Finance", "Legal"]
    assert OTHER_TEAMS not in names


def test_named_time_ties_break_by_author_id() -> None:
    answers = [ans(9, "Ops", "nine"), ans(2, "Ops", "two")]
    (group,) = summarise(answers, asked=2, view=AnswerView.NAMED).groups
    assert [a.who for a in group.answers] == ["Person 2", "Person 9"]


@pytest.mark.parametrize(
    ("departments", "expected_order"),
    [
        # (department, people): bigger groups first, then by name
        ((("B", 1), ("A", 1)), ["A", "B"]),
        ((("A", 1), ("B", 2)), ["B", "A"]),
        ((("Zed", 3), ("Ann", 3), ("Mid", 1)), ["Ann", "Zed", "Mid"]),
    ],
)
def test_named_group_order(
    departments: tuple[tuple[str, int], ...], expected_order: list[str]
) -> None:
    answers: list[AnswerFacts] = []
    next_id = 1
    for name, size in departments:
        answers += team(name, next_id, size)
        next_id += size
    groups = summarise(answers, asked=20, view=AnswerView.NAMED).groups
    assert [g.name for g in groups] == expected_order


@pytest.mark.parametrize("department", ["", "   ", "\t"])
def test_blank_department_is_named_no_department(department: str) -> None:
    (group,) = summarise([ans(1, department, "hi")], asked=1, view=AnswerView.NAMED).groups
    assert group.name == NO_DEPARTMENT


def test_department_names_are_stripped() -> None:
    answers = [ans(1, " Sales ", "a"), ans(2, "Sales", "b", 1)]
    (group,) = summarise(answers, asked=2, view=AnswerView.NAMED).groups
    assert (group.name, group.count) == ("Sales", 2)


def test_answer_text_is_stripped() -> None:
    (group,) = summarise([ans(1, "Ops", "  padded \n")], asked=1, view=AnswerView.NAMED).groups
    assert group.answers == (ShownAnswer("Person 1", "padded"),)


# ------------------------------------------------------------------ anonymous view


def test_anonymous_shows_no_names_and_sorts_by_text() -> None:
    answers = [
        ans(1, "Sales", "zebra", minute=1),
        ans(2, "Sales", "Apple", minute=2),
        ans(3, "Sales", "mango", minute=3),
        ans(4, "Sales", "banana", minute=4),
        ans(5, "Sales", "cherry", minute=5),
    ]
    summary = summarise(answers, asked=5, view=AnswerView.ANONYMOUS)
    (group,) = summary.groups
    assert group.name == "Sales"
    assert group.count == 5
    assert [a.text for a in group.answers] == ["Apple", "banana", "cherry", "mango", "zebra"]
    assert all(a.who == "" for a in group.answers)


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        # {department: people} → [(group, count)] in display order
        ({"Sales": 5}, [("Sales", 5)]),
        ({"Sales": 4, "Ops": 1}, [(OTHER_TEAMS, 5)]),
        ({"Sales": 5, "Ops": 4}, [("Sales", 5), (OTHER_TEAMS, 4)]),
        ({"Sales": 5, "Ops": 1, "Legal": 1}, [("Sales", 5), (OTHER_TEAMS, 2)]),
        ({"Sales": 5, "Ops": 6}, [("Ops", 6), ("Sales", 5)]),
        # Other teams sorts last even when it is the biggest group
        ({"Sales": 5, "Ops": 4, "Legal": 4}, [("Sales", 5), (OTHER_TEAMS, 8)]),
        ({"A": 1, "B": 1, "C": 1, "D": 1, "E": 1}, [(OTHER_TEAMS, 5)]),
    ],
)
def test_anonymous_folds_small_departments(
    sizes: dict[str, int], expected: list[tuple[str, int]]
) -> None:
    answers: list[AnswerFacts] = []
    next_id = 1
    for name, size in sizes.items():
        answers += team(name, next_id, size)
        next_id += size
    summary = summarise(answers, asked=50, view=AnswerView.ANONYMOUS)
    assert [(g.name, g.count) for g in summary.groups] == expected
    assert summary.answered == sum(sizes.values())
    # Every answer is still shown somewhere, and no name is.
    shown = [a for g in summary.groups for a in g.answers]
    assert len(shown) == len(answers)
    assert {a.who for a in shown} == {""}


def test_anonymous_threshold_counts_people_not_answers() -> None:
    # Four people writing ten answers are still four people: the department folds.
    answers = [ans(1 + i % 4, "Sales", f"answer {i}", minute=i) for i in range(10)]
    answers += team("Ops", 100, 5)
    summary = summarise(answers, asked=20, view=AnswerView.ANONYMOUS)
    assert [(g.name, g.count) for g in summary.groups] == [("Ops", 5), (OTHER_TEAMS, 4)]


def test_anonymous_output_does_not_depend_on_input_order() -> None:
    answers = team("Sales", 1, 5, "sales") + team("Ops", 10, 2, "ops")
    forward = summarise(answers, asked=9, view=AnswerView.ANONYMOUS)
    backward = summarise(list(reversed(answers)), asked=9, view=AnswerView.ANONYMOUS)
    assert forward.groups == backward.groups


# ------------------------------------------------------------------ no view


@pytest.mark.parametrize(
    ("answers", "answered"),
    [
        ([], 0),
        ([ans(1, "Ops", "secret")], 1),
        ([ans(1, "Ops", "secret"), ans(1, "Ops", "more", 1), ans(2, "HR", "x", 2)], 2),
        (team("Sales", 1, 7, "yes"), 7),
    ],
)
def test_none_view_shows_counts_only(answers: list[AnswerFacts], answered: int) -> None:
    summary = summarise(answers, asked=12, view=AnswerView.NONE)
    assert summary == Summary(asked=12, answered=answered, shown=False, groups=(), tally=())


@pytest.mark.parametrize("view", [AnswerView.NAMED, AnswerView.ANONYMOUS])
def test_no_answers_is_not_shown(view: AnswerView) -> None:
    assert summarise([], asked=3, view=view) == Summary(3, 0, False, (), ())


# ------------------------------------------------------------------ distinct people


@pytest.mark.parametrize("view", [AnswerView.NAMED, AnswerView.ANONYMOUS])
def test_a_person_answering_twice_counts_once(view: AnswerView) -> None:
    answers = [*team("Sales", 1, 5), ans(1, "Sales", "and another thing", minute=60)]
    summary = summarise(answers, asked=8, view=view)
    assert summary.answered == 5
    (group,) = summary.groups
    assert group.count == 5
    assert len(group.answers) == 6  # both of their answers are still shown


# ------------------------------------------------------------------ tally


def texts(*items: str) -> list[AnswerFacts]:
    return [ans(i + 1, "Ops", text, minute=i) for i, text in enumerate(items)]


@pytest.mark.parametrize(
    ("answers", "tally"),
    [
        pytest.param(texts("Yes", "No"), (), id="no-repeats"),
        pytest.param(texts("Yes", "yes"), (("Yes", 2),), id="case"),
        pytest.param(texts("Yes!", "yes", "YES."), (("Yes", 3),), id="trailing-punctuation"),
        pytest.param(texts("yes?!", "Yes"), (("yes", 2),), id="label-from-first"),
        pytest.param(
            texts("remote  Fridays", "Remote Fridays", "remote\nfridays"),
            (("remote Fridays", 3),),
            id="whitespace",
        ),
        pytest.param(
            texts("No", "Yes", "yes", "no", "Yes!", "maybe"),
            (("Yes", 3), ("No", 2)),
            id="most-common-first",
        ),
        pytest.param(
            texts("b", "a", "B", "A"),
            (("a", 2), ("b", 2)),
            id="ties-alphabetical",
        ),
        pytest.param(texts("x" * 40, "X" * 40), (("x" * 40, 2),), id="forty-is-short"),
        pytest.param(texts("x" * 41, "x" * 41), (), id="forty-one-is-long"),
        pytest.param(texts("!!!", "?"), (), id="punctuation-only"),
        pytest.param(texts("Yes"), (), id="single"),
    ],
)
def test_tally(answers: list[AnswerFacts], tally: tuple[tuple[str, int], ...]) -> None:
    assert summarise(answers, asked=10, view=AnswerView.NAMED).tally == tally


def test_tally_is_the_same_in_the_anonymous_view() -> None:
    answers = texts("Yes", "yes!", "No", "no", "Yes")
    named = summarise(answers, asked=5, view=AnswerView.NAMED)
    anonymous = summarise(answers, asked=5, view=AnswerView.ANONYMOUS)
    assert named.tally == anonymous.tally == (("Yes", 3), ("No", 2))


def test_tally_counts_a_person_once() -> None:
    answers = [ans(1, "Ops", "Yes"), ans(1, "Ops", "Yes!", minute=5), ans(2, "Ops", "No")]
    assert summarise(answers, asked=3, view=AnswerView.NAMED).tally == ()
