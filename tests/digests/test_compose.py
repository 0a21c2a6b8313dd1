"""A member's digest as a message: headers, parts, escaping and size (digests.compose).

Its cost is a benchmark's business, not a test's: bench/stages.py times ``compose_digest``
against a bare render of its own templates in the same run.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import html
import re
from datetime import UTC, date, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from urllib.parse import quote

import pytest

from digests import compose
from digests.compose import DigestContext, compose_digest
from digests.facts import DigestItem, DigestPlan
from mailgate.addressing import digest_address, reply_address
from mailgate.tokens import TokenKind, make_token

DOMAIN = "lists.corp.example"
SECRET = "test-secret"
NOW = datetime(2026, 3, 3, 7, 0, 12, tzinfo=UTC)
UNSUBSCRIBE = "https://lists.corp.example/u/digest/aedwi25dss2goktqngkygmgndg"
KINDS = ("replies-to-you", "question", "announcement", "lively", "new")
HEADINGS = (
    "Replies to you",
    "Questions for you",
    "From leadership",
    "Lively discussions",
    "New discussions",
)

SUBJECTS = (
    "Flaky integration tests on the payments service",
    "Which Postgres version should the new cluster run?",
    "Q2 all-hands: what changes for the platform teams",
    "Should we drop Python 3.10 support in the SDK?",
    "Proposal: a shared on-call calendar",
)
EXCERPTS = (
    "I bisected it to the retry change from last week: the mock clock never advances, "
    "so the second attempt times out after 30 s.",
    "Ops would like 16 for the logical replication improvements; any objections from the "
    "data team before we freeze the image on Friday?",
    "We are merging the platform and infrastructure groups under one roadmap. Details "
    "and the new team pages are in the slides.",
    "Usage of 3.10 dropped below 4% of installs last month, and 3.11 gives us ExceptionGroup.",
    "Three teams keep separate spreadsheets; this puts everyone in one calendar with "
    "handover notes.",
)
AUTHORS = (
    ("Bo Chen", "Ana Lima"),
    ("Priya Natarajan",),
    ("Margaret Okafor",),
    ("Dee Park", "Eli Ross", "Farah Haddad", "Gus Meyer", "Hana Sato"),
    ("Ivan Petrov",),
)


def item(n: int, **changes: object) -> DigestItem:
    base = DigestItem(
        kind=KINDS[n % 5],
        discussion_id=500 + n,
        list_slug=("eng", "eng", "all-hands", "sdk", "ops")[n % 5],
        list_name=("Engineering", "Engineering", "All hands", "SDK", "Operations")[n % 5],
        subject=SUBJECTS[n % 5],
        excerpt=EXCERPTS[n % 5],
        authors=AUTHORS[n % 5],
        replies=(3, 0, 0, 17, 1)[n % 5],
        participants=len(AUTHORS[n % 5]),
        departments=1,
        reason="test",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def plan(items: tuple[DigestItem, ...], others: int = 0) -> DigestPlan:
    return DigestPlan(
        person_id=7, local_date=date(2026, 3, 3), items=items, others=others, left_out=()
    )


def context(
    p: DigestPlan, unsubscribe_url: str | None = UNSUBSCRIBE, **changes: object
) -> DigestContext:
    base = DigestContext(
        domain=DOMAIN,
        member_name="Ana Lima",
        member_address="ana.lima@corp.example",
        local_date=p.local_date,
        digest_id=42,
        digest_reply_address=digest_address(make_token(SECRET, TokenKind.DIGEST, 7, 42), DOMAIN),
        item_reply_addresses=tuple(
            reply_address(make_token(SECRET, TokenKind.REPLY, 7, i.discussion_id), DOMAIN)
            for i in p.items
        ),
        unsubscribe_url=unsubscribe_url,
        settings_address="eng-request@lists.corp.example",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(raw: bytes) -> tuple[str, str]:
    msg = parse(raw)
    text = msg.get_body(("plain",))
    page = msg.get_body(("html",))
    assert text is not None and page is not None
    # Parts keep the CRLF line ends of the wire; compare with \n.
    return (
        text.get_content().replace("\r\n", "\n"),
        page.get_content().replace("\r\n", "\n"),
    )


def reply_mailto(address: str, slug: str, subject: str) -> str:
    return f"mailto:{address}?subject={quote(f'Re: [{slug}] {subject}', safe=':')}"


class _Items(HTMLParser):
    """Text and links of each item cell (<td class="item …">) of the HTML part."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[dict[str, list[str]]] = []
        self.depth = 0  # td nesting inside the current item

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "td":
            if self.depth:
                self.depth += 1
            elif "item" in (found.get("class") or "").split():
                self.items.append({"text": [], "links": []})
                self.depth = 1
        if tag == "a" and self.depth:
            self.items[-1]["links"].append(found.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.items[-1]["text"].append(data)


def html_items(page: str) -> list[tuple[str, list[str]]]:
    parser = _Items()
    parser.feed(page)
    return [(" ".join("".join(i["text"]).split()), i["links"]) for i in parser.items]


def text_items(text: str) -> list[str]:
    """The text part cut into item blocks: from "N. " at a line start to the next one."""
    body = text.split("\n" + "=" * 66 + "\n", 1)[0]
    starts = [m.start() for m in re.finditer(r"(?m)^\d+\. ", body)]
    return [body[a:b] for a, b in zip(starts, [*starts[1:], len(body)], strict=True)]


FIVE = plan(tuple(item(n) for n in range(5)), others=3)


# ---------------------------------------------------------------- format (FMT-02)


def test_one_item_of_each_kind_parses_without_defects() -> None:
    raw = compose_digest(FIVE, context(FIVE), now=NOW)
    msg = parse(raw)
    assert msg.defects == []
    assert all(part.defects == [] for part in msg.walk())
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    for name in ("From", "To", "Date", "Message-ID", "MIME-Version", "Subject", "Reply-To"):
        assert len(msg.get_all(name) or []) == 1, name
    raw.decode("ascii")  # 7-bit throughout
    head, body = raw.split(b"\r\n\r\n", 1)
    assert all(b"\n" not in line and b"\r" not in line for line in raw.split(b"\r\n"))
    assert max(len(line) for line in body.split(b"\r\n")) <= 76  # RFC 2045 encoded lines
    for line in head.split(b"\r\n"):  # folded near 78 unless one word is longer
        assert len(line) <= 78 or len(line.split()) <= 2, line
    assert raw.endswith(b"\r\n")


def test_headers() -> None:
    raw = compose_digest(FIVE, context(FIVE), now=NOW)
    msg = parse(raw)
    assert msg["From"] == "Mailgate <digest@lists.corp.example>"
    assert msg["From"].addresses[0].addr_spec == "digest@lists.corp.example"
    assert msg["Reply-To"] == context(FIVE).digest_reply_address
    assert msg["To"] == "Ana Lima <ana.lima@corp.example>"
    assert msg["Subject"] == "Your Mailgate digest for Tue 3 Mar: 5 conversations"
    assert msg["Date"] == "Tue, 03 Mar 2026 07:00:12 +0000"
    assert msg["Auto-Submitted"] == "auto-generated"  # LOOP-03
    assert msg["Precedence"] == "bulk"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert re.fullmatch(r"<digest\.42\.[0-9a-f]{16}@lists\.corp\.example>", msg["Message-ID"])
    # THR-03: every digest starts its own thread.
    assert "In-Reply-To" not in msg
    assert "References" not in msg


def test_message_ids_are_unique() -> None:
    ids = {parse(compose_digest(FIVE, context(FIVE), now=NOW))["Message-ID"] for _ in range(50)}
    assert len(ids) == 50


@pytest.mark.parametrize(
    ("url", "expected", "one_click"),
    [
        (UNSUBSCRIBE, [f"<{UNSUBSCRIBE}>", "<mailto:{digest}?subject=unsubscribe>"], True),
        (
            "http://localhost:8025/u/x",
            ["<http://localhost:8025/u/x>", "<mailto:{digest}?subject=unsubscribe>"],
            False,
        ),
        (None, ["<mailto:{digest}?subject=unsubscribe>"], False),
    ],
)
def test_list_unsubscribe(url: str | None, expected: list[str], one_click: bool) -> None:
    ctx = context(FIVE, unsubscribe_url=url)
    msg = parse(compose_digest(FIVE, ctx, now=NOW))
    value = " ".join(str(msg["List-Unsubscribe"]).split())
    assert value == ", ".join(e.format(digest=ctx.digest_reply_address) for e in expected)
    post = msg.get_all("List-Unsubscribe-Post")
    assert post == (["List-Unsubscribe=One-Click"] if one_click else None)
    text, page = parts(compose_digest(FIVE, ctx, now=NOW))
    if url:
        assert f"<{url}>" in text and f'href="{url}"' in page
    else:
        assert 'reply to this digest with the word "unsubscribe"' in text


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("Ana Lima", "To: Ana Lima <ana.lima@corp.example>"),
        ("", "To: ana.lima@corp.example"),
        ("O'Brien, Ana", 'To: "O\'Brien, Ana" <ana.lima@corp.example>'),
        ("Zoë Åberg", "To: =?utf-8?b?Wm/DqyDDhWJlcmc=?= <ana.lima@corp.example>"),
        (
            "Ana\r\nBcc: boss@corp.example",
            'To: "Ana Bcc: boss@corp.example" <ana.lima@corp.example>',
        ),
    ],
)
def test_to_field(name: str, header: str) -> None:
    raw = compose_digest(FIVE, context(FIVE, member_name=name), now=NOW)
    fields = raw.split(b"\r\n\r\n", 1)[0].decode("ascii").replace("\r\n ", " ")
    assert header in fields.split("\r\n")
    msg = parse(raw)
    assert "Bcc" not in msg
    assert msg["To"].addresses[0].addr_spec == "ana.lima@corp.example"


# ---------------------------------------------------------------- content


def test_each_item_in_both_parts_with_its_own_reply_link() -> None:
    ctx = context(FIVE)
    text, page = parts(compose_digest(FIVE, ctx, now=NOW))
    blocks, cells = text_items(text), html_items(page)
    assert len(blocks) == len(cells) == 5
    for n, (it, address) in enumerate(zip(FIVE.items, ctx.item_reply_addresses, strict=True)):
        mailto = reply_mailto(address, it.list_slug, it.subject)
        block = blocks[n]
        assert block.startswith(f"{n + 1}. {it.subject}\n")
        assert it.list_name in block
        assert it.excerpt == " ".join(block.split("\n   ", 2)[2].split("\n   Reply:")[0].split())
        assert f"Reply: <{mailto}>" in block
        assert sum(a in block for a in ctx.item_reply_addresses) == 1
        cell_text, links = cells[n]
        assert cell_text.startswith(f"{n + 1}. {it.subject} {it.list_name} · ")
        assert it.excerpt in cell_text
        assert links == [mailto]
    for heading in HEADINGS:
        assert f"\n{heading}\n{'-' * len(heading)}\n" in text
        assert f">{heading}</td>" in page


@pytest.mark.parametrize(
    ("authors", "replies", "meta"),
    [
        (("Bo Chen",), 0, "Engineering · Bo Chen · no replies yet"),
        (("Bo Chen", "Ana Lima"), 1, "Engineering · Bo Chen and Ana Lima · 1 reply"),
        (("Bo", "Cy", "Dee"), 2, "Engineering · Bo, Cy and Dee · 2 replies"),
        (("Bo", "Cy", "Dee", "Eve", "Bo"), 9, "Engineering · Bo, Cy and 2 others · 9 replies"),
        (("Bo", "Cy", "Dee", "Eve", "Fay"), 9, "Engineering · Bo, Cy and 3 others · 9 replies"),
        ((), 4, "Engineering · 4 replies"),
    ],
)
def test_who_and_how_many(authors: tuple[str, ...], replies: int, meta: str) -> None:
    p = plan((item(0, authors=authors, replies=replies),))
    text, page = parts(compose_digest(p, context(p), now=NOW))
    assert f"\n   {meta}\n" in text
    assert f">{meta}</p>" in page


@pytest.mark.parametrize(
    ("others", "line"),
    [
        (0, None),
        (1, "…and 1 more conversation in your lists."),
        (12, "…and 12 more conversations in your lists."),
    ],
)
def test_and_n_more(others: int, line: str | None) -> None:
    p = dataclasses.replace(FIVE, others=others)
    text, page = parts(compose_digest(p, context(p), now=NOW))
    if line is None:
        assert "more conversation" not in text and "more conversation" not in page
    else:
        assert f"\n{line}\n" in text
        assert f">{line}</td>" in page


@pytest.mark.parametrize(
    ("company", "day", "masthead"),
    [
        ("Corp", date(2026, 3, 3), "Corp digest · Tuesday 3 March 2026"),
        ("Zoë & Co <x>", date(2026, 12, 7), "Zoë & Co <x> digest · Monday 7 December 2026"),
        ("", date(2027, 1, 1), "Mailgate digest · Friday 1 January 2027"),
    ],
)
def test_heading_names_the_company_and_the_date(company: str, day: date, masthead: str) -> None:
    p = dataclasses.replace(FIVE, local_date=day)
    text, page = parts(compose_digest(p, context(p, company_name=company), now=NOW))
    assert text.startswith(f"{masthead}\n{'=' * len(masthead)}\n\nHi Ana Lima,\n")
    title, date_part = (html.escape(part, quote=False) for part in masthead.split(" · "))
    assert re.search(
        rf"<h1 [^>]*>{re.escape(title)} <span [^>]*>· {re.escape(date_part)}</span></h1>",
        page,
    )


@pytest.mark.parametrize(
    ("replies", "likes", "counts"),
    [
        (0, 0, "no replies yet"),
        (0, 1, "no replies yet · 1 +1"),
        (1, 0, "1 reply"),
        (4, 7, "4 replies · 7 +1s"),
    ],
)
def test_counts_of_replies_and_plus_ones(replies: int, likes: int, counts: str) -> None:
    p = plan((item(0, authors=("Bo Chen",), replies=replies, likes=likes),))
    text, page = parts(compose_digest(p, context(p), now=NOW))
    assert f"\n   Engineering · Bo Chen · {counts}\n" in text
    assert f">Engineering · Bo Chen · {counts}</p>" in page


def test_reply_is_a_link_not_a_button_and_delivery_changes_are_replies() -> None:
    p = plan(tuple(item(n) for n in range(9)))
    ctx = context(p, settings_address=None, unsubscribe_url=None)
    text, page = parts(compose_digest(p, ctx, now=NOW))
    assert "button" not in page
    assert len(re.findall(r'<a class="reply"[^>]*>Reply</a>', page)) == 9
    # No -request address to name: the footer points at the digest's own commands only.
    for part in (text, page):
        assert "postmaster" not in part and "nomail" not in part and "-request@" not in part
    assert "every eng    get eng mail as it is sent" in text
    assert 'Stop these digests: reply to this digest with the word "unsubscribe".' in text


def test_headings_follow_the_plan_order_and_numbers_run_in_order() -> None:
    kinds = ("lively", "lively", "new", "lively", "mystery")
    p = plan(tuple(item(n, kind=k) for n, k in enumerate(kinds)))
    text, _ = parts(compose_digest(p, context(p), now=NOW))
    headings = re.findall(r"(?m)^(.+)\n-+$", text)
    assert headings == [
        "Lively discussions",
        "New discussions",
        "Lively discussions",
        "More conversations",
    ]
    assert [int(n) for n in re.findall(r"(?m)^(\d+)\. ", text)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("count", "examples"),
    [
        (1, ["+1 1", "mute 1", "follow 1", "every eng", "digest eng"]),
        (5, ["+1 3", "mute 2", "follow 5", "every eng", "digest eng"]),
    ],
)
def test_command_box_names_real_items(count: int, examples: list[str]) -> None:
    p = plan(tuple(item(n) for n in range(count)))
    text, page = parts(compose_digest(p, context(p), now=NOW))
    box = text.split("Reply to this digest with commands, one per line:\n")[1]
    assert [line.split("  ")[1] for line in box.splitlines()[:5]] == examples
    for example in examples:
        assert re.search(rf"<code[^>]*>{re.escape(example)}</code>", page)


@pytest.mark.parametrize(
    ("count", "subject"),
    [
        (1, "Your Mailgate digest for Tue 3 Mar: 1 conversation"),
        (12, "Your Mailgate digest for Tue 3 Mar: 12 conversations"),
    ],
)
def test_subject(count: int, subject: str) -> None:
    p = plan(tuple(item(n) for n in range(count)))
    assert parse(compose_digest(p, context(p), now=NOW))["Subject"] == subject


def test_html_is_email_friendly() -> None:
    _, page = parts(compose_digest(FIVE, context(FIVE), now=NOW))
    head = page.split("<body", 1)[0]
    assert '<meta name="color-scheme" content="light dark">' in head
    assert '<meta name="supported-color-schemes" content="light dark">' in head
    assert "@media (prefers-color-scheme: dark)" in head  # kept in <style> by css-inline
    assert "max-width: 620px" in head
    body = page.split("<body", 1)[1]
    assert "<style" not in body and "class=" in body
    # Inlined: Gmail drops classes it cannot match, so the looks must live in style="".
    assert re.search(r'<td class="item text" style="[^"]*font-size:15px', body)
    assert "max-width:600px" in body
    assert "<!--[if mso]>" in body  # a fixed-width table for Outlook's Word renderer
    assert not re.search(r"display:\s*(flex|grid)", page)


# ---------------------------------------------------------------- hostile values


def test_values_are_escaped_in_html_and_verbatim_in_text() -> None:
    script = "<script>alert(1)</script>"
    img = '<img src=x onerror="alert(document.cookie)">'
    p = plan(
        (
            item(0, subject=script, excerpt=f"look {img} here", list_name='Eng"><b>x</b>'),
            item(1, authors=("<i>Mallory</i>",)),
        )
    )
    ctx = context(p, member_name="<b>Ana</b>")
    text, page = parts(compose_digest(p, ctx, now=NOW))
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert not re.search(r"<[^>]*\sonerror=", page)
    assert "<b>x" not in page and "<i>Mallory" not in page and "<b>Ana" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&#34;alert(document.cookie)&#34;&gt;" in page
    assert f"1. {script}\n" in text
    assert img in text
    assert "<i>Mallory</i>" in text and "Hi <b>Ana</b>," in text
    cell_text, links = html_items(page)[0]
    assert cell_text.startswith(f"1. {script} ")
    assert links == [reply_mailto(ctx.item_reply_addresses[0], "eng", script)]
    assert "%3Cscript%3Ealert%281%29%3C%2Fscript%3E" in links[0]


@pytest.mark.parametrize(
    "changes",
    [
        {"item_reply_addresses": ()},
        {"digest_reply_address": "reply+aedwi25dss2goktqngkygmgndgar3si@lists.corp.example"},
        {"digest_reply_address": "digest+aedwi25dss2goktq@lists.other.example"},
        {"item_reply_addresses": ("digest+aedwi25dss2goktqngkygmgndgar3si@lists.corp.example",)},
        {"member_address": "ana@corp.example\r\nBcc: boss@corp.example"},
        {"member_address": "ana@corp.example>, <boss@corp.example"},
        {"settings_address": "eng-request@lists.corp.example?subject=x"},
        {"unsubscribe_url": 'https://lists.corp.example/u/x">'},
        {"unsubscribe_url": "javascript:alert(1)"},
        {"domain": "lists.corp.example\r\nBcc: x"},
    ],
)
def test_malformed_context_is_refused(changes: dict[str, object]) -> None:
    p = plan((item(0),))
    with pytest.raises(ValueError):
        compose_digest(p, context(p, **changes), now=NOW)  # type: ignore[arg-type]


def test_an_empty_plan_is_refused() -> None:
    empty = plan(())
    with pytest.raises(ValueError, match="empty"):
        compose_digest(empty, context(empty), now=NOW)


def test_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        compose_digest(FIVE, context(FIVE), now=datetime(2026, 3, 3, 7, 0))


# ---------------------------------------------------------------- non-ASCII and size


def test_non_latin_text_goes_base64_and_round_trips() -> None:
    subject = "Обновление инфраструктуры: перенос кластера в новый дата-центр"
    excerpt = "Коллеги, переезд назначен на субботу. " * 5
    p = plan((item(0, subject=subject, excerpt=excerpt.strip(), list_name="Инженеры"),))
    raw = compose_digest(p, context(p, member_name="Анна Лима"), now=NOW)
    msg = parse(raw)
    assert "=?utf-8?" in raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert msg["To"].addresses[0].display_name == "Анна Лима"
    encodings = [part["Content-Transfer-Encoding"] for part in msg.iter_parts()]
    assert encodings == ["base64", "quoted-printable"]  # the HTML part is mostly ASCII
    text, page = parts(raw)
    assert f"1. {subject}\n" in text and subject in page
    assert "Коллеги, переезд назначен на субботу." in text


def test_twelve_long_items_stay_under_gmail_clipping() -> None:
    long_name = "Maximilian Alexander von Hohenberg-Castellanos y Ruiz de la Peña"
    items = tuple(
        item(
            n,
            subject=f"{n}: " + "Migration plan for the regional data platform and its owners " * 3,
            excerpt=("Déjà vu: the migration window moved again, please re-check " * 4)[:200],
            authors=tuple(f"{long_name} {k}" for k in range(8)),
            list_name="Data Platform Engineering and Analytics Infrastructure Guild",
        )
        for n in range(12)
    )
    p = plan(items, others=40)
    raw = compose_digest(p, context(p), now=NOW)
    assert len(raw) < 100_000
    text, page = parts(raw)
    assert len(text_items(text)) == len(html_items(page)) == 12  # nothing was trimmed
    words = " ".join(text.split())
    assert all(" ".join(i.excerpt.split()) in words for i in items)


def test_a_huge_plan_is_trimmed_to_fit() -> None:
    excerpt = "Очень длинный отрывок обсуждения без конца и края. " * 100
    items = tuple(item(n, excerpt=excerpt) for n in range(300))
    p = plan(items, others=5)
    raw = compose_digest(p, context(p), now=NOW)
    assert len(raw) <= compose.MAX_BYTES
    assert parse(raw).defects == []
    text, page = parts(raw)
    shown = len(text_items(text))
    assert 0 < shown == len(html_items(page)) < 300
    assert f"…and {5 + 300 - shown} more conversations in your lists." in text


# ---------------------------------------------------------------- snapshot


SNAPSHOT = """\
Corp digest · Tuesday 3 March 2026
==================================

Hi Ana Lima,
2 conversations since your last digest.


Replies to you
--------------

1. Flaky integration tests on the payments service
   Engineering · Bo Chen and Ana Lima · 3 replies · 4 +1s
   I bisected it to the retry change from last week: the mock clock
   never advances, so the second attempt times out after 30 s.
   Reply: <{reply1}>


Questions for you
-----------------

2. Which Postgres version should the new cluster run?
   Engineering · Priya Natarajan · no replies yet
   Ops would like 16 for the logical replication improvements; any
   objections from the data team before we freeze the image on Friday?
   Reply: <{reply2}>

==================================================================
Reply to this digest with commands, one per line:
  +1 2         add your +1 to 2
  mute 2       stop hearing about 2
  follow 2     get each new message of 2
  every eng    get eng mail as it is sent
  digest eng   get eng only in this digest
To answer a conversation, use its own Reply link above.
==================================================================

--\x20
Sent by Mailgate to ana.lima@corp.example.
Leave eng altogether: mail eng-request@lists.corp.example
  with the word "nomail".
Stop these digests: reply to this digest with the word "unsubscribe".
"""


def test_text_part_snapshot() -> None:
    p = plan((item(0, likes=4), item(1)))
    ctx = context(p, unsubscribe_url=None, company_name="Corp")
    text, _ = parts(compose_digest(p, ctx, now=NOW))
    first, second = ctx.item_reply_addresses
    assert first.startswith("reply+aed7ia75ldyid7w6ik62ia26jvwbqd46@")
    assert text == SNAPSHOT.format(
        reply1=reply_mailto(first, "eng", SUBJECTS[0]),
        reply2=reply_mailto(second, "eng", SUBJECTS[1]),
    )


# ---------------------------------------------------------------- templates and cost


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ('<p class="{% if x %}a{% endif %}">x</p>', "inside a tag"),
        ("<!-- {{ x }} --><p>x</p>", "inside a comment"),
        # Text directly inside a table is moved before it (HTML "foster parenting").
        ("<table>{% if x %}<tr><td>y</td></tr>{{ x }}{% endif %}</table>", "moved"),
    ],
)
def test_template_markup_that_cannot_be_inlined_is_refused(source: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        compose._inline_source(source, "digest/test.html")


def test_inlining_keeps_jinja_tags_and_styles_the_markup() -> None:
    source = (
        "<html><head><style>.a { color: red; } @media (prefers-color-scheme: dark) "
        "{ .a { color: white !important; } }</style></head><body><table>"
        '{% for x in xs %}<tr><td class="a" title="{{ x }}">{{ x }}</td></tr>{% endfor %}'
        "</table></body></html>"
    )
    out = compose._inline_source(source, "digest/test.html")
    row = re.search(
        r"\{% for x in xs %\}(<tbody>)?<tr>(<td [^>]*>)\{\{ x \}\}</td></tr>\{% endfor %\}", out
    )
    assert row is not None, out
    assert 'style="color:red"' in row.group(2) and 'title="{{ x }}"' in row.group(2)
    assert "@media (prefers-color-scheme: dark)" in out
