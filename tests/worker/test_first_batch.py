"""A post's first send batch goes ahead of older posts' batches (issue 12, item 5).

With one worker and a busy list, a new post's batches used to queue behind every batch
of the posts before it on ``outbound``: 1.3-1.9 s from the 250 to its first copy in
bench/latency.py. Its first batch is now marked by the fan-out and published on the
fanout queue, which the worker visits in turn with the others.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailgate.db import unit_of_work
from mailgate.delivery import FIRST_BATCH, SEND_TASK, fan_out, is_first_batch
from mailgate.inbox import SqlInbox
from mailgate.ingest import IngestContext, run_ingest_batch
from mailgate.models import OutboxEntry, Post
from mailgate.smtp import Accepted
from tests.conftest import DOMAIN, SECRET
from worker.app import FIRST_BATCH_QUEUE, QUEUES
from worker.runtime import publish_options

MEMBERS = [f"m{i}@corp.example" for i in range(5)]


@pytest.fixture
def post_id(directory, session_factory) -> int:  # type: ignore[no-untyped-def]
    directory.list("eng", name="Engineering", visibility="members")
    for address in MEMBERS:
        directory.member("eng", address)
    raw = (
        b"From: m0@corp.example\r\nTo: eng@lists.corp.example\r\nSubject: Plan\r\n"
        b"Message-ID: <plan@corp.example>\r\n\r\nWe ship on Friday.\r\n"
    )
    accepted = Accepted(raw, "m0@corp.example", (f"eng@{DOMAIN}",), "127.0.0.1", "test")
    raw_ids = SqlInbox(session_factory).store_many([accepted])
    run_ingest_batch(session_factory, raw_ids, IngestContext(domain=DOMAIN, secrets=(SECRET,)))
    with session_factory() as s:
        return int(s.scalars(select(Post.id)).one())


def test_only_the_first_send_batch_of_a_post_is_marked(post_id, session_factory) -> None:  # type: ignore[no-untyped-def]
    with unit_of_work(session_factory) as s:
        fan_out(s, post_id, batch_size=2)
    with session_factory() as s:
        args = list(
            s.scalars(
                select(OutboxEntry.args)
                .where(OutboxEntry.task == SEND_TASK)
                .order_by(OutboxEntry.id)
            )
        )
    assert [len(a[0]) for a in args] == [2, 2]  # four copies: the author gets none
    assert [is_first_batch(SEND_TASK, a) for a in args] == [True, False]
    assert [publish_options(SEND_TASK, a) for a in args] == [{"queue": "fanout"}, {}]


@pytest.mark.parametrize(
    ("task", "args", "options"),
    [
        ("mailgate.send", [[1, 2], FIRST_BATCH], {"queue": FIRST_BATCH_QUEUE}),
        ("mailgate.send", [[3, 4]], {}),  # the rest of a post, and the sweeper's re-sends
        ("mailgate.send", [[3, 4], "other"], {}),
        ("mailgate.fanout", [7], {}),
        ("mailgate.send_notice", [FIRST_BATCH], {}),
    ],
)
def test_publish_options(task: str, args: list[object], options: dict[str, str]) -> None:
    assert publish_options(task, args) == options


def test_the_first_batch_queue_is_one_every_default_worker_consumes() -> None:
    assert FIRST_BATCH_QUEUE in QUEUES and FIRST_BATCH_QUEUE != "outbound"
