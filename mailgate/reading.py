"""Reading: the pure half of ingest — what one raw message is, before any database.

Input: raw bytes, the envelope sender and what we know of our own addresses. Output: a
:class:`Reading` with the parsed message, its classification, the sender (or why there
is none), the extracted body and the resulting class. ``mailgate inspect`` prints a
Reading; ``mailgate.ingest`` acts on one.

Class names are those of ``mailgate inspect``: ``ok``, ``auto_reply``, ``bounce``,
``mailing_list``, ``loop``, ``command``, ``reject-empty``, ``reject-no-sender``,
``reject-invalid``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mailgate.bodies import Body, extract_body
from mailgate.classify import Classification, MailClass, OurAddresses, classify, is_automatic
from mailgate.parse import InboundMessage, parse_message
from mailgate.senders import FromAddress, FromError, parse_from

# A reply whose whole text is one of these is a command, not a post.
REPLY_COMMANDS = {"+1": "like", "mute": "mute", "unmute": "unmute"}
_COMMAND_RE = re.compile(r"^\s*(\+1|mute|unmute)\s*[.!]?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Reading:
    msg: InboundMessage
    classification: Classification
    sender: FromAddress | None
    sender_error: str | None  # FromError reason when sender is None
    body: Body | None  # None for automatic mail (never extracted, never posted)
    automatic: str | None  # LOOP-01 reason never to answer this message
    mail_class: str
    reason: str
    command: str | None  # "like" / "mute" / "unmute" for reply commands

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``mailgate inspect``."""
        return {
            "class": self.mail_class,
            "reason": self.reason,
            "text": self.body.text if self.body else "",
            "elided": self.body.elided if self.body else "",
            "source": self.body.source if self.body else "none",
            "bounced": [b.address for b in self.classification.bounced],
            "bounces": [
                {"address": b.address, "permanent": b.permanent, "status": b.status}
                for b in self.classification.bounced
            ],
            "from": self.sender.address if self.sender else None,
            "subject": self.msg.subject,
            "message_id": self.msg.message_id,
            "in_reply_to": list(self.msg.in_reply_to),
            "references": list(self.msg.references),
            "automatic": self.automatic,
            "command": self.command,
            "attachments": [
                {"filename": a.filename, "content_type": a.content_type, "size": a.size}
                for a in (self.body.attachments if self.body else ())
            ],
            "defects": list(self.msg.defects),
        }


def reply_command(text: str) -> str | None:
    match = _COMMAND_RE.match(text)
    return REPLY_COMMANDS[match.group(1).lower()] if match else None


def read_message(raw: bytes, *, mail_from: str, ours: OurAddresses) -> Reading:
    msg = parse_message(raw)
    classification = classify(msg, mail_from=mail_from, ours=ours)
    automatic = is_automatic(msg, mail_from=mail_from)
    sender: FromAddress | None = None
    sender_error: str | None = None
    try:
        sender = parse_from(msg)
    except FromError as exc:
        sender_error = exc.reason
    if classification.kind is not MailClass.POST:
        return Reading(
            msg,
            classification,
            sender,
            sender_error,
            None,
            automatic,
            str(classification.kind),
            classification.reason,
            None,
        )
    body = extract_body(msg)
    if sender is None:
        cls = "reject-no-sender" if sender_error == "no-from" else "reject-invalid"
        return Reading(
            msg,
            classification,
            None,
            sender_error,
            body,
            automatic,
            cls,
            sender_error or "no-from",
            None,
        )
    command = reply_command(body.text)
    if command is not None:
        return Reading(
            msg, classification, sender, None, body, automatic, "command", command, command
        )
    if not body.text.strip():
        return Reading(
            msg, classification, sender, None, body, automatic, "reject-empty", "empty", None
        )
    return Reading(msg, classification, sender, None, body, automatic, "ok", "post", None)


def envelope_sender_of(raw: bytes) -> str:
    """The envelope sender of a message saved from a mailbox: its Return-Path (``""`` for
    ``<>``), else the From address — the best guess when no SMTP envelope is known."""
    msg = parse_message(raw)
    return_path = msg.header("Return-Path")
    if return_path is not None:
        return return_path.strip().strip("<>").strip()
    try:
        return parse_from(msg).address
    except FromError:
        return ""


def inspect_message(raw: bytes, *, domain: str, mail_from: str | None = None) -> dict[str, Any]:
    """``mailgate inspect``: classify and extract one message; no database, no network.

    Without ``mail_from`` the envelope sender is taken from Return-Path, else From.
    """
    ours = OurAddresses(
        domain=domain.lower(), list_ids=frozenset(), loop_marker=f"mailgate@{domain.lower()}"
    )
    sender = envelope_sender_of(raw) if mail_from is None else mail_from
    return read_message(raw, mail_from=sender, ours=ours).as_dict()
