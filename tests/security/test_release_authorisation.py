"""A confirmation proves the address, nothing more (issue 12, item 2).

The review's attack: Carol, a member of the mandatory list ``all`` (whose unauthenticated
posts are held for confirmation), not a member of the hidden list ``secret`` and not
allowed to post to the announce-only list ``news``, sends one unauthenticated message to
all@, secret@ and news@. It is held; she confirms from her own address; it was posted to
all three lists. Release must decide each list again, exactly as a fresh authenticated
post would be decided, on both release paths: the confirmation by mail and
``mailgate inbound release``.

Real gateway on 127.0.0.1, real database (SQLite and PostgreSQL), the ingest service.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from mailgate.ingest import run_ingest
from mailgate.models import MailingList, Notice, Post, RawMessage, RawStatus
from tests.conftest import DOMAIN
from tests.conftest import build_mail as mail

CAROL = "carol@corp.example"  # in all only
SAM = "sam@corp.example"  # in all and secret: the envelope sender that gets secret@ past RCPT
CEO = "ceo@corp.example"  # owns news
LISTS = [f"{slug}@{DOMAIN}" for slug in ("all", "secret", "news")]


@pytest.fixture
def company(directory):  # type: ignore[no-untyped-def]
    directory.list("all", name="Everyone", mandatory=True)
    directory.list("secret", name="Secret Project", visibility="hidden")
    directory.list("news", name="News", posting="announce")
    for address in (CAROL, SAM, CEO):
        directory.member("all", address)
    directory.member("secret", SAM)
    directory.member("news", CEO, role="owner")
    directory.member("news", CAROL)  # reads news, may not post to it
    return directory


@pytest.fixture
def deliver(gateway, session_factory, ingest_context):  # type: ignore[no-untyped-def]
    def send(raw: bytes, rcpt: str | list[str], mail_from: str) -> int:
        raw_id = gateway.submit(raw, rcpt, mail_from)
        run_ingest(session_factory, raw_id, ingest_context)
        return raw_id

    return send


@pytest.fixture
def held(company, deliver, session_factory) -> int:  # type: ignore[no-untyped-def]
    raw = mail(sender=CAROL, to=", ".join(LISTS), subject="Reorg", body="Read this first.")
    raw_id: int = deliver(raw, LISTS, SAM)
    with session_factory() as s:
        row = s.get_one(RawMessage, raw_id)
        assert row.status is RawStatus.HELD, row.explanation
        assert sorted(row.rcpt_to) == sorted(LISTS)  # all three reached the pipeline
    assert posts_by_list(session_factory) == {}
    return raw_id


def posts_by_list(session_factory: Any) -> dict[str, list[str]]:
    with session_factory() as s:
        rows = s.execute(
            select(MailingList.slug, Post.text)
            .join(MailingList, MailingList.id == Post.list_id)
            .order_by(Post.id)
        ).all()
    out: dict[str, list[str]] = {}
    for slug, text in rows:
        out.setdefault(slug, []).append(text)
    return out


def released(session_factory: Any, raw_id: int) -> dict[str, str]:
    with session_factory() as s:
        row = s.get_one(RawMessage, raw_id)
        return {r["recipient"]: r["reason"] for r in row.explanation["released"]}


def test_confirming_by_mail_posts_only_where_a_fresh_post_would_go(  # type: ignore[no-untyped-def]
    held, deliver, session_factory
) -> None:
    with session_factory() as s:
        (notice,) = s.scalars(select(Notice).where(Notice.reason == "held-for-authentication"))
        assert notice.address == CAROL
        token = notice.context["confirm_token"]
    deliver(mail(sender=CAROL, body="yes"), f"confirm+{token}@{DOMAIN}", CAROL)
    assert posts_by_list(session_factory) == {"all": ["Read this first."]}
    reasons = released(session_factory, held)
    assert sorted(reasons.values()) == ["not-a-member", "posted", "posting-not-allowed"]
    with session_factory() as s:
        row = s.get_one(RawMessage, held)
        assert (row.status, row.reason) == (RawStatus.PROCESSED, "posted")


def test_a_moderators_release_decides_each_list_again(  # type: ignore[no-untyped-def]
    held, run_cli, session_factory
) -> None:
    result = run_cli("inbound", "release", str(held))
    assert result.exit_code == 0, result.stderr
    assert posts_by_list(session_factory) == {"all": ["Read this first."]}
    assert sorted(released(session_factory, held).values()) == [
        "not-a-member",
        "posted",
        "posting-not-allowed",
    ]


def test_a_release_refused_on_every_list_posts_nothing_and_stays_held(  # type: ignore[no-untyped-def]
    company, deliver, session_factory, run_cli
) -> None:
    # Held for all@ (the only list it names); Carol is removed from all before release.
    raw_id = deliver(mail(sender=CAROL, to=LISTS[0], body="Hello all"), LISTS[0], CAROL)
    assert run_cli("members", "remove", "all", CAROL).exit_code == 0
    result = run_cli("inbound", "release", str(raw_id))
    assert result.exit_code != 0
    assert result.stderr.strip().endswith(
        f"inbound message {raw_id} may not be posted to any list it names (not-a-member); "
        "it stays held"
    )
    assert posts_by_list(session_factory) == {}
    with session_factory() as s:
        row = s.get_one(RawMessage, raw_id)
        assert (row.status, row.reason) == (RawStatus.HELD, "held-for-authentication")
