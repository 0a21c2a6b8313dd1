"""Thin tasks: take ids, call one service function, let the service commit.

Retries only for transient faults (database OperationalError, relay 4xx / connection
errors), with exponential backoff and jitter capped below the broker's visibility
timeout (CEL-03, CEL-05). Everything else is the service's to record.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy.exc import OperationalError

from digests.questions import BATCH as QUESTION_BATCH
from digests.questions import SEND_TASK as QUESTION_SEND_TASK
from digests.questions import pending_mail_ids, send_question_mails, tick
from digests.sending import BATCH as DIGEST_BATCH
from digests.sending import due_now, send_digests
from mailgate.db import read_only, unit_of_work
from mailgate.delivery import BATCH_SIZE, SEND_TASK, due_deliveries, fan_out, send_batch
from mailgate.ingest import run_ingest_batch
from mailgate.models import utcnow
from mailgate.notices import deliver_notice
from mailgate.outbox import (
    mark_done,
    publish_outbox,
    republish_unfinished,
    requeue_stale_inbound,
)
from worker import runtime
from worker.app import MAX_RETRY_DELAY, app
from worker.mailer import TransientRelayError

KNOWN_TASKS = (
    "mailgate.ingest",
    "mailgate.send_notice",
    "mailgate.fanout",
    "mailgate.send",
    "mailgate.digest_tick",
    "mailgate.digests",
    "mailgate.questions_tick",
    "mailgate.send_question_mails",
)
RETRY = {
    "retry_backoff": True,
    "retry_backoff_max": MAX_RETRY_DELAY,
    "retry_jitter": True,
    "max_retries": 12,
}


@app.task(name="mailgate.ingest", autoretry_for=(OperationalError,), **RETRY)
def ingest(raw_ids: list[int]) -> None:
    """Process raw messages stored together by one gateway commit (or one sweep)."""
    run_ingest_batch(runtime.session_factory(), list(raw_ids), runtime.ingest_context())
    # Notices (and later fan-out) queued by this message go out now, not at the next sweep.
    publish_outbox(runtime.session_factory(), runtime.publish, known_tasks=KNOWN_TASKS)


@app.task(
    name="mailgate.send_notice", autoretry_for=(OperationalError, TransientRelayError), **RETRY
)
def send_notice(notice_id: int) -> None:
    with unit_of_work(runtime.session_factory()) as session:
        deliver_notice(session, notice_id, runtime.signed_mailer(), runtime.settings.domain)
        mark_done(session, f"notice:{notice_id}")


@app.task(name="mailgate.fanout", autoretry_for=(OperationalError,), **RETRY)
def fanout(post_id: int) -> None:
    """Delivery rows for a post, then its send tasks (through the outbox)."""
    with unit_of_work(runtime.session_factory()) as session:
        fan_out(session, post_id)
        mark_done(session, f"fanout:{post_id}")  # in the same transaction as the rows
    publish_outbox(runtime.session_factory(), runtime.publish, known_tasks=KNOWN_TASKS)


@app.task(name="mailgate.send", autoretry_for=(OperationalError,), **RETRY)
def send(delivery_ids: list[int], lane: str = "") -> None:
    """One batch of copies over one relay connection; 4xx are rescheduled in the DB.
    ``lane`` only steers the broker (a post's first batch goes ahead, ``runtime.publish``)."""
    send_batch(
        runtime.session_factory(),
        delivery_ids,
        builder=runtime.copy_builder(),
        relay=runtime.mailer(),
        throttle=runtime.throttle(),
        lease=timedelta(seconds=runtime.settings.send_lease_seconds),
    )


@app.task(name="mailgate.sweep", autoretry_for=(OperationalError,), max_retries=1)
def sweep() -> None:
    sweep_once()


def sweep_once() -> dict[str, int]:
    """Re-publish whatever the database says is waiting: inbound never processed,
    outbox rows never published, deliveries due for retry or with an expired lease."""
    factory = runtime.session_factory()
    inbound = requeue_stale_inbound(factory, runtime.publish)
    outbox = publish_outbox(factory, runtime.publish, known_tasks=KNOWN_TASKS)
    outbox += republish_unfinished(factory, runtime.publish)
    # A pending copy whose task the broker lost is re-sent after a lease's length (at
    # most a minute): long enough not to race a task that is merely queued.
    lease = runtime.settings.send_lease_seconds
    due = due_deliveries(factory, stale_after=timedelta(seconds=min(60, lease)))
    for start in range(0, len(due), BATCH_SIZE):
        runtime.publish(SEND_TASK, [due[start : start + BATCH_SIZE]])
    return {"inbound": inbound, "outbox": outbox, "deliveries": len(due)}


@app.task(name="mailgate.digest_tick", autoretry_for=(OperationalError,), max_retries=1)
def digest_tick() -> int:
    """The scheduler step (beat, every few minutes): publish a task per batch of members
    whose local digest time has come. Safe to run twice: rows are unique per day."""
    return publish_due_digests()


def publish_due_digests(now: datetime | None = None) -> int:
    """The digest scheduler step; ``now`` (``mailgate digest send-due --now``) runs it as
    of that instant, and the batches are built and recorded as of it too."""
    due = due_now(runtime.session_factory(), now or utcnow())
    extra = [now.isoformat()] if now else []
    for start in range(0, len(due), DIGEST_BATCH):
        batch = due[start : start + DIGEST_BATCH]
        runtime.publish("mailgate.digests", [[[pid, d.isoformat()] for pid, d in batch], *extra])
    return len(due)


@app.task(name="mailgate.digests", autoretry_for=(OperationalError,), **RETRY)
def digests(batch: list[list[object]], now: str | None = None) -> None:
    """Build and send the digests of one batch of (person id, local date)."""
    due = [(int(str(pid)), date.fromisoformat(str(day))) for pid, day in batch]
    send_digests(
        runtime.session_factory(),
        due,
        mail=runtime.digest_mail(),
        relay=runtime.signed_mailer(),
        now=datetime.fromisoformat(now) if now else None,
    )


@app.task(name="mailgate.questions_tick", autoretry_for=(OperationalError,), max_retries=3)
def questions_tick(now: str | None = None) -> dict[str, int]:
    """The questions scheduler step (beat, every minute; and right after a question is
    created or answered): prompts, asks, reminders, summaries, follow-ups. ``now`` lets
    an operator (or a test) run the step for a given instant."""
    return run_questions_tick(datetime.fromisoformat(now) if now else None)


def run_questions_tick(now: datetime | None = None) -> dict[str, int]:
    now = now or utcnow()
    factory = runtime.session_factory()
    with unit_of_work(factory) as session:
        counts = tick(session, now, runtime.settings.domain)
    with read_only(factory) as session:
        ids = pending_mail_ids(session, now)
    stamp = now.isoformat()
    for start in range(0, len(ids), QUESTION_BATCH):
        runtime.publish(QUESTION_SEND_TASK, [ids[start : start + QUESTION_BATCH], stamp])
    return {**counts, "published": len(ids)}


@app.task(name="mailgate.send_question_mails", autoretry_for=(OperationalError,), **RETRY)
def send_questions(mail_ids: list[int], now: str | None = None) -> None:
    """One batch of question mails (asks, reminders, summaries) over one connection."""
    send_question_mails(
        runtime.session_factory(),
        mail_ids,
        relay=runtime.signed_mailer(),
        settings=runtime.question_mail(),
        now=datetime.fromisoformat(now) if now else None,
    )
