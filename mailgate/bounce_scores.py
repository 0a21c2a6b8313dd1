"""Bounce scoring stage: a person's bounce history → a decaying score and a suspension (BNC-03).

Pure. Input: the current :class:`BounceState` (as stored), one bounce (hard or soft), the time
it was processed and a :class:`ScorePolicy`. Output: the new state, and whether this bounce is
the one that crossed the threshold (so the caller stops delivery and tells the member and the
list owner exactly once).

The model, and why:

* **Weights.** A hard (5.x.x) bounce adds ``hard`` = 1.0 and the threshold is 5.0, Mailman's
  ``bounce_score_value`` and ``bounce_score_threshold``, so one hard bounce a day for five days
  suspends. A soft (4.x.x) bounce adds only ``soft`` = 0.1: a deferral that persists turns
  into a hard "expired" failure at the relay anyway, so soft bounces alone are only a hint.
* **One incident per day.** Only the first bounce of a UTC calendar day counts; later ones
  that day add nothing. A busy list sends a dead mailbox ten copies in an hour; Mailman
  (``bounce_info.date == today``) and Discourse both count at most one bounce per day for the
  same reason, and it is what makes "one bounce never suspends anyone" hold for one bad day
  at the recipient's end. A calendar day rather than "24 hours since the last one" so that a
  bounce at 09:00 and another at 08:00 the next day are two days, as a person would count
  them. (A soft bounce followed by a hard one on the same day counts as soft: at worst
  suspension comes one day later.)
* **Decay.** The score holds while bounces keep coming (for ``grace``, 7 days after the last
  counted bounce, Mailman's ``bounce_info_stale_after``) and then halves every ``half_life``
  (7 days). Without the hold, five daily hard bounces would decay to 4.1 and never reach
  5.0; with it, a single old bounce is still forgotten: one hard bounce is worth 0.5 after
  two weeks and 0.06 after five.
* **Soft bounces alone.** With these defaults a soft bounce every day for 30 days reaches 3.0
  (30 incidents × 0.1), well under 5.0, however many copies bounce each day.
* **Suspension is sticky.** Decay lowers the score but never lifts a suspension; only
  :func:`reset` (``mailgate bounces reset``, or the member asking for mail again) does.

Datetimes are timezone-aware UTC (the database column type guarantees it). A clock that goes
backwards (out-of-order DSNs) never raises a score or moves ``updated_at`` back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

# Float sums such as 0.1 * 50 land a hair below 5.0; compare with a little slack.
_EPSILON = 1e-9


@dataclass(frozen=True)
class BounceState:
    """A person's score as of ``updated_at`` (the last counted bounce; None if never)."""

    score: float
    updated_at: datetime | None
    suspended: bool


@dataclass(frozen=True)
class ScorePolicy:
    """How much each bounce counts and how fast it is forgiven (see the module docstring)."""

    hard: float = 1.0
    soft: float = 0.1
    half_life: timedelta = timedelta(days=7)
    threshold: float = 5.0
    grace: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
        if self.hard < 0 or self.soft < 0:
            raise ValueError("bounce weights must not be negative")
        if self.half_life <= timedelta(0):
            raise ValueError("half_life must be positive")
        if self.threshold <= 0:
            raise ValueError("threshold must be positive")
        if self.grace < timedelta(0):
            raise ValueError("grace must not be negative")


DEFAULT_POLICY = ScorePolicy()


def reset() -> BounceState:
    """A clean slate: no score, no history, delivery enabled."""
    return BounceState(score=0.0, updated_at=None, suspended=False)


def decayed(state: BounceState, now: datetime, policy: ScorePolicy = DEFAULT_POLICY) -> float:
    """The score at ``now``: held for ``grace`` after the last counted bounce, then halving
    every ``half_life``. Never negative, never larger than the stored score."""
    score = max(0.0, state.score)
    if state.updated_at is None or score == 0.0:
        return score
    quiet = now - state.updated_at - policy.grace
    if quiet <= timedelta(0):
        return score
    return score * 0.5 ** (quiet / policy.half_life)


def add_bounce(
    state: BounceState, *, permanent: bool, now: datetime, policy: ScorePolicy = DEFAULT_POLICY
) -> tuple[BounceState, bool]:
    """Count one bounce. Returns the new state and True only when this bounce suspends."""
    if state.updated_at is not None and _day(now) <= _day(state.updated_at):
        # The same day as the last counted bounce (or an older DSN processed late).
        return state, False
    weight = policy.hard if permanent else policy.soft
    score = decayed(state, now, policy) + weight
    crossed = not state.suspended and score >= policy.threshold - _EPSILON
    return BounceState(score=score, updated_at=now, suspended=state.suspended or crossed), crossed


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()
