"""Facts: the small frozen values the digest stages pass along (pure).

``gather`` (database) produces :class:`MemberClock`, :class:`MemberView` and
:class:`DiscussionFacts`; ``schedule`` decides who is due; ``rank`` turns a member's view
of the discussions into a :class:`DigestPlan`; ``compose`` renders the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from mailgate.access import ListFacts, QuestionFacts


@dataclass(frozen=True)
class MemberClock:
    """When a member wants their digest."""

    person_id: int
    timezone: str  # IANA name; unknown names are treated as UTC
    digest_hour: int  # local hour, 0-23 (default 8)
    weekdays_only: bool
    last_digest_date: date | None  # the local date of their last digest


@dataclass(frozen=True)
class PostFacts:
    post_id: int
    discussion_id: int
    author_id: int | None  # None: the author was erased, or a prompt (asked by no one)
    author_name: str  # "" only for a prompt's question: it has no author to name
    author_department: str
    created_at: datetime  # aware, UTC
    text: str


@dataclass(frozen=True)
class DiscussionFacts:
    """A discussion with activity in the window, as every reader would see it."""

    discussion_id: int
    list_id: int
    list_slug: str
    list_name: str
    announce: bool  # on an announce-only (leadership) list
    subject: str
    started_by_id: int | None
    created_at: datetime
    posts: tuple[PostFacts, ...]  # posts in the window, oldest first
    total_posts: int  # all posts ever, for "N replies"
    # For a question's discussion: who may see which answer (mailgate.access decides).
    question: QuestionFacts | None = None
    question_post_id: int | None = None  # the question itself (its first post)
    list_facts: ListFacts | None = None
    likes: int = 0  # +1s (for a question: on the question itself)


@dataclass(frozen=True)
class MemberView:
    """What one member may see and has done; the only input that differs per member."""

    person_id: int
    name: str
    readable_list_ids: frozenset[int]  # decided by mailgate.access.may_read
    muted: frozenset[int]  # discussion ids
    participated: frozenset[int]  # discussions they started or posted in
    since: datetime  # their previous digest (or the window start)


@dataclass(frozen=True)
class DigestItem:
    kind: str  # "replies-to-you" | "question" | "announcement" | "lively" | "new"
    discussion_id: int
    list_slug: str
    list_name: str
    subject: str
    excerpt: str  # short, plain text
    authors: tuple[str, ...]  # names of who wrote in the window, most recent first
    replies: int  # posts in the discussion minus the first
    participants: int
    departments: int
    reason: str  # why it was chosen, for `mailgate digest preview`
    likes: int = 0  # +1s in the discussion


@dataclass(frozen=True)
class LedgerEntry:
    """An open leadership question, for the digest's short ledger."""

    list_id: int
    subject: str
    asker: str
    age_days: int
    answered: int
    asked: int
    pending_until: str | None  # an open "don't know yet, by <date>"


@dataclass(frozen=True)
class DigestPlan:
    person_id: int
    local_date: date
    items: tuple[DigestItem, ...]  # in order; item n is numbered n+1 in the mail
    others: int  # discussions with activity that did not make the cut
    left_out: tuple[tuple[int, str], ...]  # (discussion id, reason) for the preview
    ledger: tuple[LedgerEntry, ...] = ()  # open leadership questions they can read

    @property
    def worth_sending(self) -> bool:
        return bool(self.items)
