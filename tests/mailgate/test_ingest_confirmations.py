"""A confirmed member command is done, also in ``inbound list`` (issue 17).

The -request mail waits as "held / awaiting-confirmation" until its sender confirms; once
the change is made, that stored mail moves to processed with the confirmed action as its
reason, so admins see no work left over. Real gateway on 127.0.0.1, real database, the
ingest service the worker task calls, and the CLI through ``run_cli``.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from mailgate.ingest import run_ingest
from mailgate.models import Membership, Notice, RawMessage, RawStatus
from tests.conftest import DOMAIN
from tests.conftest import build_mail as mail

BOB = "bob@corp.example"


@pytest.fixture
def deliver(gateway, session_factory, ingest_context):  # type: ignore[no-untyped-def]
    def send(raw: bytes, rcpt: str | list[str], mail_from: str = BOB) -> int:
        raw_id = gateway.submit(raw, rcpt, mail_from)
        run_ingest(session_factory, raw_id, ingest_context)
        return raw_id

    return send


def confirm_tokens(session_factory) -> list[str]:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        return [
            n.context["confirm_token"]
            for n in s.scalars(
                select(Notice).where(Notice.reason == "confirm-command").order_by(Notice.id)
            )
        ]


def raw_state(session_factory, raw_id: int) -> tuple[RawStatus, str]:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        row = s.get_one(RawMessage, raw_id)
        return row.status, row.reason


def test_confirmed_subscribe_moves_the_held_command_to_processed(  # type: ignore[no-untyped-def]
    directory, deliver, session_factory, run_cli
) -> None:
    directory.list("social", visibility="company")
    directory.list("eng")
    directory.member("eng", BOB, name="Bob")
    command = deliver(
        mail(sender=BOB, to=f"social-request@{DOMAIN}", subject="subscribe", body=""),
        f"social-request@{DOMAIN}",
    )
    assert raw_state(session_factory, command) == (RawStatus.HELD, "awaiting-confirmation")
    held = json.loads(run_cli("inbound", "list", "--json").stdout)
    assert [(r["id"], r["status"]) for r in held] == [(command, "held")]

    (token,) = confirm_tokens(session_factory)
    confirmation = deliver(mail(sender=BOB, body="yes"), f"confirm+{token}@{DOMAIN}")

    assert raw_state(session_factory, confirmation) == (RawStatus.PROCESSED, "confirmed-subscribe")
    assert raw_state(session_factory, command) == (RawStatus.PROCESSED, "confirmed-subscribe")
    with session_factory() as s:
        explanation = s.get_one(RawMessage, command).explanation
        assert s.scalar(select(Membership.id).where(Membership.list_id == 1)) is not None
    assert explanation["confirmed"] == {
        "pending": 1,
        "by_raw": confirmation,
        "action": "subscribe",
    }
    # Nothing is left for an admin: the default listing (everything not processed) is empty.
    assert json.loads(run_cli("inbound", "list", "--json").stdout) == []
    shown = json.loads(run_cli("inbound", "show", str(command), "--json").stdout)
    assert (shown["status"], shown["reason"]) == ("processed", "confirmed-subscribe")


def test_confirmed_unsubscribe_is_processed_too(  # type: ignore[no-untyped-def]
    directory, deliver, session_factory
) -> None:
    directory.list("eng")
    directory.member("eng", BOB, name="Bob")
    command = deliver(
        mail(sender=BOB, to=f"eng-request@{DOMAIN}", subject="unsubscribe", body=""),
        f"eng-request@{DOMAIN}",
    )
    (token,) = confirm_tokens(session_factory)
    deliver(mail(sender=BOB, body="yes"), f"confirm+{token}@{DOMAIN}")
    assert raw_state(session_factory, command) == (RawStatus.PROCESSED, "confirmed-unsubscribe")
    with session_factory() as s:
        assert s.scalars(select(Membership)).all() == []
