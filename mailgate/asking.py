"""Asking stage: read the words of a question mail and of the replies to it (pure).

Executives mail a question to ``ask@DOMAIN``; members answer by reply. The text that
reaches this module is already decoded plain text with quotes and signatures stripped
(:mod:`mailgate.bodies`). Nothing here touches the database, the clock or a mail object:
every date is read relative to a ``today`` / ``received`` the caller passes in.

Inputs and outputs:

* :func:`parse_ask_directives` — the question mail's text → :class:`AskDirectives`: the
  ``Key: value`` lines at the very top (audience, deadline, visibility, anonymity,
  viewers, reminders), the question text after them, and readable errors for the asker.
* :func:`parse_date_phrase` — one date phrase ("Dec 4", "4.12.", "next Friday",
  "end of month", in eight languages) → the date it names, or ``None``.
* :func:`parse_not_yet` — a member's reply → :class:`NotYet` when it *opens* with
  "I don't know yet" (and the date they promise, if any), else ``None``.
* :func:`return_date` — an out-of-office auto-reply (text and subject) → the date the
  person says they are back, or ``None``.

Conventions shared by all of them:

* Text is folded before matching: accents dropped, case folded (``ß`` → ``ss``), curly
  apostrophes and dashes made plain. So one ASCII table of month and weekday names serves
  English, German, French, Spanish, Dutch, Italian, Portuguese and Swedish.
* A day and month without a year means the next such date on or after ``today``
  (3 December already passed → next year). Out-of-office replies are the exception: there
  the year nearest ``received`` is used, because a stale auto-reply that still says "back
  on 3 December" on 10 December means a past date, not one a year away.
* Slash dates are month/day (US) unless the first number is over 12; dotted dates
  (``4.12.2026``, ``4.12.``) and dashed ones (``04-12-2026``) are day.month (European).
* A weekday name means the next such day strictly after ``today``; "next Friday" is the
  same day as "Friday" (people say both and mean the coming one).
"""

from __future__ import annotations

import bisect
import calendar
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from mailgate.addressing import SLUG_RE

__all__ = [
    "AskDirectives",
    "NotYet",
    "parse_ask_directives",
    "parse_date_phrase",
    "parse_not_yet",
    "return_date",
]


# --- value objects -------------------------------------------------------------------------


@dataclass(frozen=True)
class AskDirectives:
    """What the asker asked for at the top of the question mail.

    A field is ``None`` (or empty) when the asker did not say, or said something we could
    not read — then ``errors`` says what and why, so the asker can be told.
    """

    audience: str | None  # "company" or a list slug, from "To:"/"Audience:"/"List:" line
    deadline: date | None  # from "Deadline:"/"Due:"/"By:" line
    visibility: str | None  # "open" or "asker-only"
    anonymous: bool | None  # "Anonymous: yes/no"; a bare "Anonymous" line means yes
    viewers: tuple[str, ...]  # "Viewers:"/"Share with:"/"Delegate:" addresses, lowercased
    reminders: int | None  # "Reminders: 3" (0..10)
    text: str  # the question text: everything after the directive block, stripped
    errors: tuple[str, ...]  # human-readable problems, one per bad directive line


@dataclass(frozen=True)
class NotYet:
    """A reply saying "I don't know yet"; ``by`` is the promised date, if one was given."""

    by: date | None


# --- folding -------------------------------------------------------------------------------

_PLAIN = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201b": "'",
        "\u02bc": "'",
        "\u00b4": "'",
        "`": "'",
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u00a0": " ",
        "\u202f": " ",
        "\u00b0": "o",  # "1°" typed for the Spanish/Portuguese ordinal "1º"
    }
)


def _fold(text: str) -> str:
    """Lower-case ASCII-ish text for matching: accents off, ``ß`` → ``ss``, plain quotes."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_PLAIN))
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return bare.casefold()


# --- names ---------------------------------------------------------------------------------
# Folded spellings. A hyphen in a name also matches a space or nothing ("segunda feira").

_MONTH_NAMES: dict[int, tuple[str, ...]] = {
    1: ("january", "jan", "januar", "janner", "janvier", "enero", "januari", "gennaio", "janeiro"),
    2: ("february", "feb", "februar", "fevrier", "febrero", "februari", "febbraio", "fevereiro"),
    3: ("march", "mar", "marz", "maerz", "mars", "marzo", "maart", "mrt", "marco"),
    4: ("april", "apr", "avril", "abril", "aprile"),
    5: ("may", "mai", "mayo", "mei", "maggio", "maio", "maj"),
    6: ("june", "jun", "juni", "juin", "junio", "giugno", "junho"),
    7: ("july", "jul", "juli", "juillet", "julio", "luglio", "julho"),
    8: ("august", "aug", "aout", "agosto", "augustus", "augusti"),
    9: (
        "september",
        "sep",
        "sept",
        "septembre",
        "septiembre",
        "setiembre",
        "settembre",
        "setembro",
    ),
    10: ("october", "oct", "oktober", "okt", "octobre", "octubre", "ottobre", "outubro"),
    11: ("november", "nov", "novembre", "noviembre", "novembro"),
    12: ("december", "dec", "dezember", "dez", "decembre", "diciembre", "dicembre", "dezembro"),
}

_WEEKDAY_NAMES: dict[int, tuple[str, ...]] = {
    0: ("monday", "montag", "lundi", "lunes", "maandag", "lunedi", "segunda-feira", "mandag"),
    1: ("tuesday", "dienstag", "mardi", "martes", "dinsdag", "martedi", "terca-feira", "tisdag"),
    2: (
        "wednesday",
        "mittwoch",
        "mercredi",
        "miercoles",
        "woensdag",
        "mercoledi",
        "quarta-feira",
        "onsdag",
    ),
    3: (
        "thursday",
        "donnerstag",
        "jeudi",
        "jueves",
        "donderdag",
        "giovedi",
        "quinta-feira",
        "torsdag",
    ),
    4: ("friday", "freitag", "vendredi", "viernes", "vrijdag", "venerdi", "sexta-feira", "fredag"),
    5: ("saturday", "samstag", "sonnabend", "samedi", "sabado", "zaterdag", "sabato", "lordag"),
    6: ("sunday", "sonntag", "dimanche", "domingo", "zondag", "domenica", "sondag"),
}

# Short forms that are also ordinary words ("mon" is French for "my", "sun", "sat",
# "segunda" = "second"): accepted alone only when the whole phrase is a date (a Deadline:
# line), and in running text only in front of a day and month ("Fri, 4 Dec").
_WEEKDAY_SHORT: dict[int, tuple[str, ...]] = {
    0: ("mon", "segunda"),
    1: ("tue", "tues", "terca"),
    2: ("wed", "quarta"),
    3: ("thu", "thur", "thurs", "quinta"),
    4: ("fri", "sexta"),
    5: ("sat",),
    6: ("sun",),
}


def _lookup(table: dict[int, tuple[str, ...]]) -> dict[str, int]:
    return {name.replace("-", ""): number for number, names in table.items() for name in names}


_MONTH_BY_NAME = _lookup(_MONTH_NAMES)
_WEEKDAY_BY_NAME = _lookup(_WEEKDAY_NAMES) | _lookup(_WEEKDAY_SHORT)


def _alternation(*tables: dict[int, tuple[str, ...]]) -> str:
    # Longest first, so "mayo" wins over "may" and "sept" over "sep".
    names = sorted({n for table in tables for ns in table.values() for n in ns}, key=len)
    return "|".join(re.escape(n).replace(r"\-", r"[- ]?") for n in reversed(names))


def _name_key(name: str) -> str:
    return re.sub(r"[- ]", "", name)


_MONTH = _alternation(_MONTH_NAMES)
_WEEKDAY_FULL = _alternation(_WEEKDAY_NAMES)
_WEEKDAY_ANY = _alternation(_WEEKDAY_NAMES, _WEEKDAY_SHORT)

_NUMBER_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "a couple of": 2,
    "couple of": 2,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}

_DAY_UNITS = "days|day|tagen|tage|tag|jours|jour|dias|dia|dagen|dagar|dag|giorni|giorno"
_WEEK_UNITS = (
    "weeks|week|wochen|woche|semaines|semaine|semanas|semana|weken|veckor|vecka|settimane|settimana"
)


# --- year inference ------------------------------------------------------------------------

_Infer = Callable[[int, int, date], date | None]


def _next_on_or_after(month: int, day: int, today: date) -> date | None:
    """The first (month, day) on or after ``today``; skips years where it does not exist."""
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    for year in range(today.year, today.year + 9):  # 9 years reach the next 29 February
        try:
            found = date(year, month, day)
        except ValueError:
            continue
        if found >= today:
            return found
    return None


def _nearest(month: int, day: int, today: date) -> date | None:
    """The (month, day) closest to ``today``, before or after it (for auto-replies)."""
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    options = []
    for year in (today.year - 1, today.year, today.year + 1):
        try:
            options.append(date(year, month, day))
        except ValueError:
            continue
    return min(options, key=lambda d: abs((d - today).days), default=None)


def _day_month(day: str, month: int, year: str | None, today: date, infer: _Infer) -> date | None:
    if year is None:
        return infer(month, int(day), today)
    full_year = int(year) + (2000 if len(year) == 2 else 0)
    try:
        return date(full_year, month, int(day))
    except ValueError:
        return None


# --- the date scanner ----------------------------------------------------------------------
# Every pattern runs over folded text. Where two matches overlap, the one that starts first
# wins, then the longer one: so "Friday, 4 December" is one date, not a weekday and a date.


@dataclass(frozen=True)
class _Found:
    start: int
    end: int
    day: date | None  # None: it looks like a date but is not one (30 February)
    span: bool = False  # "1-5 December": ``day`` is the end of a stretch of days


_Resolve = Callable[[re.Match[str], date, _Infer], date | None]

_ORDINAL = r"(?:st|nd|rd|th|er|re|e|o|a|\.)?"
_YEAR_TAIL = r"(?:(?:\s*,\s*|\s+de\s+|\s+del\s+|\s+|-)(?P<y>\d{4})(?!\d))?"
_ARTICLE = r"(?:the|den|dem|der|le|el|il|de|op)"
# "Friday, 4 December", "Fri 4.12.": a weekday in front of a full date is only decoration.
_WEEKDAY_PREFIX = rf"(?:\b(?:{_WEEKDAY_ANY})\b\.?,?\s+(?:{_ARTICLE}\s+)?)?"


def _numeric(m: re.Match[str], today: date, infer: _Infer) -> date | None:
    return _day_month(m["d"], int(m["m"]), m["y"], today, infer)


def _named_month(m: re.Match[str], today: date, infer: _Infer) -> date | None:
    return _day_month(m["d"], _MONTH_BY_NAME[_name_key(m["mon"])], m["y"], today, infer)


def _slashed(m: re.Match[str], today: date, infer: _Infer) -> date | None:
    first, second = int(m["a"]), int(m["b"])
    # US order unless it cannot be: 13/4 is 13 April wherever you are.
    day, month = (first, second) if first > 12 else (second, first)
    return _day_month(str(day), month, m["y"], today, infer)


def _weekday(m: re.Match[str], today: date, infer: _Infer) -> date:
    wanted = _WEEKDAY_BY_NAME[_name_key(m["wd"])]
    return today + timedelta(days=(wanted - today.weekday()) % 7 or 7)


_TODAY_WORDS = "today|heute|aujourd'hui|hoy|vandaag|oggi|hoje|idag|i dag"
_TOMORROW_WORDS = r"tomorrow|(?<!guten\s)morgen|demain|manana|domani|amanha|imorgon|i morgon"
_AFTER_TOMORROW_WORDS = (
    "the day after tomorrow|day after tomorrow|ubermorgen|apres-demain|apres demain"
    "|pasado manana|overmorgen|dopodomani|depois de amanha|i overmorgon|overmorgon"
)


def _named_day(m: re.Match[str], today: date, infer: _Infer) -> date:
    word = m[0]
    if re.fullmatch(_TODAY_WORDS, word):
        return today
    if re.fullmatch(_TOMORROW_WORDS, word):
        return today + timedelta(days=1)
    return today + timedelta(days=2)


def _in_some_days(m: re.Match[str], today: date, infer: _Infer) -> date:
    count = " ".join(m["n"].split())
    n = int(count) if count.isdigit() else _NUMBER_WORDS[count]
    per = 7 if re.fullmatch(_WEEK_UNITS, m["unit"]) else 1
    return today + timedelta(days=n * per)


def _end_of_week(m: re.Match[str], today: date, infer: _Infer) -> date:
    # The working week ends on Friday; on a Friday that is today.
    return today + timedelta(days=(4 - today.weekday()) % 7)


def _end_of_month(m: re.Match[str], today: date, infer: _Infer) -> date:
    return today.replace(day=calendar.monthrange(today.year, today.month)[1])


_DATE_PATTERNS: tuple[tuple[str, _Resolve], ...] = (
    (
        rf"{_WEEKDAY_PREFIX}(?<![\d./-])(?P<y>\d{{4}})(?P<sep>[-/.])(?P<m>\d{{1,2}})(?P=sep)"
        r"(?P<d>\d{1,2})(?!\d)",
        _numeric,
    ),
    (
        rf"{_WEEKDAY_PREFIX}(?<!\d)(?P<d>\d{{1,2}}){_ORDINAL}\s*(?:of\s+|de\s+|-)?"
        rf"(?P<mon>{_MONTH})\b\.?{_YEAR_TAIL}",
        _named_month,
    ),
    (
        rf"{_WEEKDAY_PREFIX}\b(?P<mon>{_MONTH})(?:\.\s*|\s+)(?:the\s+)?(?P<d>\d{{1,2}})"
        r"(?:st|nd|rd|th)?\b(?:(?:\s*,\s*|\s+)(?P<y>\d{4})(?!\d))?",
        _named_month,
    ),
    (
        # 4.12.2026, 4.12.26, 4.12. — the trailing dot (or the end of the text) is what tells
        # a date from a decimal number; the look-arounds keep IP and version numbers out.
        rf"{_WEEKDAY_PREFIX}(?<![\d.])(?P<d>\d{{1,2}})\.\s?(?P<m>\d{{1,2}})"
        r"(?:\.(?:(?P<y>\d{4}|\d{2})(?!\d))?(?![\d.]\d)|$)",
        _numeric,
    ),
    (
        # 04-12-2026 is day-month-year: the dashed form is the Dutch and Scandinavian one.
        rf"{_WEEKDAY_PREFIX}(?<![\d-])(?P<d>\d{{1,2}})-(?P<m>\d{{1,2}})-(?P<y>\d{{4}})(?![\d-])",
        _numeric,
    ),
    (
        rf"{_WEEKDAY_PREFIX}(?<![\d/])(?P<a>\d{{1,2}})/(?P<b>\d{{1,2}})"
        r"(?:/(?P<y>\d{4}|\d{2}))?(?![\d/])",
        _slashed,
    ),
    (rf"\b(?:{_AFTER_TOMORROW_WORDS}|{_TODAY_WORDS}|{_TOMORROW_WORDS})\b", _named_day),
    (
        r"\b(?:in|within|dans|en|over|binnen|tra|fra|entro|em|om)\s+"
        r"(?P<n>\d{1,3}|(?:a\s+)?couple\s+of|an?|one|two|three|four|five|six|seven|eight|nine"
        rf"|ten)\s+(?P<unit>{_DAY_UNITS}|{_WEEK_UNITS})\b",
        _in_some_days,
    ),
    (
        r"\b(?:(?:the\s+)?end\s+of\s+(?:the\s+|this\s+)?week|ende\s+(?:der|dieser)\s+woche"
        r"|(?:la\s+)?fin\s+de\s+(?:la\s+)?semaine|(?:el\s+)?(?:fin|final)\s+de\s+(?:la\s+)?"
        r"semana|(?:het\s+)?eind\s+van\s+de\s+week|(?:la\s+)?fine\s+(?:della\s+)?settimana"
        r"|(?:o\s+)?fim\s+da\s+semana|slutet\s+av\s+veckan)\b",
        _end_of_week,
    ),
    (
        r"\b(?:(?:the\s+)?end\s+of\s+(?:the\s+|this\s+)?month|ende\s+(?:des|dieses)\s+monats"
        r"|monatsende|(?:la\s+)?fin\s+du\s+mois|(?:el\s+)?(?:fin|final)\s+del?\s+mes"
        r"|(?:het\s+)?eind\s+van\s+de\s+maand|(?:la\s+)?fine\s+(?:del\s+)?mese"
        r"|(?:o\s+)?fim\s+do\s+mes|slutet\s+av\s+manaden)\b",
        _end_of_month,
    ),
)

# "1-5 December", "du 1er au 5 décembre", "1. bis 5. Dezember": only out-of-office replies
# name stretches of days, and only the end of one matters there.
_SPAN_PATTERN = re.compile(
    rf"(?<!\d)\d{{1,2}}{_ORDINAL}\s*(?:-|\s(?:to|till|until|through|thru|bis|au|al|a|tot"
    rf"|t/m|tot en met|och|ate)\s)\s*(?P<d>\d{{1,2}}){_ORDINAL}\s*(?:of\s+|de\s+)?"
    rf"(?P<mon>{_MONTH})\b\.?{_YEAR_TAIL}"
)


@dataclass(frozen=True)
class _Reader:
    """One set of patterns: which weekday spellings count alone, and whether spans do."""

    patterns: tuple[tuple[re.Pattern[str], _Resolve], ...]
    spans: bool


def _reader(weekday_names: str, *, spans: bool) -> _Reader:
    weekday = (rf"\b(?P<wd>{weekday_names})\b\.?", _weekday)
    table = (*_DATE_PATTERNS, weekday)
    return _Reader(tuple((re.compile(p), resolve) for p, resolve in table), spans)


_PHRASE_READER = _reader(_WEEKDAY_ANY, spans=False)
_TEXT_READER = _reader(_WEEKDAY_FULL, spans=False)
_AWAY_READER = _reader(_WEEKDAY_FULL, spans=True)


def _scan(
    folded: str, today: date, reader: _Reader, infer: _Infer = _next_on_or_after
) -> list[_Found]:
    """Every date-looking stretch of ``folded``, left to right, none overlapping."""
    hits: list[tuple[int, int, _Found]] = []
    for pattern, resolve in reader.patterns:
        for m in pattern.finditer(folded):
            hits.append((m.start(), m.end(), _Found(m.start(), m.end(), resolve(m, today, infer))))
    if reader.spans:
        for m in _SPAN_PATTERN.finditer(folded):
            day = _named_month(m, today, infer)
            hits.append((m.start(), m.end(), _Found(m.start(), m.end(), day, span=True)))
    hits.sort(key=lambda hit: (hit[0], hit[0] - hit[1]))
    found: list[_Found] = []
    for start, _, hit in hits:
        if not found or start >= found[-1].end:
            found.append(hit)
    return found


# --- parse_date_phrase ---------------------------------------------------------------------

# Words people put around a date in a "Deadline:" line ("by next Friday", "el viernes
# próximo"); they add nothing, so they are dropped before the phrase must be a date.
_LEADING_FILLER = re.compile(
    r"^(?:(?:no\s+later\s+than|at\s+the\s+latest\s+by|on\s+or\s+before|by|on|before|until|till"
    r"|the|next|this|coming|am|bis|zum|vor|spatestens|nachsten|naechsten|kommenden|diesen|le|la"
    r"|ce|d'ici|avant|el|para|antes|del|de|hasta|proximo|este|op|voor|uiterlijk|volgende|komende"
    r"|deze|il|entro|prossimo|questo|per|ate|proxima|den|pa|nasta|senast|innan|fore)[\s,]+)+"
)
_TRAILING_FILLER = re.compile(
    r"(?:[\s,]+(?:at\s+the\s+latest|latest|spatestens|prochaine?|que\s+vient|proximo"
    r"|prossimo|au\s+plus\s+tard|a\s+mas\s+tardar|uiterlijk|senast))+$"
)


def parse_date_phrase(phrase: str, today: date) -> date | None:
    """The date one phrase names, or ``None`` when the phrase is not (only) a date.

    A phrase without a year means the next such date on or after ``today``; weekday names
    mean the next such weekday strictly after ``today``. Impossible dates (30 February)
    are ``None``.
    """
    folded = _fold(phrase).strip().rstrip(",;:!? ").strip()
    folded = _TRAILING_FILLER.sub("", _LEADING_FILLER.sub("", folded))
    if not folded:
        return None
    found = _scan(folded, today, _PHRASE_READER)
    if len(found) != 1 or found[0].start != 0 or folded[found[0].end :].strip(" .") != "":
        return None
    return found[0].day


# --- sentences and cues --------------------------------------------------------------------


def _sentence_breaks(folded: str, found: list[_Found]) -> list[int]:
    """Positions of sentence ends (``.!?;`` and blank lines) outside any date ("3. Dez")."""
    breaks = []
    dates = iter(found)
    current = next(dates, None)
    for m in re.finditer(r"[.!?;](?=\s|$)|\n\s*\n", folded):
        # Both lists run left to right, so one pass over the dates is enough.
        while current is not None and current.end <= m.start():
            current = next(dates, None)
        if current is None or m.start() < current.start:
            breaks.append(m.start())
    return breaks


def _sentence_start(breaks: list[int], position: int) -> int:
    index = bisect.bisect_left(breaks, position)
    return breaks[index - 1] + 1 if index else 0


def _sentence_end(breaks: list[int], position: int, limit: int) -> int:
    index = bisect.bisect_left(breaks, position)
    return breaks[index] if index < len(breaks) else limit


def _cued(cues: str, max_gap_words: int) -> re.Pattern[str]:
    """A cue, then at most ``max_gap_words`` words, then the end (where the date starts)."""
    gap = rf"(?:[\s,]+[^\s\d,.!?;]+){{0,{max_gap_words}}}"
    return re.compile(rf"(?:^|(?<=[\s,(]))(?:{cues}){gap}[\s,:]*$")


# --- parse_not_yet -------------------------------------------------------------------------

_QUOTED_LINES = re.compile(r"^(?:[ \t]*(?:>[^\n]*)?(?:\n|$))+")
_GREETING = re.compile(
    r"^(?:hi|hello|hey|dear|good\s+morning|morning|hallo|moin|servus|guten\s+(?:morgen|tag)"
    r"|liebe[rs]?|bonjour|salut|coucou|hola|buenos\s+dias|buenas|hoi|beste|ciao|salve|ola|oi"
    r"|bom\s+dia|hej|hejsan|god\s+morgon)\b[^\n.!?]{0,40}?(?:[,!:]\s*|\s*\n\s*)"
)
_SOFTENER = (
    r"(?:(?:sorry|honestly|hmm+|um+|uh+|well|ok|okay|so|ah|oh|leider|desole|lo\s+siento)\W+)*"
)
_DONT = r"(?:do\s+not|don'?t)"
_NOT_YET_PHRASES = "|".join(
    (
        # English
        rf"(?:i\s+)?(?:really\s+|honestly\s+|still\s+|just\s+)?{_DONT}\s+know\s+"
        r"(?:that\s+|this\s+|it\s+)?yet",
        r"dunno\s+yet",
        r"(?:i'?m\s+|i\s+am\s+)?(?:still\s+)?not\s+(?:sure|certain)\s+yet",
        r"(?:i\s+have\s+|i'?ve\s+(?:got\s+)?)?no\s+(?:answer|idea|clue|decision)\s+yet",
        rf"(?:i\s+)?{_DONT}\s+have\s+(?:an?\s+)?(?:answer|idea|decision)\s+yet",
        r"(?:i\s+)?(?:can'?t|cannot|can\s+not)\s+(?:say|tell|answer)\s+(?:that\s+|this\s+|it\s+)?yet",
        r"not\s+known\s+yet",
        # German
        r"(?:das\s+)?weiss\s+ich\s+(?:leider\s+|selbst\s+)?noch\s+nicht",
        r"(?:ich\s+)?weiss\s+(?:es\s+|das\s+)?(?:leider\s+)?noch\s+nicht",
        r"(?:das\s+)?kann\s+ich\s+(?:leider\s+)?noch\s+nicht\s+sagen",
        r"(?:ich\s+bin\s+(?:mir\s+)?)?noch\s+nicht\s+sicher",
        r"noch\s+keine\s+(?:antwort|ahnung|entscheidung)",
        r"noch\s+unklar",
        # French
        r"(?:je\s+)?(?:ne\s+)?(?:le\s+)?sais\s+pas\s+encore",
        r"(?:je\s+ne\s+suis\s+)?pas\s+encore\s+(?:sure?|certaine?)",
        r"(?:je\s+n'?ai\s+)?pas\s+encore\s+(?:de\s+)?reponse",
        r"aucune\s+idee\s+pour\s+l'?instant",
        # Spanish
        r"(?:todavia|aun)\s+no\s+(?:lo\s+)?se",
        r"no\s+(?:lo\s+)?se\s+(?:todavia|aun)",
        r"(?:todavia|aun)\s+no\s+(?:tengo\s+(?:una\s+)?respuesta|estoy\s+segur[oa])",
        r"no\s+estoy\s+segur[oa]\s+(?:todavia|aun)",
        # Dutch
        r"(?:dat\s+)?weet\s+ik\s+nog\s+niet",
        r"(?:ik\s+)?weet\s+(?:het\s+|dat\s+)?nog\s+niet",
        r"nog\s+geen\s+(?:antwoord|idee)",
        r"(?:ik\s+ben\s+)?nog\s+niet\s+zeker",
        # Italian
        r"non\s+(?:lo\s+)?so\s+ancora",
        r"ancora\s+non\s+(?:lo\s+)?so",
        r"non\s+(?:ho\s+ancora\s+(?:una\s+)?risposta|sono\s+ancora\s+sicur[oa])",
        r"ancora\s+nessuna\s+risposta",
        # Portuguese
        r"ainda\s+nao\s+(?:o\s+)?sei",
        r"nao\s+sei\s+ainda",
        r"ainda\s+nao\s+tenho\s+(?:uma\s+)?(?:resposta|certeza)",
        r"ainda\s+sem\s+resposta",
        # Swedish
        r"(?:det\s+)?vet\s+jag\s+inte\s+(?:an|annu)",
        r"(?:jag\s+)?vet\s+(?:inte|ej)\s+(?:an|annu)",
        r"inget\s+svar\s+(?:an|annu)",
        r"(?:jag\s+ar\s+)?inte\s+saker\s+(?:an|annu)",
    )
)
# The phrase must close its clause: "I don't know yet whether it helps, we tried …" is an
# answer about the question, not a promise to answer later.
_NOT_YET = re.compile(
    rf"^[\s\W]*{_SOFTENER}(?:{_NOT_YET_PHRASES})(?=\s*(?:$|[-,.;:!?()]|\n"
    r"|(?:but|and|so|i'?ll|i\s+will|will|by|before|until|aber|bis|mais|d'ici|avant|pero|para"
    r"|antes|hasta|maar|voor|ma|entro|mas|ate|men|till|innan)\b))"
)
_BY_CUES = (
    r"by|before|until|till|no\s+later\s+than|latest|bis|vor|spatestens|d'ici|avant|jusqu\S*"
    r"|au\s+plus\s+tard|para|antes|hasta|voor|uiterlijk|tegen|entro|prima|per|ate|fore|innan"
    r"|senast"
)
_BY_CUED = _cued(_BY_CUES, 3)


def parse_not_yet(text: str, today: date) -> NotYet | None:
    """A :class:`NotYet` when the reply opens with "I don't know yet", else ``None``.

    Only the opening counts (after quoted lines and a greeting such as "Hi Anna,"): a reply
    that mentions not knowing somewhere in its middle is an answer. The promised date is
    the first date in the opening sentence, or a later date in the first paragraph that
    follows "by" / "bis" / "d'ici" / "para" / …; dates before ``today`` are ignored.
    """
    # Interleaved replies keep the quoted question above the answer (mailgate.bodies); the
    # opening is the member's first own line, never a quoted one.
    folded = _QUOTED_LINES.sub("", _fold(text)).lstrip()
    greeting = _GREETING.match(folded)
    if greeting:
        folded = folded[greeting.end() :]
    opening = _NOT_YET.match(folded)
    if opening is None:
        return None
    rest = folded[opening.end() :]
    paragraph = re.split(r"\n\s*\n", rest, maxsplit=1)[0][:400]
    found = _scan(paragraph, today, _TEXT_READER)
    breaks = _sentence_breaks(paragraph, found)
    first_sentence_end = breaks[0] if breaks else len(paragraph)
    for f in found:
        if f.day is None or f.day < today:
            continue
        if f.start < first_sentence_end:
            return NotYet(f.day)
        if _BY_CUED.search(paragraph, _sentence_start(breaks, f.start), f.start):
            return NotYet(f.day)
    return NotYet(None)


# --- return_date ---------------------------------------------------------------------------

# Words after which a date is the day the person is back (or their last day away, which
# we treat the same: the reply names one date and we return it as named).
_BACK_CUES = (
    r"until|till|til|'til|through|thru|back|returning|return|returns|again|available"
    r"|bis|zuruck|zurueck|wieder|jusqu\S*|retour|de\s+retour|hasta|vuelta|regres\w*|volver\w*"
    r"|vuelvo|tot|terug|weer|fino|rientr\w*|ritorno|ritornero|torno|tornero|nuovo|ate|volta"
    r"|regresso|retorno|tillbaka|igen|t/m|t\.o\.m\."
)
_BACK_CUED = _cued(_BACK_CUES, 5)
# "from" words: the date after them is a return date only when a back-word follows it
# ("ab dem 4.12. wieder im Büro"), else it is the first day away ("ab dem 1.12. nicht da").
_FROM_CUED = _cued(
    r"from|ab|vanaf|fran|fran\s+och\s+med|a\s+partir\s+du|a\s+partir\s+de|a\s+partire\s+da\w*"
    r"|dal|dalla|desde|des|a\s+compter\s+du",
    2,
)
_BACK_AFTER = re.compile(
    r"\b(?:back|again|available|wieder|zuruck|zurueck|erreichbar|weer|terug|bereikbaar|retour"
    r"|disponible|vuelta|nuovo|disponibile|volta|disponivel|tillbaka|igen|anbar)\b"
)
_RANGE_JOIN = re.compile(
    r"\s*(?:-|to|till|until|through|thru|bis(?:\s+(?:zum|einschliesslich|inklusive))?|au"
    r"|jusqu'au|al|hasta(?:\s+el)?|tot(?:\s+en\s+met)?|t/m|fino\s+al|a|ate|och)\s*(?:the\s+)?"
)


# An auto-reply's own words are a few lines; anything much longer is the original mail
# appended below them, where dates mean something else.
_AWAY_READ_LIMIT = 4000


def _away_candidates(folded: str, received: date) -> tuple[list[date], list[date]]:
    """(dates cued as a return, dates cued only by "from … back"), in text order."""
    found = _scan(folded, received, _AWAY_READER, _nearest)
    breaks = _sentence_breaks(folded, found)
    cued: list[date] = []
    from_back: list[date] = []
    for i, f in enumerate(found):
        if f.day is None:
            continue
        # A cue is at most a few words before the date, so a short look back is enough.
        window = max(_sentence_start(breaks, f.start), f.start - 120)
        joined = i > 0 and _RANGE_JOIN.fullmatch(folded, found[i - 1].end, f.start) is not None
        if f.span or joined or _BACK_CUED.search(folded, window, f.start):
            cued.append(f.day)
        elif _FROM_CUED.search(folded, window, f.start):
            # The back-word must come before the next date: in "ab 1.12. nicht da, ab dem
            # 7.12. wieder da" the "wieder" belongs to the 7th.
            stop = found[i + 1].start if i + 1 < len(found) else len(folded)
            stop = min(stop, _sentence_end(breaks, f.end, len(folded)))
            if _BACK_AFTER.search(folded, f.end, stop):
                from_back.append(f.day)
    return cued, from_back


def return_date(text: str, subject: str, received: date) -> date | None:
    """The date an out-of-office reply says its sender is back, or ``None``.

    "until X", "back on X", "returning X", "bis einschließlich X", "jusqu'au X", "tot en
    met X", "fino al X", "até X", "tillbaka den X" all give X as written — whether X is the
    last day away or the first day back depends on the writer, and a day either way does
    not matter to a reminder. A range ("from 1 Dec to 5 Dec", "1-5 December") gives its end
    date, also as written. The body is read before the subject, because a subject often
    repeats the original mail's subject. Dates before ``received`` are skipped; ``None``
    when nothing is left.
    """
    for part in (text, subject):
        cued, from_back = _away_candidates(_fold(part[:_AWAY_READ_LIMIT]), received)
        for day in (*cued, *from_back):
            if day >= received:
                return day
    return None


# --- parse_ask_directives ------------------------------------------------------------------

_KEYS = {
    "to": "audience",
    "audience": "audience",
    "list": "audience",
    "deadline": "deadline",
    "due": "deadline",
    "by": "deadline",
    "visibility": "visibility",
    "anonymous": "anonymous",
    "viewers": "viewers",
    "viewer": "viewers",
    "share with": "viewers",
    "delegate": "viewers",
    "delegates": "viewers",
    "reminders": "reminders",
    "reminder": "reminders",
}
_DIRECTIVE_LINE = re.compile(r"^\s*([^\W\d_][^\W\d_ -]*(?:[ -][^\W\d_]+)?)\s*:\s*(.*?)\s*$")
_BARE_ANONYMOUS = re.compile(r"^\s*anonymous(?:ly)?\s*[.!:]?\s*$", re.IGNORECASE)

_COMPANY_WORDS = {"company", "the company", "whole company", "everyone", "everybody", "all"}
_VISIBILITY_WORDS = {
    "open": "open",
    "public": "open",
    "shared": "open",
    "asker only": "asker-only",
    "askeronly": "asker-only",
    "private": "asker-only",
    "only me": "asker-only",
    "me only": "asker-only",
    "just me": "asker-only",
}
_YES = {"yes", "y", "true", "on", "1"}
_NO = {"no", "n", "false", "off", "0"}
_EMAIL = re.compile(r"^[^@\s<>(),;\"']+@[^@\s<>(),;\"']+\.[^@\s<>(),;\"']+$")


def _read_audience(value: str, label: str) -> tuple[str | None, str | None]:
    folded = " ".join(value.casefold().split())
    if folded in _COMPANY_WORDS:
        return "company", None
    slug = folded.strip("<>").split("@", 1)[0]  # "eng@lists.example" names the list "eng"
    if SLUG_RE.match(slug):  # the shape a list name has (mailgate.addressing)
        return slug, None
    return None, f"{label}: '{value}' is not a list name; use company or a list name"


def _read_viewers(value: str, label: str) -> tuple[list[str], list[str]]:
    # "Bob Smith <bob@x>" — when angle brackets are used, only what is inside them counts.
    bracketed = re.findall(r"<([^<>]*)>", value)
    tokens = bracketed if bracketed else re.split(r"[\s,;]+", value)
    addresses, errors = [], []
    for token in tokens:
        token = token.strip().strip("\"'()").casefold()
        if not token:
            continue
        if _EMAIL.match(token):
            addresses.append(token)
        else:
            errors.append(f"{label}: '{token}' is not an email address")
    if not addresses and not errors:
        errors.append(f"{label}: give one or more email addresses")
    return addresses, errors


def parse_ask_directives(text: str, today: date) -> AskDirectives:
    """Split a question mail into its directive block and the question text.

    Directives are ``Key: value`` lines at the very top (blank lines before them are
    fine), keys case-insensitive. The block ends at the first blank line or the first line
    that is not a known directive; an unknown ``Key: value`` line is already question
    text. A value that cannot be read leaves its field ``None`` and adds an error that
    quotes the key as the asker wrote it; so does a deadline before ``today``. A directive
    given twice keeps its first value (Viewers lines add up).
    """
    lines = text.splitlines()
    index = 0
    while index < len(lines) and not lines[index].strip():
        index += 1

    audience: str | None = None
    deadline: date | None = None
    visibility: str | None = None
    anonymous: bool | None = None
    reminders: int | None = None
    viewers: list[str] = []
    errors: list[str] = []
    seen: set[str] = set()

    while index < len(lines):
        line = lines[index]
        if not line.strip():
            index += 1
            break
        if _BARE_ANONYMOUS.match(line):
            field, label, value = "anonymous", "Anonymous", ""
        else:
            m = _DIRECTIVE_LINE.match(line)
            key = " ".join(m[1].casefold().replace("-", " ").split()) if m else ""
            if m is None or key not in _KEYS:
                break
            field, value = _KEYS[key], m[2]
            label = m[1][:1].upper() + m[1][1:]
        index += 1

        if field in seen and field != "viewers":
            errors.append(f"{label}: given more than once; only the first line counts")
            continue
        seen.add(field)

        if field == "audience":
            audience, error = _read_audience(value, label)
            errors.extend([error] if error else [])
        elif field == "deadline":
            day = parse_date_phrase(value, today) if value else None
            if not value:
                errors.append(f"{label}: no date given")
            elif day is None:
                errors.append(f"{label}: cannot read '{value}'")
            elif day < today:
                errors.append(f"{label}: {day.isoformat()} is in the past")
            else:
                deadline = day
        elif field == "visibility":
            visibility = _VISIBILITY_WORDS.get(" ".join(re.split(r"[\s_-]+", value.casefold())))
            if visibility is None:
                errors.append(f"{label}: use open or asker-only")
        elif field == "anonymous":
            word = value.casefold().strip(" .!")
            if word == "" or word in _YES:
                anonymous = True
            elif word in _NO:
                anonymous = False
            else:
                errors.append(f"{label}: use yes or no")
        elif field == "viewers":
            addresses, problems = _read_viewers(value, label)
            viewers.extend(a for a in addresses if a not in viewers)
            errors.extend(problems)
        elif field == "reminders":
            word = value.casefold().strip(" .")
            count = 0 if word in {"none", "no", "off"} else int(word) if word.isdigit() else -1
            if 0 <= count <= 10:
                reminders = count
            else:
                errors.append(f"{label}: use a number from 0 to 10")

    return AskDirectives(
        audience=audience,
        deadline=deadline,
        visibility=visibility,
        anonymous=anonymous,
        viewers=tuple(viewers),
        reminders=reminders,
        text="\n".join(lines[index:]).strip(),
        errors=tuple(errors),
    )
