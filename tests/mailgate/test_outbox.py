"""The outbox and the sweeper: committed work reaches the broker, and work the broker
lost (published, never finished) is published again — once per period, not forever."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailgate.db import unit_of_work
from mailgate.models import OutboxEntry
from mailgate.outbox import mark_done, publish_outbox, republish_unfinished

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
KNOWN = ("mailgate.fanout", "mailgate.send_notice", "mailgate.send")


def add(session_factory, key: str, task: str, args: list[int]) -> None:  # type: ignore[no-untyped-def]
    with unit_of_work(session_factory) as s:
        s.add(OutboxEntry(key=key, task=task, args=args, created_at=T0))


def test_published_once_then_again_only_if_never_done(session_factory) -> None:  # type: ignore[no-untyped-def]
    add(session_factory, "fanout:1", "mailgate.fanout", [1])
    add(session_factory, "fanout:2", "mailgate.fanout", [2])
    add(session_factory, "send:1:5", "mailgate.send", [[5]])  # sends are swept elsewhere
    add(session_factory, "unknown:1", "mailgate.future", [1])  # no worker knows it yet
    published: list[tuple[str, list[int]]] = []

    def publish(task: str, args):  # type: ignore[no-untyped-def]
        published.append((task, list(args)))

    assert publish_outbox(session_factory, publish, known_tasks=KNOWN, now=T0) == 3
    assert publish_outbox(session_factory, publish, known_tasks=KNOWN, now=T0) == 0
    with unit_of_work(session_factory) as s:
        mark_done(s, "fanout:1", T0)  # the fan-out of post 1 finished; post 2's was lost
    published.clear()
    assert republish_unfinished(session_factory, publish, now=T0 + timedelta(seconds=10)) == 0
    later = T0 + timedelta(seconds=31)
    assert republish_unfinished(session_factory, publish, now=later) == 1
    assert published == [("mailgate.fanout", [2])]
    # Not again until another period has passed since this re-publication.
    assert republish_unfinished(session_factory, publish, now=later + timedelta(seconds=5)) == 0
    assert republish_unfinished(session_factory, publish, now=later + timedelta(seconds=31)) == 1


def test_a_broker_outage_leaves_rows_pending(session_factory) -> None:  # type: ignore[no-untyped-def]
    add(session_factory, "fanout:1", "mailgate.fanout", [1])
    add(session_factory, "fanout:2", "mailgate.fanout", [2])

    def down(task: str, args):  # type: ignore[no-untyped-def]
        raise ConnectionError("redis is down")

    assert publish_outbox(session_factory, down, known_tasks=KNOWN, now=T0) == 0
    seen: list[int] = []
    assert (
        publish_outbox(session_factory, lambda t, a: seen.append(a[0]), known_tasks=KNOWN, now=T0)
        == 2
    )
    assert seen == [1, 2]
