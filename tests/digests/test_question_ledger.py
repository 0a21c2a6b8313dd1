"""The digest's ledger of open leadership questions: each reader sees the questions of
lists they can read, with their age, answer count and any "don't know yet" promise."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select

from digests.sending import DigestMail, build_plans, compose_for
from mailgate import questions
from mailgate.db import unit_of_work
from mailgate.directory import find_person
from mailgate.models import Digest, Followup, Person, Post, QuestionKind
from tests.conftest import DOMAIN, SECRET

CEO = "ceo@corp.example"
READER = "reader@corp.example"
OUTSIDER = "outsider@corp.example"


def digest_text(session, address: str, now: datetime) -> str:  # type: ignore[no-untyped-def]
    person = session.scalar(select(Person).where(Person.addresses.any(email=address)))
    row = Digest(id=0, person_id=person.id, local_date=now.date().isoformat())
    plan = build_plans(session, [row], now)[0]
    mail = DigestMail(domain=DOMAIN, secret=SECRET, base_url=None)
    if not plan.worth_sending and not plan.ledger:
        return ""
    raw = compose_for(plan, row, mail, (address, person.name), None)
    import email
    import email.policy

    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return str(msg.get_body(("plain",)).get_content())  # type: ignore[union-attr]


def test_ledger_lists_open_questions_a_reader_can_read(  # type: ignore[no-untyped-def]
    directory, session_factory
) -> None:
    directory.list("secret", visibility="members")
    directory.list("general")
    directory.member("secret", CEO, name="Cleo", role="owner")
    directory.member("secret", READER, name="Rita", delivery="digest")
    directory.member("general", READER, name="Rita", delivery="digest")
    directory.member("general", OUTSIDER, name="Otto", delivery="digest")
    directory.member("general", CEO, name="Cleo", role="owner")
    now = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # a Tuesday; the promise is due Friday
    with unit_of_work(session_factory) as s:
        ceo = find_person(s, CEO)
        hidden = questions.create_question(
            s,
            asker=ceo,
            spec=questions.QuestionSpec(subject="Reorg plans", text="Thoughts?", audience="secret"),
            now=now - timedelta(days=3),
            domain=DOMAIN,
        )
        shared = questions.create_question(
            s,
            asker=ceo,
            spec=questions.QuestionSpec(subject="Offsite venue", text="Where?", audience="general"),
            now=now - timedelta(hours=20),
            domain=DOMAIN,
        )
        first = s.scalar(select(Post.id).where(Post.discussion_id == hidden.discussion_id))
        s.add(
            Followup(
                question_id=hidden.id,
                post_id=first,
                promise_post_id=first,
                promised_by_id=ceo.id,
                due_date="2026-12-04",
                created_at=now,
            )
        )
        assert shared.kind is QuestionKind.QUESTION
    with session_factory() as s:
        reader = digest_text(s, READER, now)
        outsider = digest_text(s, OUTSIDER, now)
    assert "Open questions from leadership" in reader
    assert "Reorg plans (Cleo, asked 3 days ago; 0 of 1 answered; answer promised by" in reader
    assert "Offsite venue (Cleo, asked today; 0 of 2 answered)" in reader
    # The outsider cannot read "secret": its question is not even named to them.
    assert "Offsite venue" in outsider
    assert "Reorg plans" not in outsider
    assert date.fromisoformat("2026-12-04").isoformat() in reader
