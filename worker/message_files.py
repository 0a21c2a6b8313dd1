"""The embedded broker's message files: publish one atomically, claim the next, set aside bad ones.

Stage: the storage under the embedded broker (``worker/file_broker.py`` is the kombu
transport around it). Inputs: the queue folder, a queue name, a message's bytes. Outputs:
one file per message in the queue folder, named as kombu's filesystem transport names
them (``<ms>_<uuid>.<queue>.msg``, so they sort oldest first and files left by kombu's
own transport stay readable); a claimed message's decoded JSON; unreadable files moved
to the bad folder.

Why it exists (issue 12, item 5): kombu's transport creates a message file and only
then writes into it, and its reader neither locks nor checks what it read. A reader
that picked up an empty or half-written file raised ``JSONDecodeError`` out of the
worker's consumer loop, and Celery stopped the worker ("Unrecoverable error"). Here:

- publish writes the whole message to a dot-named temp file in the same folder and
  ``os.replace``\\ s it into place: a reader sees no file or a complete one;
- claim renames the file into a claim folder first (one consumer wins; rename within
  one filesystem, where kombu may copy across to ``/tmp``), then reads it;
- a claimed file that is empty, not UTF-8, not JSON or not a JSON object is moved to
  the bad folder and reported by name and reason, never by content: the caller logs it
  and goes on to the next message.

Durability is not this module's job: state lives in the database and the sweeper
publishes again whatever a broker lost (DUR-03), so there is no fsync per message.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import Any

SUFFIX = ".msg"
TEMP_PREFIX = "."  # never a queue's file: those start with digits


class UnreadableMessageError(Exception):
    """A claimed message file that cannot be decoded; ``reason`` is log-safe."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SetAside:
    """Where an unreadable message file went, and why (for the log line)."""

    name: str
    reason: str
    size: int
    path: Path


def message_name(queue: str) -> str:
    """kombu's name for a new message: creation order first (milliseconds of the
    system-wide monotonic clock, as kombu does), then a unique part, then the queue."""
    return f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}{SUFFIX}"


def queue_of(name: str) -> str | None:
    """The queue a message file belongs to, or None for anything else in the folder."""
    if name.startswith(TEMP_PREFIX) or not name.endswith(SUFFIX):
        return None
    queue = name.partition(".")[2][: -len(SUFFIX)]
    return queue or None


def publish(folder: Path, queue: str, body: bytes) -> Path:
    """Put one message on ``queue``: written aside in full, then renamed into place."""
    final = folder / message_name(queue)
    temp = folder / f"{TEMP_PREFIX}{final.name}.tmp"
    try:
        with open(temp, "wb") as fh:
            fh.write(body)
        os.replace(temp, final)  # atomic within one filesystem: readers never see a part
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return final


def pending(folder: Path, queue: str) -> list[str]:
    """Names of the messages waiting on ``queue``, oldest first."""
    return sorted(name for name in os.listdir(folder) if queue_of(name) == queue)


def claim(folder: Path, claim_folder: Path, name: str) -> Path | None:
    """Take message ``name`` for this consumer; None when another one took it first."""
    source, target = folder / name, claim_folder / name
    try:
        os.rename(source, target)
    except FileNotFoundError:
        if not source.exists():
            return None
        # The claim folder itself went missing (a tidy-up under var/): without it every
        # claim would fail and every message would wait for ever.
        claim_folder.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(source, target)
        except FileNotFoundError:
            return None
    return target


def decode(body: bytes) -> dict[str, Any]:
    """A message file's JSON object, or :class:`UnreadableMessageError` with a reason
    that says what is wrong without quoting the file."""
    if not body.strip():
        raise UnreadableMessageError("empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableMessageError("not-utf8") from None
    try:
        payload = json.loads(text)
    except ValueError:
        raise UnreadableMessageError("not-json") from None
    if not isinstance(payload, dict):
        raise UnreadableMessageError("not-an-object")
    return payload


def read_claimed(path: Path) -> dict[str, Any]:
    """Read a claimed message and remove its file; the file stays when it is unreadable."""
    payload = decode(path.read_bytes())
    path.unlink(missing_ok=True)
    return payload


def set_aside(path: Path, bad_folder: Path, reason: str) -> SetAside:
    """Move an unreadable claimed file to ``bad_folder`` (kept for an admin to look at)."""
    bad_folder.mkdir(parents=True, exist_ok=True)
    size = path.stat().st_size if path.exists() else 0
    target = bad_folder / path.name
    os.replace(path, target)
    return SetAside(name=path.name, reason=reason, size=size, path=target)
