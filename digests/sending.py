"""Sending: the digest use case — who is due, build each member's digest, send, record.

Input: a session factory, the time, a relay and the settings the mail needs. Output: one
``digests`` row per (member, local date), unique (DUR-06), in state ``sent`` or
``empty`` (nothing worth reading, nothing sent). Running a step twice sends nothing
twice: rows are claimed with a lease before sending and a row that is sent or empty is
never claimed again.

Flow per batch: claim rows → windows (since each member's previous digest) → gather (a
fixed number of queries per batch) → plan (``digests.rank``, pure) → compose
(``digests.compose``, pure) → relay → mark.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from digests.compose import DigestContext, compose_digest
from digests.facts import DigestPlan
from digests.gather import digest_clocks, gather
from digests.rank import plan_digest
from digests.schedule import due_members
from mailgate.addressing import command_address, digest_address, reply_address
from mailgate.db import insert_ignoring_duplicates, read_only, unit_of_work
from mailgate.models import Address, Delivery, Digest, MailingList, Membership, Person, utcnow
from mailgate.relay import Relay, TransientRelayError
from mailgate.tokens import TokenKind, make_token

log = logging.getLogger("digests.sending")

BATCH = 200
LEASE = timedelta(minutes=10)
FIRST_WINDOW = timedelta(days=1)  # a member's first digest covers the last day
MAX_LEDGER = 5  # open leadership questions shown in a digest


@dataclass(frozen=True)
class DigestMail:
    """Everything needed to address one member's digest."""

    domain: str
    secret: str
    base_url: str | None
    company_name: str = "Mailgate"  # the heading: "Acme digest · Tuesday 3 March 2026"


@dataclass
class DigestReport:
    sent: int = 0
    empty: int = 0
    deferred: int = 0


def due_now(factory: sessionmaker[Session], now: datetime) -> list[tuple[int, date]]:
    """(person id, local date) of every member whose digest is due (the scheduler step)."""
    with factory() as session:
        return due_members(digest_clocks(session), now)


def claim_digests(session: Session, due: Sequence[tuple[int, date]], now: datetime) -> list[Digest]:
    """Create the (member, date) rows if missing and claim the pending ones."""
    if not due:
        return []
    insert_ignoring_duplicates(
        session,
        Digest,
        [
            {
                "person_id": pid,
                "local_date": d.isoformat(),
                "status": "pending",
                "items": [],
                "created_at": now,
            }
            for pid, d in due
        ],
    )
    keys = tuple_(Digest.person_id, Digest.local_date).in_([(pid, d.isoformat()) for pid, d in due])
    claimable = and_(
        Digest.status == "pending", or_(Digest.lease_until.is_(None), Digest.lease_until < now)
    )
    ids = session.scalars(
        update(Digest)
        .where(keys, claimable)
        .values(lease_until=now + LEASE)
        .returning(Digest.id)
        .execution_options(synchronize_session=False)
    ).all()
    return list(session.scalars(select(Digest).where(Digest.id.in_(ids)).order_by(Digest.id)))


def windows(session: Session, rows: Sequence[Digest], now: datetime) -> dict[int, datetime]:
    """Each member's window starts at their previous digest (one query for the batch)."""
    previous = dict(
        session.execute(
            select(Digest.person_id, func.max(Digest.created_at))
            .where(
                Digest.person_id.in_([r.person_id for r in rows]),
                Digest.status.in_(["sent", "empty"]),
            )
            .group_by(Digest.person_id)
        ).all()
    )
    return {r.person_id: previous.get(r.person_id) or now - FIRST_WINDOW for r in rows}


def build_plans(session: Session, rows: Sequence[Digest], now: datetime) -> dict[int, DigestPlan]:
    since = windows(session, rows, now)
    gathered = gather(session, since, now)
    plans = {}
    for row in rows:
        view = gathered.views[row.person_id]
        # plan_digest applies the member's lists and window itself.
        plan = plan_digest(
            view, gathered.discussions, local_date=date.fromisoformat(row.local_date)
        )
        ledger = tuple(e for e in gathered.ledger if e.list_id in view.readable_list_ids)
        plans[row.id] = replace(plan, ledger=ledger[:MAX_LEDGER])
    return plans


def _addresses(session: Session, person_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    return {
        pid: (email, name)
        for pid, email, name in session.execute(
            select(Person.id, Address.email, Person.name)
            .join(Address, and_(Address.person_id == Person.id, Address.is_primary.is_(True)))
            .where(Person.id.in_(person_ids))
        )
    }


def _settings_lists(session: Session, person_ids: Sequence[int]) -> dict[int, tuple[int, str]]:
    """A list per member whose -request address takes their delivery commands."""
    out: dict[int, tuple[int, str]] = {}
    for pid, list_id, slug in session.execute(
        select(Membership.person_id, MailingList.id, MailingList.slug)
        .join(MailingList, MailingList.id == Membership.list_id)
        .where(Membership.person_id.in_(person_ids), Membership.delivery == Delivery.DIGEST)
        .order_by(MailingList.slug)
    ):
        out.setdefault(pid, (list_id, slug))
    return out


def compose_for(
    plan: DigestPlan,
    row: Digest,
    mail: DigestMail,
    address: tuple[str, str],
    settings_list: tuple[int, str] | None,
) -> bytes:
    email, name = address
    unsubscribe = None
    if mail.base_url:
        # One click stops this digest, as its mailto does (never one list's membership).
        token = make_token(mail.secret, TokenKind.DIGEST_UNSUBSCRIBE, row.person_id)
        unsubscribe = f"{mail.base_url}/u/{token}"
    context = DigestContext(
        domain=mail.domain,
        member_name=name,
        member_address=email,
        local_date=plan.local_date,
        digest_id=row.id,
        digest_reply_address=digest_address(
            make_token(mail.secret, TokenKind.DIGEST, row.person_id, row.id), mail.domain
        ),
        item_reply_addresses=tuple(
            reply_address(
                make_token(mail.secret, TokenKind.REPLY, row.person_id, item.discussion_id),
                mail.domain,
            )
            for item in plan.items
        ),
        unsubscribe_url=unsubscribe,
        # Delivery changes are replies to the digest itself (its commands); a -request
        # address is named only for "nomail", when the member takes a list by digest.
        settings_address=command_address(settings_list[1], mail.domain) if settings_list else None,
        company_name=mail.company_name,
    )
    return compose_digest(plan, context)


def send_digests(
    factory: sessionmaker[Session],
    due: Sequence[tuple[int, date]],
    *,
    mail: DigestMail,
    relay: Relay,
    now: datetime | None = None,
) -> DigestReport:
    """Build and send the digests of one batch of due members."""
    stamp = now or utcnow()
    report = DigestReport()
    # Three short steps, so that on SQLite the write lock is held only to claim and to
    # mark, and two workers build their batches side by side.
    with unit_of_work(factory) as session:
        rows = claim_digests(session, due, stamp)
        session.expunge_all()
    if not rows:
        return report
    outgoing: list[tuple[Digest, DigestPlan, bytes]] = []
    marks: list[dict[str, Any]] = []
    with read_only(factory) as session:
        plans = build_plans(session, rows, stamp)
        person_ids = [r.person_id for r in rows]
        addresses = _addresses(session, person_ids)
        lists = _settings_lists(session, person_ids)
    for row in rows:
        plan = plans[row.id]
        if not plan.worth_sending or row.person_id not in addresses:
            marks.append({"id": row.id, "status": "empty", "sent_at": stamp, "lease_until": None})
            report.empty += 1
            continue
        data = compose_for(plan, row, mail, addresses[row.person_id], lists.get(row.person_id))
        outgoing.append((row, plan, data))
    sent: list[tuple[Digest, DigestPlan]] = []
    try:
        with relay.open() as connection:
            for row, plan, data in outgoing:
                # A digest is auto-generated: null envelope sender, nothing bounces back
                # into a loop (LOOP-04).
                result = connection.send("", [addresses[row.person_id][0]], data)
                if addresses[row.person_id][0] not in result.temporary:
                    sent.append((row, plan))
    except TransientRelayError as exc:
        log.warning(
            "relay unavailable (%s); %d digests wait for the lease", exc, len(outgoing) - len(sent)
        )
    marks += [
        {
            "id": row.id,
            "status": "sent",
            "sent_at": stamp,
            "lease_until": None,
            "items": [i.discussion_id for i in plan.items],
        }
        for row, plan in sent
    ]
    if marks:
        with unit_of_work(factory) as session:
            session.execute(update(Digest), marks)  # one executemany by primary key
    report.sent = len(sent)
    report.deferred = len(outgoing) - len(sent)
    return report


def preview(
    session: Session, person_id: int, local_date: date, now: datetime
) -> tuple[DigestPlan, Any]:
    """The plan a member would get now, without claiming or sending anything."""
    row = Digest(id=0, person_id=person_id, local_date=local_date.isoformat())
    since = windows(session, [row], now)
    gathered = gather(session, since, now)
    view = gathered.views[person_id]
    plan = plan_digest(view, gathered.discussions, local_date=local_date)
    return plan, row
