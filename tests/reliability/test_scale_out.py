"""Scale-out on PostgreSQL + Redis: two gateways (as two MX hosts, each message delivered
to both) and two workers take mail at the same time. One post per message, one copy per
member, no lost work.
"""

from __future__ import annotations

import smtplib
import threading
from collections import Counter

import pytest
from sqlalchemy import func, select

from mailgate import directory as d
from mailgate.db import unit_of_work
from mailgate.models import DeliveryRecord, DeliveryStatus, Post, RawMessage, RawStatus
from tests.conftest import DOMAIN, ENGINE, free_port
from tests.worker.conftest import (
    REDIS_URL,
    port_open,
    require_fresh_redis,
    wait_for,
)

MESSAGES = 30
MEMBERS = 40

pytestmark = pytest.mark.skipif(
    ENGINE != "postgres", reason="scale-out runs in the PostgreSQL pass (two hosts share it)"
)


def test_two_gateways_two_workers_one_post_per_message(  # type: ignore[no-untyped-def]
    mailgate_env, session_factory, processes, relay_sink, tmp_path
) -> None:
    require_fresh_redis()
    members = [f"m{i:02d}@corp.example" for i in range(MEMBERS)]
    with unit_of_work(session_factory) as s:
        d.create_list(s, "test", "eng", visibility="members")
        d.import_members(
            s, "test", "eng", [d.ImportRow(i, a, "", "UTC", "") for i, a in enumerate(members)]
        )
    base = {
        **mailgate_env,
        "MAILGATE_BROKER_URL": REDIS_URL,
        "MAILGATE_RELAY_URL": relay_sink.url,
        "MAILGATE_SEND_LEASE": "5",
    }
    ports = [free_port(), free_port()]
    for n, port in enumerate(ports):
        processes(["serve"], {**base, "MAILGATE_SMTP_PORT": str(port)}, tmp_path / f"gw{n}.log")
    for n in range(2):
        processes(["worker", "--concurrency", "1"], base, tmp_path / f"worker{n}.log")
    for port in ports:
        wait_for(lambda port=port: port_open(port), what="both gateways")

    def client(port: int, ids: range) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            for i in ids:
                sender = members[i % MEMBERS]
                raw = (
                    f"From: {sender}\r\nTo: eng@{DOMAIN}\r\nSubject: Load {i}\r\n"
                    f"Message-ID: <scale-{i}@corp.example>\r\n\r\nMessage {i}\r\n"
                ).encode()
                smtp.sendmail(sender, [f"eng@{DOMAIN}"], raw)

    # Every message goes to both gateways at the same time, as two MX hosts would.
    threads = [threading.Thread(target=client, args=(port, range(MESSAGES))) for port in ports]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    expected_copies = MESSAGES * (MEMBERS - 1)  # authors don't get their own posts

    def settled() -> bool:
        with session_factory() as s:
            pending = s.scalar(select(func.count()).where(RawMessage.status == RawStatus.RECEIVED))
            sent = s.scalar(
                select(func.count()).where(DeliveryRecord.status == DeliveryStatus.SENT)
            )
        return pending == 0 and sent == expected_copies

    wait_for(settled, timeout=150, what="every message processed and every copy sent")
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(RawMessage)) == 2 * MESSAGES
        assert s.scalar(select(func.count()).select_from(Post)) == MESSAGES
        reasons = Counter(s.scalars(select(RawMessage.reason)))
    assert reasons == {"posted": MESSAGES, "duplicate": MESSAGES}
    # The relay keeps a copy before it answers 250 and a row is marked sent only after
    # that answer, so with every row sent every copy is already at the relay; a second
    # sending of a row (the duplicate this test hunts) would need a row still in flight.
    with session_factory() as s:
        in_flight = s.scalar(
            select(func.count()).where(DeliveryRecord.status != DeliveryStatus.SENT)
        )
    assert in_flight == 0
    copies = Counter(
        (m.rcpt_to[0], m.data.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0])
        for m in relay_sink.messages
    )
    assert len(copies) == expected_copies
    assert max(copies.values()) == 1  # one copy per member per post
    for n in range(2):
        assert "Traceback" not in (tmp_path / f"worker{n}.log").read_text()
