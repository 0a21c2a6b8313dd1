"""The question safety matrix, extended to every path that shows or mails something
about a post other than its copy (issue 12, item 4): likes by reply, likes from a digest
("+1 N"), the "answered" mail of a kept promise (which quotes the post promised an
answer), and the subject of a reply to a private reminder.

The review's leak: ``ask send --visibility asker-only`` to eng; one member answers;
another member, who may not see that answer, replies "+1 5" to their digest and a like
is stored on the answer; the asker promises ("don't know yet") and later answers, and
"Answered: …" goes to everyone who +1'd, quoting the private answer in full. And the
asker's private reminder subject ("Due today: your answer on …") became the subject of
a copy in the shared thread.

Same world and the same independent rules as ``test_question_visibility``: a person may
like, be told about, or be quoted a post only where they see it by name
(``expected_sees(...) == (True, True)``).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from digests.questions import QuestionMailSettings, compose_question_mail, mail_context
from mailgate import questions
from mailgate.addressing import digest_address, reply_address
from mailgate.db import unit_of_work
from mailgate.delivery import post_source
from mailgate.ingest import run_ingest
from mailgate.models import Digest, Like, Person, Post, Question, QuestionMail
from mailgate.tokens import TokenKind, make_token
from tests.conftest import DOMAIN, SECRET, build_mail
from tests.mailgate import test_question_visibility as matrix
from tests.mailgate.test_question_visibility import (
    ANSWERERS,
    ASKER,
    BYSTANDER,
    CASES,
    EVERYONE,
    OUTSIDER,
    VIEWER,
    answer_posts,
    expected_sees,
)

world = matrix.world  # the matrix's fixture: the same questions, answers and readers
AUTHOR = ANSWERERS[0]  # whose answer everybody tries to like
READERS = [VIEWER, BYSTANDER, OUTSIDER, ANSWERERS[1]]


def ids(session_factory: Any) -> dict[str, int]:
    with session_factory() as s:
        return {p.primary_address: p.id for p in s.scalars(select(Person))}


def the_answer(session_factory: Any, question_id: int, by: str) -> Post:
    with session_factory() as s:
        author = ids(session_factory)[by]
        (post,) = [p for p in answer_posts(s, question_id) if p.author_id == author]
        s.expunge(post)
        return post


def reply(gateway, session_factory, ingest_context, sender, discussion, body, **headers):  # type: ignore[no-untyped-def]
    token = make_token(SECRET, TokenKind.REPLY, ids(session_factory)[sender], discussion)
    rcpt = reply_address(token, DOMAIN)
    raw = build_mail(
        sender=sender, to=rcpt, subject=headers.pop("subject", "Re: x"), body=body, headers=headers
    )
    raw_id = gateway.submit(raw, rcpt, sender)
    run_ingest(session_factory, raw_id, ingest_context)
    return raw_id


def likers(session_factory: Any, post_id: int) -> set[str]:
    by_id = {v: k for k, v in ids(session_factory).items()}
    with session_factory() as s:
        return {by_id[p] for p in s.scalars(select(Like.person_id).where(Like.post_id == post_id))}


@pytest.mark.parametrize("case", list(CASES))
def test_a_like_by_reply_is_stored_only_where_the_liker_sees_the_answer(  # type: ignore[no-untyped-def]
    case, world, gateway, session_factory, ingest_context
) -> None:
    answer = the_answer(session_factory, world[case], AUTHOR)
    for reader in READERS:
        # In-Reply-To names the answer's Message-ID, as a copy of it would (or a guess).
        reply(
            gateway,
            session_factory,
            ingest_context,
            reader,
            answer.discussion_id,
            "+1",
            **{"In-Reply-To": f"<{answer.message_id}>"},
        )
    wanted = {r for r in READERS if expected_sees(case, r, AUTHOR) == (True, True)}
    assert likers(session_factory, answer.id) == wanted, case


@pytest.mark.parametrize("case", ["asker-only", "open"])
def test_plus_one_from_a_digest_likes_only_a_post_the_reader_may_see(  # type: ignore[no-untyped-def]
    case, world, gateway, session_factory, ingest_context
) -> None:
    people = ids(session_factory)
    with session_factory() as s:
        discussion = s.get_one(Question, world[case]).discussion_id
        first = questions.first_post_id(s, discussion)
    for reader in (BYSTANDER, VIEWER):
        with unit_of_work(session_factory) as s:
            digest = Digest(person_id=people[reader], local_date="2026-12-07", items=[discussion])
            s.add(digest)
            s.flush()
            token = make_token(SECRET, TokenKind.DIGEST, people[reader], digest.id)
        rcpt = digest_address(token, DOMAIN)
        raw_id = gateway.submit(build_mail(sender=reader, to=rcpt, body="+1 1"), rcpt, reader)
        run_ingest(session_factory, raw_id, ingest_context)
    by_id = {v: k for k, v in people.items()}
    with session_factory() as s:
        liked = {
            by_id[person]: post
            for post, person in s.execute(select(Like.post_id, Like.person_id)).all()
        }
        latest_answer = max(p.id for p in answer_posts(s, world[case]))
    # The viewer sees every answer: the latest one. The bystander, on an asker-only
    # question, sees none: the question itself is the latest post they may see.
    assert liked[VIEWER] == latest_answer
    assert liked[BYSTANDER] == (latest_answer if case == "open" else first)


def test_a_kept_promise_is_told_only_to_those_who_may_see_what_it_quotes(  # type: ignore[no-untyped-def]
    world, gateway, session_factory, ingest_context
) -> None:
    case = "asker-only"
    answer = the_answer(session_factory, world[case], AUTHOR)
    people = ids(session_factory)
    # Likes as an older version stored them (or from people who have lost access since).
    with unit_of_work(session_factory) as s:
        for reader in (BYSTANDER, VIEWER):
            s.add(Like(post_id=answer.id, person_id=people[reader]))
    reply(
        gateway,
        session_factory,
        ingest_context,
        ASKER,
        answer.discussion_id,
        "Don't know yet, I will find out by Friday.",
        **{"In-Reply-To": f"<{answer.message_id}>"},
    )
    with session_factory() as s:
        promise = s.scalars(select(Post).order_by(Post.id.desc())).first()
        assert promise is not None and promise.author_id == people[ASKER]
        promise_id = promise.message_id
    reply(
        gateway,
        session_factory,
        ingest_context,
        ASKER,
        answer.discussion_id,
        "Found out: the budget is approved.",
        **{"In-Reply-To": f"<{promise_id}>"},
    )
    with session_factory() as s:
        told = {
            m.person_id
            for m in s.scalars(select(QuestionMail).where(QuestionMail.kind == "answered"))
        }
    by_id = {v: k for k, v in people.items()}
    # The answer's author and the viewer, who see it by name; never the bystander.
    assert {by_id[p] for p in told} == {AUTHOR, VIEWER}
    # And the mail itself, composed for someone who may not see the answer, quotes nothing.
    with session_factory() as s:
        mail = s.scalars(select(QuestionMail).where(QuestionMail.kind == "answered")).first()
        assert mail is not None
        bystander = s.get_one(Person, people[BYSTANDER])
        forged = QuestionMail(
            id=0,
            key="x",
            kind="answered",
            question_id=mail.question_id,
            person_id=bystander.id,
            followup_id=mail.followup_id,
        )
        context = mail_context(s, forged, bystander)
        text = compose_question_mail(
            forged,
            bystander,
            answer.discussion_id,
            context,
            QuestionMailSettings(domain=DOMAIN, secret=SECRET),
        ).decode("utf-8", "replace")
    assert "secret-asker-only" not in text
    assert "budget is approved" not in text


def test_a_reply_to_a_private_reminder_keeps_its_subject_out_of_copies(  # type: ignore[no-untyped-def]
    world, gateway, session_factory, ingest_context
) -> None:
    case = "asker-only"
    answer = the_answer(session_factory, world[case], AUTHOR)
    reply(
        gateway,
        session_factory,
        ingest_context,
        ASKER,
        answer.discussion_id,
        "Thanks, noted.",
        subject="Re: Due today: your answer on Question asker-only",
        **{"In-Reply-To": f"<{answer.message_id}>"},
    )
    with session_factory() as s:
        post = s.scalars(select(Post).order_by(Post.id.desc())).first()
        assert post is not None and "Due today" in post.subject  # kept as written
        source, _ = post_source(s, post.id)
    assert "Due today" not in source.subject
    assert source.subject == "Question asker-only"


def test_every_reader_is_covered() -> None:
    assert set(READERS) | {ASKER, AUTHOR} <= set(EVERYONE)
