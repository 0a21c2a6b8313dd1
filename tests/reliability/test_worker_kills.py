"""Workers killed at random points in a loop of runs (DUR-07): nothing stays pending.

Real processes on 127.0.0.1: a private ``redis-server`` this test owns, ``mailgate
serve``, ``mailgate worker --concurrency 1`` and a slowish recording relay, with
``MAILGATE_SEND_LEASE=3``. Each round sends three posts to a list of 60 through the
gateway, waits a random 0-1.5 s (ingest, fan-out or a send batch is then usually in
hand) and SIGKILLs the worker's whole process group, Celery's main process and its pool
child, so nothing is acknowledged, re-queued or cleaned up; then a new worker starts.

A killed worker's task is gone for practical purposes (Redis hands an unacknowledged
message out again only after the hour-long visibility timeout). The database is the
queue of record: raw messages stay ``received``, outbox rows unpublished, copies
``pending`` or ``sending`` under a lease, until a worker finishes them, and the sweeper
(``mailgate sweep``, what beat runs every 15 s) publishes what is still waiting. After
the loop the sweeper runs until the database says everything is final, within a bound
derived from the sweeper's own thresholds. The round timings come from a seeded
``random.Random``: the seed is printed (set ``MAILGATE_KILL_SEED`` to replay a run).
"""

from __future__ import annotations

import email
import email.policy
import inspect
import json
import os
import random
import signal
import smtplib
import subprocess
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailgate import directory as d
from mailgate.db import unit_of_work
from mailgate.delivery import BATCH_SIZE
from mailgate.models import (
    DeliveryRecord,
    OutboxEntry,
    Post,
    RawMessage,
    RawStatus,
)
from mailgate.outbox import requeue_stale_inbound
from tests.conftest import DOMAIN, free_port
from tests.reliability.test_redis_restart import private_redis  # noqa: F401 - a fixture
from tests.worker.conftest import port_open, wait_for
from worker.app import SWEEP_SECONDS

MEMBERS = 60
AUTHOR = "lead@corp.example"
ROUNDS = 6
POSTS_PER_ROUND = 3
MAX_PAUSE = 1.5  # seconds between the round's posts and the kill
LEASE = 3  # MAILGATE_SEND_LEASE
SWEEP_EVERY = 3.0  # the test's sweeper period: beat's 15 s, compressed
# A raw message whose ingest task was lost is re-published once it is this old.
INBOUND_STALE = inspect.signature(requeue_stale_inbound).parameters["older_than"].default
WORK_MARGIN = 45.0  # seconds for the last worker to send what the sweeper hands it

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.one_engine, pytest.mark.timeout(240)]


def post(port: int, round_no: int, n: int) -> str:
    """One post by the list's lead; returns its Message-ID (without brackets)."""
    message_id = f"kill-{round_no}-{n}-{time.time_ns()}@corp.example"
    raw = (
        f"From: Team Lead <{AUTHOR}>\r\nTo: eng@{DOMAIN}\r\n"
        f"Subject: Round {round_no}, update {n}\r\nDate: Tue, 3 Mar 2026 09:00:00 +0000\r\n"
        f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Status update {n} of round {round_no}.\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(AUTHOR, [f"eng@{DOMAIN}"], raw)
    return message_id


def snapshot(factory: sessionmaker[Session]) -> dict[str, Any]:
    """What the database says is waiting: the state a kill leaves behind."""
    with factory() as s:
        raws = Counter(
            str(status)
            for status in s.scalars(select(RawMessage.status)).all()
            if status is not RawStatus.PROCESSED
        )
        rows = Counter(str(status) for status in s.scalars(select(DeliveryRecord.status)).all())
        posts = s.scalar(select(func.count()).select_from(Post)) or 0
        without_rows = s.scalar(
            select(func.count())
            .select_from(Post)
            .where(~select(DeliveryRecord.id).where(DeliveryRecord.post_id == Post.id).exists())
        )
        unpublished = s.scalar(select(func.count()).where(OutboxEntry.published_at.is_(None)))
    return {
        "raw_waiting": dict(raws),
        "posts": posts,
        "posts_without_rows": without_rows or 0,
        "outbox_unpublished": unpublished or 0,
        "rows": dict(rows),
    }


def in_hand(redis_port: int, seen: set[Any]) -> list[str]:
    """The tasks a killed worker had taken and not acknowledged. kombu keeps them in
    Redis's ``unacked`` hash and hands them out again only after the visibility timeout
    (an hour), so for the sweeper they are lost. ``seen`` holds earlier kills' tags."""
    import redis

    client = redis.Redis(port=redis_port, socket_connect_timeout=2)
    taken = {k: v for k, v in client.hgetall("unacked").items() if k not in seen}
    seen.update(taken)
    return sorted(json.loads(v)[0]["headers"]["task"] for v in taken.values())


def settled(state: dict[str, Any], posts: int) -> bool:
    return (
        not state["raw_waiting"]
        and state["posts"] == posts
        and state["posts_without_rows"] == 0
        and state["outbox_unpublished"] == 0
        and state["rows"] == {"sent": posts * MEMBERS}
    )


def test_worker_killed_at_random_points_leaves_nothing_pending(
    mailgate_env,
    session_factory,
    processes,
    relay_sink,
    private_redis,  # noqa: F811 - the fixture imported above
    tmp_path,
) -> None:
    seed = int(os.environ.get("MAILGATE_KILL_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    print(f"\nDUR-07 seed {seed} (replay with MAILGATE_KILL_SEED={seed})")
    members = [f"dev{i:02d}@corp.example" for i in range(MEMBERS)]
    with unit_of_work(session_factory) as s:
        d.create_list(s, "test", "eng", name="Engineering", visibility="members")
        rows = [d.ImportRow(1, AUTHOR, "Team Lead", "UTC", "Eng")]
        rows += [d.ImportRow(i + 2, a, f"Dev {i}", "UTC", "Eng") for i, a in enumerate(members)]
        d.import_members(s, "test", "eng", rows)
    port = free_port()
    env = {
        **mailgate_env,
        "MAILGATE_SMTP_PORT": str(port),
        "MAILGATE_RELAY_URL": relay_sink.url,
        "MAILGATE_BROKER_URL": f"redis://127.0.0.1:{private_redis.port}/0",
        "MAILGATE_SEND_LEASE": str(LEASE),
    }
    relay_sink.delay = 0.005  # a slowish relay: a batch of 60 copies takes a while
    processes(["serve"], env, tmp_path / "serve.log")
    wait_for(lambda: port_open(port), what="the gateway")

    def start_worker(n: int) -> subprocess.Popen[bytes]:
        log = tmp_path / f"worker{n}.log"
        proc = processes(["worker", "--concurrency", "1"], env, log)
        # Kill it only once it consumes: a kill during start-up tests nothing new.
        wait_for(
            lambda: b" ready." in log.read_bytes() or proc.poll() is not None,
            timeout=60,
            what=f"worker {n} to be ready",
        )
        assert proc.poll() is None, log.read_text()
        return proc

    started = time.monotonic()
    worker = start_worker(0)
    message_ids: list[str] = []
    kills: list[str] = []
    tags: set[Any] = set()
    last_receipt = last_kill = 0.0
    for round_no in range(ROUNDS):
        for n in range(POSTS_PER_ROUND):
            message_ids.append(post(port, round_no, n))
        last_receipt = time.monotonic()
        pause = rng.uniform(0.0, MAX_PAUSE)
        time.sleep(pause)
        os.killpg(worker.pid, signal.SIGKILL)  # main process and pool child together
        worker.wait(timeout=10)
        last_kill = time.monotonic()
        held, state = in_hand(private_redis.port, tags), snapshot(session_factory)
        kills.append(
            f"round {round_no}: killed after {pause:.2f} s holding {held} with "
            f"{len(relay_sink.messages)} copies at the relay; waiting: {state}"
        )
        worker = start_worker(round_no + 1)

    # The sweeper, as beat runs it, until the database says everything is final. A lost
    # ingest is re-published once its raw message is INBOUND_STALE old, a lost send once
    # its lease (for a pending row, the lease's length) has passed, each at the next
    # sweep: past that point, a state that no longer moves will not move at all. The
    # bound adds time for the last worker to send what the sweeper handed it.
    stale = INBOUND_STALE.total_seconds()
    swept_all = max(last_receipt + stale, last_kill + LEASE) + SWEEP_SECONDS
    bound = swept_all + WORK_MARGIN
    sweeps: list[dict[str, int]] = []
    state, still = snapshot(session_factory), 0
    while not settled(state, len(message_ids)) and time.monotonic() < bound:
        if worker.poll() is not None:
            last_log = tmp_path / f"worker{ROUNDS}.log"
            pytest.fail(f"the last worker exited: {last_log.read_text()}")
        log = tmp_path / f"sweep{len(sweeps)}.log"
        sweeper = processes(["sweep", "--json"], env, log)
        assert sweeper.wait(timeout=60) == 0, log.read_text()
        output = log.read_text()  # the JSON counts, possibly after log lines
        sweeps.append(json.loads(output[output.rindex("{") :]))
        relayed = len(relay_sink.messages)
        time.sleep(SWEEP_EVERY)
        previous, state = state, snapshot(session_factory)
        moving = state != previous or len(relay_sink.messages) != relayed
        still = 0 if moving else still + 1
        if still >= 3 and time.monotonic() > swept_all:
            break  # stuck: every sweeper threshold has passed and nothing changes
    finished = time.monotonic()

    copies: Counter[tuple[str, str]] = Counter()
    for message in list(relay_sink.messages):
        copy = email.message_from_bytes(message.data, policy=email.policy.default)
        copies[(str(copy["Message-ID"]).strip("<>"), message.rcpt_to[0])] += 1
    duplicates = sum(copies.values()) - len(copies)
    print("\n".join(kills))
    print(
        f"DUR-07: {ROUNDS} kills, {len(message_ids)} posts x {MEMBERS} members; "
        f"{sum(copies.values())} copies at the relay, {duplicates} duplicates; "
        f"{len(sweeps)} sweeps re-published {dict(sum(map(Counter, sweeps), Counter()))}; "
        f"settled {finished - last_kill:.1f} s after the last kill "
        f"(bound {bound - last_kill:.1f} s), {finished - started:.1f} s in all; final {state}"
    )

    with session_factory() as s:
        raw_states = Counter(str(x) for x in s.scalars(select(RawMessage.status)).all())
        stored = dict(s.execute(select(Post.message_id, Post.id)).all())
        per_post = Counter(
            dict(
                s.execute(
                    select(DeliveryRecord.post_id, func.count()).group_by(DeliveryRecord.post_id)
                ).all()
            )
        )
        row_states = Counter(str(x) for x in s.scalars(select(DeliveryRecord.status)).all())
        unpublished = s.scalars(
            select(OutboxEntry.key).where(OutboxEntry.published_at.is_(None))
        ).all()
    context = f"(seed {seed})"
    # Every raw message reached its final state.
    assert raw_states == {"processed": len(message_ids)}, f"raw messages {raw_states} {context}"
    # Every post was stored once, and fanned out to every member exactly once.
    assert sorted(stored) == sorted(message_ids), f"posts {len(stored)} {context}"
    rows_per_post = {mid: per_post[pid] for mid, pid in stored.items()}
    # The sweeper must also find a post whose fan-out task died with a worker: that
    # task's outbox row was marked published when it went to the broker.
    never_fanned_out = sorted(mid for mid, n in rows_per_post.items() if n == 0)
    assert never_fanned_out == [], f"posts never fanned out {never_fanned_out} {context}"
    assert rows_per_post == dict.fromkeys(message_ids, MEMBERS), f"rows per post {context}"
    assert row_states == {"sent": len(message_ids) * MEMBERS}, f"rows {row_states} {context}"
    assert unpublished == [], f"outbox rows never published {unpublished} {context}"
    # Every member received every post at least once; duplicates at most the batch in
    # flight at each kill (DUR-05).
    missing = [(mid, m) for mid in message_ids for m in members if (mid, m) not in copies]
    assert missing == [], f"{len(missing)} copies never arrived, e.g. {missing[:3]} {context}"
    assert duplicates <= ROUNDS * min(BATCH_SIZE, MEMBERS), f"{duplicates} duplicates {context}"
