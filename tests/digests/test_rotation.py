"""Rotation through a prompt's bank: unused questions first, then least recently asked."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digests.prompt_bank import STARTER_BANK
from digests.rotation import pick_bank_index

BUDGET = settings(max_examples=300, deadline=None, derandomize=True)


@pytest.mark.parametrize(
    ("bank_size", "history", "expected"),
    [
        (1, [], 0),
        (1, [0], 0),  # a bank of one repeats: nothing else to ask
        (1, [0, 0, 0], 0),
        (3, [], 0),  # a fresh bank starts at the top
        (3, [0], 1),
        (3, [0, 1], 2),
        (3, [2], 0),  # the lowest never-asked index, not the next one
        (3, [0, 1, 2], 0),  # all asked: the least recently asked
        (3, [0, 1, 2, 0], 1),
        (3, [1, 0, 2, 1], 0),
        (3, [0, 0, 1, 1, 2, 2], 0),
        (4, [0, 1, 2, 0, 1], 3),  # the bank grew: the new entry comes next
        (2, [0, 1, 5, 3], 0),  # the bank shrank: indices past its end are ignored
        (2, [1], 0),
    ],
)
def test_pick_bank_index(bank_size: int, history: list[int], expected: int) -> None:
    assert pick_bank_index(bank_size, history) == expected


@pytest.mark.parametrize("bank_size", [0, -1])
def test_an_empty_bank_is_refused(bank_size: int) -> None:
    with pytest.raises(ValueError, match="at least one question"):
        pick_bank_index(bank_size, [])


def run(bank_size: int, runs: int, history: tuple[int, ...] = ()) -> list[int]:
    asked = list(history)
    for _ in range(runs):
        asked.append(pick_bank_index(bank_size, asked))
    return asked[len(history) :]


@pytest.mark.parametrize("bank_size", [1, 2, 3, 5, 8, len(STARTER_BANK)])
def test_no_repeat_within_bank_size_consecutive_runs(bank_size: int) -> None:
    asked = run(bank_size, 3 * bank_size)
    assert len(asked) == 3 * bank_size
    for start in range(len(asked) - bank_size + 1):
        window = asked[start : start + bank_size]
        assert len(set(window)) == bank_size, (start, window)
    # A fresh bank is asked in the order it was written, then again in that order.
    assert asked == list(range(bank_size)) * 3


@BUDGET
@given(
    bank_size=st.integers(min_value=1, max_value=20),
    history=st.lists(st.integers(min_value=-2, max_value=25), max_size=40),
)
def test_properties_over_any_history(bank_size: int, history: list[int]) -> None:
    chosen = pick_bank_index(bank_size, history)
    assert 0 <= chosen < bank_size
    unused = [i for i in range(bank_size) if i not in history]
    if unused:
        assert chosen == unused[0]
    if bank_size > 1 and history:
        assert chosen != history[-1]


@BUDGET
@given(
    bank_size=st.integers(min_value=2, max_value=12),
    history=st.lists(st.integers(min_value=0, max_value=11), max_size=30),
)
def test_after_one_pass_any_history_settles_into_a_cycle(
    bank_size: int, history: list[int]
) -> None:
    # Whatever happened before (bank edits, manual runs), once every entry has been
    # asked again the rotation never repeats within bank_size consecutive runs.
    asked = run(bank_size, 3 * bank_size, tuple(history))
    settled = asked[bank_size:]
    for start in range(len(settled) - bank_size + 1):
        assert len(set(settled[start : start + bank_size])) == bank_size


def test_starter_bank_is_usable() -> None:
    assert len(STARTER_BANK) >= 45
    assert len(set(STARTER_BANK)) == len(STARTER_BANK)
    assert len({q.casefold() for q in STARTER_BANK}) == len(STARTER_BANK)
    for question in STARTER_BANK:
        assert question == question.strip() and question.endswith("?"), question
        assert question[0].isupper(), question
        assert len(question) <= 100, question  # fits a subject line
