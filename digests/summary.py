"""Summary: "what we heard" — a question's answers, grouped, with counts (pure).

Input: the answers (:class:`AnswerFacts`), how many people were asked, and how the
reader may see answers (``mailgate.access.AnswerView``, decided per reader by the
caller). Output: a :class:`Summary` that the template renders.

Grouping: by the answerer's department (what leaders ask for: "what did Sales say?"),
and a tally of short answers that repeat ("Yes", "+1 to remote Fridays") so a poll-like
question reads as a poll. Without names (anonymous questions) a department with fewer
than ``access.ANONYMITY_THRESHOLD`` answers is folded into "Other teams", and answers are
ordered by text rather than by time, so neither reveals who wrote what.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mailgate.access import ANONYMITY_THRESHOLD, AnswerView

SHORT_ANSWER = 40  # characters: answers this short are tallied as a poll
OTHER_TEAMS = "Other teams"
NO_DEPARTMENT = "No department"


@dataclass(frozen=True)
class AnswerFacts:
    author_id: int
    author_name: str
    department: str
    text: str
    created_at: datetime


@dataclass(frozen=True)
class ShownAnswer:
    who: str  # the author's name, or "" when anonymous
    text: str


@dataclass(frozen=True)
class AnswerGroup:
    name: str
    count: int
    answers: tuple[ShownAnswer, ...]


@dataclass(frozen=True)
class Summary:
    asked: int
    answered: int  # distinct people
    shown: bool  # False: the reader sees counts only
    groups: tuple[AnswerGroup, ...]
    tally: tuple[tuple[str, int], ...]  # repeated short answers, most common first


def _short_key(text: str) -> str:
    flat = " ".join(text.split())
    return re.sub(r"[.!?]+$", "", flat).strip().casefold()


def summarise(answers: Sequence[AnswerFacts], *, asked: int, view: AnswerView) -> Summary:
    by_person: dict[int, list[AnswerFacts]] = defaultdict(list)
    for answer in answers:
        by_person[answer.author_id].append(answer)
    answered = len(by_person)
    if view is AnswerView.NONE or not answers:
        return Summary(asked, answered, False, (), ())
    named = view is AnswerView.NAMED
    departments: dict[str, list[AnswerFacts]] = defaultdict(list)
    for answer in answers:
        departments[answer.department.strip() or NO_DEPARTMENT].append(answer)
    if not named:
        # Small groups would identify people: fold them together.
        folded: dict[str, list[AnswerFacts]] = defaultdict(list)
        for name, items in departments.items():
            people = {a.author_id for a in items}
            folded[name if len(people) >= ANONYMITY_THRESHOLD else OTHER_TEAMS].extend(items)
        departments = folded
    groups = []
    for name, items in departments.items():
        ordered = (
            sorted(items, key=lambda a: (a.created_at, a.author_id))
            if named
            else sorted(items, key=lambda a: a.text.casefold())
        )
        groups.append(
            AnswerGroup(
                name=name,
                count=len({a.author_id for a in items}),
                answers=tuple(
                    ShownAnswer(a.author_name if named else "", a.text.strip()) for a in ordered
                ),
            )
        )
    groups.sort(key=lambda g: (g.name == OTHER_TEAMS, -g.count, g.name))
    # A poll counts people: someone who says "Yes" twice is one "Yes".
    short = Counter(
        key
        for key, _author in {
            (_short_key(a.text), a.author_id)
            for a in answers
            if len(" ".join(a.text.split())) <= SHORT_ANSWER
        }
    )
    labels: dict[str, str] = {}
    for a in answers:
        labels.setdefault(_short_key(a.text), " ".join(a.text.split()).rstrip(".!?"))
    tally = tuple(
        (labels[key], count)
        for key, count in sorted(short.items(), key=lambda kv: (-kv[1], kv[0]))
        if count >= 2 and key
    )
    return Summary(asked, answered, True, tuple(groups), tally)
