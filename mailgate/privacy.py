"""Privacy: a member's data exported (PRIV-04) and erased (PRIV-05) — admin use cases.

Input: an open :class:`~sqlalchemy.orm.Session` (the caller owns the one transaction), one
of the person's addresses, and the acting admin's name. Output: an :class:`Export` (a
JSON-ready document plus the raw messages they sent, for an mbox) or an :class:`Erasure`
(what was — or, without ``apply``, would be — removed). An unknown address raises
:class:`~mailgate.directory.DirectoryError` ("no person with address …").

**Export.** :data:`COLUMN_POLICY` names, for every table that holds person data, which
columns are exported, which are excluded and why, and which are not personal; the export
picks exactly the exported columns, and a schema-driven test fails when a column appears
that the map does not classify. Secrets are never exported: notice contexts (they carry
confirmation tokens) are left out, and robot addresses in the exported mail have their
tokens replaced by ``[redacted]``.

**Erasure decisions** (CHECKLIST PRIV-05, "Decisions taken" 5):

- Their addresses, roles, memberships, allow-list entries, likes, mutes, follows, digests,
  bounce state, pending actions, notices (and the notices' queued tasks) are deleted, and
  so are queued copies (pending or sending deliveries: the mail never goes out). Sent and
  failed delivery rows stay as counts per post, their address replaced.
- The person row stays as an empty tombstone (name "", inactive, default preferences, no
  addresses) rather than being deleted: SQLite reuses the highest deleted id, and reply,
  unsubscribe and digest tokens in old mail carry the person id, so a deleted id could
  come to mean a new member. ``created_at`` stays; alone it identifies no one.
  ``posts.author_id`` and ``discussions.started_by_id`` become NULL, so the archive and
  digests show "a former member". The label "former member #N" (N counts erasures, so it
  links to nothing else) goes into the rewritten From of their kept raw messages and the
  audit row; showing it on posts needs a column on ``posts`` (not added here).
- Posts are kept by default, their address and full name replaced; ``delete_posts`` turns
  their text into ``[removed]`` and drops their attachments' rows.
- Raw messages they sent (envelope sender, From or Sender is theirs): the one behind a kept
  post is scrubbed (address fields rewritten to ``"former member #N" <erased@invalid>``,
  every other occurrence of their address, including Received/DKIM ``i=``, and of their
  name replaced, inside quoted-printable and base64 parts too), so the original keeps its
  attachments. Every other one (commands, refusals, and all of them with
  ``delete_posts``) loses its bytes: ``raw`` becomes empty, the ``sha256`` column stays
  as the record that a message existed, and unprocessed ones are discarded.
- Everyone else's data that mentions their address (a Cc, an "Alice <alice@…> wrote:"
  attribution, a DSN) is scrubbed the same way; their name is replaced only where their
  address also appears. Address matching is whole-address and case-insensitive, so
  ``malice@corp.example`` is left alone. Known gap: the database pre-filter for other
  people's raw mail reads the bytes as text, so an address that appears *only* inside a
  base64 part of someone else's message is not found.
- The audit log is append-only (PRIV-03; triggers refuse UPDATE and DELETE), so entries
  written before the erasure keep the address: they are the record of who changed what,
  kept under GDPR Art. 17(3)(b)/(e). The new ``person.erase`` entry stores only SHA-256
  digests of the addresses.
- All of it happens in the caller's one transaction: a failure leaves nothing half-erased.
"""

from __future__ import annotations

import base64
import hashlib
import json
import mailbox
import os
import quopri
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    String,
    Table,
    Text,
    cast,
    delete,
    false,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.types import Enum as SAEnum

from mailgate.directory import get_person, normalize_email, record
from mailgate.models import (
    Address,
    AllowedPoster,
    Ask,
    AuditEntry,
    Base,
    BounceState,
    DeliveryRecord,
    DeliveryStatus,
    Digest,
    Discussion,
    Follow,
    Followup,
    Like,
    MailingList,
    Membership,
    Mute,
    Notice,
    OutboxEntry,
    PendingAction,
    Person,
    PersonRole,
    Post,
    Question,
    QuestionMail,
    QuestionViewer,
    RawMessage,
    RawStatus,
    StoredAttachment,
)

EXPORT_FORMAT = "mailgate-export/1"
ERASED_ADDRESS = "erased@invalid"
REMOVED_TEXT = "[removed]"
BATCH = 200

# ---------------------------------------------------------------- the column map


@dataclass(frozen=True)
class TablePolicy:
    exported: frozenset[str]
    excluded: dict[str, str]  # column → why it is not in the export
    not_personal: frozenset[str]  # keys and bookkeeping that say nothing about the person

    @property
    def columns(self) -> frozenset[str]:
        return self.exported | self.excluded.keys() | self.not_personal


def _policy(exported: str, not_personal: str = "id", **excluded: str) -> TablePolicy:
    return TablePolicy(frozenset(exported.split()), dict(excluded), frozenset(not_personal.split()))


_LINK = "id person_id"  # surrogate key and the link to the person the section is about

COLUMN_POLICY: dict[str, TablePolicy] = {
    "people": _policy(
        "name department active created_at "
        "timezone self_copy digest_hour digest_weekdays_only daily_summary away_until"
    ),
    "addresses": _policy("email is_primary", _LINK),
    "person_roles": _policy("role", _LINK),
    "allowed_posters": _policy("list_id", _LINK),
    "memberships": _policy("list_id role delivery created_at", _LINK),
    "discussions": _policy(
        "id list_id subject created_at",
        "started_by_id last_post_at closed",
    ),
    "posts": _policy(
        "id discussion_id list_id parent_id raw_id message_id subject text elided created_at",
        "author_id",
        message_key="a SHA-256 of the Message-ID (a derived key; hashes are not exported)",
    ),
    "attachments": _policy(
        "filename content_type size",
        "id post_id",
        sha256="a digest of the attachment, whose bytes are in the mbox",
    ),
    "raw_messages": _policy(
        "id raw mail_from rcpt_to message_id received_at status reason explanation",
        "attempts queued_at",
        sha256="a digest of the bytes, which are in the mbox",
        peer="the IP address of the upstream relay that handed us the message, not theirs",
        helo="the name the upstream relay gave, not theirs",
    ),
    "likes": _policy("post_id created_at", _LINK),
    "mutes": _policy("discussion_id created_at", _LINK),
    "follows": _policy("discussion_id created_at", _LINK),
    "notices": _policy(
        "address reason day raw_id created_at sent_at",
        context="template values, including confirmation tokens (secrets)",
    ),
    "pending_actions": _policy("action address list_id raw_id created_at done_at"),
    "deliveries": _policy(
        "post_id list_id address status attempts last_error created_at sent_at",
        "id person_id lease_until next_attempt_at",
    ),
    "bounce_states": _policy("score updated_at suspended_at last_diagnostic bounces", _LINK),
    "digests": _policy("local_date status items created_at sent_at", "id person_id lease_until"),
    "audit_log": _policy("at actor action target before after"),
    "questions": _policy(
        "id discussion_id list_id company_wide kind visibility anonymous deadline created_at "
        "closed_at",
        "asker_id max_reminders prompt_id",
    ),
    "question_viewers": _policy("question_id", _LINK),
    "asks": _policy(
        "question_id due_at sent_at answered_at reminders last_reminded_at skipped", _LINK
    ),
    "question_mails": _policy(
        "kind question_id status created_at sent_at last_error",
        "id person_id followup_id attempts lease_until",
        key="an idempotency key made of the kind and row ids, repeated in other columns",
    ),
    "followups": _policy(
        "question_id post_id promise_post_id due_date created_at resolved_post_id resolved_at",
        "id promised_by_id",
    ),
}

PROFILE_FIELDS = ("name", "department", "active", "created_at")
PREFERENCE_FIELDS = (
    "timezone",
    "self_copy",
    "digest_hour",
    "digest_weekdays_only",
    "daily_summary",
    "away_until",
)


def excluded_columns() -> dict[str, str]:
    """``table.column`` → reason, for the export's own "what is not here" section."""
    return {
        f"{table}.{column}": reason
        for table, policy in sorted(COLUMN_POLICY.items())
        for column, reason in sorted(policy.excluded.items())
    }


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class SentMessage:
    raw_id: int
    mail_from: str
    received_at: datetime
    raw: bytes


@dataclass(frozen=True)
class Export:
    email: str  # the normalised address the export was asked for
    document: dict[str, Any]
    messages: tuple[SentMessage, ...]


@dataclass(frozen=True)
class Erasure:
    label: str  # "former member #N"
    delete_posts: bool
    applied: bool
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "posts": "deleted" if self.delete_posts else "anonymised",
            "applied": self.applied,
            "counts": dict(self.counts),
        }


def address_digest(address: str) -> str:
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


# ---------------------------------------------------------------- matching and scrubbing (pure)

# Characters that, before a match, would make it the tail of a longer address. "=", "'"
# and "`" are atext too but mostly mean "i=alice@…" (DKIM), "=3Calice@…" (quoted-printable)
# or a quotation mark, so they count as a boundary.
_ATEXT = r"A-Za-z0-9!#$%&*+/?^_{|}~.-"
# Header fields that may carry a display name next to the address.
_NAMED_FIELDS = frozenset(
    b"from sender reply-to to cc bcc resent-from resent-sender resent-to resent-cc resent-bcc "
    b"x-original-from mail-followup-to mail-reply-to disposition-notification-to".split()
)
_ENCODED_PART = re.compile(rb"content-transfer-encoding:[ \t]*(?:base64|quoted-printable)", re.I)
_ROBOT_TOKEN = re.compile(r"\b(reply|bounces|confirm|digest)\+[A-Za-z2-7]{16,64}@", re.I)
_ROBOT_TOKEN_B = re.compile(rb"\b(reply|bounces|confirm|digest)\+[A-Za-z2-7]{16,64}@", re.I)
_CRLF = compat32.clone(linesep="\r\n", mangle_from_=False)


def _address_pattern(addresses: Iterable[str]) -> str:
    alternatives = "|".join(re.escape(a) for a in sorted(set(addresses), key=len, reverse=True))
    # Whole addresses only: "malice@corp.example" and "alice@corp.example.org" differ.
    return rf"(?<![{_ATEXT}])(?:{alternatives})(?![A-Za-z0-9_-])(?!\.[A-Za-z0-9])"


def _name_pattern(name: str) -> str:
    words = name.split()
    return r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)"


class Scrubber:
    """Replaces one person's addresses (and full name) in text, JSON values and raw mail."""

    def __init__(self, addresses: Iterable[str], name: str, label: str) -> None:
        self.addresses = sorted({a.strip().lower() for a in addresses if a.strip()})
        if not self.addresses:
            raise ValueError("a scrubber needs at least one address")
        self.label = label
        pattern = _address_pattern(self.addresses)
        self._addr = re.compile(pattern, re.I)
        self._addr_b = re.compile(pattern.encode(), re.I)
        # A one- or two-letter "name" would hit ordinary words; such names stay.
        clean = " ".join(name.split())
        self._name = re.compile(_name_pattern(clean), re.I) if len(clean) >= 3 else None
        self._name_b = (
            re.compile(_name_pattern(clean).encode(), re.I) if self._name is not None else None
        )
        addr_b = pattern.encode()
        display = rb'(?:"(?:[^"\\\r\n]|\\.){0,200}"|(?:[^,<>":;\r\n]|\r?\n[ \t]){0,300})'
        self._named_b = re.compile(
            rb"(?P<display>" + display + rb")[ \t]*(?:\r?\n[ \t]+)?<[ \t]*" + addr_b + rb"[ \t]*>",
            re.I,
        )

    # -- text

    def mentions(self, text: str) -> bool:
        return self._addr.search(text) is not None

    def text(self, value: str, *, own: bool = False) -> str:
        """Their addresses → erased@invalid; their name too where it is their content or
        sits next to their address."""
        mentioned = own or self.mentions(value)
        value = self._addr.sub(ERASED_ADDRESS, value)
        if mentioned and self._name is not None:
            value = self._name.sub(self.label, value)
        return value

    def value(self, value: Any, *, own: bool = False) -> Any:
        """JSON values, recursively."""
        if isinstance(value, str):
            return self.text(value, own=own)
        if isinstance(value, list):
            return [self.value(v, own=own) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v, own=own) for k, v in value.items()}
        return value

    def mentions_value(self, value: Any) -> bool:
        return self.mentions(json.dumps(value, ensure_ascii=False, default=str))

    # -- raw mail

    def mentions_raw(self, raw: bytes) -> bool:
        if self._addr_b.search(raw):
            return True
        return any(self._addr_b.search(data) for _, data in _encoded_leaves(raw)[1])

    def raw(self, raw: bytes, *, own: bool = False) -> bytes:
        """The message with their addresses and name gone; everything else byte-identical
        unless an encoded part had to be re-encoded."""
        msg, leaves = _encoded_leaves(raw)
        mentioned = own or self._addr_b.search(raw) is not None
        mentioned = mentioned or any(self._addr_b.search(d) for _, d in leaves)
        changed = False
        for part, data in leaves:
            new = self._bytes(data, mentioned)
            if new != data:
                _set_encoded_payload(part, new)
                changed = True
        if changed and msg is not None:
            raw = msg.as_bytes(policy=_CRLF)
        head, body = _split_message(raw)
        head = self._address_fields(head)
        return self._bytes(head, mentioned) + self._bytes(body, mentioned)

    def _bytes(self, data: bytes, mentioned: bool) -> bytes:
        data = self._addr_b.sub(ERASED_ADDRESS.encode(), data)
        if mentioned and self._name_b is not None:
            data = self._name_b.sub(self.label.encode(), data)
        return data

    def _address_fields(self, head: bytes) -> bytes:
        replacement = f'"{self.label}" <{ERASED_ADDRESS}>'.encode()

        def rename(match: re.Match[bytes]) -> bytes:
            whole = match.group(0)
            if not match.group("display").strip():
                return whole  # a bare <address>: the plain replacement handles it
            lead = whole[: len(whole) - len(whole.lstrip())]
            return lead + replacement

        out = []
        for fld in _header_fields(head):
            name, sep, value = fld.partition(b":")
            if sep and name.strip().lower() in _NAMED_FIELDS and self._addr_b.search(value):
                fld = name + sep + self._named_b.sub(rename, value)
            out.append(fld)
        return b"".join(out)


def _split_message(raw: bytes) -> tuple[bytes, bytes]:
    """(header block including the blank line, body)."""
    ends = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := raw.find(sep)) >= 0]
    if not ends:
        return raw, b""
    i, n = min(ends)
    return raw[: i + n], raw[i + n :]


def _header_fields(head: bytes) -> list[bytes]:
    """Header fields with their folded continuation lines (and the blank line last)."""
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _encoded_leaves(raw: bytes) -> tuple[Message | None, list[tuple[Message, bytes]]]:
    """The parsed message and its base64 / quoted-printable leaf parts, decoded."""
    if not _ENCODED_PART.search(raw):
        return None, []
    msg = message_from_bytes(raw, policy=compat32)
    leaves = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        if cte in ("base64", "quoted-printable"):
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                leaves.append((part, data))
    return msg, leaves


def _set_encoded_payload(part: Message, data: bytes) -> None:
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte == "base64":
        part.set_payload(base64.encodebytes(data).decode("ascii"))
    else:
        part.set_payload(quopri.encodestring(data).decode("ascii"))


def senders_of(raw: bytes) -> set[str]:
    """The lowercased From and Sender addresses of a raw message."""
    head, _ = _split_message(raw)
    msg = BytesHeaderParser(policy=compat32).parsebytes(head)
    values = [str(v) for v in (msg.get_all("from") or []) + (msg.get_all("sender") or [])]
    return {addr.strip().lower() for _, addr in getaddresses(values) if addr}


def redact_tokens(value: Any) -> Any:
    """Robot addresses' tokens → ``[redacted]``: an export carries no secrets (PRIV-04)."""
    if isinstance(value, str):
        return _ROBOT_TOKEN.sub(r"\1+[redacted]@", value)
    if isinstance(value, bytes):
        return _ROBOT_TOKEN_B.sub(rb"\1+[redacted]@", value)
    if isinstance(value, list):
        return [redact_tokens(v) for v in value]
    if isinstance(value, dict):
        return {k: redact_tokens(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- queries shared by both


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def _pick(row: Any, table: str, fields: Iterable[str] | None = None) -> dict[str, Any]:
    names = sorted(COLUMN_POLICY[table].exported) if fields is None else list(fields)
    return {name: _plain(getattr(row, name)) for name in names}


def _raw_mentions(session: Session, needle: str) -> ColumnElement[bool]:
    """A database pre-filter: do the raw bytes contain ``needle`` (ASCII, any case)?"""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        as_text: Any = func.encode(RawMessage.raw, "escape", type_=Text)
    elif dialect == "sqlite":
        as_text = cast(RawMessage.raw, Text)
    else:
        return true()  # unknown engine: look at every message
    return as_text.icontains(needle, autoescape=True)


@dataclass(frozen=True)
class _RawFacts:
    id: int
    sent: bool  # envelope sender, From or Sender is theirs


def _raw_candidates(
    session: Session, addresses: Sequence[str], post_raw_ids: Iterable[int]
) -> list[_RawFacts]:
    """Raw messages they sent or that mention them, oldest first."""
    conds: list[ColumnElement[bool]] = [func.lower(RawMessage.mail_from).in_(addresses)]
    post_raw_ids = sorted(set(post_raw_ids))
    if post_raw_ids:
        conds.append(RawMessage.id.in_(post_raw_ids))
    for address in addresses:
        conds.append(_raw_mentions(session, address))
        conds.append(cast(RawMessage.rcpt_to, Text).icontains(address, autoescape=True))
        conds.append(cast(RawMessage.explanation, Text).icontains(address, autoescape=True))
    ids = session.scalars(select(RawMessage.id).where(or_(*conds)).order_by(RawMessage.id)).all()
    mine = set(addresses)
    facts = []
    for chunk in _chunks(ids):
        rows = session.execute(
            select(RawMessage.id, RawMessage.raw, RawMessage.mail_from).where(
                RawMessage.id.in_(chunk)
            )
        ).all()
        for row in sorted(rows, key=lambda r: r.id):
            sent = (
                row.mail_from.strip().lower() in mine
                or row.id in post_raw_ids
                or bool(senders_of(row.raw) & mine)
            )
            facts.append(_RawFacts(row.id, sent))
    return facts


def _chunks(ids: Sequence[int], size: int = BATCH) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _lower_in(column: Any, addresses: Sequence[str]) -> ColumnElement[bool]:
    return func.lower(column).in_(addresses)


# ---------------------------------------------------------------- export (PRIV-04)


def export_person(session: Session, email: str, *, now: datetime | None = None) -> Export:
    """Everything Mailgate holds about the person owning ``email``, secrets left out."""
    person = get_person(session, email)
    pid = person.id
    addresses = sorted(a.email.lower() for a in person.addresses)
    slugs = {r.id: r.slug for r in session.execute(select(MailingList.id, MailingList.slug))}

    def with_list(row: Any, table: str) -> dict[str, Any]:
        return {"list": slugs.get(row.list_id, ""), **_pick(row, table)}

    posts = session.scalars(select(Post).where(Post.author_id == pid).order_by(Post.id)).all()
    attachments: dict[int, list[dict[str, Any]]] = {}
    for chunk in _chunks([p.id for p in posts]):
        for att in session.scalars(
            select(StoredAttachment)
            .where(StoredAttachment.post_id.in_(chunk))
            .order_by(StoredAttachment.id)
        ):
            attachments.setdefault(att.post_id, []).append(_pick(att, "attachments"))

    raws = [
        f.id
        for f in _raw_candidates(session, addresses, [p.raw_id for p in posts if p.raw_id])
        if f.sent
    ]
    sent_rows: list[RawMessage] = []
    for chunk in _chunks(raws):
        sent_rows += session.scalars(select(RawMessage).where(RawMessage.id.in_(chunk))).all()
    sent_rows.sort(key=lambda r: r.id)

    about = or_(
        *[AuditEntry.target.icontains(a, autoescape=True) for a in addresses],
        *[cast(AuditEntry.before, Text).icontains(a, autoescape=True) for a in addresses],
        *[cast(AuditEntry.after, Text).icontains(a, autoescape=True) for a in addresses],
    )

    def rows(model: Any, *where: Any) -> Sequence[Any]:
        return session.scalars(select(model).where(*where).order_by(model.id)).all()

    bounce = session.scalar(select(BounceState).where(BounceState.person_id == pid))
    document: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "generated_at": (now or datetime.now(UTC)).isoformat(),
        "profile": _pick(person, "people", PROFILE_FIELDS),
        "preferences": _pick(person, "people", PREFERENCE_FIELDS),
        "addresses": [_pick(a, "addresses") for a in person.addresses],
        "site_roles": [
            _pick(r, "person_roles") for r in rows(PersonRole, PersonRole.person_id == pid)
        ],
        "memberships": [
            with_list(m, "memberships") for m in rows(Membership, Membership.person_id == pid)
        ],
        "allowed_to_post": [
            with_list(a, "allowed_posters")
            for a in rows(AllowedPoster, AllowedPoster.person_id == pid)
        ],
        "discussions_started": [
            with_list(d, "discussions") for d in rows(Discussion, Discussion.started_by_id == pid)
        ],
        "posts": [
            {**with_list(p, "posts"), "attachments": attachments.get(p.id, [])} for p in posts
        ],
        "likes": [_pick(x, "likes") for x in rows(Like, Like.person_id == pid)],
        "mutes": [_pick(x, "mutes") for x in rows(Mute, Mute.person_id == pid)],
        "follows": [_pick(x, "follows") for x in rows(Follow, Follow.person_id == pid)],
        "deliveries": [
            with_list(d, "deliveries")
            for d in rows(DeliveryRecord, DeliveryRecord.person_id == pid)
        ],
        "bounce_state": _pick(bounce, "bounce_states") if bounce is not None else None,
        "digests": [_pick(d, "digests") for d in rows(Digest, Digest.person_id == pid)],
        "questions_asked": [
            _pick(q, "questions") for q in rows(Question, Question.asker_id == pid)
        ],
        "question_viewer_of": [
            _pick(v, "question_viewers")
            for v in rows(QuestionViewer, QuestionViewer.person_id == pid)
        ],
        "asks": [_pick(a, "asks") for a in rows(Ask, Ask.person_id == pid)],
        "question_mails": [
            _pick(m, "question_mails") for m in rows(QuestionMail, QuestionMail.person_id == pid)
        ],
        "followups_promised": [
            _pick(f, "followups") for f in rows(Followup, Followup.promised_by_id == pid)
        ],
        "notices": [
            _pick(n, "notices") for n in rows(Notice, _lower_in(Notice.address, addresses))
        ],
        "pending_actions": [
            with_list(p, "pending_actions")
            for p in rows(PendingAction, _lower_in(PendingAction.address, addresses))
        ],
        "messages": [
            {k: v for k, v in _pick(r, "raw_messages").items() if k != "raw"} for r in sent_rows
        ],
        "audit": [_pick(e, "audit_log") for e in rows(AuditEntry, about)],
        "not_included": excluded_columns(),
    }
    messages = tuple(
        SentMessage(r.id, r.mail_from, r.received_at, redact_tokens(r.raw)) for r in sent_rows
    )
    return Export(normalize_email(email), redact_tokens(document), messages)


def export_file_stem(email: str) -> str:
    """A file name for an address: no path separators, no leading dot."""
    stem = re.sub(r"[^A-Za-z0-9@._+-]", "_", email.strip().lower())
    return stem.lstrip(".") or "person"


def write_export(export: Export, out_dir: Path) -> tuple[Path, Path]:
    """``<out>/<email>.json`` and ``<out>/<email>.mbox``, readable by the owner only."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = export_file_stem(export.email)
    json_path, mbox_path = out_dir / f"{stem}.json", out_dir / f"{stem}.mbox"
    text = json.dumps(export.document, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    _write_private(json_path, (text + "\n").encode())
    _write_private(mbox_path, b"")  # mailbox.mbox appends: start from an empty file
    box = mailbox.mbox(str(mbox_path), create=False)
    try:
        for m in export.messages:
            entry = mailbox.mboxMessage(m.raw)
            entry.set_from(m.mail_from or "MAILER-DAEMON", time.gmtime(m.received_at.timestamp()))
            box.add(entry)
        box.flush()
    finally:
        box.close()
    return json_path, mbox_path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


# ---------------------------------------------------------------- erasure (PRIV-05)


def erase_person(
    session: Session,
    actor: str,
    email: str,
    *,
    delete_posts: bool = False,
    apply: bool = True,
) -> Erasure:
    """Erase the person owning ``email`` (see the module docstring for what that means).

    With ``apply=False`` nothing changes and the counts say what would be erased.
    """
    person = get_person(session, email)
    pid = person.id
    addresses = sorted({a.email.lower() for a in person.addresses})
    primary = person.primary_address.lower()
    number = 1 + (
        session.scalar(select(func.count()).where(AuditEntry.action == "person.erase")) or 0
    )
    label = f"former member #{number}"
    scrub = Scrubber(addresses, person.name, label)

    own_posts = session.execute(
        select(Post.id, Post.raw_id).where(Post.author_id == pid).order_by(Post.id)
    ).all()
    kept_raw_ids = set() if delete_posts else {p.raw_id for p in own_posts if p.raw_id}
    raws = _raw_candidates(session, addresses, [p.raw_id for p in own_posts if p.raw_id])
    queued = DeliveryRecord.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING])
    notice_ids = session.scalars(
        select(Notice.id).where(_lower_in(Notice.address, addresses))
    ).all()
    targets: list[tuple[str, Any, ColumnElement[bool]]] = [
        ("deliveries_queued", DeliveryRecord, (DeliveryRecord.person_id == pid) & queued),
        ("likes", Like, Like.person_id == pid),
        ("mutes", Mute, Mute.person_id == pid),
        ("follows", Follow, Follow.person_id == pid),
        ("digests", Digest, Digest.person_id == pid),
        ("asks", Ask, Ask.person_id == pid),
        ("question_mails", QuestionMail, QuestionMail.person_id == pid),
        ("question_viewers", QuestionViewer, QuestionViewer.person_id == pid),
        ("bounce_states", BounceState, BounceState.person_id == pid),
        ("memberships", Membership, Membership.person_id == pid),
        ("allowed_posters", AllowedPoster, AllowedPoster.person_id == pid),
        ("site_roles", PersonRole, PersonRole.person_id == pid),
        ("pending_actions", PendingAction, _lower_in(PendingAction.address, addresses)),
        (
            "queued_notice_tasks",
            OutboxEntry,
            OutboxEntry.key.in_([f"notice:{i}" for i in notice_ids]) if notice_ids else false(),
        ),
        ("notices", Notice, Notice.id.in_(notice_ids) if notice_ids else false()),
    ]
    history = (DeliveryRecord.person_id == pid) & ~queued
    counts: dict[str, int] = {
        "addresses": len(addresses),
        "deliveries_history_scrubbed": _count(session, DeliveryRecord, history),
        "posts": len(own_posts),
        "discussions_started": _count(session, Discussion, Discussion.started_by_id == pid),
    }
    for key, model, where in targets:
        counts[key] = _count(session, model, where)
    counts["raw_sent_scrubbed"] = sum(1 for r in raws if r.sent and r.id in kept_raw_ids)
    counts["raw_sent_emptied"] = sum(1 for r in raws if r.sent and r.id not in kept_raw_ids)
    counts["raw_mentions_checked"] = sum(1 for r in raws if not r.sent)
    if not apply:
        return Erasure(label, delete_posts, False, counts)

    session.flush()
    session.expunge(person)  # the rows go through SQL below; keep no stale objects around
    own_ids = [p.id for p in own_posts]
    for chunk in _chunks(own_ids):
        session.execute(update(Post).where(Post.id.in_(chunk)).values(author_id=None))
        if delete_posts:
            session.execute(
                update(Post).where(Post.id.in_(chunk)).values(text=REMOVED_TEXT, elided="")
            )
            session.execute(delete(StoredAttachment).where(StoredAttachment.post_id.in_(chunk)))
    if not delete_posts:
        _scrub_rows(session, Post.__table__, own_ids, scrub, own=True)  # type: ignore[arg-type]
    session.execute(
        update(Discussion).where(Discussion.started_by_id == pid).values(started_by_id=None)
    )
    session.execute(update(Question).where(Question.asker_id == pid).values(asker_id=None))
    session.execute(
        update(Followup).where(Followup.promised_by_id == pid).values(promised_by_id=None)
    )
    for _, model, where in targets:
        session.execute(delete(model).where(where))
    counts["raw_mentions_scrubbed"] = _scrub_raws(session, raws, kept_raw_ids, scrub)
    counts["rows_scrubbed"] = _sweep(session, scrub)
    session.execute(update(DeliveryRecord).where(history).values(address=ERASED_ADDRESS))
    session.execute(delete(Address).where(Address.person_id == pid))
    session.execute(update(Person).where(Person.id == pid).values(**TOMBSTONE))
    record(
        session,
        actor,
        "person.erase",
        f"person:sha256:{address_digest(primary)}",
        None,
        {
            "label": label,
            "addresses_sha256": [address_digest(a) for a in addresses],
            "posts": "deleted" if delete_posts else "anonymised",
            "counts": counts,
        },
    )
    session.flush()
    session.expire_all()
    return Erasure(label, delete_posts, True, counts)


# What is left of a person after erasure: nothing that says who they were.
TOMBSTONE: dict[str, Any] = {
    "name": "",
    "department": "",
    "timezone": "UTC",
    "active": False,
    "self_copy": False,
    "digest_hour": 8,
    "digest_weekdays_only": False,
    "daily_summary": False,
    "away_until": None,
}


def _count(session: Session, model: Any, where: ColumnElement[bool]) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(where)) or 0)


def _scrub_raws(
    session: Session, raws: Sequence[_RawFacts], kept: set[int], scrub: Scrubber
) -> int:
    """Rewrite the raw messages found; returns how many of other people's changed."""
    mentions = 0
    by_id = {r.id: r for r in raws}
    unprocessed = {RawStatus.RECEIVED, RawStatus.HELD, RawStatus.FAILED}
    for chunk in _chunks(sorted(by_id)):
        rows = session.execute(
            select(
                RawMessage.id,
                RawMessage.raw,
                RawMessage.mail_from,
                RawMessage.rcpt_to,
                RawMessage.explanation,
                RawMessage.status,
            ).where(RawMessage.id.in_(chunk))
        ).all()
        for row in rows:
            sent = by_id[row.id].sent
            values: dict[str, Any] = {
                "mail_from": scrub.text(row.mail_from),
                "rcpt_to": scrub.value(row.rcpt_to or []),
                "explanation": scrub.value(row.explanation or {}, own=sent),
            }
            if sent and row.id not in kept:
                values["raw"] = b""
                if RawStatus(row.status) in unprocessed:
                    values.update(status=RawStatus.DISCARDED, reason="erased")
            else:
                values["raw"] = scrub.raw(row.raw, own=sent)
            current = {
                "mail_from": row.mail_from,
                "rcpt_to": row.rcpt_to or [],
                "explanation": row.explanation or {},
                "raw": row.raw,
            }
            if all(current.get(k) == v for k, v in values.items()):
                continue
            if not sent:
                mentions += 1
            session.execute(update(RawMessage).where(RawMessage.id == row.id).values(**values))
    return mentions


def _text_columns(table: Table) -> list[Any]:
    return [
        c
        for c in table.columns
        if (isinstance(c.type, String) and not isinstance(c.type, SAEnum))
        or isinstance(c.type, JSON)
    ]


def _scrub_rows(
    session: Session, table: Table, ids: Sequence[int], scrub: Scrubber, *, own: bool
) -> int:
    columns = _text_columns(table)
    changed = 0
    for chunk in _chunks(list(ids)):
        for row in session.execute(
            select(table.c.id, *columns).where(table.c.id.in_(chunk))
        ).mappings():
            changed += _scrub_row(session, table, columns, row, scrub, own=own)
    return changed


def _scrub_row(
    session: Session,
    table: Table,
    columns: list[Any],
    row: Any,
    scrub: Scrubber,
    *,
    own: bool,
) -> int:
    # The name goes where the row is theirs or names their address next to it.
    own = own or any(scrub.mentions_value(row[c.name]) for c in columns)
    changes = {}
    for c in columns:
        value = row[c.name]
        if value is None:
            continue
        new = scrub.value(value, own=own)
        if new != value:
            changes[c.name] = new
    if changes:
        session.execute(update(table).where(table.c.id == row["id"]).values(**changes))
    return 1 if changes else 0


# Tables handled above, or never rewritten (the append-only audit log).
_NOT_SWEPT = frozenset({"audit_log", "raw_messages", "people", "addresses"})


def _sweep(session: Session, scrub: Scrubber, tables: Iterable[Table] | None = None) -> int:
    """Every remaining text or JSON value that names their address, in every table."""
    changed = 0
    for table in tables if tables is not None else Base.metadata.sorted_tables:
        if table.name in _NOT_SWEPT or "id" not in table.c:
            continue
        columns = _text_columns(table)
        if not columns:
            continue
        conds = [
            (cast(c, Text) if isinstance(c.type, JSON) else c).icontains(a, autoescape=True)
            for c in columns
            for a in scrub.addresses
        ]
        ids = session.scalars(select(table.c.id).where(or_(*conds))).all()
        changed += _scrub_rows(session, table, sorted(ids), scrub, own=False)
    return changed
