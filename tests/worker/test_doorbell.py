"""The embedded broker's wake-ups: one named pipe per consumer, rung by every publisher."""

from __future__ import annotations

import os
from pathlib import Path

from worker.doorbell import Doorbell, ring_all


def test_a_doorbell_is_rung_by_any_publisher_and_forgets_stopped_consumers(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "doorbells"
    folder.mkdir()
    os.mkfifo(folder / "999999-gone.fifo")  # a stopped consumer's pipe: nobody reads it
    os.mkfifo(folder / ".999998-opening.fifo")  # another consumer, about to open its pipe
    bell = Doorbell(folder)
    try:
        assert sorted(os.listdir(folder)) == sorted([bell.path.name, ".999998-opening.fifo"])
        assert bell.wait(0) is False
        assert ring_all(folder) == 1 and ring_all(folder) == 1
        assert bell.wait(5) is True
        assert bell.wait(0) is False  # both rings were one wake-up
        bell.ring()  # a prefetch slot freed in this process
        assert bell.wait(5) is True
    finally:
        bell.close()
    assert os.listdir(folder) == [".999998-opening.fifo"]
    assert ring_all(folder) == 0 and ring_all(tmp_path / "missing") == 0


def test_every_consumer_hears_every_ring(tmp_path: Path) -> None:
    """Two consumers: a ring wakes both (one shared pipe would wake only one of them)."""
    first, second = Doorbell(tmp_path), Doorbell(tmp_path)
    try:
        assert ring_all(tmp_path) == 2
        assert first.wait(5) is True and second.wait(5) is True
    finally:
        first.close()
        second.close()


def test_a_forked_pool_process_leaves_its_parents_pipe_in_place(tmp_path: Path) -> None:
    bell = Doorbell(tmp_path)
    try:
        pid = os.fork()
        if pid == 0:  # the child: what a prefork pool process does when it exits
            bell.close()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert bell.path.exists()
        assert ring_all(tmp_path) == 1 and bell.wait(5) is True
    finally:
        bell.close()
