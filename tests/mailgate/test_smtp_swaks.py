"""A scripted swaks matrix against the real gateway (TEST-03).

swaks is a real, independent SMTP client (Debian package ``swaks``): each case runs it
against a gateway on 127.0.0.1 backed by a real database, parses the server replies out
of its transcript, and checks swaks' exit code, the exact reply lines and what was stored.
Skipped when swaks is not installed, unless ``MAILGATE_REQUIRE_SWAKS=1`` (CI), which turns
a missing swaks into an error.

swaks exit codes used below (swaks(1) "EXIT CODES"): 0 ok, 21 bad banner, 24 no RCPT
accepted, 26 message not accepted after DATA.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailgate import replies
from mailgate.models import RawMessage
from mailgate.smtp import Limits
from mailgate.trace import without_own_trace
from tests.conftest import DOMAIN

SWAKS = shutil.which("swaks")
if SWAKS is None:
    if os.environ.get("MAILGATE_REQUIRE_SWAKS") == "1":
        pytest.fail("swaks is not on PATH but MAILGATE_REQUIRE_SWAKS=1", pytrace=False)
    pytest.skip(
        "swaks is not installed (apt-get install swaks); "
        "set MAILGATE_REQUIRE_SWAKS=1 to make this an error",
        allow_module_level=True,
    )

ALICE = "alice@corp.example"
ENG = f"eng@{DOMAIN}"
QUEUED = re.compile(r"^250 2\.0\.0 OK: queued as \d+$")
# swaks marks server lines "<-" (and "<~" under TLS), and server errors "<**".
SERVER_LINE = re.compile(r"^<(?:-|~|\*\*) +(\d{3}[ -].*)$")


@dataclass(frozen=True)
class Run:
    code: int
    replies: list[str]  # every server reply line, in order
    transcript: str

    @property
    def final(self) -> str:
        """The reply to the end of DATA (the last reply before QUIT's 221)."""
        after_data = [r for r in self.replies if not r.startswith(("221", "250-"))]
        return after_data[-1]


@pytest.fixture
def swaks(tmp_path: Path) -> Any:
    # A clean environment: no ~/.swaksrc, no SWAKS_OPT_* from the caller.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "LC_ALL": "C.UTF-8"}

    def run(gw: Any, *args: str, to: str = ENG, sender: str = ALICE) -> Run:
        command = [
            str(SWAKS),
            "--server",
            f"{gw.host}:{gw.port}",
            "--helo",
            "mx1.corp.example",
            "--from",
            sender,
            "--to",
            to,
            "--timeout",
            "10",
            *args,
        ]
        done = subprocess.run(command, capture_output=True, timeout=30, env=env, check=False)
        transcript = done.stdout.decode("utf-8", "replace")
        lines = [m.group(1) for m in map(SERVER_LINE.match, transcript.splitlines()) if m]
        return Run(done.returncode, lines, transcript + done.stderr.decode("utf-8", "replace"))

    return run


@pytest.fixture
def eng(directory: Any) -> Any:
    directory.list("eng", visibility="members")
    directory.member("eng", ALICE)
    directory.list("ops")
    return directory


def stored(session_factory: sessionmaker[Session]) -> list[RawMessage]:
    with session_factory() as s:
        return list(s.scalars(select(RawMessage).order_by(RawMessage.id)))


# ---------------------------------------------------------------- accepted


def test_plain_post(gateway: Any, eng: Any, swaks: Any, session_factory: Any) -> None:
    run = swaks(gateway, "--h-Subject", "Deploy window moved to 14:00", "--body", "See you.")
    assert run.code == 0, run.transcript
    assert run.replies[0] == "220 lists.corp.example Mailgate"
    assert "250-ENHANCEDSTATUSCODES" in run.replies
    assert ["250 2.1.0 OK", "250 2.1.5 OK"] == run.replies[-5:-3]
    assert run.replies[-3].startswith("354 ")
    assert QUEUED.match(run.final), run.transcript
    assert run.replies[-1] == "221 Bye"
    [row] = stored(session_factory)
    assert run.final.endswith(f" {row.id}")
    assert b"Subject: Deploy window moved to 14:00\r\n" in row.raw
    assert row.raw.endswith(b"\r\n\r\nSee you.\r\n\r\n\r\n")  # swaks' own body layout
    assert (row.mail_from, row.rcpt_to, row.helo) == (ALICE, [ENG], "mx1.corp.example")


def test_pipeline(gateway: Any, eng: Any, swaks: Any, session_factory: Any) -> None:
    # swaks pipelines only if PIPELINING is advertised; either way the post must go through.
    run = swaks(gateway, "--pipeline", "--h-Subject", "pipelined")
    assert run.code == 0, run.transcript
    assert QUEUED.match(run.final), run.transcript
    assert len(stored(session_factory)) == 1


def test_helo_only_client(gateway: Any, eng: Any, swaks: Any, session_factory: Any) -> None:
    run = swaks(gateway, "--protocol", "SMTP")
    assert run.code == 0, run.transcript
    assert run.replies[1] == "250 lists.corp.example"  # plain HELO: no extension list
    assert QUEUED.match(run.final), run.transcript
    assert len(stored(session_factory)) == 1


def test_eight_bit_body(gateway: Any, eng: Any, swaks: Any, session_factory: Any) -> None:
    body = "Grüße aus Köln — Überblick ✓"
    run = swaks(
        gateway,
        "--h-Subject",
        "Grüße",
        "--add-header",
        "Content-Type: text/plain; charset=UTF-8",
        "--body",
        body,
    )
    assert run.code == 0, run.transcript
    [row] = stored(session_factory)
    assert f"\r\n\r\n{body}\r\n".encode() in row.raw  # 8-bit bytes kept as sent
    assert "Subject: Grüße\r\n".encode() in row.raw


def test_bare_lf_body_is_stored_as_sent(
    gateway: Any, eng: Any, swaks: Any, session_factory: Any
) -> None:
    # --no-data-fixup sends the data verbatim (bare LF line ends) plus one CRLF, so the
    # terminating dot is ours to give.
    data = "Subject: bare LF\nFrom: alice@corp.example\n\nline one\nline two\r\n"
    run = swaks(gateway, "--no-data-fixup", "--data", data + ".")
    assert run.code == 0, run.transcript
    assert QUEUED.match(run.final), run.transcript
    [row] = stored(session_factory)
    assert without_own_trace(row.raw) == data.encode()


def test_lf_body_is_normalised_by_swaks(
    gateway: Any, eng: Any, swaks: Any, session_factory: Any
) -> None:
    run = swaks(gateway, "--body", "line one\nline two")
    assert run.code == 0, run.transcript
    [row] = stored(session_factory)
    assert b"\r\n\r\nline one\r\nline two\r\n" in row.raw


def test_smuggled_commands_stay_in_the_one_message(
    gateway: Any, eng: Any, swaks: Any, session_factory: Any
) -> None:
    """SMTP-12 from a real client: a bare-LF dot does not end DATA."""
    data = (
        "Subject: innocent\r\n\r\nhello\n.\r\n"
        "MAIL FROM:<ceo@corp.example>\r\n"
        f"RCPT TO:<{ENG}>\r\n"
        "DATA\r\n"
        "Subject: smuggled\r\n\r\nwire the money\r\n"
    )
    run = swaks(gateway, "--no-data-fixup", "--data", data + ".")
    assert run.code == 0, run.transcript
    assert QUEUED.match(run.final), run.transcript
    assert [r for r in run.replies if r.startswith("250 2.0.0")] == [run.final]
    [row] = stored(session_factory)
    assert without_own_trace(row.raw) == data.encode()


# ---------------------------------------------------------------- refused


def test_unknown_recipient(gateway: Any, eng: Any, swaks: Any, session_factory: Any) -> None:
    run = swaks(gateway, to=f"nosuch@{DOMAIN}")
    assert run.code == 24, run.transcript  # no RCPT accepted
    assert f"550 5.1.1 No such list or address here: nosuch@{DOMAIN}" in run.replies
    assert "<** 550 5.1.1 " in run.transcript
    assert not any(r.startswith("354") for r in run.replies)
    assert stored(session_factory) == []


def test_one_unknown_among_recipients(
    gateway: Any, eng: Any, swaks: Any, session_factory: Any
) -> None:
    run = swaks(gateway, to=f"{ENG},nosuch@{DOMAIN},ops@{DOMAIN}")
    assert run.code == 0, run.transcript
    assert f"550 5.1.1 No such list or address here: nosuch@{DOMAIN}" in run.replies
    assert QUEUED.match(run.final), run.transcript
    [row] = stored(session_factory)
    assert row.rcpt_to == [ENG, f"ops@{DOMAIN}"]


def test_quit_after_rcpt_stores_nothing(
    gateway: Any, eng: Any, swaks: Any, session_factory: Any
) -> None:
    run = swaks(gateway, "--quit-after", "RCPT")
    assert run.code == 0, run.transcript
    assert run.replies[-2:] == ["250 2.1.5 OK", "221 Bye"]
    assert stored(session_factory) == []


def test_oversized_line(gateway: Any, eng: Any, swaks: Any, session_factory: Any) -> None:
    run = swaks(gateway, "--suppress-data", "--body", "x" * 5000)
    assert run.code == 26, run.transcript  # not accepted after DATA
    assert run.final == "500 5.5.2 Line too long (see RFC5321 4.5.3.1.6)"
    assert stored(session_factory) == []
    again = swaks(gateway, "--body", "short again")
    assert again.code == 0 and QUEUED.match(again.final), again.transcript


def test_message_over_size_limit(gateway_factory: Any, eng: Any, swaks: Any) -> None:
    gw = gateway_factory(limits=Limits(max_message_size=2000))
    body = "\n".join(f"build log line {i:04d}" for i in range(200))
    run = swaks(gw, "--suppress-data", "--body", body)
    assert run.code == 26, run.transcript
    assert run.final == replies.TOO_BIG.format(limit=2000)
    assert "250-SIZE 2000" in run.replies


def test_too_many_received_headers(
    gateway: Any, eng: Any, swaks: Any, session_factory: Any
) -> None:
    hops = [
        arg
        for i in range(51)
        for arg in ("--add-header", f"Received: from mx{i}.corp.example by relay.corp.example")
    ]
    run = swaks(gateway, "--suppress-data", *hops)
    assert run.code == 26, run.transcript
    assert run.final == replies.TOO_MANY_HOPS
    assert stored(session_factory) == []


def test_untrusted_peer_gets_554_banner(gateway_factory: Any, swaks: Any) -> None:
    gw = gateway_factory(trusted=("10.0.0.0/8",))
    run = swaks(gw)
    assert run.code == 21, run.transcript  # error reading the initial banner
    assert run.replies == [replies.NOT_ALLOWED_PEER]
