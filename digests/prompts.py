"""Recurring prompts: a weekly question from a rotating bank, in each member's morning.

Input: a session, ``now``, and for the admin use cases the prompt's settings. Output:
``prompts`` rows, and once a week per prompt a ``prompt_runs`` row (unique per prompt and
ISO week, so concurrent ticks create one) with its question — an open question whose
asks are due at the prompt's local time for each member (Mondays 09:30 in Tokyo and in
Lisbon), whose deadline six days later sends the weekly roundup to the audience.

Rotation: each run asks the bank entry this prompt used least recently (never last
week's; ``digests.rotation``). Members on leave (``away_until``) are skipped that week.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from digests.prompt_bank import STARTER_BANK
from digests.rotation import pick_bank_index
from mailgate import questions
from mailgate.addressing import check_slug
from mailgate.local_time import first_instant_at, next_sensible_time, zone
from mailgate.models import (
    AnswerVisibility,
    MailingList,
    Person,
    Prompt,
    PromptRun,
    QuestionKind,
    utcnow,
)

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ROUNDUP_AFTER = timedelta(days=6)  # the roundup goes out before the next run
EARLIEST_OFFSET = timedelta(hours=14)  # UTC+14: the first zone to reach a given day


class PromptError(ValueError):
    """A prompt that cannot be created or changed as asked; the message says why."""


@dataclass(frozen=True)
class PromptSchedule:
    weekday: int  # 0 = Monday
    minute_of_day: int

    def label(self) -> str:
        hour, minute = divmod(self.minute_of_day, 60)
        return f"{WEEKDAYS[self.weekday].capitalize()}s {hour:02d}:{minute:02d} local time"


def parse_schedule(text: str) -> PromptSchedule:
    """``"monday 09:30"``, ``"Mondays 9:30"``, ``"tue 14:00"`` → a schedule."""
    parts = text.strip().lower().replace(",", " ").split()
    if len(parts) != 2:
        raise PromptError(f"schedule {text!r}: use a weekday and a time, e.g. 'monday 09:30'")
    day_text, time_text = parts
    day_text = day_text.rstrip("s") if day_text.rstrip("s") in WEEKDAYS else day_text
    matches = [i for i, name in enumerate(WEEKDAYS) if name.startswith(day_text)]
    if len(day_text) < 3 or len(matches) != 1:
        raise PromptError(f"schedule {text!r}: unknown weekday {day_text!r}")
    hour_text, _, minute_text = time_text.partition(":")
    try:
        hour, minute = int(hour_text), int(minute_text or "0")
    except ValueError:
        raise PromptError(f"schedule {text!r}: time must look like 09:30") from None
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise PromptError(f"schedule {text!r}: time must look like 09:30")
    return PromptSchedule(matches[0], hour * 60 + minute)


def create_prompt(
    session: Session,
    *,
    name: str,
    audience: str,
    schedule: PromptSchedule,
    bank: list[str] | None = None,
    actor: str = "cli",
) -> Prompt:
    try:
        check_slug(name)
    except ValueError:
        raise PromptError(
            f"prompt name {name!r}: use lowercase letters, digits, '.', '-' or '_'"
        ) from None
    if session.scalar(select(Prompt.id).where(Prompt.name == name)) is not None:
        raise PromptError(f"a prompt named {name!r} already exists")
    list_id = None
    if audience != questions.COMPANY:
        try:
            list_id = questions.audience_list(session, audience).id
        except questions.QuestionError:
            raise PromptError(f"no list named {audience!r}") from None
    questions_bank = [q.strip() for q in (bank or list(STARTER_BANK)) if q.strip()]
    if not questions_bank:
        raise PromptError("the bank has no questions")
    prompt = Prompt(
        name=name,
        list_id=list_id,
        weekday=schedule.weekday,
        minute_of_day=schedule.minute_of_day,
        bank=questions_bank,
        created_by=actor,
        created_at=utcnow(),
    )
    session.add(prompt)
    session.flush()
    return prompt


def find_prompt(session: Session, name: str) -> Prompt:
    prompt = session.scalar(select(Prompt).where(Prompt.name == name, Prompt.deleted_at.is_(None)))
    if prompt is None:
        raise PromptError(f"no prompt named {name!r}")
    return prompt


def _run_day(prompt: Prompt, now: datetime) -> tuple[str, date]:
    """The ISO week whose run may start at ``now`` and the run's calendar day."""
    anchor = (now + EARLIEST_OFFSET).date()
    year, week, _ = anchor.isocalendar()
    monday = anchor - timedelta(days=anchor.weekday())
    return f"{year}-W{week:02d}", monday + timedelta(days=prompt.weekday)


def run_due_prompts(session: Session, now: datetime, domain: str) -> int:
    """Create this week's run of every active prompt whose day has begun somewhere."""
    created = 0
    for prompt in session.scalars(
        select(Prompt).where(Prompt.paused.is_(False), Prompt.deleted_at.is_(None))
    ):
        week, day = _run_day(prompt, now)
        if (now + EARLIEST_OFFSET).date() < day or prompt.created_at.date() > day:
            continue
        if session.scalar(
            select(PromptRun.id).where(PromptRun.prompt_id == prompt.id, PromptRun.week == week)
        ):
            continue
        if _start_run(session, prompt, week, day, now, domain):
            created += 1
    return created


def _start_run(
    session: Session, prompt: Prompt, week: str, day: date, now: datetime, domain: str
) -> bool:
    history = list(
        session.scalars(
            select(PromptRun.bank_index)
            .where(PromptRun.prompt_id == prompt.id)
            .order_by(PromptRun.week)
        )
    )
    index = pick_bank_index(len(prompt.bank), history)
    try:
        with session.begin_nested():
            run = PromptRun(prompt_id=prompt.id, week=week, bank_index=index, created_at=now)
            session.add(run)
            session.flush()
    except IntegrityError:
        return False  # another tick created this week's run
    hour, minute = divmod(prompt.minute_of_day, 60)

    def due_for(person: Person) -> datetime:
        due = first_instant_at(day, hour, zone(person.timezone), minute)
        # A run created late (the scheduler was down, or the prompt was created on the
        # evening of its day) asks at the next working hour rather than never — and
        # never outside working hours, local time (issue 17: 19:15 on a Monday).
        return next_sensible_time(max(due, now), person.timezone)

    audience = questions.COMPANY
    if prompt.list_id is not None:
        ml = session.get(MailingList, prompt.list_id)
        if ml is None or ml.archived_at is not None:
            return False
        audience = ml.slug
    text = prompt.bank[index]
    deadline = first_instant_at(day, hour, zone("Pacific/Kiritimati"), minute) + ROUNDUP_AFTER
    question = questions.create_question(
        session,
        asker=None,
        spec=questions.QuestionSpec(
            subject=text,
            text=text,
            audience=audience,
            deadline=max(deadline, now + timedelta(days=1)),
            visibility=AnswerVisibility.OPEN,
            max_reminders=1,
        ),
        now=now,
        domain=domain,
        kind=QuestionKind.PROMPT,
        prompt_id=prompt.id,
        due_for=due_for,
        skip_away=True,
    )
    run.question_id = question.id
    return True
