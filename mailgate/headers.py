"""Header fields of the mail we compose, from values senders wrote (outbound, pure).

Input: a field name and a value that may hold anything a sender typed or forged — a
subject, a display name, a Message-ID. Output: a field that is safe to write: one line
(folded between words), no CR, LF or other control character, and parsing it back gives
the value we meant.

This is the one sanitising step every composed field passes (issue 12, item 3):
- ``COMPOSE``, an ``email.policy.SMTP`` whose ``header_store_parse`` cleans every value
  assigned to an ``EmailMessage`` (notices and question mails use it), and
- ``fold_field``, the same step for the mail we assemble as bytes (list copies, digests).

Why the standard policy is not enough on Python 3.11:
- It decodes RFC 2047 encoded-words in any string it is given, so a stored Message-ID or
  subject holding ``=?utf-8?q?…=0D=0AReply-To:…?=`` becomes a real CR LF on output and
  the sender writes our headers (CVE-2024-6923's class). We decode once, strip control
  characters from the result, and defuse any ``=?`` left so nothing decodes twice.
- Its folder sometimes breaks straight after ``Subject:`` (a value that does not fit on
  the first line but fits on the next), which readers see as a value starting with a
  space. ``_fold`` refolds such a field between words.

Message-ids are validated as ``dot-atom@dot-atom`` (RFC 5322 §3.6.4, no obsolete forms)
and dropped when they are not; a msg-id field with none left is refused, so callers use
``thread_fields`` which leaves the field out.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from email.header import Header
from email.headerregistry import Address, Group
from email.message import EmailMessage
from email.policy import EmailPolicy
from typing import Any

from mailgate.folding import fold_words

MAX_TEXT = 400  # characters of free text in one field: a hostile subject stays small
MAX_ID = 250
MAX_REFERENCES = 20  # THR-01: the first id and the last 20

ID_FIELDS = frozenset({"message-id", "in-reply-to", "references", "resent-message-id"})
ADDRESS_FIELDS = frozenset({"from", "to", "cc", "bcc", "reply-to", "sender"})

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_MSGID_RE = re.compile(rf"{_DOT_ATOM}@{_DOT_ATOM}")
_PLAIN_RE = re.compile(r"[\x20-\x7e]*")
_ENCODED_WORD = "=?"
_CONTROLS = ("Cc", "Zl", "Zp")  # Cc: CR, LF, NUL, ESC …; Zl/Zp: Unicode line breaks


def clean_text(text: str, limit: int = MAX_TEXT) -> str:
    """Free text for a header: control characters become spaces, runs of white space one
    space, ``=?`` is defused (``= ?``) so no reader decodes it, at most ``limit`` chars."""
    return " ".join(without_controls(text).replace(_ENCODED_WORD, "= ?").split())[:limit].rstrip()


def without_controls(text: str) -> str:
    return "".join(" " if unicodedata.category(c) in _CONTROLS else c for c in text)


def msg_id(value: str | None) -> str | None:
    """The id of a msg-id (without angle brackets), or None when it is not one we write."""
    if not value:
        return None
    mid = value.strip()
    if mid.startswith("<") and mid.endswith(">"):
        mid = mid[1:-1]
    if len(mid) <= MAX_ID and _ENCODED_WORD not in mid and _MSGID_RE.fullmatch(mid):
        return mid
    return None


def msg_ids(value: str) -> list[str]:
    """Every valid id in a msg-id list (``<a@x> <b@y>``), in order, without duplicates."""
    found: list[str] = []
    for token in re.findall(r"<[^<>]*>|[^\s<>]+", value):
        mid = msg_id(token)
        if mid and mid not in found:
            found.append(mid)
    return found


def thread_fields(parent: str | None, references: Sequence[str] = ()) -> list[tuple[str, str]]:
    """In-Reply-To and References for a reply to ``parent`` (THR-01), from ids as stored.

    Ids that are not valid msg-ids are dropped; with no valid parent there is nothing to
    thread under and both fields are left out. References keep the first id and the last
    ``MAX_REFERENCES``.
    """
    parent_id = msg_id(parent)
    if parent_id is None:
        return []
    chain: list[str] = []
    for mid in (*references, parent_id):
        valid = msg_id(mid)
        if valid and valid not in chain:
            chain.append(valid)
    if len(chain) > MAX_REFERENCES + 1:
        chain = [chain[0], *chain[-MAX_REFERENCES:]]
    return [
        ("In-Reply-To", f"<{parent_id}>"),
        ("References", " ".join(f"<{mid}>" for mid in chain)),
    ]


def _unsafe(value: str) -> bool:
    return _ENCODED_WORD in value or any(unicodedata.category(c) in _CONTROLS for c in value)


def _refold_after_name(name: str, folded: str, linesep: str) -> str:
    """A field the standard folder broke straight after its name, folded between words."""
    if not folded.startswith(f"{name}:{linesep}"):
        return folded
    words = folded[len(name) + 1 :].split()
    return fold_words(name, words).replace("\r\n", linesep)


class _Prefolded(str):
    """A field value we encoded and folded ourselves; ``str()`` of it is the decoded text.

    Why not the standard folder for non-ASCII text: on 3.11 it may fold between two
    encoded-words at a space it did not encode, and readers drop white space between
    encoded-words (RFC 2047 §6.2), so "Zürich 日本語" came back as "Zürich日本語".
    ``email.header.Header`` encodes the whole value, spaces inside the words.
    """

    name: str
    folded: str

    def fold(self, *, policy: Any) -> str:
        return self.folded


def _prefolded(name: str, text: str, folded: str) -> _Prefolded:
    value = _Prefolded(text)
    value.name, value.folded = name, folded
    return value


def _encoded_text(name: str, text: str, linesep: str) -> _Prefolded:
    encoded = Header(text, "utf-8", header_name=name).encode(linesep=linesep)
    return _prefolded(name, text, f"{name}: {encoded}{linesep}")


def _encoded_address(name: str, address: Address, linesep: str) -> _Prefolded:
    phrase = Header(address.display_name, "utf-8", header_name=name).encode(linesep=linesep)
    last = phrase.rsplit(linesep, 1)[-1]
    gap = f"{linesep} " if len(last) + len(address.addr_spec) + 3 > 78 else " "
    folded = f"{name}: {phrase}{gap}<{address.addr_spec}>{linesep}"
    return _prefolded(name, str(address), folded)


class ComposePolicy(EmailPolicy):
    """``email.policy.SMTP`` that cleans every value it is given (see the module doc)."""

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        if hasattr(value, "name") and value.name.lower() == name.lower():
            return (name, value)  # a header object we built: already through here
        key = name.lower()
        if key in ID_FIELDS:
            ids = msg_ids(str(value))
            if not ids:
                raise ValueError(f"{name}: no valid msg-id (use headers.thread_fields)")
            return (name, self.header_factory(name, " ".join(f"<{mid}>" for mid in ids)))
        if key in ADDRESS_FIELDS:
            items = self._clean_addresses(name, value)
            if (
                len(items) == 1
                and isinstance(items[0], Address)
                and not items[0].display_name.isascii()
            ):
                return (name, _encoded_address(name, items[0], self.linesep))
            return (name, self.header_factory(name, items))
        if isinstance(value, str):
            # Values we are given are decoded text: nothing in them is decoded again, and
            # none starts or ends with white space.
            value = clean_text(value)
        if isinstance(value, str) and not value.isascii():
            return (name, _encoded_text(name, value, self.linesep))
        return (name, self.header_factory(name, value))

    def _clean_addresses(self, name: str, value: Any) -> list[Address | Group]:
        if isinstance(value, str):
            # Display names may be our own encoded-words (formataddr): the parser decodes
            # them, and each decoded name is cleaned below, so a decoded CR LF dies there.
            parsed = self.header_factory(name, without_controls(value))
            items: Sequence[Any] = parsed.groups
        else:
            items = [value] if isinstance(value, Address | Group) else list(value)
        cleaned: list[Address | Group] = []
        for item in items:
            if isinstance(item, Group) and item.display_name is None:
                cleaned.extend(self._clean_address(a) for a in item.addresses)
            elif isinstance(item, Group):
                members = tuple(self._clean_address(a) for a in item.addresses)
                cleaned.append(Group(clean_text(item.display_name or "", 64), members))
            else:
                cleaned.append(self._clean_address(item))
        return cleaned

    @staticmethod
    def _clean_address(address: Address) -> Address:
        if _unsafe(address.addr_spec) or any(c.isspace() for c in address.addr_spec):
            raise ValueError(f"not an address we can write: {address.addr_spec!r}")
        return Address(
            display_name=clean_text(address.display_name, 64), addr_spec=address.addr_spec
        )

    def _fold(self, name: str, value: Any, refold_binary: bool = False) -> str:
        # EmailPolicy.fold and fold_binary both come through here (CPython 3.3+).
        folded = super()._fold(name, value, refold_binary=refold_binary)  # type: ignore[misc]
        return _refold_after_name(name, folded, self.linesep)


COMPOSE = ComposePolicy(linesep="\r\n")


def new_message() -> EmailMessage:
    """An empty message whose every field goes through the sanitising step."""
    return EmailMessage(policy=COMPOSE)


def named_address(display_name: str, addr_spec: str) -> Address:
    """An address field's value with a display name that came from a person's record or a
    sender (cleaned, at most 64 characters): ``Address`` itself refuses CR and LF."""
    return Address(display_name=clean_text(display_name, 64), addr_spec=addr_spec)


def fold_field(name: str, value: str) -> str:
    """One field as ``Name: value\\r\\n``, cleaned, RFC 2047-encoded and folded like
    ``COMPOSE`` does, for mail we assemble as bytes."""
    if (
        len(name) + len(value) <= 76
        and name.lower() not in ID_FIELDS
        and _PLAIN_RE.fullmatch(value)
        and _ENCODED_WORD not in value
    ):
        return f"{name}: {value}\r\n"  # nothing to clean, fold or encode (~0.2 ms saved)
    _, header = COMPOSE.header_store_parse(name, value)
    return COMPOSE.fold(name, header)
