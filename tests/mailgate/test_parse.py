"""Parse stage: body text decoding — charset labels read as browsers read them (WHATWG),
and format=flowed (RFC 3676) unwrapped and unstuffed before any quote stripping."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.bodies import extract_body
from mailgate.parse import parse_message


def _raw(
    body: bytes,
    *,
    content_type: str,
    cte: str = "8bit",
    user_agent: str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.7",
) -> bytes:
    """A single-part reply as a client submits it over SMTP (CRLF line ends)."""
    head = (
        "Return-Path: <klaus.meyer@corp.example>\n"
        "Received: from mail.corp.example (mail.corp.example [192.0.2.10])\n"
        "\tby mx.lists.corp.example (Postfix) with ESMTPS id 4Zk2b10Qq9z9s\n"
        "\tfor <eng@lists.corp.example>; Tue,  3 Mar 2026 10:20:11 +0000 (UTC)\n"
        "Message-ID: <7c1e9a52-3b0f-4d6e-9a51-2f0c8e1d4b77@corp.example>\n"
        "Date: Tue, 3 Mar 2026 11:20:02 +0100\n"
        "MIME-Version: 1.0\n"
        f"User-Agent: {user_agent}\n"
        "Subject: Re: [eng] Postgres 16 upgrade window\n"
        "To: eng@lists.corp.example\n"
        "References: <post-1@lists.corp.example>\n"
        "From: Klaus Meyer <klaus.meyer@corp.example>\n"
        "In-Reply-To: <post-1@lists.corp.example>\n"
        f"Content-Type: {content_type}\n"
        f"Content-Transfer-Encoding: {cte}\n"
        "\n"
    )
    if cte == "base64":
        body = base64.encodebytes(body)
    return head.replace("\n", "\r\n").encode("ascii") + body.replace(b"\n", b"\r\n")


def _plain(raw: bytes) -> str:
    text = parse_message(raw).text_plain
    assert text is not None
    return text.replace("\r\n", "\n")


# --------------------------------------------------------------------------- charsets

# (case id, Content-Type, body bytes as sent, expected text)
CHARSET_CASES: list[tuple[str, str, bytes, str]] = [
    (
        "iso-8859-1-label-with-cp1252-smart-quotes",
        'text/plain; charset="iso-8859-1"',
        b"Ich hatte \x84Donnerstag\x93 verstanden \x96 oder Freitag?\n",
        "Ich hatte \u201eDonnerstag\u201c verstanden \u2013 oder Freitag?\n",
    ),
    (
        "latin1-label-euro-and-ellipsis",
        "text/plain; charset=latin1",
        b"Budget: 40.000 \x80 \x85 mehr oder weniger.\n",
        "Budget: 40.000 \u20ac \u2026 mehr oder weniger.\n",
    ),
    (
        "iso-8859-1-plain-latin1-letters",
        "text/plain; charset=ISO-8859-1",
        b"Gr\xfc\xdfe aus M\xfcnchen\n",
        "Grüße aus München\n",
    ),
    (
        "iso-8859-1-undefined-cp1252-byte-stays-latin1",
        "text/plain; charset=iso-8859-1",
        b"Stra\xdfe \x81\x8d\x8f\x90\x9d Ende \x93ok\x94\n",
        "Straße \x81\x8d\x8f\x90\x9d Ende \u201cok\u201d\n",
    ),
    (
        "windows-1252-label",
        "text/plain; charset=windows-1252",
        b"It\x92s done \x97 finally.\n",
        "It\u2019s done \u2014 finally.\n",
    ),
    (
        "us-ascii-plain",
        "text/plain; charset=us-ascii",
        b"Rebooted build-07.\n",
        "Rebooted build-07.\n",
    ),
    (
        "us-ascii-label-holding-utf8",
        "text/plain; charset=us-ascii",
        "Back in the café-network pool.\n".encode(),
        "Back in the café-network pool.\n",
    ),
    (
        "ascii-label-holding-cp1252",
        'text/plain; charset="ascii"',
        b"Back in the caf\xe9 \x96 network pool.\n",
        "Back in the café \u2013 network pool.\n",
    ),
    (
        "no-charset-holding-utf8",
        "text/plain",
        "Grüße\n".encode(),
        "Grüße\n",
    ),
    (
        "gb2312-label-with-gbk-only-character",
        'text/plain; charset="gb2312"',
        "李喆负责的报表服务也在调用 /v1/orders。\n".encode("gbk"),
        "李喆负责的报表服务也在调用 /v1/orders。\n",
    ),
    (
        "gbk-label",
        "text/plain; charset=GBK",
        "王芳\n".encode("gbk"),
        "王芳\n",
    ),
    (
        "gb2312-label-bad-byte-keeps-the-rest",
        "text/plain; charset=gb2312",
        "你".encode("gbk") + b"\xff" + "好\n".encode("gbk"),
        "你\ufffd好\n",
    ),
    (
        "ks_c_5601-1987-label-with-uhc-only-syllable",
        "text/plain; charset=ks_c_5601-1987",
        "똠방각하\n".encode("cp949"),
        "똠방각하\n",
    ),
    (
        "shift_jis-label-with-nec-circled-digit",
        "text/plain; charset=Shift_JIS",
        "①確認しました。\n".encode("cp932"),
        "①確認しました。\n",
    ),
    (
        "koi8-r",
        "text/plain; charset=KOI8-R",
        "Четверг нам подходит.\n".encode("koi8-r"),
        "Четверг нам подходит.\n",
    ),
    (
        "utf-8-label-with-stray-latin1-byte",
        "text/plain; charset=utf-8",
        b"Caf\xe9 Central \xff\xfe ok\n",
        "Caf\ufffd Central \ufffd\ufffd ok\n",
    ),
    (
        "unknown-label-latin1-bytes",
        "text/plain; charset=x-unknown",
        b"Gr\xfc\xdfe\n",
        "Gr\ufffd\ufffde\n",
    ),
    (
        "unknown-label-utf8-bytes",
        "text/plain; charset=x-user-charset",
        "Grüße\n".encode(),
        "Grüße\n",
    ),
    (
        "non-text-codec-label-is-unknown",
        "text/plain; charset=base64",
        b"aGVsbG8=\n",
        "aGVsbG8=\n",
    ),
    (
        "undefined-codec-label-is-unknown",
        "text/plain; charset=undefined",
        b"Tuesday works.\n",
        "Tuesday works.\n",
    ),
]


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [pytest.param(c, b, e, id=i) for i, c, b, e in CHARSET_CASES],
)
def test_charset_labels_are_read_as_browsers_read_them(
    content_type: str, body: bytes, expected: str
) -> None:
    assert _plain(_raw(body, content_type=content_type)) == expected


@pytest.mark.parametrize(
    ("content_type", "body", "defect"),
    [
        pytest.param(
            "text/plain; charset=x-unknown", b"Gr\xfc\xdfe\n", "unknown-charset:x-unknown"
        ),
        pytest.param("text/plain; charset=utf-8", b"Caf\xe9\n", "bad-bytes-for-charset:utf-8"),
        pytest.param(
            "text/plain; charset=us-ascii", "café\n".encode(), "bad-bytes-for-charset:us-ascii"
        ),
    ],
)
def test_decoding_problems_are_recorded(content_type: str, body: bytes, defect: str) -> None:
    assert defect in parse_message(_raw(body, content_type=content_type)).defects


def test_clean_mail_records_no_defect() -> None:
    raw = _raw(b"Gr\xfc\xdfe \x93ok\x94\n", content_type="text/plain; charset=iso-8859-1")
    assert parse_message(raw).defects == ()


def test_html_part_uses_the_same_charset_reading() -> None:
    raw = _raw(
        b"<p>Ich hatte =84Donnerstag=93 verstanden.</p>\n",
        content_type='text/html; charset="iso-8859-1"',
        cte="quoted-printable",
    )
    assert parse_message(raw).text_html == "<p>Ich hatte „Donnerstag“ verstanden.</p>\r\n"


# --------------------------------------------------------------------------- format=flowed

FLOWED = "text/plain; charset=UTF-8; format=flowed"

# (case id, Content-Type, body as sent, expected text)
FLOWED_CASES: list[tuple[str, str, str, str]] = [
    (
        "soft-breaks-joined",
        FLOWED,
        "I looked at the runner logs for the last twenty failures and the \n"
        "pattern is very clear.\n"
        "\n"
        "Felix\n",
        "I looked at the runner logs for the last twenty failures and the pattern is very "
        "clear.\n\nFelix\n",
    ),
    (
        "hard-break-kept",
        FLOWED,
        "First line\nSecond line\n",
        "First line\nSecond line\n",
    ),
    (
        "space-stuffing-undone",
        FLOWED,
        "The stub needs 25 to 40 seconds on a cold runner \n"
        " From the timestamps it is the runners.\n"
        " >not a quote, stuffed\n"
        "  two spaces become one\n",
        "The stub needs 25 to 40 seconds on a cold runner From the timestamps it is the "
        "runners.\n>not a quote, stuffed\n two spaces become one\n",
    ),
    (
        "delsp-yes-drops-the-soft-break-space",
        "text/plain; charset=UTF-8; format=flowed; delsp=yes",
        "火曜日のデプロイは延期して、木曜日の朝に \nやり直します。\nThanks for  \nchecking.\n",
        "火曜日のデプロイは延期して、木曜日の朝にやり直します。\nThanks for checking.\n",
    ),
    (
        "delsp-no-keeps-the-space",
        "text/plain; charset=UTF-8; format=flowed; DelSp=no",
        "Thanks for \nchecking.\n",
        "Thanks for checking.\n",
    ),
    (
        "parameters-are-case-insensitive",
        "text/plain; charset=UTF-8; Format=Flowed; DelSp=Yes",
        "Thanks for  \nchecking.\n",
        "Thanks for checking.\n",
    ),
    (
        "quoted-flowed-lines-joined-per-depth",
        FLOWED,
        "On 3/3/26 10:12, Bob Smith wrote:\n"
        "> We plan to upgrade the primary cluster \n"
        "> next week.\n"
        ">> Is Thursday \n"
        ">> fine?\n"
        ">\n"
        "> Bob\n",
        "On 3/3/26 10:12, Bob Smith wrote:\n"
        "> We plan to upgrade the primary cluster next week.\n"
        ">> Is Thursday fine?\n"
        ">\n"
        "> Bob\n",
    ),
    (
        "quote-depth-change-ends-paragraph",
        FLOWED,
        "> soft break before a deeper quote \n>> deeper\nunquoted \nanswer\n",
        "> soft break before a deeper quote \n>> deeper\nunquoted answer\n",
    ),
    (
        "quoted-soft-break-does-not-join-unquoted-answer",
        FLOWED,
        "> the question \nThe answer.\n",
        "> the question \nThe answer.\n",
    ),
    (
        "signature-separator-never-flowed",
        FLOWED,
        "Thanks, \nFelix\n-- \nFelix Braun \nPlatform Engineering\n",
        "Thanks, Felix\n-- \nFelix Braun Platform Engineering\n",
    ),
    (
        "soft-break-before-signature-separator",
        FLOWED,
        "Thanks \n-- \nFelix\n",
        "Thanks \n-- \nFelix\n",
    ),
    (
        "last-line-flowed-keeps-final-newline",
        FLOWED,
        "Tuesday works \nfor me \n",
        "Tuesday works for me \n",
    ),
    (
        "quoted-fixed-lines-keep-their-marks",
        FLOWED,
        ">no space after the mark\n> > mutt-style nesting\n",
        ">no space after the mark\n> > mutt-style nesting\n",
    ),
    (
        "last-line-flowed-without-newline",
        FLOWED,
        "Tuesday works \nfor me ",
        "Tuesday works for me ",
    ),
    (
        "fixed-format-untouched",
        "text/plain; charset=UTF-8; format=fixed",
        "Trailing space \n stays as sent\n",
        "Trailing space \n stays as sent\n",
    ),
    (
        "no-format-parameter-untouched",
        "text/plain; charset=UTF-8",
        "Trailing space \n stays as sent\n",
        "Trailing space \n stays as sent\n",
    ),
]


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [pytest.param(c, b, e, id=i) for i, c, b, e in FLOWED_CASES],
)
def test_format_flowed(content_type: str, body: str, expected: str) -> None:
    assert _plain(_raw(body.encode(), content_type=content_type)) == expected


def test_flowed_keeps_crlf_line_ends() -> None:
    text = parse_message(_raw(b"one \ntwo\nthree\n", content_type=FLOWED)).text_plain
    assert text == "one two\r\nthree\r\n"


def test_flowed_decoding_follows_charset_decoding() -> None:
    body = "Könnt ihr nach dem Upgrade kurz Bescheid \ngeben?\n".encode("iso-8859-1")
    raw = _raw(body, content_type="text/plain; charset=ISO-8859-1; format=flowed", cte="base64")
    assert _plain(raw) == "Könnt ihr nach dem Upgrade kurz Bescheid geben?\n"


def test_flowed_applies_to_text_plain_only() -> None:
    raw = (
        b"From: Felix Braun <felix@corp.example>\nTo: eng@lists.corp.example\n"
        b"Subject: Re: flaky tests\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/alternative; boundary="------------tb9LK2QlUVwz"\n\n'
        b"--------------tb9LK2QlUVwz\n"
        b"Content-Type: text/plain; charset=UTF-8; format=flowed\n\n"
        b"Tuesday \nworks.\n"
        b"--------------tb9LK2QlUVwz\n"
        b"Content-Type: text/html; charset=UTF-8; format=flowed\n\n"
        b"<p>Tuesday \n works.</p>\n"
        b"--------------tb9LK2QlUVwz--\n"
    )
    msg = parse_message(raw)
    assert msg.text_plain == "Tuesday works."
    assert msg.text_html == "<p>Tuesday \n works.</p>"


def test_thunderbird_flowed_reply_end_to_end() -> None:
    body = (
        "On 3/3/26 10:12, Bob Smith wrote:\n"
        "> Please reply by Wednesday noon if this clashes with a release or a \n"
        "> customer demo.\n"
        "\n"
        "The payments release is on Thursday at 09:00, so 06:00-08:00 is too \n"
        "close. Could we move the window to Friday?\n"
        "\n"
        "-- \n"
        "Klaus Meyer\n"
    )
    result = extract_body(parse_message(_raw(body.encode(), content_type=FLOWED)))
    assert result.text == (
        "> Please reply by Wednesday noon if this clashes with a release or a customer demo.\n"
        "\n"
        "The payments release is on Thursday at 09:00, so 06:00-08:00 is too close. Could we "
        "move the window to Friday?"
    )
    assert "Klaus Meyer" in result.elided
    assert "On 3/3/26 10:12, Bob Smith wrote:" in result.elided


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.sampled_from(list("ab >-\r\t日")), max_size=12),
        max_size=30,
    ),
    st.booleans(),
)
def test_flowed_never_raises_and_keeps_the_words(lines: list[str], delsp: bool) -> None:
    ctype = FLOWED + ("; delsp=yes" if delsp else "")
    body = "\n".join(lines).encode()
    text = _plain(_raw(body, content_type=ctype))
    assert sorted(c for c in text if c in "ab日") == sorted(c for c in body.decode() if c in "ab日")


@pytest.mark.timeout(30)  # catches a hang only; the cost is measured in bench/stages.py
def test_flowed_decoding_of_a_hostile_paragraph() -> None:
    # A 2 MB hostile paragraph: every line soft-broken and deeply quoted.
    body = ((">" * 50 + " word \n") * 35_000).encode()
    raw = _raw(body, content_type=FLOWED)
    text = _plain(raw)
    assert text.count("\n") == 1
