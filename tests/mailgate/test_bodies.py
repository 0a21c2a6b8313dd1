"""Body stage: part choice, quote/signature stripping, HTML sanitising, filenames."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.bodies import (
    Body,
    extract_body,
    html_to_text,
    sanitize_filename,
    split_reply,
)
from mailgate.parse import parse_message

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "mail"


def _raw(
    body: str,
    *,
    content_type: str = "text/plain; charset=utf-8; format=flowed",
    sender: str = "Alice Example <alice@corp.example>",
    subject: str = "Re: Q3 budget review",
    extra: str = "",
) -> bytes:
    """A realistic single-part mail as a client submits it (CRLF, 8bit UTF-8)."""
    head = (
        "Return-Path: <alice@corp.example>\n"
        "Received: from mail.corp.example (mail.corp.example [192.0.2.10])\n"
        "\tby mx.lists.corp.example (Postfix) with ESMTPS id 4Zk2b10Qq9z9s\n"
        "\tfor <budget@lists.corp.example>; Tue,  3 Mar 2026 10:20:11 +0000 (UTC)\n"
        f"From: {sender}\n"
        "To: budget@lists.corp.example\n"
        f"Subject: {subject}\n"
        "Date: Tue, 3 Mar 2026 11:20:02 +0100\n"
        "Message-ID: <reply-1@mail.corp.example>\n"
        "In-Reply-To: <start-1@mail.corp.example>\n"
        "References: <start-1@mail.corp.example>\n"
        "MIME-Version: 1.0\n"
        f"Content-Type: {content_type}\n"
        "Content-Transfer-Encoding: 8bit\n"
        f"{extra}"
        "\n"
    )
    return (head + body).replace("\n", "\r\n").encode("utf-8")


def _body(raw: bytes) -> Body:
    return extract_body(parse_message(raw))


QUOTE = "> Can we review the Q3 budget on Tuesday?\n>\n> Bob\n"
OUTLOOK_OLD = "Can we review the Q3 budget on Tuesday?\n\nBob\n"

# (case id, body as the client writes it, expected new text, snippets that must be elided)
PLAIN_CASES: list[tuple[str, str, str, tuple[str, ...]]] = [
    (
        "gmail-en-attribution",
        "Tuesday works.\n\nOn Tue, 3 Mar 2026 at 10:12, Bob Smith <bob@corp.example> wrote:\n\n"
        + QUOTE,
        "Tuesday works.",
        ("Bob Smith <bob@corp.example> wrote:", "> Can we review"),
    ),
    (
        "gmail-en-attribution-wrapped",
        "Tuesday works.\n\nOn Tue, 3 Mar 2026 at 10:12, Bob Smith <bob@corp.example>\nwrote:\n\n"
        + QUOTE,
        "Tuesday works.",
        ("On Tue, 3 Mar 2026 at 10:12, Bob Smith <bob@corp.example>", "wrote:"),
    ),
    (
        "gmail-de-attribution-wrapped",
        "Dienstag passt.\n\nAm Di., 3. März 2026 um 10:12 Uhr schrieb Bob Smith <\n"
        "bob@corp.example>:\n\n" + QUOTE,
        "Dienstag passt.",
        ("Am Di., 3. März 2026 um 10:12 Uhr schrieb Bob Smith <", "bob@corp.example>:"),
    ),
    (
        "thunderbird-de-attribution",
        "Dienstag passt.\n\nAm 03.03.26 um 10:12 schrieb Bob Smith:\n" + QUOTE,
        "Dienstag passt.",
        ("Am 03.03.26 um 10:12 schrieb Bob Smith:",),
    ),
    (
        "gmail-fr-attribution-nbsp",
        "Mardi me convient.\n\nLe mar. 3 mars 2026 à 10:12, Bob Smith <bob@corp.example> a"
        " écrit\u00a0:\n\n" + QUOTE,
        "Mardi me convient.",
        ("a écrit\u00a0:",),
    ),
    (
        "gmail-es-attribution",
        "El martes me va bien.\n\nEl mar, 3 mar 2026 a las 10:12, Bob Smith "
        "(<bob@corp.example>) escribió:\n\n" + QUOTE,
        "El martes me va bien.",
        ("escribió:",),
    ),
    (
        "gmail-it-attribution",
        "Martedì va bene.\n\nIl giorno mar 3 mar 2026 alle ore 10:12 Bob Smith "
        "<bob@corp.example> ha scritto:\n\n" + QUOTE,
        "Martedì va bene.",
        ("ha scritto:",),
    ),
    (
        "gmail-pt-attribution",
        "Terça está ótimo.\n\nEm ter., 3 de mar. de 2026 às 10:12, Bob Smith "
        "<bob@corp.example> escreveu:\n\n" + QUOTE,
        "Terça está ótimo.",
        ("escreveu:",),
    ),
    (
        "gmail-nl-attribution",
        "Dinsdag is prima.\n\nOp di 3 mrt 2026 om 10:12 schreef Bob Smith <bob@corp.example>:\n\n"
        + QUOTE,
        "Dinsdag is prima.",
        ("schreef Bob Smith",),
    ),
    (
        "gmail-sv-attribution",
        "Tisdag passar bra.\n\nDen tis 3 mars 2026 kl 10:12 skrev Bob Smith <bob@corp.example>:\n\n"
        + QUOTE,
        "Tisdag passar bra.",
        ("skrev Bob Smith",),
    ),
    (
        "gmail-da-attribution",
        "Tirsdag passer fint.\n\nDen 3. mar. 2026 kl. 10.12 skrev Bob Smith <bob@corp.example>:\n\n"
        + QUOTE,
        "Tirsdag passer fint.",
        ("kl. 10.12 skrev",),
    ),
    (
        "gmail-no-attribution",
        "Tirsdag passer bra.\n\ntir. 3. mar. 2026 kl. 10:12 skrev Bob Smith <bob@corp.example>:\n\n"
        + QUOTE,
        "Tirsdag passer bra.",
        ("tir. 3. mar. 2026",),
    ),
    (
        "thunderbird-pl-attribution",
        "Wtorek pasuje.\n\nW dniu 3.03.2026 o 10:12, Bob Smith pisze:\n" + QUOTE,
        "Wtorek pasuje.",
        ("W dniu 3.03.2026 o 10:12, Bob Smith pisze:",),
    ),
    (
        "gmail-pl-attribution",
        "Wtorek pasuje.\n\nwt., 3 mar 2026 o 10:12 Bob Smith <bob@corp.example> napisał(a):\n\n"
        + QUOTE,
        "Wtorek pasuje.",
        ("napisał(a):",),
    ),
    (
        "thunderbird-ru-attribution",
        "Вторник подходит.\n\n03.03.2026 10:12, Bob Smith пишет:\n" + QUOTE,
        "Вторник подходит.",
        ("Bob Smith пишет:",),
    ),
    (
        "gmail-ru-attribution-no-verb",
        "Вторник подходит.\n\nвт, 3 мар. 2026 г. в 10:12, Bob Smith <bob@corp.example>:\n\n"
        + QUOTE,
        "Вторник подходит.",
        ("вт, 3 мар. 2026 г.",),
    ),
    (
        "yandex-ru-attribution",
        'Вторник подходит.\n\n03.03.2026, 10:12, "Bob Smith" <bob@corp.example> написал(а):\n'
        + QUOTE,
        "Вторник подходит.",
        ("написал(а):",),
    ),
    (
        "gmail-ja-attribution",
        "火曜日で大丈夫です。\n\n2026年3月3日(火) 10:12 Bob Smith <bob@corp.example>:\n\n" + QUOTE,
        "火曜日で大丈夫です。",
        ("2026年3月3日(火)",),
    ),
    (
        "apple-ja-attribution",
        "火曜日で大丈夫です。\n\n2026/03/03 10:12、Bob Smith <bob@corp.example>のメッセージ:\n\n"
        + QUOTE,
        "火曜日で大丈夫です。",
        ("のメッセージ:",),
    ),
    (
        "outlook-ja-attribution",
        "火曜日で大丈夫です。\n\n山田さんは書きました:\n" + QUOTE,
        "火曜日で大丈夫です。",
        ("山田さんは書きました:",),
    ),
    (
        "gmail-zh-attribution",
        "周二可以。\n\nBob Smith <bob@corp.example> 于2026年3月3日周二 10:12写道：\n\n" + QUOTE,
        "周二可以。",
        ("写道：",),
    ),
    (
        "zh-tw-attribution",
        "週二可以。\n\n於 2026年3月3日 週二 上午10:12，Bob Smith <bob@corp.example> 寫道：\n\n"
        + QUOTE,
        "週二可以。",
        ("寫道：",),
    ),
    (
        "gmail-fi-attribution",
        "Tiistai sopii.\n\nti 3. maalisk. 2026 klo 10.12 Bob Smith (bob@corp.example)"
        " kirjoitti:\n\n" + QUOTE,
        "Tiistai sopii.",
        ("kirjoitti:",),
    ),
    (
        "gmail-cs-attribution",
        "Úterý se hodí.\n\nút 3. 3. 2026 v 10:12 odesílatel Bob Smith <bob@corp.example>"
        " napsal:\n\n" + QUOTE,
        "Úterý se hodí.",
        ("napsal:",),
    ),
    (
        "thunderbird-cs-attribution",
        "Úterý se hodí.\n\nDne 03. 03. 26 v 10:12 Bob Smith napsal(a):\n" + QUOTE,
        "Úterý se hodí.",
        ("napsal(a):",),
    ),
    (
        "gmail-tr-attribution",
        "Salı uygun.\n\nBob Smith <bob@corp.example>, 3 Mar 2026 Sal, 10:12 tarihinde"
        " şunu yazdı:\n\n" + QUOTE,
        "Salı uygun.",
        ("şunu yazdı:",),
    ),
    (
        "apple-mail-attribution",
        "Fine by me.\n\nErin\n\n> On 3 Mar 2026, at 10:12, Bob Smith <bob@corp.example> wrote:\n>\n"
        + QUOTE,
        "Fine by me.\n\nErin",
        ("> On 3 Mar 2026, at 10:12",),
    ),
    (
        "ios-attribution-and-footer",
        "Fine by me.\n\nSent from my iPhone\n\nOn 3 Mar 2026, at 10:12, Bob Smith "
        "<bob@corp.example> wrote:\n\n" + QUOTE,
        "Fine by me.",
        ("Sent from my iPhone", "On 3 Mar 2026, at 10:12"),
    ),
    (
        "thunderbird-en-attribution",
        "Tuesday works.\n\nOn 3/3/26 10:12, Bob Smith wrote:\n" + QUOTE,
        "Tuesday works.",
        ("On 3/3/26 10:12, Bob Smith wrote:",),
    ),
    (
        "outlook-en-header-block",
        "Agreed.\n\nCarol\n\n________________________________\nFrom: Bob Smith <bob@corp.example>\n"
        "Sent: Tuesday, March 3, 2026 10:12 AM\nTo: budget@lists.corp.example\n"
        "Subject: Q3 budget review\n\n" + OUTLOOK_OLD,
        "Agreed.\n\nCarol",
        ("________________________________", "Sent: Tuesday", "Can we review"),
    ),
    (
        "outlook-de-header-block",
        "Einverstanden.\n\nVon: Bob Smith <bob@corp.example>\n"
        "Gesendet: Dienstag, 3. März 2026 10:12\n"
        "An: budget@lists.corp.example\nBetreff: Q3-Budget\n\n" + OUTLOOK_OLD,
        "Einverstanden.",
        ("Gesendet: Dienstag", "Can we review"),
    ),
    (
        "outlook-fr-header-block",
        "D'accord.\n\nDe\u00a0: Bob Smith <bob@corp.example>\n"
        "Envoyé\u00a0: mardi 3 mars 2026 10:12\n"
        "À\u00a0: budget@lists.corp.example\nObjet\u00a0: Budget T3\n\n" + OUTLOOK_OLD,
        "D'accord.",
        ("Objet\u00a0: Budget T3", "Can we review"),
    ),
    (
        "outlook-es-header-block",
        "De acuerdo.\n\nDe: Bob Smith <bob@corp.example>\n"
        "Enviado: martes, 3 de marzo de 2026 10:12\n"
        "Para: budget@lists.corp.example\nAsunto: Presupuesto T3\n\n" + OUTLOOK_OLD,
        "De acuerdo.",
        ("Asunto: Presupuesto T3",),
    ),
    (
        "outlook-it-header-block",
        "D'accordo.\n\nDa: Bob Smith <bob@corp.example>\nInviato: martedì 3 marzo 2026 10:12\n"
        "A: budget@lists.corp.example\nOggetto: Budget Q3\n\n" + OUTLOOK_OLD,
        "D'accordo.",
        ("Oggetto: Budget Q3",),
    ),
    (
        "outlook-wrapped-to-line",
        "Agreed.\n\nFrom: Bob Smith <bob@corp.example>\nSent: Tuesday, March 3, 2026 10:12 AM\n"
        "To: budget@lists.corp.example; Carol Jones <carol@corp.example>; Dana Lee\n"
        "<dana@corp.example>\nCc: Erin Park <erin@corp.example>\nSubject: Q3 budget\n\n"
        + OUTLOOK_OLD,
        "Agreed.",
        ("<dana@corp.example>",),
    ),
    (
        "original-message-en",
        "Agreed.\n\n-----Original Message-----\nFrom: Bob Smith <bob@corp.example>\n"
        "Sent: Tuesday, March 3, 2026 10:12 AM\n\n" + OUTLOOK_OLD,
        "Agreed.",
        ("-----Original Message-----",),
    ),
    (
        "original-message-de",
        "Einverstanden.\n\n-----Ursprüngliche Nachricht-----\nVon: Bob Smith <bob@corp.example>\n\n"
        + OUTLOOK_OLD,
        "Einverstanden.",
        ("-----Ursprüngliche Nachricht-----",),
    ),
    (
        "original-message-fr",
        "D'accord.\n\n-----Message d'origine-----\nDe : Bob Smith <bob@corp.example>\n\n"
        + OUTLOOK_OLD,
        "D'accord.",
        ("-----Message d'origine-----",),
    ),
    (
        "original-message-es",
        "De acuerdo.\n\n-----Mensaje original-----\nDe: Bob Smith <bob@corp.example>\n\n"
        + OUTLOOK_OLD,
        "De acuerdo.",
        ("-----Mensaje original-----",),
    ),
    (
        "lotus-original-message",
        'Agreed.\n\n----- Original Message -----\nFrom: "Bob Smith" <bob@corp.example>\n\n'
        + OUTLOOK_OLD,
        "Agreed.",
        ("----- Original Message -----",),
    ),
    (
        "lotus-wrote-separator",
        "Agreed.\n\n-----Bob Smith/Corp@Corp wrote: -----\nTo: budget@lists.corp.example\n\n"
        + OUTLOOK_OLD,
        "Agreed.",
        ("-----Bob Smith/Corp@Corp wrote: -----",),
    ),
    (
        "lotus-to-from-date-block",
        "Agreed.\n\nTo: budget@lists.corp.example\nFrom: Bob Smith/Corp@Corp\n"
        "Date: 03/03/2026 10:12AM\nSubject: Q3 budget review\n\n" + OUTLOOK_OLD,
        "Agreed.",
        ("From: Bob Smith/Corp@Corp",),
    ),
    (
        "samsung-original-message",
        "Sounds good\n\nSent from my Galaxy\n\n\n-------- Original message --------\n"
        "From: Bob Smith <bob@corp.example>\nDate: 03/03/2026 10:12 (GMT+00:00)\n"
        "To: budget@lists.corp.example\nSubject: Q3 budget review\n\n" + OUTLOOK_OLD,
        "Sounds good",
        ("Sent from my Galaxy", "-------- Original message --------"),
    ),
    (
        "yahoo-unquoted-attribution",
        "I can't make Tuesday.\n\n    On Tuesday, March 3, 2026 at 10:12:00 AM GMT, Bob Smith "
        "<bob@corp.example> wrote:\n\n" + OUTLOOK_OLD,
        "I can't make Tuesday.",
        ("On Tuesday, March 3, 2026", "Can we review"),
    ),
    (
        "gmail-forward-with-comment",
        "FYI, see Bob's note below.\n\n---------- Forwarded message ---------\n"
        "From: Bob Smith <bob@corp.example>\nDate: Tue, 3 Mar 2026 at 10:12\n"
        "Subject: Q3 budget review\nTo: <alice@corp.example>\n\n" + OUTLOOK_OLD,
        "FYI, see Bob's note below.",
        ("---------- Forwarded message ---------", "Can we review"),
    ),
    (
        "apple-forward-with-comment",
        "Worth reading.\n\nBegin forwarded message:\n\n"
        "From: Bob Smith <bob@corp.example>\nSubject: Q3 budget review\n"
        "Date: 3 March 2026 at 10:12:00 GMT\nTo: Alice <alice@corp.example>\n\n" + OUTLOOK_OLD,
        "Worth reading.",
        ("Begin forwarded message:", "Can we review"),
    ),
    (
        "thunderbird-de-forward",
        "Zur Info.\n\n-------- Weitergeleitete Nachricht --------\nBetreff: Q3-Budget\n"
        "Datum: Tue, 3 Mar 2026 10:12:00 +0000\nVon: Bob Smith <bob@corp.example>\n"
        "An: alice@corp.example\n\n" + OUTLOOK_OLD,
        "Zur Info.",
        ("-------- Weitergeleitete Nachricht --------",),
    ),
    (
        "signature-dash-dash-space",
        "Tuesday works.\n\n-- \nAlice Example\nHead of Finance, Corp\n+44 20 7946 0000\n",
        "Tuesday works.",
        ("Alice Example", "Head of Finance, Corp"),
    ),
    (
        "signature-dash-dash-bare",
        "Tuesday works.\n\n--\nAlice Example\nHead of Finance\n\nOn Tue, 3 Mar 2026, Bob wrote:\n"
        + QUOTE,
        "Tuesday works.",
        ("Alice Example", "> Can we review"),
    ),
    (
        "footer-outlook-ios",
        "Yes.\n\nGet Outlook for iOS<https://aka.ms/o0ukef>\n"
        "________________________________\nFrom: Bob Smith <bob@corp.example>\n"
        "Sent: Tuesday, March 3, 2026 10:12:00 AM\nTo: budget@lists.corp.example\n"
        "Subject: Q3 budget review\n\n" + OUTLOOK_OLD,
        "Yes.",
        ("Get Outlook for iOS",),
    ),
    (
        "footer-sent-from-outlook-android",
        "Yes.\n\nSent from Outlook for Android\n",
        "Yes.",
        ("Sent from Outlook for Android",),
    ),
    (
        "footer-mail-for-windows",
        "Yes.\n\nSent from Mail for Windows\n",
        "Yes.",
        ("Sent from Mail for Windows",),
    ),
    (
        "footer-samsung-smartphone",
        "Yes.\n\nSent from my Samsung Galaxy smartphone.\n",
        "Yes.",
        ("Sent from my Samsung Galaxy smartphone.",),
    ),
    ("footer-de", "Ja.\n\nVon meinem iPhone gesendet\n", "Ja.", ("Von meinem iPhone gesendet",)),
    ("footer-fr", "Oui.\n\nEnvoyé de mon iPhone\n", "Oui.", ("Envoyé de mon iPhone",)),
    ("footer-es", "Sí.\n\nEnviado desde mi iPhone\n", "Sí.", ("Enviado desde mi iPhone",)),
    ("footer-it", "Sì.\n\nInviato da iPhone\n", "Sì.", ("Inviato da iPhone",)),
    ("footer-ja", "はい。\n\niPhoneから送信\n", "はい。", ("iPhoneから送信",)),
    (
        "interleaved-keeps-answers-and-context",
        "On Tue, 3 Mar 2026 at 10:12, Bob Smith <bob@corp.example> wrote:\n"
        "> Three things for Friday.\n> First, the agenda is attached.\n> Second:\n"
        "> can you book the room?\n\nBooked room 4.12.\n\n> Who is bringing lunch?\n\n"
        "Carol offered to.\n\n> Thanks,\n> Bob\n",
        "> First, the agenda is attached.\n> Second:\n> can you book the room?\n\n"
        "Booked room 4.12.\n\n> Who is bringing lunch?\n\nCarol offered to.",
        ("On Tue, 3 Mar 2026", "> Three things for Friday.", "> Thanks,\n> Bob"),
    ),
    (
        "quote-only-no-new-text",
        "On Tue, 3 Mar 2026 at 10:12, Bob Smith <bob@corp.example> wrote:\n" + QUOTE,
        "",
        ("> Can we review",),
    ),
    # Conservative: these mention the markers inside ordinary text and must survive.
    (
        "keeps-mid-paragraph-sent-from",
        "I sent from my iPhone the photos of the whiteboard.\nSent from my iPhone, they look"
        " blurry, sorry about that; I will redo them tomorrow in the office.\n",
        "I sent from my iPhone the photos of the whiteboard.\nSent from my iPhone, they look"
        " blurry, sorry about that; I will redo them tomorrow in the office.",
        (),
    ),
    (
        "keeps-plain-wrote-colon",
        "Here is what I think we agreed on Tuesday, I wrote:\nthe plan ships on Friday.\n",
        "Here is what I think we agreed on Tuesday, I wrote:\nthe plan ships on Friday.",
        (),
    ),
    (
        "keeps-dashes-as-section-break",
        "Part one.\n--\n" + "".join(f"Point {n} of the long proposal.\n" for n in range(1, 20)),
        "Part one.\n--\n" + "\n".join(f"Point {n} of the long proposal." for n in range(1, 20)),
        (),
    ),
    (
        "keeps-from-line-in-text",
        "From: the finance team's perspective, Tuesday is fine.\nTo: be confirmed.\n",
        "From: the finance team's perspective, Tuesday is fine.\nTo: be confirmed.",
        (),
    ),
    (
        "mutt-bracket-date-attribution",
        "* Bob Smith <bob@corp.example> [2026-03-03 10:12]:\n" + QUOTE + "\nTuesday works.\n",
        "> Can we review the Q3 budget on Tuesday?\n>\n> Bob\n\nTuesday works.",
        ("* Bob Smith <bob@corp.example> [2026-03-03 10:12]:",),
    ),
    (
        "mutt-bracket-date-attribution-top-post",
        "Tuesday works.\n\n* Bob Smith <bob@corp.example> [2026-03-03 10:12]:\n" + QUOTE,
        "Tuesday works.",
        ("[2026-03-03 10:12]:", "> Can we review"),
    ),
    (
        "mutt-name-only-long-date-attribution",
        "Tuesday works.\n\n* Bob Smith [Tue, Mar 03, 2026 at 10:12:00AM +0000]:\n" + QUOTE,
        "Tuesday works.",
        ("* Bob Smith [Tue, Mar 03, 2026 at 10:12:00AM +0000]:",),
    ),
    (
        "keeps-bullet-with-bracket-before-quote",
        "Notes:\n* Rollout [v2]:\n> Can we review the Q3 budget on Tuesday?\nYes.\n",
        "Notes:\n* Rollout [v2]:\n> Can we review the Q3 budget on Tuesday?\nYes.",
        (),
    ),
    (
        "footer-proton-markdown-link",
        "Tuesday works.\n\nRaj\n\nSent with [Proton Mail](https://proton.me/mail/home) secure"
        " email.\n\nOn Tuesday, March 3rd, 2026 at 10:12 AM, Bob Smith <bob@corp.example> wrote:"
        "\n\n" + QUOTE,
        "Tuesday works.\n\nRaj",
        ("Sent with [Proton Mail](https://proton.me/mail/home) secure email.", "> Bob"),
    ),
    (
        "footer-proton-plain",
        "Tuesday works.\n\nSent with Proton Mail secure email.\n",
        "Tuesday works.",
        ("Sent with Proton Mail secure email.",),
    ),
    (
        "keeps-sentence-mentioning-proton",
        "Tuesday works. Sent with Proton Mail secure email, as our policy requires for the"
        " budget files.\n",
        "Tuesday works. Sent with Proton Mail secure email, as our policy requires for the"
        " budget files.",
        (),
    ),
]


@pytest.mark.parametrize(
    ("body", "expected", "elided"),
    [pytest.param(b, e, el, id=i) for i, b, e, el in PLAIN_CASES],
)
def test_plain_text_replies(body: str, expected: str, elided: tuple[str, ...]) -> None:
    result = _body(_raw(body, content_type="text/plain; charset=utf-8"))
    assert result.source == "text/plain"
    assert result.text == expected
    for snippet in elided:
        assert snippet in result.elided
        assert snippet not in result.text


# (fixture, expected new text, must be elided, must not appear anywhere)
HTML_CASES: list[tuple[str, str, tuple[str, ...]]] = [
    (
        "bodies-gmail-html-only.eml",
        "Tuesday works for me. The draft is in [the Q3 plan](https://docs.corp.example/q3-plan)."
        "\n\nAlice",
        ("On Tue, 3 Mar 2026 at 10:12, Bob Smith", "Can we review the Q3 budget"),
    ),
    (
        "bodies-gmail-html-interleaved.eml",
        "Answers inline.\n\n> Can you book the room?\n\nBooked room 4.12 for Friday.\n\n"
        "> Who is bringing lunch?\n\nCarol offered to.",
        ("On Tue, 3 Mar 2026 at 10:12", "Thanks,"),
    ),
    (
        "bodies-outlook-html-reply.eml",
        "Agreed, let's move the review to Thursday.\n\nCarol",
        ("From: Bob Smith <bob@corp.example>", "Can we review the Q3 budget"),
    ),
    (
        "bodies-outlook-web-html.eml",
        "Count me in for Thursday.",
        ("Sent: Tuesday, March 3, 2026", "Can we review the Q3 budget"),
    ),
    (
        "bodies-apple-html-cite.eml",
        "Fine by me.\n\nErin",
        ("On 3 Mar 2026, at 10:12, Bob Smith", "Can we review the Q3 budget"),
    ),
    (
        "bodies-yahoo-html.eml",
        "I can't make Tuesday, sorry.",
        ("On Tuesday, March 3, 2026 at 10:12:00 AM GMT", "Can we review the Q3 budget"),
    ),
]


@pytest.mark.parametrize(("fixture", "expected", "elided"), HTML_CASES)
def test_html_replies(fixture: str, expected: str, elided: tuple[str, ...]) -> None:
    result = _body((FIXTURES / fixture).read_bytes())
    assert result.source == "text/html"
    assert result.text == expected
    for snippet in elided:
        assert snippet in result.elided
        assert snippet not in result.text


def test_html_xss_is_removed() -> None:
    result = _body((FIXTURES / "bodies-xss-html.eml").read_bytes())
    assert result.source == "text/html"
    assert (
        result.text == "Looks fine.\n\nclick me or [the plan](https://www.corp.example/q3)\n\nHover"
    )
    everything = (result.text + result.elided).lower()
    for bad in ("<script", "onerror", "onload", "onclick", "javascript:", "alert(", "<iframe"):
        assert bad not in everything


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        pytest.param('<p>Hi<img src=x onerror="alert(1)"></p>', "Hi", id="img-onerror"),
        pytest.param("<script>alert(1)</script><p>Hi</p>", "Hi", id="script-content-dropped"),
        pytest.param(
            '<p><a href="https://x.corp.example/a">the doc</a></p>',
            "[the doc](https://x.corp.example/a)",
            id="link-readable",
        ),
        pytest.param(
            '<p><a href="mailto:bob@corp.example">bob@corp.example</a></p>',
            "bob@corp.example",
            id="mailto-plain",
        ),
        pytest.param("<p>-- <br>Alice</p>", "--\nAlice", id="no-markdown-escapes"),
        pytest.param("<style>p{}</style><title>T</title><p>x</p>", "x", id="style-title-dropped"),
        pytest.param("<blockquote>old</blockquote><p>new</p>", "> old\n\nnew", id="quote-marks"),
        pytest.param("<div><p>unclosed<b>bold", "unclosed**bold**", id="broken-html"),
    ],
)
def test_html_to_text(html: str, expected: str) -> None:
    assert html_to_text(html) == expected


def test_blank_plain_part_falls_back_to_html() -> None:
    result = _body((FIXTURES / "bodies-outlook-web-html.eml").read_bytes())
    assert result.source == "text/html"
    assert result.text == "Count me in for Thursday."


def test_plain_preferred_over_html() -> None:
    raw = (
        "From: Alice Example <alice@corp.example>\nTo: budget@lists.corp.example\n"
        "Subject: Re: Q3\nMessage-ID: <alt-1@corp.example>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="b1"\n\n'
        "--b1\nContent-Type: text/plain; charset=utf-8\n\nPlain wins.\n\n"
        "On Tue, 3 Mar 2026 at 10:12, Bob <bob@corp.example> wrote:\n> old\n"
        "--b1\nContent-Type: text/html; charset=utf-8\n\n<p>HTML loses.</p>\n--b1--\n"
    ).replace("\n", "\r\n")
    result = _body(raw.encode())
    assert (result.source, result.text) == ("text/plain", "Plain wins.")
    assert "> old" in result.elided


def test_no_body_part() -> None:
    raw = _raw("", content_type="application/pdf", extra="Content-Disposition: attachment\n")
    result = _body(raw)
    assert (result.text, result.elided, result.source) == ("", "", "none")


def test_normalisation() -> None:
    raw = "\r\n\r\nLine one   \r\n\r\n\r\n\r\nLine two\t\r\n\r\n"
    assert split_reply(raw) == ("Line one\n\nLine two", "")


def test_attachments_are_sanitised_and_hashed() -> None:
    raw = (
        "From: Alice Example <alice@corp.example>\nTo: budget@lists.corp.example\n"
        "Subject: files\nMessage-ID: <att-1@corp.example>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="m1"\n\n'
        "--m1\nContent-Type: text/plain; charset=utf-8\n\nSee attached.\n"
        "--m1\nContent-Type: application/octet-stream\n"
        "Content-Disposition: attachment; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd\n"
        "Content-Transfer-Encoding: base64\n\naGVsbG8=\n"
        "--m1\nContent-Type: application/pdf\n"
        "Content-Disposition: attachment; filename*=UTF-8''invoice%E2%80%AEgpj.exe\n"
        "Content-Transfer-Encoding: base64\n\naGVsbG8=\n--m1--\n"
    ).replace("\n", "\r\n")
    result = _body(raw.encode())
    assert result.text == "See attached."
    names = [a.filename for a in result.attachments]
    assert names == ["etc_passwd", "invoicegpj.exe"]
    first = result.attachments[0]
    assert first.size == 5
    assert first.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("..%2F..%2Fetc%2Fpasswd", "etc_passwd", id="percent-encoded-traversal"),
        pytest.param("..%252F..%252Fetc%252Fpasswd", "etc_passwd", id="double-encoded"),
        pytest.param("../../etc/passwd", "etc_passwd", id="traversal"),
        pytest.param("..\\..\\windows\\win.ini", "windows_win.ini", id="backslash-traversal"),
        pytest.param("invoice\u202egpj.exe", "invoicegpj.exe", id="bidi-rlo"),
        pytest.param("report\u2066\u2069.pdf", "report.pdf", id="bidi-isolates"),
        pytest.param("bad\x00name\r\n.txt", "badname.txt", id="control-chars"),
        pytest.param(".htaccess", "htaccess", id="leading-dot"),
        pytest.param("", "attachment", id="empty"),
        pytest.param("../..", "attachment", id="only-dots"),
        pytest.param("\u202e", "attachment", id="only-bidi"),
        pytest.param("con.txt", "_con.txt", id="windows-reserved"),
        pytest.param('a<b>:c"d|e?f*.txt', "a_b__c_d_e_f_.txt", id="windows-unsafe"),
        pytest.param("Résumé 2026.pdf", "Résumé 2026.pdf", id="unicode-kept"),
        pytest.param("x" * 300 + ".pdf", "x" * 146 + ".pdf", id="capped-keeps-extension"),
    ],
)
def test_sanitize_filename(name: str, expected: str) -> None:
    assert sanitize_filename(name) == expected


def test_filename_cap_also_bounds_bytes() -> None:
    name = sanitize_filename("日本語" * 100 + ".pdf")
    assert len(name) <= 150 and len(name.encode("utf-8")) <= 255 and name.endswith(".pdf")


_line = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "> quoted",
            ">",
            "-- ",
            "--",
            "",
            "On Tue, 3 Mar 2026 at 10:12, Bob Smith <bob@corp.example>",
            "wrote:",
            "On 3/3/26 10:12, Bob wrote:",
            "From: Bob <bob@corp.example>",
            "Sent: Tuesday",
            "To: x",
            "Subject: y",
            "________________________________",
            "-----Original Message-----",
            "Sent from my iPhone",
            "Begin forwarded message:",
            "答案",
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, max_size=40), st.sampled_from(["\n", "\r\n", "\r"]))
def test_split_reply_never_raises_and_loses_no_line(lines: list[str], eol: str) -> None:
    text = eol.join(lines)
    new, elided = split_reply(text)
    kept = set(new.split("\n")) | set(elided.split("\n"))
    for line in text.splitlines():
        if line.strip():
            assert line.rstrip() in kept


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=500))
def test_html_path_never_raises(html: str) -> None:
    text = html_to_text(html)
    assert "<script" not in text.lower() or "<script" in html.lower()


def test_typical_ten_kilobyte_reply_splits_into_its_new_text_and_the_history() -> None:
    """The typical reply of bench/stages.py (its cost is measured there, against a
    same-run baseline; a wall-clock ceiling here only flaked on loaded machines)."""
    old = "".join(
        f"> Paragraph {n}: the quarterly numbers look reasonable to me.\n" for n in range(90)
    )
    attribution = "On Tue, 3 Mar 2026 at 10:12, Bob Smith <bob@corp.example> wrote:"
    paragraph = "Thanks Bob, that all makes sense. Two points below, then the rest."
    body = f"{paragraph}\n\n" * 40 + f"Alice\n\n{attribution}\n\n" + old
    assert 8_000 < len(body.encode()) < 12_000
    new, elided = split_reply(body)
    assert new == "\n\n".join([paragraph] * 40 + ["Alice"])
    assert elided.startswith(attribution + "\n")
    assert elided.rstrip("\n").endswith(old.rstrip("\n"))
    assert elided.count("> Paragraph") == 90
