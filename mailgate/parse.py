"""Parse stage: raw bytes → :class:`InboundMessage`.

The one module that touches mail-parser. Everything after it (classify, senders,
threads, bodies) works on the frozen :class:`InboundMessage` and never re-parses bytes.

Input: the exact bytes received over SMTP. Output: an ``InboundMessage``. Parsing never
raises on bad input (FMT-04, FMT-07): header values that cannot be decoded fall back to
their raw text, unknown charsets decode with U+FFFD, and what went wrong is recorded in
``defects``.
"""

from __future__ import annotations

import codecs
import email
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import functools
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
    cleaned = " ".join(value.split()).strip("<>").strip()  # unfolded: no CR/LF (FMT-09)
    return cleaned or None


def _unescape(value: object) -> str:
    text = str(value)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeError:
        return text


# Charset labels are read the way browsers read them (WHATWG Encoding Standard): mail
# clients label text by what the user picked, not by what the bytes are, and browsers
# settled long ago on which superset each common label really means.
_ASCII = "ascii"  # try UTF-8 first (ASCII is its subset), then windows-1252
_CP1252 = "cp1252"  # windows-1252; its five undefined bytes read as Latin-1 controls
# Labels Python does not know, as WHATWG names them.
_LABEL_ALIASES = {
    "x-cp1252": _CP1252,
    "x-gbk": "gb18030",
    "csgb2312": "gb18030",
    "csiso58gb231280": "gb18030",
    "iso-ir-58": "gb18030",
    "chinese": "gb18030",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "csshiftjis": "cp932",
    "ms932": "cp932",
    "windows-949": "cp949",
    "x-euc-jp": "euc_jp",
    "iso-8859-8-i": "iso8859-8",
    "csiso88598i": "iso8859-8",
    "logical": "iso8859-8",
    "windows-874": "cp874",
    "dos-874": "cp874",
    "x-mac-roman": "mac-roman",
    "x-mac-cyrillic": "mac-cyrillic",
    "x-mac-ukrainian": "mac-cyrillic",
    "koi8-ru": "koi8-u",
    "unicode-1-1-utf-8": "utf-8",
    "unicode11utf8": "utf-8",
    "unicode20utf8": "utf-8",
    "x-unicode20utf8": "utf-8",
}
# Python codec (canonical name) → the superset WHATWG decodes that label with.
_SUPERSETS = {
    "ascii": _ASCII,
    "iso8859-1": _CP1252,
    "latin-1": _CP1252,
    "cp1252": _CP1252,
    "gb2312": "gb18030",  # WHATWG's GBK decoder is the gb18030 decoder
    "gbk": "gb18030",
    "euc_kr": "cp949",  # ks_c_5601-1987 from Outlook is really UHC
    "shift_jis": "cp932",
    "big5": "big5hkscs",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
}
# Bytes 0x80-0x9F as windows-1252 reads them; 0x81, 0x8D, 0x8F, 0x90 and 0x9D stay the
# Latin-1 control characters, as in browsers.
_CP1252_HIGH = {
    0x80 + i: char
    for i, char in enumerate(bytes(range(0x80, 0xA0)).decode("cp1252", errors="replace"))
    if char != "\ufffd"
}


@functools.lru_cache(maxsize=256)
def _charset_codec(label: str) -> str | None:
    """The Python codec to decode a charset ``label`` with, or None when unknown.

    Cached: there are few labels in real mail, and hostile ones only fill a bounded cache.
    """
    name = label.strip().strip("\"'").lower()
    name = _LABEL_ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):  # ValueError: a NUL inside the label
        return None
    # Non-text codecs (base64, rot13 …) and the always-failing "undefined" are no charsets.
    if not getattr(info, "_is_text_encoding", True) or info.name == "undefined":
        return None
    return _SUPERSETS.get(info.name, info.name)


def _decode_cp1252(payload: bytes) -> str:
    try:
        return payload.decode("cp1252")
    except UnicodeDecodeError:
        return payload.decode("latin-1").translate(_CP1252_HIGH)


def _decode_text(payload: bytes, label: str, defects: list[str]) -> str:
    """Decode ``payload`` labelled ``label``; never raises (FMT-07)."""
    codec = _charset_codec(label)
    if codec is None:
        defects.append(f"unknown-charset:{label}")
        codec = "utf-8"
    elif codec == _ASCII:
        if payload.isascii():
            return payload.decode("ascii")
        defects.append(f"bad-bytes-for-charset:{label}")
        # 8-bit text labelled us-ascii is usually UTF-8 (a terminal mailer) and otherwise
        # windows-1252, which is how browsers read the label anyway.
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            return _decode_cp1252(payload)
    elif codec == _CP1252:
        return _decode_cp1252(payload)
    else:
        try:
            return payload.decode(codec)
        except UnicodeDecodeError:
            defects.append(f"bad-bytes-for-charset:{label}")
    # Mislabelled UTF-8 is the commonest wrong label; failing that, keep the labelled
    # charset and turn only the bad bytes into U+FFFD.
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return payload.decode(codec, errors="replace")
    except (UnicodeError, LookupError):  # exotic codecs without "replace" support
        return payload.decode("utf-8", errors="replace")


def _flowed_params(part: email.message.Message) -> tuple[bool, bool]:
    """(format=flowed, DelSp=yes) from a part's Content-Type, read in one parse."""
    flowed = delsp = False
    for key, value in part.get_params() or ():
        if isinstance(value, tuple):  # RFC 2231 encoded parameter
            value = email.utils.collapse_rfc2231_value(value)
        name = key.lower()
        if name == "format":
            flowed = value.strip().lower() == "flowed"
        elif name == "delsp":
            delsp = value.strip().lower() == "yes"
    return flowed, delsp


def _unflow(text: str, *, delsp: bool) -> str:
    """Undo format=flowed (RFC 3676): join soft-broken lines, remove space-stuffing.

    A line ending in a space continues on the next line of the same quote depth (with
    DelSp=yes that space was added by the sender and is dropped). One pass, linear in
    the text. Lines that join nothing keep their quote marks as sent; joined quoted
    paragraphs come back as quote marks, one space, then the text (``">> text"``), which
    is what the body stage recognises as quoted.
    """
    crlf = "\r\n" in text
    if crlf:
        text = text.replace("\r\n", "\n")
    # Nothing soft-broken and nothing stuffed: the common case costs four scans.
    if " \n" not in text and "\n " not in text and text[:1] != " " and text[-1:] != " ":
        return text.replace("\n", "\r\n") if crlf else text
    lines = text.split("\n")
    trailing = lines[-1] == ""  # the final line break is not part of the last line
    if trailing:
        lines.pop()
    out: list[str] = []
    para: list[str] = []  # pieces of the soft-broken paragraph being joined
    para_depth = 0
    for line in lines:
        if line[:1] == ">":
            body = line.lstrip(">")
            depth = len(line) - len(body)
        else:
            body = line
            depth = 0
        if body[:1] == " ":  # space-stuffing (§4.4), also after quote marks (§4.5)
            body = body[1:]
        # The signature separator "-- " is never flowed, and starts a new paragraph.
        soft = body[-1:] == " " and body != "-- "
        if para and (depth != para_depth or body == "-- "):
            # A quote-depth change ends a paragraph even after a soft break (§4.5).
            joined = "".join(para)
            out.append(">" * para_depth + " " + joined if para_depth else joined)
            para.clear()
        if soft:
            para.append(body[:-1] if delsp else body)
            para_depth = depth
        elif para:
            para.append(body)
            joined = "".join(para)
            out.append(">" * depth + " " + joined if depth else joined)
            para.clear()
        else:
            out.append(line if depth else body)
    if para:
        joined = "".join(para)
        out.append(">" * para_depth + " " + joined if para_depth else joined)
    eol = "\r\n" if crlf else "\n"
    return eol.join(out) + (eol if trailing else "")


def _decode_part(part: email.message.Message, defects: list[str]) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    text = _decode_text(payload, part.get_content_charset() or "us-ascii", defects)
    # The substring test spares the (slow) parameter parsing for the usual fixed text.
    if "flowed" in str(part.get("Content-Type", "")).lower() and (
        part.get_content_type() == "text/plain"
    ):
        flowed, delsp = _flowed_params(part)
        if flowed:
            text = _unflow(text, delsp=delsp)
    return text


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
        try:
            msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        except RecursionError:  # MIME nested past the stdlib's recursion: headers only
            defects.append("too-deeply-nested")
            msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
                raw, headersonly=True
            )
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
