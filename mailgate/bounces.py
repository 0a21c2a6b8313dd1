"""Bounces: a DSN to a VERP address, mapped to the member and scored (BNC-01..04).

Input: a session, the delivery id carried by the VERP token, whether the failure was
permanent, and the time. Output: the person's ``bounce_states`` row updated with the
decayed score (``mailgate.bounce_scores``, pure); when it crosses the threshold, delivery
is suspended and notices go to the member (all their addresses) and to the owners of
their lists. ``mailgate bounces reset`` undoes a suspension.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgate import bounce_scores
from mailgate.models import (
    Address,
    BounceState,
    DeliveryRecord,
    MailingList,
    Membership,
    Notice,
    OutboxEntry,
    Person,
    Role,
)

BOUNCED_MARK = "bounced: "


def record_bounce(
    session: Session,
    delivery_id: int,
    *,
    permanent: bool,
    diagnostic: str,
    now: datetime,
    raw_id: int | None = None,
) -> dict[str, Any]:
    delivery = session.get(DeliveryRecord, delivery_id, with_for_update=True)
    if delivery is None:
        return {"delivery": delivery_id, "outcome": "unknown-delivery"}
    if delivery.last_error.startswith(BOUNCED_MARK):
        # One failed copy counts once, however often its DSN is repeated.
        return {"delivery": delivery_id, "outcome": "already-counted"}
    delivery.last_error = f"{BOUNCED_MARK}{diagnostic}"[:400]
    state = session.scalar(
        select(BounceState).where(BounceState.person_id == delivery.person_id).with_for_update()
    )
    if state is None:
        state = BounceState(person_id=delivery.person_id, score=0.0, bounces=0)
        session.add(state)
    before = bounce_scores.BounceState(
        score=state.score, updated_at=state.updated_at, suspended=state.suspended_at is not None
    )
    after, crossed = bounce_scores.add_bounce(before, permanent=permanent, now=now)
    state.score, state.updated_at = after.score, after.updated_at
    state.bounces = (state.bounces or 0) + 1
    state.last_diagnostic = diagnostic[:400]
    facts: dict[str, Any] = {
        "delivery": delivery_id,
        "person": delivery.person_id,
        "permanent": permanent,
        "score": round(after.score, 3),
    }
    if crossed:
        state.suspended_at = now
        facts["outcome"] = "suspended"
        _tell_about_suspension(session, delivery.person_id, now, raw_id)
    else:
        facts["outcome"] = "scored"
    session.flush()
    return facts


def _tell_about_suspension(
    session: Session, person_id: int, now: datetime, raw_id: int | None
) -> None:
    person = session.get_one(Person, person_id)
    member_addresses = [a.email for a in person.addresses]
    owners = session.scalars(
        select(Address.email)
        .join(Membership, Membership.person_id == Address.person_id)
        .where(
            Membership.role == Role.OWNER,
            Address.is_primary.is_(True),
            Membership.list_id.in_(
                select(Membership.list_id).where(Membership.person_id == person_id)
            ),
        )
        .distinct()
    ).all()
    day = f"{now.date().isoformat()}#bounce{person_id}"
    context = {"member": person.primary_address, "member_name": person.name}
    for address, reason in [(a, "bounce-suspended") for a in member_addresses] + [
        (o, "bounce-suspended-owner") for o in owners if o not in member_addresses
    ]:
        notice = Notice(address=address, reason=reason, day=day, raw_id=raw_id, context=context)
        session.add(notice)
        session.flush()
        session.add(
            OutboxEntry(key=f"notice:{notice.id}", task="mailgate.send_notice", args=[notice.id])
        )


def suspended_people(session: Session) -> list[tuple[BounceState, Person]]:
    rows = session.execute(
        select(BounceState, Person)
        .join(Person, Person.id == BounceState.person_id)
        .order_by(BounceState.score.desc())
    )
    return [(state, person) for state, person in rows]


def reset_bounces(session: Session, person: Person) -> dict[str, Any] | None:
    state = session.scalar(select(BounceState).where(BounceState.person_id == person.id))
    if state is None:
        return None
    before = {"score": state.score, "suspended": state.suspended_at is not None}
    state.score, state.suspended_at, state.updated_at = 0.0, None, None
    return before


def lists_of(session: Session, person_id: int) -> list[str]:
    return list(
        session.scalars(
            select(MailingList.slug)
            .join(Membership, Membership.list_id == MailingList.id)
            .where(Membership.person_id == person_id)
        )
    )
