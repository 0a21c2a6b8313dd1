"""Access: who may read and who may post — decided here and nowhere else (PRIV-01).

Pure. Input: facts about a list and about the person asking (:class:`ListFacts`,
:class:`Viewer`). Output: a bool for reading, a :class:`PostDecision` for posting. Every
path (ingest, fan-out, digests, questions, CLI, HTTP) asks these two functions; the
safety-property tests enumerate visibility × role × path against them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailgate.models import PostingPolicy, Role, SiteRole, Visibility


@dataclass(frozen=True)
class ListFacts:
    id: int
    visibility: Visibility
    posting: PostingPolicy
    mandatory: bool
    archived: bool


@dataclass(frozen=True)
class Viewer:
    """A person as access control sees them; ``person_id`` None for a stranger."""

    person_id: int | None
    active: bool = False
    role: Role | None = None  # their role in this list, None if not a member
    allowed_poster: bool = False  # on the list's announce allow-list
    site_roles: frozenset[SiteRole] = frozenset()

    @property
    def is_member(self) -> bool:
        return self.role is not None


class Verdict(enum.StrEnum):
    ALLOW = "allow"
    HOLD = "hold"  # allowed once the sender proves who they are
    REFUSE = "refuse"


@dataclass(frozen=True)
class PostDecision:
    verdict: Verdict
    reason: str  # kebab-case; names the notice template on refusal


def may_read(facts: ListFacts, viewer: Viewer) -> bool:
    if viewer.person_id is None or not viewer.active:
        return False
    if facts.visibility is Visibility.COMPANY:
        return True
    return viewer.is_member


def is_privileged(facts: ListFacts) -> bool:
    """Lists where a forged From would do harm: announce-only and mandatory lists."""
    return facts.posting is PostingPolicy.ANNOUNCE or facts.mandatory


def may_post(facts: ListFacts, viewer: Viewer, *, authenticated: bool) -> PostDecision:
    if facts.archived:
        return PostDecision(Verdict.REFUSE, "list-archived")
    if viewer.person_id is None:
        return PostDecision(Verdict.REFUSE, "unknown-sender")
    if not viewer.active:
        return PostDecision(Verdict.REFUSE, "inactive-member")
    if facts.posting is PostingPolicy.MEMBERS and not viewer.is_member:
        return PostDecision(Verdict.REFUSE, "not-a-member")
    if facts.posting is PostingPolicy.ANNOUNCE and not (
        viewer.allowed_poster or viewer.role in (Role.OWNER, Role.MODERATOR)
    ):
        return PostDecision(Verdict.REFUSE, "posting-not-allowed")
    if facts.visibility is not Visibility.COMPANY and not viewer.is_member:
        # Posting to a list you cannot read would leak its replies back to you.
        return PostDecision(Verdict.REFUSE, "not-a-member")
    if is_privileged(facts) and not authenticated:
        return PostDecision(Verdict.HOLD, "held-for-authentication")
    return PostDecision(Verdict.ALLOW, "ok")
