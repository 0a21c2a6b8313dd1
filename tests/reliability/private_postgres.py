"""A private PostgreSQL server for reliability tests: initdb, start, stop, start again.

Input: a PostgreSQL ``bin`` directory and a free port. Output: a running server on
127.0.0.1 with trust authentication and a ``mailgate`` database, which the test may stop
(``pg_ctl stop -m immediate``, as close to a crash as PostgreSQL offers) and start again on
the same port and data directory. The shared server on 5432 that the rest of the suite
uses is never touched.

The data directory lives in its own ``/tmp`` folder, not in pytest's ``tmp_path``: that
one is private to root, and the server runs as the ``postgres`` OS user because initdb
refuses to run as root.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

DEFAULT_BIN = Path("/usr/lib/postgresql/15/bin")
DATABASE = "mailgate"
COMMAND_TIMEOUT = 60.0  # initdb and pg_ctl on a busy two-core machine


class PostgresError(RuntimeError):
    """A pg_ctl or initdb step failed; the message carries its output and the server log."""


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: version 15 first, else any."""
    candidates = [DEFAULT_BIN, *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def unavailable_reason(bin_dir: Path | None) -> str:
    """Why a private server cannot run here ("" if it can)."""
    if bin_dir is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return ""


def _as_server_user(argv: list[str]) -> list[str]:
    """``argv`` run as ``postgres`` when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *argv]
    return ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(argv)]


class PrivatePostgres:
    """One PostgreSQL server owned by one test, ended by PID at teardown."""

    def __init__(self, bin_dir: Path, port: int) -> None:
        self.bin_dir, self.port = bin_dir, port
        self.base = Path(tempfile.mkdtemp(prefix="mailgate-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, argv: list[str]) -> None:
        try:
            done = subprocess.run(
                _as_server_user(argv), capture_output=True, timeout=COMMAND_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresError(f"{argv[0]} timed out\n{self.server_log()}") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise PostgresError(f"{' '.join(argv)} failed: {output}\n{self.server_log()}")

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def create(self) -> None:
        """initdb (trust auth, no fsync: the test measures recovery, not durability),
        start, and create the ``mailgate`` database."""
        self._run(
            [str(self.bin_dir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]
            + ["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        )
        self.start()
        from sqlalchemy import create_engine, text

        admin = create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres",
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
        admin.dispose()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off"
        )
        self._run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-o", options]
            + ["-l", str(self.log), "-w", "-t", "30", "start"]
        )

    def stop(self) -> None:
        """Immediate shutdown: backends are killed, no checkpoint; the next start recovers."""
        self._run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate"]
            + ["-w", "-t", "30", "stop"]
        )

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def close(self) -> list[int]:
        """Stop the server if it runs, end by PID whatever of it is left, and remove its
        folder. Returns the server's PIDs still alive after all that (none, normally)."""
        pid = self.postmaster_pid()
        survivors: list[int] = []
        if pid is not None and _alive(pid):
            ours = [pid, *_children(pid)]  # before the stop: orphans lose their parent
            try:
                self.stop()
            except PostgresError:
                pass
            # The postmaster exits only after every backend has (even with -m immediate),
            # so once it is gone nothing of ours is left, and the PIDs noted above may
            # already belong to someone else: they are ended only if the stop failed.
            if _alive(pid):
                for leftover in ours:
                    if _alive(leftover) and _is_postgres(leftover):
                        os.kill(leftover, signal.SIGKILL)
                _wait_gone(ours)
                survivors = [p for p in ours if _alive(p) and _is_postgres(p)]
        shutil.rmtree(self.base, ignore_errors=True)
        return survivors


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie is gone for our purposes (its parent reaps it)
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_postgres(pid: int) -> bool:
    try:
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
