"""The embedded broker: kombu's filesystem transport, made safe to share and quick to wake.

Stage: the broker adapter of the embedded default (``make run``), selected in
``worker/app.py`` as ``broker_transport`` with ``broker_url = "filesystem://"``.
Inputs: kombu's calls (put a message on a queue, get the next one, ack, wait for
events) and the transport options (``data_folder_in``/``_out``, ``control_folder``,
``claim_folder``, ``bad_folder``, ``doorbell_folder``, ``polling_interval``). Outputs:
message files under ``var/broker`` (``worker/message_files.py``) and wake-ups through
named pipes (``worker/doorbell.py``).

What changes against kombu's ``filesystem`` transport, and why (issue 12, item 5):

- publish writes aside and renames into place; kombu created the file, then wrote it,
  so a reader could take an empty or half-written message;
- a message file that cannot be decoded is moved to ``var/broker/bad`` with a WARNING
  naming the file, and the next message is taken; kombu raised ``JSONDecodeError``
  through the consumer and Celery stopped the worker for good;
- an idle or busy worker waits on its doorbell instead of sleeping a fixed interval, so
  a message published by any process, or a task slot freed by an ack, wakes it at once.
  ``polling_interval`` remains as the fallback for a missed ring (a writer that does not
  ring, such as an older Mailgate still running during an upgrade).
"""

from __future__ import annotations

import logging
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import filesystem, virtual
from kombu.utils.json import dumps
from kombu.utils.objects import cached_property

from worker import message_files
from worker.doorbell import Doorbell, ring_all

log = logging.getLogger("mailgate.broker")


class Channel(filesystem.Channel):
    """Atomic publish, claim-then-read, bad files set aside, a wake-up on every change."""

    # kombu's two bases name the message ``message`` and ``payload``; callers pass it
    # by position, as kombu's filesystem transport itself does.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        message_files.publish(self.folder_out, queue, dumps(payload).encode("utf-8"))
        ring_all(self.doorbell_folder)

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        for name in message_files.pending(self.folder_in, queue):
            path = message_files.claim(self.folder_in, self.claim_folder, name)
            if path is None:
                continue  # another consumer took it
            try:
                return message_files.read_claimed(path)
            except message_files.UnreadableMessageError as exc:
                self._set_aside(path, exc.reason)
            except OSError:
                self._set_aside(path, "read-error")
        raise Empty()

    def _set_aside(self, path: Path, reason: str) -> None:
        # Name, reason and size only: a message body carries addresses and tokens.
        try:
            moved = message_files.set_aside(path, self.bad_folder, reason)
        except OSError as exc:
            log.warning(
                "embedded broker: unreadable message file %s (%s) could not be moved to %s "
                "(%s); it stays in %s",
                path.name,
                reason,
                self.bad_folder,
                type(exc).__name__,
                path.parent,
            )
            return
        log.warning(
            "embedded broker: set aside unreadable message file %s (%s, %d bytes) in %s; "
            "the sweeper re-publishes the work it stood for",
            moved.name,
            moved.reason,
            moved.size,
            self.bad_folder,
        )

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        self._slot_freed()

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue)
        self._slot_freed()

    def _slot_freed(self) -> None:
        # An ack comes from the pool's result thread while the consumer waits for a
        # prefetch slot (CEL-04: one task at a time): wake it to take the next message.
        transport = self.connection
        if transport is not None:
            transport.wake()

    def _folder(self, option: str, default: str) -> Path:
        value = self.transport_options.get(option)
        folder = Path(value) if value else Path(self.data_folder_in).parent / default
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @cached_property
    def folder_in(self) -> Path:
        return Path(self.data_folder_in)

    @cached_property
    def folder_out(self) -> Path:
        return Path(self.data_folder_out)

    @cached_property
    def claim_folder(self) -> Path:
        return self._folder("claim_folder", "claimed")

    @cached_property
    def bad_folder(self) -> Path:
        return self._folder("bad_folder", "bad")

    @cached_property
    def doorbell_folder(self) -> Path:
        return self._folder("doorbell_folder", "doorbells")


class Transport(filesystem.Transport):
    """kombu's filesystem transport with :class:`Channel` and doorbell waits."""

    Channel = Channel
    polling_interval = 1.0  # the fallback only: a publish or an ack rings the doorbell
    _doorbell: Doorbell | None = None
    # kombu keeps one binding cache per process for every filesystem broker; a second
    # folder in the same process (two sites, or tests) then skipped writing its own
    # bindings and its messages were routed nowhere. One cache per control folder.
    _states: dict[str, virtual.BrokerState] = {}

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        folder = str(Path(client.transport_options.get("control_folder", "control")).resolve())
        self.state = self._states.setdefault(folder, virtual.BrokerState())

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> None:
        """Deliver one message; between empty polls, wait on the doorbell (at most
        ``polling_interval``, and never past ``timeout``)."""
        assert self.cycle is not None, "the transport is closed"
        started = monotonic()
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            elapsed = monotonic() - started
            if timeout is not None and elapsed >= timeout:
                raise TimeoutError()  # socket.timeout, as kombu raises it
            wait = float(self.polling_interval or 0.0)
            if timeout is not None:
                wait = min(wait, timeout - elapsed)
            self.doorbell().wait(wait)

    def doorbell(self) -> Doorbell:
        """This consumer's doorbell, made on its first wait (publishers need none)."""
        if self._doorbell is None:
            assert self.client is not None, "the transport has no connection"
            options = self.client.transport_options
            folder = options.get("doorbell_folder") or (
                Path(options.get("data_folder_in", "data_in")).parent / "doorbells"
            )
            self._doorbell = Doorbell(Path(folder))
        return self._doorbell

    def wake(self) -> None:
        if self._doorbell is not None:
            self._doorbell.ring()

    def close_connection(self, connection: Any) -> None:
        try:
            super().close_connection(connection)
        finally:
            if self._doorbell is not None:
                self._doorbell.close()
                self._doorbell = None
