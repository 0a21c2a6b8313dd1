"""The line above every question, prompt and reminder says who will see the reply, and
it agrees with enforcement (issue 17): for each kind of question the ask and the
reminder are composed as sent, the line is read back into a set of people, and that set
is compared with what ``mailgate.questions.who_may_see`` / ``access.answer_view`` let
see a real answer, mailed through the gateway and ingested.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from digests.questions import (
    QuestionMailSettings,
    compose_question_mail,
    mail_context,
    tick,
)
from mailgate import access, questions
from mailgate.addressing import reply_address
from mailgate.db import unit_of_work
from mailgate.directory import find_person
from mailgate.ingest import run_ingest
from mailgate.models import AnswerVisibility, MailingList, Person, Post, Question, QuestionMail
from mailgate.tokens import TokenKind, make_token
from tests.conftest import DOMAIN, SECRET, build_mail

ASKER = "asker@corp.example"
VIEWER = "viewer@corp.example"
OUTSIDER = "outsider@corp.example"  # not in eng; reads "all" (open to the company)
ANSWERERS = [f"answerer{i}@corp.example" for i in range(6)]
T0 = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # a Tuesday morning (UTC members)

# name: (audience, visibility, anonymous, answers)
CASES = {
    "open": ("eng", AnswerVisibility.OPEN, False, 1),
    "asker-only": ("eng", AnswerVisibility.ASKER_ONLY, False, 1),
    "anonymous-few": ("eng", AnswerVisibility.OPEN, True, 4),
    "anonymous-enough": ("eng", AnswerVisibility.OPEN, True, 6),
    "anonymous-asker-only": ("eng", AnswerVisibility.ASKER_ONLY, True, 6),
    "company-wide": ("company", AnswerVisibility.OPEN, False, 1),
    "open-to-company-list": ("all", AnswerVisibility.OPEN, False, 1),
}
LINE = re.compile(r"^(Your reply goes to .*|Everyone in .*|Anonymous: .*)\.$", re.MULTILINE)


def name_of(address: str) -> str:
    return "Name " + address.split("@")[0].capitalize()


@pytest.fixture
def world(directory, session_factory, gateway, ingest_context):  # type: ignore[no-untyped-def]
    directory.list("eng", name="Engineering", visibility="members")
    directory.member("eng", ASKER, name=name_of(ASKER), role="owner")
    for address in [VIEWER, *ANSWERERS]:
        directory.member("eng", address, name=name_of(address))
    directory.list("all", name="Everyone", visibility="company")
    directory.member("all", ASKER, name=name_of(ASKER), role="owner")
    directory.member("all", ANSWERERS[0], name=name_of(ANSWERERS[0]))
    directory.member("all", OUTSIDER, name=name_of(OUTSIDER))
    directory.grant(ASKER, "executive")
    ctx = dataclasses.replace(ingest_context, now=lambda: T0 + timedelta(hours=1))
    made = {}
    for case, (audience, visibility, anonymous, _count) in CASES.items():
        with unit_of_work(session_factory) as s:
            q = questions.create_question(
                s,
                asker=find_person(s, ASKER),
                spec=questions.QuestionSpec(
                    subject=f"Question {case}",
                    text=f"What about {case}?",
                    audience=audience,
                    visibility=visibility,
                    anonymous=anonymous,
                    viewers=(VIEWER,) if visibility is AnswerVisibility.ASKER_ONLY else (),
                ),
                now=T0 - timedelta(minutes=5),
                domain=DOMAIN,
            )
            made[case] = (q.id, q.discussion_id)
    with unit_of_work(session_factory) as s:
        tick(s, T0, DOMAIN)  # queues every ask
    for case, (_qid, discussion) in made.items():
        for answerer in ANSWERERS[: CASES[case][3]]:
            send(gateway, session_factory, ctx, answerer, discussion, f"answer {case}")
        if CASES[case][1] is AnswerVisibility.ASKER_ONLY:
            send(gateway, session_factory, ctx, VIEWER, discussion, f"viewer {case}")
    return {case: qid for case, (qid, _d) in made.items()}


def send(gateway, session_factory, ctx, sender: str, discussion: int, body: str) -> None:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        person = find_person(s, sender)
        assert person is not None
        token = make_token(SECRET, TokenKind.REPLY, person.id, discussion)
    rcpt = reply_address(token, DOMAIN)
    raw = build_mail(sender=sender, to=rcpt, subject="Re: question", body=body)
    run_ingest(session_factory, gateway.submit(raw, rcpt, sender), ctx)


def line_of(session, question_id: int, person: Person, kind: str) -> str:  # type: ignore[no-untyped-def]
    """The audience line of the mail as composed for sending (and where it stands)."""
    mail = QuestionMail(id=0, key="x", kind=kind, question_id=question_id, person_id=person.id)
    context = mail_context(session, mail, person)
    question = session.get_one(Question, question_id)
    raw = compose_question_mail(
        mail, person, question.discussion_id, context, QuestionMailSettings(DOMAIN, SECRET)
    )
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    body = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    found = LINE.findall(body)
    assert len(found) == 1, body
    # One line above the question.
    assert body.index(found[0]) < body.index("What about"), body
    return str(found[0]) + "."


def described(session, line: str) -> tuple[set[str], bool, int | None]:  # type: ignore[no-untyped-def]
    """The people a line says will see the reply (by address, the reader excluded for
    named lines), whether without names, and the threshold it names."""
    people = {p.name: p.primary_address for p in session.scalars(select(Person))}
    anonymous = line.startswith("Anonymous:")
    threshold = None
    if anonymous:
        words = {"five": 5}
        threshold = words[re.search(r"once (\w+) people have answered", line).group(1)]  # type: ignore[union-attr]
    group = re.search(r"[Ee]veryone in (.+?) \((\d+) people\)", line)
    if group:
        name, size = group.group(1), int(group.group(2))
        if name == "the company":
            who = set(people.values())
        else:
            ml = session.scalar(select(MailingList).where(MailingList.name == name))
            who = {
                p.primary_address
                for p in session.scalars(select(Person))
                if access.may_read(access.ListFacts.of(ml), questions.viewer(session, ml, p))
            }
        assert len(who) == size, line
        return who, anonymous, threshold
    named = re.search(r"(?:goes to|to) (.+) only\.$", line)
    assert named, line
    names = re.split(r", | and ", named.group(1))
    return {people[n] for n in names}, anonymous, threshold


def enforced(session, question_id: int, author: str) -> tuple[set[str], set[str]]:  # type: ignore[no-untyped-def]
    """Who may see ``author``'s reply by name (who_may_see) and who sees the answers
    without names (access.answer_view ANONYMOUS), all people considered."""
    q = session.get_one(Question, question_id)
    everyone = list(session.scalars(select(Person).order_by(Person.id)))
    author_id = find_person(session, author).id
    post = session.scalars(
        select(Post).where(Post.discussion_id == q.discussion_id, Post.author_id == author_id)
    ).first()
    ids = {p.id: p.primary_address for p in everyone}
    by_name = {ids[i] for i in questions.who_may_see(session, post.id, ids)}
    ml = session.get_one(MailingList, q.list_id)
    facts = questions.question_facts(session, q)
    readers = questions.viewers(session, ml, everyone)
    anonymous = {
        ids[i]
        for i, r in readers.items()
        if access.answer_view(facts, access.ListFacts.of(ml), r) is access.AnswerView.ANONYMOUS
    }
    return by_name, anonymous


@pytest.mark.parametrize("kind", ["ask", "reminder"])
def test_the_line_says_exactly_who_enforcement_lets_see_the_reply(  # type: ignore[no-untyped-def]
    world, session_factory, kind
) -> None:
    author = ANSWERERS[0]
    with session_factory() as s:
        for case, qid in world.items():
            reader = find_person(s, author)
            line = line_of(s, qid, reader, kind)
            who, anonymous, threshold = described(s, line)
            by_name, without_names = enforced(s, qid, author)
            answers = CASES[case][3]
            if anonymous:
                assert CASES[case][2], (case, line)
                assert threshold == access.ANONYMITY_THRESHOLD
                assert by_name == {author}, case  # nobody else sees it with the name
                # Below the threshold nobody sees it; from then on, those the line says.
                assert without_names == (who if answers >= threshold else set()), (case, line)
            else:
                assert not CASES[case][2], (case, line)
                assert by_name - {author} == who - {author}, (case, line)
                assert without_names == set()


def test_a_named_viewer_is_told_who_sees_their_own_reply(world, session_factory) -> None:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        for case in ("asker-only", "anonymous-asker-only"):
            viewer = find_person(s, VIEWER)
            line = line_of(s, world[case], viewer, "ask")
            who, anonymous, _ = described(s, line)
            by_name, _without = enforced(s, world[case], VIEWER)
            assert not anonymous
            assert by_name - {VIEWER} == who, (case, line)


def test_the_lines_read_as_people_expect(world, session_factory) -> None:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        reader = find_person(s, ANSWERERS[0])
        lines = {case: line_of(s, qid, reader, "ask") for case, qid in world.items()}
        viewer_line = line_of(s, world["anonymous-asker-only"], find_person(s, VIEWER), "ask")
    assert lines == {
        "open": "Everyone in Engineering (8 people) will see your reply.",
        "asker-only": "Your reply goes to Name Asker and Name Viewer only.",
        "anonymous-few": "Anonymous: shown without your name once five people have "
        "answered, to everyone in Engineering (8 people).",
        "anonymous-enough": "Anonymous: shown without your name once five people have "
        "answered, to everyone in Engineering (8 people).",
        "anonymous-asker-only": "Anonymous: shown without your name once five people have "
        "answered, to Name Asker and Name Viewer only.",
        "company-wide": "Everyone in the company (9 people) will see your reply.",
        "open-to-company-list": "Everyone in the company (9 people) will see your reply.",
    }
    assert viewer_line == "Your reply goes to Name Asker only."
