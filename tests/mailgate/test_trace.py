"""Trace (pure): the peer our own Received field names (issue 12 item 14)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailgate.trace import SessionFacts, own_trace_peer, received_field

BODY = b"From: a@corp.example\r\nSubject: x\r\n\r\nhello\r\n"
WHEN = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("peer", "helo", "tls"),
    [
        ("127.0.0.1", "mx.corp.example", None),
        ("10.20.0.25", "[10.20.0.25]", "TLSv1.3"),  # an address literal as HELO
        ("::ffff:10.20.0.25", "", None),
        ("2001:db8::25", "mx (with) spaces", "TLSv1.2"),  # HELO is sanitised
    ],
)
def test_own_trace_names_the_peer(peer: str, helo: str, tls: str | None) -> None:
    facts = SessionFacts(peer=peer, helo=helo, esmtp=True, tls_version=tls, tls_cipher="X")
    raw = received_field(facts, by="lists.corp.example", queue_id="7f3a9c", now=WHEN) + BODY
    assert own_trace_peer(raw) == peer


@pytest.mark.parametrize(
    "raw",
    [
        BODY,  # stored without our field
        b"Received: from x ([127.0.0.1])\r\n\tby y (Postfix) with SMTP id 1; d\r\n" + BODY,
        # a sender's forgery of our field sits under ours, or is not first at all
        b"X-Spam: no\r\nReceived: from x ([127.0.0.1])\r\n\tby y (Mailgate) with SMTP id 1; d\r\n"
        + BODY,
        b"Received: from x (y [127.0.0.1])\r\n\tby z (Mailgate) with SMTP id 1; d\r\n" + BODY,
    ],
)
def test_without_our_field_on_top_no_peer_is_named(raw: bytes) -> None:
    assert own_trace_peer(raw) is None
