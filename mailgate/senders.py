"""Sender stage: who sent this message, and can we believe it (SPOOF-02, -03, -05, -06).

Inputs: a parsed :class:`~mailgate.parse.InboundMessage`, the raw bytes (for DKIM, and our
own trace field naming the peer), the configured A-R relays and their authserv-ids, and an
injected DNS TXT lookup.
Outputs: a :class:`FromAddress` (or a :class:`FromError` with a kebab-case reason) and an
:class:`AuthResult` (a verdict, the method that decided it, a log-safe detail).

Pure: no network (DNS comes in as a function), no settings, no clock.

Error tree::

    ValueError
     └── FromError(reason)   no-from | multiple-from-headers | multiple-addresses |
                             address-in-display-name | unparseable-from | invalid-address

Why our own From parser and not ``email.utils.parseaddr``/``getaddresses``
--------------------------------------------------------------------------
On Python 3.11.7 (what we run) those functions are the CVE-2023-27043 parsers:
``getaddresses(['alice@example.org <bob@example.com>'])`` returns two addresses and
``parseaddr('alice@example.org)<bob@example.com>')`` returns alice, and the ``strict=``
fix does not exist there. ``policy.default`` also picks alice (recording a defect that is
easy to ignore). They are lenient by design: they try to recover *some* address from
junk, and which one they recover differs from what the relay and the reader's mail client
show. For an authorisation decision we want the opposite: a small parser of exactly the
RFC 5322 ``mailbox`` grammar (plus RFC 6532 UTF-8 and the obsolete ``.`` in phrases that
Outlook still writes) that refuses anything else. Encoded-words (RFC 2047) are decoded
*before* the display name is checked for address-like text, because that is what clients
display. The result is computed once and reused everywhere (SPOOF-05).

Authentication (SPOOF-02/03)
----------------------------
``trusted_authserv_ids`` is the one place that decides whether Authentication-Results are
believed at all: only on mail handed to us by an explicitly configured relay (the peer our
own trace field names; ``MAILGATE_AUTHRES_RELAYS``) and only fields naming an explicitly
configured authserv-id (``MAILGATE_AUTHSERV_IDS``). With either unset, no A-R counts and
only DKIM does: the gateway lets loopback connect by default, and any local process can
write an A-R field. ``trusted_authentication_results`` then reads only A-R fields written
by that relay; see its docstring for the position rule. ``verify_dkim`` re-verifies DKIM
with dkimpy through the injected lookup. ``authenticate`` combines them: a trusted
PASS/FAIL is final, else DKIM.

Alignment is a simplified DMARC relaxed alignment without the Public Suffix List: two
domains align when they are equal, or one is a subdomain of the other and the shorter one
has at least two labels (``mail.corp.example`` ~ ``corp.example``). This is stricter than
DMARC for siblings (``eu.corp.example`` vs ``us.corp.example`` do not align here) and, unlike
a naive "compare the last two labels" rule, never aligns two registrants under a public
suffix (``corp.co.uk`` vs ``evil.co.uk``).
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import dkim

from mailgate.parse import InboundMessage
from mailgate.peers import is_trusted
from mailgate.trace import own_trace_peer

# ---------------------------------------------------------------------------------------
# Values and errors
# ---------------------------------------------------------------------------------------

FROM_REASONS = frozenset(
    {
        "no-from",
        "multiple-from-headers",
        "multiple-addresses",
        "address-in-display-name",
        "unparseable-from",
        "invalid-address",
    }
)


class FromError(ValueError):
    """The From header (or an address) cannot be trusted to name exactly one sender."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in FROM_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class FromAddress:
    """The one author address. ``address`` is what we match members on; the display name
    is decoded for display only and never used for a decision."""

    address: str
    display_name: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


class AuthVerdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NONE = "none"  # no evidence either way
    GRAY = "gray"  # A-R cannot be trusted: no relay or authserv-id configured, or another peer


@dataclass(frozen=True)
class AuthResult:
    verdict: AuthVerdict
    method: str  # "trusted-ar-dmarc" | "trusted-ar-dkim" | "dkim" | "none"
    detail: str  # short and log-safe: never contains header text we did not normalise


# Microsoft 365 (Exchange Online Protection) writes A-R fields with no authserv-id at all:
# ``Authentication-Results: spf=pass (sender IP is …) smtp.mailfrom=…; dkim=pass …``.
# RFC 8601 requires one, so such a field has no name we can match. We give it this
# pseudo-id; it is trusted only when a deployment whose relay is M365 lists it explicitly
# in its authserv-ids (the position rule still applies).
NO_AUTHSERV_ID = "-"

# Bounds on hostile input: well above anything a real client writes.
_MAX_FROM_LEN = 4096
_MAX_ADDRESS_LEN = 254
_MAX_LOCAL_LEN = 64
_MAX_COMMENT_DEPTH = 8
_MAX_AR_LEN = 16384
_MAX_DKIM_SIGNATURES = 5

# ---------------------------------------------------------------------------------------
# Header access
# ---------------------------------------------------------------------------------------


def _header_fields(msg: InboundMessage, wanted: frozenset[str]) -> list[tuple[str, str]]:
    """Header fields named in ``wanted`` (lowercase), in order, raw UTF-8 decoded.

    ``InboundMessage.headers`` holds ``str(value)``; compat32 turns a value with 8-bit
    bytes into a ``Header`` whose ``str`` replaces them with U+FFFD, which would make
    ``jöran@exämple.test`` unmatchable. ``raw_items()`` still has the surrogate-escaped
    bytes, so we prefer it whenever it describes the same fields.
    """
    try:
        raw = list(msg.message.raw_items())
    except Exception:  # noqa: BLE001 - a hand-built message object; fall back below
        raw = []
    if len(raw) != len(msg.headers):
        raw = list(msg.headers)
    fields = []
    for name, value in raw:
        name = str(name)
        if name.strip().lower() not in wanted:
            continue
        value = str(value)
        if not value.isascii():
            try:
                value = value.encode("utf-8", "surrogateescape").decode("utf-8")
            except UnicodeError:
                pass  # invalid UTF-8 stays surrogate-escaped; the parsers reject it
        fields.append((name, value))
    return fields


_FROM = frozenset({"from"})
_TRACE = frozenset({"received", "authentication-results"})


def _name_is(name: str, wanted: str) -> bool:
    # "From :" with stray space is still a From to some readers: count it as one so a
    # second, differently spelt From cannot hide.
    return name.strip().lower() == wanted


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", value)


# ---------------------------------------------------------------------------------------
# RFC 2047 decoding (display names, comments)
# ---------------------------------------------------------------------------------------

_ENCODED_WORD_RE = re.compile(r"=\?([^?\s*]{1,40})(?:\*[^?\s]{0,20})?\?([bBqQ])\?([^?\s]*)\?=")


def _decode_word(charset: str, encoding: str, data: str) -> str | None:
    try:
        if encoding in "bB":
            raw = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
        else:
            raw = binascii.a2b_qp(data.encode("ascii"), header=True)
    except (binascii.Error, ValueError, UnicodeError):
        return None
    try:
        return raw.decode(charset, "replace")
    except (LookupError, UnicodeError, ValueError):
        # An unknown charset must not hide "=40": decode it as UTF-8 so the check sees
        # what a lenient client might show.
        return raw.decode("utf-8", "replace")


def decode_encoded_words(text: str) -> str:
    """Decode RFC 2047 encoded-words anywhere in ``text``; never raises.

    Deliberately also inside quoted strings: RFC 2047 forbids them there, but many
    clients decode them anyway, so that is what a reader may see.
    """
    if "=?" not in text:
        return text
    out: list[str] = []
    pos = 0
    last_was_word = False
    for match in _ENCODED_WORD_RE.finditer(text):
        gap = text[pos : match.start()]
        decoded = _decode_word(match.group(1), match.group(2), match.group(3))
        if decoded is None:
            out.append(gap + match.group(0))
            last_was_word = False
        else:
            # Whitespace between two adjacent encoded-words is not displayed.
            if not (last_was_word and gap.strip(" \t") == ""):
                out.append(gap)
            out.append(decoded)
            last_was_word = True
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)


def _clean_display(text: str) -> str:
    """Display text: no controls, no bidi/format characters, no surrogates."""
    chars = []
    for ch in text:
        if ch < " " or ch == "\x7f":
            chars.append(" ")
        elif ch >= "\x80":
            cat = unicodedata.category(ch)
            if cat == "Cs":
                chars.append("\ufffd")
            elif cat in ("Cc", "Cf"):
                continue
            elif cat in ("Zl", "Zp"):
                chars.append(" ")
            else:
                chars.append(ch)
        else:
            chars.append(ch)
    return " ".join("".join(chars).split())


def _looks_like_address(text: str) -> bool:
    # NFKC folds FULLWIDTH COMMERCIAL AT and SMALL COMMERCIAL AT into "@".
    return "@" in text or "@" in unicodedata.normalize("NFKC", text)


# ---------------------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------------------

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff"
_DOT_ATOM_RE = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_ASCII_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


def _has_bad_unicode(text: str) -> bool:
    if text.isascii():
        return False
    return any(ch >= "\x80" and unicodedata.category(ch) in _BAD_CATEGORIES for ch in text)


def _normalise_domain(domain: str) -> str:
    labels = domain.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        raise FromError("invalid-address", "domain")
    out = []
    for label in labels:
        if label.startswith("xn--"):
            # One canonical form (U-labels) so members match however the domain is spelt.
            try:
                label = label.encode("ascii").decode("idna").lower()
            except UnicodeError:
                raise FromError("invalid-address", "idna") from None
        if label.isascii():
            if not _ASCII_LABEL_RE.fullmatch(label):
                raise FromError("invalid-address", "domain")
        else:
            if (
                len(label.encode("utf-8")) > 63
                or label[0] == "-"
                or label[-1] == "-"
                or not all(
                    ch == "-" or ch.isalnum() or unicodedata.category(ch).startswith("M")
                    for ch in label
                )
            ):
                raise FromError("invalid-address", "domain")
        out.append(label)
    return ".".join(out)


def _parse_quoted_local(text: str) -> tuple[str, int]:
    """Quoted local part starting at text[0] == '"'; returns (content, index after)."""
    chars: list[str] = []
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                break
            ch = text[i + 1]
            i += 2
        elif ch == '"':
            return "".join(chars), i + 1
        else:
            i += 1
        if ch < " " or ch == "\x7f":
            raise FromError("invalid-address", "control")
        chars.append(ch)
    raise FromError("invalid-address", "unterminated-quote")


def parse_address(text: str) -> str:
    """Validate one bare addr-spec and return it normalised (NFC, lowercased, U-labels).

    Used for the From address, CLI input and envelope addresses. No display name, no
    angle brackets, no comments, no domain literals (no member has one), no "@" inside a
    quoted local part. Raises ``FromError("invalid-address")``.
    """
    if not isinstance(text, str):
        raise FromError("invalid-address", "type")
    text = text.strip(" \t")
    if not text or len(text) > _MAX_ADDRESS_LEN * 2:
        raise FromError("invalid-address", "length")
    text = unicodedata.normalize("NFC", text)
    if text.startswith('"'):
        content, end = _parse_quoted_local(text)
        if not content or "@" in content or _has_bad_unicode(content):
            raise FromError("invalid-address", "quoted-local")
        if _DOT_ATOM_RE.fullmatch(content):
            local = content  # "alice"@x is alice@x (RFC 5321 §4.1.2)
        else:
            local = '"' + content.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        match = _DOT_ATOM_RE.match(text)
        if not match:
            raise FromError("invalid-address", "local")
        local, end = match.group(0), match.end()
        if _has_bad_unicode(local):
            raise FromError("invalid-address", "local")
    if text[end : end + 1] != "@":
        raise FromError("invalid-address", "no-at")
    domain = text[end + 1 :]
    if not _DOT_ATOM_RE.fullmatch(domain) or _has_bad_unicode(domain):
        raise FromError("invalid-address", "domain")
    domain = _normalise_domain(domain.lower())
    local = local.lower()
    address = f"{local}@{domain}"
    if len(local.encode("utf-8")) > _MAX_LOCAL_LEN or len(address.encode()) > _MAX_ADDRESS_LEN:
        raise FromError("invalid-address", "length")
    return address


def addresses_match(from_addr: FromAddress, known_address: str) -> bool:
    """Exact match of the parsed From against a member's stored address (SPOOF-05/06).

    Both sides go through :func:`parse_address`, so case and IDN spelling do not matter
    and nothing else is forgiven (no plus-tag or dot folding).
    """
    try:
        return parse_address(known_address) == from_addr.address
    except FromError:
        return False


# ---------------------------------------------------------------------------------------
# From header
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "atom" | "qstr" | "comment" | "dlit" | one of '<>@.,:;'
    value: str  # unescaped content for qstr/comment
    start: int
    end: int
    space_before: bool


_ATOM_RE = re.compile(rf"[{_ATEXT}]+")
_SPECIALS = frozenset("<>@.,:;")


def _scan_delimited(text: str, i: int, *, nested: bool) -> tuple[str, int]:
    """Content of a quoted string (nested=False) or comment (nested=True) at text[i]."""
    close = ")" if nested else '"'
    depth = 1
    chars: list[str] = []
    i += 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                break
            chars.append(text[i + 1])
            i += 2
            continue
        if ch in "\r\n\x00":
            break
        if nested and ch == "(":
            depth += 1
            if depth > _MAX_COMMENT_DEPTH:
                break
        elif ch == close:
            depth -= 1
            if depth == 0:
                return "".join(chars), i + 1
        chars.append(ch)
        i += 1
    raise FromError("unparseable-from", "unterminated")


def _scan(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    space = False
    while i < n:
        ch = text[i]
        if ch in " \t":
            space = True
            i += 1
            continue
        start = i
        if ch == '"':
            value, i = _scan_delimited(text, i, nested=False)
            kind = "qstr"
        elif ch == "(":
            value, i = _scan_delimited(text, i, nested=True)
            kind = "comment"
        elif ch == "[":
            close = text.find("]", i)
            if close < 0 or "[" in text[i + 1 : close] or "\\" in text[i:close]:
                raise FromError("unparseable-from", "domain-literal")
            value, i, kind = text[i + 1 : close], close + 1, "dlit"
        elif ch in _SPECIALS:
            value, i, kind = ch, i + 1, ch
        else:
            match = _ATOM_RE.match(text, i)
            if not match:
                # Stray ")", "\\", "]", controls: the CVE-2023-27043 shapes end here.
                raise FromError("unparseable-from", "unexpected-character")
            value, i, kind = match.group(0), match.end(), "atom"
        tokens.append(_Token(kind, value, start, i, space))
        space = False
    return tokens


def _phrase_text(tokens: Iterable[_Token]) -> str:
    parts: list[str] = []
    for tok in tokens:
        if parts and tok.space_before:
            parts.append(" ")
        parts.append(tok.value)
    return "".join(parts)


def _check_display(text: str) -> str:
    decoded = decode_encoded_words(text)
    if _looks_like_address(decoded):
        raise FromError("address-in-display-name")
    return _clean_display(decoded)


def parse_from_value(value: str) -> FromAddress:
    """Parse one From field value into exactly one mailbox, or raise :class:`FromError`."""
    text = _unfold(value)
    if len(text) > _MAX_FROM_LEN:
        raise FromError("unparseable-from", "too-long")
    if any(ch in text for ch in "\r\n\x00"):
        raise FromError("unparseable-from", "control")
    tokens = _scan(text)
    comments = [tok for tok in tokens if tok.kind == "comment"]
    main = [tok for tok in tokens if tok.kind != "comment"]
    if not main:
        raise FromError("no-from")
    kinds = [tok.kind for tok in main]
    if "," in kinds:
        raise FromError("multiple-addresses")
    if ":" in kinds or ";" in kinds:
        raise FromError("multiple-addresses", "group")
    if kinds.count("<") > 1 or kinds.count(">") > 1:
        raise FromError("multiple-addresses", "angle")
    # A comment may carry text a client shows as the name ("x@evil (ceo@corp)").
    comment_names = [_check_display(tok.value) for tok in comments]

    if "<" in kinds or ">" in kinds:
        lt, gt = kinds.index("<") if "<" in kinds else -1, kinds.index(">") if ">" in kinds else -1
        if lt < 0 or gt < lt or gt != len(main) - 1:
            raise FromError("unparseable-from", "angle")
        phrase = main[:lt]
        if any(tok.kind == "@" for tok in phrase):
            raise FromError("address-in-display-name")
        if any(tok.kind not in ("atom", "qstr", ".") for tok in phrase):
            raise FromError("unparseable-from", "phrase")
        inside = [tok for tok in tokens if main[lt].end <= tok.start < main[gt].start]
        if not inside or any(tok.kind == "comment" for tok in inside):
            raise FromError("unparseable-from", "angle-addr")
        # Display name first: an address-like name is the more telling reason.
        display = _check_display(_phrase_text(phrase))
        address = parse_address(text[main[lt].end : main[gt].start])
        return FromAddress(address=address, display_name=display)

    # Bare addr-spec, optionally with comments around it ("alice@corp.example (Alice)").
    first, last = main[0], main[-1]
    if any(tok.space_before for tok in main[1:]):
        raise FromError("unparseable-from", "words-without-angle-addr")
    if any(first.start < tok.start < last.end for tok in comments):
        raise FromError("unparseable-from", "comment-in-address")
    address = parse_address(text[first.start : last.end])
    return FromAddress(address=address, display_name=" ".join(n for n in comment_names if n))


_HEADER_DEFECTS = {
    "MisplacedEnvelopeHeaderDefect": "multiple-from-headers",
    "MissingHeaderBodySeparatorDefect": "unparseable-from",
}


def parse_from(msg: InboundMessage) -> FromAddress:
    """The author of ``msg``: exactly one From field holding exactly one mailbox.

    Header-structure defects recorded by the parser (a hidden "From " line, a colon-less
    line that ends the header block early) refuse the message: what we saw may not be
    what the reader's client shows. Raises :class:`FromError` with reason ``no-from``,
    ``multiple-from-headers``, ``multiple-addresses``, ``address-in-display-name``,
    ``unparseable-from`` or ``invalid-address``. Never raises anything else: that is
    property-tested rather than caught-all, so a parser bug shows up in tests instead of
    being silently folded into a reason.
    """
    for defect in msg.defects:
        # The stdlib dropped a header line that other readers may show: a mid-header
        # "From " line, or a colon-less line after which the rest became body.
        if defect in _HEADER_DEFECTS:
            raise FromError(_HEADER_DEFECTS[defect], defect)
    values = [value for name, value in _header_fields(msg, _FROM) if _name_is(name, "from")]
    if not values:
        raise FromError("no-from")
    if len(values) > 1:
        raise FromError("multiple-from-headers")
    return parse_from_value(values[0])


# ---------------------------------------------------------------------------------------
# Domains and alignment
# ---------------------------------------------------------------------------------------


def _ascii_domain(domain: str) -> str:
    domain = domain.strip().strip(".").lower()
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def domains_aligned(a: str, b: str) -> bool:
    """Simplified relaxed alignment; see the module docstring."""
    a, b = _ascii_domain(a), _ascii_domain(b)
    if not a or not b:
        return False
    if a == b:
        return True
    shorter, longer = sorted((a, b), key=len)
    return "." in shorter and longer.endswith("." + shorter)


# ---------------------------------------------------------------------------------------
# Authentication-Results (RFC 8601)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultInfo:
    """One ``method=result`` clause of an A-R field, with its properties."""

    method: str
    result: str
    props: tuple[tuple[str, str], ...]

    def prop(self, name: str) -> str | None:
        for key, value in self.props:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class AuthResultsField:
    authserv_id: str
    results: tuple[ResultInfo, ...]


_AR_WORD_RE = re.compile(r'[^\s()";=\\]+')


def _ar_tokens(text: str) -> list[tuple[str, str]] | None:
    """Tokens ("w" word, "q" quoted, "=", ";"); comments dropped. None if malformed."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch in "=;":
            tokens.append((ch, ch))
            i += 1
        elif ch in '("':
            try:
                value, i = _scan_delimited(text, i, nested=ch == "(")
            except FromError:
                return None
            if ch == '"':
                tokens.append(("q", value))
        else:
            match = _AR_WORD_RE.match(text, i)
            if not match:
                return None  # stray ")" or "\\": not something a relay writes
            tokens.append(("w", match.group(0)))
            i = match.end()
    return tokens


def _ar_resinfo(segment: list[tuple[str, str]]) -> ResultInfo | None:
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(segment):
        if (
            i + 2 < len(segment)
            and segment[i][0] == "w"
            and segment[i + 1][0] == "="
            and segment[i + 2][0] in ("w", "q")
        ):
            pairs.append((segment[i][1].lower(), segment[i + 2][1]))
            i += 3
        else:
            return None
    if not pairs:
        return None
    method = pairs[0][0].split("/", 1)[0]
    props = tuple((key, value.lower()) for key, value in pairs[1:])
    return ResultInfo(method=method, result=pairs[0][1].lower(), props=props)


def parse_authentication_results(value: str) -> AuthResultsField | None:
    """Parse one A-R field value; None if it is not well-formed enough to trust.

    Handles comments, quoted values, ``method/version``, a version after the authserv-id,
    ``none``, and the id-less Microsoft 365 form (authserv-id :data:`NO_AUTHSERV_ID`).
    Malformed clauses are dropped; the rest of the field still counts.
    """
    if len(value) > _MAX_AR_LEN:
        return None
    tokens = _ar_tokens(value)
    if not tokens:
        return None
    segments: list[list[tuple[str, str]]] = [[]]
    for tok in tokens:
        if tok[0] == ";":
            segments.append([])
        else:
            segments[-1].append(tok)
    head = segments[0]
    if len(head) >= 2 and head[1][0] == "=":
        authserv_id = NO_AUTHSERV_ID  # M365: the first clause is already a result
        clauses = segments
    else:
        if not head or head[0][0] not in ("w", "q") or len(head) > 2:
            return None
        authserv_id = head[0][1].lower()
        clauses = segments[1:]
    results = []
    for clause in clauses:
        if clause == [("w", "none")] or not clause:
            continue
        info = _ar_resinfo(clause)
        if info is not None:
            results.append(info)
    return AuthResultsField(authserv_id=authserv_id, results=tuple(results))


def _header_domain(info: ResultInfo, *names: str) -> str | None:
    for name in names:
        value = info.prop(name)
        if value:
            return value.rpartition("@")[2]
    return None


def trusted_authentication_results(
    msg: InboundMessage,
    authserv_ids: frozenset[str],
    *,
    from_domain: str | None = None,
    received_above: int = 1,
) -> AuthResult:
    """The verdict of the trusted relay's Authentication-Results, or NONE/GRAY (SPOOF-02).

    Position rule: the relay adds its A-R at the top, above its own Received. Mailgate's
    gateway prepends its own Received (SMTP-16), so ingest passes ``received_above=1``
    (plus ``MAILGATE_AUTHRES_HOPS``): only A-R fields directly under our trace can come
    from the relay (``authenticate`` has already checked, with
    :func:`trusted_authserv_ids`, that the peer was a configured relay). Anything lower
    was in the message when the relay got it, i.e. written by the sender, and is ignored
    even if it names our authserv-id (RFC 8601 §5: the relay should also delete those).
    Of the fields in that region, only those whose authserv-id is in ``authserv_ids``
    count (RFC 8601 §7).

    Where relays put their A-R: Postfix milters (OpenDKIM, OpenDMARC) insert it above
    Postfix's own Received, so the default fits. Google Workspace and Microsoft 365 write
    it *below* the Received of the hop that evaluated the mail and below further internal
    hops, so for them ``received_above`` must be raised to what captured samples show
    (SPOOF-04), and M365 also needs :data:`NO_AUTHSERV_ID` listed. For those providers a
    forged field placed directly under the real one cannot be told apart by position, so
    two more rules fail closed: any trusted ``dmarc=fail`` wins, and disagreeing trusted
    ``dmarc`` results (a real relay writes one) are a FAIL.

    Verdicts: no configured id → GRAY. A trusted ``dmarc=fail``, or conflicting dmarc
    results → FAIL. A trusted ``dmarc=pass`` whose ``header.from`` is our From domain →
    PASS (without ``header.from`` it does not count); if it names another domain, the
    relay parsed a different From than we did → FAIL. A trusted ``dkim=pass`` with
    ``header.d`` (or ``header.i``) aligned with the From domain → PASS. Otherwise NONE.
    """
    if not authserv_ids:
        return AuthResult(AuthVerdict.GRAY, "none", "no-authserv-id-configured")
    if from_domain is None:
        try:
            from_domain = parse_from(msg).domain
        except FromError as exc:
            return AuthResult(AuthVerdict.FAIL, "none", f"from-{exc.reason}")
    ids = frozenset(i.lower() for i in authserv_ids)
    want = _ascii_domain(from_domain)

    trusted: list[ResultInfo] = []
    received = 0
    ignored = 0
    for name, value in _header_fields(msg, _TRACE):
        if _name_is(name, "received"):
            received += 1
            continue
        if not _name_is(name, "authentication-results"):
            continue
        field = parse_authentication_results(_unfold(value))
        if field is None or field.authserv_id not in ids:
            continue
        if received > received_above:
            ignored += 1  # claims our relay's id but sits below its Received: forged
            continue
        trusted.extend(field.results)
    note = f" forged-ar-ignored={ignored}" if ignored else ""
    if not trusted:
        return AuthResult(AuthVerdict.NONE, "none", "no-trusted-ar" + note)

    dmarc = [r for r in trusted if r.method == "dmarc"]
    if any(r.result == "fail" for r in dmarc):
        return AuthResult(AuthVerdict.FAIL, "trusted-ar-dmarc", "dmarc=fail" + note)
    if len({r.result for r in dmarc}) > 1:
        return AuthResult(AuthVerdict.FAIL, "trusted-ar-dmarc", "dmarc-conflict" + note)
    for r in dmarc:
        if r.result == "pass":
            header_from = _header_domain(r, "header.from")
            if header_from is None:
                continue  # every relay we know names the domain; without it, no pass
            if _ascii_domain(header_from) != want:
                return AuthResult(
                    AuthVerdict.FAIL, "trusted-ar-dmarc", "dmarc-from-mismatch" + note
                )
            return AuthResult(AuthVerdict.PASS, "trusted-ar-dmarc", "dmarc=pass" + note)
    for r in trusted:
        if r.method == "dkim" and r.result == "pass":
            domain = _header_domain(r, "header.d", "header.i")
            if domain and domains_aligned(domain, want):
                return AuthResult(
                    AuthVerdict.PASS, "trusted-ar-dkim", f"dkim=pass d={_ascii_domain(domain)}"
                )
    summary = ",".join(
        sorted({f"{r.method}={r.result}" for r in trusted if r.method in ("dmarc", "dkim", "spf")})
    )[:80]
    summary = re.sub(r"[^a-z0-9=.,_-]", "?", summary)  # log-safe even if a relay misbehaves
    return AuthResult(AuthVerdict.NONE, "none", f"no-trusted-pass {summary}".strip() + note)


# ---------------------------------------------------------------------------------------
# DKIM (RFC 6376)
# ---------------------------------------------------------------------------------------

DnsTxtLookup = Callable[[bytes], bytes | None]


def verify_dkim(raw: bytes, from_domain: str, dnsfunc: DnsTxtLookup | None) -> AuthResult:
    """Re-verify DKIM signatures with dkimpy; PASS only for a valid aligned one (SPOOF-03).

    ``dnsfunc(name) -> TXT bytes | None`` is the injected lookup (it owns its timeout);
    None means "no DNS here" → NONE. At most five signatures are tried. A signature with
    an ``l=`` body-length tag never passes (unsigned text can be appended after ``l``), and
    ``From`` must be among the signed headers.

    Result: an aligned valid signature → PASS. Otherwise, any signature that failed to
    verify (bad body hash, bad signature, missing key, DNS error…) → FAIL. Only valid
    signatures of unrelated domains (a mailing service's own d=) → NONE: they say nothing
    about the From domain. No signature → NONE. Never raises.
    """
    if dnsfunc is None:
        return AuthResult(AuthVerdict.NONE, "none", "dkim-no-dns")
    lookup = dnsfunc

    def _dns(name: bytes, timeout: int = 5) -> bytes | None:
        return lookup(name)

    try:
        verifier = dkim.DKIM(raw)
        count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    except Exception as exc:  # noqa: BLE001 - dkimpy raises many types on junk input
        return AuthResult(AuthVerdict.FAIL, "dkim", f"dkim-error {type(exc).__name__}")
    if count == 0:
        return AuthResult(AuthVerdict.NONE, "none", "dkim-no-signature")

    failures: list[str] = []
    foreign: list[str] = []
    for idx in range(min(count, _MAX_DKIM_SIGNATURES)):
        try:
            valid = bool(verifier.verify(idx=idx, dnsfunc=_dns))
        except Exception as exc:  # noqa: BLE001 - any verification error is a failure
            failures.append(type(exc).__name__)
            continue
        fields: dict[Any, Any] = verifier.signature_fields or {}
        domain = _signature_domain(fields)
        if not valid:
            failures.append(f"bad-signature d={domain}")
        elif b"l" in fields:
            failures.append(f"length-tag d={domain}")
        elif b"from" not in (verifier.include_headers or ()):
            failures.append(f"from-unsigned d={domain}")
        elif domains_aligned(domain, from_domain):
            return AuthResult(AuthVerdict.PASS, "dkim", f"dkim=pass d={domain}")
        else:
            foreign.append(domain)
    if failures:
        return AuthResult(AuthVerdict.FAIL, "dkim", f"dkim=fail {failures[0]}"[:100])
    return AuthResult(AuthVerdict.NONE, "none", f"dkim-not-aligned d={foreign[0]}"[:100])


def _signature_domain(fields: dict[Any, Any]) -> str:
    value = fields.get(b"d", b"")
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    # Log-safe: a d= is a hostname; anything else is shown as "?".
    return text.lower() if re.fullmatch(r"[A-Za-z0-9.-]{1,253}", text) else "?"


# ---------------------------------------------------------------------------------------
# Combined
# ---------------------------------------------------------------------------------------


def trusted_authserv_ids(
    raw: bytes, authserv_ids: frozenset[str], relays: Sequence[str]
) -> tuple[frozenset[str], str]:
    """The authserv-ids whose Authentication-Results count for ``raw``, or none and why.

    The one decision to believe A-R at all (SPOOF-02): both the relays and the ids must be
    configured, and ``raw`` must have reached us from one of ``relays`` — the peer named
    by our own trace field, which the gateway puts above anything a sender wrote.
    """
    if not authserv_ids:
        return frozenset(), "no-authserv-id-configured"
    if not relays:
        return frozenset(), "no-authres-relay-configured"
    peer = own_trace_peer(raw)
    if peer is None or not is_trusted(peer, relays):
        return frozenset(), "peer-not-an-authres-relay"
    return authserv_ids, ""


def authenticate(
    msg: InboundMessage,
    raw: bytes,
    from_addr: FromAddress,
    *,
    authserv_ids: frozenset[str],
    dnsfunc: DnsTxtLookup | None,
    received_above: int = 1,
    relays: Sequence[str] = (),
) -> AuthResult:
    """Trusted A-R first (its PASS or FAIL is final), else our own DKIM verification.

    A-R is trusted only as :func:`trusted_authserv_ids` decides: by default (no
    ``relays``) none is, and only DKIM counts. If neither decides, the A-R GRAY (not
    trusted, and why) is returned in preference to NONE so the log shows why nothing
    could be trusted.
    """
    ids, untrusted = trusted_authserv_ids(raw, authserv_ids, relays)
    trusted = (
        trusted_authentication_results(
            msg, ids, from_domain=from_addr.domain, received_above=received_above
        )
        if ids
        else AuthResult(AuthVerdict.GRAY, "none", untrusted)
    )
    if trusted.verdict in (AuthVerdict.PASS, AuthVerdict.FAIL):
        return trusted
    checked = verify_dkim(raw, from_addr.domain, dnsfunc)
    if checked.verdict in (AuthVerdict.PASS, AuthVerdict.FAIL):
        return checked
    if trusted.verdict is AuthVerdict.GRAY:
        return trusted
    return AuthResult(AuthVerdict.NONE, "none", f"{trusted.detail}; {checked.detail}"[:120])
