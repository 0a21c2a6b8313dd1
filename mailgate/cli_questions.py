"""``mailgate ask`` and ``mailgate prompts``: leaders' questions and recurring prompts
(a composition root, registered by ``mailgate/cli.py``).

``ask send|list|show|answers`` and ``prompts create|list|show|pause|resume|delete``, and
``people away`` (a member on leave gets no questions or prompts until they are back).
Who may see answers is decided by ``mailgate.access``: ``ask answers ID --as EMAIL``
prints exactly what that person may see, and nothing else prints answer text.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from typing import Any

import click

from mailgate.cli_app import App, CLIError, actor, emit_json, json_option, pass_app, print_table


def _fail(exc: Exception) -> CLIError:
    return CLIError(str(exc))


# ---------------------------------------------------------------- ask


@click.group("ask")
def ask_group() -> None:
    """Questions from leaders to a list or the whole company."""


@ask_group.command("send")
@click.argument("text", required=False)
@click.option("--from", "asker_email", required=True, help="The asker (an executive or owner).")
@click.option("--to", "audience", default="company", show_default=True, help="List or company.")
@click.option("--subject", help="Subject line (default: the first line of the question).")
@click.option(
    "--deadline",
    help="YYYY-MM-DD or a phrase as in a Deadline: line ('in 3 days', 'friday'); the end "
    "of that working day, asker's time.",
)
@click.option(
    "--visibility",
    type=click.Choice(["open", "asker-only"]),
    default="open",
    show_default=True,
)
@click.option("--anonymous", is_flag=True, help="Answers without names, once 5 answered.")
@click.option("--viewer", "viewers", multiple=True, help="Someone else who sees the answers.")
@click.option("--reminders", type=click.IntRange(0, 10), default=2, show_default=True)
@click.option("--now", "at", help="Ask as of this ISO instant (default: now).")
@json_option
@pass_app
def ask_send(
    app: App,
    text: str | None,
    asker_email: str,
    audience: str,
    subject: str | None,
    deadline: str | None,
    visibility: str,
    anonymous: bool,
    viewers: tuple[str, ...],
    reminders: int,
    at: str | None,
    as_json: bool,
) -> None:
    """Ask TEXT (or stdin with '-' or no TEXT) now; each member gets it in their hours."""
    from sqlalchemy import func, select

    from mailgate import directory, questions
    from mailgate.directory import record
    from mailgate.local_time import local_date
    from mailgate.models import AnswerVisibility, Ask

    body = sys.stdin.read() if text in (None, "-") else text
    assert body is not None
    now = _given_instant(at) or datetime.now(UTC)
    with app.session() as session:
        asker = directory.get_person(session, asker_email)
        due = None
        if deadline:
            due = questions.end_of_day(
                _deadline_day(deadline, local_date(now, asker.timezone)), asker.timezone
            )
        spec = questions.QuestionSpec(
            subject=subject or body.strip().splitlines()[0] if body.strip() else "",
            text=body,
            audience=audience,
            deadline=due,
            visibility=AnswerVisibility(visibility),
            anonymous=anonymous,
            viewers=tuple(v.strip().lower() for v in viewers),
            max_reminders=reminders,
        )
        try:
            question = questions.create_question(
                session, asker=asker, spec=spec, now=now, domain=app.settings.domain
            )
        except questions.QuestionError as exc:
            raise _fail(exc) from None
        asked = session.scalar(select(func.count()).where(Ask.question_id == question.id)) or 0
        record(
            session,
            actor(),
            "question.ask",
            f"question:{question.id}",
            None,
            {"asker": asker.primary_address, "audience": audience, "visibility": visibility},
        )
        result = {"question": question.id, "audience": audience, "asked": asked}
    if as_json:
        emit_json(result)
    else:
        click.echo(f"question {result['question']}: asking {asked} people ({audience})")


def _status_row(status: Any, now: datetime) -> dict[str, Any]:
    return {
        "id": status.id,
        "subject": status.subject,
        "asker": status.asker,
        "audience": status.audience,
        "kind": status.kind,
        "visibility": status.visibility + (" anonymous" if status.anonymous else ""),
        "age_days": status.age_days(now),
        "deadline": status.deadline.isoformat() if status.deadline else None,
        "asked": status.asked,
        "answered": status.answered,
        "state": "closed"
        if status.closed
        else (f"pending until {status.pending_until}" if status.pending_until else "open"),
    }


def _given_instant(at: str | None) -> datetime | None:
    if not at:
        return None
    try:
        instant = datetime.fromisoformat(at)
    except ValueError:
        raise CLIError(f"invalid --now {at!r}: use an ISO time like 2026-12-01T09:30Z") from None
    if instant.tzinfo is None:
        raise CLIError("--now needs a timezone, e.g. 2026-12-01T09:30+00:00")
    return instant


def _deadline_day(text: str, today: date) -> date:
    """``--deadline`` read like a ``Deadline:`` line of a mail to ask@, relative to the
    asker's local ``today``; a day already past is refused here, with the date."""
    from mailgate.asking import parse_date_phrase

    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        found = parse_date_phrase(text, today)
        if found is None:
            raise CLIError(
                f"invalid --deadline {text!r}: use YYYY-MM-DD or a phrase like 'in 3 days'"
            ) from None
        day = found
    if day < today:
        raise CLIError(f"--deadline {day.isoformat()} is in the past (today is {today})")
    return day


@ask_group.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only questions still open.")
@json_option
@pass_app
def ask_list(app: App, open_only: bool, as_json: bool) -> None:
    """Questions and prompt runs with their answer counts (never answer text)."""
    from mailgate import questions

    now = datetime.now(UTC)
    with app.session() as session:
        rows = [
            _status_row(s, now) for s in questions.question_statuses(session, open_only=open_only)
        ]
    if as_json:
        emit_json(rows)
        return
    columns = [
        "id",
        "subject",
        "asker",
        "audience",
        "kind",
        "visibility",
        "age_days",
        "asked",
        "answered",
        "state",
    ]
    print_table("Questions", columns, [[r[c] for c in columns] for r in rows])


@ask_group.command("answers")
@click.argument("question_id", type=int)
@click.option("--as", "as_email", required=True, help="Show what this person may see.")
@json_option
@pass_app
def ask_answers(app: App, question_id: int, as_email: str, as_json: bool) -> None:
    """The answers to a question exactly as one person may see them (access decides)."""
    from sqlalchemy import select

    from mailgate import access, directory, questions
    from mailgate.models import MailingList, Person, Post, Question

    with app.session() as session:
        question = session.get(Question, question_id)
        if question is None:
            raise CLIError(f"no question {question_id}")
        reader = directory.get_person(session, as_email)
        ml = session.get_one(MailingList, question.list_id)
        facts = questions.question_facts(session, question)
        lfacts = access.ListFacts.of(ml)
        viewer = questions.viewer(session, ml, reader)
        view = access.answer_view(facts, lfacts, viewer)
        first = questions.first_post_id(session, question.discussion_id)
        posts = session.execute(
            select(Post, Person.name)
            .outerjoin(Person, Person.id == Post.author_id)
            .where(Post.discussion_id == question.discussion_id)
            .order_by(Post.id)
        ).all()
        parents = {p.id: p.author_id for p, _ in posts}
        shown: list[dict[str, Any]] = []
        for post, name in posts:
            is_question = post.id == first
            if access.may_see_question_post(
                facts,
                lfacts,
                viewer,
                author_id=post.author_id,
                is_question=is_question,
                parent_author_id=parents.get(post.parent_id) if post.parent_id else None,
            ):
                shown.append(
                    {
                        "post": post.id,
                        "author": name or "",
                        "question": is_question,
                        "created_at": post.created_at.isoformat(),
                        "text": post.text.strip(),
                    }
                )
        if question.anonymous:
            # An operator runs this, not the person named by --as: showing that person's
            # own answer (or a reply to it) would tell the operator who wrote what. Only
            # the question, and the pooled answers once there are enough (issue 12, 13).
            shown = [s for s in shown if s["question"]]
        if view is access.AnswerView.ANONYMOUS:
            # Without names, in text order: the summary's rule (digests.summary).
            answers: list[dict[str, Any]] = sorted(
                (
                    {
                        "post": None,
                        "author": "",
                        "question": False,
                        "created_at": None,
                        "text": p.text.strip(),
                    }
                    for p, _ in posts
                    if p.id != first and not facts.is_leader(p.author_id)
                ),
                key=lambda a: str(a["text"]).casefold(),
            )
            shown = [s for s in shown if s["question"]] + answers
        result = {"question": question_id, "as": as_email, "view": str(view), "posts": shown}
    if as_json:
        emit_json(result)
        return
    click.echo(f"question {question_id} as seen by {as_email} (answers: {view})")
    for item in shown:
        who = item["author"] or "(anonymous)"
        label = "QUESTION" if item["question"] else who
        click.echo(f"\n[{label}]\n{item['text']}")


# ---------------------------------------------------------------- prompts


@click.group("prompts")
def prompts_group() -> None:
    """Recurring prompts: a weekly question from a rotating bank."""


@prompts_group.command("create")
@click.argument("name")
@click.option("--to", "audience", default="company", show_default=True, help="List or company.")
@click.option("--schedule", default="monday 09:30", show_default=True, help="Weekday and time.")
@click.option(
    "--bank-file",
    type=click.File("r", encoding="utf-8"),
    help="One question per line (default: the starter bank).",
)
@pass_app
def prompts_create(app: App, name: str, audience: str, schedule: str, bank_file: Any) -> None:
    """A prompt: every week at SCHEDULE (each member's local time) one question."""
    from digests.prompts import PromptError, create_prompt, parse_schedule
    from mailgate.directory import record

    bank = [line.strip() for line in bank_file] if bank_file else None
    with app.session() as session:
        try:
            when = parse_schedule(schedule)
            prompt = create_prompt(
                session, name=name, audience=audience, schedule=when, bank=bank, actor=actor()
            )
        except PromptError as exc:
            raise _fail(exc) from None
        record(
            session,
            actor(),
            "prompt.create",
            f"prompt:{name}",
            None,
            {"audience": audience, "schedule": when.label(), "bank": len(prompt.bank)},
        )
        click.echo(f"prompt {name}: {when.label()} to {audience}, {len(prompt.bank)} questions")


def _prompt_row(session: Any, prompt: Any) -> dict[str, Any]:
    from sqlalchemy import func, select

    from digests.prompts import PromptSchedule
    from mailgate.models import MailingList, PromptRun

    runs = session.scalar(select(func.count()).where(PromptRun.prompt_id == prompt.id)) or 0
    audience = (
        session.scalar(select(MailingList.slug).where(MailingList.id == prompt.list_id))
        if prompt.list_id
        else "company"
    )
    return {
        "name": prompt.name,
        "audience": audience,
        "schedule": PromptSchedule(prompt.weekday, prompt.minute_of_day).label(),
        "bank": len(prompt.bank),
        "runs": runs,
        "state": "paused" if prompt.paused else "active",
    }


@prompts_group.command("list")
@json_option
@pass_app
def prompts_list(app: App, as_json: bool) -> None:
    """Every prompt with its schedule, bank size, runs so far and state."""
    from sqlalchemy import select

    from mailgate.models import Prompt

    with app.session() as session:
        rows = [
            _prompt_row(session, p)
            for p in session.scalars(
                select(Prompt).where(Prompt.deleted_at.is_(None)).order_by(Prompt.name)
            )
        ]
    if as_json:
        emit_json(rows)
        return
    columns = ["name", "audience", "schedule", "bank", "runs", "state"]
    print_table("Prompts", columns, [[r[c] for c in columns] for r in rows])


@prompts_group.command("show")
@click.argument("name")
@json_option
@pass_app
def prompts_show(app: App, name: str, as_json: bool) -> None:
    """A prompt, its bank and which question each week asked."""
    from sqlalchemy import select

    from digests.prompts import PromptError, find_prompt
    from mailgate.models import PromptRun

    with app.session() as session:
        try:
            prompt = find_prompt(session, name)
        except PromptError as exc:
            raise _fail(exc) from None
        row = _prompt_row(session, prompt)
        row["questions"] = list(prompt.bank)
        row["history"] = [
            {
                "week": r.week,
                "question": prompt.bank[r.bank_index] if r.bank_index < len(prompt.bank) else "",
                "question_id": r.question_id,
            }
            for r in session.scalars(
                select(PromptRun).where(PromptRun.prompt_id == prompt.id).order_by(PromptRun.week)
            )
        ]
    if as_json:
        emit_json(row)
        return
    click.echo(f"{row['name']}: {row['schedule']} to {row['audience']} ({row['state']})")
    click.echo(f"question bank ({len(row['questions'])}):")
    for number, question in enumerate(row["questions"], 1):
        click.echo(f"  {number}. {question}")
    click.echo("asked so far:" if row["history"] else "asked so far: none yet")
    for run in row["history"]:
        click.echo(f"  {run['week']}: {run['question']}")


def _set_prompt(app: App, name: str, action: str) -> None:
    from digests.prompts import PromptError, find_prompt
    from mailgate.directory import record

    with app.session() as session:
        try:
            prompt = find_prompt(session, name)
        except PromptError as exc:
            raise _fail(exc) from None
        before = {"paused": prompt.paused}
        if action == "delete":
            prompt.deleted_at = datetime.now(UTC)
            prompt.name = f"{prompt.name}.deleted.{prompt.id}"  # frees the name
        else:
            prompt.paused = action == "pause"
        record(
            session,
            actor(),
            f"prompt.{action}",
            f"prompt:{name}",
            before,
            {"paused": prompt.paused, "deleted": prompt.deleted_at is not None},
        )
    click.echo(f"prompt {name}: {action}d" if action != "pause" else f"prompt {name}: paused")


@prompts_group.command("pause")
@click.argument("name")
@pass_app
def prompts_pause(app: App, name: str) -> None:
    """Stop new runs until resumed (asks already scheduled still go out)."""
    _set_prompt(app, name, "pause")


@prompts_group.command("resume")
@click.argument("name")
@pass_app
def prompts_resume(app: App, name: str) -> None:
    """Run again from the next scheduled week."""
    _set_prompt(app, name, "resume")


@prompts_group.command("delete")
@click.argument("name")
@pass_app
def prompts_delete(app: App, name: str) -> None:
    """Stop the prompt for good; its past questions and answers stay."""
    _set_prompt(app, name, "delete")


# ---------------------------------------------------------------- on leave


@click.command("away")
@click.argument("email")
@click.option("--until", "back", help="YYYY-MM-DD: the first day they are back.")
@click.option("--back", "is_back", is_flag=True, help="They are back: clear it.")
@pass_app
def people_away(app: App, email: str, back: str | None, is_back: bool) -> None:
    """Mark someone on leave: no questions, prompts or reminders until they are back."""
    from mailgate import directory

    if bool(back) == is_back:
        raise CLIError("give either --until YYYY-MM-DD or --back")
    if back:
        try:
            back = date.fromisoformat(back).isoformat()  # stored and compared as YYYY-MM-DD
        except ValueError:
            raise CLIError(f"invalid --until {back!r}: use YYYY-MM-DD") from None
    with app.session() as session:
        directory.set_away(session, actor(), email, back or None)
    click.echo(f"{email}: away until {back}" if back else f"{email}: back")


@ask_group.command("tick")
@click.option("--now", "at", help="Run the step for this ISO instant (default: now).")
@json_option
@pass_app
def ask_tick(app: App, at: str | None, as_json: bool) -> None:
    """Run the questions scheduler step now: prompts, asks, reminders, summaries."""
    from worker.tasks import run_questions_tick

    instant = None
    if at:
        try:
            instant = datetime.fromisoformat(at)
        except ValueError:
            raise CLIError(
                f"invalid --now {at!r}: use an ISO time like 2026-12-01T09:30Z"
            ) from None
        if instant.tzinfo is None:
            raise CLIError("--now needs a timezone, e.g. 2026-12-01T09:30+00:00")
    counts = run_questions_tick(instant)
    if as_json:
        emit_json(counts)
    else:
        click.echo(", ".join(f"{k}: {v}" for k, v in counts.items()))
