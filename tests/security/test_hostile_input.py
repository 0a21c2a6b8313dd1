"""Hostile input end to end: each attack is refused or held with the right code, and the
gateway keeps serving afterwards (TEST-11; LIM-04, SMTP-11/12, FMT-04/09, SPOOF-02/03/05).

Every test talks to a real aiosmtpd gateway on 127.0.0.1 backed by a real database
(SQLite, and PostgreSQL in the second pass) and, where the attack is aimed past the
gateway, runs the ingest service on what was stored. After each refusal a normal message
must still get 250. ``tests/fixtures/crashers/`` holds every input that once crashed a
stage (most found by ``tests/security/fuzz_inspect.py``); each is replayed here through
``mailgate inspect`` and through the gateway and ingest.

No wall clock here: work on pathological input is bounded by memory (tracemalloc), by
the number of SQL statements an ingest runs, and by a generous ``pytest.mark.timeout``
(HANG, seconds) that only catches a hang; the cost of each stage on these inputs is
measured in bench/stages.py against a same-run baseline.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import email.utils
import importlib.metadata
import smtplib
import socket
import tracemalloc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from mailgate import replies
from mailgate.inbox import SqlInbox
from mailgate.ingest import run_ingest
from mailgate.models import Notice, Post, RawMessage, RawStatus
from mailgate.notices import compose_notice, deliver_notice
from mailgate.reading import inspect_message
from mailgate.smtp import Accepted, Limits, check_shape
from mailgate.trace import without_own_trace
from tests.conftest import DOMAIN, FIXTURES

ALICE = "alice@corp.example"
EVE = "eve@elsewhere.example"
CEO = "dana.whitfield@corp.example"
ATTACKER = "attacker@evil.example"
ENG = f"eng@{DOMAIN}"
ALL = f"all-staff@{DOMAIN}"
CRASHERS = FIXTURES / "crashers"
RELAY_ID = "mx.corp.example"  # the authserv-id ingest_context trusts
HANG = 30  # seconds: far above any honest run of one test here; only a hang gets there


# ---------------------------------------------------------------- helpers


def mail(
    *,
    sender: str = f"Alice Example <{ALICE}>",
    to: str = ENG,
    subject: str = "Quarterly numbers",
    body: str = "The numbers are in the shared folder.",
    message_id: str | None = None,
    headers: Sequence[str] = (),
    top: Sequence[str] = (),
) -> bytes:
    """A message as Thunderbird puts it on the wire; ``top`` goes above everything
    (where relays add trace fields), ``headers`` after the usual fields."""
    lines = [
        *top,
        "Date: Tue, 14 May 2024 09:12:33 +0200",
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Message-ID: <{message_id or email.utils.make_msgid(domain='corp.example')[1:-1]}>",
        *headers,
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=UTF-8; format=flowed",
        "Content-Transfer-Encoding: 8bit",
        "User-Agent: Mozilla Thunderbird",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n") + "\r\n").encode()


@contextmanager
def client(gw: Any) -> Iterator[smtplib.SMTP]:
    smtp: smtplib.SMTP = gw.smtp()
    try:
        assert smtp.ehlo("mx1.corp.example")[0] == 250
        yield smtp
    finally:
        try:
            smtp.quit()
        except smtplib.SMTPServerDisconnected:
            smtp.close()


def send(
    gw: Any, raw: bytes, *, mail_from: str = ALICE, rcpt: str = ENG, options: Sequence[str] = ()
) -> str:
    """One transaction on a fresh connection; the reply to the final dot as one line."""
    with client(gw) as smtp:
        assert smtp.mail(mail_from, list(options))[0] == 250
        assert smtp.rcpt(rcpt)[0] == 250
        code, text = smtp.data(raw)
    return f"{code} {text.decode()}"


def assert_still_serving(gw: Any) -> None:
    reply = send(gw, mail(subject="Still there?", message_id="still-there@corp.example"))
    assert reply.startswith("250 2.0.0 OK: queued as "), reply


def stored_count(session_factory: Any) -> int:
    with session_factory() as s:
        return int(s.scalar(select(func.count()).select_from(RawMessage)) or 0)


def raw_row(session_factory: Any, raw_id: int) -> RawMessage:
    with session_factory() as s:
        return s.get_one(RawMessage, raw_id)


def posts(session_factory: Any) -> list[Post]:
    with session_factory() as s:
        return list(s.scalars(select(Post).order_by(Post.id)))


def notices(session_factory: Any) -> list[Notice]:
    with session_factory() as s:
        return list(s.scalars(select(Notice).order_by(Notice.id)))


@contextmanager
def sql_statements(session_factory: Any) -> Iterator[list[tuple[str, int]]]:
    """(statement, number of parameters) of everything run on the database meanwhile."""
    with session_factory() as s:
        engine = s.get_bind()
    seen: list[tuple[str, int]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        seen.append((statement, len(parameters or ())))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


class RawClient:
    """A byte-level SMTP client, for what smtplib will not send (smuggling, pipelining)."""

    def __init__(self, gw: Any) -> None:
        self.sock = socket.create_connection((gw.host, gw.port), timeout=5)
        self.buffer = b""
        self.greeting = self.reply()

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        """One reply (the last line of a multi-line one)."""
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed; buffered {self.buffer!r}")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            if line[3:4] != b"-":
                return line.decode()

    def close(self) -> None:
        self.sock.close()


class RecordingMailer:
    """The notice mailer port: keeps what would go to the relay."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str], bytes]] = []

    def send(self, mail_from: str, recipients: Sequence[str], message: bytes) -> None:
        self.sent.append((mail_from, list(recipients), message))


def send_notices(session_factory: Any) -> RecordingMailer:
    """Run the notice task for every queued notice, as the worker would."""
    from mailgate.db import unit_of_work

    mailer = RecordingMailer()
    for notice in notices(session_factory):
        with unit_of_work(session_factory) as s:
            deliver_notice(s, notice.id, mailer, DOMAIN)
    return mailer


@pytest.fixture
def lists(directory: Any) -> Any:
    """eng (members-only; alice), all-staff (announce-only; the CEO owns it)."""
    directory.list("eng", name="Engineering", visibility="members")
    directory.member("eng", ALICE, name="Alice Example")
    directory.list("all-staff", name="All staff", posting="announce", mandatory=True)
    directory.member("all-staff", CEO, name="Dana Whitfield", role="owner")
    directory.member("all-staff", ALICE)
    return directory


@pytest.fixture
def deliver(gateway: Any, session_factory: Any, ingest_context: Any) -> Any:
    """Through the real gateway, then the ingest service on what it stored."""

    def run(raw: bytes, *, rcpt: str = ENG, mail_from: str = ALICE) -> int:
        before = len(gateway.published)
        reply = send(gateway, raw, mail_from=mail_from, rcpt=rcpt)
        assert reply.startswith("250 "), reply
        (raw_id,) = gateway.published_after(before)
        run_ingest(session_factory, raw_id, ingest_context)
        return raw_id

    return run


# ---------------------------------------------------------------- MIME bombs (LIM-04)


def many_parts(n: int) -> bytes:
    parts = b"".join(b"--p\r\n\r\n%d\r\n" % i for i in range(n))
    return (
        b"From: alice@corp.example\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + parts + b"--p--\r\n"
    )


def nested(depth: int) -> bytes:
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    return b"From: alice@corp.example\r\nSubject: nesting\r\n" + head + b"\r\ndeep\r\n"


BOMBS = [
    pytest.param(many_parts(100_000), "too many parts", id="100k-parts"),
    pytest.param(nested(1_000), "too deeply nested", id="1000-levels"),
]


@pytest.mark.parametrize(("raw", "detail"), BOMBS)
def test_mime_bomb_is_refused_at_data(
    gateway: Any, lists: Any, session_factory: Any, raw: bytes, detail: str
) -> None:
    assert send(gateway, raw) == replies.MIME_TOO_COMPLEX.format(detail=detail)
    assert replies.MIME_TOO_COMPLEX.startswith("554 5.6.0 ")
    assert stored_count(session_factory) == 0
    assert_still_serving(gateway)


@pytest.mark.timeout(HANG)
@pytest.mark.parametrize(("raw", "detail"), BOMBS)
def test_mime_bomb_shape_check_is_small(raw: bytes, detail: str) -> None:
    """LIM-04: decided using far less than 100 MB, before any parser runs (its time:
    bench/stages.py, against one scan of the same bytes)."""
    assert len(raw) >= 50_000
    tracemalloc.start()
    try:
        refusal = check_shape(raw, Limits())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refusal == replies.MIME_TOO_COMPLEX.format(detail=detail)
    assert peak < 100 * 1024 * 1024


def test_ten_megabyte_header_is_refused_by_the_header_limit(
    gateway_factory: Any, lists: Any, session_factory: Any
) -> None:
    # A size limit above 10 MB, so that it is the header limit that answers.
    gw = gateway_factory(limits=Limits(max_message_size=12_000_000))
    filler = [f"X-Filler-{i:05d}: " + "a" * 980 for i in range(10_700)]
    raw = mail(headers=filler)
    assert len(raw) > 10 * 1024 * 1024
    assert send(gw, raw) == replies.HEADERS_TOO_BIG.format(limit=Limits().max_header_bytes)
    assert stored_count(session_factory) == 0
    assert_still_serving(gw)


def test_ten_megabyte_message_is_refused_at_mail_by_its_size(gateway: Any, lists: Any) -> None:
    with client(gateway) as smtp:
        code, text = smtp.mail(ALICE, [f"SIZE={10 * 1024 * 1024 + 4096}"])
    assert f"{code} {text.decode()}" == replies.TOO_BIG.format(limit=Limits().max_message_size)
    assert_still_serving(gateway)


# ---------------------------------------------------------------- SMTP smuggling (SMTP-12)


@pytest.mark.parametrize("fake_end", [b"\n.\r\n", b"\r.\r\n"], ids=["LF.CRLF", "CR.CRLF"])
def test_smuggled_second_message_stays_inside_the_first(
    gateway: Any, lists: Any, session_factory: Any, fake_end: bytes
) -> None:
    smuggled = (
        b"MAIL FROM:<" + CEO.encode() + b">\r\nRCPT TO:<" + ALL.encode() + b">\r\nDATA\r\n"
        b"From: " + CEO.encode() + b"\r\nSubject: Payroll change\r\n\r\nwire the money\r\n"
    )
    conn = RawClient(gateway)
    try:
        conn.write(b"EHLO mx1.corp.example\r\n")
        assert conn.reply().startswith("250 ")
        conn.write(f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{ENG}>\r\nDATA\r\n".encode())
        assert [conn.reply() for _ in range(3)][2].startswith("354 ")
        conn.write(mail(body="An innocent note.")[:-2] + fake_end + smuggled + b".\r\n")
        final = conn.reply()
        conn.write(b"QUIT\r\n")
        assert conn.reply().startswith("221 ")
    finally:
        conn.close()
    assert final.startswith("250 2.0.0 OK: queued as "), final
    with session_factory() as s:
        (row,) = s.scalars(select(RawMessage)).all()
    assert row.rcpt_to == [ENG] and row.mail_from == ALICE
    assert b"MAIL FROM:<" + CEO.encode() + b">" in row.raw
    assert b"wire the money" in row.raw
    assert_still_serving(gateway)


# ---------------------------------------------------------------- STARTTLS (SMTP-11)


def test_starttls_is_not_offered_and_refused(gateway: Any, lists: Any) -> None:
    """SMTP-11 is not implemented: no STARTTLS in EHLO, and the command is refused.

    aiosmtpd without a TLS context answers ``454 TLS not available``; a pipelined
    command after it runs in the same cleartext session, in order, exactly as it would
    without the STARTTLS: there is no handshake to smuggle it across.
    """
    with client(gateway) as smtp:
        assert "starttls" not in smtp.esmtp_features
    conn = RawClient(gateway)
    try:
        conn.write(b"EHLO mx1.corp.example\r\n")
        assert conn.reply().startswith("250 ")
        conn.write(f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{ENG}>\r\n".encode())
        assert [conn.reply(), conn.reply()] == ["250 2.1.0 OK", "250 2.1.5 OK"]
        # One write, as in the injection attack (CVE-2011-0411 and the aiosmtpd 1.4.6 fix).
        conn.write(f"STARTTLS\r\nRSET\r\nMAIL FROM:<{ALICE}>\r\n".encode())
        starttls, rset, again = conn.reply(), conn.reply(), conn.reply()
        conn.write(b"QUIT\r\n")
        assert conn.reply().startswith("221 ")
    finally:
        conn.close()
    assert starttls[:1] in "45" and not starttls.startswith("220"), starttls
    assert starttls.startswith(("454 ", "502 ")), starttls
    assert rset == "250 OK"
    assert again == "250 2.1.0 OK"  # not "nested MAIL": the RSET reset this same session
    assert_still_serving(gateway)


def test_installed_aiosmtpd_has_the_smuggling_and_starttls_fixes() -> None:
    """SMTP-11/12: 1.4.5 fixed smuggling (GHSA-pr2m-px7j-xg65), 1.4.6 the pre-TLS buffer."""
    version = importlib.metadata.version("aiosmtpd")
    parts = tuple(int(p) for p in version.split(".")[:3] if p.isdigit())
    assert parts >= (1, 4, 6), version


# ---------------------------------------------------------------- header injection (FMT-09)


INJECTING_SUBJECT = "=?utf-8?q?hi=0D=0ABcc:_x@evil.example?="


def assert_clean_notice(data: bytes, to: str) -> email.message.EmailMessage:
    """One notice as it goes to the relay: CRLF only, no injected field, one recipient."""
    head, _, _ = data.partition(b"\r\n\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    names = [
        line.split(b":", 1)[0].lower() for line in head.split(b"\r\n") if line[:1] not in b" \t"
    ]
    assert b"bcc" not in names and b"cc" not in names
    assert len(names) == len(set(names))  # no field twice
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert not msg.defects
    assert msg.get_all("To") == [to]
    return msg


def test_subject_with_encoded_crlf_adds_no_header_to_the_notice(
    lists: Any, deliver: Any, session_factory: Any
) -> None:
    raw = mail(sender=EVE, subject=INJECTING_SUBJECT)
    raw_id = deliver(raw, mail_from=EVE)
    assert raw_row(session_factory, raw_id).reason == "unknown-sender"
    (notice,) = notices(session_factory)
    assert "\n" in notice.context["subject"]  # the decoded subject really has the CR/LF
    (sent,) = send_notices(session_factory).sent
    assert sent[:2] == ("", [EVE])
    msg = assert_clean_notice(sent[2], EVE)
    assert "Bcc" not in msg and "x@evil.example" not in str(msg["Subject"])


@pytest.mark.parametrize(
    ("subject", "message_id", "thread"),
    [
        pytest.param(
            "hi\r\nBcc: x@evil.example", "ok@corp.example", "<ok@corp.example>", id="subject-crlf"
        ),
        pytest.param(
            "hi\nBcc: x@evil.example", "ok@corp.example", "<ok@corp.example>", id="subject-lf"
        ),
        pytest.param(
            "hi\rBcc: x@evil.example", "ok@corp.example", "<ok@corp.example>", id="subject-cr"
        ),
        # An id with a line break in it is no id: the notice is simply not threaded.
        pytest.param("fine", "ok@corp.example>\r\nBcc: x@evil.example", None, id="message-id-crlf"),
    ],
)
def test_compose_notice_never_emits_an_injected_field(
    subject: str, message_id: str, thread: str | None
) -> None:
    """FMT-09: the notice is built — a hostile subject must not make the sender's
    explanation unsendable (a ValueError here fails the task on every retry) — and no
    field is injected into it."""
    stored = {"subject": subject, "message_id": message_id, "list_slug": "eng"}
    msg = compose_notice(
        notice_id=7, reason="not-a-member", address=EVE, stored=stored, domain=DOMAIN
    )
    sent = assert_clean_notice(msg.as_bytes(), EVE)
    assert sent["Subject"] == "Your message was not posted: you are not a member of eng"
    assert (sent["In-Reply-To"], sent["References"]) == (thread, thread)


def test_folded_bare_message_id_does_not_break_the_notice(
    lists: Any, deliver: Any, session_factory: Any
) -> None:
    """A bracket-less Message-ID folded over two lines once kept its CRLF and made the
    notice unsendable (ValueError on every retry)."""
    raw = mail(sender=EVE).replace(b"Message-ID: <", b"Message-ID: abc\r\n def<", 1)
    deliver(raw, mail_from=EVE)
    (sent,) = send_notices(session_factory).sent
    assert_clean_notice(sent[2], EVE)


# ---------------------------------------------------------------- From confusions (SPOOF-05)


@pytest.mark.parametrize(
    "from_value",
    [
        "alice@corp.example <attacker@evil.example>",
        "alice@corp.example)<attacker@evil.example>",
        '"alice@corp.example" <attacker@evil.example>',
        "alice@corp.example, attacker@evil.example",
    ],
    ids=["address-then-angle", "paren-then-angle", "quoted-address-name", "two-addresses"],
)
def test_from_confusions_are_refused_as_invalid(
    lists: Any, deliver: Any, session_factory: Any, from_value: str
) -> None:
    raw_id = deliver(mail(sender=from_value), mail_from=ATTACKER)
    row = raw_row(session_factory, raw_id)
    assert (row.status, row.reason) == (RawStatus.REJECTED, "reject-invalid")
    assert row.explanation["from"] is None and row.explanation["from_error"]
    assert posts(session_factory) == []
    # The explanation goes to the envelope sender, never to an address read from From.
    assert [(n.address, n.reason) for n in notices(session_factory)] == [
        (ATTACKER, "reject-invalid")
    ]


# ---------------------------------------------------------------- forged origin (SPOOF-02/03)


def relay_trace(results: str) -> list[str]:
    """What a Postfix relay with OpenDKIM/OpenDMARC milters puts on top of a message."""
    return [
        f"Authentication-Results: {RELAY_ID}; {results}",
        "Received: from mail-out.corp.example (smtp.evil.example [203.0.113.66])\r\n"
        f"\tby {RELAY_ID} (Postfix) with ESMTPS id 4VfG2k1XyZz9sTq\r\n"
        f"\tfor <{ALL}>; Tue, 14 May 2024 09:12:03 +0000 (UTC)",
    ]


FORGED_PASS = (
    f"Authentication-Results: {RELAY_ID}; dkim=pass header.d=corp.example;"
    " dmarc=pass header.from=corp.example"
)
GATEWAY_RECEIVED = (
    f"Received: from {RELAY_ID} ({RELAY_ID} [10.20.0.25])\r\n"
    f"\tby {DOMAIN} (Mailgate) with ESMTPS id 7f3a9c; Tue, 14 May 2024 09:12:04 +0000"
)


def assert_held_for_the_ceo(session_factory: Any, raw_id: int) -> None:
    row = raw_row(session_factory, raw_id)
    assert (row.status, row.reason) == (RawStatus.HELD, "held-for-authentication")
    assert posts(session_factory) == []
    assert [(n.address, n.reason) for n in notices(session_factory)] == [
        (CEO, "held-for-authentication")
    ]
    (sent,) = send_notices(session_factory).sent
    assert sent[1] == [CEO]
    msg = assert_clean_notice(sent[2], CEO)
    assert str(msg["Reply-To"]).startswith("confirm+")  # the confirmation, not the attacker
    assert ATTACKER not in sent[2].decode("ascii", "replace")


def test_forged_pass_below_the_real_fail_is_held(
    lists: Any, deliver: Any, session_factory: Any
) -> None:
    """The captured spoof: the relay's dmarc=fail on top, a forged dmarc=pass lower down."""
    raw = (FIXTURES / "mail" / "auth-postfix-forged-pass-below-real-fail.eml").read_bytes()
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    raw_id = deliver(raw, rcpt=ALL, mail_from=CEO)
    assert_held_for_the_ceo(session_factory, raw_id)


@pytest.mark.parametrize(
    "top",
    [
        pytest.param(
            [GATEWAY_RECEIVED, *relay_trace("spf=softfail smtp.mailfrom=corp.example")],
            id="with-gateway-received",
        ),
        pytest.param(
            relay_trace("spf=softfail smtp.mailfrom=corp.example"),
            id="postfix-layout-relay-no-dmarc",
        ),
        pytest.param(
            relay_trace("dmarc=none header.from=corp.example"),
            id="postfix-layout-relay-dmarc-none",
        ),
    ],
)
def test_forged_authentication_results_under_the_relay_are_ignored(
    lists: Any, deliver: Any, session_factory: Any, top: list[str]
) -> None:
    forged = FORGED_PASS
    if "dmarc=none" in top[0]:
        forged = f"Authentication-Results: {RELAY_ID}; dkim=pass header.d=corp.example"
    raw = mail(
        sender=f"Dana Whitfield <{CEO}>",
        to=ALL,
        subject="Payroll provider change",
        body="Please update your bank details today.",
        top=[*top, forged],
    )
    raw_id = deliver(raw, rcpt=ALL, mail_from=CEO)
    assert_held_for_the_ceo(session_factory, raw_id)


def test_forged_executive_post_is_held_and_confirmed_with_the_real_ceo(
    lists: Any, deliver: Any, session_factory: Any
) -> None:
    """SPOOF-03: no Authentication-Results, From the CEO, Reply-To and envelope the attacker."""
    raw = mail(
        sender=f"Dana Whitfield <{CEO}>",
        to=ALL,
        subject="Urgent: gift cards",
        body="Buy gift cards and reply with the codes.",
        headers=[f"Reply-To: {ATTACKER}"],
    )
    raw_id = deliver(raw, rcpt=ALL, mail_from=ATTACKER)
    assert_held_for_the_ceo(session_factory, raw_id)


# ---------------------------------------------------------------- odd but harmless (FMT-04)


def test_broken_message_id_is_stored_and_processed(
    lists: Any, deliver: Any, session_factory: Any
) -> None:
    """FMT-04: ``<[b3-JF=@example.com]>`` makes policy.default raise on 3.11.7."""
    raw = mail(message_id="[b3-JF=@example.com]")
    raw_id = deliver(raw)
    row = raw_row(session_factory, raw_id)
    assert without_own_trace(row.raw) == raw
    assert "[b3-JF=@example.com]" in row.message_id
    assert row.status is RawStatus.PROCESSED
    (post,) = posts(session_factory)
    assert post.message_id == "[b3-JF=@example.com]"


TEXT = "The numbers are in the shared folder."
SUBJECT = "Quarterly numbers"


@pytest.mark.parametrize(
    ("raw", "text", "subject", "message_id"),
    [
        # NUL is stored as U+FFFD (PostgreSQL refuses NUL in text); a bare CR is a line end.
        pytest.param(
            mail(body="before\x00after\rbare CR\rline two\nend"),
            "before\ufffdafter\nbare CR\nline two\nend",
            SUBJECT,
            None,
            id="nul-and-bare-cr-in-body",
        ),
        pytest.param(
            mail(body="bare CR\rline two\nend"),
            "bare CR\nline two\nend",
            SUBJECT,
            None,
            id="bare-cr-in-body",
        ),
        pytest.param(
            mail(subject="Quarterly\x00numbers"),
            TEXT,
            "Quarterly\ufffdnumbers",
            None,
            id="nul-in-subject",
        ),
        pytest.param(
            mail(message_id="nul\x00id@corp.example"),
            TEXT,
            SUBJECT,
            "nul\ufffdid@corp.example",
            id="nul-in-message-id",
        ),
    ],
)
def test_nul_bytes_and_bare_carriage_returns_are_stored_and_processed(
    lists: Any,
    gateway: Any,
    session_factory: Any,
    ingest_context: Any,
    raw: bytes,
    text: str,
    subject: str,
    message_id: str | None,
) -> None:
    conn = RawClient(gateway)  # smtplib would rewrite the bare CRs
    try:
        conn.write(
            f"EHLO mx1.corp.example\r\nMAIL FROM:<{ALICE}>\r\nRCPT TO:<{ENG}>\r\nDATA\r\n".encode()
        )
        assert [conn.reply() for _ in range(4)][3].startswith("354 ")
        conn.write(raw + b".\r\n")
        final = conn.reply()
    finally:
        conn.close()
    assert final.startswith("250 2.0.0 OK: queued as "), final
    (raw_id,) = gateway.published_after(0)
    assert without_own_trace(raw_row(session_factory, raw_id).raw) == raw  # FMT-01: the exact bytes
    assert run_ingest(session_factory, raw_id, ingest_context) is RawStatus.PROCESSED
    (post,) = posts(session_factory)
    assert (post.text, post.subject) == (text, subject)
    if message_id is not None:
        assert post.message_id == message_id
    assert_still_serving(gateway)


# ---------------------------------------------------------------- deep threads


def store(session_factory: Any, raws: Sequence[bytes], rcpt: str = ENG) -> list[int]:
    """Commit messages as the gateway would (same port), without the SMTP dialogue."""
    inbox = SqlInbox(session_factory)
    accepted = [Accepted(raw, ALICE, (rcpt,), "127.0.0.1", "mx1.corp.example") for raw in raws]
    return inbox.store_many(accepted)


@pytest.mark.timeout(HANG)
def test_hundred_level_reply_chain_stays_one_discussion(
    lists: Any, session_factory: Any, ingest_context: Any
) -> None:
    """Each reply carries the whole ancestry in References, as mail clients write it;
    the work per reply does not grow with the depth (the same SQL statements at every
    level: the cited posts are one bounded lookup)."""
    ids: list[str] = []
    statements: list[int] = []
    start = datetime(2024, 5, 14, 9, 0, tzinfo=UTC)
    for depth in range(100):
        # A reply every ten minutes: a lively thread, below the loop guard's post rate.
        at = start + depth * timedelta(minutes=10)
        ctx = dataclasses.replace(ingest_context, now=lambda at=at: at)
        mid = f"chain-{depth:03d}@corp.example"
        headers = []
        if ids:
            refs = " ".join(f"<{i}>" for i in ids)
            headers = [f"In-Reply-To: <{ids[-1]}>", f"References: {refs}"]
        subject = "Re: " * min(depth, 1) + "Deep thread"
        (raw_id,) = store(session_factory, [mail(subject=subject, message_id=mid, headers=headers)])
        with sql_statements(session_factory) as seen:
            assert run_ingest(session_factory, raw_id, ctx) is RawStatus.PROCESSED
        statements.append(len(seen))
        ids.append(mid)
    chain = posts(session_factory)
    assert len(chain) == 100
    assert {p.discussion_id for p in chain} == {chain[0].discussion_id}
    assert all(child.parent_id == parent.id for parent, child in pairwise(chain))
    assert len(set(statements[1:])) == 1, statements  # every reply: the same statements


@pytest.mark.timeout(HANG)
def test_five_thousand_references_are_refused_and_hundreds_are_bounded(
    lists: Any, session_factory: Any, ingest_context: Any
) -> None:
    (root_id,) = store(session_factory, [mail(message_id="root-5k@corp.example")])
    run_ingest(session_factory, root_id, ingest_context)

    def reply_with(count: int) -> bytes:
        junk = [f"<junk-{i:05d}.{'x' * 20}@evil.example>" for i in range(count)]
        return mail(
            subject="Re: Quarterly numbers",
            headers=[
                "In-Reply-To: <root-5k@corp.example>",
                "References: " + "\r\n ".join(["<root-5k@corp.example>", *junk]),
            ],
        )

    # ~200 KB in one field: over the per-field cap, refused before any parser sees it.
    refusal = check_shape(reply_with(5_000), Limits())
    assert refusal is not None and refusal.startswith("552 5.3.4")
    raw = reply_with(300)  # ~12 KB: within the cap
    assert check_shape(raw, Limits()) is None
    inspected = inspect_message(raw, domain=DOMAIN, mail_from=ALICE)
    assert len(inspected["references"]) == 301
    # Bounded work: the same statements as a reply citing one post, and no statement
    # carries more than the 50 ids ingest looks up (plus its own few parameters).
    (plain_id, raw_id) = store(session_factory, [reply_with(0), raw])
    with sql_statements(session_factory) as plain:
        assert run_ingest(session_factory, plain_id, ingest_context) is RawStatus.PROCESSED
    with sql_statements(session_factory) as hostile:
        assert run_ingest(session_factory, raw_id, ingest_context) is RawStatus.PROCESSED
    assert len(hostile) == len(plain), ([sql for sql, _ in plain], [sql for sql, _ in hostile])
    assert max(n for _, n in hostile) <= 50 + 16
    root, first, reply = posts(session_factory)
    assert {first.parent_id, reply.parent_id} == {root.id}
    assert {first.discussion_id, reply.discussion_id} == {root.discussion_id}


@pytest.mark.timeout(HANG)
def test_one_huge_encoded_header_is_refused_and_the_largest_allowed_is_read() -> None:
    """LIM-04: email.header.decode_header is quadratic, so one field is capped (what
    the largest allowed field costs: bench/stages.py)."""
    huge = mail(subject=" ".join(["=?utf-8?q?a?="] * 15_000))  # 210 KB in one field
    refusal = check_shape(huge, Limits())
    assert refusal is not None and refusal.startswith("552 5.3.4")
    allowed = mail(subject=" ".join(["=?utf-8?q?a?="] * 1_100))  # ~15 KB: within the cap
    assert check_shape(allowed, Limits()) is None
    inspected = inspect_message(allowed, domain=DOMAIN, mail_from=ALICE)
    assert inspected["subject"] == "a" * 1_100  # adjacent encoded words join (RFC 2047)


# ---------------------------------------------------------------- crashers (TEST-08)


# Crashers whose fix is not in yet; each entry names the open bug. An entry that starts
# passing fails the run (strict), so remove it together with the fix.
OPEN_CRASHERS: dict[str, str] = {}


def crasher_params() -> list[Any]:
    params = []
    for path in sorted(CRASHERS.glob("*")):
        if not path.is_file() or path.name.startswith(".") or path.name == "README.md":
            continue
        marks = []
        if path.name in OPEN_CRASHERS:
            marks = [pytest.mark.xfail(strict=True, reason=OPEN_CRASHERS[path.name])]
        params.append(pytest.param(path, id=path.name, marks=marks))
    return params


def test_crashers_folder_is_not_empty() -> None:
    assert crasher_params(), "tests/fixtures/crashers/ lost its fixtures"


@pytest.mark.timeout(HANG)
@pytest.mark.parametrize("path", crasher_params())
def test_crasher_is_read_without_error(path: Path) -> None:
    raw = path.read_bytes()
    check_shape(raw, Limits())
    # Without an envelope sender inspect reads From too (envelope_sender_of): both paths.
    assert isinstance(inspect_message(raw, domain=DOMAIN)["class"], str)


@pytest.mark.parametrize("path", crasher_params())
def test_crasher_through_the_gateway_and_ingest(
    path: Path, lists: Any, gateway: Any, session_factory: Any, ingest_context: Any
) -> None:
    raw = path.read_bytes()
    before = len(gateway.published)
    with client(gateway) as smtp:
        assert smtp.mail(ALICE)[0] == 250
        assert smtp.rcpt(ENG)[0] == 250
        code, text = smtp.data(raw)
    if code == 250:
        (raw_id,) = gateway.published_after(before)
        status = run_ingest(session_factory, raw_id, ingest_context)
        assert status is not RawStatus.FAILED
    else:
        assert 500 <= code < 600, (code, text)  # refused by a named rule, not a 451 crash
    assert_still_serving(gateway)
