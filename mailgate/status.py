"""Status: what the database holds and whether the schema is current.

Input: a session and the settings. Output: a flat dict for ``mailgate status`` and the
run command's start-up banner.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailgate.db import current_revision, head_revision
from mailgate.models import (
    Discussion,
    MailingList,
    OutboxEntry,
    Person,
    Post,
    RawMessage,
    RawStatus,
)
from mailgate.settings import Settings, mask_url_password


def gather_status(session: Session, settings: Settings) -> dict[str, Any]:
    engine = session.get_bind()
    revision = current_revision(engine)  # type: ignore[arg-type]
    head = head_revision(settings.database_url)
    status: dict[str, Any] = {
        "database": mask_url_password(settings.database_url),
        "schema_revision": revision or "none",
        "schema_current": revision == head,
        "domain": settings.domain,
        "smtp": f"{settings.smtp_host}:{settings.smtp_port}",
        "relay": mask_url_password(settings.relay_url),
        "broker": mask_url_password(settings.broker_url),
    }
    if revision is None:
        return status

    def count(query: Any) -> int:
        return int(session.scalar(query) or 0)

    status.update(
        lists=count(select(func.count()).select_from(MailingList)),
        people=count(select(func.count()).select_from(Person)),
        discussions=count(select(func.count()).select_from(Discussion)),
        posts=count(select(func.count()).select_from(Post)),
        inbound_waiting=count(select(func.count()).where(RawMessage.status == RawStatus.RECEIVED)),
        inbound_failed=count(select(func.count()).where(RawMessage.status == RawStatus.FAILED)),
        outbox_pending=count(select(func.count()).where(OutboxEntry.published_at.is_(None))),
    )
    return status
