"""Asking stage: directives in a question mail, date phrases, "not yet" replies, out-of-office."""

from __future__ import annotations

from datetime import date

import pytest

from mailgate.asking import (
    AskDirectives,
    NotYet,
    parse_ask_directives,
    parse_date_phrase,
    parse_not_yet,
    return_date,
)

WED = date(2026, 12, 2)  # a Wednesday; Friday is 4 December, Monday 7 December
FRI = date(2026, 12, 4)
MON = date(2026, 12, 7)
YEAR_END = date(2026, 12, 28)  # a Monday, three days before the year turns


# --- parse_date_phrase ---------------------------------------------------------------------

DATE_PHRASES = [
    # (phrase, today, expected)
    ("2026-12-04", WED, FRI),
    ("4 December 2026", WED, FRI),
    ("December 4, 2026", WED, FRI),
    ("Dec 4", WED, FRI),
    ("Dec. 4th, 2026", WED, FRI),
    ("4th of December", WED, FRI),
    ("4.12.2026", WED, FRI),
    ("4.12.26", WED, FRI),
    ("4.12.", WED, FRI),
    ("04-12-2026", WED, FRI),
    ("Friday, December 4", WED, FRI),
    # slashes: month/day unless the first number cannot be a month
    ("12/04/2026", WED, FRI),
    ("12/4", WED, FRI),
    ("4/12", WED, date(2027, 4, 12)),
    ("13/4", WED, date(2027, 4, 13)),
    ("25/12/2026", WED, date(2026, 12, 25)),
    # no year: the next one on or after today
    ("December 2", WED, WED),
    ("December 1", WED, date(2027, 12, 1)),
    ("January 5", YEAR_END, date(2027, 1, 5)),
    ("5.1.", YEAR_END, date(2027, 1, 5)),
    ("February 29", WED, date(2028, 2, 29)),
    # weekdays: strictly after today; "next" changes nothing
    ("Friday", WED, FRI),
    ("next Friday", WED, FRI),
    ("on Monday", WED, MON),
    ("Wednesday", WED, date(2026, 12, 9)),
    ("Fri", WED, FRI),
    ("by Friday", WED, FRI),
    ("Monday", YEAR_END, date(2027, 1, 4)),
    # relative
    ("today", WED, WED),
    ("tomorrow", WED, date(2026, 12, 3)),
    ("in 3 days", WED, date(2026, 12, 5)),
    ("in 2 weeks", WED, date(2026, 12, 16)),
    ("in a week", WED, date(2026, 12, 9)),
    ("end of week", WED, FRI),
    ("end of the week", WED, FRI),
    ("end of the week", FRI, FRI),
    ("end of the week", date(2026, 12, 5), date(2026, 12, 11)),
    ("end of month", WED, date(2026, 12, 31)),
    ("the end of the month", date(2027, 2, 3), date(2027, 2, 28)),
    ("in 5 days", YEAR_END, date(2027, 1, 2)),
    # other languages
    ("3. Dezember", WED, date(2026, 12, 3)),
    ("nächsten Freitag", WED, FRI),
    ("4 décembre 2026", WED, FRI),
    ("vendredi prochain", WED, FRI),
    ("3 de diciembre de 2026", WED, date(2026, 12, 3)),
    ("el viernes", WED, FRI),
    ("4 december", WED, FRI),
    ("vrijdag", WED, FRI),
    ("4 dicembre", WED, FRI),
    ("venerdì", WED, FRI),
    ("4 de dezembro", WED, FRI),
    ("sexta-feira", WED, FRI),
    ("4 december 2026", WED, FRI),
    ("fredag", WED, FRI),
    ("måndag", WED, MON),
    ("15 März", WED, date(2027, 3, 15)),
    ("1er août", WED, date(2027, 8, 1)),
    # not dates
    ("February 30", WED, None),
    ("31.4.2027", WED, None),
    ("2026-13-01", WED, None),
    ("next blursday", WED, None),
    ("last Friday", WED, None),
    ("soon", WED, None),
    ("", WED, None),
    ("Friday and Monday", WED, None),
    ("4.12 people", WED, None),
]


@pytest.mark.parametrize(("phrase", "today", "expected"), DATE_PHRASES)
def test_parse_date_phrase(phrase: str, today: date, expected: date | None) -> None:
    assert parse_date_phrase(phrase, today) == expected


# --- parse_ask_directives ------------------------------------------------------------------


def test_full_directive_block() -> None:
    text = (
        "\n\nTo: eng\n"
        "Deadline: Friday\n"
        "Visibility: private\n"
        "Anonymous\n"
        "Share with: Bob@Example.com, carol@example.org\n"
        "Reminders: 3\n"
        "\n"
        "What should we build next quarter?\n"
        "Answer in a line or two.\n"
    )
    assert parse_ask_directives(text, WED) == AskDirectives(
        audience="eng",
        deadline=FRI,
        visibility="asker-only",
        anonymous=True,
        viewers=("bob@example.com", "carol@example.org"),
        reminders=3,
        text="What should we build next quarter?\nAnswer in a line or two.",
        errors=(),
    )


def test_no_directives_means_everything_is_the_question() -> None:
    parsed = parse_ask_directives("  \nWhat is your favourite tool?\n", WED)
    assert parsed == AskDirectives(
        None, None, None, None, (), None, "What is your favourite tool?", ()
    )


DIRECTIVE_FIELDS = [
    # (directive line, field, expected value)
    ("To: company", "audience", "company"),
    ("Audience: Everyone", "audience", "company"),
    ("LIST: Platform-Team", "audience", "platform-team"),
    ("list: eng@lists.corp.example", "audience", "eng"),
    ("Due: 2026-12-04", "deadline", FRI),
    ("by: 4.12.", "deadline", FRI),
    ("Deadline: today", "deadline", WED),
    ("Visibility: open", "visibility", "open"),
    ("Visibility: Public", "visibility", "open"),
    ("Visibility: shared", "visibility", "open"),
    ("Visibility: asker-only", "visibility", "asker-only"),
    ("Visibility: Asker only", "visibility", "asker-only"),
    ("Visibility: only me", "visibility", "asker-only"),
    ("Anonymous: yes", "anonymous", True),
    ("Anonymous: TRUE", "anonymous", True),
    ("anonymous: on", "anonymous", True),
    ("Anonymous: no", "anonymous", False),
    ("Anonymous: false", "anonymous", False),
    ("Anonymous: off", "anonymous", False),
    ("anonymous", "anonymous", True),
    ("Viewers: a@x.io b@y.io", "viewers", ("a@x.io", "b@y.io")),
    ("Delegate: Bob Smith <Bob@Corp.Example>", "viewers", ("bob@corp.example",)),
    ("share with: a@x.io; a@x.io", "viewers", ("a@x.io",)),
    ("Reminders: 0", "reminders", 0),
    ("Reminders: 10", "reminders", 10),
]


@pytest.mark.parametrize(("line", "field", "expected"), DIRECTIVE_FIELDS)
def test_each_directive(line: str, field: str, expected: object) -> None:
    parsed = parse_ask_directives(f"{line}\n\nHow was the offsite?", WED)
    assert getattr(parsed, field) == expected
    assert parsed.errors == ()
    assert parsed.text == "How was the offsite?"


DIRECTIVE_ERRORS = [
    # (directive line, field left empty, error)
    ("Deadline: next blursday", "deadline", "Deadline: cannot read 'next blursday'"),
    ("Due: 2026-11-30", "deadline", "Due: 2026-11-30 is in the past"),
    ("Deadline:", "deadline", "Deadline: no date given"),
    ("Deadline: February 30", "deadline", "Deadline: cannot read 'February 30'"),
    ("Visibility: secret", "visibility", "Visibility: use open or asker-only"),
    ("Anonymous: maybe", "anonymous", "Anonymous: use yes or no"),
    ("Viewers: bob", "viewers", "Viewers: 'bob' is not an email address"),
    ("Reminders: 11", "reminders", "Reminders: use a number from 0 to 10"),
    ("Reminders: lots", "reminders", "Reminders: use a number from 0 to 10"),
    (
        "To: everyone in sales!",
        "audience",
        "To: 'everyone in sales!' is not a list name; use company or a list name",
    ),
    # A list name never ends in punctuation (mailgate.addressing.SLUG_RE).
    ("To: eng-", "audience", "To: 'eng-' is not a list name; use company or a list name"),
]


@pytest.mark.parametrize(("line", "field", "error"), DIRECTIVE_ERRORS)
def test_directive_errors(line: str, field: str, error: str) -> None:
    parsed = parse_ask_directives(f"{line}\nWhat do you think?", WED)
    assert getattr(parsed, field) in (None, ())
    assert parsed.errors == (error,)
    assert parsed.text == "What do you think?"


def test_unknown_key_ends_the_block_and_belongs_to_the_question() -> None:
    parsed = parse_ask_directives("To: eng\nContext: we moved offices.\nDeadline: Friday", WED)
    assert parsed.audience == "eng"
    assert parsed.deadline is None
    assert parsed.text == "Context: we moved offices.\nDeadline: Friday"


def test_directives_only_at_the_very_top() -> None:
    parsed = parse_ask_directives("Quick question for everyone.\nDeadline: Friday", WED)
    assert parsed.deadline is None
    assert parsed.text == "Quick question for everyone.\nDeadline: Friday"


def test_blank_line_ends_the_block() -> None:
    parsed = parse_ask_directives("To: eng\n\nReminders: 2\nIs that a question?", WED)
    assert parsed.reminders is None
    assert parsed.text == "Reminders: 2\nIs that a question?"


def test_repeated_directive_keeps_the_first_and_says_so() -> None:
    parsed = parse_ask_directives("Deadline: Friday\nDue: Monday\nQ?", WED)
    assert parsed.deadline == FRI
    assert parsed.errors == ("Due: given more than once; only the first line counts",)


def test_viewers_lines_add_up() -> None:
    parsed = parse_ask_directives("Viewers: a@x.io\nShare with: b@x.io, A@x.io\nQ?", WED)
    assert parsed.viewers == ("a@x.io", "b@x.io")


# --- parse_not_yet -------------------------------------------------------------------------

NOT_YET = [
    # (reply, expected)
    ("Don't know yet, by Friday", NotYet(FRI)),
    ("I don't know yet - I'll answer by 2026-12-04.", NotYet(FRI)),
    ("Not sure yet, will get back to you by Dec 4", NotYet(FRI)),
    ("No answer yet, by end of week", NotYet(FRI)),
    ("don't know yet", NotYet(None)),
    ("DON'T KNOW YET!!", NotYet(None)),
    ("I don\u2019t know yet \u2014 by Monday.", NotYet(MON)),
    ("Hi Anna,\n\nI don't know yet, I'll answer by 7.12.", NotYet(MON)),
    ("Sorry, I don't know that yet. I will reply by Monday.", NotYet(MON)),
    ("Don't know yet. We tried it on Monday and it was fine.", NotYet(None)),
    ("Don't know yet, by 2020-01-01", NotYet(None)),
    ("I don't know yet\nbut I can tell you in 2 weeks", NotYet(date(2026, 12, 16))),
    ("Weiß ich noch nicht, bis Freitag", NotYet(FRI)),
    ("Ich weiß es noch nicht. Ich melde mich bis zum 7.12.", NotYet(MON)),
    ("Je ne sais pas encore, d'ici vendredi", NotYet(FRI)),
    ("Todavía no lo sé, para el viernes", NotYet(FRI)),
    ("Ik weet het nog niet, uiterlijk vrijdag", NotYet(FRI)),
    ("Non lo so ancora, entro venerdì", NotYet(FRI)),
    ("Ainda não sei, até sexta-feira", NotYet(FRI)),
    ("Jag vet inte än, senast fredag", NotYet(FRI)),
    # answers, not promises
    ("We tried it and I don't know yet whether it helps. More next week.", None),
    ("I don't know yet whether it helps, but the team likes it.", None),
    ("I know", None),
    ("I don't know.", None),
    ("Not yet.", None),
    ("Yes, we shipped it on Friday.", None),
    ("", None),
    # quoted lines are someone else's words; the member's own first line is the opening
    ("> Don't know yet", None),
    ("> Which CI do you use?\n> Any plans?\nDon't know yet, by Friday", NotYet(FRI)),
]


@pytest.mark.parametrize(("reply", "expected"), NOT_YET)
def test_parse_not_yet(reply: str, expected: NotYet | None) -> None:
    assert parse_not_yet(reply, WED) == expected


# --- return_date ---------------------------------------------------------------------------

RECEIVED = date(2026, 11, 30)
DEC3 = date(2026, 12, 3)

RETURN_DATES = [
    # (body, subject, expected)
    ("I am out of the office until 3 December with limited access to email.", "", DEC3),
    ("I'm back on Monday, 7 December.", "", MON),
    ("I will be back in the office on Thursday 3 December.", "", DEC3),
    ("Returning 3 December. For urgent matters call our 24/7 hotline.", "", DEC3),
    ("I will return on Dec 3 and reply then.", "", DEC3),
    ("Thank you for your message.", "Out of office until 2026-12-03", DEC3),
    ("I'm on leave until Friday.", "", FRI),
    ("I am out of office from 1 Dec to 5 Dec.", "", date(2026, 12, 5)),
    ("Out of office 1-5 December.", "", date(2026, 12, 5)),
    ("I'm out from 1 Dec and will be back on 7 Dec.", "", MON),
    ("Ich bin bis einschließlich 3. Dezember nicht im Büro.", "", DEC3),
    ("Vielen Dank. Ich bin ab dem 4.12. wieder im Büro.", "", FRI),
    ("Ich bin ab dem 1.12. nicht im Büro und ab dem 7.12. wieder erreichbar.", "", MON),
    ("Abwesend vom 1. bis 5. Dezember.", "", date(2026, 12, 5)),
    ("Je suis de retour le 3 décembre.", "", DEC3),
    ("Je suis absent jusqu'au 3 décembre inclus.", "", DEC3),
    ("Estoy fuera de la oficina hasta el 3 de diciembre.", "", DEC3),
    ("Estaré de vuelta el 3 de diciembre.", "", DEC3),
    ("Ik ben afwezig tot en met 3 december.", "", DEC3),
    ("Ik ben terug op 3 december.", "", DEC3),
    ("Sono fuori ufficio fino al 3 dicembre.", "", DEC3),
    ("Rientro il 3 dicembre.", "", DEC3),
    ("Estou ausente até 3 de dezembro.", "", DEC3),
    ("Jag är tillbaka den 3 december.", "", DEC3),
    # nothing, or nothing still ahead
    ("I am away until further notice.", "", None),
    ("Ich bin ab dem 1.12. nicht im Büro.", "", None),
    ("Thanks for your email of 28 November. I am travelling.", "", None),
    ("I was out until 2026-11-20.", "", None),
    ("", "Automatic reply: Budget review on 5 December", None),
    ("Back on 30 February.", "", None),
]


@pytest.mark.parametrize(("body", "subject", "expected"), RETURN_DATES)
def test_return_date(body: str, subject: str, expected: date | None) -> None:
    assert return_date(body, subject, RECEIVED) == expected


@pytest.mark.parametrize(
    ("body", "received", "expected"),
    [
        # across the new year
        ("Back on 5 January.", YEAR_END, date(2027, 1, 5)),
        ("Zurück am 4.1.", YEAR_END, date(2027, 1, 4)),
        # a stale auto-reply names a date just gone, not one a year away
        ("I'm out until 3 December.", date(2026, 12, 10), None),
        # a weekday is the next one after the reply was sent
        ("Back on Monday.", MON, date(2026, 12, 14)),
    ],
)
def test_return_date_year_and_weekday(body: str, received: date, expected: date | None) -> None:
    assert return_date(body, "", received) == expected


def test_body_is_read_before_subject() -> None:
    # Subjects often repeat the original mail's subject; the body is the sender's own words.
    assert return_date("Back on 7 December.", "Re: plan until 3 December", RECEIVED) == MON
