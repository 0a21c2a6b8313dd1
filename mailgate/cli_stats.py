"""``mailgate stats``: engagement figures for the company or one list (a composition root).

Input: ``--list SLUG``, ``--since YYYY-MM-DD`` (default: 28 days before today, UTC),
``--json``, ``--html PATH``. Output: a table; JSON with ``--json``; with ``--html`` the
report written to PATH as a self-contained page and PATH printed. Bad input is one line
on stderr and exit 1, like every other command.

Registered in ``mailgate/cli.py`` with ``cli.add_command(stats_command)``. This module
imports ``mailgate.cli_app`` (not the CLI root), so the root can import it without a cycle.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from mailgate.cli_app import App

DEFAULT_DAYS = 28


def window_start(since: str | None, now: datetime) -> datetime:
    """Midnight UTC of ``--since``, or of the day ``DEFAULT_DAYS`` before today."""
    from mailgate.cli_app import CLIError

    if since is None:
        day = now.astimezone(UTC).date() - timedelta(days=DEFAULT_DAYS)
    else:
        try:
            day = date.fromisoformat(since)
        except ValueError:
            raise CLIError(f"invalid --since {since!r}: use YYYY-MM-DD") from None
    start = datetime.combine(day, time(), tzinfo=UTC)
    if start >= now:
        raise CLIError(f"--since {day.isoformat()} is not in the past")
    return start


@click.command("stats")
@click.option("--list", "slug", metavar="SLUG", help="Only this list (default: the company).")
@click.option("--since", metavar="DATE", help="Start of the window, YYYY-MM-DD (UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False),
    help="Write the report with charts to this HTML file and print its path.",
)
@click.pass_context
def stats_command(
    ctx: click.Context, slug: str | None, since: str | None, as_json: bool, html_file: str | None
) -> None:
    """Engagement: active members, posts, answers to questions and prompts, weekly charts."""
    from digests.engagement import compute_stats, gather_engagement, render_html, stats_as_json
    from mailgate import directory
    from mailgate.cli_app import App, CLIError, emit_json, print_table
    from mailgate.models import utcnow

    app: App = ctx.ensure_object(App)
    now = utcnow()
    start = window_start(since, now)
    with app.session() as session:
        list_id = directory.get_list(session, slug).id if slug else None
        facts = gather_engagement(session, list_id=list_id, since=start, now=now)
    stats = compute_stats(facts, start, now)
    scope = f"list {slug}" if slug else "the company"

    if html_file:
        title = f"Engagement in {scope}, {start.date().isoformat()} to {now.date().isoformat()}"
        try:
            Path(html_file).write_text(render_html(stats, title), encoding="utf-8")
        except OSError as exc:
            raise CLIError(f"cannot write {html_file}: {exc.strerror}") from None

    data: dict[str, Any] = {"list": slug, **stats_as_json(stats)}
    if as_json:
        emit_json(data)
        return
    if html_file:
        click.echo(html_file)
        return
    print_table(f"Engagement in {scope} since {start.date().isoformat()}", *_rows(data))


def _rows(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    from digests.engagement import WHY_NO_MEMBERS, duration, percent, rate_text

    question, prompt = data["response_rate"]["question"], data["response_rate"]["prompt"]
    rows: list[list[Any]] = [
        ["members", data["members"]],
        ["active members", data["active_members"]],
        ["participation", percent(data["participation"], WHY_NO_MEMBERS)],
        ["posts", data["posts"]],
        ["replies", data["replies"]],
        ["new discussions", data["new_discussions"]],
        ["cross-department discussions", data["cross_department_discussions"]],
        [
            "questions answered",
            rate_text(question["rate"], question["answered"], question["sent"], "questions"),
        ],
        [
            "prompts answered",
            rate_text(prompt["rate"], prompt["answered"], prompt["sent"], "prompts"),
        ],
        ["median time to first answer", duration(data["median_hours_to_first_answer"])],
        ["unanswered questions", data["unanswered_questions"]],
    ]
    if data["other_authors"]:
        rows.insert(2, ["other authors (not members)", data["other_authors"]])
    rows += [
        [f"week {w['week']}", f"{w['authors']} authors, {w['posts']} posts"] for w in data["weekly"]
    ]
    return ["figure", "value"], rows
