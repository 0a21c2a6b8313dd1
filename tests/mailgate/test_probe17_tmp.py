from datetime import UTC, datetime, timedelta
from sqlalchemy import select
from digests.questions import tick
from mailgate import questions
from mailgate.db import unit_of_work
from mailgate.directory import find_person
from mailgate.models import QuestionMail, Followup, Post

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)

def test_probe(directory, session_factory):
    directory.list("staff")
    directory.member("staff", "ceo@corp.example", name="Ceo", timezone="Europe/London")
    directory.grant("ceo@corp.example", "executive")
    for i in range(3):
        directory.member("staff", f"m{i}@corp.example", name=f"M{i}", timezone="Europe/London")
    with unit_of_work(session_factory) as s:
        q = questions.create_question(s, asker=find_person(s, "ceo@corp.example"),
            spec=questions.QuestionSpec(subject="S", text="Q?", audience="staff"), now=T0 - timedelta(minutes=5), domain="x")
    with unit_of_work(session_factory) as s:
        print("t0", tick(s, T0, "x"))
    with unit_of_work(session_factory) as s:
        print("t1", tick(s, T0 + timedelta(days=2, hours=1), "x"))
        print(s.scalars(select(QuestionMail.kind)).all())
    assert 0
