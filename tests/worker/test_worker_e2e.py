"""Real processes: ``mailgate serve`` + ``mailgate worker`` on Redis, and ``mailgate run``
on the embedded defaults (filesystem broker, Maildir outbox). Mail goes in over SMTP on
127.0.0.1; the test watches the database and the Maildir.

Each process is started by the test and ended by PID at teardown.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from sqlalchemy import select

from mailgate.models import Notice, Post, RawMessage, RawStatus
from tests.conftest import free_port
from tests.worker.conftest import (
    REDIS_URL,
    outbox_files,
    port_open,
    require_fresh_redis,
    seed,
    send,
    wait_for,
)


def test_gateway_and_worker_on_redis(  # type: ignore[no-untyped-def]
    mailgate_env, run_cli, session_factory, processes, tmp_path
) -> None:
    require_fresh_redis()
    seed(run_cli)
    port = free_port()
    env = {**mailgate_env, "MAILGATE_BROKER_URL": REDIS_URL, "MAILGATE_SMTP_PORT": str(port)}
    processes(["serve"], env, tmp_path / "serve.log")
    processes(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")
    wait_for(lambda: port_open(port), what="the gateway to listen")

    send(port, "alice@corp.example", "eng@lists.corp.example", "Through Redis")
    send(port, "mallory@elsewhere.example", "eng@lists.corp.example", "Let me in")

    def post_texts() -> list[str]:
        with session_factory() as s:
            return list(s.scalars(select(Post.text)))

    assert wait_for(post_texts, what="the post") == ["Through Redis"]
    files = wait_for(lambda: outbox_files(Path(mailgate_env["MAILGATE_VAR_DIR"])), what="notice")
    (notice,) = files  # type: ignore[misc]
    assert b"Delivered-To: mallory@elsewhere.example" in notice
    assert b"X-Mailgate-Notice: unknown-sender" in notice
    assert b"Auto-Submitted: auto-replied" in notice
    with session_factory() as s:
        statuses = sorted(str(r.status) for r in s.scalars(select(RawMessage)))
        assert statuses == ["processed", "rejected"]
        assert s.scalars(select(Notice.sent_at)).one() is not None
    logs = (tmp_path / "serve.log").read_text() + (tmp_path / "worker.log").read_text()
    assert "Traceback" not in logs


def test_run_command_starts_everything_on_embedded_defaults(  # type: ignore[no-untyped-def]
    mailgate_env, run_cli, session_factory, processes, tmp_path
) -> None:
    """``make run``'s command on a machine with no Redis: filesystem broker, Maildir."""
    seed(run_cli)
    port = free_port()
    env = {**mailgate_env, "MAILGATE_SMTP_PORT": str(port)}
    env.pop("MAILGATE_BROKER_URL", None)
    runner = processes(["run", "--concurrency", "1"], env, tmp_path / "run.log")
    wait_for(lambda: port_open(port), timeout=60, what="mailgate run to listen")
    send(port, "alice@corp.example", "eng@lists.corp.example", "Embedded works")

    def posted() -> bool:
        with session_factory() as s:
            return s.scalar(select(Post.text)) == "Embedded works"

    wait_for(posted, timeout=60, what="the post via the filesystem broker")
    broker = Path(mailgate_env["MAILGATE_VAR_DIR"]) / "broker" / "queue"
    assert broker.is_dir()
    os.killpg(runner.pid, signal.SIGTERM)
    assert runner.wait(timeout=30) == 0
    log = (tmp_path / "run.log").read_text()
    assert "started smtp" in log and "started worker" in log and "started beat" in log


def test_message_lost_by_the_broker_is_recovered_by_the_sweeper(  # type: ignore[no-untyped-def]
    mailgate_env, run_cli, session_factory, gateway_factory
) -> None:
    """A committed message whose task never reached a worker (broker down, gateway
    killed after commit) is published again by the sweeper and processed once."""
    from datetime import timedelta

    from mailgate.ingest import IngestContext, run_ingest
    from mailgate.outbox import requeue_stale_inbound
    from mailgate.smtp import Limits
    from tests.conftest import DOMAIN, SECRET

    seed(run_cli)
    gateway = gateway_factory(limits=Limits())
    gateway.inbox._publish = None  # type: ignore[attr-defined]  # the broker "lost" it
    send(gateway.port, "alice@corp.example", f"eng@{DOMAIN}", "Lost and found")
    published: list[tuple[str, list[int]]] = []
    count = requeue_stale_inbound(
        session_factory,
        lambda task, args: published.append((task, list(args))),
        older_than=timedelta(0),
    )
    assert count == 1 and published[0][0] == "mailgate.ingest"
    # A second sweep right away does not publish it again (queued_at).
    assert requeue_stale_inbound(session_factory, lambda *a: None, older_than=timedelta(0)) == 0
    ctx = IngestContext(domain=DOMAIN, secrets=(SECRET,))
    for _ in range(2):  # at-least-once: a duplicate task changes nothing
        run_ingest(session_factory, published[0][1][0][0], ctx)
    with session_factory() as s:
        assert s.scalars(select(Post.text)).all() == ["Lost and found"]
        assert s.scalars(select(RawMessage.status)).all() == [RawStatus.PROCESSED]
