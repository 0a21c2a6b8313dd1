"""Access: who may read and who may post — decided here and nowhere else (PRIV-01).

Pure. Input: facts about a list and about the person asking (:class:`ListFacts`,
:class:`Viewer`). Output: a bool for reading, a :class:`PostDecision` for posting. Every
path (ingest, fan-out, digests, questions, CLI, HTTP) asks these two functions; the
safety-property tests enumerate visibility × role × path against them. Whether someone
may even learn that a list exists (hidden lists: the gateway's RCPT reply, every notice)
is :func:`may_know_exists`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailgate.models import PostingPolicy, Role, SiteRole, Visibility

if TYPE_CHECKING:
    from mailgate.models import MailingList


@dataclass(frozen=True)
class ListFacts:
    id: int
    visibility: Visibility
    posting: PostingPolicy
    mandatory: bool
    archived: bool

    @classmethod
    def of(cls, ml: MailingList) -> ListFacts:
        return cls(ml.id, ml.visibility, ml.posting, ml.mandatory, ml.archived_at is not None)


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


def may_know_exists(facts: ListFacts, viewer: Viewer) -> bool:
    """Whether ``viewer`` may learn that the list exists at all: its address working, its
    name in a notice, help for it. A hidden list exists only for those who may read it;
    to everyone else it must look exactly like no list (same SMTP reply, same notices —
    none). Archiving changes nothing here: an archived hidden list stays hidden."""
    return facts.visibility is not Visibility.HIDDEN or may_read(facts, viewer)


def may_subscribe(facts: ListFacts, viewer: Viewer) -> bool:
    """Whether ``viewer`` may join by mailing "subscribe" to the -request address: a
    known person, not yet a member, on a list they could read once they joined (company
    lists; members-only and hidden lists are joined through their owner). The -request
    handler and every notice that suggests subscribing ask this same function."""
    if viewer.person_id is None or viewer.is_member:
        return False
    return may_read(facts, Viewer(person_id=viewer.person_id, active=viewer.active))


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


# ---------------------------------------------------------------- answers to questions

ANONYMITY_THRESHOLD = 5  # anonymous answers are shown only once this many people answered


class AnswerView(enum.StrEnum):
    NONE = "none"  # may not see answers at all
    ANONYMOUS = "anonymous"  # sees answers without names
    NAMED = "named"  # sees answers with their authors


@dataclass(frozen=True)
class QuestionFacts:
    """What access control needs to know about a question (see ``mailgate.questions``)."""

    asker_id: int | None
    open: bool  # visibility "open": answers are shared with the audience
    anonymous: bool
    viewers: frozenset[int]  # people the asker named (see answers, may answer for them)
    answerers: int  # distinct people who answered so far

    @property
    def leaders(self) -> frozenset[int]:
        """The asker and the people they named: their posts are replies, not answers."""
        return self.viewers | ({self.asker_id} if self.asker_id is not None else frozenset())

    def is_leader(self, person_id: int | None) -> bool:
        return person_id is not None and (person_id == self.asker_id or person_id in self.viewers)


class AnswerScope(enum.StrEnum):
    """Who, beyond the people named, sees a reply to a question."""

    NAMED_ONLY = "named-only"  # the asker and the people they named, no one else
    LIST = "list"  # also everyone who may read the list: its members
    COMPANY = "company"  # also everyone in the company (the list is open to all)


@dataclass(frozen=True)
class AnswerAudience:
    """Who sees one person's reply to a question, and how: the one decision behind
    :func:`answer_view` (enforcement on every path) and the line on every question mail
    that tells the reader who will see their reply (:func:`answer_audience_line`)."""

    scope: AnswerScope
    people: frozenset[int]  # always in (while active), whatever the scope
    anonymous: bool  # shown without names, and only once ``threshold`` people answered
    threshold: int
    facts: ListFacts

    def includes(self, viewer: Viewer) -> bool:
        if viewer.person_id is None or not viewer.active:
            return False
        if viewer.person_id in self.people:
            return True
        return self.scope is not AnswerScope.NAMED_ONLY and may_read(self.facts, viewer)

    def view(self, viewer: Viewer, answerers: int) -> AnswerView:
        if not self.includes(viewer):
            return AnswerView.NONE
        if not self.anonymous:
            return AnswerView.NAMED
        # Nobody — the asker included — sees anything until enough people answered to
        # keep each one unidentifiable; then everyone entitled sees them without names.
        return AnswerView.ANONYMOUS if answerers >= self.threshold else AnswerView.NONE


def audience_of_answers(
    question: QuestionFacts, facts: ListFacts, author_id: int | None = None
) -> AnswerAudience:
    """Who sees a reply to the question itself by ``author_id`` (None: any answerer).

    An answer reaches the leaders and, for an open question, everyone who may read the
    list. A leader's reply is never anonymised and is not one of the answers: it reaches
    whoever sees answers by name and the asker (the author of the post it answers, see
    :func:`may_see_question_post`) — only the asker while answers are anonymous."""
    if not question.open:
        scope = AnswerScope.NAMED_ONLY
    elif facts.visibility is Visibility.COMPANY:
        scope = AnswerScope.COMPANY
    else:
        scope = AnswerScope.LIST
    if question.is_leader(author_id):
        if question.anonymous:
            asker = {question.asker_id} if question.asker_id is not None else set()
            return AnswerAudience(AnswerScope.NAMED_ONLY, frozenset(asker), False, 0, facts)
        return AnswerAudience(scope, question.leaders, False, 0, facts)
    threshold = ANONYMITY_THRESHOLD if question.anonymous else 0
    return AnswerAudience(scope, question.leaders, question.anonymous, threshold, facts)


def answer_view(question: QuestionFacts, facts: ListFacts, viewer: Viewer) -> AnswerView:
    """How ``viewer`` may see the answers to ``question`` — on every path (fan-out,
    digests, summaries, CLI). Reading the list is necessary but not sufficient."""
    return audience_of_answers(question, facts).view(viewer, question.answerers)


_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _joined(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def answer_audience_line(
    audience: AnswerAudience,
    *,
    reader_id: int | None,
    names: Sequence[tuple[int, str]],
    group: str,
    size: int,
) -> str:
    """The one line above the question that says who will see the reader's reply,
    worded from ``audience`` (the decision that enforces it). ``names``: the people
    always in, as (id, name), asker first; ``group``: the list's name ("the company"
    when the scope is :attr:`AnswerScope.COMPANY`); ``size``: how many people the scope
    lets see it (the reader included)."""
    named = [name for pid, name in names if pid in audience.people and pid != reader_id]
    if audience.scope is AnswerScope.NAMED_ONLY:
        who = f"{_joined(named)} only" if named else "nobody but you"
    else:
        where = "the company" if audience.scope is AnswerScope.COMPANY else group
        who = f"everyone in {where} ({size} {'person' if size == 1 else 'people'})"
    if audience.anonymous:
        count = audience.threshold
        number = _NUMBERS[count] if count < len(_NUMBERS) else str(count)
        return f"Anonymous: shown without your name once {number} people have answered, to {who}"
    if audience.scope is AnswerScope.NAMED_ONLY:
        return f"Your reply goes to {who}"
    return f"{who[0].upper()}{who[1:]} will see your reply"


def may_see_question_post(
    question: QuestionFacts,
    facts: ListFacts,
    viewer: Viewer,
    *,
    author_id: int | None,
    is_question: bool,
    parent_author_id: int | None,
) -> bool:
    """Whether one post of a question's discussion may reach ``viewer`` with its author
    named (a fan-out copy, a digest line, a CLI listing).

    - the question itself: everyone who may read the list (or is a leader);
    - an answer: those with a NAMED answer view, and its own author;
    - a leader's reply: those who see answers by name, and the author of the post it
      answers (a reply can quote the answer, so it is no wider than that answer).
    """
    if not viewer.active or viewer.person_id is None:
        return False
    if is_question:
        return may_read(facts, viewer) or question.is_leader(viewer.person_id)
    if author_id is not None and author_id == viewer.person_id:
        return True
    if question.is_leader(author_id) and parent_author_id == viewer.person_id:
        return True
    return answer_view(question, facts, viewer) is AnswerView.NAMED


def may_ask(viewer: Viewer, *, company_wide: bool) -> bool:
    """Who may put a question to an audience: an executive (any audience), or an owner
    of the audience list (that list only). Authentication is the caller's second gate."""
    if viewer.person_id is None or not viewer.active:
        return False
    if SiteRole.EXECUTIVE in viewer.site_roles:
        return True
    return not company_wide and viewer.role is Role.OWNER


def may_answer(question: QuestionFacts, viewer: Viewer, *, asked: bool) -> PostDecision:
    """Replying to a question through one's own reply address: the people asked and the
    leaders may; the reply address already proves who is writing (it is bound to one
    person and one discussion, SPOOF-06), so no further authentication is needed."""
    if viewer.person_id is None:
        return PostDecision(Verdict.REFUSE, "unknown-sender")
    if not viewer.active:
        return PostDecision(Verdict.REFUSE, "inactive-member")
    if asked or question.is_leader(viewer.person_id):
        return PostDecision(Verdict.ALLOW, "ok")
    return PostDecision(Verdict.REFUSE, "not-asked")
