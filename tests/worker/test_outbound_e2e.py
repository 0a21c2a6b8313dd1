"""Outbound end to end with real processes: a post enters ``mailgate serve`` by SMTP, a
real Celery worker (on Redis, and on the embedded filesystem broker) fans it out, and
every member's copy arrives at a recording relay on 127.0.0.1. A reply to a received
copy goes back through the gateway and lands in the same discussion. A worker killed
with SIGKILL mid-fan-out loses nothing.
"""

from __future__ import annotations

import email
import email.policy
import os
import signal
import smtplib
import time

import pytest
from sqlalchemy import func, select

from mailgate import directory as d
from mailgate.db import unit_of_work
from mailgate.models import DeliveryRecord, DeliveryStatus, Post, utcnow
from tests.conftest import DOMAIN, free_port
from tests.worker.conftest import (
    REDIS_URL,
    port_open,
    require_fresh_redis,
    wait_for,
)

AUTHOR = "alice@corp.example"


def seed_list(session_factory, members: int) -> list[str]:  # type: ignore[no-untyped-def]
    addresses = [f"member{i:03d}@corp.example" for i in range(members)]
    with unit_of_work(session_factory) as s:
        d.create_list(s, "test", "eng", name="Engineering", visibility="members")
        rows = [d.ImportRow(i + 2, a, f"Member {i}", "UTC", "Eng") for i, a in enumerate(addresses)]
        rows.append(d.ImportRow(1, AUTHOR, "Alice", "Europe/Berlin", "Platform"))
        d.import_members(s, "test", "eng", rows)
    return addresses


def post(port: int, sender: str, rcpt: str, body: str, **headers: str) -> None:
    head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    raw = (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: Release train\r\n"
        f"Message-ID: <{time.time_ns()}@corp.example>\r\n{head}\r\n{body}\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(sender, [rcpt], raw)


def all_sent(session_factory, count: int) -> bool:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        statuses = s.scalars(select(DeliveryRecord.status)).all()
    return len(statuses) == count and set(statuses) == {DeliveryStatus.SENT}


def start_system(processes, mailgate_env, relay_sink, tmp_path, broker: str):  # type: ignore[no-untyped-def]
    if broker == "redis":
        require_fresh_redis()
    port = free_port()
    env = {
        **mailgate_env,
        "MAILGATE_SMTP_PORT": str(port),
        "MAILGATE_RELAY_URL": relay_sink.url,
        "MAILGATE_BASE_URL": "https://mailgate.corp.example",
        "MAILGATE_HTTP_PORT": str(free_port()),
        "MAILGATE_SEND_LEASE": "3",
    }
    if broker == "redis":
        env["MAILGATE_BROKER_URL"] = REDIS_URL
    processes(["serve"], env, tmp_path / "serve.log")
    worker = processes(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")
    wait_for(lambda: port_open(port), what="the gateway")
    return port, env, worker


@pytest.mark.parametrize("broker", ["redis", "filesystem"])
def test_post_reaches_every_member_with_list_headers_and_replies_thread(  # type: ignore[no-untyped-def]
    broker, mailgate_env, session_factory, processes, relay_sink, tmp_path
) -> None:
    members = seed_list(session_factory, 200 if broker == "redis" else 40)
    port, _, _ = start_system(processes, mailgate_env, relay_sink, tmp_path, broker)
    post(port, AUTHOR, f"eng@{DOMAIN}", "The train leaves at 10:00.")
    wait_for(lambda: len(relay_sink.messages) >= len(members), timeout=90, what="all copies")
    # Every row marked sent means no copy is still in flight: a duplicate would be here.
    wait_for(lambda: all_sent(session_factory, len(members)), what="every copy marked sent")
    assert sorted(m.rcpt_to[0] for m in relay_sink.messages) == members  # one copy each
    message_ids, senders = set(), set()
    for message in relay_sink.messages:
        copy = email.message_from_bytes(message.data, policy=email.policy.default)
        assert copy.defects == [] and all(not p.defects for p in copy.walk())
        (sender,) = copy["From"].addresses
        assert (sender.display_name, sender.addr_spec) == (
            "Alice via Engineering",
            "eng@lists.corp.example",
        )
        assert copy["Subject"] == "[eng] Release train"
        assert copy["List-Id"].endswith("<eng.lists.corp.example>")
        assert copy["List-Post"] == "<mailto:eng@lists.corp.example>"
        assert copy["Precedence"] == "list"
        assert "OOF" in copy["X-Auto-Response-Suppress"]
        assert copy["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "https://mailgate.corp.example/u/" in copy["List-Unsubscribe"]
        assert copy["Reply-To"].addresses[0].domain == DOMAIN
        assert copy["Reply-To"].addresses[0].username.startswith("reply+")
        assert message.mail_from.startswith("bounces+") and message.mail_from.endswith(DOMAIN)
        assert "The train leaves at 10:00." in copy.get_body(("plain",)).get_content()
        message_ids.add(copy["Message-ID"])
        senders.add(message.mail_from)
    assert len(message_ids) == 1  # the same Message-ID on every copy (FMT-03)
    assert len(senders) == len(members)  # a VERP sender per copy (BNC-01)

    # Bob replies to his copy from his mail client: To the Reply-To, with In-Reply-To.
    copy = email.message_from_bytes(relay_sink.messages[0].data, policy=email.policy.default)
    replier = relay_sink.messages[0].rcpt_to[0]
    reply_to = copy["Reply-To"].addresses[0].addr_spec
    before = len(relay_sink.messages)
    post(
        port,
        replier,
        reply_to,
        "Count me in.\r\n\r\nOn Tue, Alice wrote:\r\n> The train",
        In_Reply_To=copy["Message-ID"],
        References=copy["Message-ID"],
    )

    def reply_post() -> Post | None:
        with session_factory() as s:
            rows = s.scalars(select(Post).order_by(Post.id)).all()
        return rows[1] if len(rows) == 2 else None

    reply = wait_for(reply_post, timeout=60, what="the reply post")
    with session_factory() as s:
        first = s.scalars(select(Post).order_by(Post.id)).first()
    assert reply.discussion_id == first.discussion_id and reply.text == "Count me in."  # type: ignore[union-attr]
    wait_for(
        lambda: len(relay_sink.messages) >= before + len(members),
        timeout=90,
        what="the reply's copies",
    )
    threaded = [
        email.message_from_bytes(m.data, policy=email.policy.default)
        for m in relay_sink.messages[before:]
    ]
    assert {c["In-Reply-To"] for c in threaded} == {copy["Message-ID"]}
    assert {c["Subject"] for c in threaded} == {"Re: [eng] Release train"}


def test_worker_killed_mid_fan_out_loses_nothing(  # type: ignore[no-untyped-def]
    mailgate_env, session_factory, processes, relay_sink, tmp_path
) -> None:
    members = seed_list(session_factory, 200)
    relay_sink.delay = 0.01  # slow relay: the kill lands in the middle of the fan-out
    port, env, worker = start_system(processes, mailgate_env, relay_sink, tmp_path, "redis")
    post(port, AUTHOR, f"eng@{DOMAIN}", "Survive the crash.")
    wait_for(lambda: len(relay_sink.messages) >= 30, timeout=60, what="the fan-out to start")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    delivered_before = len(relay_sink.messages)
    assert delivered_before < len(members), "the kill came too late to test anything"
    with session_factory() as s:  # the batches the dead worker had claimed
        lease = s.scalar(
            select(func.max(DeliveryRecord.lease_until)).where(
                DeliveryRecord.status == DeliveryStatus.SENDING
            )
        )
    processes(["worker", "--concurrency", "1"], env, tmp_path / "worker2.log")
    # Until their lease (MAILGATE_SEND_LEASE=3) runs out nobody may send them again.
    wait_for(lambda: lease is None or utcnow() > lease, timeout=10, what="the lease to run out")
    sweeper = processes(["sweep"], env, tmp_path / "sweep.log")  # what beat runs every 15 s
    assert sweeper.wait(timeout=30) == 0
    wait_for(lambda: all_sent(session_factory, len(members)), timeout=90, what="every row sent")
    received = [m.rcpt_to[0] for m in relay_sink.messages]
    assert set(received) == set(members)  # every member got the post
    duplicates = len(received) - len(set(received))
    assert duplicates <= 100  # at most the batch that was in flight (DUR-05)
