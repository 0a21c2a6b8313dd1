"""The soak, bounded for CI: 400 messages from 20 concurrent clients into a 20-member
list, through real processes, and every message and copy accounted for.

The traffic, the clients and the accounting are ``bench/soak.py``'s (the full soak is
20,000 messages into 200 members); only the site comes from the shared fixtures:
``mailgate serve``, two ``mailgate worker`` processes and ``mailgate beat`` on this
test's database (SQLite, and PostgreSQL in the second pass), a private ``redis-server``
on a free port (the filesystem broker when Redis is not installed), and the recording
relay. Part of the mail is deliberately bad: non-members and strangers (refused after
acceptance, one notice per address and reason) and resends of a Message-ID (one post).

Accounting: every 250 is a stored message; accepted = posts + logged refusals +
duplicates; one delivery row per post and member (the author excepted), all sent; and
the relay received each post once for every member but its author, and a notice for
each refused sender.
"""

from __future__ import annotations

import email.parser
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import soak
from tests.conftest import free_port
from tests.worker.conftest import port_open, wait_for

MESSAGES, CLIENTS, MEMBERS = 400, 20, 20

pytestmark = [pytest.mark.one_engine, pytest.mark.timeout(300)]


@pytest.fixture
def broker_url(tmp_path: Path) -> Iterator[str]:
    """A private Redis this test owns (never the shared one), else the filesystem broker."""
    if shutil.which("redis-server") is None:
        if os.environ.get("MAILGATE_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is required (MAILGATE_REQUIRE_REDIS=1) but not installed")
        yield "filesystem://"
        return
    folder = tmp_path / "redis"
    folder.mkdir()
    server, url = soak.start_redis(folder)
    yield url
    server.stop()


def received_pairs(relay_sink) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(recipient, Message-ID) of everything the relay accepted."""
    parser = email.parser.BytesHeaderParser()
    return {
        (m.rcpt_to[0].lower(), str(parser.parsebytes(m.data)["Message-ID"]).strip())
        for m in relay_sink.messages
    }


def test_soak_every_message_and_copy_accounted_for(  # type: ignore[no-untyped-def]
    mailgate_env, session_factory, processes, relay_sink, broker_url, tmp_path
) -> None:
    who = soak.people(MEMBERS)
    plan = soak.plan_messages(MESSAGES, who)
    want = soak.expected_outcomes(plan)
    # The plan holds every kind of mail the accounting must tell apart.
    assert all(want[kind] for kind in ("post", "duplicate", "not-a-member", "unknown-sender"))
    soak.seed_directory(session_factory, who)

    port = free_port()
    env = {
        **mailgate_env,
        "MAILGATE_DOMAIN": soak.DOMAIN,
        "MAILGATE_SMTP_PORT": str(port),
        "MAILGATE_HTTP_PORT": str(free_port()),
        "MAILGATE_RELAY_URL": relay_sink.url,
        "MAILGATE_BASE_URL": soak.BASE_URL,
        "MAILGATE_BROKER_URL": broker_url,
        "MAILGATE_VERIFY_DKIM": "no",
    }
    Path(env["MAILGATE_VAR_DIR"]).mkdir(parents=True)  # beat keeps its schedule there
    started = {
        name: processes(args, env, tmp_path / f"{name}.log")
        for name, args in soak.site_commands(workers=2, concurrency=1).items()
    }
    wait_for(lambda: port_open(port), timeout=60, what="the gateway")

    tally = soak.send_all(port, plan, clients=CLIENTS, to_bytes=soak.renderer(plan), timeout=120)
    account, settled = soak.wait_settled(session_factory, timeout=150, interval=0.5)
    sent = account.deliveries.get("sent", 0)
    wait_for(
        lambda: len(relay_sink.messages) >= sent + account.notices_sent,
        timeout=10,
        what="the relay to record every copy",
    )
    print(
        f"\nsoak ({MESSAGES} messages, {CLIENTS} clients, {MEMBERS} members): "
        f"{tally.accepted} accepted in {tally.seconds:.1f} s ({tally.temporary} 4xx retried); "
        f"{account.posts} posts, refusals {account.refusals}, {account.duplicates} duplicates; "
        f"rows {account.deliveries}; {account.notices_sent} notices; "
        f"relay {len(relay_sink.messages)}"
    )
    exited = [name for name, proc in started.items() if proc.poll() is not None]
    assert not exited, f"processes exited early: {exited}; see the logs in {tmp_path}"
    assert settled, f"not settled: {account}"
    problems = soak.check_accounting(
        account, tally, plan, MEMBERS, relay_received=len(relay_sink.messages)
    )
    assert problems == []

    # End to end: each post reached every member but its author, under its Message-ID,
    # and each refused sender got a notice.
    pairs = received_pairs(relay_sink)
    posts = {p.index: p for p in plan if p.kind == "post"}
    expected = {
        (member, soak.message_id(p.index, p.sender))
        for p in posts.values()
        for member in who.members
        if member != p.sender
    }
    assert expected <= pairs
    assert len(pairs - expected) == account.notices_sent
    refused = {p.sender for p in plan if p.kind in ("not-a-member", "unknown-sender")}
    assert {rcpt for rcpt, _ in pairs - expected} == refused
