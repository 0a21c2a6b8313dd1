"""Logs of an end-to-end run contain no tokens and no bodies (PRIV-08).

Real processes on 127.0.0.1, each writing stdout and stderr to its own log file: the
gateway with the one-click unsubscribe endpoint, a Celery worker at ``--loglevel DEBUG``
on the embedded filesystem broker, the one-shot commands (``digest send-due``, ``ask
send``, ``ask tick``), and a recording relay. The gateway and the one-shot commands run
with Python logging switched on at DEBUG (what an operator who turns logging on gets;
``mailgate serve`` itself installs no handler), so every redaction path in them is live.

The run exercises every kind of token Mailgate issues: a post fanned out (``reply+`` in
Reply-To, ``bounces+`` VERP senders, ``/u/`` unsubscribe links), a reply through a
reply address, a DSN to a VERP address, a privileged post held with a ``confirm+`` notice
and its confirmation, a digest (``digest+``, per-item ``reply+``), a question asked and
answered by reply, GET, POST and a forged token at ``/u/``, and a forged reply address
refused at RCPT. The tokens are read back from what the relay received, so the test
checks the tokens actually issued; none may appear in any log, and no log line may look
like a token address or link at all.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import smtplib
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import select, update

from mailgate.db import unit_of_work
from mailgate.models import Person, RawMessage, RawStatus
from tests.conftest import DOMAIN, SinkMessage, free_port
from tests.worker.conftest import port_open, started_processes, wait_for

ALICE, BOB, CAROL, DAN = (f"{n}@corp.example" for n in ("alice", "bob", "carol", "dan"))
CEO = "ceo@corp.example"
BASE_URL = "https://mailgate.corp.example"
# Any token-bearing address or link, as a log line would show it unredacted.
TOKEN_ADDRESS = re.compile(r"(reply|bounces|confirm|digest)\+([a-z2-7]{16,})@", re.IGNORECASE)
TOKEN_LINK = re.compile(r"/u/([a-z2-7]{16,})", re.IGNORECASE)
FORGED = "a" * 40  # well-formed base32, never signed: the endpoint must refuse it
# Sentences only the bodies contain: none may reach a log either.
BODIES = (
    "The quarterly plan ships on the ninth.",
    "Ninth works, but the migration needs a freeze.",
    "Everyone: the office moves next month.",
    "Lisbon in spring, please.",
)
# Python logging on from the first line, at DEBUG, to stderr (the process's log file).
LOGGED = (
    "import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, "
    "format='%(asctime)s %(levelname)s %(name)s %(message)s'); "
    "from mailgate.cli import main; main(sys.argv[1:])"
)

pytestmark = [pytest.mark.one_engine, pytest.mark.timeout(240)]


@pytest.fixture
def logged() -> Iterator[Callable[[list[str], dict[str, str], Path], subprocess.Popen[bytes]]]:
    """Start ``mailgate ARGS`` with logging at DEBUG, in its own process group, its
    output in ``log``; ended by PID at teardown."""
    with started_processes(["-c", LOGGED]) as start:
        yield start


def parsed(message: SinkMessage) -> EmailMessage:
    return email.message_from_bytes(message.data, policy=email.policy.default)


def text_of(message: SinkMessage) -> str:
    body = parsed(message).get_body(("plain",))
    return str(body.get_content()) if body is not None else ""


def tokens_in(message: SinkMessage) -> dict[str, set[str]]:
    """Every token a relayed message carries, by kind: envelope, headers, text parts."""
    msg = parsed(message)
    texts = [message.mail_from, *(str(value) for _, value in msg.items())]
    texts += [str(p.get_content()) for p in msg.walk() if p.get_content_maintype() == "text"]
    found: dict[str, set[str]] = {}
    for text in texts:
        for kind, token in TOKEN_ADDRESS.findall(text):
            found.setdefault(kind.lower(), set()).add(token.lower())
        for token in TOKEN_LINK.findall(text):
            found.setdefault("unsubscribe", set()).add(token.lower())
    return found


def deliver(port: int, mail_from: str, rcpt: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(mail_from, [rcpt], raw)


def compose(sender: str, to: str, subject: str, body: str, **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{time.time_ns()}.{sender}>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def dsn(verp: str, failed: str, copy: bytes) -> bytes:
    """A Postfix-style DSN (RFC 3464) for a copy the recipient's server refused, returning
    the copy's header block as MTAs do (its Reply-To token included)."""
    head = (
        "From: MAILER-DAEMON@mx.corp.example (Mail Delivery System)\r\n"
        f"To: {verp}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{time.time_ns()}.dsn@mx.corp.example>\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="dsn-b"\r\n\r\n'
        "--dsn-b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is the mail system at host mx.corp.example.\r\n\r\n"
        f"<{failed}>: host mailstore.corp.example said: 550 5.1.1 User unknown\r\n\r\n"
        "--dsn-b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.corp.example\r\n\r\n"
        f"Final-Recipient: rfc822; {failed}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{failed}>: User unknown\r\n\r\n"
        "--dsn-b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    )
    headers = copy.split(b"\r\n\r\n", 1)[0]
    return head.encode() + headers + b"\r\n\r\n--dsn-b--\r\n"


def next_wednesday_noon(now: datetime) -> datetime:
    day = now.date() + timedelta(days=1)
    while day.weekday() != 2:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)


def test_logs_of_an_end_to_end_run_hold_no_tokens_or_bodies(
    directory, mailgate_env, session_factory, processes, logged, relay_sink, tmp_path
) -> None:
    directory.list("eng", name="Engineering", visibility="members")
    for address in (ALICE, BOB, CAROL):
        directory.member("eng", address, name=address.split("@")[0].title(), timezone="UTC")
    directory.member("eng", DAN, name="Dan", timezone="UTC", delivery="digest")
    directory.list("all", name="All staff", mandatory=True)  # privileged: posts need proof
    for address in (ALICE, BOB, CAROL, CEO):
        directory.member("all", address, timezone="UTC")
    directory.grant(CEO, "executive")
    with unit_of_work(session_factory) as s:  # Dan's digest is due at any hour of any day
        s.execute(update(Person).values(digest_hour=0, digest_weekdays_only=False))

    port, http_port = free_port(), free_port()
    env = {
        **mailgate_env,
        "MAILGATE_SMTP_PORT": str(port),
        "MAILGATE_HTTP_PORT": str(http_port),
        "MAILGATE_BASE_URL": BASE_URL,
        "MAILGATE_RELAY_URL": relay_sink.url,
        "MAILGATE_VERIFY_DKIM": "no",  # no DNS: the privileged post is simply unproven
        "PYTHONUNBUFFERED": "1",
    }
    gateway = logged(["serve"], env, tmp_path / "serve.log")
    worker = processes(
        ["worker", "--concurrency", "1", "--loglevel", "DEBUG"], env, tmp_path / "worker.log"
    )
    wait_for(lambda: port_open(port) and port_open(http_port), what="gateway and endpoint")

    def arrived(predicate: Callable[[SinkMessage], bool], what: str) -> list[SinkMessage]:
        def matching() -> list[SinkMessage]:
            return [m for m in list(relay_sink.messages) if predicate(m)]

        return cast(list[SinkMessage], wait_for(matching, timeout=60, what=what))

    def to(address: str, subject: str) -> Callable[[SinkMessage], bool]:
        return lambda m: m.rcpt_to == [address] and subject in str(parsed(m)["Subject"])

    def run(args: list[str], name: str) -> str:
        log = tmp_path / f"{name}.log"
        step = logged(args, env, log)
        assert step.wait(timeout=60) == 0, log.read_text()
        return log.read_text()

    # 1. A post, fanned out: reply tokens, VERP senders, unsubscribe links.
    deliver(port, ALICE, f"eng@{DOMAIN}", compose(ALICE, f"eng@{DOMAIN}", "Plan", BODIES[0]))
    (bob_copy,) = arrived(to(BOB, "[eng] Plan"), "Bob's copy")
    # 2. Bob replies through his reply address.
    bob_copy_msg = parsed(bob_copy)
    reply_to = bob_copy_msg["Reply-To"].addresses[0].addr_spec
    reply = compose(
        BOB, reply_to, "Re: [eng] Plan", BODIES[1], In_Reply_To=bob_copy_msg["Message-ID"]
    )
    deliver(port, BOB, reply_to, reply)
    (alice_copy,) = arrived(to(ALICE, "Re: [eng] Plan"), "the reply's copy to Alice")
    # 3. Alice's mailbox refuses that copy: a DSN to its VERP address.
    deliver(port, "", alice_copy.mail_from, dsn(alice_copy.mail_from, ALICE, alice_copy.data))
    # 4. A post to the mandatory list without proof of origin: held, confirm+ notice.
    deliver(port, BOB, f"all@{DOMAIN}", compose(BOB, f"all@{DOMAIN}", "Move", BODIES[2]))
    (notice,) = arrived(
        lambda m: parsed(m)["X-Mailgate-Notice"] == "held-for-authentication", "the notice"
    )
    confirm = parsed(notice)["Reply-To"].addresses[0].addr_spec
    assert confirm.startswith("confirm+"), parsed(notice)["Reply-To"]
    deliver(port, BOB, confirm, compose(BOB, confirm, "Re: Move", "Yes, it was me."))
    arrived(to(CEO, "[all] Move"), "the released post")
    # 5. A digest for Dan, who reads eng by digest.
    assert "queued digests for 1 member" in run(["digest", "send-due"], "digest-send-due")
    arrived(lambda m: m.rcpt_to == [DAN], "Dan's digest")
    # 6. A question to eng, asked at its members' local time, answered by reply.
    run(["ask", "send", "--from", CEO, "--to", "eng", "Where should the offsite be?"], "ask")
    run(["ask", "tick", "--now", next_wednesday_noon(datetime.now(UTC)).isoformat()], "tick")
    (ask,) = arrived(
        lambda m: m.rcpt_to == [CAROL] and parsed(m)["X-Mailgate-Kind"] == "ask", "the ask"
    )
    ask_msg = parsed(ask)
    answer_to = ask_msg["Reply-To"].addresses[0].addr_spec
    answer = compose(CAROL, answer_to, "Re: Offsite", BODIES[3], In_Reply_To=ask_msg["Message-ID"])
    deliver(port, CAROL, answer_to, answer)
    arrived(lambda m: m.rcpt_to == [CEO] and BODIES[3] in text_of(m), "the answer's copy")
    # 7. The one-click endpoint: the confirmation page, the POST, and a forged token.
    link = next(u for u in bob_copy_msg["List-Unsubscribe"].split(",") if BASE_URL in u)
    local = link.strip(" <>").replace(BASE_URL, f"http://127.0.0.1:{http_port}")
    with urllib.request.urlopen(local, timeout=10) as page:
        assert page.status == 200
    form = urllib.request.Request(local, data=b"List-Unsubscribe=One-Click", method="POST")
    with urllib.request.urlopen(form, timeout=10) as page:
        assert b"You are unsubscribed" in page.read()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{http_port}/u/{FORGED}", timeout=10)
    assert refused.value.code == 400
    # 8. A forged reply address, refused at RCPT (the gateway checks the signature there).
    forged = f"reply+{FORGED}@{DOMAIN}"
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        deliver(port, CAROL, forged, compose(CAROL, forged, "Guess", "A guessed address."))

    # Everything inbound was handled; then stop both servers so their logs are complete.
    def handled() -> list[str]:
        with session_factory() as s:
            rows = s.execute(select(RawMessage.status, RawMessage.reason)).all()
        done = len(rows) == 6 and all(status is not RawStatus.RECEIVED for status, _ in rows)
        return sorted(reason for _, reason in rows) if done else []

    reasons = cast(list[str], wait_for(handled, timeout=60, what="every inbound message handled"))
    assert {"bounce", "released-posted"} <= set(reasons), reasons  # VERP and confirm paths
    for proc in (gateway, worker):
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)

    issued: dict[str, set[str]] = {}
    for message in list(relay_sink.messages):
        for kind, tokens in tokens_in(message).items():
            issued.setdefault(kind, set()).update(tokens)
    # The run really issued every kind (else the test below would prove little).
    assert sorted(issued) == ["bounces", "confirm", "digest", "reply", "unsubscribe"], issued
    every_token = set[str]().union(*issued.values()) | {FORGED}

    logs = {p.name: p.read_text(errors="replace") for p in sorted(tmp_path.glob("*.log"))}
    print(
        f"\nPRIV-08: {len(relay_sink.messages)} messages relayed; tokens issued: "
        + ", ".join(f"{k} {len(v)}" for k, v in sorted(issued.items()))
        + "; logs: "
        + ", ".join(f"{name} {len(text)} chars" for name, text in logs.items())
    )
    leaks = [
        f"{name}: {hit!r}"
        for name, text in logs.items()
        for hit in (
            [t for t in every_token if t in text.lower()]
            + [m.group(0) for m in TOKEN_ADDRESS.finditer(text)]
            + [m.group(0) for m in TOKEN_LINK.finditer(text)]
            + [b for b in BODIES if b in text]
        )
    ]
    assert leaks == [], "\n".join(leaks)
    # The logs are there and cover the run (else the check above proves nothing): each
    # task, ingest's verdicts, the endpoint's requests and the refused forged RCPT.
    assert "mailgate.send_question_mails" in logs["worker.log"]
    assert re.search(r"raw \d+: processed \(posted\)", logs["worker.log"])
    assert "unsubscribe POST /u/… 200 removed" in logs["serve.log"]
    assert "refused RCPT reply+…@" in logs["serve.log"]
