"""The embedded broker's message files: names, atomic publish, claims, bad files set aside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker import message_files


@pytest.mark.parametrize(
    ("name", "queue"),
    [
        ("1733_0b2c.ingest.msg", "ingest"),
        ("1733_0b2c.celery@host.celery.pidbox.msg", "celery@host.celery.pidbox"),
        (".1733_0b2c.ingest.msg.tmp", None),  # a publish in progress
        ("1733_0b2c.ingest.msg.tmp", None),
        ("1733_0b2c.msg", None),
        ("notes.txt", None),
    ],
)
def test_queue_of_a_file_name(name: str, queue: str | None) -> None:
    assert message_files.queue_of(name) == queue


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"\n", "empty"),
        (b'{"body": "abc", "headers": {', "not-json"),
        (b"\xc3\x28", "not-utf8"),
        (b'"just a string"', "not-an-object"),
        (b"null", "not-an-object"),
    ],
)
def test_decode_names_what_is_wrong(body: bytes, reason: str) -> None:
    with pytest.raises(message_files.UnreadableMessageError) as caught:
        message_files.decode(body)
    assert caught.value.reason == reason
    assert str(caught.value) == reason  # the reason is all it says: no content


def test_a_published_message_is_the_only_file_left(tmp_path: Path) -> None:
    path = message_files.publish(tmp_path, "ingest", b'{"a": 1}')
    assert os.listdir(tmp_path) == [path.name]
    assert message_files.queue_of(path.name) == "ingest"
    assert path.read_bytes() == b'{"a": 1}'


def test_messages_are_pending_oldest_first(tmp_path: Path) -> None:
    names = [message_files.publish(tmp_path, "ingest", b"{}").name for _ in range(3)]
    message_files.publish(tmp_path, "outbound", b"{}")
    assert message_files.pending(tmp_path, "ingest") == sorted(names)


def test_one_consumer_wins_a_claim(tmp_path: Path) -> None:
    queue, claimed = tmp_path / "queue", tmp_path / "claimed"
    queue.mkdir()
    claimed.mkdir()
    path = message_files.publish(queue, "ingest", b'{"a": 1}')
    assert message_files.pending(queue, "ingest") == [path.name]
    assert message_files.pending(queue, "outbound") == []
    taken = message_files.claim(queue, claimed, path.name)
    assert taken == claimed / path.name
    assert message_files.claim(queue, claimed, path.name) is None
    assert message_files.read_claimed(taken) == {"a": 1}
    assert not taken.exists()


def test_an_unreadable_claim_stays_until_set_aside(tmp_path: Path) -> None:
    claimed = tmp_path / "claimed"
    claimed.mkdir()
    path = claimed / "5_x.ingest.msg"
    path.write_bytes(b'{"half": ')
    with pytest.raises(message_files.UnreadableMessageError):
        message_files.read_claimed(path)
    moved = message_files.set_aside(path, tmp_path / "bad", "not-json")
    assert (moved.name, moved.reason, moved.size) == ("5_x.ingest.msg", "not-json", 9)
    assert moved.path.read_bytes() == b'{"half": ' and not path.exists()


def test_a_claim_folder_removed_under_a_running_worker_comes_back(tmp_path: Path) -> None:
    queue = tmp_path / "queue"
    queue.mkdir()
    path = message_files.publish(queue, "ingest", b"{}")
    taken = message_files.claim(queue, tmp_path / "claimed", path.name)
    assert taken is not None and taken.exists() and not path.exists()
