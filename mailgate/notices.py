"""Notices: explanatory mail to a sender — what happened and what to do.

Input: a notice's reason, the address it goes to, its stored context, and our domain.
Output: the bytes of an RFC 5322 message. Templates are ``templates/notices/<reason>.txt``
(a ``subject`` block and a body extending ``notices/base.txt``), rendered with
``StrictUndefined`` so a missing value fails loudly in tests rather than mailing a blank.

``render_notice`` and ``compose_notice`` are pure; ``deliver_notice`` is the use case
that sends a queued notice row once.

Notices are automatic responses (RFC 3834): ``Auto-Submitted: auto-replied``, sent with
a null envelope sender so that nothing ever answers them (LOOP-04).
"""

from __future__ import annotations

import email.utils
import secrets
from collections.abc import Sequence
from email.message import EmailMessage
from functools import lru_cache
from typing import Any, Protocol

import jinja2
from sqlalchemy.orm import Session

from mailgate.addressing import command_address, confirm_address, list_address
from mailgate.headers import named_address, new_message, thread_fields
from mailgate.models import Notice, utcnow


@lru_cache(maxsize=1)
def template_env() -> jinja2.Environment:
    """The templates/ folder: ``.html`` templates autoescape, text ones do not."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("templates", ""),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        keep_trailing_newline=True,
    )


def has_template(reason: str) -> bool:
    try:
        template_env().get_template(f"notices/{reason}.txt")
    except jinja2.TemplateNotFound:
        return False
    return True


def render_notice(reason: str, context: dict[str, Any]) -> tuple[str, str]:
    template = template_env().get_template(f"notices/{reason}.txt")
    subject = "".join(template.blocks["subject"](template.new_context(context))).strip()
    body = template.render(context).strip() + "\n"
    return " ".join(subject.split()), body


def notice_context(address: str, stored: dict[str, Any], domain: str) -> dict[str, Any]:
    slug = stored.get("list_slug")
    context: dict[str, Any] = {
        "sender": address,
        "subject": stored.get("subject", ""),
        "command": stored.get("command", ""),
        "member": stored.get("member", ""),
        "member_name": stored.get("member_name", ""),
        "details": stored.get("details", ""),
        # How to join (not-a-member, subscribe-not-allowed): "subscribe" only when the
        # -request handler would accept it, else whom to ask (ingest._join_advice).
        "may_subscribe": bool(stored.get("may_subscribe", True)),
        "owners": stored.get("owners", ""),
        "mandatory": bool(stored.get("mandatory", False)),
        "help_address": command_address(slug, domain) if slug else f"postmaster@{domain}",
        "confirm_address": (
            confirm_address(stored["confirm_token"], domain) if stored.get("confirm_token") else ""
        ),
    }
    if slug:
        context.update(
            list_name=stored.get("list_name") or slug,
            list_address=list_address(slug, domain),
            request_address=command_address(slug, domain),
        )
    else:
        context.update(list_name="Mailgate", list_address="", request_address="")
    return context


def compose_notice(
    *, notice_id: int, reason: str, address: str, stored: dict[str, Any], domain: str
) -> EmailMessage:
    context = notice_context(address, stored, domain)
    subject, body = render_notice(reason, context)
    # Every field below passes headers.COMPOSE: the stored subject, list name and the
    # sender's Message-ID are what a stranger wrote (issue 12, item 3).
    msg = new_message()
    slug = stored.get("list_slug")
    sender = command_address(slug, domain) if slug else f"postmaster@{domain}"
    msg["From"] = named_address(f"{context['list_name']} (Mailgate)", sender)
    msg["To"] = address
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = f"<notice.{notice_id}.{secrets.token_hex(8)}@{domain}>"
    for name, value in thread_fields(stored.get("message_id")):
        msg[name] = value
    if context["confirm_address"]:
        msg["Reply-To"] = context["confirm_address"]
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Loop"] = f"mailgate@{domain}"
    msg["X-Mailgate-Notice"] = reason
    msg.set_content(body)
    return msg


# ---------------------------------------------------------------- the use case


class NoticeMailer(Protocol):
    def send(self, mail_from: str, recipients: Sequence[str], message: bytes) -> Any: ...


def deliver_notice(session: Session, notice_id: int, mailer: NoticeMailer, domain: str) -> bool:
    """Send one queued notice once; True if it was sent now. Idempotent via ``sent_at``.

    At-least-once: a crash after the relay's 250 and before the commit sends it again,
    which for an explanatory notice is the right side to err on.
    """
    notice = session.get(Notice, notice_id, with_for_update=True)
    if notice is None or notice.sent_at is not None:
        return False
    if not has_template(notice.reason):
        notice.sent_at = utcnow()  # nothing to say for this reason; never retry it
        return False
    msg = compose_notice(
        notice_id=notice.id,
        reason=notice.reason,
        address=notice.address,
        stored=notice.context or {},
        domain=domain,
    )
    mailer.send("", [notice.address], msg.as_bytes())
    notice.sent_at = utcnow()
    return True
