"""Bounces end to end (BNC-01..04, LOOP-01): DSNs from real MTAs, sent by SMTP to the VERP
envelope sender of one member's copy, through the real gateway and ingest, on SQLite and
PostgreSQL.

Every test first posts to a list, fans the post out and sends the copies into a recording
relay, so the VERP addresses are exactly those a member's mail server would bounce to.
The DSN fixtures (tests/fixtures/mail/dsn-*.eml) came from other mailboxes; ``dsn_for``
points one at the copy under test by substituting the VERP address and the failed
recipient. The VERP token, not the report's Final-Recipient, names the member.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mailgate.copies import CopySettings
from mailgate.db import unit_of_work
from mailgate.delivery import TokenCopyBuilder, fan_out, send_batch
from mailgate.ingest import IngestContext, run_ingest
from mailgate.models import (
    AuditEntry,
    BounceState,
    DeliveryRecord,
    Notice,
    OutboxEntry,
    Post,
    RawMessage,
    RawStatus,
)
from mailgate.tokens import TokenKind, make_token, read_token
from tests.conftest import DOMAIN, SECRET
from worker.mailer import SmtpMailer

MAIL = Path(__file__).parents[1] / "fixtures" / "mail"
OWNER = "olga.owner@corp.example"
MEMBERS = ["jana.novak@corp.example", "ken.ito@corp.example", "lea.roth@corp.example"]
# Tuesday morning; each test counts days from here with a fake ingest clock.
DAY0 = datetime(2025, 3, 11, 8, 15, tzinfo=UTC)
_VERP_IN_FIXTURE = re.compile(rb"bounces\+[A-Za-z0-9]{1,64}@lists\.corp\.example")


def dsn_for(fixture: str, *, verp: str, failed: str, recipient: str) -> bytes:
    """The fixture's bytes as if our copy to ``recipient`` (envelope sender ``verp``) had
    bounced: every VERP address and every spelling of ``failed`` are substituted."""
    raw = (MAIL / f"{fixture}.eml").read_bytes()
    raw = _VERP_IN_FIXTURE.sub(verp.encode(), raw)
    raw = re.sub(re.escape(failed.encode()), recipient.encode(), raw, flags=re.IGNORECASE)
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def token_of(verp: str) -> str:
    """``bounces+TOKEN@lists.corp.example`` → ``TOKEN``."""
    return verp.split("@", 1)[0].split("+", 1)[1]


@dataclass
class Copies:
    post_id: int
    verp: dict[str, str] = field(default_factory=dict)  # member address → envelope sender


class Harness:
    """A list ``eng`` (owner + three members), posting, and bouncing through the gateway."""

    def __init__(self, gateway: Any, session_factory: Any, relay_sink: Any) -> None:
        self.gateway, self.factory, self.sink = gateway, session_factory, relay_sink
        self.builder = TokenCopyBuilder(CopySettings(domain=DOMAIN), SECRET)
        self.posts = 0

    def post(self) -> Copies:
        """The owner posts; the post is fanned out and every copy sent to the relay."""
        self.posts += 1
        raw = (
            f"From: Olga Owner <{OWNER}>\r\nTo: eng@{DOMAIN}\r\n"
            f"Subject: Release train {self.posts}\r\nDate: Mon, 10 Mar 2025 16:40:12 +0100\r\n"
            f"Message-ID: <train-{self.posts}@corp.example>\r\n\r\n"
            f"Train {self.posts} leaves at noon.\r\n"
        ).encode()
        raw_id = self.send(OWNER, f"eng@{DOMAIN}", raw)
        run_ingest(self.factory, raw_id, IngestContext(domain=DOMAIN, secrets=(SECRET,)))
        with self.factory() as s:
            post_id = s.scalars(select(Post.id).where(Post.raw_id == raw_id)).one()
        with unit_of_work(self.factory) as s:
            fan_out(s, post_id)
        with self.factory() as s:
            ids = list(
                s.scalars(select(DeliveryRecord.id).where(DeliveryRecord.post_id == post_id))
            )
        seen = len(self.sink.messages)
        if ids:
            report = send_batch(
                self.factory, ids, builder=self.builder, relay=SmtpMailer(self.sink.url)
            )
            assert report.sent == len(ids)
        copies = Copies(post_id)
        for message in self.sink.messages[seen:]:
            copies.verp[message.rcpt_to[0]] = message.mail_from
        return copies

    def send(self, mail_from: str, rcpt: str, raw: bytes) -> int:
        return self.gateway.submit(raw, rcpt, mail_from)

    def bounce(
        self, raw: bytes, verp: str, *, now: datetime = DAY0, mail_from: str = ""
    ) -> RawMessage:
        """Send ``raw`` with MAIL FROM:<> to ``verp`` and ingest it at ``now``."""
        raw_id = self.send(mail_from, verp, raw)
        ctx = IngestContext(domain=DOMAIN, secrets=(SECRET,), now=lambda: now)
        run_ingest(self.factory, raw_id, ctx)
        with self.factory() as s:
            return s.get_one(RawMessage, raw_id)

    def hard_bounce(self, copies: Copies, member: str, *, now: datetime = DAY0) -> RawMessage:
        raw = dsn_for(
            "dsn-postfix-hard",
            verp=copies.verp[member],
            failed="j.doe@corp.example",
            recipient=member,
        )
        return self.bounce(raw, copies.verp[member], now=now)

    def states(self) -> dict[str, BounceState]:
        from mailgate.models import Person

        with self.factory() as s:
            rows = s.execute(select(BounceState, Person).join(Person)).all()
            return {person.primary_address: state for state, person in rows}

    def notices(self) -> list[tuple[str, str]]:
        with self.factory() as s:
            return sorted(s.execute(select(Notice.address, Notice.reason)).all())

    def count(self, column: Any) -> int:
        with self.factory() as s:
            return int(s.scalar(select(func.count(column))) or 0)


@pytest.fixture
def eng(directory, gateway, session_factory, relay_sink) -> Harness:
    directory.list("eng", name="Engineering", visibility="members")
    directory.member("eng", OWNER, name="Olga Owner", role="owner")
    for address in MEMBERS:
        directory.member("eng", address, name=address.split("@")[0].replace(".", " ").title())
    # The owner of a list the bouncing members are not on must never hear about them.
    directory.list("ops", name="Operations")
    directory.member("ops", "otto.ops@corp.example", name="Otto", role="owner")
    return Harness(gateway, session_factory, relay_sink)


def _recipient_facts(raw: RawMessage) -> dict[str, Any]:
    (facts,) = raw.explanation["recipients"]
    return facts


# ---------------------------------------------------------------- one DSN, one member


def test_postfix_hard_dsn_scores_the_member_of_that_copy(eng: Harness, directory) -> None:
    copies = eng.post()
    assert sorted(copies.verp) == MEMBERS  # the author gets no copy
    assert len(set(copies.verp.values())) == len(MEMBERS)  # one envelope sender per copy
    target = MEMBERS[1]
    outbox_before, posts_before = eng.count(OutboxEntry.id), eng.count(Post.id)

    raw = eng.hard_bounce(copies, target)

    assert raw.mail_from == "<>"  # the null reverse-path, as the gateway stores it
    assert (raw.status, raw.reason) == (RawStatus.SUPPRESSED, "bounce")
    facts = _recipient_facts(raw)
    (delivery_id,) = read_token((SECRET,), TokenKind.BOUNCE, token_of(copies.verp[target]))
    assert facts["delivery"] == delivery_id
    assert facts["person"] == directory.person_id(target)
    assert (facts["outcome"], facts["permanent"], facts["score"]) == ("scored", True, 1.0)
    assert facts["bounces"] == [{"address": target, "permanent": True, "status": "5.1.1"}]
    states = eng.states()
    assert list(states) == [target]  # nobody else on the list is touched
    state = states[target]
    assert (state.score, state.bounces, state.suspended_at) == (1.0, 1, None)
    assert state.updated_at == DAY0
    assert "User unknown" in state.last_diagnostic
    # Nothing answers a bounce (BNC-04, LOOP-01), and a bounce is never a post.
    assert eng.notices() == []
    assert eng.count(OutboxEntry.id) == outbox_before
    assert eng.count(Post.id) == posts_before


# (fixture, the address it reports as failed, hard?) — real notices from other MTAs.
MTA_DSNS = [
    ("dsn-postfix-hard", "j.doe@corp.example", True),
    ("dsn-exim-hard", "m.schmidt@corp.example", True),
    ("dsn-exim-classic", "r.ortiz@corp.example", True),
    ("dsn-exchange-online-5.1.10", "t.nguyen@corp.example", True),
    ("dsn-exchange-de-unzustellbar", "h.weber@corp.example", True),
    ("dsn-gmail-hard", "ana.silva@corp.example", True),
    ("dsn-qmail-failure-notice", "l.moreau@corp.example", True),
    ("dsn-sendmail-returned-mail", "k.berg@corp.example", True),
    ("dsn-postfix-delayed", "a.kumar@corp.example", False),
]


@pytest.mark.parametrize(("fixture", "failed", "hard"), MTA_DSNS, ids=[f for f, _, _ in MTA_DSNS])
def test_dsn_from_each_mta_counts_for_the_member_of_that_copy(
    eng: Harness, directory, fixture: str, failed: str, hard: bool
) -> None:
    copies = eng.post()
    target = MEMBERS[len(fixture) % len(MEMBERS)]  # spread the cases over the members
    raw = dsn_for(fixture, verp=copies.verp[target], failed=failed, recipient=target)
    row = eng.bounce(raw, copies.verp[target])

    assert (row.status, row.reason) == (RawStatus.SUPPRESSED, "bounce")
    facts = _recipient_facts(row)
    assert facts["person"] == directory.person_id(target)
    assert [(b["address"], b["permanent"]) for b in facts["bounces"]] == [(target, hard)]
    states = eng.states()
    assert list(states) == [target]
    # A hard bounce weighs 1.0, a delay notice (4.x.x) only 0.1 (BNC-03).
    assert states[target].score == pytest.approx(1.0 if hard else 0.1)
    assert states[target].suspended_at is None
    assert eng.notices() == []


def test_verp_not_the_report_names_the_member(eng: Harness, directory) -> None:
    """A forwarded or aliased mailbox reports another address (even another member's):
    the copy the VERP token names is the one that failed (BNC-01)."""
    copies = eng.post()
    raw = dsn_for(
        "dsn-postfix-hard",
        verp=copies.verp[MEMBERS[2]],
        failed="j.doe@corp.example",
        recipient=MEMBERS[0],
    )
    row = eng.bounce(raw, copies.verp[MEMBERS[2]])
    assert _recipient_facts(row)["person"] == directory.person_id(MEMBERS[2])
    assert list(eng.states()) == [MEMBERS[2]]


def test_verp_address_is_case_insensitive(eng: Harness) -> None:
    """Some MTAs upper-case the envelope sender they bounce to; base32 does not care."""
    copies = eng.post()
    shouted = copies.verp[MEMBERS[0]].upper()
    raw = dsn_for(
        "dsn-exim-hard", verp=shouted, failed="m.schmidt@corp.example", recipient=MEMBERS[0]
    )
    row = eng.bounce(raw, shouted)
    assert (row.status, row.reason) == (RawStatus.SUPPRESSED, "bounce")
    assert eng.states()[MEMBERS[0]].score == 1.0


# ---------------------------------------------------------------- scoring over days


def test_five_daily_hard_bounces_suspend_and_tell_member_and_owner(eng: Harness) -> None:
    target = MEMBERS[0]
    copies = []
    for day in range(4):
        copies.append(eng.post())
        eng.hard_bounce(copies[-1], target, now=DAY0 + timedelta(days=day, hours=day))
    state = eng.states()[target]
    assert (state.score, state.suspended_at) == (4.0, None)  # four days: still delivered
    assert eng.notices() == []

    copies.append(eng.post())
    fifth = DAY0 + timedelta(days=4, hours=3)
    row = eng.hard_bounce(copies[-1], target, now=fifth)

    assert _recipient_facts(row)["outcome"] == "suspended"
    state = eng.states()[target]
    assert (state.score, state.bounces, state.suspended_at) == (5.0, 5, fifth)
    # The member (all their addresses) and the owner of their list; not ops' owner.
    assert eng.notices() == sorted(
        [(target, "bounce-suspended"), (OWNER, "bounce-suspended-owner")]
    )
    with eng.factory() as s:
        notices = list(s.scalars(select(Notice)))
        queued = dict(
            s.execute(
                select(OutboxEntry.key, OutboxEntry.task).where(OutboxEntry.key.like("notice:%"))
            ).all()
        )
    assert queued == {f"notice:{n.id}": "mailgate.send_notice" for n in notices}
    assert all(n.raw_id == row.id and n.context["member"] == target for n in notices)

    # The first copy's DSN again, days later: one failed copy counts once, and nobody
    # is told again.
    late = eng.hard_bounce(copies[0], target, now=fifth + timedelta(days=1))
    assert _recipient_facts(late)["outcome"] == "already-counted"
    assert eng.states()[target].score == 5.0
    assert eng.states()[target].suspended_at == fifth
    assert len(eng.notices()) == 2


def test_same_day_bounces_count_once(eng: Harness) -> None:
    first, second, third = eng.post(), eng.post(), eng.post()
    target = MEMBERS[2]
    eng.hard_bounce(first, target, now=DAY0)
    eng.hard_bounce(second, target, now=DAY0 + timedelta(hours=9))  # same UTC day
    state = eng.states()[target]
    assert (state.score, state.bounces) == (1.0, 2)
    eng.hard_bounce(third, target, now=DAY0 + timedelta(days=1))
    assert eng.states()[target].score == 2.0


def test_soft_bounces_alone_never_suspend(eng: Harness) -> None:
    target = MEMBERS[1]
    for day in range(6):
        copies = eng.post()
        raw = dsn_for(
            "dsn-postfix-delayed",
            verp=copies.verp[target],
            failed="a.kumar@corp.example",
            recipient=target,
        )
        eng.bounce(raw, copies.verp[target], now=DAY0 + timedelta(days=day))
    state = eng.states()[target]
    assert state.score == pytest.approx(0.6)
    assert state.suspended_at is None
    assert eng.notices() == []


# ---------------------------------------------------------------- suspension and the CLI


def _suspend(eng: Harness, target: str) -> None:
    for day in range(5):
        eng.hard_bounce(eng.post(), target, now=DAY0 + timedelta(days=day))
    assert eng.states()[target].suspended_at is not None


def test_suspended_member_gets_nothing_until_reset(eng: Harness, run_cli, directory) -> None:
    target, other = MEMBERS[0], MEMBERS[1]
    _suspend(eng, target)
    # Another member with one soft bounce: listed, but not as suspended.
    copies = eng.post()
    assert target not in copies.verp and other in copies.verp  # no delivery row at all
    with eng.factory() as s:
        rows = s.scalars(
            select(DeliveryRecord.address).where(DeliveryRecord.post_id == copies.post_id)
        )
        assert sorted(rows) == [m for m in MEMBERS if m != target]
    eng.bounce(
        dsn_for(
            "dsn-postfix-delayed",
            verp=copies.verp[other],
            failed="a.kumar@corp.example",
            recipient=other,
        ),
        copies.verp[other],
    )

    listed = run_cli("bounces", "list", "--suspended", "--json")
    assert listed.exit_code == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["email"], row["score"], row["bounces"], row["suspended"]) == (target, 5.0, 5, True)
    everyone = json.loads(run_cli("bounces", "list", "--json").stdout)
    assert [(r["email"], r["suspended"]) for r in everyone] == [(target, True), (other, False)]

    shown = run_cli("bounces", "show", target.upper(), "--json")
    assert shown.exit_code == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["email"], data["suspended"], data["lists"]) == (target, True, ["eng"])
    assert data["suspended_at"] == (DAY0 + timedelta(days=4)).isoformat(timespec="seconds")
    assert "5.1.1" in data["last_diagnostic"]

    reset = run_cli("bounces", "reset", target)
    assert reset.exit_code == 0, reset.stderr
    state = eng.states()[target]
    assert (state.score, state.suspended_at) == (0.0, None)
    after = json.loads(run_cli("bounces", "show", target, "--json").stdout)
    assert (after["score"], after["suspended"]) == (0, False)
    assert json.loads(run_cli("bounces", "list", "--suspended", "--json").stdout) == []
    with eng.factory() as s:
        (audit,) = s.scalars(select(AuditEntry).where(AuditEntry.action == "bounces.reset"))
    assert audit.target == f"person:{target}"
    assert audit.before == {"score": 5.0, "suspended": True}
    assert audit.after == {"score": 0.0, "suspended": False}

    assert target in eng.post().verp  # delivery resumes with the next post
    # A fresh start: one new bounce counts as the first, it does not re-suspend.
    copies = eng.post()
    eng.hard_bounce(copies, target, now=DAY0 + timedelta(days=5))
    state = eng.states()[target]
    assert (state.score, state.suspended_at) == (1.0, None)


def test_reset_without_bounces_is_an_error(eng: Harness, run_cli) -> None:
    result = run_cli("bounces", "reset", MEMBERS[2])
    assert result.exit_code == 1
    assert "no bounces" in result.stderr
    with eng.factory() as s:
        assert s.scalar(select(func.count()).where(AuditEntry.action == "bounces.reset")) == 0
    assert run_cli("bounces", "show", MEMBERS[2], "--json").exit_code == 0


# ---------------------------------------------------------------- what is not a bounce


def _bad_tokens(eng: Harness) -> dict[str, str]:
    copies = eng.post()
    good = token_of(copies.verp[MEMBERS[0]])
    (delivery_id,) = read_token((SECRET,), TokenKind.BOUNCE, good)
    flipped = good[:-1] + ("a" if good[-1] != "a" else "b")
    return {
        "garbled": "not-a-token",
        "tampered": flipped,
        "truncated": good[:-4],
        "other-secret": make_token(
            "another-secret-0123456789abcdef0123", TokenKind.BOUNCE, delivery_id
        ),
        "reply-kind": make_token(SECRET, TokenKind.REPLY, 1, 1),
        "empty": "",
    }


@pytest.mark.parametrize(
    "case", ["garbled", "tampered", "truncated", "other-secret", "reply-kind", "empty"]
)
def test_forged_verp_token_is_refused_at_rcpt(eng: Harness, case: str) -> None:
    token = _bad_tokens(eng)[case]
    published = len(eng.gateway.published)
    with eng.gateway.smtp() as client:
        client.ehlo("mx1.corp.example")
        assert client.mail("")[0] == 250
        code, message = client.rcpt(f"bounces+{token}@{DOMAIN}")
    assert code == 550
    assert message.startswith(b"5.1.1")
    assert len(eng.gateway.published) == published  # nothing stored
    assert eng.states() == {}


def test_signed_token_for_a_vanished_delivery_scores_nobody(eng: Harness) -> None:
    eng.post()
    verp = f"bounces+{make_token(SECRET, TokenKind.BOUNCE, 987_654)}@{DOMAIN}"
    raw = dsn_for("dsn-postfix-hard", verp=verp, failed="j.doe@corp.example", recipient=MEMBERS[0])
    row = eng.bounce(raw, verp)
    assert row.status is RawStatus.SUPPRESSED
    assert _recipient_facts(row)["outcome"] == "unknown-delivery"
    assert eng.states() == {}
    assert eng.notices() == []


# Vacation notices go to the envelope sender, i.e. the VERP address (RFC 3834 §3.1.1).
AUTO_REPLIES = {
    "sieve-vacation": (
        "",
        "From: Jana Novak <jana.novak@corp.example>\r\n"
        "To: bounces+{token}@lists.corp.example\r\n"
        "Subject: Auto: [eng] Release train 1\r\n"
        "Date: Tue, 11 Mar 2025 09:20:00 +0100\r\n"
        "Message-ID: <vacation-1@corp.example>\r\n"
        "In-Reply-To: <train-1@corp.example>\r\n"
        "Auto-Submitted: auto-replied (vacation)\r\n"
        "Precedence: bulk\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "I am on leave until 24 March with no access to mail.\r\n",
    ),
    "exchange-oof": (
        "jana.novak@corp.example",
        "From: Jana Novak <jana.novak@corp.example>\r\n"
        "To: <bounces+{token}@lists.corp.example>\r\n"
        "Subject: Automatic reply: [eng] Release train 1\r\n"
        "Date: Tue, 11 Mar 2025 08:20:00 +0000\r\n"
        "Message-ID: <b6f1c2d3e4@EXMB01.corp.example>\r\n"
        "Thread-Topic: [eng] Release train 1\r\n"
        "Auto-Submitted: auto-generated\r\n"
        "X-Auto-Response-Suppress: All\r\n"
        "X-MS-Exchange-Inbox-Rules-Loop: jana.novak@corp.example\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        "I am out of the office until Monday.\r\n",
    ),
    "german-no-headers": (
        "jana.novak@corp.example",
        "From: Jana Novak <jana.novak@corp.example>\r\n"
        "To: bounces+{token}@lists.corp.example\r\n"
        "Subject: Abwesenheitsnotiz: [eng] Release train 1\r\n"
        "Date: Tue, 11 Mar 2025 09:20:00 +0100\r\n"
        "Message-ID: <abw-1@corp.example>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "Ich bin bis 24. März nicht im Büro.\r\n",
    ),
}


@pytest.mark.parametrize("case", sorted(AUTO_REPLIES))
def test_auto_reply_to_verp_address_is_suppressed_and_not_counted(eng: Harness, case: str) -> None:
    copies = eng.post()
    verp = copies.verp[MEMBERS[0]]
    mail_from, text = AUTO_REPLIES[case]
    token = token_of(verp)
    outbox_before = eng.count(OutboxEntry.id)
    row = eng.bounce(text.replace("{token}", token).encode(), verp, mail_from=mail_from)
    assert row.status is RawStatus.SUPPRESSED
    assert row.reason != "bounce"
    assert eng.states() == {}
    assert eng.notices() == []
    assert eng.count(OutboxEntry.id) == outbox_before


POSTFIX_SUCCESS = """\
Return-Path: <>
Delivered-To: {verp}
Date: Tue, 11 Mar 2025 09:14:07 +0100 (CET)
From: MAILER-DAEMON@mx1.corp.example (Mail Delivery System)
Subject: Successful Mail Delivery Report
To: {verp}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4Xk2Lq1abcz9sWd.1741680847/mx1.corp.example"
Message-Id: <20250311081407.4Xk2Lq1abcz9sWd@mx1.corp.example>

This is a MIME-encapsulated message.

--4Xk2Lq1abcz9sWd.1741680847/mx1.corp.example
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx1.corp.example.

Your message was successfully delivered to the destination(s)
listed below. If the message was delivered to mailbox you will
receive no further notifications. Otherwise you may still receive
notifications of mail delivery errors from other systems.

                   The mail system

<{rcpt}>: delivery via mbox.corp.example[192.0.2.33]:25: 250 2.0.0 Ok:
    queued as 4Xk2Lr7Hq2z1xyz

--4Xk2Lq1abcz9sWd.1741680847/mx1.corp.example
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx1.corp.example
X-Postfix-Queue-ID: 4Xk2Lq1abcz9sWd
X-Postfix-Sender: rfc822; {verp}
Arrival-Date: Tue, 11 Mar 2025 09:14:06 +0100 (CET)

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: relayed
Status: 2.0.0
Remote-MTA: dns; mbox.corp.example
Diagnostic-Code: smtp; 250 2.0.0 Ok: queued as 4Xk2Lr7Hq2z1xyz

--4Xk2Lq1abcz9sWd.1741680847/mx1.corp.example--
"""


def test_success_report_is_not_a_bounce(eng: Harness) -> None:
    """A "relayed"/"delivered" DSN (RFC 3464 §2.3.3) says the copy arrived; the free-text
    part's "250 2.0.0" next to the address must not be read as a failure."""
    copies = eng.post()
    verp = copies.verp[MEMBERS[1]]
    text = POSTFIX_SUCCESS.format(verp=verp, rcpt=MEMBERS[1])
    row = eng.bounce(text.replace("\n", "\r\n").encode(), verp)
    assert (row.status, row.reason) == (RawStatus.SUPPRESSED, "delivery-report")
    assert eng.states() == {}
    assert eng.notices() == []


def test_dsn_to_the_posting_address_is_no_post_and_no_score(eng: Harness) -> None:
    """BNC-04: a bounce of someone's own mail that lands on the list address."""
    copies = eng.post()
    raw = dsn_for(
        "dsn-exim-hard",
        verp=f"eng@{DOMAIN}",
        failed="m.schmidt@corp.example",
        recipient=MEMBERS[0],
    )
    posts_before, outbox_before = eng.count(Post.id), eng.count(OutboxEntry.id)
    row = eng.bounce(raw, f"eng@{DOMAIN}")
    assert (row.status, row.reason) == (RawStatus.SUPPRESSED, "bounce-to-posting-address")
    assert eng.count(Post.id) == posts_before
    assert eng.count(OutboxEntry.id) == outbox_before
    assert eng.states() == {}
    assert copies.verp  # the post itself went out
