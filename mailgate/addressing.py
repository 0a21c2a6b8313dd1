"""Addressing: the addresses Mailgate answers to, encoded and decoded (pure).

Input: a recipient address and our domain. Output: a :class:`Recipient` naming what the
address is for. Kinds:

- ``eng@DOMAIN`` — a list (post);
- ``eng-request@DOMAIN`` — the list's command address;
- ``reply+TOKEN@DOMAIN`` — one member's reply address for one discussion;
- ``bounces+TOKEN@DOMAIN`` — a VERP bounce address for one delivery;
- ``confirm+TOKEN@DOMAIN`` — where a member answers a confirmation request;
- ``digest+TOKEN@DOMAIN`` — where a member replies to their digest with commands.

Tokens are opaque; their meaning lives in the database (``mailgate.tokens``). This module
only knows their shape, so a malformed token is refused at RCPT without a lookup.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
TOKEN_RE = re.compile(r"^[A-Za-z2-7]{16,64}$")  # lowercase base32 (mailgate.tokens)

# Local parts we never give to a list: robot addresses and RFC 2142 role mailboxes.
RESERVED_SLUGS = frozenset(
    {
        "reply",
        "bounces",
        "confirm",
        "ask",
        "questions",
        "postmaster",
        "mailer-daemon",
        "abuse",
        "noreply",
        "mailgate",
    }
)
COMMAND_SUFFIX = "-request"


class AddressKind(enum.StrEnum):
    LIST = "list"
    COMMAND = "command"
    REPLY = "reply"
    BOUNCE = "bounce"
    CONFIRM = "confirm"  # confirm+TOKEN@: the answer to a confirmation request
    DIGEST = "digest"  # digest+TOKEN@: a reply to a member's digest (commands)
    ASK = "ask"  # ask@: a leader's question to an audience


@dataclass(frozen=True)
class Recipient:
    kind: AddressKind
    value: str  # the list slug for LIST/COMMAND, the token for REPLY/BOUNCE


class SlugError(ValueError):
    """A list name that cannot be a mail local part."""


def check_slug(slug: str) -> str:
    """Return ``slug`` if it can name a list, else raise :class:`SlugError`."""
    if not SLUG_RE.match(slug):
        raise SlugError(
            f"invalid list name {slug!r}: use 1-64 lowercase letters, digits, '.', '-' or '_'"
        )
    if slug in RESERVED_SLUGS or slug.endswith((COMMAND_SUFFIX, "-bounces", "-owner")):
        raise SlugError(f"invalid list name {slug!r}: reserved for robot addresses")
    return slug


def decode_recipient(address: str, domain: str) -> Recipient | None:
    """What ``address`` means on ``domain``, or None if it is not one of ours.

    Only the shape is checked here; whether the list or token exists is the caller's
    question.
    """
    local, sep, host = address.strip().strip("<>").rpartition("@")
    if not sep or host.lower() != domain.lower() or not local:
        return None
    if "+" in local:
        base, _, token = local.partition("+")
        if not TOKEN_RE.match(token):
            return None
        if base.lower() == "reply":
            return Recipient(AddressKind.REPLY, token)
        if base.lower() == "bounces":
            return Recipient(AddressKind.BOUNCE, token)
        if base.lower() == "confirm":
            return Recipient(AddressKind.CONFIRM, token)
        if base.lower() == "digest":
            return Recipient(AddressKind.DIGEST, token)
        return None
    local = local.lower()
    if local == "ask":
        return Recipient(AddressKind.ASK, local)
    if local.endswith(COMMAND_SUFFIX):
        slug = local[: -len(COMMAND_SUFFIX)]
        return Recipient(AddressKind.COMMAND, slug) if SLUG_RE.match(slug) else None
    if SLUG_RE.match(local) and local not in RESERVED_SLUGS:
        return Recipient(AddressKind.LIST, local)
    return None


def list_address(slug: str, domain: str) -> str:
    return f"{slug}@{domain}"


def command_address(slug: str, domain: str) -> str:
    return f"{slug}{COMMAND_SUFFIX}@{domain}"


def reply_address(token: str, domain: str) -> str:
    return f"reply+{token}@{domain}"


def bounce_address(token: str, domain: str) -> str:
    return f"bounces+{token}@{domain}"


def confirm_address(token: str, domain: str) -> str:
    return f"confirm+{token}@{domain}"


def digest_address(token: str, domain: str) -> str:
    return f"digest+{token}@{domain}"


def redact_address(address: str) -> str:
    """Hide the token of a robot address for logs (PRIV-08): reply+abc@d → reply+…@d."""
    local, sep, host = address.rpartition("@")
    if "+" in local:
        local = local.split("+", 1)[0] + "+…"
    return f"{local}{sep}{host}"
