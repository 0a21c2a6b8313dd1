"""Benchmark: how long after the 250 the first copy of a post arrives, on the default install.

The embedded defaults as ``make run`` starts them: ``mailgate serve``, ``mailgate worker
--concurrency 1`` and ``mailgate beat`` on SQLite, the filesystem broker under
``var/broker`` and the Maildir relay ``var/outbox``; a list of 1,000 every-message
members; posts go in over SMTP on 127.0.0.1, each by another member. For each post, the
seconds from the 250 to its first copy in ``var/outbox/new`` (Maildir names start with
the writer's ``time.time_ns()``; the Subject says which post a copy belongs to).

- Idle: 20 posts one at a time, each once every copy of the last one has arrived.
- Back to back: 200 posts, each sent as soon as the last one's first copy is out, so
  a new post always finds the worker busy with the copies of the ones before (the
  shape of issue 12, item 5: 1.86 s). The faster the first copies, the faster the
  posts come: the offered load rises with the fix. The bar: median under 1 s.

Beside them, in the same run, the baseline: the floor, the same work with no broker in
between. On a second database seeded the same way, one process stores the raw message,
runs ``run_ingest_batch``, ``fan_out`` and the first ``send_batch`` back to back into a
Maildir; the figure is the time from the commit to the first copy written.

Also printed: the copies per second the back-to-back run delivered (first 250 to last
copy: faster first copies must not cost throughput), the CPU the worker spends while it
has nothing to do for 10 s (the cost of waiting for work), and, from the worker's log
(one INFO line per task received), where an idle post's time goes.

Run: ``.venv/bin/python bench/latency.py [--posts 200] [--idle-posts 20] [--members 1000]``
(about 4-5 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.fanout import (  # noqa: E402 - after the path insert, as a script
    AUTHOR,
    DOMAIN,
    SECRET,
    _children,
    builder,
    free_port,
    post_message,
    seed,
    site_env,
    stop_process,
    wait_port,
)

TASK_RECEIVED = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] "
    r"Task (mailgate\.\w+)\[[^\]]+\] received"
)
ROUND = re.compile(rb"^Subject:[^\r\n]*round (\d+)", re.MULTILINE)
IDLE_SECONDS = 10.0
STAGES = ("mailgate.ingest", "mailgate.fanout", "mailgate.send")


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a process and its descendants so far."""
    tree, todo, total = _children(), [root], 0
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, []))
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- the floor


class FirstCopy:
    """A relay wrapper that notes when the first copy was handed to the real relay."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.at: float | None = None

    @contextmanager
    def open(self) -> Iterator[Any]:
        with self.inner.open() as connection:
            outer = self

            class Connection:
                def send(self, mail_from: str, rcpts: Sequence[str], data: bytes) -> Any:
                    result = connection.send(mail_from, rcpts, data)
                    if outer.at is None:
                        outer.at = time.perf_counter()
                    return result

            yield Connection()

    def send(self, mail_from: str, rcpts: Sequence[str], data: bytes) -> Any:
        return self.inner.send(mail_from, rcpts, data)


def floor_run(tmp: Path, members: int, posts: int) -> list[float]:
    """Seconds from the commit to the first copy with the stages called back to back."""
    from sqlalchemy import select

    from mailgate.db import make_engine, make_sessionmaker, unit_of_work, upgrade_database
    from mailgate.delivery import SEND_TASK, fan_out, send_batch
    from mailgate.inbox import SqlInbox
    from mailgate.ingest import IngestContext, run_ingest_batch
    from mailgate.models import OutboxEntry, Post
    from mailgate.smtp import Accepted
    from worker.mailer import MaildirMailer

    url = f"sqlite:///{tmp / 'floor.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    seed(factory, members)
    context = IngestContext(domain=DOMAIN, secrets=(SECRET,))
    copy_builder = builder()
    maildir = tmp / "floor-outbox"
    figures = []
    try:
        for n in range(posts + 1):  # the first one warms up, as the site's warm-up post
            author, raw = message(n, members)
            accepted = Accepted(raw, author, (f"eng@{DOMAIN}",), "127.0.0.1", "bench")
            raw_ids = SqlInbox(factory).store_many([accepted])
            start = time.perf_counter()
            run_ingest_batch(factory, list(raw_ids), context)
            with factory() as session:
                post_id = session.scalar(select(Post.id).order_by(Post.id.desc()).limit(1))
            with unit_of_work(factory) as session:
                fan_out(session, int(post_id or 0))
            with factory() as session:
                args = session.scalars(
                    select(OutboxEntry.args)
                    .where(OutboxEntry.task == SEND_TASK, OutboxEntry.key.like(f"send:{post_id}:%"))
                    .order_by(OutboxEntry.id)
                    .limit(1)
                ).one()  # the post's first send batch
            relay = FirstCopy(MaildirMailer(maildir))
            send_batch(factory, list(args[0]), builder=copy_builder, relay=relay)
            if relay.at is None:
                raise RuntimeError("the floor run sent no copy")
            if n:
                figures.append(relay.at - start)
    finally:
        engine.dispose()
    return figures


# ---------------------------------------------------------------- the site


class Arrivals:
    """Watches the site's Maildir ``new/`` from a thread: for each copy, the post it
    belongs to (``round N`` in its Subject) and the moment the worker wrote it (Maildir
    names start with ``time.time_ns()``); each copy is removed once counted, so the
    folder stays small whatever the backlog."""

    def __init__(self, new: Path) -> None:
        self.new = new
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.count: dict[int, int] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                names = os.listdir(self.new)
            except FileNotFoundError:
                names = []
            for name in names:
                path = self.new / name
                with path.open("rb") as fh:
                    found = ROUND.search(fh.read(4096))
                os.unlink(path)
                if found is None:
                    continue
                n, at = int(found[1]), int(name.split(".", 1)[0]) / 1e9
                with self.lock:
                    self.first[n] = min(at, self.first.get(n, at))
                    self.last[n] = max(at, self.last.get(n, at))
                    self.count[n] = self.count.get(n, 0) + 1
            if not names:
                self.stop.wait(0.002)

    def wait(self, n: int, copies: int, deadline: float) -> float:
        """The first copy of post ``n`` once ``copies`` of them have arrived."""
        while True:
            with self.lock:
                if self.count.get(n, 0) >= copies:
                    return self.first[n]
            if time.time() > deadline:
                raise RuntimeError(f"post {n}: {self.count.get(n, 0)} of {copies} copies")
            time.sleep(0.002)


def message(n: int, members: int) -> tuple[str, bytes]:
    """Post ``n``, by a different member each time and with its own first line: the
    gateway's per-author rate and the loop guard (same text again) see a real list."""
    author = f"m{n % members}@corp.example"
    raw = post_message(n).replace(AUTHOR.encode(), author.encode())
    return author, raw.replace(b"Hi all,", f"Hi all (post {n}),".encode())


def send_post(port: int, n: int, members: int) -> float:
    author, raw = message(n, members)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(author, [f"eng@{DOMAIN}"], raw)
        return time.time()


def received_tasks(log: Path) -> list[tuple[float, str]]:
    """(wall-clock second, task name) for each task the worker's main process received."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        match = TASK_RECEIVED.match(line)
        if match:
            stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((stamp, match[2]))
    return out


def split_stages(
    sent: Sequence[tuple[float, float]], tasks: Sequence[tuple[float, str]]
) -> dict[str, list[float]]:
    """Per post: 250 → ingest received, → fanout received, → first send received after
    it, → first copy (for a post sent while another is still going out, the send
    received may be the earlier post's: the split is exact only for idle posts)."""
    parts: dict[str, list[float]] = {
        "250 -> ingest received": [],
        "ingest received -> fanout received": [],
        "fanout received -> send received": [],
        "send received -> first copy": [],
    }
    for t250, t_first in sent:
        marks = [t250]
        for stage in STAGES:
            later = [t for t, name in tasks if name == stage and t >= marks[-1] - 0.002]
            if not later or later[0] > t_first + 0.002:
                break
            marks.append(later[0])
        else:
            marks.append(t_first)
            for key, a, b in zip(parts, marks, marks[1:], strict=False):
                parts[key].append(max(0.0, b - a))
    return parts


def site_run(tmp: Path, members: int, idle_posts: int, posts: int) -> dict[str, Any]:
    """Idle posts (each once the last one is delivered), then posts back to back (each
    once the last one's first copy is out): per post, seconds from 250 to first copy."""
    from mailgate.db import make_engine, make_sessionmaker, upgrade_database

    var_dir = tmp / "site"
    var_dir.mkdir()
    url = f"sqlite:///{var_dir / 'mailgate.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    seed(make_sessionmaker(engine), members)
    engine.dispose()
    port = free_port()
    env = site_env(var_dir, MAILGATE_SMTP_PORT=str(port))
    exe = [sys.executable, "-m", "mailgate.cli"]
    commands = {
        "gateway": [*exe, "serve"],
        "worker": [*exe, "worker", "--concurrency", "1", "--loglevel", "INFO"],
        "beat": [*exe, "beat"],
    }
    procs: dict[str, subprocess.Popen[Any]] = {}
    arrivals = Arrivals(var_dir / "outbox" / "new")
    idle: list[tuple[float, float]] = []
    busy: list[tuple[float, float]] = []
    copies = members  # every member but the author
    try:
        for name, argv in commands.items():
            with (tmp / f"{name}.log").open("wb") as log:
                procs[name] = subprocess.Popen(
                    argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
                )
        wait_port(port, 60)
        arrivals.thread.start()
        for n in range(idle_posts + 1):  # the first one warms the worker up
            t250 = send_post(port, n, members)
            t_first = arrivals.wait(n, copies, t250 + 120)
            if n:
                idle.append((t250, t_first))
            else:
                cpu = cpu_seconds(procs["worker"].pid)
                time.sleep(IDLE_SECONDS)  # nothing to do: what does waiting cost?
                idle_cpu = cpu_seconds(procs["worker"].pid) - cpu
        sent: dict[int, float] = {}
        for n in range(idle_posts + 1, idle_posts + 1 + posts):
            sent[n] = send_post(port, n, members)
            arrivals.wait(n, 1, sent[n] + 120)
        for n, t250 in sent.items():
            busy.append((t250, arrivals.wait(n, copies, time.time() + 300)))
        drained = max(arrivals.last[n] for n in sent) - min(sent.values())
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"mailgate {name} exited; see {tmp / name}.log")
    finally:
        arrivals.stop.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            stop_process(proc, timeout=20)
    return {
        "idle": [b - a for a, b in idle],
        "busy": [b - a for a, b in busy],
        "rate": posts * copies / drained,
        "idle_cpu": idle_cpu,
        "stages": split_stages(idle, received_tasks(tmp / "worker.log")),
        "errors": (tmp / "worker.log").read_text(errors="replace").count("Unrecoverable"),
    }


def describe(values: Sequence[float]) -> str:
    return (
        f"{statistics.median(values):6.3f} s median "
        f"(p90 {percentile(values, 0.9):.3f}, max {max(values):.3f}, {len(values)} posts)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=200, help="posts back to back")
    parser.add_argument("--idle-posts", type=int, default=20)
    parser.add_argument("--members", type=int, default=1000)
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        floor = floor_run(Path(tmp), args.members, args.idle_posts)
        site = site_run(Path(tmp), args.members, args.idle_posts, args.posts)
    print(
        f"first-copy latency, embedded defaults (SQLite, filesystem broker, Maildir), "
        f"one worker process (concurrency 1), {args.members:,} members:"
    )
    print(f"  floor, stages back to back   : {describe(floor)}  (baseline)")
    print(f"  site, idle (one at a time)   : {describe(site['idle'])}")
    print(f"  site, posts back to back     : {describe(site['busy'])}")
    busy = statistics.median(site["busy"])
    print(f"  ratio back to back / floor   : {busy / statistics.median(floor):6.1f}")
    print(
        f"  bar: back to back median < 1 s: {'met' if busy < 1.0 else 'MISSED'}; "
        f"idle median {statistics.median(site['idle']) - statistics.median(floor):.3f} s "
        "above the floor"
    )
    print(
        f"  back-to-back copies delivered: {site['rate']:6.0f} copies/s "
        f"({args.posts} posts x {args.members:,}, first 250 to last copy)"
    )
    print(
        f"  idle worker CPU              : {site['idle_cpu'] * 1000:6.0f} ms in "
        f"{IDLE_SECONDS:.0f} s with nothing to do (main + pool process)"
    )
    print("  where an idle post's time goes (medians, from the worker's log):")
    for stage, values in site["stages"].items():
        if values:
            print(f"    {stage:34}: {statistics.median(values):6.3f} s")
    if site["errors"]:
        print(f"  WARNING: the worker logged {site['errors']} unrecoverable error(s)")
    print(f"(benchmark took {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
