"""Parse stage: raw bytes → :class:`InboundMessage`.

The one module that touches mail-parser. Everything after it (classify, senders,
threads, bodies) works on the frozen :class:`InboundMessage` and never re-parses bytes.

Input: the exact bytes received over SMTP. Output: an ``InboundMessage``. Parsing never
raises on bad input (FMT-04, FMT-07): header values that cannot be decoded fall back to
their raw text, unknown charsets decode with U+FFFD, and what went wrong is recorded in
``defects``.
"""

from __future__ import annotations

import email
import email.header
import email.message
import email.policy
import logging
import re
from dataclasses import dataclass, field

import mailparser

# mail-parser logs a warning for every part type it does not render (delivery-status,
# rfc822-headers …); we read those parts ourselves, so its warnings are only noise.
logging.getLogger("mailparser").setLevel(logging.ERROR)

_MSGID_RE = re.compile(r"<([^<>\s]+)>")


@dataclass(frozen=True)
class Attachment:
    """A non-body MIME part; ``filename`` is as sent (sanitised later by bodies)."""

    filename: str
    content_type: str
    payload: bytes


@dataclass(frozen=True)
class InboundMessage:
    """Facts read from one raw message. Values are decoded for display, never trusted.

    ``headers`` keeps every top-level header, in order, as ``(name, raw value)``;
    ``message`` is the stdlib compat32 tree for stages that must walk MIME parts
    (bounce reports); it is excluded from equality.
    """

    headers: tuple[tuple[str, str], ...]
    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    content_type: str
    text_plain: str | None
    text_html: str | None
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]
    message: email.message.Message = field(compare=False, repr=False)

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), raw, or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def header_all(self, name: str) -> tuple[str, ...]:
        """Every value of header ``name`` in message order (top first)."""
        wanted = name.lower()
        return tuple(value for key, value in self.headers if key.lower() == wanted)


def decode_header_text(value: str) -> str:
    """Decode RFC 2047 encoded-words for display; never raises (FMT-05)."""
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # noqa: BLE001 - any malformed encoded-word falls back to raw text
        return value


def extract_message_ids(value: str | None) -> tuple[str, ...]:
    """All ``<id>`` tokens in a header value, without angle brackets, in order."""
    if not value:
        return ()
    return tuple(_MSGID_RE.findall(value))


def _message_id(value: str | None) -> str | None:
    if not value:
        return None
    ids = extract_message_ids(value)
    if ids:
        return ids[0]
    # Some clients send bare ids without brackets; keep the raw text (FMT-04).
    cleaned = value.strip().strip("<>").strip()
    return cleaned or None


def _unescape(value: object) -> str:
    text = str(value)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeError:
        return text


def _decode_part(part: email.message.Message, defects: list[str]) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset)
    except LookupError:
        defects.append(f"unknown-charset:{charset}")
    except UnicodeDecodeError:
        defects.append(f"bad-bytes-for-charset:{charset}")
    # Wrong labels are common (latin-1 sent as us-ascii, cp1252 as latin-1): try UTF-8
    # first, then replace what is left (FMT-07).
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("utf-8", errors="replace")


def _walk_bodies(
    msg: email.message.Message, defects: list[str]
) -> tuple[str | None, str | None, list[Attachment]]:
    plain: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = str(part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        try:
            filename = part.get_filename()
        except Exception:  # noqa: BLE001 - broken RFC 2231 parameters
            filename = None
            defects.append("bad-filename-parameter")
        if disposition == "attachment" or filename or not ctype.startswith("text/"):
            payload = part.get_payload(decode=True)
            attachments.append(
                Attachment(
                    filename=decode_header_text(filename or ""),
                    content_type=ctype,
                    payload=payload if isinstance(payload, bytes) else b"",
                )
            )
            continue
        if ctype == "text/plain":
            plain.append(_decode_part(part, defects))
        elif ctype == "text/html":
            html.append(_decode_part(part, defects))
        else:
            # text/calendar, text/rfc822-headers, delivery-status …: attachments.
            payload = part.get_payload(decode=True)
            attachments.append(
                Attachment("", ctype, payload if isinstance(payload, bytes) else b"")
            )
    return ("\n".join(plain) if plain else None, "\n".join(html) if html else None, attachments)


def parse_message(raw: bytes) -> InboundMessage:
    """Parse raw bytes into an :class:`InboundMessage`. Never raises on bad input."""
    defects: list[str] = []
    try:
        parsed = mailparser.parse_from_bytes(raw)
        msg: email.message.Message = parsed.message
    except Exception as exc:  # noqa: BLE001 - mail-parser raises many types on junk input
        defects.append(f"mail-parser:{type(exc).__name__}")
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    for defect in msg.defects:
        defects.append(type(defect).__name__)

    # raw_items() gives the header text as received; compat32 carries raw 8-bit bytes
    # (SMTPUTF8 headers) as surrogate escapes, which we turn back into UTF-8 here.
    headers = [(str(key), _unescape(value)) for key, value in msg.raw_items()]

    def first(name: str) -> str | None:
        wanted = name.lower()
        for key, value in headers:
            if key.lower() == wanted:
                return value
        return None

    plain, html, attachments = _walk_bodies(msg, defects)
    return InboundMessage(
        headers=tuple(headers),
        message_id=_message_id(first("Message-ID")),
        in_reply_to=extract_message_ids(first("In-Reply-To")),
        references=extract_message_ids(first("References")),
        subject=decode_header_text(first("Subject") or "").strip(),
        content_type=msg.get_content_type(),
        text_plain=plain,
        text_html=html,
        attachments=tuple(attachments),
        defects=tuple(defects),
        message=msg,
    )
