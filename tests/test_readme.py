"""The README's walk-through, run literally (issue 17): the ``sh`` blocks marked
``<!-- readme-test: walkthrough -->`` run in order, in a fresh directory, against a real
``mailgate run`` (gateway, worker and beat on the embedded SQLite + file broker), with a
free port for 2525. It must end with the copies in ``./var/outbox/new/`` and Carol's
reply threaded into the same discussion."""

from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from mailgate.models import Post
from tests.conftest import free_port
from tests.worker.conftest import port_open, started_processes, wait_for

REPO = Path(__file__).resolve().parents[1]
MARK = "<!-- readme-test: walkthrough -->"
POST, REPLY = "[eng] Hello eng", "Re: [eng] Hello eng"  # the list's subject tag
FIRST = ["alice@corp.example", "carol@corp.example", "dave@corp.example", "erin@corp.example"]


def marked_blocks(text: str, mark: str = MARK) -> list[str]:
    """The ``sh`` blocks that directly follow ``mark``, in order."""
    return re.findall(re.escape(mark) + r"\s*```sh\n(.*?)```", text, flags=re.S)


def copies(maildir: Path) -> list[EmailMessage]:
    found = sorted(maildir.iterdir()) if maildir.is_dir() else []
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in found
    ]


def test_the_marked_blocks_are_the_walkthrough() -> None:
    blocks = marked_blocks((REPO / "README.md").read_text())
    assert len(blocks) == 3
    assert "members import eng examples/people.csv" in blocks[0]
    assert "examples/reply.py" in blocks[2]
    assert (REPO / "examples" / "people.csv").read_text().splitlines()[0] == (
        "email,name,timezone,department"
    )


@pytest.mark.one_engine
@pytest.mark.timeout(90)
def test_readme_walkthrough_ends_with_copies_and_a_threaded_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.startswith("MAILGATE_")]:
        monkeypatch.delenv(name)  # a fresh clone: the README's defaults, nothing else
    home = tmp_path / "clone"
    (home / ".venv" / "bin").mkdir(parents=True)
    wrapper = home / ".venv" / "bin" / "mailgate"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mailgate.cli "$@"\n')
    wrapper.chmod(0o755)
    (home / "examples").symlink_to(REPO / "examples")
    port = free_port()
    env = {
        "MAILGATE_VAR_DIR": str(home / "var"),
        "MAILGATE_SMTP_PORT": str(port),
        "MAILGATE_HTTP_PORT": str(free_port()),
    }
    maildir = home / "var" / "outbox" / "new"
    blocks = [b.replace("2525", str(port)) for b in marked_blocks((REPO / "README.md").read_text())]

    with started_processes(["-m", "mailgate.cli"]) as start:
        # `make run` in the first terminal (its cwd is the clone; var/ is the same).
        monkeypatch.chdir(home)
        run = start(["run", "--concurrency", "1"], env, tmp_path / "run.log")
        wait_for(lambda: port_open(port) or run.poll() is not None, 45, "the gateway")
        assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        for block in blocks:
            done = subprocess.run(
                ["bash", "-e", "-c", block],
                cwd=home,
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, f"{block}\n{done.stdout}\n{done.stderr}"

        def delivered() -> dict[str, list[EmailMessage]]:
            by_subject: dict[str, list[EmailMessage]] = {}
            for msg in copies(maildir):
                by_subject.setdefault(str(msg["Subject"]), []).append(msg)
            return by_subject

        def complete() -> bool:
            got = delivered()
            return len(got.get(POST, [])) >= 4 and len(got.get(REPLY, [])) >= 3

        try:
            wait_for(complete, 45, "the copies of the post and of the reply")
        except AssertionError:
            seen = [(str(m["Subject"]), str(m["Delivered-To"])) for m in copies(maildir)]
            log = (tmp_path / "run.log").read_text()[-4000:]
            raise AssertionError(f"in the Maildir: {seen}\n{log}") from None

    got = delivered()
    first, reply = got[POST], got[REPLY]
    assert sorted(str(m["Delivered-To"]) for m in first) == FIRST  # Bob takes the digest
    assert sorted(str(m["Delivered-To"]) for m in reply) == [
        "alice@corp.example",
        "dave@corp.example",
        "erin@corp.example",
    ]
    parents = {str(m["Message-ID"]) for m in first}
    assert {str(m["In-Reply-To"]) for m in reply} <= parents
    engine = create_engine(f"sqlite:///{home / 'var' / 'mailgate.db'}")
    with engine.connect() as db:
        rows = db.execute(select(Post.discussion_id, Post.text).order_by(Post.id)).all()
    engine.dispose()
    assert [text.strip() for _, text in rows] == ["First post", "Count me in."]
    assert len({discussion for discussion, _ in rows}) == 1
