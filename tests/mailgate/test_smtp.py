"""The SMTP gateway over a real socket: exact replies, durable acceptance, limits.

Every test talks to a real aiosmtpd gateway on 127.0.0.1 backed by a real migrated
database (SQLite, and PostgreSQL in the second pass), and asserts the exact (code, text)
pairs a relay would read. The pure pre-parse checks (``check_shape``, ``is_trusted``)
are tested as tables at the end.
"""

from __future__ import annotations

import hashlib
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailgate import replies
from mailgate.db import make_engine, make_sessionmaker, unit_of_work
from mailgate.inbox import SqlInbox
from mailgate.models import RawMessage
from mailgate.smtp import Accepted, Limits, check_shape, header_block, is_trusted
from mailgate.smtp import trusted_networks as networks
from mailgate.tokens import TokenKind, make_token
from mailgate.trace import without_own_trace
from tests.conftest import DOMAIN, SECRET

ALICE = "alice@corp.example"
BOB = "bob@corp.example"
ENG = f"eng@{DOMAIN}"


# ---------------------------------------------------------------- helpers


def message(
    subject: str = "Build 4711 is green again",
    body: bytes = b"The flaky integration test is fixed; see the pipeline.\r\n",
    *,
    sender: str = "Alice Example <alice@corp.example>",
    extra: Sequence[bytes] = (),
    message_id: str = "<CAF=4711.green@mail.corp.example>",
) -> bytes:
    """A message as Thunderbird would put it on the wire (CRLF, ends in CRLF)."""
    head = [
        *extra,
        b"Date: Tue, 14 May 2024 09:12:33 +0200",
        f"From: {sender}".encode(),
        f"To: {ENG}".encode(),
        f"Subject: {subject}".encode(),
        f"Message-ID: {message_id}".encode(),
        b"MIME-Version: 1.0",
        b"Content-Type: text/plain; charset=UTF-8; format=flowed",
        b"Content-Transfer-Encoding: 8bit",
        b"User-Agent: Mozilla Thunderbird",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def reply_text(reply: tuple[int, bytes]) -> str:
    return f"{reply[0]} {reply[1].decode()}"


def stored(session_factory: sessionmaker[Session]) -> list[RawMessage]:
    with session_factory() as s:
        return list(s.scalars(select(RawMessage).order_by(RawMessage.id)))


def count(session_factory: sessionmaker[Session]) -> int:
    with session_factory() as s:
        return int(s.scalar(select(func.count()).select_from(RawMessage)) or 0)


@contextmanager
def client(gw: Any, *, helo: str = "mx1.corp.example") -> Iterator[smtplib.SMTP]:
    smtp: smtplib.SMTP = gw.smtp()
    try:
        assert smtp.ehlo(helo)[0] == 250
        yield smtp
    finally:
        try:
            smtp.quit()
        except smtplib.SMTPServerDisconnected:
            smtp.close()


def send(
    gw: Any,
    raw: bytes,
    *,
    sender: str = ALICE,
    rcpts: Sequence[str] = (ENG,),
    options: Sequence[str] = (),
) -> tuple[int, bytes]:
    """One transaction on a fresh connection; returns the reply to the final dot."""
    with client(gw) as smtp:
        return transaction(smtp, raw, sender=sender, rcpts=rcpts, options=options)


def transaction(
    smtp: smtplib.SMTP,
    raw: bytes,
    *,
    sender: str = ALICE,
    rcpts: Sequence[str] = (ENG,),
    options: Sequence[str] = (),
) -> tuple[int, bytes]:
    assert smtp.mail(sender, list(options)) == (250, b"2.1.0 OK")
    for rcpt in rcpts:
        assert smtp.rcpt(rcpt) == (250, b"2.1.5 OK"), rcpt
    return smtp.data(raw)


def queued_id(reply: tuple[int, bytes]) -> int:
    code, text = reply
    assert code == 250 and text.startswith(b"2.0.0 OK: queued as "), reply
    return int(text.rsplit(b" ", 1)[1])


def eventually(predicate: Callable[[], bool], timeout: float = 2) -> bool:
    """Poll briefly: publish runs on the writer thread just after the replies are released."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def assert_still_serving(gw: Any) -> None:
    """The gateway survived whatever came before: a normal post still gets 250."""
    queued_id(send(gw, message(subject="Still there?", message_id="<still@corp.example>")))


class RawClient:
    """A byte-level SMTP client for what smtplib refuses to send (smuggling, pipelining)."""

    def __init__(self, gw: Any, *, timeout: float = 5) -> None:
        self.sock = socket.create_connection((gw.host, gw.port), timeout=timeout)
        self.buffer = b""
        self.greeting = self.reply()

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; buffered {self.buffer!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def reply(self) -> str:
        """One (possibly multi-line) reply, as its last line."""
        while True:
            line = self.line()
            if line[3:4] != b"-":
                return line.decode()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def lists(directory: Any, session_factory: sessionmaker[Session]) -> Any:
    """eng (members-only, alice a member), ops, sales, design; old is archived."""
    from mailgate import directory as d

    directory.list("eng", visibility="members")
    directory.member("eng", ALICE)
    for slug in ("ops", "sales", "design", "old"):
        directory.list(slug)
    with unit_of_work(session_factory) as s:
        d.archive_list(s, "test", "old")
    return directory


# ---------------------------------------------------------------- EHLO, VRFY, EXPN


def test_ehlo_advertises_extensions_and_no_cleartext_auth(gateway_factory: Any) -> None:
    gw = gateway_factory(limits=Limits(max_message_size=5_000_000))
    with client(gw) as smtp:
        features = smtp.esmtp_features
    assert "enhancedstatuscodes" in features  # SMTP-04
    assert features["size"] == "5000000"  # SMTP-08: the configured limit, not the default
    assert "8bitmime" in features  # SMTP-09
    assert "smtputf8" in features  # SMTP-10
    assert "auth" not in features  # SMTP-11: never AUTH in cleartext


def test_expn_is_not_implemented_and_vrfy_reveals_nothing(gateway: Any, lists: Any) -> None:
    with client(gateway) as smtp:
        assert reply_text(smtp.docmd("EXPN", ENG)) == "502 5.5.1 EXPN not implemented"
        member = smtp.docmd("VRFY", f"<{ALICE}>")
        stranger = smtp.docmd("VRFY", "<mallory@corp.example>")
        the_list = smtp.docmd("VRFY", f"<{ENG}>")
        no_list = smtp.docmd("VRFY", f"<nosuch@{DOMAIN}>")
    assert member[0] == 252
    assert member == stranger == the_list == no_list  # SMTP-15: byte-identical


# ---------------------------------------------------------------- RCPT


@pytest.mark.parametrize(
    ("rcpt", "expected"),
    [
        pytest.param(
            f"nosuch@{DOMAIN}",
            f"550 5.1.1 No such list or address here: nosuch@{DOMAIN}",
            id="unknown-list",
        ),
        pytest.param(
            "eng@corp.example",
            "550 5.1.1 No such list or address here: eng@corp.example",
            id="other-domain",
        ),
        pytest.param(
            f"postmaster@{DOMAIN}",
            f"550 5.1.1 No such list or address here: postmaster@{DOMAIN}",
            id="reserved-local-part",
        ),
        pytest.param(
            f"old@{DOMAIN}",
            f"550 5.1.1 The list old@{DOMAIN} is archived and takes no mail",
            id="archived-list",
        ),
        pytest.param(
            f"reply+{'a' * 32}@{DOMAIN}",
            "550 5.1.1 This reply address is not valid (it may be mistyped)",
            id="reply-token-bad-signature",
        ),
        pytest.param(
            f"reply+{make_token('another-secret-entirely-000000000000', TokenKind.REPLY, 1, 2)}"
            f"@{DOMAIN}",
            "550 5.1.1 This reply address is not valid (it may be mistyped)",
            id="reply-token-other-secret",
        ),
        pytest.param(
            f"reply+{make_token(SECRET, TokenKind.BOUNCE, 7)}@{DOMAIN}",
            "550 5.1.1 This reply address is not valid (it may be mistyped)",
            id="bounce-token-at-reply-address",
        ),
        pytest.param(
            f"reply+not!a!token@{DOMAIN}",
            f"550 5.1.1 No such list or address here: reply+…@{DOMAIN}",
            id="reply-token-malformed-redacted",
        ),
    ],
)
def test_rcpt_refused_before_data(gateway: Any, lists: Any, rcpt: str, expected: str) -> None:
    with client(gateway) as smtp:
        assert smtp.mail(ALICE) == (250, b"2.1.0 OK")
        assert reply_text(smtp.rcpt(rcpt)) == expected
        # SMTP-06: nothing was accepted, so DATA is out of sequence.
        assert reply_text(smtp.docmd("DATA")) == "503 5.5.1 Error: need RCPT command"
    assert_still_serving(gateway)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        pytest.param(
            b"RCPT TO:<\xff\xfe@lists.corp.example>",
            "550 5.1.1 No such list or address here: \ufffd\ufffd@lists.corp.example",
            id="invalid-utf8-local-part",
        ),
        pytest.param(
            b"RCPT TO:<eng@lists.corp.example\xff>",
            "550 5.1.1 No such list or address here: eng@lists.corp.example\ufffd",
            id="invalid-utf8-domain",
        ),
        pytest.param(
            b"RCPT TO:<a\rb@lists.corp.example>",
            "550 5.1.1 No such list or address here: a?b@lists.corp.example",
            id="bare-cr-not-echoed",
        ),
        pytest.param(
            "RCPT TO:<nosuché@lists.corp.example>".encode(),
            "550 5.1.1 No such list or address here: nosuché@lists.corp.example",
            id="utf8-echoed-as-is",
        ),
    ],
)
def test_rcpt_hostile_bytes_get_a_clean_550(
    gateway: Any, lists: Any, command: bytes, expected: str
) -> None:
    conn = RawClient(gateway)
    try:
        conn.write(f"EHLO mx1.corp.example\r\nMAIL FROM:<{ALICE}>\r\n".encode())
        assert conn.reply().startswith("250 ")
        assert conn.reply() == "250 2.1.0 OK"
        conn.write(command + b"\r\n")
        assert conn.line().decode() == expected
        conn.write(f"RCPT TO:<{ENG}>\r\n".encode())
        assert conn.reply() == "250 2.1.5 OK"
    finally:
        conn.close()


@pytest.mark.parametrize(
    "rcpt",
    [
        pytest.param(ENG, id="list"),
        pytest.param(f"ENG@{DOMAIN.upper()}", id="list-any-case"),
        pytest.param(f"eng-request@{DOMAIN}", id="command-address"),
        pytest.param(f"reply+{make_token(SECRET, TokenKind.REPLY, 12, 345)}@{DOMAIN}", id="reply"),
        pytest.param(f"bounces+{make_token(SECRET, TokenKind.BOUNCE, 99)}@{DOMAIN}", id="bounce"),
    ],
)
def test_rcpt_accepted_and_message_stored(
    gateway: Any, lists: Any, session_factory: sessionmaker[Session], rcpt: str
) -> None:
    with client(gateway) as smtp:
        assert smtp.mail(ALICE) == (250, b"2.1.0 OK")
        assert smtp.rcpt(rcpt) == (250, b"2.1.5 OK")
        raw_id = queued_id(smtp.data(message()))
    [row] = stored(session_factory)
    assert (row.id, row.rcpt_to, row.mail_from) == (raw_id, [rcpt], ALICE)


def test_duplicate_rcpt_is_stored_once(
    gateway: Any, lists: Any, session_factory: sessionmaker[Session]
) -> None:
    with client(gateway) as smtp:
        smtp.mail(ALICE)
        assert smtp.rcpt(ENG) == (250, b"2.1.5 OK")
        assert reply_text(smtp.rcpt(ENG.upper())) == replies.DUPLICATE_RCPT
        queued_id(smtp.data(message()))
    assert stored(session_factory)[0].rcpt_to == [ENG]


def test_recipient_cap_answers_452_and_keeps_the_first(
    gateway_factory: Any, lists: Any, session_factory: sessionmaker[Session]
) -> None:
    gw = gateway_factory(limits=Limits(max_recipients=3))
    first = [ENG, f"ops@{DOMAIN}", f"sales@{DOMAIN}"]
    with client(gw) as smtp:
        smtp.mail(ALICE)
        for rcpt in first:
            assert smtp.rcpt(rcpt) == (250, b"2.1.5 OK")
        assert reply_text(smtp.rcpt(f"design@{DOMAIN}")) == replies.TOO_MANY_RECIPIENTS
        assert replies.TOO_MANY_RECIPIENTS.startswith("452 4.5.3 ")
        queued_id(smtp.data(message()))  # SMTP-07: the first three are still processed
    [row] = stored(session_factory)
    assert row.rcpt_to == first


# ---------------------------------------------------------------- SIZE, 8BITMIME, SMTPUTF8


def test_size_parameter_over_limit_is_refused_at_mail(gateway_factory: Any, lists: Any) -> None:
    gw = gateway_factory(limits=Limits(max_message_size=20_000))
    with client(gw) as smtp:
        refused = smtp.mail(ALICE, ["SIZE=20001"])
        assert reply_text(refused) == "552 5.3.4 Message too big (limit 20000 bytes)"
        assert smtp.mail(ALICE, ["SIZE=20000"]) == (250, b"2.1.0 OK")


def test_streaming_over_the_limit_is_refused_after_the_dot_and_not_stored(
    gateway_factory: Any, lists: Any, session_factory: sessionmaker[Session]
) -> None:
    gw = gateway_factory(limits=Limits(max_message_size=20_000))
    big = message(body=b"".join(b"line %05d of a long build log\r\n" % i for i in range(1000)))
    assert len(big) > 20_000
    with client(gw) as smtp:
        refused = transaction(smtp, big)
        assert reply_text(refused) == "552 5.3.4 Message too big (limit 20000 bytes)"
        # The session goes on: the next transaction on the same connection is fine.
        queued_id(transaction(smtp, message()))
    assert [without_own_trace(r.raw) for r in stored(session_factory)] == [message()]


EIGHT_BIT_BODY = (
    "Grüße aus Köln — the release notes are attached. Ünïcödé ✓\r\n".encode()
    + b"Legacy Latin-1 bytes stay as they are: caf\xe9 \xa9 2024\r\n"
    + b".a line that starts with a dot (dot-stuffed on the wire)\r\n"
    + b"..two dots\r\n"
    + b"trailing spaces   \r\n"
    + b"\r\n"
    + b"-- \r\n"
    + "Jöran\r\n".encode()
)


@pytest.mark.parametrize("options", [[], ["BODY=8BITMIME"]], ids=["no-body-param", "8bitmime"])
def test_eight_bit_body_is_stored_byte_identical(
    gateway: Any, lists: Any, session_factory: sessionmaker[Session], options: list[str]
) -> None:
    raw = message(subject="Release notes", body=EIGHT_BIT_BODY)
    raw_id = queued_id(send(gateway, raw, options=options))
    [row] = stored(session_factory)
    assert row.id == raw_id
    assert without_own_trace(row.raw) == raw  # FMT-01: the archive is the exact bytes received
    assert row.sha256 == hashlib.sha256(row.raw).hexdigest()  # SMTP-09: of the stored copy
    assert row.message_id == "<CAF=4711.green@mail.corp.example>"


def test_body_binarymime_is_refused(gateway: Any, lists: Any) -> None:
    with client(gateway) as smtp:
        refused = smtp.mail(ALICE, ["BODY=BINARYMIME"])
    assert reply_text(refused) == "501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME"


def test_smtputf8_sender_and_headers_are_accepted_and_stored(
    gateway: Any, lists: Any, session_factory: sessionmaker[Session]
) -> None:
    sender = "jöran@exämple.test"
    raw = message(
        subject="Grüße — Überblick über Q3 ✓",
        sender=f"Jöran Ågren <{sender}>",
        body="Hej! Här är sammanfattningen.\r\n".encode(),
    )
    with client(gateway) as smtp:
        assert smtp.mail(sender, ["SMTPUTF8", "BODY=8BITMIME"]) == (250, b"2.1.0 OK")
        assert smtp.rcpt(ENG) == (250, b"2.1.5 OK")
        queued_id(smtp.data(raw))
    [row] = stored(session_factory)
    assert row.mail_from == sender  # SMTP-10: the UTF-8 address round-trips
    assert without_own_trace(row.raw) == raw
    assert "From: Jöran Ågren <jöran@exämple.test>".encode() in row.raw


# ---------------------------------------------------------------- line length, smuggling


def test_overlong_data_line_gets_500_and_rset_works(
    gateway: Any, lists: Any, session_factory: sessionmaker[Session]
) -> None:
    raw = message(body=b"x" * 5000 + b"\r\n")
    with client(gateway) as smtp:
        refused = transaction(smtp, raw)  # SMTP-13
        assert reply_text(refused) == "500 5.5.2 Line too long (see RFC5321 4.5.3.1.6)"
        assert smtp.rset()[0] == 250
        queued_id(transaction(smtp, message()))
    assert [without_own_trace(r.raw) for r in stored(session_factory)] == [message()]


def test_overlong_command_line_gets_500(gateway: Any, lists: Any) -> None:
    with client(gateway) as smtp:
        smtp.mail(ALICE)
        refused = smtp.docmd("RCPT", f"TO:<{'a' * 600}@{DOMAIN}>")
        assert reply_text(refused) == "500 5.5.2 Command line too long"
        assert smtp.rcpt(ENG) == (250, b"2.1.5 OK")


@pytest.mark.parametrize(
    "fake_end",
    [b"\n.\r\n", b"\r.\r\n", b"\n.\n", b"\r\n.\n", b"\r\n.\r"],
    ids=["LF.CRLF", "CR.CRLF", "LF.LF", "CRLF.LF", "CRLF.CR"],
)
def test_smtp_smuggling_yields_one_message_with_the_text_inside(
    gateway: Any, lists: Any, session_factory: sessionmaker[Session], fake_end: bytes
) -> None:
    """SMTP-12: only <CRLF>.<CRLF> ends DATA; the rest is content of the one message."""
    smuggled = (
        b"MAIL FROM:<ceo@corp.example>\r\n"
        + f"RCPT TO:<{ENG}>\r\n".encode()
        + b"DATA\r\n"
        + b"From: ceo@corp.example\r\nSubject: smuggled\r\n\r\nwire the money\r\n"
    )
    conn = RawClient(gateway)
    try:
        assert conn.greeting.startswith("220 ")
        conn.write(b"EHLO mx1.corp.example\r\n")
        assert conn.reply().startswith("250 ")
        conn.write(f"MAIL FROM:<{ALICE}>\r\n".encode())
        assert conn.reply() == "250 2.1.0 OK"
        conn.write(f"RCPT TO:<{ENG}>\r\n".encode())
        assert conn.reply() == "250 2.1.5 OK"
        conn.write(b"DATA\r\n")
        assert conn.reply().startswith("354 ")
        conn.write(message(body=b"innocent text") + fake_end + smuggled + b".\r\n")
        final = conn.reply()
        conn.write(b"QUIT\r\n")
        assert conn.reply().startswith("221")
    finally:
        conn.close()
    assert final.startswith("250 2.0.0 OK: queued as "), final
    [row] = stored(session_factory)
    assert b"MAIL FROM:<ceo@corp.example>" in row.raw
    assert b"wire the money" in row.raw


def test_pipelined_commands_get_replies_in_order(
    gateway: Any, lists: Any, session_factory: sessionmaker[Session]
) -> None:
    """A relay that pipelines (RFC 2920) gets one reply per command, in order."""
    conn = RawClient(gateway)
    try:
        conn.write(
            b"EHLO mx1.corp.example\r\n"
            + f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<nosuch@{DOMAIN}>\r\n".encode()
            + f"RCPT TO:<{ENG}>\r\nDATA\r\n".encode()
        )
        got = [conn.reply() for _ in range(5)]
        conn.write(message() + b".\r\nQUIT\r\n")
        got += [conn.reply(), conn.reply()]
    finally:
        conn.close()
    assert got[0] == "250 HELP"
    assert got[1:4] == [
        "250 2.1.0 OK",
        f"550 5.1.1 No such list or address here: nosuch@{DOMAIN}",
        "250 2.1.5 OK",
    ]
    assert got[4].startswith("354 ")
    assert got[5].startswith("250 2.0.0 OK: queued as "), got
    assert got[6].startswith("221 ")
    assert [r.rcpt_to for r in stored(session_factory)] == [[ENG]]


# ---------------------------------------------------------------- shape limits (LOOP-06, LIM-04)


def received(n: int) -> list[bytes]:
    return [
        b"Received: from mx%d.corp.example (mx%d.corp.example [10.0.0.%d])\r\n"
        b"\tby relay.corp.example (Postfix) with ESMTPS id 4VfQ%04d;\r\n"
        b"\tTue, 14 May 2024 09:12:%02d +0200 (CEST)" % (i, i, i % 250, i, i % 60)
        for i in range(n)
    ]


def nested_multipart(depth: int) -> bytes:
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    return head + b"Content-Type: text/plain\r\n\r\ndeep\r\n"


def many_parts(n: int) -> bytes:
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\n%d\r\n" % i for i in range(n))
    return parts + b"--p--\r\n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(message(extra=received(50)), None, id="50-received-ok"),
        pytest.param(message(extra=received(51)), replies.TOO_MANY_HOPS, id="51-received"),
        pytest.param(
            message(extra=[b"X-Filler-%03d: " % i + b"a" * 900 for i in range(300)]),
            replies.HEADERS_TOO_BIG.format(limit=Limits().max_header_bytes),
            id="header-block-too-big",
        ),
        pytest.param(
            b'Content-Type: multipart/mixed; boundary="p"\r\nSubject: parts\r\n\r\n'
            + many_parts(1200),
            replies.MIME_TOO_COMPLEX.format(detail="too many parts"),
            id="too-many-parts",
        ),
        pytest.param(
            b"Subject: nesting\r\n" + nested_multipart(150),
            replies.MIME_TOO_COMPLEX.format(detail="too deeply nested"),
            id="too-deep",
        ),
    ],
)
def test_shape_limits_over_smtp(
    gateway: Any,
    lists: Any,
    session_factory: sessionmaker[Session],
    raw: bytes,
    expected: str | None,
) -> None:
    reply = send(gateway, raw)
    if expected is None:
        queued_id(reply)
        assert count(session_factory) == 1
        return
    assert reply_text(reply) == expected
    assert count(session_factory) == 0
    assert_still_serving(gateway)


def test_shape_codes_are_the_checklist_codes() -> None:
    assert replies.TOO_MANY_HOPS.startswith("554 5.4.6 ")  # LOOP-06
    assert replies.HEADERS_TOO_BIG.startswith("552 5.3.4 ")  # LIM-04
    assert replies.MIME_TOO_COMPLEX.startswith("554 5.6.0 ")  # LIM-04, SMTP-03


# ---------------------------------------------------------------- durability (SMTP-01/03)


class SwitchableInbox:
    """The real SqlInbox, with store_many routed to a broken one while ``down``."""

    def __init__(self, real: SqlInbox, broken: SqlInbox) -> None:
        self.real, self.broken, self.down = real, broken, True
        self.published: list[int] = []

    def list_state(self, slug: str) -> str | None:
        return self.real.list_state(slug)

    def store_many(self, messages: Sequence[Accepted]) -> list[int]:
        return (self.broken if self.down else self.real).store_many(messages)

    def publish(self, raw_ids: Sequence[int]) -> None:
        self.published.extend(raw_ids)


def _unreachable(session_factory: sessionmaker[Session], tmp_path: Any) -> Engine:
    # A database file in a directory that is a regular file: connecting fails for real.
    # (plain create_engine: make_engine would try to create the directory up front).
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    return create_engine(f"sqlite:///{blocker}/mailgate.db")


def _commit_fails(session_factory: sessionmaker[Session], tmp_path: Any) -> Engine:
    # The same database through its own engine: the INSERT runs, then COMMIT fails, and
    # nothing may be left behind. A connection event catches Core and ORM commits alike.
    bind = session_factory.kw["bind"]
    engine = make_engine(bind.url.render_as_string(hide_password=False))

    @event.listens_for(engine, "commit")
    def _boom(_conn: Any) -> None:
        raise OperationalError("COMMIT", {}, ConnectionResetError("server closed the connection"))

    return engine


@pytest.mark.parametrize("broken", [_unreachable, _commit_fails], ids=["unreachable", "commit"])
def test_storage_failure_answers_451_then_recovers_with_one_row(
    gateway_factory: Any,
    lists: Any,
    session_factory: sessionmaker[Session],
    tmp_path: Any,
    broken: Callable[[sessionmaker[Session], Any], Engine],
) -> None:
    engine = broken(session_factory, tmp_path)
    inbox = SwitchableInbox(SqlInbox(session_factory), SqlInbox(make_sessionmaker(engine)))
    gw = gateway_factory(inbox=inbox)
    raw = message()
    try:
        assert reply_text(send(gw, raw)) == replies.STORAGE_UNAVAILABLE
    finally:
        engine.dispose()
    assert replies.STORAGE_UNAVAILABLE.startswith("451 4.3.0 ")
    assert count(session_factory) == 0
    assert inbox.published == []

    inbox.down = False  # the relay retries the same message once storage is back
    raw_id = queued_id(send(gw, raw))
    [row] = stored(session_factory)
    assert (row.id, without_own_trace(row.raw)) == (raw_id, raw)
    assert eventually(lambda: bool(inbox.published))
    assert inbox.published == [raw_id]


def test_reply_250_comes_after_the_commit(
    gateway_factory: Any, lists: Any, session_factory: sessionmaker[Session]
) -> None:
    """SMTP-01: the hook runs before the reply is pushed and sees a committed row."""
    seen: list[tuple[int, bytes, str]] = []

    def after_commit(raw_id: int) -> None:
        with session_factory() as fresh:  # a new connection: only committed data is visible
            row = fresh.get(RawMessage, raw_id)
            assert row is not None
            seen.append((row.id, row.raw, row.sha256))

    gw = gateway_factory(after_commit=after_commit)
    raw = message()
    raw_id = queued_id(send(gw, raw))
    [(seen_id, stored_raw, digest)] = seen
    assert (seen_id, without_own_trace(stored_raw)) == (raw_id, raw)
    assert digest == hashlib.sha256(stored_raw).hexdigest()


class GatedInbox(SqlInbox):
    """A SqlInbox whose commits wait until the test opens the gate."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        super().__init__(factory)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def store_many(self, messages: Sequence[Accepted]) -> list[int]:
        self.entered.set()
        assert self.gate.wait(5), "test never opened the gate"
        return super().store_many(messages)


def record_submits(gw: Any) -> list[Any]:
    """The future of every message the gateway hands to its writer, in order (a spy on
    the committer's ``submit``), so a test waits for "queued" or "cancelled" instead of
    sleeping and hoping the gateway got there."""
    futures: list[Any] = []
    submit = gw.handler.committer.submit

    def recording(message: Accepted) -> Any:
        future = submit(message)
        futures.append(future)
        return future

    gw.handler.committer.submit = recording
    return futures


def _start_data(gw: Any) -> RawClient:
    conn = RawClient(gw)
    conn.write(
        b"EHLO mx1.corp.example\r\n"
        + f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{ENG}>\r\nDATA\r\n".encode()
    )
    assert conn.reply().startswith("250 ")  # EHLO
    assert conn.reply() == "250 2.1.0 OK"
    assert conn.reply() == "250 2.1.5 OK"
    assert conn.reply().startswith("354 ")
    conn.write(message() + b".\r\n")
    return conn


def test_no_reply_until_the_commit_finishes(
    gateway_factory: Any, lists: Any, session_factory: sessionmaker[Session]
) -> None:
    inbox = GatedInbox(session_factory)
    gw = gateway_factory(inbox=inbox)
    conn = _start_data(gw)
    try:
        assert inbox.entered.wait(2)
        conn.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            conn.line()  # still committing: the client must not have its 250 yet
        assert count(session_factory) == 0
        inbox.gate.set()
        conn.sock.settimeout(5)
        final = conn.reply()
    finally:
        conn.close()
    assert final.startswith("250 2.0.0 OK: queued as "), final
    assert count(session_factory) == 1


def test_client_hanging_up_during_commit_does_not_stall_the_gateway(
    gateway_factory: Any, lists: Any, session_factory: sessionmaker[Session]
) -> None:
    """Regression: a cancelled commit future used to kill the writer thread."""
    inbox = GatedInbox(session_factory)
    gw = gateway_factory(inbox=inbox)
    submitted = record_submits(gw)
    conn = _start_data(gw)
    assert inbox.entered.wait(2)
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    # The gateway saw the hang-up: the session's DATA handler was cancelled with it.
    assert eventually(lambda: submitted[0].cancelled(), timeout=5)
    inbox.gate.set()
    assert_still_serving(gw)
    # The first message was already being committed: it is kept (at-least-once).
    assert count(session_factory) == 2


def test_message_of_a_client_gone_before_its_commit_is_not_stored(
    gateway_factory: Any, lists: Any, session_factory: sessionmaker[Session]
) -> None:
    """Queued behind a slow commit, the sender hangs up: it never saw 250 and will retry."""
    inbox = GatedInbox(session_factory)
    gw = gateway_factory(inbox=inbox)
    submitted = record_submits(gw)
    first = _start_data(gw)  # the writer is now busy committing this one
    assert inbox.entered.wait(2)
    second = _start_data(gw)
    assert eventually(lambda: len(submitted) == 2, timeout=5)  # queued behind it
    second.sock.shutdown(socket.SHUT_RDWR)
    second.close()
    assert eventually(lambda: submitted[1].cancelled(), timeout=5)  # its handler is gone
    inbox.gate.set()
    try:
        first.sock.settimeout(5)
        assert first.reply().startswith("250 2.0.0 OK: queued as ")
    finally:
        first.close()
    assert count(session_factory) == 1
    assert_still_serving(gw)


def test_published_after_commit(
    gateway: Any, lists: Any, session_factory: sessionmaker[Session]
) -> None:
    raw_id = queued_id(send(gateway, message()))
    assert eventually(lambda: bool(gateway.published))
    assert gateway.published == [raw_id]
    assert [r.id for r in stored(session_factory)] == [raw_id]


def test_envelope_is_stored_with_the_bytes(
    gateway: Any, lists: Any, session_factory: sessionmaker[Session]
) -> None:
    raw_id = queued_id(send(gateway, message(), rcpts=(ENG, f"ops@{DOMAIN}")))
    [row] = stored(session_factory)
    assert row.id == raw_id
    assert (row.mail_from, row.rcpt_to) == (ALICE, [ENG, f"ops@{DOMAIN}"])
    assert (row.peer, row.helo) == ("127.0.0.1", "mx1.corp.example")
    assert row.status == "received"


# ---------------------------------------------------------------- rates and peers


def test_messages_per_session_cap(gateway_factory: Any, lists: Any) -> None:
    gw = gateway_factory(limits=Limits(max_messages_per_session=2))
    with client(gw) as smtp:
        queued_id(transaction(smtp, message()))
        queued_id(transaction(smtp, message()))
        assert reply_text(smtp.mail(ALICE)) == replies.RATE_LIMITED
    assert replies.RATE_LIMITED.startswith("451 4.7.1 ")
    assert_still_serving(gw)  # a new connection starts a new count


def test_per_sender_rate_across_connections(gateway_factory: Any, lists: Any) -> None:
    gw = gateway_factory(limits=Limits(sender_rate=3))
    for _ in range(3):
        queued_id(send(gw, message(), sender=BOB))
    with client(gw) as smtp:
        assert reply_text(smtp.mail(BOB)) == replies.RATE_LIMITED
        assert reply_text(smtp.mail(BOB.upper())) == replies.RATE_LIMITED  # case-folded
    queued_id(send(gw, message(sender="Carol <carol@corp.example>"), sender="carol@corp.example"))


def test_untrusted_peer_gets_554_greeting(gateway_factory: Any) -> None:
    gw = gateway_factory(trusted=("10.0.0.0/8",))
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP(gw.host, gw.port, timeout=5)
    assert refused.value.smtp_code == 554
    assert refused.value.smtp_error == replies.NOT_ALLOWED_PEER[4:].encode()


def test_loopback_alias_not_in_allow_list_is_refused(gateway: Any) -> None:
    """SMTP-05 as written: 127.0.0.2 (not allow-listed) → 554, 127.0.0.1 → 220."""
    try:
        smtp = smtplib.SMTP(gateway.host, gateway.port, timeout=5, source_address=("127.0.0.2", 0))
    except smtplib.SMTPConnectError as refused:
        assert refused.smtp_code == 554
    except OSError as exc:  # pragma: no cover - a host without the 127/8 alias
        pytest.skip(f"cannot bind 127.0.0.2: {exc}")
    else:
        smtp.close()
        pytest.fail("127.0.0.2 was greeted")
    with client(gateway) as smtp:
        assert smtp.noop()[0] == 250


@pytest.mark.parametrize(
    ("host", "trusted", "expected"),
    [
        ("127.0.0.1", ["127.0.0.1/32"], True),
        ("127.0.0.2", ["127.0.0.1/32"], False),
        ("10.1.2.3", ["10.0.0.0/8", "192.0.2.0/24"], True),
        ("192.0.2.77", ["10.0.0.0/8", "192.0.2.0/24"], True),
        ("198.51.100.1", ["10.0.0.0/8", "192.0.2.0/24"], False),
        ("::1", ["::1/128"], True),
        ("::1", ["127.0.0.0/8"], False),
        ("::ffff:127.0.0.1", ["127.0.0.0/8"], True),
        ("::ffff:10.9.8.7", ["127.0.0.0/8"], False),
        ("2001:db8::25", ["2001:db8::/32"], True),
        ("fe80::1%eth0", ["fe80::/10"], True),
        ("garbage", ["0.0.0.0/0", "::/0"], False),
        ("", ["0.0.0.0/0"], False),
        ("127.0.0.1", [], False),
    ],
)
def test_is_trusted(host: str, trusted: list[str], expected: bool) -> None:
    assert is_trusted(host, networks(trusted)) is expected


# ---------------------------------------------------------------- check_shape (pure)


@pytest.mark.parametrize(
    ("raw", "limits", "expected"),
    [
        pytest.param(message(), Limits(), None, id="plain"),
        pytest.param(b"", Limits(), None, id="empty"),
        pytest.param(message(extra=received(3)), Limits(max_received=3), None, id="at-hops"),
        pytest.param(
            message(extra=received(4)), Limits(max_received=3), replies.TOO_MANY_HOPS, id="hops"
        ),
        pytest.param(
            message(extra=[b"RECEIVED: from a", b"received: from b"]),
            Limits(max_received=1),
            replies.TOO_MANY_HOPS,
            id="hops-any-case",
        ),
        pytest.param(
            message(extra=[b"X-Received: by 10.0.0.1", b"ARC-Seal: i=1; a=rsa-sha256"]),
            Limits(max_received=0),
            None,
            id="x-received-not-counted",
        ),
        pytest.param(
            message(body=b"".join(b"Received: quoted in the body\r\n" for _ in range(9))),
            Limits(max_received=2),
            None,
            id="received-in-body-not-counted",
        ),
        pytest.param(
            b"Received: a\nReceived: b\nReceived: c\n\nbody\n",
            Limits(max_received=2),
            replies.TOO_MANY_HOPS,
            id="bare-lf-headers",
        ),
        pytest.param(
            message(extra=[b"X-Big: " + b"a" * 2000]),
            Limits(max_header_bytes=1000),
            replies.HEADERS_TOO_BIG.format(limit=1000),
            id="header-bytes",
        ),
        pytest.param(
            b"Subject: x\r\n\r\n" + many_parts(5), Limits(max_mime_parts=5), None, id="parts-ok"
        ),
        pytest.param(
            message(body=b"".join(b"--- a/src/file%d.py\r\n" % i for i in range(9))),
            Limits(max_mime_parts=5),
            None,
            id="dash-lines-in-text-within-bound",
        ),
        pytest.param(
            b"Subject: x\r\n\r\n" + many_parts(11),
            Limits(max_mime_parts=5),
            replies.MIME_TOO_COMPLEX.format(detail="too many parts"),
            id="parts",
        ),
        pytest.param(nested_multipart(2), Limits(max_mime_parts=10), None, id="nesting-ok"),
        pytest.param(
            nested_multipart(3),
            Limits(max_mime_parts=10),
            replies.MIME_TOO_COMPLEX.format(detail="too deeply nested"),
            id="nesting",
        ),
    ],
)
def test_check_shape(raw: bytes, limits: Limits, expected: str | None) -> None:
    assert check_shape(raw, limits) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Subject: a\r\n\r\nbody\r\n\r\nmore", b"Subject: a"),
        (b"Subject: a\n\nbody", b"Subject: a"),
        (b"Subject: a\r\nFrom: b", b"Subject: a\r\nFrom: b"),
        (b"", b""),
    ],
)
def test_header_block(raw: bytes, expected: bytes) -> None:
    assert header_block(raw) == expected


MAILISH = st.lists(
    st.sampled_from(
        [
            b"Received: from x\r\n",
            b"received:\n",
            b"Content-Type: multipart/mixed; boundary=x\r\n",
            b"content-type:\r\n multipart/alternative\r\n",
            b"CONTENT-TYPE:  MULTIPART/Mixed\r\n",
            b"a body that mentions multipart/ and --x\n",
            b"--x\r\n",
            b"--\n",
            b"\r\n",
            b"\n",
            b"\r",
            b"Subject: \xff\xfe\r\n",
        ]
    )
    | st.binary(max_size=40),
    max_size=60,
).map(b"".join)


def _shape_by_regex(raw: bytes, limits: Limits) -> str | None:
    """check_shape as first written, with a regex per rule: the reference for the fast one."""
    import re

    from mailgate.smtp import longest_field

    headers = header_block(raw)
    if len(headers) > limits.max_header_bytes:
        return replies.HEADERS_TOO_BIG.format(limit=limits.max_header_bytes)
    if len(re.findall(rb"^received:", headers, re.I | re.M)) > limits.max_received:
        return replies.TOO_MANY_HOPS
    if longest_field(headers) > limits.max_header_field:
        return replies.HEADERS_TOO_BIG.format(limit=limits.max_header_field)
    if len(re.findall(rb"^--", raw, re.M)) > 2 * limits.max_mime_parts:
        return replies.MIME_TOO_COMPLEX.format(detail="too many parts")
    if len(re.findall(rb"content-type:\s*multipart/", raw, re.I)) > limits.max_mime_parts // 5:
        return replies.MIME_TOO_COMPLEX.format(detail="too deeply nested")
    return None


@settings(max_examples=500, deadline=None)
@given(
    raw=st.binary(max_size=4096) | MAILISH,
    limits=st.builds(
        Limits,
        max_received=st.integers(0, 5),
        max_header_bytes=st.integers(0, 200) | st.integers(0, 4096),
        max_mime_parts=st.integers(0, 12),
    ),
)
def test_check_shape_never_raises_and_counts_as_the_regexes_do(raw: bytes, limits: Limits) -> None:
    result = check_shape(raw, limits)
    assert result is None or result[:3] in {"552", "554"}
    assert result == _shape_by_regex(raw, limits)


def test_our_received_trace_is_the_first_header_of_the_stored_copy(  # type: ignore[no-untyped-def]
    gateway: Any, lists: Any, session_factory: sessionmaker[Session]
) -> None:
    """SMTP-16: the stored copy starts with our own Received naming the peer's IP and
    HELO; a HELO trying to inject a header stays on our one line."""
    raw = message()
    with gateway.smtp() as smtp:
        smtp.ehlo("mx1.corp.example;(X-Injected: yes)")
        smtp.sendmail("alice@corp.example", [f"eng@{DOMAIN}"], raw)
    [row] = stored(session_factory)
    first, _, rest = row.raw.partition(b"\r\n\t")
    # The client's HELO keeps only host-name characters: no comment, no "; date" of its own.
    assert first == first.split(b" ([")[0] + b" ([127.0.0.1])"
    assert first.startswith(b"Received: from mx1.corp.exampleX-Injected:yes")
    assert rest.startswith(f"by {DOMAIN} (Mailgate) with ESMTP id ".encode())
    assert without_own_trace(row.raw) == raw


# ---------------------------------------------------------------- group commit (threads)


class BatchRecorder:
    """An Inbox that records the size of every committed batch."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.next_id = 1

    def list_state(self, slug: str) -> str | None:
        return "open"

    def store_many(self, messages: Sequence[Accepted]) -> list[int]:
        self.batches.append(len(messages))
        ids = list(range(self.next_id, self.next_id + len(messages)))
        self.next_id += len(messages)
        return ids

    def publish(self, raw_ids: Sequence[int]) -> None:
        pass


def _accepted(n: int) -> Accepted:
    return Accepted(b"Subject: %d\r\n\r\nx\r\n" % n, "a@example.org", ("eng@x",), "127.0.0.1", "h")


def _submit_staggered(open_sessions: int, gap: float, linger: float) -> tuple[list[int], float]:
    """Submit three messages ``gap`` seconds apart; return batch sizes and the first wait."""
    import asyncio

    from mailgate.smtp import GroupCommitter

    inbox = BatchRecorder()
    committer = GroupCommitter(inbox, linger=linger, open_sessions=lambda: open_sessions)

    async def run() -> float:
        begin = time.monotonic()
        settled: list[float] = []
        first = committer.submit(_accepted(0))
        first.add_done_callback(lambda _: settled.append(time.monotonic() - begin))
        futures = [first]
        for n in (1, 2):
            # Deliberate: the gap between arrivals is the input under test (how long the
            # writer lingers for other sessions), not a wait for something to happen.
            await asyncio.sleep(gap)
            futures.append(committer.submit(_accepted(n)))
        assert sorted(await asyncio.gather(*futures)) == [1, 2, 3]
        return settled[0]

    try:
        waited = asyncio.run(run())
    finally:
        committer.close()
    return inbox.batches, waited


def test_group_commit_lingers_for_messages_of_other_open_sessions() -> None:
    batches, _ = _submit_staggered(open_sessions=3, gap=0.05, linger=2.0)
    assert batches == [3]


def test_group_commit_never_lingers_for_a_lone_session() -> None:
    batches, waited = _submit_staggered(open_sessions=1, gap=0.2, linger=5.0)
    assert batches == [1, 1, 1]
    assert waited < 1.0


def test_group_commit_lingers_no_longer_than_its_limit() -> None:
    batches, waited = _submit_staggered(open_sessions=10, gap=0.6, linger=0.2)
    assert batches == [1, 1, 1]
    assert 0.15 < waited < 0.55
