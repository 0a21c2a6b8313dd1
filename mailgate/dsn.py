"""DSN parsing stage: a bounce message → which recipients failed, and how badly (BNC-02).

Input: an :class:`~mailgate.parse.InboundMessage` already known (or suspected) to be a
bounce. Output: a tuple of :class:`BouncedRecipient`, one per failed or delayed address,
deduplicated, in report order.

RFC 3464 ``multipart/report; report-type=delivery-status`` is read field by field (Action,
Status, Final-/Original-Recipient, Diagnostic-Code). Bounces in older free-text formats
(qmail "failure notice", Exim's pre-DSN text, old Exchange, Sendmail without DSN) fall
back to flufl.bounce's heuristics, the detectors Mailman uses. Hostile or malformed
reports never raise: the worst outcome is an empty tuple.
"""

from __future__ import annotations

import binascii
import email.message
import quopri
import re
from dataclasses import dataclass

from flufl.bounce import all_failures

from mailgate.parse import InboundMessage

_DIAGNOSTIC_MAX = 200
# Enhanced status code (RFC 3463): class.subject.detail. Bounded repetition, no nesting.
_STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# A basic SMTP reply code at the start of a diagnostic ("smtp; 550-5.1.1 ...").
_SMTP_CODE_RE = re.compile(r"^\s*(?:[a-z0-9-]{1,20}\s*;\s*)?([245])\d\d[\s-]", re.IGNORECASE)
_FOLD_RE = re.compile(r"\s+")
# "<jane@corp.example>: host mx[192.0.2.1] said: 550 5.1.1 …" (optionally "(expanded from
# <alias>)") at the start of a line of a Postfix notice.
_POSTFIX_RCPT_RE = re.compile(
    r"^<([^<>\s]{1,320})>(?: \(expanded from <([^<>\s]{1,320})>\))?:", re.MULTILINE
)
_REPORT_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
# Reports bigger than this are junk or attacks; a real DSN part is a few KB at most.
_MAX_REPORT_CHARS = 200_000
_MAX_RECIPIENTS = 1000
# How far after an address we look for a status code in a free-text bounce.
_NEARBY_CHARS = 600


@dataclass(frozen=True)
class BouncedRecipient:
    """One recipient a bounce reports: ``permanent`` means a hard (5.x.x) failure."""

    address: str
    permanent: bool
    status: str
    diagnostic: str


def parse_bounce(msg: InboundMessage) -> tuple[BouncedRecipient, ...]:
    """Recipients reported by a bounce; RFC 3464 first, then flufl.bounce heuristics."""
    try:
        found = _from_delivery_status(msg.message)
    except Exception:  # noqa: BLE001 - hostile reports must never break ingest
        found = []
    if not found:
        try:
            found = _from_heuristics(msg)
        except Exception:  # noqa: BLE001 - same: flufl detectors re-raise their errors
            found = []
    if not found:
        found = _from_postfix_text(msg)
    return _dedupe(found)


# --- RFC 3464 -----------------------------------------------------------------------------


def _from_delivery_status(root: email.message.Message) -> list[BouncedRecipient]:
    found: list[BouncedRecipient] = []
    for part in root.walk():
        if part.get_content_type() not in _REPORT_TYPES:
            continue
        for fields in _report_blocks(part):
            recipient = _recipient_from_fields(fields)
            if recipient is not None:
                found.append(recipient)
                if len(found) >= _MAX_RECIPIENTS:
                    return found
    return found


def _report_blocks(part: email.message.Message) -> list[dict[str, str]]:
    """The per-message and per-recipient field groups of a delivery-status part.

    The stdlib parses ``message/delivery-status`` into one header block per sub-message;
    a base64-encoded or ``global`` (RFC 6533) report arrives as text and is split here.
    """
    payload = part.get_payload()
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if isinstance(payload, list) and cte not in ("base64", "quoted-printable"):
        blocks: list[dict[str, str]] = []
        for block in payload:
            if not isinstance(block, email.message.Message):
                continue
            blocks.append({str(k).lower(): _raw_text(v) for k, v in block.raw_items()})
            # message/global-delivery-status is parsed like message/rfc822: one block of
            # headers, the per-recipient blocks left in its body.
            body = block.get_payload(decode=True)
            if isinstance(body, bytes) and body.strip():
                blocks.extend(_split_blocks(body.decode("utf-8", errors="replace")))
        return blocks
    if isinstance(payload, list):
        # The stdlib split the still-encoded body into fake header blocks; undo that.
        encoded = "\n".join(
            b.as_string() for b in payload if isinstance(b, email.message.Message)
        ).encode("ascii", errors="replace")
        raw: object = (
            binascii.a2b_base64(encoded) if cte == "base64" else quopri.decodestring(encoded)
        )
    else:
        raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(payload)
    return _split_blocks(text)


def _split_blocks(text: str) -> list[dict[str, str]]:
    """Blank-line separated groups of ``Name: value`` fields, with folded lines joined."""
    blocks: list[dict[str, str]] = []
    text = text[:_MAX_REPORT_CHARS].replace("\r\n", "\n")
    for chunk in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        last = ""
        for line in chunk.split("\n"):
            if line[:1] in (" ", "\t") and last:
                fields[last] += " " + line.strip()
                continue
            name, sep, value = line.partition(":")
            if sep and name and " " not in name.strip():
                last = name.strip().lower()
                fields.setdefault(last, value.strip())
        if fields:
            blocks.append(fields)
    return blocks


def _raw_text(value: object) -> str:
    """A header value as text; 8-bit bytes (RFC 6533 UTF-8 addresses) decoded as UTF-8."""
    text = str(value)
    try:
        return text.encode("ascii", errors="surrogateescape").decode("utf-8", errors="replace")
    except UnicodeEncodeError:
        return text  # already real Unicode


def _recipient_from_fields(fields: dict[str, str]) -> BouncedRecipient | None:
    # Original-Recipient is the address we gave in RCPT TO (before aliases or forwarding
    # at the far end), so it is the one that maps back to a member.
    address = _typed_address(fields.get("original-recipient")) or _typed_address(
        fields.get("final-recipient")
    )
    if not address:
        return None  # the per-message block, or a recipient we cannot name
    action = fields.get("action", "").strip().lower().split(" ", 1)[0]
    if action in ("delivered", "relayed", "expanded"):
        return None
    diagnostic = _one_line(fields.get("diagnostic-code", ""))
    status = _status_code(fields.get("status", "")) or _status_code(diagnostic)
    status_class = status[:1]
    if not status_class:
        code = _SMTP_CODE_RE.match(diagnostic)
        status_class = code.group(1) if code else ""
    if action == "delayed":
        permanent = False
    elif status_class == "5":
        permanent = True
    elif status_class == "4":
        # A "failed" action with a 4.x.x status means the MTA gave up retrying
        # (e.g. 4.4.7 expired): the address may work tomorrow, so it stays soft.
        permanent = False
    elif action == "failed":
        permanent = True
    else:
        return None
    return BouncedRecipient(address, permanent, status, diagnostic)


def _typed_address(value: str | None) -> str:
    """``rfc822; Jane@Corp.Example`` → ``jane@corp.example``; junk → ``""``."""
    if not value:
        return ""
    _, sep, rest = value.partition(";")
    candidate = (rest if sep else value).strip().strip("<>").strip()
    return _clean_address(candidate)


def _clean_address(candidate: str) -> str:
    candidate = candidate.strip().strip("<>").strip().lower()
    if (
        not candidate
        or len(candidate) > 320
        or candidate.count("@") != 1
        or any(ch.isspace() or ch in '<>,;"' for ch in candidate)
    ):
        return ""
    local, _, domain = candidate.partition("@")
    if not local or "." not in domain:
        return ""
    return candidate


def _status_code(text: str) -> str:
    found = _STATUS_RE.search(text[: _DIAGNOSTIC_MAX * 4])
    return ".".join(found.groups()) if found else ""


def _one_line(text: str) -> str:
    return _FOLD_RE.sub(" ", text[: _DIAGNOSTIC_MAX * 4]).strip()[:_DIAGNOSTIC_MAX]


# --- flufl.bounce fallback -----------------------------------------------------------------


def _from_heuristics(msg: InboundMessage) -> list[BouncedRecipient]:
    temporary, permanent = all_failures(msg.message)
    body = (msg.text_plain or "")[:_MAX_REPORT_CHARS]
    lowered = body.lower()
    found: list[BouncedRecipient] = []
    for raw, is_permanent in [(a, True) for a in sorted(permanent)] + [
        (a, False) for a in sorted(temporary)
    ]:
        address = _clean_address(raw.decode("ascii", errors="replace"))
        if not address:
            continue
        status, diagnostic = _nearby_status(body, lowered, address)
        found.append(BouncedRecipient(address, is_permanent, status, diagnostic))
        if len(found) >= _MAX_RECIPIENTS:
            break
    return found


def _from_postfix_text(msg: InboundMessage) -> list[BouncedRecipient]:
    """Recipients from a modern Postfix notice ("The mail system" / "<addr>: reason").

    flufl.bounce only knows Postfix's older "The Postfix program" wording; this covers a
    current Postfix bounce whose delivery-status part was lost or damaged in transit.
    """
    body = (msg.text_plain or "")[:_MAX_REPORT_CHARS]
    marker = body.find("The mail system")
    if marker < 0:
        return []
    lowered = body.lower()
    found: list[BouncedRecipient] = []
    for match in _POSTFIX_RCPT_RE.finditer(body, marker):
        # As with Original-Recipient, the pre-alias address is the one we sent to.
        address = _clean_address(match.group(2) or match.group(1))
        if not address:
            continue
        status, diagnostic = _nearby_status(body, lowered, _clean_address(match.group(1)))
        found.append(BouncedRecipient(address, not status.startswith("4"), status, diagnostic))
        if len(found) >= _MAX_RECIPIENTS:
            break
    return found


def _nearby_status(body: str, lowered: str, address: str) -> tuple[str, str]:
    """The first enhanced status code shortly after the address in a free-text bounce.

    Free-text bounces put the remote server's reply right under the address it concerns
    ("550 5.1.1 <x>: Recipient address rejected"); reporting it helps an admin.
    """
    start = lowered.find(address)
    if start < 0:
        return "", ""
    start = body.rfind("\n", 0, start) + 1
    window = body[start : start + _NEARBY_CHARS]
    found = _STATUS_RE.search(window)
    if not found:
        return "", ""
    line_start = window.rfind("\n", 0, found.start()) + 1
    line_end = window.find("\n", found.end())
    line = window[line_start : line_end if line_end >= 0 else len(window)]
    return ".".join(found.groups()), _one_line(line)


def _dedupe(found: list[BouncedRecipient]) -> tuple[BouncedRecipient, ...]:
    """One entry per address; a hard failure anywhere wins over a soft one."""
    by_address: dict[str, BouncedRecipient] = {}
    for item in found:
        seen = by_address.get(item.address)
        if seen is None or (item.permanent and not seen.permanent):
            by_address[item.address] = item
    return tuple(by_address.values())
