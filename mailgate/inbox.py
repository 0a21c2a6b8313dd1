"""Inbox: the gateway's storage adapter (SQLAlchemy) for :class:`mailgate.smtp.Inbox`.

Input: accepted messages from the SMTP stage. Output: committed ``raw_messages`` rows in
status ``received``. That status is the queue entry (DUR-07's END record): a worker
moves it to a final state, and the sweeper re-publishes whatever is still ``received``
after a while, so a message lost by the broker, or by a gateway killed between commit and
publish, is still processed.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session, sessionmaker

from mailgate import access
from mailgate.models import (
    Address,
    MailingList,
    Membership,
    Person,
    RawMessage,
    RawStatus,
    Role,
    Visibility,
    utcnow,
)
from mailgate.smtp import HIDDEN_LIST, Accepted, header_block

log = logging.getLogger("mailgate.inbox")

_MESSAGE_ID_RE = re.compile(
    rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE
)


def sniff_message_id(raw: bytes) -> str:
    """The Message-ID header text, read without parsing (for the admin view only)."""
    match = _MESSAGE_ID_RE.search(header_block(raw))
    if match is None:
        return ""
    # NUL is not storable in PostgreSQL text; it never belongs in a Message-ID anyway.
    return match.group(1).decode("utf-8", "replace").replace("\x00", "\ufffd").strip()[:998]


class SqlInbox:
    def __init__(
        self,
        factory: sessionmaker[Session],
        publish: Callable[[Sequence[int]], None] | None = None,
    ) -> None:
        self._factory = factory
        bind = factory.kw["bind"]
        assert bind is not None, "the session factory must be bound to an engine"
        self._engine = bind
        self._publish = publish

    def list_state(self, slug: str) -> str | None:
        with self._factory() as session:
            found = session.execute(
                select(MailingList.archived_at, MailingList.visibility).where(
                    MailingList.slug == slug
                )
            ).first()
        if found is None:
            return None
        if found.visibility is Visibility.HIDDEN:
            return HIDDEN_LIST  # whether it exists depends on who asks
        return "archived" if found.archived_at is not None else "open"

    def hidden_list_state(self, slug: str, sender: str) -> str | None:
        with self._factory() as session:
            ml = session.scalar(select(MailingList).where(MailingList.slug == slug))
            if ml is None:
                return None
            who = session.execute(
                select(Person.id, Person.active, Membership.role)
                .join(Address, Address.person_id == Person.id)
                .outerjoin(
                    Membership,
                    (Membership.person_id == Person.id) & (Membership.list_id == ml.id),
                )
                .where(Address.email == sender.strip().lower())
            ).first()
            viewer = (
                access.Viewer(who.id, who.active, Role(who.role) if who.role else None)
                if who is not None
                else access.Viewer(None)
            )
            if not access.may_know_exists(access.ListFacts.of(ml), viewer):
                return None
            return "archived" if ml.archived_at is not None else "open"

    def store_many(self, messages: Sequence[Accepted]) -> list[int]:
        now = utcnow()
        rows: list[dict[str, Any]] = [
            {
                "raw": m.raw,
                "sha256": hashlib.sha256(m.raw).hexdigest(),
                "mail_from": m.mail_from,
                "rcpt_to": list(m.rcpt_to),
                "peer": m.peer,
                "helo": m.helo[:255],
                "message_id": sniff_message_id(m.raw),
                "received_at": now,
                "status": RawStatus.RECEIVED,
                "reason": "",
                "attempts": 0,
                "explanation": {},
            }
            for m in messages
        ]
        # Core on a bare connection, not the ORM session: this runs on the gateway's
        # writer thread for every message, and the session's bookkeeping would cost more
        # than the insert itself.
        table = cast(Table, RawMessage.__table__)
        with self._engine.begin() as conn:
            ids = (
                conn.execute(
                    insert(table).returning(table.c.id, sort_by_parameter_order=True), rows
                )
                .scalars()
                .all()
            )
        return list(ids)

    def publish(self, raw_ids: Sequence[int]) -> None:
        if self._publish is None:
            return
        try:
            self._publish(raw_ids)
        except Exception as exc:  # noqa: BLE001 - the sweeper re-publishes what is left
            log.warning(
                "could not publish %d message(s) (%s); the sweeper will",
                len(raw_ids),
                type(exc).__name__,
            )
