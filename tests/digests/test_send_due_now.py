"""``mailgate digest send-due --now ISO``: the digest scheduler step for a given instant,
as ``ask tick --now`` is for questions (issue 17), so an admin can try a digest without
waiting for the morning. The CLI and a real Celery worker on Redis, a recording relay."""

from __future__ import annotations

import email
import email.policy
import time
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select

from mailgate.ingest import IngestContext, run_ingest
from mailgate.models import Digest
from tests.conftest import DOMAIN, SECRET, free_port
from tests.worker.conftest import REDIS_URL, require_fresh_redis, wait_for

READER = "reader@corp.example"  # Europe/Berlin, digest at 08:00 local
MORNING = datetime(2026, 3, 3, 7, 5, tzinfo=UTC)  # 08:05 in Berlin


def test_send_due_now_runs_the_step_for_that_instant(  # type: ignore[no-untyped-def]
    directory, gateway, session_factory, mailgate_env, processes, relay_sink, tmp_path
) -> None:
    require_fresh_redis()
    directory.list("eng", name="Engineering")
    directory.member("eng", "ana@corp.example", name="Ana")
    directory.member("eng", READER, name="Reader", timezone="Europe/Berlin", delivery="digest")
    raw = (
        f"From: ana@corp.example\r\nTo: eng@{DOMAIN}\r\nSubject: Cache rollout\r\n"
        f"Message-ID: <{time.time_ns()}.ana@corp.example>\r\n\r\nRolling out today.\r\n"
    ).encode()
    raw_id = gateway.submit(raw, f"eng@{DOMAIN}", "ana@corp.example")
    ctx = IngestContext(domain=DOMAIN, secrets=(SECRET,), now=lambda: MORNING - timedelta(hours=3))
    run_ingest(session_factory, raw_id, ctx)
    env = {
        **mailgate_env,
        "MAILGATE_BROKER_URL": REDIS_URL,
        "MAILGATE_RELAY_URL": relay_sink.url,
        "MAILGATE_SMTP_PORT": str(free_port()),
    }

    def send_due(at: str, name: str) -> str:
        log = tmp_path / f"{name}.log"
        step = processes(["digest", "send-due", "--now", at], env, log)
        assert step.wait(timeout=60) == 0, log.read_text()
        return log.read_text()

    # 07:30 in Berlin: not yet the reader's hour.
    assert "queued digests for 0 member(s)" in send_due("2026-03-03T06:30:00+00:00", "early")
    processes(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")
    assert "queued digests for 1 member(s)" in send_due(MORNING.isoformat(), "morning")
    wait_for(lambda: relay_sink.messages, timeout=60, what="the digest at the relay")
    (message,) = relay_sink.messages
    assert message.rcpt_to == [READER]
    digest = email.message_from_bytes(message.data, policy=email.policy.default)
    assert "Cache rollout" in digest.get_body(("plain",)).get_content()
    with session_factory() as s:
        row = s.scalars(select(Digest)).one()
    # Built and recorded as of --now: that day's digest, its window ending at that instant.
    assert date.fromisoformat(row.local_date) == date(2026, 3, 3)
    assert row.status == "sent"
    assert row.created_at == MORNING
    # The same instant again: already sent, nothing queued.
    assert "queued digests for 0 member(s)" in send_due(MORNING.isoformat(), "again")


def test_send_due_refuses_an_instant_without_a_timezone(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("digest", "send-due", "--now", "2026-03-03T07:05")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: --now needs a timezone, e.g. 2026-12-01T09:30+00:00"
    result = run_cli("digest", "send-due", "--now", "tomorrow")
    assert result.exit_code == 1 and "invalid --now 'tomorrow'" in result.stderr
