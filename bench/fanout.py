"""Benchmark: outbound fan-out of one post to 5,000 members, and the memory of a running site.

1. Delivery rate: one post to 5,000 every-message members, sent into an SMTP sink on
   127.0.0.1 that runs in its own process (Postfix's ``smtp-sink`` when installed, else a
   no-op aiosmtpd server). ``fan_out`` runs once; then N worker processes (N = 1, 2),
   started and warmed up beforehand, each take a share of the post's send batches and run
   ``send_batch`` on them with the real ``TokenCopyBuilder`` and ``SmtpMailer``, on the same
   database: claim, render each copy, one SMTP transaction per copy over one connection
   per batch, record the outcomes. Beside it, in the same run and into the same kind of
   sink: a bare ``smtplib`` sender delivering the same 5,000 copies, rendered beforehand,
   over one connection. The bar: at least half the bare rate with one worker process.
   When ``redis-server`` is installed, also a real ``mailgate worker`` (Celery, one pool
   process) on Redis, fed the same send tasks.
   After each run every delivery row must be ``sent`` and the sink must count 5,000.
2. Memory: ``mailgate serve``, ``mailgate worker --concurrency 1`` and ``mailgate beat``
   on the embedded defaults (SQLite, filesystem broker) with the relay pointed at the
   sink; idle for a few seconds, then 20 posts go through the gateway to a list of 200
   members (4,000 copies). The peak of the summed RSS of all three process trees (Celery's
   pool children included), sampled every 0.2 s. The aim: under 300 MB.

Run: ``.venv/bin/python bench/fanout.py [--members N] [--database-url URL] [--sink KIND]``
(default SQLite in a temp dir; PostgreSQL with e.g.
``--database-url postgresql+psycopg://postgres@127.0.0.1/test`` — it creates and drops a
scratch database; the memory part always uses the embedded defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

DOMAIN = "lists.bench.example"
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
BASE_URL = "https://mg.corp.example"  # copies carry the https unsubscribe link too
AUTHOR = "alice@corp.example"
MEMORY_POSTS, MEMORY_MEMBERS = 20, 200
BODY = (
    "Hi all,\n\n"
    "Here is the plan for the release on Friday. We freeze the branch on Wednesday at noon,\n"
    "run the migration rehearsal on staging Thursday morning, and ship at 10:00 UTC.\n\n"
    "What I need from each team:\n"
    "- Support: the customer notice draft by Wednesday (see https://wiki.corp.example/rel).\n"
    "- Sales: a list of accounts on the old pricing so we can warn them first.\n"
    "- Engineering: sign-off on the rollback runbook; the cache warm-up takes ~20 minutes.\n\n"
    "Latency on the new search path is down 30% in the load test, and the error budget\n"
    "for the quarter is intact. If anything here is a problem, reply to this thread today.\n\n"
    "Thanks,\nAlice\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """Terminate one process we started (by its PID), then kill it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# ---------------------------------------------------------------- the sink


def serve_sink(port: int) -> None:
    """A no-op aiosmtpd sink (subprocess): answers 250, counts messages; ``count`` on
    stdin prints the count, end of stdin stops it."""
    from aiosmtpd.controller import Controller

    class Counter:
        messages = 0

        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            Counter.messages += 1
            return "250 2.0.0 Ok"

    controller = Controller(Counter(), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print(Counter.messages, flush=True)
    controller.stop()


class Sink:
    """An SMTP sink on 127.0.0.1 in its own process, with a message counter."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.log = folder / f"sink-{self.port}.out"
        if kind == "smtp-sink":
            user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
            with self.log.open("wb") as out:
                self.proc = subprocess.Popen(
                    ["smtp-sink", *user, "-c", f"127.0.0.1:{self.port}", "1000"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        else:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--serve-sink", str(self.port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        try:
            if self.kind != "smtp-sink":
                assert self.proc.stdout is not None
                if self.proc.stdout.readline().strip() != "ready":
                    raise RuntimeError("the aiosmtpd sink did not start")
            wait_port(self.port)
        except BaseException:
            stop_process(self.proc)
            raise

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def count(self) -> int:
        """Messages received so far (one per SMTP transaction)."""
        if self.kind == "smtp-sink":
            # -c prints "sess=N quit=N mesg=N\r" each time a message or session ends.
            found = re.findall(rb"mesg=(\d+)", self.log.read_bytes())
            return int(found[-1]) if found else 0
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def wait_for(self, expected: int, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while (seen := self.count()) < expected and time.monotonic() < deadline:
            time.sleep(0.02)
        return seen

    def stop(self) -> None:
        if self.kind != "smtp-sink" and self.proc.stdin is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        stop_process(self.proc)


# ---------------------------------------------------------------- database and posts


def prepare_database(url: str | None, tmp: Path) -> tuple[str, Callable[[], None] | None]:
    """A migrated database of our own: a file in ``tmp``, or on PostgreSQL a scratch
    database created (and later dropped) beside the one ``url`` names. Shared by the
    benchmarks."""
    from sqlalchemy import create_engine, text

    from mailgate.db import upgrade_database

    if url is None:
        url = f"sqlite:///{tmp / 'bench.db'}"
        upgrade_database(url)
        return url, None
    name = f"mailgate_bench_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    base = url

    def cleanup() -> None:
        engine = create_engine(base, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    url = url.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade_database(url)
    except BaseException:
        cleanup()
        raise
    return url, cleanup


def seed(factory: Any, members: int) -> None:
    """A members-only list: ``members`` every-message members plus the author."""
    from mailgate import directory
    from mailgate.db import unit_of_work

    with unit_of_work(factory) as session:
        directory.create_list(session, "bench", "eng", name="Engineering", visibility="members")
        rows = [directory.ImportRow(1, AUTHOR, "Alice Example", "UTC", "Engineering")]
        rows += [
            directory.ImportRow(i + 2, f"m{i}@corp.example", f"Member {i}", "UTC", "Eng")
            for i in range(members)
        ]
        directory.import_members(session, "bench", "eng", rows)


def post_message(n: int) -> bytes:
    return (
        f"From: Alice Example <{AUTHOR}>\r\nTo: eng@{DOMAIN}\r\n"
        f"Subject: Release plan, round {n}\r\nDate: Tue, 3 Mar 2026 10:15:00 +0000\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@corp.example>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + BODY.replace("\n", "\r\n")
    ).encode()


def make_post(factory: Any, n: int) -> int:
    """One post, the way the gateway and the ingest worker make it."""
    from sqlalchemy import func, select

    from mailgate.inbox import SqlInbox
    from mailgate.ingest import IngestContext, run_ingest_batch
    from mailgate.models import Post
    from mailgate.smtp import Accepted

    accepted = Accepted(post_message(n), AUTHOR, (f"eng@{DOMAIN}",), "127.0.0.1", "bench")
    raw_ids = SqlInbox(factory).store_many([accepted])
    run_ingest_batch(factory, list(raw_ids), IngestContext(domain=DOMAIN, secrets=(SECRET,)))
    with factory() as session:
        post_id = session.scalar(select(func.max(Post.id)))
    if post_id is None:
        raise RuntimeError("the benchmark post was not created")
    return int(post_id)


def fan_out_post(factory: Any, post_id: int) -> tuple[float, list[list[int]]]:
    """Run ``fan_out``; returns its duration and the post's send batches (outbox args)."""
    from sqlalchemy import select

    from mailgate.db import unit_of_work
    from mailgate.delivery import SEND_TASK, fan_out
    from mailgate.models import OutboxEntry

    start = time.perf_counter()
    with unit_of_work(factory) as session:
        fan_out(session, post_id)
    elapsed = time.perf_counter() - start
    with factory() as session:
        args = session.scalars(
            select(OutboxEntry.args)
            .where(OutboxEntry.task == SEND_TASK, OutboxEntry.key.like(f"send:{post_id}:%"))
            .order_by(OutboxEntry.id)
        ).all()
    return elapsed, [list(a[0]) for a in args]


def status_counts(factory: Any, post_id: int) -> dict[str, int]:
    from sqlalchemy import func, select

    from mailgate.models import DeliveryRecord

    with factory() as session:
        rows = session.execute(
            select(DeliveryRecord.status, func.count())
            .where(DeliveryRecord.post_id == post_id)
            .group_by(DeliveryRecord.status)
        ).all()
    return {str(getattr(status, "value", status)): int(n) for status, n in rows}


def builder() -> Any:
    from mailgate.copies import CopySettings
    from mailgate.delivery import TokenCopyBuilder

    return TokenCopyBuilder(CopySettings(domain=DOMAIN, base_url=BASE_URL), SECRET)


def render_all(factory: Any, post_id: int) -> tuple[float, list[tuple[str, str, bytes]]]:
    """Every copy of a post as ``send_batch`` would render it: (sender, rcpt, bytes)."""
    from sqlalchemy import select

    from mailgate.delivery import RecipientFacts, post_source
    from mailgate.models import DeliveryRecord, Person

    copy_builder = builder()
    with factory() as session:
        rows = session.execute(
            select(
                DeliveryRecord.id,
                DeliveryRecord.person_id,
                DeliveryRecord.address,
                DeliveryRecord.list_id,
                Person.name,
            )
            .join(Person, Person.id == DeliveryRecord.person_id)
            .where(DeliveryRecord.post_id == post_id)
            .order_by(DeliveryRecord.id)
        ).all()
        copy_builder.prepare(*post_source(session, post_id))  # warm: templates compiled
        start = time.perf_counter()
        prepared = copy_builder.prepare(*post_source(session, post_id))
    copies = []
    for r in rows:
        facts = RecipientFacts(r.id, r.person_id, r.address, r.name, r.list_id)
        sender, data = copy_builder.render(prepared, facts)
        copies.append((sender, r.address, data))
    return time.perf_counter() - start, copies


# ---------------------------------------------------------------- the measurements


def bare_send(port: int, copies: Sequence[tuple[str, str, bytes]]) -> float:
    """The baseline: pre-rendered copies, one connection, one transaction per copy."""
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        for sender, rcpt, data in copies:
            smtp.sendmail(sender, [rcpt], data)
    return time.perf_counter() - start


def send_worker(url: str, relay_url: str, post_id: int) -> None:
    """A worker process (subprocess): batches as JSON on stdin, warm up, ``ready``; on
    ``go`` run ``send_batch`` over each batch and print the totals as JSON."""
    from mailgate.db import make_engine, make_sessionmaker
    from mailgate.delivery import RecipientFacts, post_source, send_batch
    from worker.mailer import SmtpMailer

    batches = json.loads(sys.stdin.readline())
    factory = make_sessionmaker(make_engine(url))
    copy_builder, relay = builder(), SmtpMailer(relay_url)
    # Warm up as a long-running worker would be: imports, templates, a pooled connection.
    with factory() as session:
        prepared = copy_builder.prepare(*post_source(session, post_id))
    copy_builder.render(prepared, RecipientFacts(0, 0, "warm@corp.example", "Warm", 0))
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    totals = {"sent": 0, "failed": 0, "deferred": 0}
    for ids in batches:
        report = send_batch(factory, ids, builder=copy_builder, relay=relay)
        totals["sent"] += report.sent
        totals["failed"] += report.failed
        totals["deferred"] += report.deferred
    print(json.dumps(totals), flush=True)


def run_workers(url: str, sink: Sink, post_id: int, batches: list[list[int]], n: int) -> float:
    """Seconds for ``n`` warmed-up worker processes to send all batches of a post."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--send-worker",
                "--database-url",
                url,
                "--relay-url",
                sink.url,
                "--post-id",
                str(post_id),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    elapsed, results = drive_workers(procs, [batches[i::n] for i in range(n)])  # round-robin
    if any(r["failed"] or r["deferred"] for r in results):
        raise RuntimeError(f"worker reports: {results}")
    return elapsed


def site_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``mailgate`` process started by this benchmark."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MAILGATE_") and k not in {"PYTHONPATH"}
    }
    env.update(
        PYTHONPATH=str(ROOT),
        MAILGATE_VAR_DIR=str(var_dir),
        MAILGATE_DOMAIN=DOMAIN,
        MAILGATE_COMPANY_DOMAINS="corp.example",
        MAILGATE_VERIFY_DKIM="no",
        MAILGATE_HTTP_PORT=str(free_port()),
        **extra,
    )
    return env


def celery_on_redis(
    url: str, sink: Sink, factory: Any, post_id: int, batches: list[list[int]], tmp: Path
) -> float:
    """A real ``mailgate worker`` (one pool process) on a scratch Redis, fed the send
    tasks of one post. The first batch warms it up; the rest are timed until every row
    is recorded as sent. Returns copies per second over the timed batches."""
    from celery import Celery

    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1"]
        + ["--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    broker = f"redis://127.0.0.1:{redis_port}/0"
    worker = None
    try:
        wait_port(redis_port)
        env = site_env(
            tmp / "celery-var",
            MAILGATE_DATABASE_URL=url,
            MAILGATE_BROKER_URL=broker,
            MAILGATE_RELAY_URL=sink.url,
            MAILGATE_SECRET_KEY=SECRET,
        )
        with (tmp / "celery-worker.log").open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "mailgate.cli", "worker", "--concurrency", "1"]
                + ["--queues", "outbound", "--loglevel", "WARNING"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = Celery("bench", broker=broker)

        def sent() -> int:
            return status_counts(factory, post_id).get("sent", 0)

        def wait_sent(expected: int, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while sent() < expected:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError(f"celery worker: {sent()}/{expected} sent; see its log")
                time.sleep(0.02)

        client.send_task("mailgate.send", args=[batches[0]], queue="outbound")
        wait_sent(len(batches[0]), 60)
        rest = sum(len(b) for b in batches[1:])
        start = time.perf_counter()
        for batch in batches[1:]:
            client.send_task("mailgate.send", args=[batch], queue="outbound")
        wait_sent(len(batches[0]) + rest, 120)
        elapsed = time.perf_counter() - start
        client.close()
        return rest / elapsed
    finally:
        if worker is not None:
            stop_process(worker, timeout=20)
        stop_process(redis)


# ---------------------------------------------------------------- memory of a running site


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _kb(pid: int, path: str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(roots: dict[str, int]) -> dict[str, tuple[int, int, int]]:
    """For each named root: (RSS kB, PSS kB, processes) summed over it and its descendants."""
    tree = _children()
    out = {}
    for name, root in roots.items():
        pids, todo = [], [root]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(tree.get(pid, []))
        rss = sum(_kb(p, "status", "VmRSS:") for p in pids)
        pss = sum(_kb(p, "smaps_rollup", "Pss:") for p in pids)
        out[name] = (rss, pss, len(pids))
    return out


def memory_run(sink_kind: str, tmp: Path) -> dict[str, Any]:
    """Gateway + worker + beat on the embedded defaults; peak summed RSS under load."""
    from mailgate.db import make_engine, make_sessionmaker, upgrade_database

    var_dir = tmp / "site"
    var_dir.mkdir()
    url = f"sqlite:///{var_dir / 'mailgate.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    seed(make_sessionmaker(engine), MEMORY_MEMBERS)
    engine.dispose()
    sink = Sink(sink_kind, tmp)
    smtp_port = free_port()
    env = site_env(var_dir, MAILGATE_SMTP_PORT=str(smtp_port), MAILGATE_RELAY_URL=sink.url)
    exe = [sys.executable, "-m", "mailgate.cli"]
    commands = {
        "gateway": [*exe, "serve"],
        "worker": [*exe, "worker", "--concurrency", "1"],
        "beat": [*exe, "beat"],
    }
    procs: dict[str, subprocess.Popen[Any]] = {}
    samples: list[dict[str, tuple[int, int, int]]] = []
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            samples.append(tree_memory({n: p.pid for n, p in procs.items()}))
            stop.wait(0.2)

    thread = threading.Thread(target=sampler, daemon=True)
    result: dict[str, Any] = {}
    try:
        for name, argv in commands.items():
            with (tmp / f"{name}.log").open("wb") as log:
                procs[name] = subprocess.Popen(
                    argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
                )
        thread.start()
        wait_port(smtp_port, 60)
        time.sleep(5)  # idle: everything imported, beat ticking, worker polling
        result["idle"] = samples[-1]
        start = time.perf_counter()
        for n in range(MEMORY_POSTS):
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
                client.sendmail(AUTHOR, [f"eng@{DOMAIN}"], post_message(n))
        expected = MEMORY_POSTS * MEMORY_MEMBERS
        result["delivered"] = sink.wait_for(expected, timeout=120)
        result["seconds"] = time.perf_counter() - start
        result["expected"] = expected
        time.sleep(0.5)
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"mailgate {name} exited early; see {tmp / name}.log")
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            stop_process(proc, timeout=20)
        sink.stop()
    peak = max(samples, key=lambda s: sum(v[0] for v in s.values()))
    result["peak"] = peak
    result["peak_pss"] = max(sum(v[1] for v in s.values()) for s in samples)
    result["samples"] = len(samples)
    return result


# ---------------------------------------------------------------- main


def drive_workers(
    procs: Sequence[subprocess.Popen[str]], shares: Sequence[object]
) -> tuple[float, list[dict[str, Any]]]:
    """Hand each worker process its share (a JSON line), wait for every "ready", say
    "go" to all, and return the seconds until the last one reported its JSON result.
    The processes are ended on the way out, whatever happens."""
    try:
        for proc, share in zip(procs, shares, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(share) + "\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker process failed to start")
        start = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("a worker process died")
            results.append(json.loads(line))
        return time.perf_counter() - start, results
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                stop_process(proc)


class TimedRelay:
    """Wraps a relay to add the time spent connected to it (sending) to ``phases``."""

    def __init__(self, inner: Any, phases: dict[str, float]) -> None:
        self.inner = inner
        self.phases = phases
        phases["relay"] = 0.0

    @contextmanager
    def open(self) -> Iterator[Any]:
        start = time.perf_counter()
        try:
            with self.inner.open() as connection:
                yield connection
        finally:
            self.phases["relay"] += time.perf_counter() - start

    def send(self, mail_from: str, recipients: Sequence[str], message: bytes) -> Any:
        return self.inner.send(mail_from, recipients, message)


def timed(phases: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` adding its running time to ``phases[name]`` (a benchmark's split by stage)."""
    phases[name] = 0.0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phases[name] += time.perf_counter() - start

    return wrapper


def pick_sink(choice: str) -> str:
    if choice == "auto":
        return "smtp-sink" if shutil.which("smtp-sink") else "aiosmtpd"
    if choice == "smtp-sink" and not shutil.which("smtp-sink"):
        raise SystemExit("smtp-sink not found (apt-get install postfix provides it)")
    return choice


def bare_rate(sink_kind: str, tmp: Path, copies: Sequence[tuple[str, str, bytes]]) -> float:
    sink = Sink(sink_kind, tmp)
    try:
        rate = len(copies) / bare_send(sink.port, copies)
        if sink.wait_for(len(copies)) != len(copies):
            raise RuntimeError("the sink did not count every baseline copy")
    finally:
        sink.stop()
    return rate


def verify(factory: Any, post_id: int, sink: Sink, expected: int, what: str) -> None:
    counts = status_counts(factory, post_id)
    received = sink.wait_for(expected)
    if counts != {"sent": expected} or received != expected:
        raise RuntimeError(f"{what}: rows {counts}, sink counted {received} of {expected}")


def throughput(args: argparse.Namespace, sink_kind: str, tmp: Path) -> dict[str, Any]:
    from mailgate.db import make_engine, make_sessionmaker

    url, cleanup = prepare_database(args.database_url, tmp)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    out: dict[str, Any] = {"url": url}
    try:
        seed(factory, args.members)
        # The baseline's copies are post A's, rendered beforehand; the 1-process run then
        # sends post A's rows (the same recipients and tokens); 2 processes get post B.
        post_a, post_b = make_post(factory, 1), make_post(factory, 2)
        out["fan_out"], batches_a = fan_out_post(factory, post_a)
        _, batches_b = fan_out_post(factory, post_b)
        out["render"], copies = render_all(factory, post_a)
        out["copies"] = len(copies)
        out["batches"] = len(batches_a)
        out["size"] = sum(len(c[2]) for c in copies) // max(1, len(copies))

        # The baseline runs before and after the worker runs: on a busy machine one
        # sample can be off, and the ratio is taken against their mean.
        out["bare"] = [bare_rate(sink_kind, tmp, copies)]
        for n, post_id, batches in ((1, post_a, batches_a), (2, post_b, batches_b)):
            sink = Sink(sink_kind, tmp)
            try:
                out[f"workers{n}"] = len(copies) / run_workers(url, sink, post_id, batches, n)
                verify(factory, post_id, sink, len(copies), f"{n} worker process(es)")
            finally:
                sink.stop()
        out["bare"].append(bare_rate(sink_kind, tmp, copies))
        if args.celery and shutil.which("redis-server") and len(batches_a) > 1:
            post_c = make_post(factory, 3)
            _, batches_c = fan_out_post(factory, post_c)
            sink = Sink(sink_kind, tmp)
            try:
                out["celery"] = celery_on_redis(url, sink, factory, post_c, batches_c, tmp)
                verify(factory, post_c, sink, len(copies), "celery worker on Redis")
            finally:
                sink.stop()
    finally:
        engine.dispose()
        if cleanup is not None:
            cleanup()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=5000)
    parser.add_argument("--database-url")
    parser.add_argument("--sink", choices=["auto", "smtp-sink", "aiosmtpd"], default="auto")
    parser.add_argument("--no-celery", dest="celery", action="store_false")
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    # Internal: the subprocesses this script starts.
    parser.add_argument("--serve-sink", type=int)
    parser.add_argument("--send-worker", action="store_true")
    parser.add_argument("--relay-url")
    parser.add_argument("--post-id", type=int)
    args = parser.parse_args()
    if args.serve_sink:
        serve_sink(args.serve_sink)
        return
    if args.send_worker:
        send_worker(args.database_url, args.relay_url, args.post_id)
        return

    sink_kind = pick_sink(args.sink)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        t = throughput(args, sink_kind, Path(tmp))
        m = memory_run(sink_kind, Path(tmp)) if args.memory else None
    engine = "PostgreSQL" if t["url"].startswith("postgresql") else "SQLite (WAL)"
    n, bare = t["copies"], sum(t["bare"]) / len(t["bare"])
    print(f"fan-out benchmark on {engine}, sink: {sink_kind} (own process, 127.0.0.1)")
    print(
        f"one post to {n:,} members: {t['batches']} send batches, copies of "
        f"{t['size']:,} bytes (text + HTML, no DKIM)"
    )
    print(f"  fan_out (rows + outbox)      : {t['fan_out']:8.2f} s")
    print(f"  render only, one process     : {n / t['render']:8.0f} copies/s")
    runs = " and ".join(f"{r:.0f}" for r in t["bare"])
    print(f"  bare smtplib, pre-rendered   : {bare:8.0f} copies/s  (baseline; mean of {runs})")
    print(f"  send_batch, 1 worker process : {t['workers1']:8.0f} copies/s")
    print(f"  send_batch, 2 worker procs   : {t['workers2']:8.0f} copies/s")
    if "celery" in t:
        print(f"  celery worker on Redis (c=1) : {t['celery']:8.0f} copies/s")
    ratio = t["workers1"] / bare
    print(
        f"  ratio 1 process / baseline   : {ratio:8.2f}  (bar >= 0.50: "
        f"{'met' if ratio >= 0.5 else 'MISSED'})"
    )
    print(f"  ratio 2 processes / baseline : {t['workers2'] / bare:8.2f}")
    print(f"  checked: every row sent, sink counted {n:,} per run")
    if m is not None:
        peak_mb = sum(v[0] for v in m["peak"].values()) / 1024
        idle_mb = sum(v[0] for v in m["idle"].values()) / 1024
        parts = ", ".join(
            f"{name} {rss / 1024:.0f} MB ({procs} proc)"
            for name, (rss, _, procs) in m["peak"].items()
        )
        print(
            f"gateway + worker (concurrency 1) + beat, embedded defaults, "
            f"{MEMORY_POSTS} posts x {MEMORY_MEMBERS} members:"
        )
        print(
            f"  delivered                    : {m['delivered']:,}/{m['expected']:,} copies "
            f"in {m['seconds']:.1f} s"
        )
        print(f"  idle total RSS               : {idle_mb:8.0f} MB")
        print(
            f"  peak total RSS               : {peak_mb:8.0f} MB  (aim < 300: "
            f"{'met' if peak_mb < 300 else 'MISSED'})"
        )
        print(f"    at the peak                : {parts}")
        print(f"  peak total PSS (shared once) : {m['peak_pss'] / 1024:8.0f} MB")
        if m["delivered"] != m["expected"]:
            print("  WARNING: not every copy reached the sink")
    print(f"(benchmark took {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
