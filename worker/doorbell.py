"""Wake-ups for the embedded broker: a consumer sleeps on its own named pipe, publishers ring it.

Stage: beside the embedded broker's message files (``worker/message_files.py``).
Inputs: the doorbell folder (``var/broker/doorbells``). Outputs: a consumer that waits
in ``select`` until a message may be waiting (or a fallback timeout passes); publishers
that write one byte to every consumer's pipe after a message file is in place.

Why: kombu's filesystem transport sleeps a fixed ``polling_interval`` between empty
polls, and also while the worker holds its one prefetched task (CEL-04), so every hop of
a post (ingest → fan-out → send) and every gap between two tasks waited for the next
tick: at 0.1 s, about a third of a busy worker's time went to sleeping (bench/latency.py).
A shorter interval is busier polling; inotify is Linux-only and not in the standard
library. A FIFO per consumer is in the standard library on every POSIX system, costs
nothing while idle, and wakes the consumer within a system call of the publish.

Each consumer has its own pipe (``<pid>-<uuid>.fifo``) so that every consumer hears
every publish: with one shared pipe, a busy consumer could swallow the byte an idle one
needed. A pipe appears in the folder only once its consumer holds it open, so a pipe
nobody reads (``ENXIO`` on open) is a stopped consumer's leftover, and a new consumer
removes those. A missed ring costs at most the fallback interval, never a message.
"""

from __future__ import annotations

import errno
import math
import os
import select
import threading
import uuid
from pathlib import Path

SUFFIX = ".fifo"


def ring_all(folder: Path) -> int:
    """Wake every consumer with a pipe in ``folder``; returns how many were rung."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    rung = 0
    for name in names:
        if _is_bell(name) and _ring(folder / name):
            rung += 1
    return rung


def _is_bell(name: str) -> bool:
    return name.endswith(SUFFIX) and not name.startswith(".")


def _ring(path: Path) -> bool:
    # Best effort: the message is in place before the ring, so a failed ring (ENXIO:
    # nobody reads that pipe, a stopped consumer's; ENOENT: just removed; anything
    # else) costs that consumer at most its fallback poll, and must not fail a publish.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        os.write(fd, b"\0")
    except BlockingIOError:
        pass  # the pipe is full of rings already: the consumer will wake anyway
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _has_reader(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError as exc:
        return exc.errno != errno.ENXIO
    return True


class Doorbell:
    """One consumer's pipe: ``wait`` until rung (or ``timeout``), ``ring`` it from
    inside the same process (a task finished, so a prefetch slot is free)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(folder):
            stale = folder / name
            # Dot names are pipes another consumer is still opening: never stale.
            if _is_bell(name) and not _has_reader(stale):
                stale.unlink(missing_ok=True)
        name = f"{os.getpid()}-{uuid.uuid4().hex}{SUFFIX}"
        temp = folder / f".{name}"
        os.mkfifo(temp, 0o600)
        # O_RDWR: the pipe never reports end-of-file when no publisher has it open.
        self.fd = os.open(temp, os.O_RDWR | os.O_NONBLOCK)
        self.path = folder / name
        self.owner = os.getpid()
        self._lock = threading.Lock()
        os.rename(temp, self.path)  # visible only now that it has a reader
        self._poll = select.poll()  # not select(): no FD_SETSIZE ceiling
        self._poll.register(self.fd, select.POLLIN)

    def ring(self) -> None:
        # Rings come from the pool's result thread; the lock keeps one from landing on a
        # descriptor number that ``close`` just gave back (and the OS gave to a file).
        with self._lock:
            if self.fd < 0:
                return
            try:
                os.write(self.fd, b"\0")
            except BlockingIOError:
                pass  # the pipe is full of rings already

    def wait(self, timeout: float) -> bool:
        """Block until rung or ``timeout`` seconds passed; True when rung. Every ring
        so far is consumed: one wake-up stands for all of them."""
        if not self._poll.poll(max(0, math.ceil(timeout * 1000))):
            return False
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        # A forked pool process holds a copy of this object: only its maker removes the
        # pipe, or a child's exit would leave the consumer deaf until the fallback poll.
        with self._lock:
            if self.fd < 0:
                return
            if os.getpid() == self.owner:
                self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = -1
