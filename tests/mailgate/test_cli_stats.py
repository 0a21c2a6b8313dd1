"""``mailgate stats`` end to end: real database, the real CLI entry point, exact numbers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from mailgate.cli import cli
from mailgate.cli_stats import stats_command
from mailgate.db import unit_of_work
from mailgate.directory import get_list
from mailgate.models import Discussion, Post, utcnow

# The lead registers the command in mailgate/cli.py; until then the tests do it.
if "stats" not in cli.commands:
    cli.add_command(stats_command)


def as_json(result):  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def world(run_cli, directory, session_factory):  # type: ignore[no-untyped-def]
    """eng: Ana (Eng) and Bo (Sales); one discussion this week with a reply, one post
    40 days ago (outside the default window). ops: Cy, who never posts."""
    directory.list("eng", name="Engineering")
    directory.list("ops", name="Operations")
    directory.member("eng", "ana@corp.example", name="Ana", department="Eng")
    directory.member("eng", "bo@corp.example", name="Bo", department="Sales")
    directory.member("ops", "cy@corp.example", name="Cy", department="Ops")
    ana, bo = directory.person_id("ana@corp.example"), directory.person_id("bo@corp.example")
    now = utcnow()
    keys = count(1)
    with unit_of_work(session_factory) as s:
        list_id = get_list(s, "eng").id

        def post(discussion: Discussion, author: int, when: datetime, parent: int | None) -> int:
            n = next(keys)
            row = Post(
                discussion_id=discussion.id,
                list_id=list_id,
                author_id=author,
                parent_id=parent,
                message_id=f"stats{n}@corp.example",
                message_key=f"{n:064d}",
                text="hi",
                created_at=when,
            )
            s.add(row)
            s.flush()
            return row.id

        old = Discussion(list_id=list_id, subject="Old", created_at=now - timedelta(days=40))
        fresh = Discussion(list_id=list_id, subject="Cache", created_at=now - timedelta(hours=3))
        s.add_all([old, fresh])
        s.flush()
        post(old, ana, now - timedelta(days=40), None)
        root = post(fresh, ana, now - timedelta(hours=3), None)
        post(fresh, bo, now - timedelta(hours=1), root)
    return run_cli


def test_json_numbers_for_the_company_and_one_list(world) -> None:  # type: ignore[no-untyped-def]
    data = as_json(world("stats", "--json"))
    today = datetime.now(UTC).date()
    assert data["list"] is None
    assert data["since"] == f"{today - timedelta(days=28)}T00:00:00+00:00"
    assert (data["members"], data["active_members"], data["posts"], data["replies"]) == (
        3,
        2,
        2,
        1,
    )
    assert (data["new_discussions"], data["cross_department_discussions"]) == (1, 1)
    assert data["participation"] == 0.667
    assert data["response_rate"]["question"] == {"sent": 0, "answered": 0, "rate": None}
    assert data["median_hours_to_first_answer"] is None
    weeks = data["weekly"]
    assert len(weeks) == 5  # 28 days back is the same weekday four ISO weeks ago
    assert sum(w["posts"] for w in weeks) == 2 and weeks[-1]["posts"] >= 1
    assert weeks[0]["starts"] <= str(today - timedelta(days=28)) < weeks[1]["starts"]

    eng = as_json(world("stats", "--list", "eng", "--json"))
    assert eng["list"] == "eng"
    assert (eng["members"], eng["active_members"], eng["posts"]) == (2, 2, 2)
    ops = as_json(world("stats", "--list", "ops", "--json"))
    assert (ops["members"], ops["active_members"], ops["posts"]) == (1, 0, 0)
    assert ops["participation"] == 0.0


def test_since_widens_the_window(world) -> None:  # type: ignore[no-untyped-def]
    since = (datetime.now(UTC) - timedelta(days=60)).date().isoformat()
    data = as_json(world("stats", "--since", since, "--json"))
    assert data["since"] == f"{since}T00:00:00+00:00"
    assert (data["posts"], data["new_discussions"], data["active_members"]) == (3, 2, 2)
    assert len(data["weekly"]) >= 9


def test_table_output(world) -> None:  # type: ignore[no-untyped-def]
    result = world("stats", "--list", "eng")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "Engagement in list eng since" in out
    for figure in ("active members", "cross-department discussions", "questions answered"):
        assert figure in out
    assert "– (no questions sent in this window)" in out  # no questions were asked
    assert "week " in out and " posts" in out  # one row per ISO week


def test_html_report(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "report.html"
    result = world("stats", "--html", str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(target)
    html = target.read_text(encoding="utf-8")
    assert html.count("<svg") == 2
    assert "Engagement in the company" in html
    weeks = as_json(world("stats", "--json"))["weekly"]
    for week in weeks:
        assert f">{week['week']}</text>" in html
    assert "<script" not in html


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("stats", "--list", "nope"), "error: unknown list 'nope'"),
        (("stats", "--since", "last week"), "error: invalid --since 'last week': use YYYY-MM-DD"),
        (("stats", "--since", "2999-01-01"), "error: --since 2999-01-01 is not in the past"),
    ],
)
def test_bad_input_gives_one_line_and_exit_1(world, args, message) -> None:  # type: ignore[no-untyped-def]
    result = world(*args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [message]
    assert "Traceback" not in result.stderr + result.stdout


def test_an_unwritable_html_path_is_one_line(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = world("stats", "--html", str(tmp_path / "missing" / "report.html"))
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: cannot write ")
    assert len(result.stderr.strip().splitlines()) == 1
