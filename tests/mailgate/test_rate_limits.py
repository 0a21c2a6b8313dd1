"""Per-sender rates count the author as well as the envelope (issue 12, item 12).

The same From with a different MAIL FROM per message got 150 × 250 in 0.8 s: the limit
keyed on the envelope sender only. Now a message counts against its envelope sender (at
MAIL) and against its author — the From field's address, read from the header block at
DATA with the same parser ingest uses, never the body — and over either limit the reply
is ``451 4.7.1``. Windows are per key and separate, so a sender whose MAIL FROM is their
From still gets the whole rate.

Time is a frozen clock handed to the gateway; nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from mailgate import replies
from mailgate.inbox import SqlInbox
from mailgate.models import RawMessage
from mailgate.smtp import GatewayHandler, Limits, RateWindows, header_block, sniff_author
from tests.conftest import DOMAIN, SECRET

ENG = f"eng@{DOMAIN}"
MAIL_OK = "250 2.1.0 OK"


class Clock:
    """A frozen monotonic clock: moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 5_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def message(author: str, n: int = 0, *, body: bytes = b"Hello.\r\n") -> bytes:
    return (
        f"From: {author}\r\nTo: {ENG}\r\nSubject: Note {n}\r\n"
        f"Message-ID: <rate-{n}.{abs(hash(author))}@corp.example>\r\n\r\n"
    ).encode() + body


def stored(session_factory: sessionmaker[DbSession]) -> int:
    with session_factory() as s:
        return int(s.scalar(select(func.count()).select_from(RawMessage)) or 0)


@pytest.fixture
def lists(directory: Any) -> Any:
    directory.list("eng")
    return directory


# ---------------------------------------------------------------- the author (pure)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"From: alice@corp.example\r\n\r\nhi\r\n", "alice@corp.example", id="bare"),
        pytest.param(
            b'From: "Alice Example" <Alice@Corp.Example>\r\nTo: x@y\r\n\r\n',
            "alice@corp.example",
            id="named-any-case",
        ),
        pytest.param(
            b"From: =?utf-8?q?J=C3=B6ran?= <joran@corp.example>\r\n\r\n",
            "joran@corp.example",
            id="encoded-word-name",
        ),
        pytest.param(
            b"Subject: x\r\nFrom: Alice\r\n Example\r\n\t<alice@corp.example>\r\n\r\n",
            "alice@corp.example",
            id="folded",
        ),
        pytest.param(b"FROM:alice@corp.example\n\nhi\n", "alice@corp.example", id="bare-lf-caps"),
        pytest.param(
            b"From : alice@corp.example\r\n\r\n", "alice@corp.example", id="space-before-colon"
        ),
        pytest.param(
            "From: Jöran <jöran@exämple.test>\r\n\r\n".encode(),
            "jöran@exämple.test",
            id="utf8",
        ),
        pytest.param(b"To: x@y\r\n\r\nFrom: alice@corp.example\r\n", None, id="from-in-body"),
        pytest.param(b"Subject: none\r\n\r\n", None, id="no-from"),
        pytest.param(
            b"From: a@corp.example\r\nFrom: b@corp.example\r\n\r\n", None, id="two-from-fields"
        ),
        pytest.param(b"From: a@corp.example, b@corp.example\r\n\r\n", None, id="two-addresses"),
        pytest.param(b"From: <<<>>>\r\n\r\n", None, id="junk"),
        pytest.param(b"From: \xff\xfe@corp.example\r\n\r\n", None, id="invalid-utf8"),
        pytest.param(b"X-From: alice@corp.example\r\n\r\n", None, id="other-field"),
    ],
)
def test_sniff_author(raw: bytes, expected: str | None) -> None:
    assert sniff_author(header_block(raw)) == expected


# ---------------------------------------------------------------- transcripts


class Transcript:
    """Drives the gateway's hooks directly (no socket) and returns the exact replies."""

    def __init__(self, handler: GatewayHandler) -> None:
        self.handler = handler

    def send(self, mail_from: str, raw: bytes, rcpts: Sequence[str] = (ENG,)) -> list[str]:
        async def run() -> list[str]:
            session, envelope = Session(asyncio.get_running_loop()), Envelope()
            session.peer = ("127.0.0.1", 25025)
            session.host_name = "mx1.corp.example"
            server: Any = SimpleNamespace(hostname=DOMAIN)
            lines = [await self.handler.handle_MAIL(server, session, envelope, mail_from, [])]
            if lines[0] != MAIL_OK:
                return lines
            for rcpt in rcpts:
                lines.append(await self.handler.handle_RCPT(server, session, envelope, rcpt, []))
            envelope.original_content = raw
            lines.append(await self.handler.handle_DATA(server, session, envelope))
            return lines

        return asyncio.run(run())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gateway_at(lists: Any, session_factory: sessionmaker[DbSession], clock: Clock) -> Any:
    handlers: list[GatewayHandler] = []

    def start(rate: int) -> Transcript:
        handler = GatewayHandler(
            SqlInbox(session_factory),
            domain=DOMAIN,
            secrets=(SECRET,),
            limits=Limits(sender_rate=rate),
            clock=clock,
        )
        handlers.append(handler)
        return Transcript(handler)

    yield start
    for handler in handlers:
        handler.committer.close()


def accepted(lines: list[str]) -> bool:
    return lines[:2] == [MAIL_OK, replies.RCPT_OK] and lines[2].startswith(
        "250 2.0.0 OK: queued as "
    )


def test_same_author_with_a_new_envelope_each_time_is_limited(
    gateway_at: Any, clock: Clock, session_factory: sessionmaker[DbSession]
) -> None:
    gw = gateway_at(3)
    author = "Mallory <ceo@corp.example>"
    for n in range(3):
        assert accepted(gw.send(f"bounce{n}@relay.example", message(author, n)))
    assert gw.send("bounce3@relay.example", message(author, 3)) == [
        MAIL_OK,
        replies.RCPT_OK,
        replies.RATE_LIMITED,
    ]
    assert stored(session_factory) == 3  # the refused one was not stored
    # Another author through the same envelopes is not held back by this one.
    assert accepted(gw.send("bounce4@relay.example", message("carol@corp.example", 4)))
    clock.advance(60.5)  # the window slides: the author may send again
    assert accepted(gw.send("bounce5@relay.example", message(author, 5)))


def test_a_message_counts_against_both_keys(gateway_at: Any) -> None:
    gw = gateway_at(2)
    x, y = "x@corp.example", "y@corp.example"
    assert accepted(gw.send("a@relay.example", message(x, 1)))  # a:1 x:1
    assert accepted(gw.send("a@relay.example", message(y, 2)))  # a:2 y:1
    assert gw.send("a@relay.example", message(y, 3)) == [replies.RATE_LIMITED]  # a over
    assert accepted(gw.send("b@relay.example", message(x, 4)))  # b:1 x:2
    assert gw.send("c@relay.example", message(x, 5))[-1] == replies.RATE_LIMITED  # x over


def test_envelope_and_author_windows_are_separate(gateway_at: Any) -> None:
    """Mail whose MAIL FROM is its From is counted once per window, not twice in one."""
    gw = gateway_at(3)
    for n in range(3):
        assert accepted(gw.send("alice@corp.example", message("alice@corp.example", n)))
    assert gw.send("alice@corp.example", message("alice@corp.example", 3)) == [replies.RATE_LIMITED]


def test_the_body_is_never_read_for_the_author(gateway_at: Any) -> None:
    gw = gateway_at(1)
    quoted = b"> From: boss@corp.example\r\nFrom: boss@corp.example\r\n"
    assert accepted(gw.send("a@relay.example", message("boss@corp.example", 1)))
    # Another author who quotes the first in the body is not counted against them.
    assert accepted(gw.send("b@relay.example", message("dan@corp.example", 2, body=quoted)))


# ---------------------------------------------------------------- over a real socket


def test_issue_scenario_over_smtp(
    lists: Any, gateway_factory: Any, clock: Clock, session_factory: sessionmaker[DbSession]
) -> None:
    """150 messages, one From, a fresh MAIL FROM each: 120 accepted (the default rate),
    then 451 4.7.1 — and after the window, accepted again."""
    gw = gateway_factory(clock=clock)
    author = "The CEO <ceo@corp.example>"
    replies_seen: list[str] = []
    for batch in range(2):  # two connections: 100 messages per session is its own cap
        with gw.smtp() as smtp:
            smtp.ehlo("mx1.corp.example")
            for i in range(75):
                n = batch * 75 + i
                assert smtp.mail(f"srs{n}@relay.example") == (250, b"2.1.0 OK")
                assert smtp.rcpt(ENG) == (250, b"2.1.5 OK")
                code, text = smtp.data(message(author, n))
                replies_seen.append(f"{code} {text.decode()}")
    assert limits_default() == 120
    assert [r.startswith("250 2.0.0 OK: queued as ") for r in replies_seen] == [True] * 120 + [
        False
    ] * 30
    assert set(replies_seen[120:]) == {replies.RATE_LIMITED}
    assert stored(session_factory) == 120
    clock.advance(61)
    with gw.smtp() as smtp:
        smtp.sendmail("srs150@relay.example", [ENG], message(author, 150))
    assert stored(session_factory) == 121


def test_refused_author_gets_451_and_can_retry_later_over_smtp(
    lists: Any, gateway_factory: Any, clock: Clock
) -> None:
    gw = gateway_factory(limits=Limits(sender_rate=1), clock=clock)
    with gw.smtp() as smtp:
        smtp.sendmail("one@relay.example", [ENG], message("dan@corp.example", 1))
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("two@relay.example", [ENG], message("Dan <DAN@corp.example>", 2))
    assert f"{refused.value.smtp_code} {refused.value.smtp_error.decode()}" == (
        replies.RATE_LIMITED
    )
    clock.advance(61)
    with gw.smtp() as smtp:
        assert smtp.sendmail("two@relay.example", [ENG], message("dan@corp.example", 2)) == {}


def limits_default() -> int:
    return Limits().sender_rate


# ---------------------------------------------------------------- the windows (pure)


def test_rate_windows_forget_idle_keys_but_not_live_counts() -> None:
    windows = RateWindows(prune_at=3)
    assert windows.take("a", 0.0, 1)
    assert windows.take("b", 30.0, 1)
    assert windows.take("c", 70.0, 1)
    assert windows.take("d", 75.0, 1)  # 4 keys > 3: "a" (idle since 0.0) is forgotten
    assert set(windows._stamps) == {"b", "c", "d"}
    assert not windows.take("b", 80.0, 1)  # still counted: 30.0 is inside the minute
    assert windows.take("b", 90.5, 1)  # the window slid past 30.0
    assert not windows.take("e", 91.0, 0)  # a zero limit refuses and leaves no count
    # The next scan waits for twice the keys that survived (amortised): 6 here.
    assert windows.take("f", 200.0, 1)
    assert set(windows._stamps) == {"b", "c", "d", "e", "f"}
    assert windows.take("g", 200.0, 1)
    assert windows.take("h", 200.0, 1)  # 7 keys: every idle one goes, the empty "e" too
    assert set(windows._stamps) == {"f", "g", "h"}
