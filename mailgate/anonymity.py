"""Anonymity: who may learn who wrote an anonymous answer — nobody, through routine commands.

Input: stored inbound rows (``raw_messages``) and our token secrets. Output: which of them
are anonymous answers (:func:`anonymous_raw_ids`), and the admin view of one with whatever
names its author left out (:func:`redact_raw_view`).

The database must know who answered (to stop reminding them, to honour erasure), and the
stored mail says so in its envelope, headers and ``explanation``. So every admin command
that shows stored mail (``mailgate inbound list|show|explain``) asks here first, and for an
anonymous answer prints :data:`HIDDEN` in place of the sender, the Message-ID and anything
that joins the mail to a question or a post; ``inbound show --raw`` refuses it. The one way
to a name is ``mailgate inbound explain ID --reveal-anonymous --admin EMAIL --reason TEXT``:
for a person holding the ``admin`` site role, with a reason, and only after an audit row
(who, which message, why — never the name revealed) is committed.

A stored message is an anonymous answer when

- it became a post in the discussion of an anonymous question, written by someone other
  than the asker or a viewer they named (their posts are named replies), or
- one of its recipients is such a person's reply address for that discussion — so an
  answer not processed yet, refused (the question closed) or failed is hidden too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgate.addressing import AddressKind, decode_recipient
from mailgate.models import Post, Question
from mailgate.tokens import TokenError, TokenKind, read_token

HIDDEN = "(anonymous answer)"
# What the admin view of an anonymous answer keeps: how it was handled, never by whom.
_KEPT_SUMMARY = ("id", "received_at", "status", "reason", "rcpt_to", "size", "attempts")
_KEPT_EXPLANATION = ("class", "class_reason", "reason", "classification", "automatic")
_KEPT_OUTCOME = ("recipient", "status", "reason", "decision")


def anonymous_raw_ids(
    session: Session, rows: Sequence[Any], *, domain: str, secrets: Sequence[str]
) -> set[int]:
    """The ids of those ``rows`` (with ``id`` and ``rcpt_to``) that are anonymous answers."""
    if not rows:
        return set()
    # By post: the discussion and author of every post these messages became.
    candidates: list[tuple[int | None, int, int | None]] = [
        (raw_id, discussion_id, author_id)
        for raw_id, discussion_id, author_id in session.execute(
            select(Post.raw_id, Post.discussion_id, Post.author_id).where(
                Post.raw_id.in_([r.id for r in rows])
            )
        )
    ]
    # By address: the reply addresses they were sent to (whoever the sender claims to be).
    for row in rows:
        for rcpt in row.rcpt_to or ():
            recipient = decode_recipient(rcpt, domain)
            if recipient is None or recipient.kind is not AddressKind.REPLY:
                continue
            try:
                person_id, discussion_id = read_token(secrets, TokenKind.REPLY, recipient.value)
            except TokenError:
                continue
            candidates.append((row.id, discussion_id, person_id))
    questions = _anonymous_questions(session, {d for _, d, _ in candidates})
    return {
        raw_id
        for raw_id, discussion_id, author_id in candidates
        if raw_id is not None
        and discussion_id in questions
        and author_id not in questions[discussion_id]
    }


def _anonymous_questions(session: Session, discussion_ids: Iterable[int]) -> dict[int, set[int]]:
    """Discussion id → the leaders (asker and named viewers) of its anonymous question."""
    from mailgate.questions import question_facts

    ids = set(discussion_ids)
    if not ids:
        return {}
    found = session.scalars(
        select(Question).where(Question.discussion_id.in_(ids), Question.anonymous.is_(True))
    )
    return {
        q.discussion_id: set(question_facts(session, q, count_answers=False).leaders) for q in found
    }


def redact_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The admin summary of an anonymous answer: only the fields that say how it was
    handled (a whitelist: a field added later stays hidden until someone decides
    otherwise); sender and Message-ID read :data:`HIDDEN`."""
    shown = {key: summary[key] for key in _KEPT_SUMMARY if key in summary}
    return {**shown, "mail_from": HIDDEN, "message_id": HIDDEN, "anonymous_answer": True}


def redact_raw_view(summary: dict[str, Any], explanation: dict[str, Any]) -> dict[str, Any]:
    """``mailgate inbound explain`` of an anonymous answer: :func:`redact_summary` and the
    explanation's whitelisted fields."""
    shown = redact_summary(summary)
    pending = bool(explanation.get("not_processed_yet"))
    source = (explanation.get("reading") or {}) if pending else explanation
    kept = {key: source[key] for key in _KEPT_EXPLANATION if key in source}
    kept.update({"from": HIDDEN, "message_id": HIDDEN})
    if pending:
        kept["not_processed_yet"] = True
    kept["recipients"] = [
        {key: outcome[key] for key in _KEPT_OUTCOME if key in outcome}
        for outcome in explanation.get("recipients", ())
        if isinstance(outcome, dict)
    ]
    return {**shown, "explanation": kept}
