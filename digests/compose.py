"""Compose: one member's digest as the bytes of an RFC 5322 message (pure).

Input: a :class:`~digests.facts.DigestPlan` (the ranked items, from ``rank``) and a
:class:`DigestContext` (who it goes to, the digest's own reply address, one reply address
per item, the unsubscribe URL, our domain). Output: the message bytes: CRLF, 7-bit
(quoted-printable or base64, whichever is shorter per part), headers cleaned, folded and
RFC 2047-encoded by ``mailgate.headers`` (the step every composed field passes),
``multipart/alternative`` with a text part and an HTML part that say the same thing,
from ``templates/digest/``.

Decisions (CHECKLIST FMT-02, THR-03, LOOP-03, LIST-03, DMARC-04):

- From ``"Mailgate" <digest@domain>``: our own address on our own domain, so DKIM aligns
  and no DMARC mitigation is needed (DMARC-04). Mail to the bare ``digest@`` is refused
  by the gateway; Reply-To is the member's ``digest+TOKEN@`` address, where one-line
  commands (``+1 3``, ``mute 2``, ``follow 5``, ``every eng``, ``digest eng``) land.
- Each digest starts its own thread: a fresh ``<digest.ID.RANDOM@domain>`` Message-ID, no
  In-Reply-To, no References (THR-03). A reply to one item goes through that item's
  mailto link (``reply+TOKEN@``, subject ``Re: [slug] subject`` like the list copies), so
  it lands in that discussion and threads with the copies in the reader's mailbox.
- ``Auto-Submitted: auto-generated`` (RFC 3834 §5, LOOP-03) and ``Precedence: bulk``:
  RFC 3834 only defines the former, but vacation programs that predate it (vacation(1),
  many Sieve and helpdesk setups) look only at Precedence, and every out-of-office they
  skip is one less "command not understood" round trip on the digest address.
  ``X-Auto-Response-Suppress: All`` does the same for Exchange.
- ``List-Unsubscribe``: the https URL first (one-click, RFC 8058, with
  ``List-Unsubscribe-Post`` only when the URL is https), then
  ``mailto:digest+TOKEN@domain?subject=unsubscribe``. The mailto goes to the digest's own
  address rather than a list's ``-request`` address because the token authenticates the
  member (LIST-07: a forged From cannot stop someone else's digest) and because the
  request commands act on one list, while this stops the digest. The digest command
  handler must accept ``unsubscribe`` (in the subject; mailto clients send no body).
- Size: Gmail clips messages over 102 KB. The message is rendered with excerpts of at most
  :data:`MAX_EXCERPT` characters; if it is still over :data:`MAX_BYTES` (leaving room for
  the DKIM-Signature and Received fields added later) the excerpts are halved, and as a
  last resort items are dropped from the end and counted in "…and N more".
- Speed: the HTML template's CSS is inlined into its *source* once, when it is loaded
  (:func:`_inline_source`), so a digest costs two jinja renders and no CSS work.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.headerregistry import Address
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import quote

import css_inline
import jinja2

from digests.facts import DigestItem, DigestPlan, LedgerEntry
from mailgate.addressing import AddressKind, decode_recipient
from mailgate.copies import tag_subject
from mailgate.folding import fold_words
from mailgate.headers import fold_field
from mailgate.notices import template_env

MAX_BYTES = 96_000  # Gmail clips at 102 KB; DKIM and Received fields come on top
MAX_EXCERPT = 400  # characters of excerpt per item before any trimming
MIN_EXCERPT = 40  # below this, drop items instead of shortening excerpts further
MAX_SUBJECT = 200  # characters of an item's subject
MAX_NAME = 64  # characters of one person's or list's name
HTML_EXCERPT = 150  # characters of excerpt in the HTML part: about two lines on a phone
SHOWN_AUTHORS = 2  # "Ana, Bo and 3 others"
TEXT_WIDTH = 72

HEADINGS = {
    "replies-to-you": "Replies to you",
    "question": "Questions for you",
    "announcement": "From leadership",
    "lively": "Lively discussions",
    "new": "New discussions",
}
OTHER_HEADING = "More conversations"

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ADDR_RE = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_PLAIN_NAME_RE = re.compile(r"[A-Za-z0-9' -]{0,60}")  # no quoting or encoding needed
_UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp"})
_URL_RE = re.compile(r"https?://[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]{1,1500}")


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class DigestContext:
    domain: str  # the list domain, ASCII (xn-- form)
    member_name: str
    member_address: str  # ASCII addr-spec
    local_date: date
    digest_id: int
    digest_reply_address: str  # digest+TOKEN@domain: replies to the digest carry commands
    item_reply_addresses: tuple[str, ...]  # reply+TOKEN@domain per item, as plan.items
    unsubscribe_url: str | None  # https one-click URL, or None
    # eng-request@domain of a list they take by digest, where "nomail" stops it; None when
    # they have none (a daily summary): every other change is a reply to the digest.
    settings_address: str | None
    company_name: str = "Mailgate"  # the heading: "Acme digest · Tuesday 3 March 2026"


class _Templates(NamedTuple):
    subject: jinja2.Template
    text: jinja2.Template
    html: jinja2.Template


# ---------------------------------------------------------------- templates


_JINJA_RE = re.compile(r"\{#.*?#\}|\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_MARK = "xmgjq"  # placeholder prefix; lowercase letters survive HTML parsing unchanged
_MARK_RE = re.compile(rf"<!--{_MARK}(\d+)-->|{_MARK}(\d+)z")
_INLINER = css_inline.CSSInliner(keep_at_rules=True, minify_css=True)


def _inline_source(source: str, name: str) -> str:
    """Inline the template's CSS into its jinja source, keeping the jinja tags intact.

    Each ``{{ expression }}`` becomes a word (valid in text, attributes and <title>) and
    each ``{% statement %}`` an HTML comment (valid between table rows, where text would
    be moved out of the table); css-inline then runs on that HTML and the tags are put
    back. If parsing moved or dropped any tag, the template is refused at load time.
    """
    tags: list[str] = []
    out: list[str] = []
    last = 0
    state = _HtmlState()
    for match in _JINJA_RE.finditer(source):
        static = source[last : match.start()]
        state.feed(static)
        out.append(static)
        last = match.end()
        tag = match.group(0)
        if tag.startswith("{#"):
            continue
        if tag.startswith("{%"):
            if state.in_tag or state.in_comment:
                raise ValueError(f"{name}: a jinja statement inside a tag or comment: {tag}")
            out.append(f"<!--{_MARK}{len(tags)}-->")
        else:
            if state.in_comment:
                raise ValueError(f"{name}: a jinja expression inside a comment: {tag}")
            out.append(f"{_MARK}{len(tags)}z")
        tags.append(tag)
    out.append(source[last:])
    inlined = _INLINER.inline("".join(out))
    seen: list[int] = []

    def restore(match: re.Match[str]) -> str:
        index = int(match.group(1) or match.group(2))
        seen.append(index)
        return tags[index]

    result = _MARK_RE.sub(restore, inlined)
    # The parser may reorder attributes within a tag, nothing else: every tag is back
    # exactly once and each one sits between the same two statements as before.
    statements = [i for i, tag in enumerate(tags) if tag.startswith("{%")]
    before = [sum(1 for s in statements if s < i) for i in range(len(tags))]
    placed: list[int] = []
    count = 0
    for index in seen:
        if tags[index].startswith("{%"):
            count += 1
        placed.append(count - (1 if tags[index].startswith("{%") else 0))
    if (
        sorted(seen) != list(range(len(tags)))
        or [i for i in seen if tags[i].startswith("{%")] != statements
        or any(before[index] != at for index, at in zip(seen, placed, strict=True))
    ):
        raise ValueError(f"{name}: jinja tags moved while inlining CSS (check the markup)")
    return result


class _HtmlState:
    """Just enough of an HTML tokenizer to tell text from tags and comments."""

    def __init__(self) -> None:
        self.in_tag = False
        self.in_comment = False
        self.quote = ""

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            char = text[i]
            if self.in_comment:
                end = text.find("-->", i)
                if end < 0:
                    return
                self.in_comment = False
                i = end + 3
                continue
            if self.in_tag:
                if self.quote:
                    if char == self.quote:
                        self.quote = ""
                elif char in "\"'":
                    self.quote = char
                elif char == ">":
                    self.in_tag = False
            elif text.startswith("<!--", i):
                self.in_comment = True
                i += 4
                continue
            elif (char == "<" and text[i + 1 : i + 2].isalpha()) or text.startswith(
                ("</", "<!"), i
            ):
                self.in_tag = True
            i += 1


class _InliningLoader(jinja2.BaseLoader):
    """Templates from the ``templates`` package, with CSS inlined into ``*.html`` sources."""

    def __init__(self) -> None:
        self._inner = jinja2.PackageLoader("templates", "")

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, Any, Any]:
        source, filename, uptodate = self._inner.get_source(environment, template)
        if template.endswith(".html"):
            source = _inline_source(source, template)
        return source, filename, uptodate


@lru_cache(maxsize=1)
def _templates() -> _Templates:
    # Template objects are cached here rather than looked up per digest: the
    # environment's own lookup stats the file on every call (auto_reload).
    html_env = jinja2.Environment(
        loader=_InliningLoader(),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        keep_trailing_newline=True,
    )
    text_env = template_env()
    return _Templates(
        subject=text_env.get_template("digest/subject.txt"),
        text=text_env.get_template("digest/body.txt"),
        html=html_env.get_template("digest/body.html"),
    )


# ---------------------------------------------------------------- cleaning values


def _clean(text: str, limit: int) -> str:
    """One line of display text: no control characters, single spaces, at most ``limit``."""
    if not text.isprintable():  # rare; isprintable() is the fast check
        # Cc covers CR and LF (FMT-09); Zl/Zp are line breaks; Cf holds bidi overrides.
        text = "".join(" " if unicodedata.category(c) in _UNSAFE else c for c in text)
    return _shorten(" ".join(text.split()), limit)


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:") + "…"


def _wrap(text: str, width: int) -> list[str]:
    """Greedy word wrap of one clean line (textwrap is ten times slower for no gain here);
    a word longer than the width, such as a URL, stays whole on its own line."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return lines


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _who(authors: Sequence[str]) -> str:
    names: list[str] = []
    for author in authors:
        name = _clean(author, MAX_NAME)
        if name and name not in names:
            names.append(name)
    if len(names) <= SHOWN_AUTHORS + 1:
        if len(names) <= 1:
            return "".join(names)
        return ", ".join(names[:-1]) + " and " + names[-1]
    others = len(names) - SHOWN_AUTHORS
    return ", ".join(names[:SHOWN_AUTHORS]) + f" and {_plural(others, 'other', 'others')}"


def _counts_label(replies: int, likes: int) -> str:
    label = "no replies yet" if replies <= 0 else _plural(replies, "reply", "replies")
    return label + (f" · {_plural(likes, '+1', '+1s')}" if likes > 0 else "")


def _date_label(day: date) -> str:
    # Fixed English names: strftime would follow the process locale.
    return f"{_DAYS[day.weekday()][:3]} {day.day} {_MONTHS[day.month - 1][:3]}"


def _long_date(day: date) -> str:
    return f"{_DAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]} {day.year}"


def _check_address(address: str, what: str) -> str:
    if not (address.isascii() and len(address) <= 254 and _ADDR_RE.fullmatch(address)):
        raise ValueError(f"{what} {address!r} is not a plain ASCII address")
    return address


def _check_context(plan: DigestPlan, ctx: DigestContext) -> None:
    if not ctx.domain.isascii() or not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", ctx.domain):
        raise ValueError(f"domain {ctx.domain!r} must be ASCII (use the xn-- form)")
    if not plan.items:
        raise ValueError("an empty plan is not sent (DigestPlan.worth_sending)")
    if len(ctx.item_reply_addresses) != len(plan.items):
        raise ValueError("item_reply_addresses must match plan.items one to one")
    _check_address(ctx.member_address, "member address")
    if ctx.settings_address is not None:
        _check_address(ctx.settings_address, "settings address")
    expected = [(ctx.digest_reply_address, AddressKind.DIGEST)]
    expected += [(address, AddressKind.REPLY) for address in ctx.item_reply_addresses]
    for address, kind in expected:
        decoded = decode_recipient(_check_address(address, "reply address"), ctx.domain)
        if decoded is None or decoded.kind != kind:
            raise ValueError(f"{address!r} is not a {kind} address on {ctx.domain}")
    url = ctx.unsubscribe_url
    if url is not None and not _URL_RE.fullmatch(url):
        raise ValueError(f"unsubscribe URL {url!r} is not a plain http(s) URL")


# ---------------------------------------------------------------- the view


def _item_view(number: int, item: DigestItem, reply_address: str, excerpt_limit: int) -> dict:
    subject = _clean(item.subject, MAX_SUBJECT) or "(no subject)"
    list_name = _clean(item.list_name, MAX_NAME) or item.list_slug
    meta = " · ".join(part for part in (list_name, _who(item.authors)) if part)
    meta += " · " + _counts_label(item.replies, item.likes)
    excerpt = _clean(item.excerpt, excerpt_limit) if excerpt_limit else ""
    # The subject list copies carry, so the reply threads with them in the reader's mailbox.
    reply_subject = tag_subject(subject, item.list_slug, reply=True)
    href = f"mailto:{reply_address}?subject={quote(reply_subject, safe=':')}"
    return {
        "number": number,
        "kind": item.kind,
        "subject": subject,
        "list_name": list_name,
        "meta": meta,
        "excerpt": excerpt,
        "short_excerpt": _shorten(excerpt, HTML_EXCERPT),
        "excerpt_lines": _wrap(excerpt, TEXT_WIDTH - 3),
        "reply_href": href,
        "reply_label": f"Reply to {number}. {subject}",
    }


def _commands(count: int, slug: str) -> list[dict[str, str]]:
    # Examples name real items and a real list of this digest, so they can be copied.
    def pick(n: int) -> int:
        return min(n, count)

    # Explanations short enough for one line on a phone.
    return [
        {"example": f"+1 {pick(3)}", "explanation": f"add your +1 to {pick(3)}"},
        {"example": f"mute {pick(2)}", "explanation": f"stop hearing about {pick(2)}"},
        {"example": f"follow {pick(5)}", "explanation": f"get each new message of {pick(5)}"},
        {"example": f"every {slug}", "explanation": f"get {slug} mail as it is sent"},
        {"example": f"digest {slug}", "explanation": f"get {slug} only in this digest"},
    ]


def _ledger_line(entry: LedgerEntry) -> str:
    age = (
        "asked today"
        if entry.age_days == 0
        else f"asked {_plural(entry.age_days, 'day', 'days')} ago"
    )
    line = f"{_clean(entry.subject, 120)} ({_clean(entry.asker, MAX_NAME)}, {age}; "
    line += f"{entry.answered} of {entry.asked} answered"
    if entry.pending_until:
        line += f"; answer promised by {entry.pending_until}"
    return line + ")"


def _view(plan: DigestPlan, ctx: DigestContext, excerpt_limit: int, keep: int) -> dict:
    items = plan.items[:keep]
    others = plan.others + (len(plan.items) - keep)
    groups: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        view = _item_view(index + 1, item, ctx.item_reply_addresses[index], excerpt_limit)
        heading = HEADINGS.get(item.kind, OTHER_HEADING)
        # A new heading whenever the kind changes, so numbers always run 1, 2, 3 …
        if not groups or groups[-1]["heading"] != heading:
            groups.append({"heading": heading, "entries": []})
        groups[-1]["entries"].append(view)
    count_label = _plural(len(items), "conversation", "conversations")
    date_label = _date_label(ctx.local_date)
    company = _clean(ctx.company_name, MAX_NAME) or "Mailgate"
    name = _clean(ctx.member_name, MAX_NAME)
    subjects = [view["subject"] for group in groups for view in group["entries"]]
    slug = items[0].list_slug
    return {
        "date_label": date_label,
        "count_label": count_label,
        "subject": f"Your Mailgate digest for {date_label}: {count_label}",
        "title": f"{company} digest",
        "long_date": _long_date(ctx.local_date),
        "masthead": f"{company} digest · {_long_date(ctx.local_date)}",
        "greeting": f"Hi {name}," if name else "Hello,",
        "intro": f"{count_label} since your last digest.",
        "preheader": _shorten(" · ".join(subjects), 140),
        "groups": groups,
        "more_label": (
            f"…and {_plural(others, 'more conversation', 'more conversations')} in your lists."
            if others > 0
            else ""
        ),
        "commands": _commands(len(items), slug),
        "ledger": [_ledger_line(entry) for entry in plan.ledger],
        "member_address": ctx.member_address,
        "settings_address": ctx.settings_address or "",
        "settings_slug": (ctx.settings_address or "").split("@")[0].removesuffix("-request"),
        "unsubscribe_url": ctx.unsubscribe_url,
    }


# ---------------------------------------------------------------- encoding


def _encode_part(text: str, subtype: str) -> bytes:
    """A 7-bit body part: quoted-printable, or base64 when that is shorter (mostly
    non-Latin text, where quoted-printable triples every byte)."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8", "replace")
    qp = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    body = qp.replace(b"\n", b"\r\n")
    encoding = "quoted-printable"
    if len(qp) > len(data) * 4 // 3 + len(data) // 57 + 8:
        body = base64.encodebytes(data).replace(b"\n", b"\r\n").rstrip(b"\r\n")
        encoding = "base64"
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
    ).encode("ascii") + body


def _headers(ctx: DigestContext, subject: str, now: datetime, boundary: str) -> bytes:
    name = _clean(ctx.member_name, MAX_NAME)
    if _PLAIN_NAME_RE.fullmatch(name):  # the usual case; the folder costs ~0.2 ms a field
        to = f"To: {name} <{ctx.member_address}>\r\n" if name else f"To: {ctx.member_address}\r\n"
    else:
        to = fold_field("To", str(Address(display_name=name, addr_spec=ctx.member_address)))
    message_id = f"digest.{ctx.digest_id}.{secrets.token_hex(8)}@{ctx.domain}"
    unsubscribe = [f"<mailto:{ctx.digest_reply_address}?subject=unsubscribe>"]
    if ctx.unsubscribe_url:
        unsubscribe.insert(0, f"<{ctx.unsubscribe_url}>")
    fields = [
        f'From: "Mailgate" <digest@{ctx.domain}>\r\n',
        f"Reply-To: {ctx.digest_reply_address}\r\n",
        to,
        fold_field("Subject", subject),
        f"Date: {email.utils.format_datetime(now.astimezone(UTC))}\r\n",
        f"Message-ID: <{message_id}>\r\n",
        "MIME-Version: 1.0\r\n",
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n',
        "Auto-Submitted: auto-generated\r\n",
        "Precedence: bulk\r\n",
        "X-Auto-Response-Suppress: All\r\n",
        fold_words("List-Unsubscribe", unsubscribe, sep=","),
    ]
    if ctx.unsubscribe_url and ctx.unsubscribe_url.startswith("https://"):
        fields.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    fields += [f"X-Loop: mailgate@{ctx.domain}\r\n", f"X-Mailgate-Digest: {ctx.digest_id}\r\n"]
    return "".join(fields).encode("ascii")


def _render(view: dict, templates: _Templates) -> tuple[str, str, str]:
    subject = " ".join(templates.subject.render(view).split())
    text = templates.text.render(view).strip("\n") + "\n"
    page = templates.html.render(view)
    return subject, text, page


# ---------------------------------------------------------------- compose


def compose_digest(plan: DigestPlan, ctx: DigestContext, *, now: datetime | None = None) -> bytes:
    """The full RFC 5322 message of one member's digest.

    ``now`` is the Date field (default: the current time); the Message-ID is random.
    Raises ValueError for an empty plan, or when an address, URL or the domain in ``ctx``
    is malformed.
    """
    _check_context(plan, ctx)
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    templates = _templates()
    boundary = f"=_mgd{secrets.token_hex(10)}"
    excerpt_limit, keep = MAX_EXCERPT, len(plan.items)
    while True:
        subject, text, page = _render(_view(plan, ctx, excerpt_limit, keep), templates)
        message = b"".join(
            [
                _headers(ctx, subject, now, boundary),
                b"\r\n",
                f"--{boundary}\r\n".encode(),
                _encode_part(text, "plain"),
                f"\r\n--{boundary}\r\n".encode(),
                _encode_part(page, "html"),
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        if len(message) <= MAX_BYTES or (keep <= 1 and excerpt_limit == 0):
            return message
        # Too big for Gmail: shorter excerpts first, then fewer items.
        if excerpt_limit > MIN_EXCERPT:
            excerpt_limit //= 2
        elif keep > 1:
            keep = max(1, keep * 3 // 4)
        else:
            excerpt_limit = 0
