"""Benchmark: a weekly prompt to a 10,000-member company — asks queued, mails sent,
answers ingested.

Data (generated, not timed): 10,000 active people (``--members``) in 14 European
timezones, seeded with bulk Core inserts, and one prompt made with ``create_prompt``
(audience "company", Tuesdays 09:30 local time). The clock is Tuesday 3 March 2026,
10:00 UTC: 09:30 or later everywhere in Europe and inside everyone's working hours, so
every member is due at once.

1. The scheduler tick: ``tick`` inside ``unit_of_work`` (the prompt's run, its question,
   10,000 asks and 10,000 queued ask mails) and ``pending_mail_ids``, as
   ``run_questions_tick`` does before it publishes. Baseline, same run: a bare Core
   insert of the same number of ask and mail rows into scratch tables of the same
   shape, in one transaction.
2. Sending: ``send_question_mails`` over all the pending ids in batches of 100
   (``BATCH``) to a Maildir relay (``worker.mailer.MaildirMailer``: one file per mail,
   fsync'd, renamed into ``new/``), in this process, with the time split by stage.
   Then the first ``--sample`` mails (default 2,000) are made pending again and sent by
   ``--workers`` warmed-up worker processes (multiprocessing, spawn), each taking a
   disjoint contiguous share of the batches. On SQLite a batch that meets "database is
   locked" is run again, as the task's autoretry would, and counted. Baseline, same
   run: composing ``--sample`` plain ``EmailMessage`` objects with the stdlib (the ask
   mail's headers, a body of its size) and handing them to the same Maildir relay, in
   this process. The sample keeps the default run near three minutes on two quiet
   cores; ``--sample 10000`` compares the same number of mails.
3. Answers: ``--answers`` replies (1-3 KB: Gmail with an HTML alternative, Outlook with
   "-----Original Message-----", Apple Mail with "Sent from my iPhone"; each quotes the
   question it answers) built from the ask mails the relay delivered — From the member,
   To the mail's reply address, In-Reply-To its Message-ID, References the question —
   stored as ``raw_messages`` rows by ``SqlInbox``; then ``run_ingest_batch`` over
   chunks of 10 in one process. Baseline, same run: stdlib parse
   (``email.message_from_bytes`` with the default policy and ``get_body``) and an insert
   of the plain text into a scratch table, one transaction per chunk of 10. The rate
   over the first and the last tenth of the answers is printed too: the per-answer
   cost grows with the answers already in.

Every step is checked (asserts, so a broken pipeline fails the run): one ask and one
queued mail per member, every mail ``sent`` and one Maildir file per mail in each send
run, every answer stored as a post in the question's discussion and its ask marked
``answered_at``.

Run: ``.venv/bin/python bench/questions.py [--members N] [--answers N] [--workers N]
[--sample N] [--database-url URL]`` (default SQLite in a temp dir; PostgreSQL with e.g.
``--database-url postgresql+psycopg://127.0.0.1:5432/test`` — it creates and drops a
scratch database ``mailgate_bench_<pid>``). Smoke run: ``--members 500 --answers 200``.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import email.utils
import multiprocessing
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.fanout import TimedRelay, prepare_database, timed  # noqa: E402 - after the path insert

DOMAIN = "lists.corp.example"
SECRET = "bench-questions-secret-0123456789abcdef0"  # 40 characters
NOW = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # a Tuesday, before Europe's DST change
ANSWERED = NOW + timedelta(hours=2)  # when the answers are ingested (IngestContext.now)
PROMPT_SCHEDULE = "tuesday 09:30"
MAX_LOCKED = 200  # batches a worker may retry after "database is locked" before giving up
INGEST_CHUNK = 10  # what the gateway's group commit hands the ingest task under load

ZONES = [  # (IANA name, share): 10:00 UTC is 10:00-13:00 local, all working hours
    ("Europe/London", 18),
    ("Europe/Dublin", 4),
    ("Europe/Lisbon", 4),
    ("Europe/Paris", 10),
    ("Europe/Berlin", 20),
    ("Europe/Amsterdam", 6),
    ("Europe/Madrid", 7),
    ("Europe/Rome", 5),
    ("Europe/Stockholm", 4),
    ("Europe/Warsaw", 6),
    ("Europe/Helsinki", 3),
    ("Europe/Athens", 3),
    ("Europe/Bucharest", 4),
    ("Europe/Istanbul", 6),
]
DEPARTMENTS = ("Engineering", "Sales", "Support", "Marketing", "Product", "Finance", "People")
FIRST = (
    "Ana Bo Cy Dana Eli Fatima Gus Hana Ivan Jo Kai Lena Mo Nia Omar Pia Quinn Ravi Sara "
    "Tomas Uma Vik Wen Xia Yusuf Zoe Amara Bjorn Chen Diego Emeka Freya Goran Hiro Ines"
).split()
LAST = (
    "Garcia Smith Muller Tanaka Okafor Rossi Novak Silva Kim Nguyen Cohen Dubois Jensen "
    "Kowalski Larsen Mendes Nakamura Olsen Patel Quist Reyes Schmidt Torres Varga Wong"
).split()
PHRASES = (
    "finishing the billing migration",
    "reviewing the onboarding redesign with the design team",
    "chasing the flaky integration tests on the release branch",
    "preparing the quarterly numbers for finance",
    "interviewing two candidates for the backend role",
    "writing the runbook for the certificate rotation",
    "getting the Berlin customer workshop ready",
    "pairing with support on the ticket backlog",
    "measuring search latency after the cache change",
    "drafting the pricing page for the enterprise plan",
    "cleaning up the analytics dashboards nobody reads",
    "shipping the mobile release that slipped last week",
)
OPENERS = ("This week I am", "Mostly", "Right now I'm", "Honestly,", "Two things:", "I'm")
CLOSERS = (
    "If anyone has done this before, I'd love a pointer.",
    "Blocked a bit on a review, otherwise on track.",
    "Should be done by Thursday if nothing catches fire.",
    "Happy to demo it on Friday.",
    "",
)


# ---------------------------------------------------------------- database


def scratch_tables(engine: Any) -> dict[str, Any]:
    """Baseline tables shaped like ``asks``, ``question_mails`` (same columns and unique
    keys, no foreign keys) and a bare text table for the ingest baseline."""
    from sqlalchemy import (
        Column,
        DateTime,
        Integer,
        MetaData,
        String,
        Table,
        Text,
        UniqueConstraint,
    )

    md = MetaData()
    tables = {
        "asks": Table(
            "bench_scratch_asks",
            md,
            Column("id", Integer, primary_key=True),
            Column("question_id", Integer, nullable=False),
            Column("person_id", Integer, nullable=False, index=True),
            Column("due_at", DateTime(timezone=True), nullable=False),
            Column("sent_at", DateTime(timezone=True)),
            Column("answered_at", DateTime(timezone=True)),
            Column("reminders", Integer, nullable=False),
            Column("last_reminded_at", DateTime(timezone=True)),
            Column("skipped", String(32), nullable=False),
            UniqueConstraint("question_id", "person_id"),
        ),
        "mails": Table(
            "bench_scratch_mails",
            md,
            Column("id", Integer, primary_key=True),
            Column("key", String(200), nullable=False, unique=True),
            Column("kind", String(32), nullable=False),
            Column("question_id", Integer, nullable=False),
            Column("person_id", Integer, nullable=False, index=True),
            Column("followup_id", Integer),
            Column("status", String(16), nullable=False),
            Column("attempts", Integer, nullable=False),
            Column("lease_until", DateTime(timezone=True)),
            Column("last_error", String(400), nullable=False),
            Column("created_at", DateTime(timezone=True), nullable=False),
            Column("sent_at", DateTime(timezone=True)),
        ),
        "answers": Table(
            "bench_scratch_answers",
            md,
            Column("id", Integer, primary_key=True),
            Column("raw_id", Integer, nullable=False),
            Column("text", Text, nullable=False),
        ),
    }
    md.create_all(engine)
    return tables


# ---------------------------------------------------------------- the company


def seed_people(engine: Any, members: int, seed: int = 42) -> list[int]:
    """``members`` active people with a primary address each, by bulk Core inserts;
    returns their ids."""
    from sqlalchemy import Table, insert

    from mailgate.models import Address, Person

    rng = random.Random(seed)
    zones, weights = zip(*ZONES, strict=True)
    people: Table = Person.__table__  # type: ignore[assignment]
    addresses: Table = Address.__table__  # type: ignore[assignment]
    rows, emails = [], []
    for i in range(members):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        rows.append(
            {
                "name": f"{first} {last}",
                "timezone": rng.choices(zones, weights)[0],
                "department": rng.choice(DEPARTMENTS),
                "active": True,
                "created_at": NOW - timedelta(days=400),
            }
        )
        emails.append(f"{first}.{last}.{i}@corp.example".lower())
    with engine.begin() as conn:
        ids = list(
            conn.execute(
                insert(people).returning(people.c.id, sort_by_parameter_order=True), rows
            ).scalars()
        )
        conn.execute(
            insert(addresses),
            [
                {"person_id": pid, "email": address, "is_primary": True}
                for pid, address in zip(ids, emails, strict=True)
            ],
        )
    return ids


def create_weekly_prompt(factory: Any) -> int:
    """The company-wide prompt, made as ``mailgate prompt create`` makes it; dated a
    month back so this week's run is due (``create_prompt`` stamps the wall clock)."""
    from digests.prompts import create_prompt, parse_schedule
    from mailgate.db import unit_of_work
    from mailgate.questions import COMPANY

    with unit_of_work(factory) as session:
        prompt = create_prompt(
            session, name="weekly", audience=COMPANY, schedule=parse_schedule(PROMPT_SCHEDULE)
        )
        prompt.created_at = NOW - timedelta(days=30)
        return int(prompt.id)


# ---------------------------------------------------------------- 1. the tick


def run_tick(factory: Any) -> tuple[float, float, dict[str, int], list[int]]:
    """Seconds for the tick and for the pending-id query, the tick's counts, the ids."""
    from digests.questions import pending_mail_ids, tick
    from mailgate.db import read_only, unit_of_work

    start = time.perf_counter()
    with unit_of_work(factory) as session:
        counts = tick(session, NOW, DOMAIN)
    ticked = time.perf_counter()
    with read_only(factory) as session:
        ids = pending_mail_ids(session, NOW)
    return ticked - start, time.perf_counter() - ticked, counts, ids


def bare_tick_inserts(engine: Any, tables: dict[str, Any], person_ids: Sequence[int]) -> float:
    """Seconds to insert one ask row and one pending mail row per person (the rows the
    tick writes), with Core, in one transaction."""
    from sqlalchemy import insert

    start = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            insert(tables["asks"]),
            [
                {
                    "question_id": 1,
                    "person_id": pid,
                    "due_at": NOW,
                    "sent_at": NOW,
                    "reminders": 0,
                    "skipped": "",
                }
                for pid in person_ids
            ],
        )
        conn.execute(
            insert(tables["mails"]),
            [
                {
                    "key": f"ask:1:{pid}",
                    "kind": "ask",
                    "question_id": 1,
                    "person_id": pid,
                    "status": "pending",
                    "attempts": 0,
                    "last_error": "",
                    "created_at": NOW,
                }
                for pid in person_ids
            ],
        )
    return time.perf_counter() - start


def check_tick(factory: Any, counts: dict[str, int], ids: Sequence[int], members: int) -> int:
    """Assert one run, one ask and one pending ask mail per member; the question's id."""
    from sqlalchemy import func, select

    from mailgate.models import Ask, PromptRun, QuestionMail

    with factory() as session:
        (question_id,) = session.scalars(select(PromptRun.question_id)).all()
        asks = session.scalar(
            select(func.count()).where(Ask.question_id == question_id, Ask.sent_at == NOW)
        )
        mails = session.scalar(
            select(func.count()).where(
                QuestionMail.question_id == question_id,
                QuestionMail.kind == "ask",
                QuestionMail.status == "pending",
            )
        )
    assert counts["prompts"] == 1, counts
    assert counts["asks"] == members == asks == mails == len(ids), (counts, asks, mails, len(ids))
    assert question_id is not None
    return int(question_id)


# ---------------------------------------------------------------- 2. sending


def batches_of(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def warm_up(factory: Any) -> None:
    """What a long-running worker already has: compiled templates, a pooled connection."""
    from sqlalchemy import text

    from mailgate.notices import template_env

    for kind in ("ask", "reminder", "summary"):
        template_env().get_template(f"questions/{kind}.txt")
    with factory() as session:
        session.execute(text("SELECT 1"))


@contextmanager
def instrumented(phases: dict[str, float]) -> Iterator[None]:
    """Time the stages ``send_question_mails`` calls, by wrapping them where it looks
    them up, and put them back afterwards."""
    from digests import questions as module

    originals = {
        name: getattr(module, name) for name in ("_claim", "mail_context", "compose_question_mail")
    }

    for name, fn in originals.items():
        setattr(module, name, timed(phases, name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)


def send_batches(
    factory: Any, batches: Sequence[Sequence[int]], relay: Any, *, retry_locked: bool = False
) -> dict[str, int]:
    """Send every batch as the send task would; with ``retry_locked``, a batch that
    meets a locked database is run again as the task's autoretry would run it — with the
    clock moved past the claim's lease, since that is when its mails can be claimed
    again — and counted in ``locked``."""
    from sqlalchemy.exc import OperationalError

    from digests.questions import LEASE, QuestionMailSettings, send_question_mails

    settings = QuestionMailSettings(domain=DOMAIN, secret=SECRET)
    totals = {"sent": 0, "failed": 0, "retry": 0, "locked": 0}
    for batch in batches:
        now = NOW
        while True:
            try:
                report = send_question_mails(
                    factory, batch, relay=relay, settings=settings, now=now
                )
                break
            except OperationalError:
                if not retry_locked or totals["locked"] >= MAX_LOCKED:
                    raise
                totals["locked"] += 1
                now += LEASE + timedelta(seconds=1)
        for key, value in report.items():
            totals[key] += value
    return totals


def send_in_process(
    factory: Any, batches: Sequence[Sequence[int]], maildir: Path
) -> tuple[float, dict[str, int], dict[str, float]]:
    from worker.mailer import MaildirMailer

    warm_up(factory)
    phases: dict[str, float] = {}
    relay = TimedRelay(MaildirMailer(maildir), phases)
    with instrumented(phases):
        start = time.perf_counter()
        totals = send_batches(factory, batches, relay)
        elapsed = time.perf_counter() - start
    return elapsed, totals, phases


def send_worker(url: str, maildir: str, batches: list[list[int]], conn: Connection) -> None:
    """A worker process: warm up, say ``ready``; on ``go`` send every batch and report
    (or report the traceback that stopped it)."""
    try:
        from mailgate.db import make_engine, make_sessionmaker
        from worker.mailer import MaildirMailer

        engine = make_engine(url)
        factory = make_sessionmaker(engine)
        relay = MaildirMailer(Path(maildir))
        warm_up(factory)
        conn.send("ready")
        if conn.recv() != "go":
            return
        start = time.perf_counter()
        totals = send_batches(factory, batches, relay, retry_locked=True)
        conn.send({**totals, "seconds": time.perf_counter() - start})
        engine.dispose()
    except BaseException:
        conn.send({"error": traceback.format_exc()})
        raise


def receive(pipe: Connection, proc: Any, timeout: float) -> Any:
    """The next message from a worker; fails at once if the worker died instead."""
    deadline = time.monotonic() + timeout
    while not pipe.poll(0.2):
        if not proc.is_alive() and not pipe.poll(0):
            raise RuntimeError(f"worker process {proc.pid} died (exit code {proc.exitcode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker process {proc.pid} did not answer in {timeout:.0f} s")
    message = pipe.recv()
    if isinstance(message, dict) and "error" in message:
        raise RuntimeError(f"worker process {proc.pid} failed:\n{message['error']}")
    return message


def send_in_workers(
    url: str, batches: Sequence[Sequence[int]], maildir: Path, workers: int
) -> tuple[float, list[dict[str, Any]]]:
    """Seconds for ``workers`` warmed-up processes, each with a contiguous share of the
    batches, to send them all."""
    ctx = multiprocessing.get_context("spawn")  # no inherited engine or connections
    bounds = [len(batches) * k // workers for k in range(workers + 1)]
    procs, pipes = [], []
    try:
        for k in range(workers):
            share = [list(b) for b in batches[bounds[k] : bounds[k + 1]]]
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=send_worker, args=(url, str(maildir), share, child))
            proc.start()
            procs.append(proc)
            pipes.append(parent)
        for pipe, proc in zip(pipes, procs, strict=True):
            if receive(pipe, proc, 120) != "ready":
                raise RuntimeError("a worker process failed to start")
        start = time.perf_counter()
        for pipe in pipes:
            pipe.send("go")
        results = [receive(pipe, proc, 900) for pipe, proc in zip(pipes, procs, strict=True)]
        elapsed = time.perf_counter() - start
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()  # only our own children, by object
                proc.join(timeout=10)
    return elapsed, results


def reset_mails(factory: Any, ids: Sequence[int]) -> None:
    """Make these mails pending again, as the tick left them."""
    from sqlalchemy import update

    from mailgate.db import unit_of_work
    from mailgate.models import QuestionMail

    with unit_of_work(factory) as session:
        session.execute(
            update(QuestionMail)
            .where(QuestionMail.id.in_(list(ids)))
            .values(status="pending", attempts=0, lease_until=None, last_error="", sent_at=None)
        )


def check_sent(
    factory: Any, question_id: int, maildir: Path, mails: int, files: int, what: str
) -> None:
    """Every one of the question's ``mails`` is sent, and this run wrote ``files``."""
    from sqlalchemy import func, select

    from mailgate.models import QuestionMail

    with factory() as session:
        rows = dict(
            session.execute(
                select(QuestionMail.status, func.count())
                .where(QuestionMail.question_id == question_id)
                .group_by(QuestionMail.status)
            ).all()
        )
    written = len(os.listdir(maildir / "new"))
    assert rows == {"sent": mails} and written == files, f"{what}: {rows}, {written} files"


def bare_compose(count: int, body_size: int, maildir: Path) -> float:
    """Mails per second: a plain stdlib ``EmailMessage`` with the ask mail's headers and
    a body of its size, composed and handed to the same Maildir relay."""
    from worker.mailer import MaildirMailer

    relay = MaildirMailer(maildir)
    line = "What are you working on this week? Reply to this message to answer.\n"
    body = (line * (body_size // len(line) + 1))[:body_size]
    start = time.perf_counter()
    with relay.open() as connection:
        for i in range(count):
            reply_to = f"reply+{i:032d}@{DOMAIN}"
            msg = EmailMessage(policy=email.policy.SMTP)
            msg["From"] = email.utils.formataddr(("Mailgate (via Mailgate)", reply_to))
            msg["To"] = email.utils.formataddr((f"Member {i}", f"m{i}@corp.example"))
            msg["Reply-To"] = reply_to
            msg["Subject"] = "This week's question: What are you working on this week?"
            msg["Date"] = email.utils.formatdate(localtime=False)
            msg["Message-ID"] = f"<qm.{i}.bench@{DOMAIN}>"
            msg["In-Reply-To"] = f"<question.1@{DOMAIN}>"
            msg["References"] = f"<question.1@{DOMAIN}>"
            msg["X-Mailgate-Question"] = "1"
            msg["X-Mailgate-Kind"] = "ask"
            msg.set_content(body)
            connection.send("", [f"m{i}@corp.example"], msg.as_bytes())
    return count / (time.perf_counter() - start)


def body_size(maildir: Path) -> tuple[int, int]:
    """The plain-text body size and the whole size of one delivered ask mail."""
    path = sorted((maildir / "new").iterdir())[0]
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    part = msg.get_body(("plain",))
    assert part is not None
    return len(part.get_content().encode()), path.stat().st_size


# ---------------------------------------------------------------- 3. answers


def answer_text(rng: random.Random) -> str:
    """Two to eight sentences of a plausible weekly answer, wrapped at 72 columns."""
    sentences = [f"{rng.choice(OPENERS)} {rng.choice(PHRASES)}." for _ in range(rng.randint(1, 4))]
    sentences += [f"Also {rng.choice(PHRASES)}." for _ in range(rng.randint(0, 3))]
    sentences.append(rng.choice(CLOSERS))
    lines, line = [], ""
    for word in " ".join(s for s in sentences if s).split():
        if len(line) + len(word) >= 72:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def gmail_reply(
    rng: random.Random, received: EmailMessage, new: str, quoted: str, name: str
) -> tuple[str, str]:
    """(headers, body) the way Gmail writes a reply: text and HTML, quote below."""
    boundary = f"000000000000{rng.getrandbits(48):012x}"
    sender = received["From"].addresses[0]
    attribution = (
        f"On Tue, 3 Mar 2026 at 11:0{rng.randint(0, 9)}, {sender.display_name} "
        f"<{sender.addr_spec}> wrote:"
    )
    quote = "\n".join(f"> {line}".rstrip() for line in quoted.splitlines())
    html_new = "<br>".join(new.splitlines())
    html_quote = "<br>".join(quoted.splitlines())
    body = (
        f'--{boundary}\nContent-Type: text/plain; charset="UTF-8"\n\n'
        f"{new}\n\n{attribution}\n\n{quote}\n\n"
        f'--{boundary}\nContent-Type: text/html; charset="UTF-8"\n\n'
        f'<div dir="ltr">{html_new}</div><br><div class="gmail_quote">'
        f'<div dir="ltr" class="gmail_attr">{attribution}<br></div>'
        f'<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;'
        f'border-left:1px solid rgb(204,204,204);padding-left:1ex">{html_quote}'
        f"</blockquote></div>\n\n--{boundary}--\n"
    )
    headers = (
        f"Message-ID: <CA+{rng.getrandbits(160):040x}@mail.gmail.com>\n"
        f'MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="{boundary}"\n'
    )
    return headers, body


def outlook_reply(
    rng: random.Random, received: EmailMessage, new: str, quoted: str, name: str
) -> tuple[str, str]:
    sender = received["From"].addresses[0]
    body = (
        f"{new}\n\nRegards,\n{name}\n\n-----Original Message-----\n"
        f"From: {sender.display_name} <{sender.addr_spec}>\n"
        f"Sent: Tuesday, March 3, 2026 10:00 AM\nTo: {received['To']}\n"
        f"Subject: {received['Subject']}\n\n{quoted}\n"
    )
    headers = (
        f"Message-ID: <{rng.getrandbits(128):032X}@EXCH01.corp.example>\n"
        f"Thread-Topic: {received['Subject']}\n"
        'MIME-Version: 1.0\nContent-Type: text/plain; charset="windows-1252"\n'
        "Content-Transfer-Encoding: 7bit\n"
    )
    return headers, body


def apple_reply(
    rng: random.Random, received: EmailMessage, new: str, quoted: str, name: str
) -> tuple[str, str]:
    sender = received["From"].addresses[0]
    quote = "\n".join(f"> {line}".rstrip() for line in quoted.splitlines())
    body = (
        f"{new}\n\nSent from my iPhone\n\n> On 3 Mar 2026, at 10:00, "
        f"{sender.display_name} <{sender.addr_spec}> wrote:\n>\n{quote}\n"
    )
    headers = (
        f"Message-ID: <{rng.getrandbits(64):016X}-{rng.getrandbits(32):08X}@corp.example>\n"
        "MIME-Version: 1.0 (1.0)\nContent-Type: text/plain; charset=us-ascii\n"
        "Content-Transfer-Encoding: 7bit\n"
    )
    return headers, body


CLIENTS = (gmail_reply, outlook_reply, apple_reply)


def answer_mails(maildir: Path, count: int, seed: int = 7) -> list[tuple[str, str, bytes]]:
    """(envelope sender, reply address, raw reply) for ``count`` members, answering the
    ask mail the relay delivered to them."""
    rng = random.Random(seed)
    files = sorted((maildir / "new").iterdir())
    out = []
    for n, path in enumerate(sorted(rng.sample(files, min(count, len(files))))):
        received = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(received, EmailMessage)
        member = received["To"].addresses[0]
        reply_to = received["Reply-To"].addresses[0].addr_spec
        part = received.get_body(("plain",))
        assert part is not None
        quoted = str(part.get_content()).strip()
        headers, body = CLIENTS[n % len(CLIENTS)](
            rng, received, answer_text(rng), quoted, member.display_name
        )
        text = (
            f"From: {email.utils.formataddr((member.display_name, member.addr_spec))}\n"
            f"To: {reply_to}\nSubject: Re: {received['Subject']}\n"
            f"Date: Tue, 03 Mar 2026 11:{n % 60:02d}:00 +0100\n"
            f"In-Reply-To: {received['Message-ID']}\n"
            f"References: {received['References']} {received['Message-ID']}\n"
            f"{headers}\n{body}"
        )
        out.append((member.addr_spec, reply_to, text.replace("\n", "\r\n").encode()))
    return out


def store_answers(factory: Any, answers: Sequence[tuple[str, str, bytes]]) -> list[int]:
    """Raw rows as the gateway stores them (status ``received``)."""
    from mailgate.inbox import SqlInbox
    from mailgate.smtp import Accepted

    inbox = SqlInbox(factory)
    ids: list[int] = []
    for start in range(0, len(answers), 200):
        ids += inbox.store_many(
            [
                Accepted(raw, sender, (rcpt,), "127.0.0.1", "mx.corp.example")
                for sender, rcpt, raw in answers[start : start + 200]
            ]
        )
    return ids


def bare_ingest(engine: Any, table: Any, answers: Sequence[tuple[str, str, bytes]]) -> float:
    """Messages per second: stdlib parse, the plain-text part, an insert; one
    transaction per chunk of ``INGEST_CHUNK``."""
    from sqlalchemy import insert

    start = time.perf_counter()
    for first in range(0, len(answers), INGEST_CHUNK):
        rows = []
        for n, (_sender, _rcpt, raw) in enumerate(answers[first : first + INGEST_CHUNK]):
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            part = msg.get_body(("plain",))
            rows.append({"raw_id": first + n, "text": part.get_content() if part else ""})
        with engine.begin() as conn:
            conn.execute(insert(table), rows)
    return len(answers) / (time.perf_counter() - start)


def ingest_answers(factory: Any, raw_ids: Sequence[int]) -> tuple[float, float, float]:
    """Answers per second through ``run_ingest_batch`` in chunks, in this process: over
    all of them, over the first tenth and over the last tenth (a per-answer cost that
    grows with the answers already in is visible there)."""
    from sqlalchemy import select

    from mailgate.ingest import IngestContext, run_ingest_batch
    from mailgate.models import RawMessage
    from mailgate.reading import read_message

    ctx = IngestContext(domain=DOMAIN, secrets=(SECRET,), now=lambda: ANSWERED)
    with factory() as session:  # warm up as a running worker is: parser loaded, pool open
        raw, sender = session.execute(
            select(RawMessage.raw, RawMessage.mail_from).where(RawMessage.id == raw_ids[0])
        ).one()
    read_message(raw, mail_from=sender, ours=ctx.ours)
    chunks: list[float] = []
    for first in range(0, len(raw_ids), INGEST_CHUNK):
        start = time.perf_counter()
        run_ingest_batch(factory, list(raw_ids[first : first + INGEST_CHUNK]), ctx)
        chunks.append(time.perf_counter() - start)
    tenth = max(1, len(chunks) // 10)

    def rate(seconds: Sequence[float]) -> float:
        return min(len(raw_ids), len(seconds) * INGEST_CHUNK) / sum(seconds)

    return len(raw_ids) / sum(chunks), rate(chunks[:tenth]), rate(chunks[-tenth:])


def check_answers(
    factory: Any,
    question_id: int,
    raw_ids: Sequence[int],
    answers: Sequence[tuple[str, str, bytes]],
) -> int:
    """Assert every answer is a post in the question's discussion by its sender and their
    ask is answered; returns how many posts still carry quoted history."""
    from sqlalchemy import func, select

    from mailgate.models import Address, Ask, Post, Question, RawMessage

    senders = {sender for sender, _rcpt, _raw in answers}
    with factory() as session:
        statuses = dict(
            session.execute(
                select(RawMessage.status, func.count())
                .where(RawMessage.id.in_(raw_ids))
                .group_by(RawMessage.status)
            ).all()
        )
        discussion = session.scalar(
            select(Question.discussion_id).where(Question.id == question_id)
        )
        posts = session.execute(
            select(Post.discussion_id, Address.email, Post.text)
            .join(Address, Address.person_id == Post.author_id)
            .where(Post.raw_id.in_(raw_ids), Address.is_primary.is_(True))
        ).all()
        answered = set(
            session.scalars(
                select(Address.email)
                .join(Ask, Ask.person_id == Address.person_id)
                .where(Ask.question_id == question_id, Ask.answered_at == ANSWERED)
            )
        )
        unanswered = session.scalar(
            select(func.count()).where(Ask.question_id == question_id, Ask.answered_at.is_(None))
        )
        asks = session.scalar(select(func.count()).where(Ask.question_id == question_id))
    assert {str(k): v for k, v in statuses.items()} == {"processed": len(raw_ids)}, statuses
    assert len(posts) == len(raw_ids), f"{len(posts)} posts for {len(raw_ids)} answers"
    assert {d for d, _a, _t in posts} == {discussion}, "an answer left the question's thread"
    assert {a for _d, a, _t in posts} == senders, "posts by someone else than who answered"
    assert answered == senders, f"{len(answered)} asks answered of {len(senders)} answers"
    assert unanswered == (asks or 0) - len(senders), (unanswered, asks)
    return sum(1 for _d, _a, text in posts if "week's question" in text or "\n>" in text)


# ---------------------------------------------------------------- main


def say(line: str) -> None:
    print(line, flush=True)  # as each figure is measured: a later failure keeps them


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--answers", type=int, default=2_000)
    parser.add_argument("--workers", type=int, default=2, help="send processes; 0 or 1: skip")
    parser.add_argument(
        "--sample",
        type=int,
        default=2_000,
        help="mails for the stdlib baseline and the worker-process run (rates per mail; "
        "the in-process run always sends every mail)",
    )
    parser.add_argument("--database-url")
    args = parser.parse_args()

    from digests.questions import BATCH
    from mailgate.db import make_engine, make_sessionmaker

    load = os.getloadavg()[0]  # other work on the machine skews every figure below
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        url, cleanup = prepare_database(args.database_url, tmp)
        engine = make_engine(url)
        factory = make_sessionmaker(engine)
        kind = "PostgreSQL" if url.startswith("postgresql") else "SQLite (WAL, synchronous=FULL)"
        say(f"questions benchmark on {kind}, relay: Maildir (fsync per file)")
        say(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} when the run started")
        try:
            tables = scratch_tables(engine)
            start = time.perf_counter()
            person_ids = seed_people(engine, args.members)
            create_weekly_prompt(factory)
            say(
                f"company: {args.members:,} members in {len(ZONES)} European timezones "
                f"({time.perf_counter() - start:.1f} s to seed); prompt 'weekly' "
                f"{PROMPT_SCHEDULE} local, tick at {NOW:%a %Y-%m-%d %H:%M} UTC"
            )

            # 1. The tick, next to the bare inserts of the rows it writes.
            bare_tick = bare_tick_inserts(engine, tables, person_ids)
            tick_s, pending_s, counts, ids = run_tick(factory)
            question_id = check_tick(factory, counts, ids, args.members)
            queued_s = tick_s + pending_s
            say("1. scheduler tick (prompt run, question, asks, ask mails queued):")
            say(f"  bare Core insert, same rows    : {bare_tick:8.2f} s  (baseline)")
            say(
                f"  tick + pending_mail_ids        : {queued_s:8.2f} s  ({tick_s:.2f} + "
                f"{pending_s:.2f}; {counts['asks']:,} asks queued, "
                f"{counts['asks'] / queued_s:.0f}/s)"
            )
            say(f"  ratio bare / tick              : {bare_tick / queued_s:8.2f}")

            # 2. Sending: in this process, then in worker processes; stdlib baseline.
            n = len(ids)
            batches = batches_of(ids, BATCH)
            one_dir = tmp / "maildir-one"
            one_s, one, phases = send_in_process(factory, batches, one_dir)
            check_sent(factory, question_id, one_dir, n, n, "one process")
            body, mail_size = body_size(one_dir)
            sample = ids[: max(1, min(args.sample, n))]
            bare_send = bare_compose(len(sample), body, tmp / "maildir-bare")
            one_rate = n / one_s
            say(
                f"2. sending {n:,} ask mails in batches of {BATCH} to a Maildir "
                f"({mail_size / 1024:.1f} KB each, {body} bytes of text):"
            )
            say(
                f"  stdlib compose + Maildir write : {bare_send:8.0f} mails/s  "
                f"(baseline, {len(sample):,} mails)"
            )
            say(
                f"  send_question_mails, 1 process : {one_rate:8.0f} mails/s  ({one_s:.1f} s; "
                f"{one['sent']:,} sent, {one['failed']} failed, {one['retry']} retry)"
            )
            say(f"  ratio 1 process / stdlib       : {one_rate / bare_send:8.2f}")
            say(f"    split (s): {split(phases, one_s)}")
            if args.workers > 1:
                reset_mails(factory, sample)
                many_dir = tmp / "maildir-many"
                many_s, many = send_in_workers(
                    url, batches_of(sample, BATCH), many_dir, args.workers
                )
                check_sent(factory, question_id, many_dir, n, len(sample), "worker processes")
                many_rate = len(sample) / many_s
                shares = ", ".join(
                    f"{r['sent']:,} in {r['seconds']:.1f} s"
                    + (f" ({r['locked']} batches retried: database locked)" if r["locked"] else "")
                    for r in many
                )
                say(
                    f"  send_question_mails, {args.workers} procs : {many_rate:8.0f} mails/s  "
                    f"({len(sample):,} mails again in {many_s:.1f} s; {shares})"
                )
                say(f"  ratio {args.workers} processes / 1        : {many_rate / one_rate:8.2f}")
            say("  checked: every mail sent, one Maildir file each, in each run")

            # 3. Answers to the mails the first run delivered.
            answers = answer_mails(one_dir, args.answers)
            raw_ids = store_answers(factory, answers)
            bare_answers = bare_ingest(engine, tables["answers"], answers)
            answer_rate, early, late = ingest_answers(factory, raw_ids)
            quoted = check_answers(factory, question_id, raw_ids, answers)
        finally:
            engine.dispose()
            if cleanup is not None:
                cleanup()

    sizes = [len(raw) for _s, _r, raw in answers]
    say(
        f"3. answers: {len(answers):,} replies ({min(sizes)}-{max(sizes)} bytes, "
        f"{sum(sizes) / len(sizes):.0f} average; Gmail, Outlook, Apple Mail), "
        f"chunks of {INGEST_CHUNK}, one process:"
    )
    say(f"  stdlib parse + get_body + insert: {bare_answers:6.0f} msg/s  (baseline)")
    say(
        f"  run_ingest_batch                : {answer_rate:6.0f} answers/s  "
        f"(first tenth {early:.0f}/s, last tenth {late:.0f}/s)"
    )
    say(f"  ratio pipeline / stdlib         : {answer_rate / bare_answers:6.2f}")
    say(
        "  checked: every answer a post in the question's thread by its sender, its ask "
        f"answered; {quoted} posts kept quoted history"
    )
    say(
        f"prompts: {counts['asks']:,} asks queued in {queued_s:.1f} s; sent "
        f"{one_rate:.0f} mails/s (1 proc) vs stdlib baseline {bare_send:.0f}/s "
        f"(ratio {one_rate / bare_send:.2f}); answers {answer_rate:.0f}/s vs "
        f"{bare_answers:.0f}/s (ratio {answer_rate / bare_answers:.2f})"
    )
    say(f"(benchmark took {time.perf_counter() - began:.0f} s)")


def split(phases: dict[str, float], total: float) -> str:
    """Where the one process's sending time went."""
    parts = ", ".join(
        f"{label} {phases[key]:.1f}"
        for label, key in (
            ("claim", "_claim"),
            ("context", "mail_context"),
            ("compose", "compose_question_mail"),
            ("relay", "relay"),
        )
    )
    return f"{parts}; rest (load rows, mark, commit) {total - sum(phases.values()):.1f}"


if __name__ == "__main__":
    main()
