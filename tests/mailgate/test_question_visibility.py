"""Visibility of answers is a safety property: an asker-only or anonymous answer never
reaches anyone it should not, by any path — fan-out, digest, summary, CLI.

For each kind of question, answers are mailed through the real gateway and ingested;
then every path is asked what each person receives, and the answers' secret texts and
their authors' names are looked for. Expected visibility is stated here from the issue's
rules, independently of ``mailgate.access``:

- open: everyone asked (and the asker) sees answers with names;
- asker-only: the asker and the named viewer see them; others only their own;
- anonymous (open or asker-only): nobody sees any answer until 5 people answered; then
  those entitled see them without names.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from digests.questions import (
    QuestionMailSettings,
    compose_question_mail,
    mail_context,
    summary_recipients,
)
from digests.sending import DigestMail, compose_for, preview
from mailgate import questions
from mailgate.addressing import reply_address
from mailgate.db import unit_of_work
from mailgate.delivery import fan_out
from mailgate.directory import find_person
from mailgate.ingest import run_ingest
from mailgate.models import (
    AnswerVisibility,
    DeliveryRecord,
    Person,
    Post,
    Question,
    QuestionMail,
)
from mailgate.tokens import TokenKind, make_token
from tests.conftest import DOMAIN, SECRET, build_mail

ASKER = "asker@corp.example"
VIEWER = "viewer@corp.example"
BYSTANDER = "bystander@corp.example"
OUTSIDER = "outsider@corp.example"  # not a member of the members-only list
ANSWERERS = [f"answerer{i}@corp.example" for i in range(6)]
EVERYONE = [ASKER, VIEWER, BYSTANDER, OUTSIDER, *ANSWERERS]
NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)  # answers come in now; questions were asked before

CASES = {
    # name: (visibility, anonymous, number of answerers)
    "open": (AnswerVisibility.OPEN, False, 3),
    "asker-only": (AnswerVisibility.ASKER_ONLY, False, 3),
    "anonymous-few": (AnswerVisibility.OPEN, True, 4),
    "anonymous-enough": (AnswerVisibility.OPEN, True, 6),
    "anonymous-asker-only": (AnswerVisibility.ASKER_ONLY, True, 6),
}


def secret(case: str, answerer: str) -> str:
    return f"secret-{case}-{answerer.split('@')[0]}"


def name_of(address: str) -> str:
    return "Name " + address.split("@")[0].capitalize()


def expected_sees(case: str, reader: str, answerer: str) -> tuple[bool, bool]:
    """(sees the answer's text, sees the author's name) — the issue's rules."""
    visibility, anonymous, count = CASES[case]
    if reader == answerer:
        return (True, True)  # their own answer, by their own name, is no leak
    if not entitled(case, reader):
        return (False, False)
    if anonymous:
        return (count >= 5, False)
    return (True, True)


def entitled(case: str, reader: str) -> bool:
    """Sees others' answers in some form (the rules before the anonymity threshold)."""
    visibility, anonymous, count = CASES[case]
    allowed = reader in (ASKER, VIEWER) or (
        visibility is AnswerVisibility.OPEN and reader != OUTSIDER
    )
    return allowed and (not anonymous or count >= 5)


@pytest.fixture
def world(directory, session_factory, gateway, ingest_context):  # type: ignore[no-untyped-def]
    directory.list("eng", visibility="members")
    directory.member("eng", ASKER, name=name_of(ASKER), role="owner")
    for address in [VIEWER, BYSTANDER, *ANSWERERS]:
        directory.member("eng", address, name=name_of(address))
    directory.member("eng", OUTSIDER, name=name_of(OUTSIDER), delivery="digest")
    directory.list("other")
    directory.member("other", OUTSIDER, name=name_of(OUTSIDER), delivery="digest")
    # The outsider reads "other" by digest, not eng: they exist and get digests.
    with unit_of_work(session_factory) as s:
        from mailgate.models import MailingList, Membership

        eng = s.scalar(select(MailingList).where(MailingList.slug == "eng"))
        outsider = find_person(s, OUTSIDER)
        s.execute(
            Membership.__table__.delete().where(
                Membership.list_id == eng.id, Membership.person_id == outsider.id
            )
        )

    now = NOW
    ctx = dataclasses.replace(ingest_context, now=lambda: NOW)
    made: dict[str, int] = {}
    for case, (visibility, anonymous, count) in CASES.items():
        with unit_of_work(session_factory) as s:
            asker = find_person(s, ASKER)
            q = questions.create_question(
                s,
                asker=asker,
                spec=questions.QuestionSpec(
                    subject=f"Question {case}",
                    text=f"What do you think about {case}?",
                    audience="eng",
                    visibility=visibility,
                    anonymous=anonymous,
                    viewers=(VIEWER,),
                ),
                now=now - timedelta(hours=2),
                domain=DOMAIN,
            )
            made[case] = q.id
            discussion = q.discussion_id
            ids = {p.primary_address: p.id for p in s.scalars(select(Person))}
        for answerer in ANSWERERS[:count]:
            token = make_token(SECRET, TokenKind.REPLY, ids[answerer], discussion)
            rcpt = reply_address(token, DOMAIN)
            raw = build_mail(
                sender=answerer, to=rcpt, subject=f"Re: {case}", body=secret(case, answerer)
            )
            raw_id = gateway.submit(raw, rcpt, answerer)
            run_ingest(session_factory, raw_id, ctx)
    return made


def answer_posts(session, question_id: int) -> list[Post]:  # type: ignore[no-untyped-def]
    q = session.get_one(Question, question_id)
    first = questions.first_post_id(session, q.discussion_id)
    return list(
        session.scalars(select(Post).where(Post.discussion_id == q.discussion_id, Post.id != first))
    )


def test_every_answer_was_stored(world, session_factory) -> None:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        for case, qid in world.items():
            texts = sorted(p.text.strip() for p in answer_posts(s, qid))
            assert texts == sorted(secret(case, a) for a in ANSWERERS[: CASES[case][2]])


def test_fan_out_sends_answers_only_to_those_entitled_by_name(  # type: ignore[no-untyped-def]
    world, session_factory
) -> None:
    for case, qid in world.items():
        with unit_of_work(session_factory) as s:
            posts = answer_posts(s, qid)
            for post in posts:
                fan_out(s, post.id)
        with session_factory() as s:
            ids = {p.id: p.primary_address for p in s.scalars(select(Person))}
            for post in answer_posts(s, qid):
                got = {
                    ids[pid]
                    for pid in s.scalars(
                        select(DeliveryRecord.person_id).where(DeliveryRecord.post_id == post.id)
                    )
                }
                author = ids[post.author_id]
                # A copy shows the author: only readers who may see it by name get one
                # (and never the author, who wrote it).
                wanted = {r for r in EVERYONE if r != author and expected_sees(case, r, author)[1]}
                # One copy per answer, not the whole audience: answers reach the leaders.
                wanted &= {ASKER, VIEWER}
                assert got == wanted, (case, author, got, wanted)


def test_digests_show_only_what_each_reader_may_see(  # type: ignore[no-untyped-def]
    world, session_factory
) -> None:
    now = NOW + timedelta(hours=1)
    mail = DigestMail(domain=DOMAIN, secret=SECRET, base_url=None)
    with session_factory() as s:
        people = {p.primary_address: p for p in s.scalars(select(Person))}
        for reader in EVERYONE:
            person = people[reader]
            plan, row = preview(s, person.id, now.date(), now)
            text = (
                compose_for(plan, row, mail, (reader, person.name), None).decode("ascii", "replace")
                if plan.worth_sending
                else ""
            )
            flat = email.message_from_string(text, policy=email.policy.default) if text else None
            body = flat.get_body(("plain",)).get_content() if flat is not None else ""  # type: ignore[union-attr]
            for case in CASES:
                for answerer in ANSWERERS[: CASES[case][2]]:
                    if answerer == reader:
                        continue
                    sees_text, _ = expected_sees(case, reader, answerer)
                    if not sees_text or CASES[case][1]:  # anonymous: never one by one
                        assert secret(case, answerer) not in body, (reader, case, answerer)


def test_summaries_show_answers_only_to_those_entitled_and_never_names_when_anonymous(  # type: ignore[no-untyped-def]
    world, session_factory
) -> None:
    settings = QuestionMailSettings(domain=DOMAIN, secret=SECRET)
    with unit_of_work(session_factory) as s:
        people = {p.primary_address: p for p in s.scalars(select(Person))}
        by_id = {p.id: a for a, p in people.items()}
        for case, qid in world.items():
            count = CASES[case][2]
            question = s.get_one(Question, qid)
            recipients = {by_id[pid] for pid in summary_recipients(s, question)}
            # The asker always (counts only if nothing may be shown), and whoever may see
            # answers; never the outsider.
            assert recipients == {ASKER} | {r for r in EVERYONE if entitled(case, r)}, case
            for reader in sorted(recipients):
                mail = QuestionMail(
                    id=0, key="x", kind="summary", question_id=qid, person_id=people[reader].id
                )
                context = mail_context(s, mail, people[reader])
                text = compose_question_mail(
                    mail, people[reader], question.discussion_id, context, settings
                ).decode("utf-8", "replace")
                for answerer in ANSWERERS[:count]:
                    if answerer == reader:
                        continue
                    sees_text, sees_name = expected_sees(case, reader, answerer)
                    assert (secret(case, answerer) in text) == sees_text, (case, reader, answerer)
                    if not sees_name:
                        assert name_of(answerer) not in text, (case, reader, answerer)


def test_cli_prints_only_what_the_named_person_may_see(  # type: ignore[no-untyped-def]
    world, run_cli
) -> None:
    import json

    for case, qid in world.items():
        count = CASES[case][2]
        for reader in EVERYONE:
            result = run_cli("ask", "answers", str(qid), "--as", reader, "--json")
            assert result.exit_code == 0, result.stderr
            shown = json.loads(result.stdout)
            texts = "\n".join(p["text"] for p in shown["posts"])
            authors = {p["author"] for p in shown["posts"] if not p["question"]}
            for answerer in ANSWERERS[:count]:
                sees_text, sees_name = expected_sees(case, reader, answerer)
                if CASES[case][1]:
                    # An operator runs --as, not the reader: an anonymous answer is shown
                    # only in the pool, never as "theirs" (issue 12, item 13).
                    sees_text = entitled(case, reader)
                assert (secret(case, answerer) in texts) == sees_text, (case, reader, answerer)
                if not sees_name:
                    assert name_of(answerer) not in authors, (case, reader, answerer)
        # Listing questions never prints answer text, whoever runs it.
        listing = run_cli("ask", "list", "--json")
        assert all(secret(case, a) not in listing.stdout for a in ANSWERERS)


def test_viewers_read_each_persons_list_role_and_site_roles(world, session_factory) -> None:  # type: ignore[no-untyped-def]
    """Summaries and question-mail batches read who each reader is for many people at
    once (``questions.viewers``, which ``questions.viewer`` also uses for one person)."""
    from mailgate.directory import grant_role
    from mailgate.models import MailingList, Role, SiteRole

    with unit_of_work(session_factory) as s:
        grant_role(s, "test", VIEWER, "executive")
        grant_role(s, "test", BYSTANDER, "admin")
        grant_role(s, "test", BYSTANDER, "executive")
    with session_factory() as s:
        eng = s.scalar(select(MailingList).where(MailingList.slug == "eng"))
        people = [find_person(s, address) for address in EVERYONE]
        batch = questions.viewers(s, eng, people)
        seen = {
            p.primary_address: (
                batch[p.id].person_id == p.id,
                batch[p.id].role,
                batch[p.id].site_roles,
            )
            for p in people
        }
    member = Role.MEMBER
    assert seen == {
        ASKER: (True, Role.OWNER, frozenset()),
        VIEWER: (True, member, {SiteRole.EXECUTIVE}),
        BYSTANDER: (True, member, {SiteRole.ADMIN, SiteRole.EXECUTIVE}),
        OUTSIDER: (True, None, frozenset()),  # not a member of eng
        **{a: (True, member, frozenset()) for a in ANSWERERS},
    }
