"""The embedded broker (issue 12, item 5): a bad message file must not stop the worker,
a publish is never seen half-written, and a consumer wakes on a publish, not a timer.

The transport under test is the one the embedded configuration selects
(``worker.app.celery_config`` with no broker URL), so these tests speak about what
``make run`` runs, whichever class that is.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import select

from mailgate.models import Post
from mailgate.settings import load_settings
from tests.conftest import free_port
from tests.worker.conftest import port_open, seed, send, wait_for
from worker.app import celery_config

# A message cut off mid-way, as a reader of a half-written file would see it. The token
# stands for what a real message carries: it must never reach a log.
TRUNCATED = (
    b'{"body": "W1s1XSwge30sIHsiY2FsbGJhY2tzIjogbnVsbH1d", "content-encoding": "utf-8", '
    b'"headers": {"lang": "py", "task": "mailgate.send", "argsrepr": "tok-SECRET-ab12'
)


def embedded_conf(var: Path, **options: Any) -> dict[str, Any]:
    conf = celery_config(load_settings({"MAILGATE_VAR_DIR": str(var), "MAILGATE_BROKER_URL": ""}))
    conf["broker_transport_options"].update(options)
    return conf


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Any]:
    """A factory of kombu connections on the embedded broker of a fresh ``var``."""
    opened: list[Connection] = []

    def connect(**options: Any) -> Connection:
        conf = embedded_conf(tmp_path / "var", **options)
        conn = Connection(
            conf["broker_url"],
            transport=conf.get("broker_transport"),
            transport_options=conf["broker_transport_options"],
        )
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.release()


def queue_folder(tmp_path: Path) -> Path:
    return tmp_path / "var" / "broker" / "queue"


def is_message(name: str, queue: str) -> bool:
    """A file a reader takes from ``queue`` (kombu's naming: ``<ms>_<uuid>.<queue>.msg``)."""
    return name.partition(".")[2] == f"{queue}.msg"


def bad_file(folder: Path, queue: str, content: bytes, order: int = 1) -> Path:
    """A message file as a reader finds it, named to be taken before any real message."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{order:03d}_{uuid.uuid4()}.{queue}.msg"  # "0…" sorts first
    path.write_bytes(content)
    return path


# ---------------------------------------------------------------- a real worker survives


def test_unreadable_message_files_do_not_stop_a_real_worker(  # type: ignore[no-untyped-def]
    mailgate_env, run_cli, session_factory, processes, tmp_path
) -> None:
    """A zero-byte and a truncated ``.msg`` in the queue folder, before the worker starts
    and again while it runs: it sets each aside with a log line naming it, and goes on
    to process the mail that comes after."""
    seed(run_cli)
    port = free_port()
    env = {**mailgate_env, "MAILGATE_SMTP_PORT": str(port), "MAILGATE_BROKER_URL": ""}
    var = Path(mailgate_env["MAILGATE_VAR_DIR"])
    queue = var / "broker" / "queue"
    early = [bad_file(queue, "ingest", b""), bad_file(queue, "outbound", TRUNCATED, order=2)]
    log = tmp_path / "worker.log"
    worker = processes(["worker", "--concurrency", "1"], env, log)
    processes(["serve"], env, tmp_path / "serve.log")
    wait_for(lambda: port_open(port), what="the gateway to listen")

    def posts() -> list[str]:
        with session_factory() as s:
            return list(s.scalars(select(Post.text).order_by(Post.id)))

    def posted(count: int) -> bool:
        return len(posts()) >= count or worker.poll() is not None

    send(port, "alice@corp.example", "eng@lists.corp.example", "After the bad files")
    wait_for(lambda: posted(1), timeout=60, what="the first post or the worker's end")
    assert worker.poll() is None, f"the worker stopped:\n{log.read_text()[-3000:]}"

    late = [bad_file(queue, "ingest", b""), bad_file(queue, "fanout", TRUNCATED, order=2)]
    wait_for(lambda: not any(p.exists() for p in late), what="the worker to take the files")
    send(port, "alice@corp.example", "eng@lists.corp.example", "And after more of them")
    wait_for(lambda: posted(2), timeout=60, what="the second post or the worker's end")
    assert worker.poll() is None, f"the worker stopped:\n{log.read_text()[-3000:]}"
    assert posts() == ["After the bad files", "And after more of them"]

    bad = var / "broker" / "bad"
    assert sorted(os.listdir(bad)) == sorted(p.name for p in early + late)
    assert not any(p.exists() for p in early + late)
    text = log.read_text()
    for path, reason in zip(early + late, ["empty", "not-json"] * 2, strict=True):
        assert f"set aside unreadable message file {path.name} ({reason}" in text
    assert "Unrecoverable error" not in text
    assert "tok-SECRET" not in text  # names and reasons only, never a message's content


# ---------------------------------------------------------------- the reader, in process


def test_the_reader_sets_bad_files_aside_and_takes_the_next_message(  # type: ignore[no-untyped-def]
    broker, tmp_path, caplog
) -> None:
    folder = queue_folder(tmp_path)
    conn = broker()
    inbox = conn.SimpleQueue("ingest")  # declares the queue, as a worker does
    bad = [
        bad_file(folder, "ingest", b""),
        bad_file(folder, "ingest", b"   \n"),
        bad_file(folder, "ingest", TRUNCATED),
        bad_file(folder, "ingest", b"\xff\xfe not text"),
        bad_file(folder, "ingest", b"[1, 2, 3]"),
    ]
    inbox.put({"raw_ids": [7]})
    with caplog.at_level("WARNING", logger="mailgate.broker"):
        message = inbox.get(timeout=10)
    assert message.payload == {"raw_ids": [7]}
    message.ack()
    reasons = ["empty", "empty", "not-json", "not-utf8", "not-an-object"]
    for path, reason in zip(bad, reasons, strict=True):
        assert (tmp_path / "var" / "broker" / "bad" / path.name).exists()
        assert f"unreadable message file {path.name} ({reason}," in caplog.text
    assert "tok-SECRET" not in caplog.text
    assert [p.name for p in folder.iterdir()] == []


# ---------------------------------------------------------------- publishing is atomic


@pytest.fixture
def file_events() -> Iterator[list[tuple[str, str, str]]]:
    """Audit events of this thread while the fixture is active: ("open-write", path, "")
    for a file opened for writing, ("rename", src, dst) for a rename or replace."""
    events: list[tuple[str, str, str]] = []
    state["events"] = events
    state["thread"] = threading.get_ident()
    try:
        yield events
    finally:
        state["events"] = None


state: dict[str, Any] = {"events": None, "thread": None}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    events = state["events"]
    if events is None or threading.get_ident() != state["thread"]:
        return
    if event == "open" and args[0] is not None and not isinstance(args[0], int):
        mode, flags = args[1], args[2]
        writing = (mode is not None and any(c in mode for c in "wax+")) or (
            mode is None and flags & (os.O_WRONLY | os.O_RDWR)
        )
        if writing:
            events.append(("open-write", os.fspath(args[0]), ""))
    elif event == "os.rename":
        events.append(("rename", os.fspath(args[0]), os.fspath(args[1])))


sys.addaudithook(_audit)  # audit hooks cannot be removed: it does nothing when inactive


def test_a_publish_writes_aside_and_renames_into_place(broker, tmp_path, file_events) -> None:  # type: ignore[no-untyped-def]
    """A reader can only ever see a complete message: the file is written under a name
    no reader takes, then renamed to its message name in the same folder."""
    folder = queue_folder(tmp_path)
    conn = broker()
    conn.SimpleQueue("outbound").put({"ids": list(range(500))})
    (message,) = [p for p in folder.iterdir() if p.name.endswith(".msg")]
    writes = [path for kind, path, _ in file_events if kind == "open-write"]
    into_queue = [Path(p) for p in writes if Path(p).parent == folder]
    assert into_queue, file_events
    for path in into_queue:
        assert not is_message(path.name, "outbound"), f"{path.name} was written in place"
    renames = [(Path(a), Path(b)) for kind, a, b in file_events if kind == "rename"]
    assert (into_queue[-1], message) in renames
    assert json.loads(message.read_bytes())["body"]


def test_a_reader_racing_a_writer_never_sees_a_partial_message(broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = queue_folder(tmp_path)
    conn = broker()
    queue = conn.SimpleQueue("outbound")
    done = threading.Event()
    seen: set[str] = set()
    partial: list[str] = []

    def read() -> None:
        while not done.is_set():
            for name in os.listdir(folder):
                if name in seen or not is_message(name, "outbound"):
                    continue
                try:
                    json.loads((folder / name).read_bytes())
                except ValueError:
                    partial.append(name)
                except FileNotFoundError:
                    continue
                seen.add(name)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(150):
            queue.put({"n": n, "pad": "x" * 200_000})
    finally:
        done.set()
        reader.join(timeout=30)
    assert partial == []
    assert len(os.listdir(folder)) == 150


# ---------------------------------------------------------------- wake-ups, not polling


def test_a_publish_wakes_a_waiting_consumer_before_any_poll(broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With the fallback poll at a minute, a message published by another connection is
    delivered within seconds: the consumer waits on its doorbell, not on a timer."""
    consumer = broker(polling_interval=60.0)
    producer = broker()
    inbox = consumer.SimpleQueue("ingest")
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(inbox.get(timeout=20).payload))
    thread.start()
    doorbells = tmp_path / "var" / "broker" / "doorbells"
    try:
        wait_for(
            lambda: doorbells.is_dir() and any(n.endswith(".fifo") for n in os.listdir(doorbells)),
            timeout=10,
            what="the consumer to wait on its doorbell",
        )
        producer.SimpleQueue("ingest").put({"raw_ids": [1]})
    finally:
        thread.join(timeout=20)
    assert got == [{"raw_ids": [1]}]
