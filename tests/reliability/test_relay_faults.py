"""Relay faults from Postfix's ``smtp-sink`` (TEST-05): each fault gives the retry or
permanent-failure outcome that BNC-05 and CEL-05 ask for.

A post to a ten-member list is fanned out, then ``send_batch`` talks to a real
``smtp-sink`` on 127.0.0.1 started with one fault flag. smtp-sink applies a fault to
every occurrence of its command, so "fails now, works later" is two sinks in sequence
on the same port: a faulty one, then a plain one. Each sink dumps every message whose
final "." it read (``-d``) and counts them (``-c``), so the tests check exactly what the
relay received as well as each row's state. Retries happen at an injected later time,
not after a sleep.

Measured with Postfix 3.7's smtp-sink and smtplib (see each test):
``-r rcpt`` 450 per recipient; ``-f rcpt|mail|data`` 500; ``-q data`` closes without
a reply; ``-Q data`` 421 and closes; ``-Q .`` 421 *after* taking the message;
``-A 0`` a 550 after the 354, then it closes; ``-W cmd:delay:odds`` random delays
(odds must be 1-99).
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mailgate.copies import CopySettings
from mailgate.db import unit_of_work
from mailgate.delivery import SendReport, TokenCopyBuilder, due_deliveries, fan_out, send_batch
from mailgate.ingest import IngestContext, run_ingest
from mailgate.models import DeliveryRecord, DeliveryStatus, Post, utcnow
from tests.conftest import DOMAIN, SECRET, free_port
from worker.mailer import SmtpMailer

SMTP_SINK = Path("/usr/sbin/smtp-sink")
AUTHOR = "dana.ops@corp.example"
MEMBERS = [f"oncall{i:02d}@corp.example" for i in range(10)]
LATER = timedelta(hours=1)  # past any first or second retry delay (5 min, 10 min caps)

pytestmark = pytest.mark.timeout(60)


def require_smtp_sink() -> None:
    if os.access(SMTP_SINK, os.X_OK):
        return
    if os.environ.get("MAILGATE_REQUIRE_SMTP_SINK") == "1":
        pytest.fail(f"{SMTP_SINK} is required (MAILGATE_REQUIRE_SMTP_SINK=1) but missing")
    pytest.skip(
        f"Postfix smtp-sink not installed at {SMTP_SINK} (Debian package 'postfix'); "
        "set MAILGATE_REQUIRE_SMTP_SINK=1 to make this a failure"
    )


# ---------------------------------------------------------------- the sink


@dataclass(frozen=True)
class Received:
    rcpt: str
    message_id: str


class SmtpSink:
    """One smtp-sink process on 127.0.0.1:``port``, owned and ended by this test."""

    def __init__(self, port: int, flags: tuple[str, ...], dump_dir: Path) -> None:
        self.port, self.flags, self.dump_dir = port, flags, dump_dir
        self.log = dump_dir.parent / f"{dump_dir.name}.log"
        # smtp-sink refuses to run as root without -u; the dump folder is then written
        # by that user.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(SMTP_SINK), *user, "-c", "-d", f"{dump_dir}/%H%M%S."]
                + [*flags, f"127.0.0.1:{port}", "64"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"smtp-sink {flags} exited: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"smtp-sink {flags} did not listen on {port}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def received(self) -> list[Received]:
        """Every message whose final "." the sink read, from its dump files.

        The sink creates a dump file empty at DATA and unlinks it if the transaction
        aborts; one stopped mid-transaction leaves it empty, which is not a message.
        """
        copies = []
        for path in sorted(self.dump_dir.iterdir()):
            if path.stat().st_size == 0:
                continue
            parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
            (rcpt,) = parsed.get_all("X-Rcpt-Args") or ["<missing>"]
            copies.append(Received(rcpt.strip("<> "), str(parsed["Message-ID"])))
        return copies

    def counted(self) -> int:
        """smtp-sink's own ``-c`` message counter (read after :meth:`stop`)."""
        counts = re.findall(rb"mesg=(\d+)", self.log.read_bytes())
        return int(counts[-1]) if counts else 0


@pytest.fixture
def sinks() -> Iterator[Callable[..., SmtpSink]]:
    require_smtp_sink()
    root = Path(tempfile.mkdtemp(prefix="mailgate-smtp-sink-"))
    root.chmod(0o777)  # the sink may run as "nobody"; pytest's tmp_path is root-only
    started: list[SmtpSink] = []

    def start(port: int, *flags: str) -> SmtpSink:
        dump_dir = root / f"sink{len(started)}"
        dump_dir.mkdir()
        dump_dir.chmod(0o777)
        sink = SmtpSink(port, flags, dump_dir)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()
    shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- the post and its rows


@pytest.fixture
def fanned_out(directory, gateway, session_factory) -> list[int]:
    """A members-only list with the author and ten members, one post, ten delivery rows."""
    directory.list("ops", name="Operations", visibility="members")
    for address in [AUTHOR, *MEMBERS]:
        directory.member("ops", address)
    raw = (
        b"Message-ID: <8c1e2f0a-5b7d-4e11-9a63-2f4b9d0c7e15@corp.example>\r\n"
        b"Date: Tue, 3 Mar 2026 09:12:44 +0100\r\n"
        b"MIME-Version: 1.0\r\n"
        b"User-Agent: Mozilla Thunderbird\r\n"
        b"Content-Language: en-US\r\n"
        b"To: ops@lists.corp.example\r\n"
        b"From: Dana Ops <dana.ops@corp.example>\r\n"
        b"Subject: Database failover drill on Thursday\r\n"
        b"Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n"
        b"Hi all,\r\n\r\nWe fail the primary over at 14:00 on Thursday. Expect 30 s of\r\n"
        b"read-only mode. Please hold deploys from 13:45.\r\n\r\nDana\r\n"
    )
    with gateway.smtp() as client:
        client.sendmail(AUTHOR, [f"ops@{DOMAIN}"], raw)
    (raw_id,) = gateway.published_after(0)
    run_ingest(session_factory, raw_id, IngestContext(domain=DOMAIN, secrets=(SECRET,)))
    with unit_of_work(session_factory) as s:
        fan_out(s, s.scalars(select(Post.id)).one())
    ids = [r.id for r in rows(session_factory)]
    assert [r.address for r in rows(session_factory)] == MEMBERS
    return ids


def rows(session_factory) -> list[DeliveryRecord]:
    with session_factory() as s:
        return list(s.scalars(select(DeliveryRecord).order_by(DeliveryRecord.id)))


def send(
    session_factory, ids: list[int], port: int, at: datetime, timeout: float = 10.0
) -> tuple[int, int, int]:
    report: SendReport = send_batch(
        session_factory,
        ids,
        builder=TokenCopyBuilder(CopySettings(domain=DOMAIN), SECRET),
        relay=SmtpMailer(f"smtp://127.0.0.1:{port}", timeout=timeout),
        now=lambda: at,
    )
    return report.sent, report.failed, report.deferred


def assert_all_deferred(session_factory, at: datetime, error: str) -> list[float]:
    """Every row pending, due later, nothing stuck in sending; returns the delays."""
    delays = []
    for row in rows(session_factory):
        assert (row.status, row.last_error, row.lease_until) == (
            DeliveryStatus.PENDING,
            error,
            None,
        ), row.address
        assert row.next_attempt_at is not None and row.next_attempt_at > at
        delays.append((row.next_attempt_at - at).total_seconds())
    return delays


# ---------------------------------------------------------------- soft failures (BNC-05)


def test_rcpt_4xx_defers_every_copy_and_the_retry_delivers_each_once(
    fanned_out, session_factory, sinks
) -> None:
    port, t0 = free_port(), utcnow()
    soft = sinks(port, "-r", "rcpt")  # 450 4.3.0 to every RCPT
    assert send(session_factory, fanned_out, port, t0) == (0, 0, 10)
    delays = assert_all_deferred(session_factory, t0, "450")
    assert all(150 <= d <= 300 for d in delays)  # first retry: 5 min with jitter
    assert due_deliveries(session_factory, now=t0) == []  # nothing is due yet
    soft.stop()
    assert soft.received() == [] and soft.counted() == 0

    plain = sinks(port)  # the relay recovered, on the same port
    t1 = t0 + LATER
    assert due_deliveries(session_factory, now=t1) == fanned_out
    assert send(session_factory, fanned_out, port, t1) == (10, 0, 0)
    plain.stop()
    assert sorted(c.rcpt for c in plain.received()) == MEMBERS and plain.counted() == 10
    assert {(r.status, r.attempts) for r in rows(session_factory)} == {(DeliveryStatus.SENT, 2)}


# ---------------------------------------------------------------- whole-batch faults (CEL-05)


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        pytest.param(("-q", "data"), "relay: SMTPServerDisconnected", id="disconnect-at-data"),
        pytest.param(("-Q", "data"), "relay: 421 at DATA", id="421-at-data"),
        pytest.param(("-Q", "connect"), "relay: 421 at connect", id="421-greeting"),
        pytest.param(("-r", "mail"), "relay: 450 at MAIL", id="450-at-mail"),
        pytest.param(None, "relay: ConnectionRefusedError", id="not-listening"),
    ],
)
def test_batch_fault_twice_then_third_attempt_delivers_with_growing_delays(
    fanned_out, session_factory, sinks, flags, error
) -> None:
    port, at = free_port(), utcnow()
    previous: list[float] = []
    for attempt in (1, 2):
        faulty = sinks(port, *flags) if flags is not None else None
        if attempt > 1:
            assert due_deliveries(session_factory, now=at) == fanned_out  # due again
        assert send(session_factory, fanned_out, port, at) == (0, 0, 10)
        delays = assert_all_deferred(session_factory, at, error)
        assert {r.attempts for r in rows(session_factory)} == {attempt}
        # Backoff doubles (jittered: 150-300 s, then 300-600 s), so every second delay
        # is at least every first one.
        assert not previous or min(delays) >= max(previous)
        previous = delays
        if faulty is not None:
            faulty.stop()
            assert faulty.received() == [] and faulty.counted() == 0
        at += LATER
    plain = sinks(port)
    assert due_deliveries(session_factory, now=at) == fanned_out
    assert send(session_factory, fanned_out, port, at) == (10, 0, 0)
    plain.stop()
    assert sorted(c.rcpt for c in plain.received()) == MEMBERS and plain.counted() == 10
    assert {(r.status, r.attempts) for r in rows(session_factory)} == {(DeliveryStatus.SENT, 3)}


def test_reply_lost_after_the_dot_gives_one_duplicate_with_the_same_message_id(
    fanned_out, session_factory, sinks
) -> None:
    """``-Q .``: the relay takes the first copy, then answers 421 and hangs up. We cannot
    know it was taken (RFC 1047), so it is sent again: at-least-once, one duplicate, and
    both copies carry the same Message-ID so the member's client merges them (DUR-05)."""
    port, t0 = free_port(), utcnow()
    flaky = sinks(port, "-Q", ".")
    assert send(session_factory, fanned_out, port, t0) == (0, 0, 10)
    assert_all_deferred(session_factory, t0, "relay: 421 at DATA")
    flaky.stop()
    assert [c.rcpt for c in flaky.received()] == [MEMBERS[0]] and flaky.counted() == 1

    plain = sinks(port)
    assert send(session_factory, fanned_out, port, t0 + LATER) == (10, 0, 0)
    plain.stop()
    copies = flaky.received() + plain.received()
    per_member = Counter(c.rcpt for c in copies)
    assert set(per_member) == set(MEMBERS)
    assert [m for m, n in per_member.items() if n > 1] == [MEMBERS[0]]  # one duplicate
    assert {c.message_id for c in copies} == {"<8c1e2f0a-5b7d-4e11-9a63-2f4b9d0c7e15@corp.example>"}


# ---------------------------------------------------------------- hard failures (BNC-05, CEL-05)


@pytest.mark.parametrize(
    "flags",
    [("-f", "rcpt"), ("-f", "mail"), ("-f", "data")],
    ids=["500-at-rcpt", "500-at-mail", "500-at-data"],
)
def test_5xx_fails_each_copy_after_one_attempt_and_never_retries(
    fanned_out, session_factory, sinks, flags
) -> None:
    port, t0 = free_port(), utcnow()
    hard = sinks(port, *flags)
    assert send(session_factory, fanned_out, port, t0) == (0, 10, 0)
    hard.stop()
    assert hard.received() == [] and hard.counted() == 0
    for row in rows(session_factory):
        assert (row.status, row.last_error, row.attempts) == (DeliveryStatus.FAILED, "500", 1)
        assert row.next_attempt_at is None and row.lease_until is None
    much_later = t0 + timedelta(days=10)
    assert due_deliveries(session_factory, now=much_later) == []
    # Even a stray task for these rows sends nothing: failed rows cannot be claimed.
    plain = sinks(port)
    assert send(session_factory, fanned_out, port, much_later) == (0, 0, 0)
    plain.stop()
    assert plain.received() == []


def test_abort_after_data_fails_that_copy_and_defers_the_rest(
    fanned_out, session_factory, sinks
) -> None:
    """``-A 0``: after the 354 the sink answers 550 at once, stops reading and hangs up.
    The 550 is a permanent refusal of that copy; the lost connection defers the others,
    which a later retry delivers; the refused copy is not retried."""
    port, t0 = free_port(), utcnow()
    aborting = sinks(port, "-A", "0")
    assert send(session_factory, fanned_out, port, t0) == (0, 1, 9)
    aborting.stop()
    assert aborting.received() == [] and aborting.counted() == 0
    first, *others = rows(session_factory)
    assert (first.status, first.last_error) == (DeliveryStatus.FAILED, "550")
    assert {(r.status, r.last_error) for r in others} == {
        (DeliveryStatus.PENDING, "relay: SMTPServerDisconnected")
    }

    plain = sinks(port)
    t1 = t0 + LATER
    assert due_deliveries(session_factory, now=t1) == [r.id for r in others]
    assert send(session_factory, fanned_out, port, t1) == (9, 0, 0)
    plain.stop()
    assert sorted(c.rcpt for c in plain.received()) == MEMBERS[1:]
    assert rows(session_factory)[0].status is DeliveryStatus.FAILED


# ---------------------------------------------------------------- slow relays


@pytest.mark.parametrize(
    "flags",
    [("-W", "rcpt:1:10"), ("-W", "data:1:10"), ("-W", "connect:1")],
    ids=["random-rcpt-delays", "random-data-delays", "slow-greeting"],
)
def test_relay_slower_than_usual_but_within_the_timeout_still_delivers(
    fanned_out, session_factory, sinks, flags
) -> None:
    """``-W cmd:1:10`` waits a random multiple of 1 s (0 s nine times in ten, 1 s, rarely
    more) before answering; ``connect:1`` delays the greeting by 1 s. Our timeout is 10 s."""
    port = free_port()
    slow = sinks(port, *flags)
    assert send(session_factory, fanned_out, port, utcnow()) == (10, 0, 0)
    slow.stop()
    assert sorted(c.rcpt for c in slow.received()) == MEMBERS and slow.counted() == 10
    assert {r.status for r in rows(session_factory)} == {DeliveryStatus.SENT}


def test_relay_slower_than_the_timeout_defers_without_sending(
    fanned_out, session_factory, sinks
) -> None:
    port, t0 = free_port(), utcnow()
    # 3 s before answering DATA; we wait 1 s (smtplib reports its read timeout as a
    # disconnection).
    stuck = sinks(port, "-W", "data:3")
    started = time.monotonic()
    assert send(session_factory, fanned_out, port, t0, timeout=1.0) == (0, 0, 10)
    assert time.monotonic() - started < 2.5  # one timeout for the batch, not one per copy
    stuck.stop()
    assert stuck.received() == [] and stuck.counted() == 0
    assert_all_deferred(session_factory, t0, "relay: SMTPServerDisconnected")
