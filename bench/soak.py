"""Soak: many clients, one busy list, and an account of every message and every copy.

20 concurrent SMTP clients send 20,000 messages (``--messages``, ``--clients``) of
realistic sizes to one members-only list of 200 members (``--members``), through real
processes on 127.0.0.1: ``mailgate serve``, ``--workers`` ``mailgate worker`` processes,
``mailgate beat`` (the sweeper), a private ``redis-server`` on a free port (else the
filesystem broker) and a relay sink in its own process (Postfix's ``smtp-sink`` when
installed, else a no-op aiosmtpd server that counts). Some of the mail is deliberately
bad, as a real list's is: a few percent from people who are not members (in the
directory but not on the list → ``not-a-member``; strangers → ``unknown-sender``), each
refused after acceptance with one notice per address and reason, and about 1% resent
with the same Message-ID (an MTA retrying after a lost 250), which must become one post.

The clients behave like an MTA's queue: a 4xx (the gateway's per-sender rate limit, a
storage hiccup) is retried later, a 5xx is final, and a connection is closed before the
gateway's per-connection message limit. When every client is done, the benchmark waits
(with a deadline) until the database says everything is final: no raw message still
``received``, every post fanned out, every delivery row ``sent`` or ``failed``, every
notice sent. Then it prints the numbers and asserts the accounting:
accepted = posts + logged refusals + duplicates, one delivery row per post and member
(the author excepted), none pending, and the relay got at least every copy and notice.

Baselines measured in the same run, before the site starts: the same clients and the
same messages against a no-op aiosmtpd server (acceptance), and a bare ``smtplib`` loop
over one connection into a sink of the relay's kind (copies).

Note the scale: 20,000 posts x 199 copies is about 4 million copies: 45 minutes even at
1,500 copies/s, and hours at the 100-200 copies/s a shared 2-core machine gave the
whole site (SQLite). ``--messages 2000`` or ``--members 20`` make shorter runs (~400,000
copies each). With few members the gateway's per-sender limit (120 messages a minute
per address) caps the accept rate: the 4xx line shows it.

Run: ``.venv/bin/python bench/soak.py [--messages N] [--clients N] [--members N]
[--workers N] [--concurrency N] [--broker auto|redis|filesystem] [--database-url URL]``
(default SQLite in a temp dir; PostgreSQL with e.g.
``--database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres`` — it creates
and drops a scratch database ``soak_bench_<pid>`` and touches no other).
"""

from __future__ import annotations

import argparse
import base64
import heapq
import os
import random
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.fanout import (  # noqa: E402 - after the path insert, as a script
    DOMAIN,
    Sink,
    bare_rate,
    free_port,
    pick_sink,
    site_env,
    wait_port,
)

SECRET = "soak-secret-0123456789abcdef0123456789abcdef"
LIST = "eng"
LIST_ADDRESS = f"{LIST}@{DOMAIN}"
BASE_URL = "https://mg.corp.example"

# Shares of the traffic that is deliberately bad (of all messages).
DUPLICATE_SHARE = 0.01
NOT_MEMBER_SHARE = 0.02
UNKNOWN_SENDER_SHARE = 0.01
OUTSIDERS = 12  # people in the directory, on another list only
STRANGERS = 8  # addresses the directory does not know
SESSION_MESSAGES = 90  # the gateway allows 100 MAIL commands per connection
BASELINE_SAMPLE = 2000  # messages for each baseline measurement
EPOCH = datetime(2026, 3, 2, 8, tzinfo=UTC)  # Date of message 0; message n is n s later

FIRST = "Alice Bob Chiara Dmitri Eva Farid Grace Hiroshi Ines José Kofi Lena Mateo Nora".split()
LAST = "Adams Bauer Costa Dubois Eriksen Fischer García Hansen Ivanova Jensen Kowalski".split()
WORDS = (
    "deploy cache latency customer roadmap budget review launch metric incident quarter "
    "hiring design tests migration onboarding feedback release pricing support staging "
    "rollback runbook dashboard alert contract renewal invoice forecast partner backlog "
    "sprint retro interview offsite travel security audit compliance vendor licence"
).split()
TOPICS = (
    "Release plan for Friday",
    "Q3 budget review",
    "On-call rota changes",
    "Customer escalation: Acme",
    "Hiring loop for the platform team",
    "Office move in May",
    "Postmortem: search latency",
    "Pricing page experiment",
    "Security audit findings",
    "Offsite agenda",
)


# ---------------------------------------------------------------- the traffic (pure)


@dataclass(frozen=True)
class Planned:
    """One SMTP transaction to make. ``kind`` is what must become of it:
    ``post``, ``duplicate`` (same bytes as an earlier post), ``not-a-member`` or
    ``unknown-sender`` (the refusal reasons ingest logs)."""

    kind: str
    index: int  # the message's number; a duplicate carries its original's
    sender: str
    reply_to: int | None  # the index of the message this one answers


@dataclass(frozen=True)
class People:
    members: tuple[str, ...]  # the list's members; they post
    outsiders: tuple[str, ...]  # in the directory, not on the list
    strangers: tuple[str, ...]  # unknown to the directory


def people(members: int) -> People:
    return People(
        members=tuple(f"member{i:04d}@corp.example" for i in range(members)),
        outsiders=tuple(f"outsider{i:02d}@corp.example" for i in range(OUTSIDERS)),
        strangers=tuple(f"someone{i:02d}@partner.example" for i in range(STRANGERS)),
    )


def display_name(address: str) -> str:
    n = sum(address.encode())
    return f"{FIRST[n % len(FIRST)]} {LAST[(n // 7) % len(LAST)]}"


def plan_messages(count: int, who: People, *, seed: int = 7) -> list[Planned]:
    """The transactions in sending order: mostly posts (most of them replies to a
    recent post), and the deliberately bad shares above."""
    rng = random.Random(seed)
    plan: list[Planned] = []
    posts: list[Planned] = []
    for n in range(count):
        r = rng.random()
        if posts and r < DUPLICATE_SHARE:
            # Resent soon after the original, so the two often meet in the workers.
            original = rng.choice(posts[-40:])
            plan.append(Planned("duplicate", original.index, original.sender, original.reply_to))
            continue
        r -= DUPLICATE_SHARE
        if r < NOT_MEMBER_SHARE:
            plan.append(Planned("not-a-member", n, rng.choice(who.outsiders), None))
        elif r < NOT_MEMBER_SHARE + UNKNOWN_SENDER_SHARE:
            plan.append(Planned("unknown-sender", n, rng.choice(who.strangers), None))
        else:
            reply_to = rng.choice(posts[-200:]).index if posts and rng.random() < 0.7 else None
            post = Planned("post", n, rng.choice(who.members), reply_to)
            plan.append(post)
            posts.append(post)
    return plan


def expected_outcomes(plan: Sequence[Planned]) -> Counter[str]:
    return Counter(p.kind for p in plan)


class Corpus:
    """Text pieces built once, so rendering 20,000 messages costs string joins only."""

    def __init__(self, seed: int = 11) -> None:
        rng = random.Random(seed)
        self.paragraphs = [self._paragraph(rng, rng.randint(25, 90)) for _ in range(300)]
        self.quoted = ["\n".join("> " + line for line in p.splitlines()) for p in self.paragraphs]
        self.attachments = [
            base64.encodebytes(rng.randbytes(size)).decode().replace("\n", "\r\n")
            for size in (18_000, 35_000, 60_000)
        ]

    @staticmethod
    def _paragraph(rng: random.Random, words: int) -> str:
        chosen = [rng.choice(WORDS) for _ in range(words)]
        chosen[0] = chosen[0].capitalize()
        lines, line = [], ""
        for word in chosen:
            if len(line) + len(word) > 72:
                lines.append(line)
                line = ""
            line = f"{line} {word}".strip()
        return "\n".join([*lines, line + "."])


def message_id(index: int, sender: str) -> str:
    return f"<soak.{index}.{index * 2654435761 % 2**32:08x}@{sender.split('@', 1)[1]}>"


def subject_of(index: int) -> str:
    return f"{TOPICS[index % len(TOPICS)]} (#{index})"


def render(item: Planned, corpus: Corpus, plan_senders: Callable[[int], str]) -> bytes:
    """The bytes a mail client would send; the same for a message and its duplicate.

    Sizes: a short new text (1-4 paragraphs); replies quote up to ~12 KB of history;
    about half are multipart/alternative with an HTML part; 1 in 100 carries an
    attachment of 18-60 KB.
    """
    rng = random.Random(item.index * 7919 + 1)
    pick = corpus.paragraphs
    new = "\n\n".join(pick[rng.randrange(len(pick))] for _ in range(rng.randint(1, 4)))
    # People do not post the same text twice: without this line a sender drawing the same
    # corpus paragraph again is held by the loop guard (mailgate.loops) as a robot.
    new = f"Note {item.index}: {new}"
    name = display_name(item.sender)
    body = f"Hi all,\n\n{new}\n\nThanks,\n{name.split()[0]}\n"
    headers = [
        f"From: {formataddr((name, item.sender))}",  # RFC 2047 for the accented names
        f"To: Engineering <{LIST_ADDRESS}>",
        f"Date: {format_datetime(EPOCH + timedelta(seconds=item.index))}",
        f"Message-ID: {message_id(item.index, item.sender)}",
    ]
    if item.reply_to is not None:
        parent = message_id(item.reply_to, plan_senders(item.reply_to))
        headers += [
            f"Subject: Re: {subject_of(item.reply_to)}",
            f"In-Reply-To: {parent}",
            f"References: {parent}",
        ]
        quoted = "\n>\n".join(
            corpus.quoted[rng.randrange(len(pick))] for _ in range(rng.randint(1, 30))
        )
        body += (
            f"\nOn Mon, 2 Mar 2026 at 09:00, {display_name(plan_senders(item.reply_to))} wrote:\n"
        )
        body += quoted + "\n"
    else:
        headers.append(f"Subject: {subject_of(item.index)}")
    headers += ["MIME-Version: 1.0", "User-Agent: soak/1.0"]
    text_part = (
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + body.replace("\n", "\r\n")
    )
    part = text_part
    if rng.random() < 0.45:
        # Lines as the text's (SMTP allows 1,000 octets a line; clients wrap HTML too).
        html = "<div dir=ltr>" + new.replace("\n\n", "</div>\n<div>").replace("\n", "\r\n")
        b = f"alt{item.index}"
        part = (
            f'Content-Type: multipart/alternative; boundary="{b}"\r\n\r\n'
            f"--{b}\r\n{text_part}\r\n--{b}\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n"
            f"<html><body>{html}</div></body></html>\r\n--{b}--\r\n"
        )
    if rng.random() < 0.01:
        b = f"mix{item.index}"
        blob = corpus.attachments[rng.randrange(len(corpus.attachments))]
        part = (
            f'Content-Type: multipart/mixed; boundary="{b}"\r\n\r\n'
            f"--{b}\r\n{part}\r\n--{b}\r\n"
            'Content-Type: application/pdf; name="notes.pdf"\r\n'
            'Content-Disposition: attachment; filename="notes.pdf"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{blob}\r\n--{b}--\r\n"
        )
    return ("\r\n".join(headers) + "\r\n" + part).encode()


def renderer(plan: Sequence[Planned]) -> Callable[[Planned], bytes]:
    """``render`` bound to one plan (replies name their parent's sender)."""
    corpus = Corpus()
    senders = {p.index: p.sender for p in plan}

    def sender_of(index: int) -> str:
        return senders.get(index, "member0000@corp.example")

    return lambda item: render(item, corpus, sender_of)


# ---------------------------------------------------------------- the clients


@dataclass
class Tally:
    """What the clients saw. Every 4xx is retried later, as an MTA would."""

    accepted: int = 0  # 250 after DATA
    temporary: int = 0  # 4xx replies (each retried)
    deferred: int = 0  # messages that got at least one 4xx
    permanent: int = 0  # 5xx replies (final)
    dropped: int = 0  # connection errors (retried)
    unsent: int = 0  # still queued when the deadline came
    accepted_by_kind: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)  # non-250 replies, first words
    seconds: float = 0.0

    def merge(self, other: Tally) -> None:
        for name in ("accepted", "temporary", "deferred", "permanent", "dropped", "unsent"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.accepted_by_kind.update(other.accepted_by_kind)
        self.replies.update(other.replies)


def _transaction(smtp: smtplib.SMTP, sender: str, raw: bytes) -> tuple[int | None, str]:
    """One MAIL/RCPT/DATA; the reply code (None: the connection failed) and its text."""
    try:
        smtp.sendmail(sender, [LIST_ADDRESS], raw)
        return 250, ""
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = next(iter(exc.recipients.values()))
        return code, reply.decode(errors="replace")
    except smtplib.SMTPResponseException as exc:
        error = exc.smtp_error
        return exc.smtp_code, error.decode(errors="replace") if isinstance(error, bytes) else error
    except (smtplib.SMTPException, OSError) as exc:
        return None, type(exc).__name__


def _client(
    port: int, items: Sequence[Planned], to_bytes: Callable[[Planned], bytes], deadline: float
) -> Tally:
    tally = Tally()
    fresh = deque(items)
    retry: list[tuple[float, int, int, Planned]] = []  # (due, order, attempts, item)
    order = 0
    smtp: smtplib.SMTP | None = None
    used = 0
    try:
        while fresh or retry:
            now = time.monotonic()
            if now > deadline:
                tally.unsent += len(fresh) + len(retry)
                break
            if retry and retry[0][0] <= now:
                _, _, attempts, item = heapq.heappop(retry)
            elif fresh:
                attempts, item = 0, fresh.popleft()
            else:
                time.sleep(min(retry[0][0] - now, 1.0))
                continue
            if smtp is not None and used >= SESSION_MESSAGES:
                _close(smtp)
                smtp = None
            if smtp is None:
                smtp, used = _connect(port), 0
            code: int | None = None
            text = "connect"
            if smtp is not None:
                used += 1
                code, text = _transaction(smtp, item.sender, to_bytes(item))
            if code is not None and 200 <= code < 300:
                tally.accepted += 1
                tally.accepted_by_kind[item.kind] += 1
                continue
            if code is not None and code >= 500:
                tally.permanent += 1
                tally.replies[f"{code} {text[:60]}"] += 1
                continue
            # 4xx or a broken connection: the message waits in our queue and goes again.
            if code is None:
                tally.dropped += 1
            else:
                tally.temporary += 1
                tally.deferred += attempts == 0
            tally.replies[f"{code} {text[:60]}"] += 1
            if code is None or code == 421:
                smtp = None  # the server closed (or never opened) this connection
            delay = min(0.25 * 2**attempts, 8.0) * random.uniform(0.8, 1.2)
            order += 1
            heapq.heappush(retry, (time.monotonic() + delay, order, attempts + 1, item))
    finally:
        if smtp is not None:
            _close(smtp)
    return tally


def _connect(port: int) -> smtplib.SMTP | None:
    try:
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=120)
        smtp.ehlo("mx.corp.example")
    except (smtplib.SMTPException, OSError):
        return None
    return smtp


def _close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def send_all(
    port: int,
    plan: Sequence[Planned],
    *,
    clients: int,
    to_bytes: Callable[[Planned], bytes],
    timeout: float = 3600.0,
) -> Tally:
    """Send every planned message over ``clients`` concurrent connections (client k
    takes messages k, k+clients, …) and retry 4xx until ``timeout``."""
    deadline = time.monotonic() + timeout
    results: list[Tally] = [Tally() for _ in range(clients)]
    failures: list[BaseException] = []

    def run(k: int) -> None:
        try:
            results[k] = _client(port, plan[k::clients], to_bytes, deadline)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    total = Tally(seconds=time.perf_counter() - start)
    for r in results:
        total.merge(r)
    return total


# ---------------------------------------------------------------- the database's account


@dataclass(frozen=True)
class Accounting:
    """What the database says became of the mail."""

    raws: int  # stored by the gateway (each one a 250)
    by_status: dict[str, int]  # raw messages per status
    received: int  # raw messages not yet processed
    posts: int
    unfanned: int  # posts without delivery rows yet
    refusals: dict[str, int]  # rejected raw messages per logged reason
    duplicates: int  # raw messages absorbed as a duplicate of an existing post
    other: dict[str, int]  # "status/reason" of anything else (held, suppressed, failed…)
    deliveries: dict[str, int]  # delivery rows per status
    notices: int
    notices_sent: int
    noticed: int  # distinct (address, reason) among the notices

    @property
    def delivery_rows(self) -> int:
        return sum(self.deliveries.values())

    @property
    def pending(self) -> int:
        return self.deliveries.get("pending", 0) + self.deliveries.get("sending", 0)

    @property
    def settled(self) -> bool:
        return (
            self.received == 0
            and self.unfanned == 0
            and self.pending == 0
            and self.notices_sent == self.notices
        )


def read_accounting(factory: Any) -> Accounting:
    from sqlalchemy import exists, func, select

    from mailgate.models import DeliveryRecord, Notice, Post, RawMessage, RawStatus

    with factory() as s:
        rows = s.execute(
            select(RawMessage.status, RawMessage.reason, func.count()).group_by(
                RawMessage.status, RawMessage.reason
            )
        ).all()
        posts = int(s.scalar(select(func.count()).select_from(Post)) or 0)
        unfanned = int(
            s.scalar(
                select(func.count())
                .select_from(Post)
                .where(~exists().where(DeliveryRecord.post_id == Post.id))
            )
            or 0
        )
        deliveries = {
            str(status): int(n)
            for status, n in s.execute(
                select(DeliveryRecord.status, func.count()).group_by(DeliveryRecord.status)
            ).all()
        }
        notices = int(s.scalar(select(func.count()).select_from(Notice)) or 0)
        notices_sent = int(s.scalar(select(func.count()).where(Notice.sent_at.is_not(None))) or 0)
        noticed = len(s.execute(select(Notice.address, Notice.reason).distinct()).all())
    by_status: Counter[str] = Counter()
    refusals: Counter[str] = Counter()
    other: Counter[str] = Counter()
    duplicates = 0
    for status, reason, n in rows:
        by_status[str(status)] += n
        if status == RawStatus.REJECTED:
            refusals[reason] += n
        elif status == RawStatus.PROCESSED and reason == "duplicate":
            duplicates += n
        elif status not in (RawStatus.PROCESSED, RawStatus.RECEIVED):
            other[f"{status}/{reason}"] += n
    return Accounting(
        raws=sum(by_status.values()),
        by_status=dict(by_status),
        received=by_status.get(str(RawStatus.RECEIVED), 0),
        posts=posts,
        unfanned=unfanned,
        refusals=dict(refusals),
        duplicates=duplicates,
        other=dict(other),
        deliveries=deliveries,
        notices=notices,
        notices_sent=notices_sent,
        noticed=noticed,
    )


def wait_settled(
    factory: Any,
    *,
    timeout: float,
    interval: float = 1.0,
    progress: Callable[[Accounting], None] | None = None,
    progress_every: float = 30.0,
) -> tuple[Accounting, bool]:
    """Poll until everything is final or ``timeout`` passes: (last account, settled)."""
    deadline = time.monotonic() + timeout
    shown = time.monotonic()
    while True:
        account = read_accounting(factory)
        if account.settled or time.monotonic() > deadline:
            return account, account.settled
        if progress is not None and time.monotonic() - shown >= progress_every:
            progress(account)
            shown = time.monotonic()
        time.sleep(interval)


def check_accounting(
    account: Accounting,
    tally: Tally,
    plan: Sequence[Planned],
    members: int,
    *,
    relay_received: int | None = None,
) -> list[str]:
    """Everything that does not add up (empty when the run is clean)."""
    problems: list[str] = []
    want = expected_outcomes(plan)
    refused = sum(account.refusals.values())
    if tally.unsent or tally.permanent:
        problems.append(
            f"clients: {tally.unsent} never accepted, {tally.permanent} refused with 5xx "
            f"({dict(tally.replies)})"
        )
    if account.raws != tally.accepted:
        problems.append(f"{tally.accepted} replies of 250 but {account.raws} stored messages")
    if account.received:
        problems.append(f"{account.received} messages never processed")
    if account.raws != account.posts + refused + account.duplicates:
        problems.append(
            f"accepted {account.raws} != posts {account.posts} + refusals {refused} + "
            f"duplicates {account.duplicates}; other outcomes: {account.other}"
        )
    if account.posts != want["post"] or account.duplicates != want["duplicate"]:
        problems.append(
            f"posts {account.posts} (planned {want['post']}), duplicates "
            f"{account.duplicates} (planned {want['duplicate']})"
        )
    planned_refusals = {k: n for k in ("not-a-member", "unknown-sender") if (n := want[k])}
    if account.refusals != planned_refusals:
        problems.append(f"refusals {account.refusals}, planned {planned_refusals}")
    copies = account.posts * (members - 1)  # the author gets no copy of their own post
    if account.delivery_rows != copies:
        problems.append(f"{account.delivery_rows} delivery rows, want {copies}")
    if account.pending or account.deliveries.get("failed", 0):
        problems.append(f"delivery rows not all sent: {account.deliveries}")
    refused_senders = {(p.sender, p.kind) for p in plan if p.kind in planned_refusals}
    # One notice per address and reason a day (a run over midnight UTC sends two).
    if account.noticed != len(refused_senders) or account.notices_sent != account.notices:
        problems.append(
            f"notices {account.notices_sent} sent of {account.notices}, want one per refused "
            f"address and reason: {len(refused_senders)}"
        )
    if relay_received is not None:
        out = account.deliveries.get("sent", 0) + account.notices_sent
        if relay_received < out:
            problems.append(f"the relay received {relay_received} messages, rows say {out}")
    return problems


# ---------------------------------------------------------------- the site


def seed_directory(factory: Any, who: People) -> None:
    """The members-only list with its members, and another list for the outsiders."""
    from mailgate import directory
    from mailgate.db import unit_of_work

    with unit_of_work(factory) as session:
        directory.create_list(
            session, "soak", LIST, name="Engineering", visibility="members", posting="members"
        )
        directory.create_list(session, "soak", "sales", name="Sales", visibility="members")
        rows = [
            directory.ImportRow(i + 1, a, display_name(a), "UTC", "Engineering")
            for i, a in enumerate(who.members)
        ]
        directory.import_members(session, "soak", LIST, rows)
        rows = [
            directory.ImportRow(i + 1, a, display_name(a), "Europe/Berlin", "Sales")
            for i, a in enumerate(who.outsiders)
        ]
        directory.import_members(session, "soak", "sales", rows)


@contextmanager
def database(url: str | None, folder: Path) -> Iterator[str]:
    """A migrated scratch database: SQLite in ``folder``, or a new PostgreSQL database
    created (and dropped afterwards) beside the one ``url`` names, which is not used."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from mailgate.db import upgrade_database

    if url is None:
        scratch = f"sqlite:///{folder / 'mailgate.db'}"
        upgrade_database(scratch)
        yield scratch
        return
    name = f"soak_bench_{os.getpid()}"
    admin = create_engine(
        make_url(url).set(database="postgres").render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        scratch = make_url(url).set(database=name).render_as_string(hide_password=False)
        upgrade_database(scratch)
        yield scratch
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Service:
    """A process this benchmark started, in its own process group; ended by its PID."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                list(argv),
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        # SIGTERM to the process only: a Celery worker then shuts its pool down warmly
        # (the pool children would report a lost job if they got the signal too).
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # it and its children, still ours
            self.proc.wait(timeout=10)


def start_redis(folder: Path) -> tuple[Service, str]:
    """A private redis-server on a free port (no persistence); its broker URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(folder)]
    service = Service("redis", argv, dict(os.environ), folder / "redis.log")
    try:
        wait_port(port)
    except BaseException:
        service.stop()
        raise
    return service, f"redis://127.0.0.1:{port}/0"


def site_commands(workers: int, concurrency: int) -> dict[str, list[str]]:
    """``mailgate`` arguments of the gateway, the workers and the scheduler, as the
    Procfile runs them."""
    commands = {"serve": ["serve"], "beat": ["beat", "--loglevel", "WARNING"]}
    for n in range(workers):
        commands[f"worker{n}"] = ["worker", "--concurrency", str(concurrency)]
        commands[f"worker{n}"] += ["--loglevel", "WARNING"]
    return commands


# ---------------------------------------------------------------- baselines


def noop_accept_rate(
    plan: Sequence[Planned], to_bytes: Callable[[Planned], bytes], clients: int, tmp: Path
) -> float:
    """The same clients and messages against a no-op aiosmtpd server (own process)."""
    sink = Sink("aiosmtpd", tmp)
    try:
        send_all(sink.port, plan[: min(40, len(plan))], clients=2, to_bytes=to_bytes)  # warm
        tally = send_all(sink.port, plan, clients=clients, to_bytes=to_bytes)
    finally:
        sink.stop()
    if tally.accepted != len(plan):
        raise RuntimeError(f"the no-op server refused messages: {dict(tally.replies)}")
    return tally.accepted / tally.seconds


def bare_relay_rate(
    plan: Sequence[Planned], to_bytes: Callable[[Planned], bytes], sink_kind: str, tmp: Path
) -> float:
    """Pre-rendered messages of the soak's sizes, one connection, into the relay's kind
    of sink: what sending copies costs with nothing else to do."""
    copies = [(p.sender, "member0001@corp.example", to_bytes(p)) for p in plan]
    return bare_rate(sink_kind, tmp, copies)


# ---------------------------------------------------------------- main


@dataclass
class Site:
    port: int  # the gateway's SMTP port
    sink: Sink
    broker: str
    services: list[Service]

    def exited(self) -> list[str]:
        return [s.name for s in self.services if not s.alive()]


@contextmanager
def running_site(args: argparse.Namespace, url: str, tmp: Path) -> Iterator[Site]:
    """Broker, relay sink, gateway, workers and beat on ``url``; all stopped on exit."""
    services: list[Service] = []
    sink = None
    try:
        broker = "filesystem://"
        if args.broker != "filesystem":
            try:
                redis, broker = start_redis(tmp)
                services.append(redis)
            except FileNotFoundError:
                if args.broker == "redis":
                    raise SystemExit("redis-server not found") from None
        sink = Sink(args.sink_kind, tmp)
        port = free_port()
        # Made by the deployment: with Redis and a given secret nothing else creates it,
        # and beat keeps its schedule file there.
        (tmp / "site").mkdir()
        env = site_env(
            tmp / "site",
            MAILGATE_DATABASE_URL=url,
            MAILGATE_BROKER_URL=broker,
            MAILGATE_RELAY_URL=sink.url,
            MAILGATE_SECRET_KEY=SECRET,
            MAILGATE_SMTP_PORT=str(port),
            MAILGATE_BASE_URL=BASE_URL,
        )
        for name, args_ in site_commands(args.workers, args.concurrency).items():
            argv = [sys.executable, "-m", "mailgate.cli", *args_]
            services.append(Service(name, argv, env, tmp / f"{name}.log"))
        wait_port(port, 60)
        yield Site(port, sink, broker, services)
    finally:
        for service in reversed(services):
            service.stop()
        if sink is not None:
            sink.stop()


def drive(
    site: Site,
    factory: Any,
    plan: Sequence[Planned],
    to_bytes: Callable[[Planned], bytes],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Send the plan through the site and wait until it settles; progress on stderr."""
    start = time.perf_counter()

    def progress(a: Accounting) -> None:
        dead = site.exited()
        print(
            f"  … {time.perf_counter() - start:6.0f} s: {a.raws} stored, {a.received} "
            f"unprocessed, {a.posts} posts, rows {a.deliveries}, relay {site.sink.count()}"
            + (f"; EXITED: {dead}" if dead else ""),
            file=sys.stderr,
            flush=True,
        )

    stop = threading.Event()

    def monitor() -> None:
        while not stop.wait(30.0):
            progress(read_accounting(factory))

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    try:
        tally = send_all(
            site.port, plan, clients=args.clients, to_bytes=to_bytes, timeout=args.timeout
        )
    finally:
        stop.set()
        watcher.join()
    account, settled = wait_settled(factory, timeout=args.timeout, interval=2.0, progress=progress)
    return {
        "tally": tally,
        "account": account,
        "settled": settled,
        "settle_seconds": time.perf_counter() - start,
        "relay": site.sink.wait_for(account.deliveries.get("sent", 0) + account.notices_sent),
        "exited": site.exited(),
        "broker": "redis (private)" if site.broker.startswith("redis") else "filesystem",
    }


def soak(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from mailgate.db import make_engine, make_sessionmaker

    who = people(args.members)
    plan = plan_messages(args.messages, who)
    to_bytes = renderer(plan)
    sizes = [len(to_bytes(p)) for p in plan[:2000]]
    out: dict[str, Any] = {"plan": plan, "size": sum(sizes) / len(sizes), "max": max(sizes)}
    sample = plan[:BASELINE_SAMPLE]
    out["noop"] = noop_accept_rate(sample, to_bytes, args.clients, tmp)
    out["bare"] = bare_relay_rate(sample, to_bytes, args.sink_kind, tmp)

    began = time.perf_counter()
    with database(args.database_url, tmp) as url:
        out["url"] = url
        engine = make_engine(url)
        try:
            factory = make_sessionmaker(engine)
            seed_directory(factory, who)
            with running_site(args, url, tmp) as site:
                out.update(drive(site, factory, plan, to_bytes, args))
        finally:
            engine.dispose()
    out["wall"] = time.perf_counter() - began
    return out


def report(args: argparse.Namespace, r: dict[str, Any]) -> list[str]:
    tally: Tally = r["tally"]
    a: Accounting = r["account"]
    engine = "PostgreSQL" if r["url"].startswith("postgresql") else "SQLite (WAL)"
    sent, failed = a.deliveries.get("sent", 0), a.deliveries.get("failed", 0)
    refused = sum(a.refusals.values())
    accept_rate = tally.accepted / tally.seconds
    copy_rate = sent / r["settle_seconds"]
    print(
        f"soak benchmark on {engine}, broker {r['broker']}, relay sink {args.sink_kind} "
        "(own process, 127.0.0.1)"
    )
    print(
        f"{args.messages:,} messages from {args.clients} clients into a {args.members}-member "
        f"list (mean {r['size'] / 1000:.1f} KB, max {r['max'] / 1000:.0f} KB); "
        f"{args.workers} worker(s) x concurrency {args.concurrency} + beat"
    )
    print("clients:")
    print(f"  250 accepted                 : {tally.accepted:10,}")
    print(
        f"  4xx replies (retried)        : {tally.temporary:10,}  "
        f"({tally.deferred:,} messages deferred at least once)"
    )
    print(f"  5xx replies                  : {tally.permanent:10,}")
    print(f"  connection errors (retried)  : {tally.dropped:10,}")
    if tally.replies:
        print(f"  replies other than 250       : {dict(tally.replies.most_common(4))}")
    print("outcomes:")
    print(f"  posts                        : {a.posts:10,}")
    reasons = ", ".join(f"{k} {n:,}" for k, n in sorted(a.refusals.items()))
    print(f"  refusals (logged)            : {refused:10,}  ({reasons})")
    print(f"  duplicates absorbed          : {a.duplicates:10,}")
    if a.other:
        print(f"  other outcomes               : {a.other}")
    print(f"  notices sent / queued        : {a.notices_sent:,} / {a.notices:,}")
    print("delivery rows:")
    print(
        f"  total / sent / failed / pending : {a.delivery_rows:,} / {sent:,} / {failed:,} / "
        f"{a.pending:,}"
    )
    print(
        f"  copies received by the relay : {r['relay']:10,}  (rows sent + notices: "
        f"{sent + a.notices_sent:,})"
    )
    print("timing:")
    print(f"  accept phase                 : {tally.seconds:8.1f} s  -> {accept_rate:8.0f} msg/s")
    print(
        f"  first message to settled     : {r['settle_seconds']:8.1f} s  -> {copy_rate:8.0f} "
        "copies/s"
    )
    print(f"  wall time (setup included)   : {r['wall']:8.1f} s")
    print("baselines (same run, before the site started):")
    print(
        f"  no-op aiosmtpd, same clients : {r['noop']:8.0f} msg/s     ratio accept / no-op: "
        f"{accept_rate / r['noop']:6.2f}"
    )
    print(
        f"  bare smtplib into the sink   : {r['bare']:8.0f} copies/s  ratio copies / bare: "
        f"{copy_rate / r['bare']:6.2f}"
    )
    problems = check_accounting(a, tally, r["plan"], args.members, relay_received=r["relay"])
    if not r["settled"]:
        problems.insert(0, f"not settled within {args.timeout:.0f} s")
    if r["exited"]:
        problems.append(f"processes exited early: {r['exited']} (logs in the temp dir)")
    if problems:
        print("ACCOUNTING FAILED:")
        for p in problems:
            print(f"  - {p}")
    else:
        print(
            f"accounting: accepted {a.raws:,} = posts {a.posts:,} + refusals {refused:,} + "
            f"duplicates {a.duplicates:,}; every row sent, none pending: OK"
        )
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="mailgate worker processes")
    parser.add_argument("--concurrency", type=int, default=1, help="pool size of each worker")
    parser.add_argument("--broker", choices=["auto", "redis", "filesystem"], default="auto")
    parser.add_argument("--sink", choices=["auto", "smtp-sink", "aiosmtpd"], default="auto")
    parser.add_argument("--database-url")
    parser.add_argument(
        "--timeout", type=float, default=4 * 3600.0, help="deadline of each phase, seconds"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()
    if args.members < 2:
        parser.error("--members must be at least 2")
    args.sink_kind = pick_sink(args.sink)
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-soak-"))
    try:
        problems = report(args, soak(args, tmp))
    finally:
        if args.keep:
            print(f"(logs kept in {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    assert not problems, "the soak's accounting does not add up (see above)"


if __name__ == "__main__":
    main()
