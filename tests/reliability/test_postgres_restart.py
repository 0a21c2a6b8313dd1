"""PostgreSQL stopped and started again in the middle of a fan-out (CEL-09).

Real processes on 127.0.0.1: a private PostgreSQL server this test owns (initdb into a
temporary folder, its own port; the shared server on 5432 is never touched),
``mailgate serve``, ``mailgate worker --concurrency 1`` on the filesystem broker and a
slow recording relay. A post goes to a list of 300; at about 30% of the copies the server
gets ``pg_ctl stop -m immediate`` (backends killed, no checkpoint), and about 3 s later
it starts again on the same port and data directory (crash recovery).

What must hold, and what makes it hold:

- While the database is down the gateway answers ``451 4.3.0`` (at RCPT if the list's
  state is not cached, else at DATA when the commit fails), stores nothing, and stays up.
  The refused message is sent again after the restart, as the relay would, and gets 250.
- Gateway: the writer thread turns the failed commit into 451 and lives on; nothing of
  the refused message is stored (two raw messages at the end, both ``processed``).
- Worker: the send task in flight when the server stopped finishes talking to the relay,
  then fails to record its copies with ``OperationalError``; Celery retries it
  (``autoretry_for=OperationalError``, exponential backoff with full jitter, so retries
  come at 0-1 s, 0-2 s, 0-4 s … and the first one after the restart succeeds). The rows
  stay ``sending`` under their lease (``MAILGATE_SEND_LEASE=3``); the outage outlasts
  the lease, so the retry claims and sends that batch again: the duplicates, at most one
  batch (DUR-05), with the same Message-ID so mail clients merge them. The queued send
  tasks fail at their claim and retry the same way.
- The engine's ``pool_pre_ping`` replaces the connections the restart killed, in the
  gateway and in the worker, so no process needs restarting.
- ``mailgate sweep`` (what beat runs every 15 s) is run only if rows are still waiting
  ``SWEEP_AFTER`` seconds after the restart; the test reports how many sweeps it needed.

Runs once, in the SQLite pass: it brings its own database and asks for no ``database_url``,
so it carries no ``db`` marker and the PostgreSQL pass (``-m db``) leaves it out.
"""

from __future__ import annotations

import os
import re
import smtplib
import time
from collections import Counter
from collections.abc import Iterator
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailgate import directory as d
from mailgate import replies
from mailgate.db import make_engine, make_sessionmaker, unit_of_work
from mailgate.delivery import BATCH_SIZE
from mailgate.models import DeliveryRecord, OutboxEntry, Post, RawMessage
from tests.conftest import DOMAIN, SECRET, free_port
from tests.reliability.private_postgres import PrivatePostgres, find_bin_dir, unavailable_reason
from tests.worker.conftest import port_open, wait_for

MEMBERS = 300
AUTHOR = "ceo.office@corp.example"
LIST = f"all-hands@{DOMAIN}"
STOP_AT = 0.3  # fraction of the first post's copies delivered when the database stops
OUTAGE = 3.0  # seconds the database stays down
RESEND_BUDGET = 20.0  # the relay's retries of the refused message, after the restart
SWEEP_AFTER = 20.0  # beat's sweeper, only if rows still wait this long after the restart
RECOVERY_BUDGET = 40.0  # from the restart until every row must be sent

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(90)]


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    bin_dir = find_bin_dir()
    problem = unavailable_reason(bin_dir)
    if problem:
        if os.environ.get("MAILGATE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{problem} (MAILGATE_REQUIRE_POSTGRES=1)")
        pytest.skip(f"{problem} (Debian package 'postgresql')")
    assert bin_dir is not None
    server = PrivatePostgres(bin_dir, free_port())
    try:
        server.create()
        yield server
    finally:
        survivors = server.close()
    assert not survivors, f"PostgreSQL processes left after teardown: {survivors}"


def message(subject: str, body: str, tag: str) -> bytes:
    return (
        f"From: CEO Office <{AUTHOR}>\r\nTo: {LIST}\r\nSubject: {subject}\r\n"
        "Date: Mon, 2 Mar 2026 08:30:00 +0000\r\n"
        f"Message-ID: <{tag}-{time.time_ns()}@corp.example>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def try_during_outage(port: int, raw: bytes) -> tuple[str, int, str]:
    """One SMTP transaction step by step; (stage, code, text) of the first non-2xx/3xx
    reply, or ("accepted", 250, …) if the gateway took the message."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mx1.corp.example")
        steps = (
            ("MAIL", lambda: client.mail(AUTHOR)),
            ("RCPT", lambda: client.rcpt(LIST)),
            ("DATA", lambda: client.data(raw)),
        )
        text: bytes | str
        for stage, step in steps:
            try:
                code, text = step()
            except smtplib.SMTPDataError as exc:  # refused at the DATA command itself
                code, text = exc.smtp_code, exc.smtp_error
            reply = text.decode() if isinstance(text, bytes) else text
            if code >= 400:
                return stage, code, reply
        return "accepted", code, reply


def resend(port: int, raw: bytes, budget: float) -> int:
    """Send as a relay retries a 4xx: a new session each time; return the attempts."""
    deadline = time.monotonic() + budget
    attempts = 0
    while True:
        attempts += 1
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail(AUTHOR, [LIST], raw)
            return attempts
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError) as exc:
            code = (
                exc.smtp_code
                if isinstance(exc, smtplib.SMTPDataError)
                else next(iter(exc.recipients.values()))[0]
            )
            assert 400 <= code < 500, f"permanent refusal after the restart: {exc}"
            assert time.monotonic() < deadline, f"still refused {budget}s after the restart"
            time.sleep(0.5)


def count_by(session: Session, column: Any) -> Counter[str]:
    rows = session.execute(select(column, func.count()).group_by(column))
    return Counter({str(value): n for value, n in rows})


def database_state(factory: sessionmaker[Session]) -> dict[str, object]:
    with factory() as s:
        return {
            "posts": s.scalar(select(func.count()).select_from(Post)),
            "raw": count_by(s, RawMessage.status),
            "deliveries": count_by(s, DeliveryRecord.status),
            "outbox_pending": s.scalar(
                select(func.count()).where(OutboxEntry.published_at.is_(None))
            ),
        }


def settled(state: dict[str, object]) -> bool:
    return state == {
        "posts": 2,
        "raw": Counter({"processed": 2}),
        "deliveries": Counter({"sent": 2 * MEMBERS}),
        "outbox_pending": 0,
    }


def test_postgres_stopped_mid_fan_out_nothing_is_lost(
    private_postgres, processes, relay_sink, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "MAILGATE_VAR_DIR": str(tmp_path / "var"),
        "MAILGATE_DATABASE_URL": private_postgres.url,
        "MAILGATE_DOMAIN": DOMAIN,
        "MAILGATE_SECRET_KEY": SECRET,
        "MAILGATE_COMPANY_DOMAINS": "corp.example",
        "MAILGATE_BROKER_URL": "",  # the filesystem broker under var/, whatever the caller has
        "MAILGATE_SMTP_PORT": str(port),
        "MAILGATE_HTTP_PORT": str(free_port()),
        "MAILGATE_RELAY_URL": relay_sink.url,
        "MAILGATE_BASE_URL": "https://mailgate.corp.example",
        "MAILGATE_SEND_LEASE": "3",
    }
    migrate = processes(["db", "upgrade"], env, tmp_path / "migrate.log")
    assert migrate.wait(timeout=60) == 0, (tmp_path / "migrate.log").read_text()

    engine = make_engine(private_postgres.url)
    factory = make_sessionmaker(engine)
    members = [f"staff{i:04d}@corp.example" for i in range(MEMBERS)]
    with unit_of_work(factory) as s:
        d.create_list(s, "test", "all-hands", name="All hands", visibility="members")
        rows = [d.ImportRow(1, AUTHOR, "CEO Office", "Europe/London", "Exec")]
        rows += [d.ImportRow(i + 2, a, f"Staff {i}", "UTC", "Eng") for i, a in enumerate(members)]
        d.import_members(s, "test", "all-hands", rows)

    gateway = processes(["serve"], env, tmp_path / "serve.log")
    processes(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")
    wait_for(lambda: port_open(port), timeout=30, what="the gateway")
    relay_sink.delay = 0.01  # a slowish relay: the fan-out takes a few seconds

    first = message("Office closed on Friday", "The office is closed this Friday.", "closed")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(AUTHOR, [LIST], first)
    wait_for(
        lambda: len(relay_sink.messages) >= STOP_AT * MEMBERS,
        timeout=45,
        what=f"{STOP_AT:.0%} of the first post's copies at the relay",
    )

    private_postgres.stop()
    stopped = time.monotonic()
    at_stop = len(relay_sink.messages)
    assert at_stop < MEMBERS, "the fan-out finished before the stop: nothing was tested"

    second = message("Fire drill at 11:00", "There is a fire drill at 11:00 today.", "drill")
    stage, code, text = try_during_outage(port, second)
    assert (stage, f"{code} {text}") in {
        ("RCPT", replies.STORAGE_UNAVAILABLE),
        ("DATA", replies.STORAGE_UNAVAILABLE),
    }, f"while the database was down the gateway answered {code} {text} at {stage}"
    assert gateway.poll() is None and port_open(port), "the gateway died with the database"

    time.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped)))
    private_postgres.start()
    restarted = time.monotonic()
    resend_attempts = resend(port, second, RESEND_BUDGET)

    sweeps = 0
    last_sweep = restarted + SWEEP_AFTER - 5.0
    while not settled(state := database_state(factory)):
        now = time.monotonic()
        assert now - restarted < RECOVERY_BUDGET, (
            f"not settled {RECOVERY_BUDGET}s after the restart: {state}"
        )
        if now - restarted > SWEEP_AFTER and now - last_sweep >= 5.0:
            sweeper = processes(["sweep"], env, tmp_path / f"sweep{sweeps}.log")
            assert sweeper.wait(timeout=30) == 0, (tmp_path / f"sweep{sweeps}.log").read_text()
            sweeps, last_sweep = sweeps + 1, now
        time.sleep(0.5)
    recovered_after = time.monotonic() - restarted
    engine.dispose()

    parser = BytesHeaderParser()
    labels = {"Office closed": "closed", "Fire drill": "drill"}
    copies = Counter(
        (m.rcpt_to[0], next((v for k, v in labels.items() if k in subject), subject))
        for m in relay_sink.messages
        for subject in [str(parser.parsebytes(m.data)["Subject"])]
    )
    assert {post for _, post in copies} == {"closed", "drill"}, "unexpected mail at the relay"
    got = {post: {rcpt for rcpt, p in copies if p == post} for post in ("closed", "drill")}
    duplicates = {
        post: sum(n for (_, p), n in copies.items() if p == post) - len(got[post])
        for post in ("closed", "drill")
    }
    worker_log = (tmp_path / "worker.log").read_text()
    retries = Counter(re.findall(r"Task (mailgate\.\w+)\[[^\]]*\] retry: Retry in", worker_log))
    print(
        f"\nCEL-09: {MEMBERS} members; PostgreSQL stopped at {at_stop} copies for {OUTAGE:.0f} s; "
        f"during the outage the gateway answered {code} {text[:5]} at {stage}; the refused "
        f"message was accepted on attempt {resend_attempts} after the restart; worker retries "
        f"{dict(retries)}; duplicates {duplicates}; sweeps needed {sweeps}; "
        f"everything sent {recovered_after:.1f} s after the restart"
    )
    assert got["closed"] == set(members), "a member never got the first post"
    assert got["drill"] == set(members), "a member never got the post refused during the outage"
    assert duplicates["closed"] <= BATCH_SIZE, f"more duplicates than one batch: {duplicates}"
    assert duplicates["drill"] <= BATCH_SIZE, f"more duplicates than one batch: {duplicates}"
    assert retries, "no task retried: the worker never met the outage"
    assert "raised unexpected" not in worker_log, "a task failed instead of retrying"
    assert gateway.poll() is None, "the gateway exited"
