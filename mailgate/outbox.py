"""Outbox and sweeper: getting committed work to the broker, and getting it there again.

Input: a session factory and a ``publish(task_name, args)`` port (Celery's
``send_task`` in production). Output: published work; rows marked so they are not sent
twice in a short while.

Nothing is published inside a transaction (DUR-03): rows are committed first, and this
module publishes them afterwards. If the broker is down, or loses a message (a Redis
restart, a worker killed with a message in hand, the filesystem broker's delete-on-read),
the rows are still there and the sweeper publishes them again. Consumers are idempotent,
so a second copy is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailgate.db import unit_of_work
from mailgate.models import OutboxEntry, RawMessage, RawStatus, utcnow

log = logging.getLogger("mailgate.outbox")

Publish = Callable[[str, Sequence[Any]], None]
INGEST_TASK = "mailgate.ingest"
INGEST_BATCH = 50


def publish_outbox(
    factory: sessionmaker[Session],
    publish: Publish,
    *,
    known_tasks: Collection[str],
    limit: int = 500,
    now: datetime | None = None,
) -> int:
    """Publish pending outbox rows whose task a worker knows; return how many."""
    stamp = now or utcnow()
    with unit_of_work(factory) as session:
        rows = session.execute(
            select(OutboxEntry.id, OutboxEntry.task, OutboxEntry.args)
            .where(OutboxEntry.published_at.is_(None), OutboxEntry.task.in_(list(known_tasks)))
            .order_by(OutboxEntry.id)
            .limit(limit)
        ).all()
    return _publish_rows(factory, publish, rows, stamp)


def _publish_rows(
    factory: sessionmaker[Session], publish: Publish, rows: Sequence[Any], stamp: datetime
) -> int:
    """Publish (id, task, args) rows in order until the broker fails; stamp those sent."""
    sent: list[int] = []
    for row_id, task, args in rows:
        try:
            publish(task, args)
        except Exception as exc:  # noqa: BLE001 - broker down: leave it pending
            log.warning(
                "broker unavailable (%s); %d outbox rows stay pending",
                type(exc).__name__,
                len(rows) - len(sent),
            )
            break
        sent.append(row_id)
    if sent:
        with unit_of_work(factory) as session:
            session.execute(
                update(OutboxEntry).where(OutboxEntry.id.in_(sent)).values(published_at=stamp)
            )
    return len(sent)


def requeue_stale_inbound(
    factory: sessionmaker[Session],
    publish: Publish,
    *,
    older_than: timedelta = timedelta(seconds=30),
    requeue_after: timedelta = timedelta(minutes=5),
    limit: int = 1000,
    now: datetime | None = None,
) -> int:
    """Publish ingest again for raw messages still ``received`` after ``older_than``.

    ``queued_at`` keeps a backlog from being re-published on every sweep.
    """
    stamp = now or utcnow()
    with unit_of_work(factory) as session:
        ids = list(
            session.scalars(
                select(RawMessage.id)
                .where(
                    RawMessage.status == RawStatus.RECEIVED,
                    RawMessage.received_at < stamp - older_than,
                    or_(
                        RawMessage.queued_at.is_(None),
                        RawMessage.queued_at < stamp - requeue_after,
                    ),
                )
                .order_by(RawMessage.id)
                .limit(limit)
            )
        )
        if ids:
            session.execute(
                update(RawMessage).where(RawMessage.id.in_(ids)).values(queued_at=stamp)
            )
    published = 0
    for start in range(0, len(ids), INGEST_BATCH):
        batch = ids[start : start + INGEST_BATCH]
        try:
            publish(INGEST_TASK, [batch])
        except Exception as exc:  # noqa: BLE001 - the next sweep tries again
            log.warning("broker unavailable (%s) while re-queueing", type(exc).__name__)
            break
        published += len(batch)
    return published


# Tasks whose completion is recorded on their outbox row (``done_at``): for these the
# row itself is the only trace of the work, so a message lost with a killed worker
# (acked late but the broker's redelivery is an hour away, or the filesystem broker's
# delete-on-read) would otherwise be lost for good (DUR-07, found by
# tests/reliability/test_worker_kills.py). Sends and ingest have their own rows to sweep.
TRACKED_TASKS = ("mailgate.fanout", "mailgate.send_notice")


def mark_done(session: Session, key: str, now: datetime | None = None) -> None:
    """Record in the caller's transaction that the work behind outbox row ``key`` is done."""
    session.execute(
        update(OutboxEntry)
        .where(OutboxEntry.key == key, OutboxEntry.done_at.is_(None))
        .values(done_at=now or utcnow())
    )


def republish_unfinished(
    factory: sessionmaker[Session],
    publish: Publish,
    *,
    older_than: timedelta = timedelta(seconds=30),
    limit: int = 500,
    now: datetime | None = None,
) -> int:
    """Publish again tracked work published ``older_than`` ago and still not done; its
    ``published_at`` moves on, so each row is retried at most once per period."""
    stamp = now or utcnow()
    with unit_of_work(factory) as session:
        rows = session.execute(
            select(OutboxEntry.id, OutboxEntry.task, OutboxEntry.args)
            .where(
                OutboxEntry.task.in_(TRACKED_TASKS),
                OutboxEntry.done_at.is_(None),
                OutboxEntry.published_at < stamp - older_than,
            )
            .order_by(OutboxEntry.id)
            .limit(limit)
        ).all()
    sent = _publish_rows(factory, publish, rows, stamp)
    if sent:
        log.info("re-published %d unfinished task(s)", sent)
    return sent
