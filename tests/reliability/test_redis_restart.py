"""Redis killed and restarted in the middle of a 1,000-copy fan-out (CEL-08, TEST-06).

Real processes on 127.0.0.1: a private ``redis-server`` this test owns (a free port,
no persistence, so a restart loses every queued and unacked task, the worst case),
``mailgate serve``, ``mailgate worker --concurrency 1`` and a slow recording relay.
At about 30% of the copies Redis gets SIGKILL; a second later it starts again, empty,
on the same port. ``mailgate sweep`` (what beat runs every 15 s) then re-publishes what
the database says is waiting: batches whose lease expired (``MAILGATE_SEND_LEASE=3``)
and pending rows whose task was lost, which the sweeper considers lost 60 s after
fan-out. Every member must get the post; duplicates at most the batch in flight.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import smtplib
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailgate import directory as d
from mailgate.db import unit_of_work
from mailgate.delivery import BATCH_SIZE
from mailgate.models import DeliveryRecord, DeliveryStatus, utcnow
from tests.conftest import DOMAIN, free_port
from tests.worker.conftest import port_open, wait_for

MEMBERS = 1000
AUTHOR = "ceo.office@corp.example"
KILL_AT = 0.3  # fraction of the copies delivered when Redis dies
SETTLE_BUDGET = 120.0  # seconds from the restart until every row must be sent

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.one_engine, pytest.mark.timeout(300)]


class PrivateRedis:
    """A redis-server on its own port, started and ended by PID by this test only."""

    def __init__(self, binary: str, port: int, folder: Path) -> None:
        self.binary, self.port, self.folder = binary, port, folder
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.folder / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
                + ["--save", "", "--appendonly", "no", "--daemonize", "no"]
                + ["--dir", str(self.folder)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self.answers, timeout=10, what=f"redis-server on port {self.port}")

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("MAILGATE_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is required (MAILGATE_REQUIRE_REDIS=1) but not installed")
        pytest.skip("redis-server not installed (Debian package 'redis-server')")
    folder = tmp_path / "redis"
    folder.mkdir()
    server = PrivateRedis(binary, free_port(), folder)
    server.start()
    yield server
    server.stop()


def statuses(session_factory) -> Counter[str]:
    with session_factory() as s:
        rows = s.execute(
            select(DeliveryRecord.status, func.count()).group_by(DeliveryRecord.status)
        ).all()
    return Counter({status.value: n for status, n in rows})


def test_redis_killed_mid_fan_out_every_member_gets_the_post(
    mailgate_env, session_factory, processes, relay_sink, private_redis, tmp_path
) -> None:
    members = [f"staff{i:04d}@corp.example" for i in range(MEMBERS)]
    with unit_of_work(session_factory) as s:
        d.create_list(s, "test", "all-hands", name="All hands", visibility="members")
        rows = [d.ImportRow(1, AUTHOR, "CEO Office", "Europe/London", "Exec")]
        rows += [d.ImportRow(i + 2, a, f"Staff {i}", "UTC", "Eng") for i, a in enumerate(members)]
        d.import_members(s, "test", "all-hands", rows)
    port = free_port()
    env = {
        **mailgate_env,
        "MAILGATE_SMTP_PORT": str(port),
        "MAILGATE_HTTP_PORT": str(free_port()),
        "MAILGATE_RELAY_URL": relay_sink.url,
        "MAILGATE_BASE_URL": "https://mailgate.corp.example",
        "MAILGATE_BROKER_URL": f"redis://127.0.0.1:{private_redis.port}/0",
        "MAILGATE_SEND_LEASE": "3",
    }
    processes(["serve"], env, tmp_path / "serve.log")
    workers = [processes(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")]
    wait_for(lambda: port_open(port), what="the gateway")
    relay_sink.delay = 0.005  # a slowish relay: the fan-out takes several seconds

    raw = (
        f"From: CEO Office <{AUTHOR}>\r\nTo: all-hands@{DOMAIN}\r\n"
        "Subject: Office closed on Friday\r\nDate: Mon, 2 Mar 2026 08:30:00 +0000\r\n"
        f"Message-ID: <office-closed-{time.time_ns()}@corp.example>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "The office is closed this Friday for the building inspection.\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(AUTHOR, [f"all-hands@{DOMAIN}"], raw)

    wait_for(
        lambda: len(relay_sink.messages) >= KILL_AT * MEMBERS, timeout=90, what="~30% of copies"
    )
    private_redis.kill()
    at_kill = len(relay_sink.messages)
    assert at_kill < MEMBERS, "the fan-out finished before the kill: nothing was tested"
    time.sleep(1.0)  # deliberate: the outage itself (Redis stays down for a second)
    private_redis.start()
    restarted = time.monotonic()
    states_at_restart = statuses(session_factory)

    # The sweeper, as beat would run it, until the database says everything went out.
    # Batches claimed before the kill wait for their lease (MAILGATE_SEND_LEASE=3).
    with session_factory() as s:
        lease = s.scalar(
            select(func.max(DeliveryRecord.lease_until)).where(
                DeliveryRecord.status == DeliveryStatus.SENDING
            )
        )
    wait_for(lambda: lease is None or utcnow() > lease, timeout=10, what="the lease to run out")
    sweeps: list[dict[str, int]] = []
    worker_restarts = 0
    deadline = restarted + SETTLE_BUDGET
    while True:
        if workers[-1].poll() is not None:  # Celery gave up on the broker: start another
            worker_restarts += 1
            log = tmp_path / f"worker{worker_restarts}.log"
            workers.append(processes(["worker", "--concurrency", "1"], env, log))
        states = statuses(session_factory)
        if states == Counter({"sent": MEMBERS}) or time.monotonic() > deadline:
            break
        log = tmp_path / f"sweep{len(sweeps)}.log"
        sweeper = processes(["sweep", "--json"], env, log)
        assert sweeper.wait(timeout=30) == 0, log.read_text()
        output = log.read_text()  # the JSON counts, possibly after log lines
        sweeps.append(json.loads(output[output.rindex("{") :]))
        time.sleep(5.0)  # deliberate: the sweep cadence (beat's), not a wait for a condition
    settled_after = time.monotonic() - restarted

    received = Counter(m.rcpt_to[0] for m in relay_sink.messages)
    duplicates = sum(received.values()) - len(received)
    worker_fate = (
        "survived the restart (Celery reconnected)"
        if worker_restarts == 0
        else f"exited and was restarted {worker_restarts}x"
    )
    print(
        f"\nCEL-08: {MEMBERS} members; Redis killed at {at_kill} copies "
        f"(rows then: {dict(states_at_restart)}); copies received {sum(received.values())}, "
        f"distinct members {len(received)}, duplicates {duplicates}; worker {worker_fate}; "
        f"{len(sweeps)} sweeps re-published {[c['deliveries'] for c in sweeps]} rows; "
        f"all sent {settled_after:.1f} s after the restart"
    )
    assert states == Counter({"sent": MEMBERS}), f"rows not all sent: {dict(states)}"
    assert set(received) == set(members)  # every member got the post
    assert duplicates <= BATCH_SIZE  # at most the batch that was in flight (DUR-05)
