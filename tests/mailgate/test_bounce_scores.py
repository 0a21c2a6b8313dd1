"""Bounce scores (BNC-03): weights, one incident per day, hold-then-decay, sticky suspension."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.bounce_scores import (
    DEFAULT_POLICY,
    BounceState,
    ScorePolicy,
    add_bounce,
    decayed,
    reset,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday morning
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def run(bounces: list[tuple[timedelta, bool]], policy: ScorePolicy = DEFAULT_POLICY):
    """Feed (offset from T0, permanent) bounces; return the final state and the crossings."""
    state = reset()
    crossings = []
    for offset, permanent in bounces:
        state, crossed = add_bounce(state, permanent=permanent, now=T0 + offset, policy=policy)
        if crossed:
            crossings.append(offset)
    return state, crossings


@pytest.mark.parametrize(
    ("case", "bounces", "suspended"),
    [
        ("one hard bounce", [(0 * DAY, True)], False),
        ("four daily hard bounces", [(d * DAY, True) for d in range(4)], False),
        ("five daily hard bounces", [(d * DAY, True) for d in range(5)], True),
        # 09:00, then 08:00 the next morning: still five different days.
        ("five hard bounces, drifting times", [(d * (DAY - HOUR), True) for d in range(5)], True),
        ("five hard bounces every other day", [(2 * d * DAY, True) for d in range(5)], True),
        (
            "fifty hard bounces in one afternoon",
            [(d * timedelta(minutes=5), True) for d in range(50)],
            False,
        ),
        ("soft bounce every day for 30 days", [(d * DAY, False) for d in range(30)], False),
        (
            "ten soft bounces a day for 30 days",
            [(d * DAY + n * HOUR, False) for d in range(30) for n in range(10)],
            False,
        ),
        (
            "four hard days then a soft month",
            [(d * DAY, True) for d in range(4)] + [((4 + d) * DAY, False) for d in range(5)],
            False,
        ),
        ("five hard bounces a month apart", [(30 * d * DAY, True) for d in range(5)], False),
        (
            "hard bounce every 10 days (Mailman: stale)",
            [(10 * d * DAY, True) for d in range(40)],
            False,
        ),
        ("hard bounce every 5 days", [(5 * d * DAY, True) for d in range(5)], True),
    ],
)
def test_when_delivery_is_suspended(case: str, bounces, suspended: bool) -> None:
    state, crossings = run(bounces)
    assert state.suspended is suspended, (case, state)
    assert len(crossings) == (1 if suspended else 0)


def test_the_fifth_daily_hard_bounce_is_the_one_that_suspends() -> None:
    state, crossings = run([(d * DAY, True) for d in range(8)])
    assert crossings == [4 * DAY]
    assert state.suspended and state.score == pytest.approx(8.0)


def test_suspension_is_reported_once_and_survives_decay() -> None:
    state, _ = run([(d * DAY, True) for d in range(5)])
    later, crossed = add_bounce(state, permanent=True, now=T0 + 6 * DAY)
    assert later.suspended and not crossed
    assert decayed(later, T0 + 365 * DAY) < 0.01
    assert later.suspended  # only reset() lifts it


def test_reset_is_a_clean_slate() -> None:
    state, _ = run([(d * DAY, True) for d in range(5)])
    assert state.suspended
    fresh = reset()
    assert fresh == BounceState(0.0, None, False)
    after, crossed = add_bounce(fresh, permanent=True, now=T0 + 5 * DAY)
    assert (after.score, after.suspended, crossed) == (1.0, False, False)


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (timedelta(0), 1.0),
        (3 * DAY, 1.0),  # held while bounces may still be coming
        (7 * DAY, 1.0),
        (14 * DAY, 0.5),  # then halves every 7 days
        (21 * DAY, 0.25),
        (35 * DAY, 0.0625),
    ],
)
def test_one_hard_bounce_is_forgiven_over_weeks(age: timedelta, expected: float) -> None:
    state, _ = run([(timedelta(0), True)])
    assert decayed(state, T0 + age) == pytest.approx(expected)


def test_a_late_dsn_neither_counts_nor_moves_the_clock_back() -> None:
    state, _ = run([(2 * DAY, True)])
    late, crossed = add_bounce(state, permanent=True, now=T0)
    assert late == state and not crossed
    assert decayed(state, T0) == state.score  # the past is not worth more


def test_decay_resumes_from_the_last_counted_bounce() -> None:
    state, _ = run([(timedelta(0), True), (20 * DAY, True)])
    # First bounce decayed for 13 days past the grace: 2 ** (-13/7) ≈ 0.276, plus 1.
    assert state.score == pytest.approx(1 + 0.5 ** (13 / 7))
    assert state.updated_at == T0 + 20 * DAY


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hard": -1.0},
        {"soft": -0.1},
        {"half_life": timedelta(0)},
        {"threshold": 0.0},
        {"grace": -DAY},
    ],
)
def test_policy_refuses_nonsense(kwargs) -> None:
    with pytest.raises(ValueError):
        ScorePolicy(**kwargs)


def test_a_custom_policy_is_honoured() -> None:
    strict = ScorePolicy(hard=2.0, threshold=4.0)  # Discourse-like
    state, crossings = run([(d * DAY, True) for d in range(2)], strict)
    assert state.suspended and crossings == [DAY]


# ---------------------------------------------------------------- properties

moments = st.integers(min_value=0, max_value=400 * 24 * 3600).map(
    lambda s: T0 + timedelta(seconds=s)
)
histories = st.lists(st.tuples(moments, st.booleans()), max_size=60)


def _replay(history):
    state = reset()
    for moment, permanent in sorted(history):
        state, _ = add_bounce(state, permanent=permanent, now=moment)
    return state


@settings(max_examples=300, deadline=None)
@given(histories, moments, st.integers(min_value=0, max_value=10**8))
def test_score_is_never_negative_and_never_grows_with_time_alone(history, at, wait) -> None:
    state = _replay(history)
    now = max(at, state.updated_at or at)
    first = decayed(state, now)
    second = decayed(state, now + timedelta(seconds=wait))
    assert 0.0 <= second <= first <= state.score


@settings(max_examples=300, deadline=None)
@given(histories)
def test_crossing_happens_at_most_once_and_matches_suspension(history) -> None:
    state = reset()
    crossings = 0
    for moment, permanent in sorted(history):
        state, crossed = add_bounce(state, permanent=permanent, now=moment)
        crossings += crossed
    assert crossings == int(state.suspended)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(moments, st.just(False)), max_size=200))
def test_soft_bounces_alone_over_a_month_never_suspend(history) -> None:
    month = [(T0 + (m - T0) % timedelta(days=30), p) for m, p in history]
    assert not _replay(month).suspended


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(moments, st.booleans()), min_size=1, max_size=60))
def test_bounces_on_one_day_count_once(history) -> None:
    one_day = [(T0.replace(hour=0) + (m - T0) % DAY, p) for m, p in history]
    state = _replay(one_day)
    first_kind = sorted(one_day)[0][1]
    assert state.score == (1.0 if first_kind else 0.1)
    assert not state.suspended
