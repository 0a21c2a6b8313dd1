"""The not-a-member notice suggests "subscribe" only when subscribing would work (issue 17).

It used to tell everyone to send "subscribe" to the -request address, and a members-only
list then refused exactly that. The notice and the -request handler now ask the same
decision (``access.may_subscribe``); when it says no, the notice names whom to ask: the
list's owners, or the admins when it has none. Real gateway on 127.0.0.1, the ingest
service, and the notice as the relay receives it.
"""

from __future__ import annotations

import email
import email.policy

import pytest
from sqlalchemy import select

from mailgate.db import unit_of_work
from mailgate.ingest import run_ingest
from mailgate.models import Notice, RawMessage
from mailgate.notices import deliver_notice
from tests.conftest import DOMAIN
from tests.conftest import build_mail as mail
from worker.mailer import SmtpMailer

CAROL = "carol@corp.example"  # in the company directory, on neither list


@pytest.fixture
def world(directory):  # type: ignore[no-untyped-def]
    directory.list("eng", name="Engineering", visibility="members")
    directory.list("social", name="Social", visibility="company")
    directory.member("eng", "olga@corp.example", name="Olga")
    directory.grant("olga@corp.example", "owner", "eng")
    directory.member("eng", "ann@corp.example", name="Ann")
    directory.member("social", "ann@corp.example", name="Ann")
    directory.list("lobby", name="Lobby")
    directory.member("lobby", CAROL, name="Carol")
    return directory


@pytest.fixture
def send(gateway, session_factory, ingest_context, relay_sink):  # type: ignore[no-untyped-def]
    """Deliver ``raw`` through the gateway and ingest it; return (reason, notice text)."""

    def deliver(rcpt: str, subject: str = "Hello", body: str = "Hi all") -> tuple[str, str]:
        raw_id = gateway.submit(
            mail(sender=CAROL, to=rcpt, subject=subject, body=body), rcpt, CAROL
        )
        run_ingest(session_factory, raw_id, ingest_context)
        with unit_of_work(session_factory) as s:
            reason = s.get_one(RawMessage, raw_id).reason
            notice = s.scalars(select(Notice).where(Notice.raw_id == raw_id)).one()
            before = len(relay_sink.messages)
            assert deliver_notice(s, notice.id, SmtpMailer(relay_sink.url), DOMAIN)
        message = email.message_from_bytes(
            relay_sink.messages[before].data, policy=email.policy.default
        )
        return reason, " ".join(message.get_body(("plain",)).get_content().split())

    return deliver


def test_members_only_list_names_its_owner_instead_of_subscribe(world, send) -> None:  # type: ignore[no-untyped-def]
    reason, text = send(f"eng@{DOMAIN}")
    assert reason == "not-a-member"
    assert "subscribe" not in text.replace("unsubscribe", "")
    assert f"eng-request@{DOMAIN}" not in text.split("For help")[0]
    assert "To be added, ask olga@corp.example." in text
    # What the notice does not suggest would indeed have been refused.
    reason, text = send(f"eng-request@{DOMAIN}", subject="subscribe", body="")
    assert reason == "subscribe-not-allowed"
    assert "To be added, ask olga@corp.example." in text


def test_company_list_suggests_subscribe_and_subscribe_is_accepted(world, send) -> None:  # type: ignore[no-untyped-def]
    reason, text = send(f"social@{DOMAIN}")
    assert reason == "not-a-member"
    assert f'To join, send "subscribe" to social-request@{DOMAIN}' in text
    reason, text = send(f"social-request@{DOMAIN}", subject="subscribe", body="")
    assert reason == "awaiting-confirmation"  # the suggestion works


def test_a_list_without_owner_names_the_admins(world, send, directory) -> None:  # type: ignore[no-untyped-def]
    directory.list("board", name="Board", visibility="members")
    directory.member("board", "bea@corp.example", name="Bea")
    directory.member("lobby", "root@corp.example", name="Root")
    directory.grant("root@corp.example", "admin")
    reason, text = send(f"board@{DOMAIN}")
    assert reason == "not-a-member"
    assert "To be added, ask root@corp.example." in text
    assert 'send "subscribe"' not in text
