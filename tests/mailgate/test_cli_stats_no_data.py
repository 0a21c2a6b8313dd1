"""``mailgate stats`` never shows more than 100 % participation, and says "–" and why
where there is simply no data yet, instead of "0 %" or "0.0 h" (issue 17)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import count

from sqlalchemy import delete

from digests.engagement import EngagementFacts, PostFact, compute_stats, render_html
from mailgate.cli import cli
from mailgate.cli_stats import stats_command
from mailgate.db import unit_of_work
from mailgate.directory import get_list
from mailgate.models import Discussion, Membership, Post, utcnow

if "stats" not in cli.commands:
    cli.add_command(stats_command)


def test_authors_who_left_the_list_do_not_push_participation_past_100(  # type: ignore[no-untyped-def]
    run_cli, directory, session_factory
) -> None:
    """eng has two members; five people wrote there this week, four of them since left."""
    directory.list("eng", name="Engineering")
    people = [f"p{i}@corp.example" for i in range(5)]
    for address in people:
        directory.member("eng", address, name=address[:2])
    ids = [directory.person_id(a) for a in people]
    now = utcnow()
    keys = count(1)
    with unit_of_work(session_factory) as s:
        eng = get_list(s, "eng")
        d = Discussion(list_id=eng.id, subject="Cache", created_at=now - timedelta(hours=5))
        s.add(d)
        s.flush()
        for pid in ids:
            n = next(keys)
            s.add(
                Post(
                    discussion_id=d.id,
                    list_id=eng.id,
                    author_id=pid,
                    message_id=f"nd{n}@corp.example",
                    message_key=f"{n:064d}",
                    text="hi",
                    created_at=now - timedelta(hours=4),
                )
            )
        # Three left the list (their posts stay); four members would read 125 % before.
        s.execute(delete(Membership).where(Membership.person_id.in_(ids[2:])))
    result = run_cli("stats", "--list", "eng", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["members"], data["active_members"], data["other_authors"]) == (2, 2, 3)
    assert data["participation"] == 1.0
    table = run_cli("stats", "--list", "eng").stdout
    assert "100%" in table and "other authors (not members)" in table


def test_no_data_reads_as_a_dash_with_the_reason(run_cli, directory) -> None:  # type: ignore[no-untyped-def]
    directory.list("quiet", name="Quiet")
    table = run_cli("stats", "--list", "quiet").stdout
    assert "– (no members)" in table
    assert "– (no questions sent in this window)" in table
    assert "– (no prompts sent in this window)" in table
    assert "– (no question answered yet in this window)" in table
    assert "0%" not in table and "0.0" not in table and "n/a" not in table


def test_a_quick_first_answer_is_minutes_not_zero_hours() -> None:
    from digests.engagement import QuestionFact
    from mailgate.models import QuestionKind

    since = datetime(2026, 3, 2, tzinfo=UTC)
    created = since + timedelta(hours=1)
    facts = EngagementFacts(
        members=2,
        posts=(PostFact(1, 1, "", False, created),),
        questions=(
            QuestionFact(1, QuestionKind.QUESTION, created, created + timedelta(minutes=3)),
        ),
    )
    html = render_html(compute_stats(facts, since, since + timedelta(days=1)), "t")
    assert "3 min" in html and "0.0 h" not in html
