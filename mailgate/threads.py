"""Threads: which discussion an inbound message belongs to (pure, THR-04).

Input: the discussion named by a verified reply token (if any), the Message-IDs the
message refers to (In-Reply-To first, then References newest first), and what we know of
those ids in the target list. Output: a :class:`ThreadChoice`.

Order of authority: the reply token, then In-Reply-To/References matching ids we issued
or stored, then a new discussion. The subject alone never joins a thread: two people
writing "Lunch?" are two discussions. :func:`message_key` is the key a stored post is
known by in its list (the same message twice is one post, DUR-02).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mailgate.trace import without_own_trace


def message_key(message_id: str | None, raw: bytes = b"") -> str:
    """DUR-02's idempotency key: the normalised Message-ID, else the bytes' digest."""
    if message_id:
        return hashlib.sha256(message_id.strip().lower().encode()).hexdigest()
    # Without a Message-ID, the bytes as the client sent them (our trace field differs
    # on every delivery, so a retry must not count as new).
    return hashlib.sha256(b"raw:" + without_own_trace(raw)).hexdigest()


@dataclass(frozen=True)
class KnownPost:
    post_id: int
    discussion_id: int


@dataclass(frozen=True)
class ThreadChoice:
    discussion_id: int | None  # None: start a new discussion
    parent_post_id: int | None
    reason: str  # "reply-token", "in-reply-to", "references", "new-discussion"


def referenced_ids(in_reply_to: Sequence[str], references: Sequence[str]) -> list[str]:
    """Ids to try, best first: In-Reply-To, then References from the newest back."""
    seen: set[str] = set()
    ordered: list[str] = []
    for mid in [*in_reply_to, *reversed(references)]:
        if mid not in seen:
            seen.add(mid)
            ordered.append(mid)
    return ordered


def assign_thread(
    *,
    token_discussion_id: int | None,
    token_parent_post_id: int | None,
    in_reply_to: Sequence[str],
    references: Sequence[str],
    known: Mapping[str, KnownPost],
) -> ThreadChoice:
    if token_discussion_id is not None:
        parent = token_parent_post_id
        # A reference into the same discussion names the exact parent more precisely.
        for mid in referenced_ids(in_reply_to, references):
            hit = known.get(mid)
            if hit is not None and hit.discussion_id == token_discussion_id:
                parent = hit.post_id
                break
        return ThreadChoice(token_discussion_id, parent, "reply-token")
    for mid in in_reply_to:
        hit = known.get(mid)
        if hit is not None:
            return ThreadChoice(hit.discussion_id, hit.post_id, "in-reply-to")
    for mid in reversed(references):
        hit = known.get(mid)
        if hit is not None:
            return ThreadChoice(hit.discussion_id, hit.post_id, "references")
    return ThreadChoice(None, None, "new-discussion")


_PREFIX_RE = re.compile(
    r"^\s*((re|fwd?|aw|wg|sv|vs|antw|r|rif|tr|res|odp|ynt)\s*(\[\d+\])?\s*[:：]\s*)+", re.I
)
_TAG_RE = re.compile(r"\[[^\[\]]{1,64}\]\s*")


def base_subject(subject: str, list_tag: str | None = None) -> str:
    """Subject without reply prefixes (any language) and our list tag; idempotent."""
    text = subject.strip()
    # Each pass removes at least one character or stops, so this ends; no fixed cap
    # (a cap made "Re: [x] " × 11 need a second call: not idempotent).
    for _ in range(len(text) + 1):
        before = text
        text = _PREFIX_RE.sub("", text)
        if list_tag:
            text = text.replace(f"[{list_tag}]", "", 1).strip()
        if text == before:
            break
    return text.strip() or "(no subject)"
