"""Benchmark: inbound acceptance through the gateway, and the ingest pipeline per process.

1. Gateway: 10 concurrent SMTP clients on 127.0.0.1 send 5 KB messages; messages per
   second accepted (committed) by ``mailgate serve``'s handler, next to a no-op aiosmtpd
   server (answers 250 and keeps nothing) measured in the same run, each in its own
   process. The bar: at least half the no-op rate.
2. Pipeline: raw messages (5–20 KB replies with quoted history, signatures, HTML
   alternatives) already stored; posts per second through ``run_ingest`` (parse →
   classify → sender → thread → body → post committed) in one process, next to the
   bare stdlib parse of the same bytes. The bar: at least 300 posts/s.

Run: ``.venv/bin/python bench/ingest.py [--messages N] [--database-url URL]``
(default SQLite in a temp dir; PostgreSQL with e.g.
``--database-url postgresql+psycopg://postgres@127.0.0.1/test`` — it creates and drops a
scratch database).
"""

from __future__ import annotations

import argparse
import email
import random
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.fanout import free_port, prepare_database  # noqa: E402 - after the path insert

DOMAIN = "lists.bench.example"
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
WORDS = (
    "deploy cache latency customer roadmap budget review launch metric incident quarter "
    "hiring design tests migration onboarding feedback release pricing support"
).split()


def paragraph(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    lines, line = [], ""
    for word in text.split():
        if len(line) + len(word) > 72:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def reply_message(rng: random.Random, i: int, size: int, sender: str) -> bytes:
    new = paragraph(rng, 40)
    quoted = "\n".join("> " + line for line in paragraph(rng, size // 7).splitlines())
    body = (
        f"{new}\n\nThanks,\nAlice\n\nOn Tue, 3 Mar 2026 at 10:12, Bob <bob@corp.example> "
        f"wrote:\n{quoted}\n"
    )
    html = "<div dir=ltr>" + new.replace("\n", "<br>") + "</div><div class=gmail_quote>…</div>"
    boundary = f"b{i}"
    text = (
        f"From: Alice <{sender}>\r\nTo: eng@{DOMAIN}\r\nSubject: Re: [eng] Plan {i % 50}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@corp.example>\r\n"
        f"In-Reply-To: <root{i % 50}@corp.example>\r\nDate: Tue, 3 Mar 2026 10:15:00 +0000\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary={boundary}\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + body.replace("\n", "\r\n")
        + f"\r\n--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
        f"--{boundary}--\r\n"
    )
    return text.encode()


def plain_message(i: int, size: int) -> bytes:
    head = (
        f"From: alice@corp.example\r\nTo: eng@{DOMAIN}\r\nSubject: load {i}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@corp.example>\r\n\r\n"
    )
    line = "x" * 70 + "\r\n"
    return (head + line * (size // len(line))).encode()


# ---------------------------------------------------------------- servers (subprocess)


def serve(kind: str, port: int, url: str) -> None:
    from aiosmtpd.controller import Controller

    if kind == "noop":

        class Noop:
            async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
                return "250 OK"

        controller = Controller(Noop(), hostname="127.0.0.1", port=port)
    else:
        from mailgate.db import make_engine, make_sessionmaker
        from mailgate.inbox import SqlInbox
        from mailgate.smtp import GatewayController, GatewayHandler, Limits

        inbox = SqlInbox(make_sessionmaker(make_engine(url)))
        handler = GatewayHandler(
            inbox,
            domain=DOMAIN,
            secrets=(SECRET,),
            limits=Limits(max_messages_per_session=10**9, sender_rate=10**9),
        )
        controller = GatewayController(
            handler,
            hostname="127.0.0.1",
            port=port,
            trusted_peers=("127.0.0.0/8",),
            server_name=DOMAIN,
        )
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    controller.stop()


def load(port: int, clients: int, per_client: int, size: int) -> float:
    """Messages per second with ``clients`` concurrent connections."""
    payloads = [plain_message(i, size) for i in range(per_client)]
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
                for raw in payloads:
                    smtp.sendmail("alice@corp.example", [f"eng@{DOMAIN}"], raw)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]!r}")
    return clients * per_client / elapsed


def measure_server(kind: str, url: str, clients: int, per_client: int, size: int) -> float:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port), "--database-url", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        load(port, 2, 5, size)  # warm-up: connections, imports, first commits
        return load(port, clients, per_client, size)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


# ---------------------------------------------------------------- setup


def seed(url: str, members: int) -> None:
    from mailgate import directory
    from mailgate.db import make_engine, make_sessionmaker, unit_of_work

    factory = make_sessionmaker(make_engine(url))
    with unit_of_work(factory) as session:
        directory.create_list(session, "bench", "eng", visibility="members")
        rows = [
            directory.ImportRow(i + 2, f"m{i}@corp.example", f"M {i}", "UTC", "Eng")
            for i in range(members)
        ]
        rows.append(directory.ImportRow(1, "alice@corp.example", "Alice", "UTC", "Eng"))
        directory.import_members(session, "bench", "eng", rows)


def pipeline(url: str, count: int) -> tuple[float, float, int]:
    from sqlalchemy import func, select

    from mailgate.db import make_engine, make_sessionmaker
    from mailgate.inbox import SqlInbox
    from mailgate.ingest import IngestContext, run_ingest_batch
    from mailgate.models import Post
    from mailgate.smtp import Accepted

    rng = random.Random(7)
    raws = [
        reply_message(rng, i, rng.randint(5_000, 20_000), "alice@corp.example")
        for i in range(count)
    ]
    factory = make_sessionmaker(make_engine(url))
    inbox = SqlInbox(factory)
    ids: list[int] = []
    for start in range(0, count, 200):
        ids += inbox.store_many(
            [
                Accepted(r, "alice@corp.example", (f"eng@{DOMAIN}",), "127.0.0.1", "bench")
                for r in raws[start : start + 200]
            ]
        )
    begin = time.perf_counter()
    for raw in raws:
        email.message_from_bytes(raw)
    baseline = count / (time.perf_counter() - begin)
    ctx = IngestContext(domain=DOMAIN, secrets=(SECRET,))
    begin = time.perf_counter()
    # Batches of 10, as the gateway's group commit hands them over under load.
    for start in range(0, len(ids), 10):
        run_ingest_batch(factory, ids[start : start + 10], ctx)
    rate = count / (time.perf_counter() - begin)
    with factory() as session:
        posts = int(session.scalar(select(func.count()).select_from(Post)) or 0)
    return rate, baseline, posts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", choices=["noop", "gateway"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--database-url")
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.database_url)
        return

    clients, size = 10, 5_000
    per_client = max(1, args.messages // clients)
    with tempfile.TemporaryDirectory() as tmp:
        url, cleanup = prepare_database(args.database_url, Path(tmp))
        try:
            seed(url, 200)
            noop = measure_server("noop", url, clients, per_client, size)
            gateway = measure_server("gateway", url, clients, per_client, size)
            rate, baseline, posts = pipeline(url, min(args.messages, 1500))
        finally:
            if callable(cleanup):
                cleanup()
    engine = "PostgreSQL" if url.startswith("postgresql") else "SQLite (WAL, synchronous=FULL)"
    print(f"ingest benchmark on {engine}")
    print(f"gateway, {clients} clients x {per_client} messages of {size // 1000} KB:")
    print(f"  no-op aiosmtpd server     : {noop:8.0f} msg/s")
    print(f"  mailgate gateway (commit) : {gateway:8.0f} msg/s")
    print(
        f"  ratio gateway / no-op     : {gateway / noop:8.2f}  (bar >= 0.50: "
        f"{'met' if gateway / noop >= 0.5 else 'MISSED'})"
    )
    print("pipeline, one process, 5-20 KB replies:")
    print(f"  stdlib parse only         : {baseline:8.0f} msg/s")
    print(
        f"  run_ingest_batch (by 10)   : {rate:8.0f} posts/s  ({posts} posts; bar >= 300: "
        f"{'met' if rate >= 300 else 'MISSED'})"
    )
    print(f"  ratio pipeline / parse    : {rate / baseline:8.2f}")


if __name__ == "__main__":
    main()
