"""DUR-01/02 with real processes: the gateway is killed after its commit and before its
250; the client retries as an MTA would; the message becomes exactly one post.
"""

from __future__ import annotations

import smtplib

import pytest
from sqlalchemy import select

from mailgate.ingest import IngestContext, run_ingest
from mailgate.models import Post, RawMessage, RawStatus, utcnow
from mailgate.outbox import requeue_stale_inbound
from mailgate.trace import without_own_trace
from tests.conftest import DOMAIN, SECRET, free_port
from tests.worker.conftest import port_open, seed, wait_for

RAW = (
    b"From: alice@corp.example\r\nTo: eng@lists.corp.example\r\nSubject: Survives\r\n"
    b"Message-ID: <crash-test@corp.example>\r\n\r\nCommitted before the crash.\r\n"
)


def test_gateway_killed_after_commit_loses_nothing_and_retry_adds_nothing(  # type: ignore[no-untyped-def]
    mailgate_env,
    run_cli,
    session_factory,
    processes,
    tmp_path,
) -> None:
    from datetime import timedelta

    seed(run_cli)
    port = free_port()
    env = {**mailgate_env, "MAILGATE_SMTP_PORT": str(port), "MAILGATE_FAILPOINT": "after-commit"}
    doomed = processes(["serve"], env, tmp_path / "doomed.log")
    wait_for(lambda: port_open(port), what="the gateway to listen")
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("alice@corp.example", [f"eng@{DOMAIN}"], RAW)
    assert doomed.wait(timeout=10) == 137  # died in the failpoint, before the 250

    with session_factory() as s:
        rows = s.scalars(select(RawMessage)).all()
    assert [without_own_trace(r.raw) for r in rows] == [
        RAW
    ]  # committed although the client saw no 250

    env.pop("MAILGATE_FAILPOINT")
    processes(["serve"], env, tmp_path / "restarted.log")
    wait_for(lambda: port_open(port), what="the restarted gateway")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:  # the MTA's retry
        client.sendmail("alice@corp.example", [f"eng@{DOMAIN}"], RAW)

    # The first copy's task never reached a broker: the sweeper finds it.
    published: list[list[int]] = []
    requeue_stale_inbound(  # a sweep a minute later: both rows are stale by then
        session_factory,
        lambda task, args: published.append(args[0]),
        older_than=timedelta(seconds=30),
        now=utcnow() + timedelta(minutes=1),
    )
    ctx = IngestContext(domain=DOMAIN, secrets=(SECRET,))
    with session_factory() as s:
        ids = s.scalars(select(RawMessage.id).order_by(RawMessage.id)).all()
    assert sorted(i for batch in published for i in batch) == list(ids)
    for raw_id in ids:
        run_ingest(session_factory, raw_id, ctx)
    with session_factory() as s:
        assert s.scalars(select(Post.text)).all() == ["Committed before the crash."]
        reasons = s.scalars(select(RawMessage.reason).order_by(RawMessage.id)).all()
        statuses = set(s.scalars(select(RawMessage.status)).all())
    assert reasons == ["posted", "duplicate"] and statuses == {RawStatus.PROCESSED}
