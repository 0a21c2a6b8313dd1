"""Fixtures for tests that run real Mailgate processes (gateway, worker, run).

Every process is started by the test, in its own session, and ended by PID (its
process group) at teardown.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

# A database index the suite owns and flushes; parallel runs pick another one.
REDIS_URL = os.environ.get("MAILGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def require_fresh_redis() -> None:
    """Skip the test without Redis (fail it under ``MAILGATE_REQUIRE_REDIS=1``, as CI
    runs); otherwise empty the suite's Redis database for it."""
    if not redis_available():
        if os.environ.get("MAILGATE_REQUIRE_REDIS") == "1":
            pytest.fail("Redis is required (MAILGATE_REQUIRE_REDIS=1) but not reachable")
        pytest.skip("no Redis at 127.0.0.1:6379")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def redis_available() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception:  # noqa: BLE001
        return False
    return True


@contextmanager
def started_processes(
    python_args: Sequence[str],
) -> Iterator[Callable[[list[str], dict[str, str], Path], subprocess.Popen[bytes]]]:
    """``start(args, env, log)`` runs ``python PYTHON_ARGS ARGS`` in its own session with
    its output in ``log``; every process it started is ended by process group on exit."""
    started: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, *python_args, *args],
            env={**os.environ, **env},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    with started_processes(["-m", "mailgate.cli"]) as start:
        yield start


def send(port: int, sender: str, rcpt: str, body: str, subject: str = "Hello") -> None:
    raw = (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{time.time_ns()}.{sender}>\r\n\r\n{body}\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(sender, [rcpt], raw)


def seed(run_cli) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("lists", "create", "eng", "--visibility", "members").exit_code == 0
    assert run_cli("members", "add", "eng", "alice@corp.example").exit_code == 0


def outbox_files(var: Path) -> list[bytes]:
    new = var / "outbox" / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []
