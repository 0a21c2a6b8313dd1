"""digests.gather: who wrote what, and how many +1s, as the digest will say it.

Posts enter through the real gateway; the prompt is created by the same function the
prompt scheduler calls; the digest goes to a recording relay.
"""

from __future__ import annotations

import email
import email.policy
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from digests.gather import gather
from digests.rank import plan_digest
from digests.sending import DigestMail, due_now, send_digests
from mailgate import questions
from mailgate.db import unit_of_work
from mailgate.ingest import IngestContext, run_ingest
from mailgate.models import Like, Person, Post, QuestionKind
from tests.conftest import DOMAIN, SECRET
from worker.mailer import SmtpMailer

READER = "reader@corp.example"
NOON = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
EARLIER = NOON - timedelta(hours=3)


@pytest.fixture
def world(directory, gateway, session_factory):  # type: ignore[no-untyped-def]
    directory.list("eng", name="Engineering", visibility="members")
    directory.member("eng", "bo@corp.example", name="Bo Chen")  # no department
    directory.member("eng", "nameless@corp.example")  # no name, no department
    directory.member("eng", "cy@corp.example", name="Cy Ross")
    directory.member("eng", READER, name="Reader", timezone="Europe/Berlin", delivery="digest")
    ctx = IngestContext(domain=DOMAIN, secrets=(SECRET,), now=lambda: EARLIER)

    def send(sender: str, subject: str, body: str, **headers: str) -> int:
        head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
        raw = (
            f"From: {sender}\r\nTo: eng@{DOMAIN}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}.{sender}>\r\n{head}\r\n{body}\r\n"
        ).encode()
        raw_id = gateway.submit(raw, f"eng@{DOMAIN}", sender)
        run_ingest(session_factory, raw_id, ctx)
        return raw_id

    send("bo@corp.example", "Cache rollout", "Rolling out the new cache today.")
    with session_factory() as s:
        first = s.scalars(select(Post)).one()
    send(
        "nameless@corp.example",
        "Re: Cache rollout",
        "Works here.",
        In_Reply_To=f"<{first.message_id}>",
    )
    # Two +1s on the opening post, sent as one-line replies.
    for who in ("cy@corp.example", READER):
        send(who, "Re: Cache rollout", "+1", In_Reply_To=f"<{first.message_id}>")
    # A prompt: a question with no asker, created as the prompt scheduler creates it.
    with unit_of_work(session_factory) as s:
        questions.create_question(
            s,
            asker=None,
            spec=questions.QuestionSpec(
                subject="What did you ship this week?",
                text="What did you ship this week?",
                audience="eng",
                deadline=NOON + timedelta(days=2),
            ),
            now=EARLIER,
            domain=DOMAIN,
            kind=QuestionKind.PROMPT,
        )
    return first.discussion_id


def test_names_say_who_wrote_and_a_prompt_has_no_author(world, session_factory) -> None:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        assert len(s.scalars(select(Like)).all()) == 2  # the +1 replies were stored
        gathered = gather(s, _window(s), NOON)
    names = {
        (d.subject, p.text.strip()): p.author_name for d in gathered.discussions for p in d.posts
    }
    assert names == {
        ("Cache rollout", "Rolling out the new cache today."): "Bo Chen",
        # A person with no name set is named by their address, as list copies do.
        ("Cache rollout", "Works here."): "nameless",
        # A prompt is asked by no one: no author at all, not "a former member".
        ("What did you ship this week?", "What did you ship this week?"): "",
    }
    likes = {d.subject: d.likes for d in gathered.discussions}
    assert likes == {"Cache rollout": 2, "What did you ship this week?": 0}

    view = next(v for v in gathered.views.values() if v.name == "Reader")
    plan = plan_digest(view, gathered.discussions, local_date=NOON.date())
    by_subject = {i.subject: i for i in plan.items}
    cache, prompt = by_subject["Cache rollout"], by_subject["What did you ship this week?"]
    # Nobody has a department: the reason says nothing about departments.
    assert cache.reason == "lively: 2 people"
    assert (cache.authors, cache.likes, cache.replies) == (("nameless", "Bo Chen"), 2, 1)
    assert prompt.authors == ()
    assert prompt.reason == "new discussion on Engineering"


def test_the_digest_mail_says_it_too(world, session_factory, relay_sink) -> None:  # type: ignore[no-untyped-def]
    mail = DigestMail(domain=DOMAIN, secret=SECRET, base_url=None, company_name="Corp")
    report = send_digests(
        session_factory,
        due_now(session_factory, NOON),
        mail=mail,
        relay=SmtpMailer(relay_sink.url),
        now=NOON,
    )
    assert report.sent == 1
    digest = email.message_from_bytes(relay_sink.messages[0].data, policy=email.policy.default)
    text = digest.get_body(("plain",)).get_content()
    html = digest.get_body(("html",)).get_content()
    for part in (text, html):
        assert "former member" not in part
        assert "departments" not in part
        assert "postmaster@" not in part
    assert "Engineering · nameless and Bo Chen · 1 reply · 2 +1s" in text
    assert "Corp digest · Tuesday 3 March 2026" in text


def _window(session: Session) -> dict[int, datetime]:
    people = session.scalars(select(Person.id).order_by(Person.id))
    return {pid: NOON - timedelta(days=1) for pid in people}
