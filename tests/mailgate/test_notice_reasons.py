"""Every refusal notice states its reason (issue 17): the notices ingest actually queues,
rendered from the context it stored, through the real gateway on 127.0.0.1 and the ingest
service. A template that says "because" or shows ``{{ details }}`` must never render
with the reason left blank."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from mailgate.ingest import IngestContext, run_ingest
from mailgate.models import Notice
from mailgate.notices import compose_notice
from tests.conftest import DOMAIN, SECRET
from tests.conftest import build_mail as mail

CEO, BOB, OWNER = "ceo@corp.example", "bob@corp.example", "owner@corp.example"
TRUSTED = "mx.corp.example; dkim=pass header.d=corp.example; dmarc=pass header.from=corp.example"
ASK = f"ask@{DOMAIN}"
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "notices"


@pytest.fixture
def company(directory):  # type: ignore[no-untyped-def]
    directory.list("eng", visibility="members")
    directory.member("eng", OWNER, role="owner")
    directory.member("eng", BOB)
    directory.list("all")
    directory.member("all", CEO)
    directory.grant(CEO, "executive")
    return directory


@pytest.fixture
def deliver(gateway, session_factory):  # type: ignore[no-untyped-def]
    ctx = IngestContext(
        domain=DOMAIN,
        secrets=(SECRET,),
        authserv_ids=frozenset({"mx.corp.example"}),
        authres_relays=("127.0.0.1/32",),
        now=lambda: NOW,
    )

    def send(raw: bytes, rcpt: str, mail_from: str) -> None:
        run_ingest(session_factory, gateway.submit(raw, rcpt, mail_from), ctx)

    return send


def authenticated(raw: bytes) -> bytes:
    return f"Authentication-Results: {TRUSTED}\r\n".encode() + raw


def rendered_notices(session_factory) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        rows = s.scalars(select(Notice).order_by(Notice.id)).all()
        return [
            (
                n.reason,
                n.address,
                compose_notice(
                    notice_id=n.id,
                    reason=n.reason,
                    address=n.address,
                    stored=n.context or {},
                    domain=DOMAIN,
                )
                .get_body(("plain",))
                .get_content(),  # type: ignore[union-attr]
            )
            for n in rows
        ]


# (who sends, to, body, the notice's reason, text the reason must contain)
ASKS = [
    (BOB, ASK, "To: company\n\nWhy?", "ask-not-allowed", f"and {BOB} does not have it"),
    (OWNER, ASK, "To: company\n\nWhy?", "ask-not-allowed", f"and {OWNER} does not have it"),
    (BOB, ASK, "To: eng\n\nWhy?", "ask-not-allowed", f"{BOB} is not an owner of the list eng"),
    (CEO, ASK, "To: nosuchlist\n\nWhy?", "ask-invalid", "nosuchlist"),
    (CEO, ASK, "Deadline: 2026-12-04\n\nWhy?", "ask-invalid", "2026-12-04 is in the past"),
    (CEO, ASK, "Visibility: secret-ish\n\nWhy?", "ask-invalid", "use open or asker-only"),
    (CEO, ASK, "To: company\n\n", "ask-invalid", "no text"),
]


@pytest.mark.parametrize(("sender", "rcpt", "body", "reason", "because"), ASKS)
def test_ask_refusals_say_why(  # type: ignore[no-untyped-def]
    company, deliver, session_factory, sender, rcpt, body, reason, because
) -> None:
    deliver(authenticated(mail(sender=sender, to=rcpt, body=body)), rcpt, sender)
    [(got, address, text)] = rendered_notices(session_factory)
    assert (got, address) == (reason, sender)
    assert because in text
    assert not re.search(r"because:?\s*\n\s*\n\s*(To ask|\n)", text), text


def test_a_held_loop_tells_the_owner_why(company, deliver, session_factory) -> None:  # type: ignore[no-untyped-def]
    for _ in range(2):
        deliver(
            mail(sender=BOB, body="Build 4711 finished on the main branch: all 312 checks passed."),
            f"eng@{DOMAIN}",
            BOB,
        )
    [(reason, address, text)] = rendered_notices(session_factory)
    assert (reason, address) == ("held-for-moderation", OWNER)
    assert "the same text from the same author again within minutes" in text


def test_every_template_with_a_reason_is_covered_here() -> None:
    """A new notice whose template shows ``{{ details }}`` needs a case in this file."""
    with_details = sorted(
        p.stem for p in TEMPLATES.glob("*.txt") if re.search(r"{{\s*details\s*}}", p.read_text())
    )
    covered = {case[3] for case in ASKS} | {"held-for-moderation", "ask-accepted"}
    assert set(with_details) <= covered, with_details
