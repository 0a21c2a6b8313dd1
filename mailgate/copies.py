"""Copies: the bytes of each member's copy of a list post (pure, outbound).

Input: a :class:`PostSource` (the stored post, its thread ids and its list), the
:class:`CopySettings` (our domain, the base URL for one-click unsubscribe, a DKIM key) and,
per copy, a :class:`Recipient` (that member's tokens). Output: the RFC 5322 bytes of the
copy (CRLF, 7-bit, headers folded and RFC 2047-encoded, lines of at most 998 octets) and
its VERP envelope sender.

Fan-out is the hot path (one post to 5,000 members at ~1,700 copies/s per process,
SMTP included), so the work is split in two:

- :func:`prepare_post`, once per post: subject tagging, headers, text and HTML parts from
  ``templates/post/``, CSS inlining, quoted-printable encoding. The result holds bytes with
  per-post placeholders where the recipient's tokens go.
- :func:`render_copy`, once per recipient: splice the tokens into those bytes (a list
  join, no parsing), then DKIM-sign if a key is configured. The canonical forms DKIM hashes
  are also prepared once, so signing a copy costs one SHA-256 pass and one RSA signature.

Placeholders are ``mgph<nonce><slot>``: lowercase ASCII with no space, valid inside a local
part, a URL and an HTML attribute, so no encoding step changes them. The nonce is a hash of
the whole post, so text in the post cannot contain it. Quoted-printable never splits a
placeholder: lines that hold one are wrapped by :func:`_qp_line`, which treats it as one
atom as wide as the longest token, so the lines stay within 76 octets after substitution.

Decisions (see also CHECKLIST DMARC-01, LIST-01..06, THR-01/02, LOOP-03, AUTH-02):

- From is always ``"Author via List" <list address>`` (Decision 2). The display name never
  contains ``@`` or an address (DMARC-03). Reply-To is the member's own reply address, so a
  reply comes back through the gateway and threads by token; the author's address is kept
  in ``X-Original-Sender`` (as Google Groups does). No ``Sender`` field: From already names
  the list, and Outlook would show "list on behalf of …".
- The Message-ID is the author's, identical on every copy (FMT-03). An id we could not
  reproduce without a parse defect is replaced by ``post.<id>.<hash>@domain``, the same
  for every copy of that post; replies still thread by their token.
- ``List-Owner`` is left out: the gateway does not accept ``slug-owner@`` yet. No
  ``List-Archive``/``Archived-At``: there is no archive to point at.
- ``List-Unsubscribe`` puts the https URL first (RFC 2369: clients take the leftmost they
  support) and the mailto second; ``List-Unsubscribe-Post`` appears only with an https URL.
  Mandatory lists emit them too: there unsubscribing switches the member to the digest
  (Decision 4), and the footer says so.
- List copies are human mail: ``Precedence: list`` and ``X-Auto-Response-Suppress``, never
  ``Auto-Submitted`` (LOOP-03).
- DKIM: rsa-sha256, relaxed/relaxed, no ``l=``, no ``t=`` (no clock in a pure stage). Every
  field we write is signed; From, Reply-To, To, Subject, Date, Message-ID, the threading,
  MIME and ``List-*`` fields are signed once more so that none can be added (AUTH-02).
  The RSA step uses the ``cryptography`` package (OpenSSL) when it is installed: dkimpy's
  own RSA is pure Python and costs ~10 ms a signature. dkimpy verifies our output in tests.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import css_inline
from markupsafe import Markup

from mailgate.addressing import (
    TOKEN_RE,
    bounce_address,
    command_address,
    list_address,
    reply_address,
)
from mailgate.folding import fold_words
from mailgate.headers import fold_field, msg_id, thread_fields, without_controls
from mailgate.notices import template_env
from mailgate.signing import (
    OVERSIGN,
    DkimKey,
    load_key,
    relaxed_body,
    relaxed_header,
    signature_field,
    signature_prefix,
)

MAX_TOKEN = 64  # the longest token addressing.TOKEN_RE accepts
MAX_SUBJECT = 400  # characters; keeps a hostile subject from producing a huge header
MAX_NAME = 64
_QP_WIDTH = 76  # RFC 2045 §6.7: encoded lines of at most 76 characters

_URL_RE = re.compile(r"https?://[^\s<>\"']{1,2000}")
_ANGLE_RE = re.compile(r"<[^<>]{0,500}>")
_AT_SIGNS = ("@", "\uff20", "\ufe6b")  # @, fullwidth @, small @
_REPLY_PREFIX_RE = re.compile(
    r"(?:re|aw|sv|antw|r|rif|res|odp|ynt|vs)\s{0,3}(?:\[\d{1,4}\]|\(\d{1,4}\))?\s{0,3}[:：]\s*",
    re.IGNORECASE,
)
_FORWARD_PREFIX_RE = re.compile(r"(?:fwd?|wg|tr|enc|rv|doorst)\s{0,3}[:：]\s*", re.IGNORECASE)


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class CopySettings:
    domain: str  # the list domain, e.g. lists.corp.example (ASCII: use the xn-- form)
    base_url: str | None = None  # enables https one-click unsubscribe links
    dkim: DkimKey | None = None


@dataclass(frozen=True)
class PostSource:
    post_id: int
    message_id: str  # without <>
    parent_message_id: str | None  # None: the post starts a discussion
    references: tuple[str, ...]  # the parent's References, oldest first, without <>
    subject: str  # as the author wrote it, decoded
    text: str  # the post's new text
    author_name: str
    author_address: str
    created_at: datetime  # aware
    list_slug: str
    list_name: str
    list_description: str
    announce_only: bool
    mandatory: bool
    discussion_subject: str


@dataclass(frozen=True)
class Recipient:
    address: str
    name: str
    reply_token: str
    verp_token: str
    unsubscribe_token: str


@dataclass(frozen=True)
class _Template:
    """Bytes with holes: ``pieces`` with placeholders at ``slots`` (position, value index)."""

    pieces: tuple[bytes, ...]
    slots: tuple[tuple[int, int], ...]

    def fill(self, values: Sequence[bytes]) -> bytes:
        out = list(self.pieces)
        for position, index in self.slots:
            out[position] = values[index]
        return b"".join(out)


@dataclass(frozen=True)
class _Signer:
    key: Any  # a cryptography RSAPrivateKey, or dkimpy's parsed key dict
    prefix: bytes  # our DKIM-Signature's tags up to "bh=", as written
    headers: _Template  # the signed header fields, relaxed-canonicalised, in h= order
    body_head: Any  # hashlib sha256 state after the body up to the first placeholder
    body_rest: _Template  # the rest of the canonical body


@dataclass(frozen=True)
class PreparedPost:
    domain: str
    subject: str  # the tagged subject, for logs and tests
    message_id: str
    message: _Template
    signer: _Signer | None


# ---------------------------------------------------------------- subject and names


def tag_subject(subject: str, slug: str, *, reply: bool) -> str:
    """Subject with the ``[slug]`` tag exactly once, after one "Re: " for replies (THR-02).

    Reply prefixes in any common language and our own tags are dropped from the front; a
    forward prefix is kept. Idempotent: tagging a tagged subject returns it unchanged.
    """
    text = " ".join(without_controls(subject).split())[:MAX_SUBJECT]
    tag = f"[{slug}]"
    forwards: list[str] = []
    while True:
        if text[: len(tag)].lower() == tag.lower():
            text = text[len(tag) :].lstrip()
            continue
        match = _REPLY_PREFIX_RE.match(text)
        if match:
            reply = True
            text = text[match.end() :]
            continue
        match = _FORWARD_PREFIX_RE.match(text)
        if match:
            forwards.append(match.group(0).strip())
            text = text[match.end() :]
            continue
        break
    rest = " ".join([*forwards, text]).strip() or "(no subject)"
    return f"Re: {tag} {rest}" if reply else f"{tag} {rest}"


def display_name(author_name: str, author_address: str, list_name: str) -> str:
    """``Author via List`` with no address, no ``@`` and nothing to quote (DMARC-03)."""
    author = _clean_name(author_name) or _clean_name(author_address.rpartition("@")[0])
    return f"{author or 'A member'} via {_clean_name(list_name) or 'the list'}"


def _clean_name(text: str) -> str:
    text = _ANGLE_RE.sub(" ", without_controls(text))
    words = [w for w in text.split() if not any(at in w for at in _AT_SIGNS)]
    # "=?" would let a header parser decode an encoded-word back into an address.
    kept = " ".join(words).replace("=?", "").replace("?=", "")
    for char in ('"', "\\", "<", ">", *_AT_SIGNS):
        kept = kept.replace(char, "")
    return " ".join(kept.split())[:MAX_NAME].strip()


# ---------------------------------------------------------------- headers


def _list_id_phrase(name: str) -> str:
    clean = _clean_name(name) or "list"
    # ASCII: a quoted-string; otherwise bare words the folder turns into encoded-words.
    return f'"{clean}"' if clean.isascii() else clean


# ---------------------------------------------------------------- bodies


def _text_to_html(text: str) -> Markup:
    """Plain text as safe HTML: escaped, paragraphs, line breaks, bare links."""
    paragraphs = re.split(r"\n[ \t]*\n", text.strip("\n"))
    out: list[str] = []
    for para in paragraphs:
        lines = [_linkify(line) for line in para.split("\n")]
        out.append("<p>" + "<br>\n".join(lines) + "</p>")
    return Markup("\n".join(out))


def _linkify(line: str) -> str:
    parts: list[str] = []
    last = 0
    for match in _URL_RE.finditer(line):
        url = match.group(0).rstrip(".,;:!?")
        if url.endswith(")") and "(" not in url:
            url = url[:-1]
        start, end = match.start(), match.start() + len(url)
        parts.append(html.escape(line[last:start]))
        href = html.escape(url, quote=True)
        parts.append(f'<a href="{href}">{href}</a>')
        last = end
    parts.append(html.escape(line[last:]))
    return "".join(parts)


def _qp_line(line: bytes, placeholders: Sequence[bytes]) -> bytes:
    """Quoted-printable for one line that holds placeholders, never splitting one."""
    atoms: list[tuple[bytes, int]] = []
    rest = line
    while rest:
        hits = [(rest.find(ph), ph) for ph in placeholders if ph in rest]
        at, ph = min(hits) if hits else (len(rest), b"")
        for i in range(at):
            byte = rest[i]
            last = i == len(rest) - 1
            if (33 <= byte <= 126 and byte != 61) or (byte in (9, 32) and not last):
                atoms.append((bytes((byte,)), 1))
            else:
                atoms.append((b"=%02X" % byte, 3))
        if ph:
            atoms.append((ph, max(len(ph), MAX_TOKEN)))
            rest = rest[at + len(ph) :]
        else:
            rest = b""
    out: list[bytes] = []
    width = 0
    for i, (atom, size) in enumerate(atoms):
        limit = _QP_WIDTH if i == len(atoms) - 1 else _QP_WIDTH - 1
        if width and width + size > limit:
            out.append(b"=\r\n")
            width = 0
        out.append(atom)
        width += size
    return b"".join(out)


def _qp_encode(text: str, placeholders: Sequence[bytes]) -> bytes:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[bytes] = []
    for line in lines:
        raw = line.encode("utf-8", "replace")
        if any(ph in raw for ph in placeholders):
            out.append(_qp_line(raw, placeholders))
        else:
            encoded = binascii.b2a_qp(raw, quotetabs=False, istext=True, header=False)
            out.append(encoded.replace(b"=\n", b"=\r\n"))
    return b"\r\n".join(out)


# ---------------------------------------------------------------- prepare and render


def _split(data: bytes, placeholders: Sequence[bytes]) -> _Template:
    pattern = re.compile(b"(" + b"|".join(re.escape(p) for p in placeholders) + b")")
    pieces = pattern.split(data)
    slots = tuple((i, placeholders.index(pieces[i])) for i in range(1, len(pieces), 2))
    return _Template(tuple(pieces), slots)


def _nonce(source: PostSource, settings: CopySettings) -> str:
    seed = repr((source, settings.domain, settings.base_url)).encode("utf-8", "replace")
    return hashlib.blake2b(seed, digest_size=10).hexdigest()


def _check_settings(settings: CopySettings) -> str | None:
    if not settings.domain.isascii() or not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", settings.domain):
        raise ValueError(f"domain {settings.domain!r} must be ASCII (use the xn-- form)")
    if settings.base_url is None:
        return None
    base = settings.base_url.rstrip("/")
    if not re.fullmatch(r"https?://[A-Za-z0-9._~:/%@!$&'()*+,;=-]{1,200}", base):
        raise ValueError(f"base URL {settings.base_url!r} is not a plain http(s) URL")
    return base


def prepare_post(source: PostSource, settings: CopySettings) -> PreparedPost:
    """Everything about a post's copies that does not depend on the recipient."""
    base_url = _check_settings(settings)
    if source.created_at.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    domain = settings.domain
    nonce = _nonce(source, settings)
    ph_reply, ph_unsub = f"mgph{nonce}r", f"mgph{nonce}u"
    placeholders = (ph_reply.encode(), ph_unsub.encode())
    slug = source.list_slug
    posting = list_address(slug, domain)
    request = command_address(slug, domain)
    unsubscribe_url = f"{base_url}/u/{ph_unsub}" if base_url else None

    subject = tag_subject(
        source.subject if source.subject.strip() else source.discussion_subject,
        slug,
        reply=source.parent_message_id is not None,
    )
    message_id = msg_id(source.message_id) or (
        f"post.{source.post_id}."
        f"{hashlib.sha256(source.message_id.encode('utf-8', 'replace')).hexdigest()[:16]}"
        f"@{domain}"
    )
    threading = (
        thread_fields(source.parent_message_id, source.references)
        if source.parent_message_id is not None
        else []
    )
    boundary = f"=_mg{nonce}"

    unsubscribe = [f"<mailto:{request}?subject=unsubscribe>"]
    if unsubscribe_url:
        unsubscribe.insert(0, f"<{unsubscribe_url}>")
    sender_name = display_name(source.author_name, source.author_address, source.list_name)
    fields: list[str] = [
        fold_field("From", f'"{sender_name}" <{posting}>'),
        f"Reply-To: {reply_address(ph_reply, domain)}\r\n",
        f"To: {posting}\r\n",
        fold_field("Subject", subject),
        f"Date: {email.utils.format_datetime(source.created_at.astimezone(UTC))}\r\n",
        f"Message-ID: <{message_id}>\r\n",
    ]
    for name, ids in threading:
        fields.append(fold_words(name, ids.split()))
    fields += [
        "MIME-Version: 1.0\r\n",
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n',
        fold_field("List-Id", f"{_list_id_phrase(source.list_name)} <{slug}.{domain}>"),
        "List-Post: NO\r\n" if source.announce_only else f"List-Post: <mailto:{posting}>\r\n",
        f"List-Help: <mailto:{request}?subject=help>\r\n",
        f"List-Subscribe: <mailto:{request}?subject=subscribe>\r\n",
        fold_words("List-Unsubscribe", unsubscribe, sep=", "),
    ]
    if unsubscribe_url and unsubscribe_url.startswith("https://"):
        fields.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    fields += [
        "Precedence: list\r\n",
        "X-Auto-Response-Suppress: OOF, AutoReply\r\n",
        f"X-Loop: mailgate@{domain}\r\n",
    ]
    author = source.author_address.strip()
    if author.isascii() and msg_id(author):  # an addr-spec has the msg-id shape
        fields.append(f"X-Original-Sender: {author}\r\n")
    header_bytes = [f.encode("ascii") for f in fields]

    context = {
        "text": source.text.replace("\r\n", "\n").replace("\r", "\n"),
        "post_html": _text_to_html(source.text.replace("\r\n", "\n").replace("\r", "\n")),
        "subject": subject,
        "list_name": source.list_name,
        "list_address": posting,
        "request_address": request,
        "reply_address": reply_address(ph_reply, domain),
        "unsubscribe_url": unsubscribe_url,
        "mandatory": source.mandatory,
        "announce_only": source.announce_only,
    }
    env = template_env()
    text = env.get_template("post/body.txt").render(context).rstrip("\n") + "\n"
    page = css_inline.inline(env.get_template("post/body.html").render(context))
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            b'Content-Type: text/plain; charset="utf-8"\r\n',
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            _qp_encode(text, placeholders),
            f"\r\n--{boundary}\r\n".encode(),
            b'Content-Type: text/html; charset="utf-8"\r\n',
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            _qp_encode(page, placeholders),
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    message = _split(b"".join(header_bytes) + b"\r\n" + body, placeholders)
    signer = None
    if settings.dkim is not None:
        signer = _prepare_signer(settings.dkim, header_bytes, body, placeholders)
    return PreparedPost(domain, subject, message_id, message, signer)


def _prepare_signer(
    key: DkimKey, fields: Sequence[bytes], body: bytes, placeholders: Sequence[bytes]
) -> _Signer:
    names = [f.partition(b":")[0].decode().lower() for f in fields]
    signed = names + [n for n in names if n in OVERSIGN]
    canonical_body = _split(relaxed_body(body), placeholders)
    head = hashlib.sha256(canonical_body.pieces[0])
    rest = _Template(canonical_body.pieces[1:], tuple((i - 1, v) for i, v in canonical_body.slots))
    # Fields in h= order, bottom-up per name: each of ours appears once, so in order.
    canonical_fields = b"".join(relaxed_header(f) for f in fields)
    return _Signer(
        key=load_key(key.private_key),
        prefix=signature_prefix(key, signed),
        headers=_split(canonical_fields, placeholders),
        body_head=head,
        body_rest=rest,
    )


def _check_token(token: str) -> bytes:
    # A token goes into headers verbatim: only the base32 shape may pass (FMT-09).
    if len(token) > MAX_TOKEN or not TOKEN_RE.fullmatch(token):
        raise ValueError("malformed token")
    return token.encode("ascii")


def render_copy(prepared: PreparedPost, recipient: Recipient) -> bytes:
    """One member's copy: tokens spliced into the prepared bytes, then DKIM-signed."""
    values = (_check_token(recipient.reply_token), _check_token(recipient.unsubscribe_token))
    message = prepared.message.fill(values)
    signer = prepared.signer
    if signer is None:
        return message
    body_hash = signer.body_head.copy()
    body_hash.update(signer.body_rest.fill(values))
    bh = base64.b64encode(body_hash.digest())
    field = signature_field(signer.key, signer.prefix, signer.headers.fill(values), bh)
    return field + message


def envelope_sender(prepared: PreparedPost, recipient: Recipient) -> str:
    """The VERP return path of this copy: ``bounces+TOKEN@domain`` (BNC-01)."""
    return bounce_address(_check_token(recipient.verp_token).decode("ascii"), prepared.domain)
