"""Per-process adapters for tasks: the engine, session factory, mailer and contexts.

Built lazily on first use in each worker process (after the prefork fork), never at
import, so no connection is shared between processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from digests.questions import QuestionMailSettings
from digests.sending import DigestMail
from mailgate.copies import CopySettings
from mailgate.db import make_engine, make_sessionmaker
from mailgate.delivery import Throttle, TokenCopyBuilder, is_first_batch
from mailgate.ingest import IngestContext
from mailgate.relay import SigningRelay
from mailgate.signing import DkimKey, MessageSigner
from worker.app import FIRST_BATCH_QUEUE, app, settings
from worker.mailer import Mailer, make_mailer


@lru_cache(maxsize=1)
def session_factory() -> sessionmaker[Session]:
    return make_sessionmaker(make_engine(settings.database_url))


@lru_cache(maxsize=1)
def mailer() -> Mailer:
    return make_mailer(settings.relay_url)


def dns_txt(name: bytes) -> bytes | None:
    """The DNS TXT lookup DKIM verification uses (dkimpy's, through dnspython; 5 s)."""
    from dkim.dnsplug import get_txt

    result: bytes | None = get_txt(name, timeout=5)
    return result


@lru_cache(maxsize=1)
def ingest_context() -> IngestContext:
    return IngestContext(
        domain=settings.domain,
        secrets=(settings.secret_key,),
        authserv_ids=settings.authserv_ids,
        authres_relays=settings.authres_relays,  # none by default: only DKIM counts
        received_above=1 + settings.authres_hops,  # our own Received, then the relay's
        dnsfunc=dns_txt if settings.verify_dkim else None,
    )


def dkim_key() -> DkimKey | None:
    """Our signing key, when ``MAILGATE_DKIM_KEY_FILE`` is set."""
    if settings.dkim_key_file is None:
        return None
    return DkimKey(
        selector=settings.dkim_selector,
        domain=settings.domain,
        private_key=settings.dkim_key_file.read_bytes(),
    )


@lru_cache(maxsize=1)
def signed_mailer() -> Mailer:
    """The relay for mail composed one by one (notices, digests, questions): signed."""
    key = dkim_key()
    if key is None:
        return mailer()
    return SigningRelay(mailer(), MessageSigner(key).sign)


@lru_cache(maxsize=1)
def copy_builder() -> TokenCopyBuilder:
    return TokenCopyBuilder(
        CopySettings(domain=settings.domain, base_url=settings.base_url, dkim=dkim_key()),
        settings.secret_key,
    )


@lru_cache(maxsize=1)
def digest_mail() -> DigestMail:
    return DigestMail(
        domain=settings.domain,
        secret=settings.secret_key,
        base_url=settings.base_url,
        company_name=settings.company_name,
    )


@lru_cache(maxsize=1)
def question_mail() -> QuestionMailSettings:
    return QuestionMailSettings(domain=settings.domain, secret=settings.secret_key)


@lru_cache(maxsize=1)
def throttle() -> Throttle:
    return Throttle(settings.relay_rate)


def publish_options(task: str, args: Sequence[Any]) -> dict[str, str]:
    """Where one task goes when not where ``task_routes`` sends it: a post's first send
    batch rides the fanout queue, ahead of older posts' batches waiting on ``outbound``."""
    return {"queue": FIRST_BATCH_QUEUE} if is_first_batch(task, args) else {}


def publish(task: str, args: Sequence[Any]) -> None:
    app.send_task(task, args=list(args), retry=False, **publish_options(task, args))


def publish_ingest(raw_ids: Sequence[int]) -> None:
    """One task per group commit: the worker processes the batch in one transaction."""
    publish("mailgate.ingest", [list(raw_ids)])
