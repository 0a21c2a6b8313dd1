"""Classify stage: bounces, loops, auto-replies, list traffic and posts (LOOP-01/02/05, BNC-04)."""

from __future__ import annotations

from email.header import Header
from pathlib import Path

import pytest

from mailgate.classify import (
    Classification,
    MailClass,
    OurAddresses,
    classify,
    is_automatic,
)
from mailgate.dsn import parse_bounce
from mailgate.parse import parse_message

MAIL = Path(__file__).resolve().parent.parent / "fixtures" / "mail"
OURS = OurAddresses(
    domain="lists.corp.example",
    list_ids=frozenset({"eng.lists.corp.example", "allhands.lists.corp.example"}),
    loop_marker="mailgate@lists.corp.example",
)


def load_raw(name: str) -> bytes:
    return (MAIL / name).read_bytes()


def run(raw: bytes, mail_from: str = "jane.doe@corp.example") -> Classification:
    return classify(parse_message(raw), mail_from=mail_from, ours=OURS)


# --- fixtures ------------------------------------------------------------------------------

BOUNCE = MailClass.BOUNCE
AUTO = MailClass.AUTO_REPLY

FIXTURES = [
    # (fixture, envelope sender, kind, reason)
    ("dsn-postfix-hard.eml", "", BOUNCE, "dsn"),
    ("dsn-postfix-delayed.eml", "", BOUNCE, "dsn"),
    ("dsn-postfix-alias.eml", "", BOUNCE, "dsn"),
    ("dsn-postfix-damaged-report.eml", "", BOUNCE, "dsn"),
    ("dsn-exim-hard.eml", "", BOUNCE, "dsn"),
    ("dsn-exim-classic.eml", "", BOUNCE, "mailer-daemon"),
    ("dsn-exchange-online-5.1.10.eml", "", BOUNCE, "dsn"),
    ("dsn-exchange-de-unzustellbar.eml", "", BOUNCE, "dsn"),
    ("dsn-gmail-hard.eml", "", BOUNCE, "dsn"),
    ("dsn-qmail-failure-notice.eml", "", BOUNCE, "mailer-daemon"),
    ("dsn-sendmail-returned-mail.eml", "", BOUNCE, "dsn"),
    ("autoreply-outlook-en.eml", "t.nguyen@corp.example", AUTO, "auto-submitted"),
    ("autoreply-outlook-de.eml", "h.weber@corp.example", AUTO, "auto-submitted"),
    ("autoreply-outlook-fr.eml", "l.moreau@corp.example", AUTO, "auto-submitted"),
    ("autoreply-outlook-es.eml", "r.ortiz@corp.example", AUTO, "auto-submitted"),
    ("autoreply-outlook-it.eml", "g.rossi@corp.example", AUTO, "auto-submitted"),
    ("autoreply-outlook-pt.eml", "ana.silva@corp.example", AUTO, "auto-submitted"),
    ("autoreply-outlook-nl.eml", "d.devries@corp.example", AUTO, "auto-submitted"),
    ("autoreply-outlook-sv.eml", "k.berg@corp.example", AUTO, "auto-submitted"),
    ("autoreply-outlook-ru.eml", "i.petrov@corp.example", AUTO, "auto-submitted"),
    ("autoreply-outlook-ja.eml", "k.sato@corp.example", AUTO, "auto-submitted"),
    ("autoreply-outlook-zh.eml", "f.wang@corp.example", AUTO, "auto-submitted"),
    ("autoreply-outlook-tr.eml", "e.yilmaz@corp.example", AUTO, "auto-submitted"),
    ("autoreply-outlook-fi.eml", "m.virtanen@corp.example", AUTO, "auto-submitted"),
    ("autoreply-gmail-en.eml", "sam.patel.dev@gmail.com", AUTO, "auto-submitted"),
    ("autoreply-icloud-en.eml", "mia.chen@icloud.com", AUTO, "auto-submitted"),
    ("autoreply-zimbra-fr.eml", "", AUTO, "auto-submitted"),
    ("autoreply-cpanel-en.eml", "info@partner-studio.example", AUTO, "precedence-auto-reply"),
    # No RFC 3834 header at all: the subject alone gives these away.
    ("autoreply-notes-en.eml", "david.brown@partner.example", AUTO, "ooo-subject"),
    ("autoreply-notes-de.eml", "k.fischer@partner.example", AUTO, "ooo-subject"),
    ("autoreply-exchange2003-en.eml", "r.king@partner.example", AUTO, "ooo-subject"),
    # Precedence: bulk would say "list"; the out-of-office subject is checked first.
    ("autoreply-vacation-pl.eml", "m.kowalski@partner.example", AUTO, "ooo-subject"),
]


def test_fixture_table_covers_every_dsn_and_autoreply_file():
    on_disk = {p.name for p in MAIL.glob("dsn-*.eml")} | {
        p.name for p in MAIL.glob("autoreply-*.eml")
    }
    assert on_disk == {name for name, *_ in FIXTURES}


@pytest.mark.parametrize(("name", "mail_from", "kind", "reason"), FIXTURES)
def test_fixture_classification(name: str, mail_from: str, kind: MailClass, reason: str):
    result = run(load_raw(name), mail_from)
    assert (result.kind, result.reason) == (kind, reason)
    if kind is MailClass.BOUNCE:
        assert result.bounced, "every bounce fixture names its failed recipient"
        assert result.bounced == parse_bounce(parse_message(load_raw(name)))
    else:
        assert result.bounced == ()


@pytest.mark.parametrize(("name", "mail_from", "kind", "reason"), FIXTURES)
def test_fixtures_never_get_an_automatic_response(
    name: str, mail_from: str, kind: MailClass, reason: str
):
    assert is_automatic(parse_message(load_raw(name)), mail_from=mail_from) is not None


def _strip_fields(raw: bytes, *names: str) -> bytes:
    lowered = tuple(n.lower().encode() + b":" for n in names)
    return b"\n".join(line for line in raw.split(b"\n") if not line.lower().startswith(lowered))


OUTLOOK_LANGS = ["en", "de", "fr", "es", "it", "pt", "nl", "sv", "ru", "ja", "zh", "tr", "fi"]


@pytest.mark.parametrize("lang", OUTLOOK_LANGS)
def test_outlook_subject_alone_is_enough(lang: str):
    # A relay that drops Auto-Submitted and the Exchange rule stamp must not turn an
    # out-of-office into a post: the localised subject prefix still gives it away.
    raw = _strip_fields(
        load_raw(f"autoreply-outlook-{lang}.eml"),
        "Auto-Submitted",
        "X-MS-Exchange-Inbox-Rules-Loop",
    )
    assert b"Auto-Submitted" not in raw
    result = run(raw, "someone@corp.example")
    assert (result.kind, result.reason) == (AUTO, "ooo-subject")


def test_exchange_inbox_rule_stamp_alone_is_an_auto_reply():
    raw = _strip_fields(load_raw("autoreply-outlook-en.eml"), "Auto-Submitted")
    raw = raw.replace(b"Automatic reply: [eng]", b"[eng]")
    result = run(raw, "t.nguyen@corp.example")
    assert (result.kind, result.reason) == (AUTO, "inbox-rule")


# --- real-looking posts and their variants ---------------------------------------------------

GMAIL_POST = b"""Delivered-To: eng@lists.corp.example
Received: by mail-wr1-f41.google.com with SMTP id ffacd0b85a97d-39131f2bbe5so1234567f8f.3
        for <eng@lists.corp.example>; Tue, 11 Mar 2025 08:02:41 -0700 (PDT)
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=gmail.com; s=20230601; t=1741705361;
        h=to:subject:message-id:date:from:mime-version:from:to:cc:subject:date:message-id;
        bh=E4mP7n0n3FQ3m5b0z5cQmV8b3Wq8lXKQhVQk6GdJc0A=; b=U1VCSkVDVAo=
X-Gm-Message-State: AOJu0YzX1Q2w3E4r5T6y7U8i9O0p
X-Google-Smtp-Source: AGHT+IF1a2b3c4d5e6f7g8h9i0j
MIME-Version: 1.0
From: Sam Patel <sam.patel.dev@gmail.com>
Date: Tue, 11 Mar 2025 15:02:30 +0000
Message-ID: <CAK8qZ1uN2o3P4q5R6s7T8u9V0w1X2y3Z4a5B6c7D8e9F0g1H2i@mail.gmail.com>
Subject: SUBJECT_HERE
To: eng@lists.corp.example
EXTRA_FIELDSContent-Type: multipart/alternative; boundary="0000000000004f5e6a06302b7c8d"

--0000000000004f5e6a06302b7c8d
Content-Type: text/plain; charset="UTF-8"

Hi all, the staging cluster is back; deploys are unblocked.

Sam

--0000000000004f5e6a06302b7c8d
Content-Type: text/html; charset="UTF-8"

<div dir="ltr">Hi all, the staging cluster is back; deploys are unblocked.<br><br>Sam</div>

--0000000000004f5e6a06302b7c8d--
"""

OUTLOOK_POST = b"""Received: from AM9PR07MB7202.eurprd07.prod.outlook.com ([fe80::1]) by
 AM9PR07MB7202.eurprd07.prod.outlook.com ([fe80::1%7]) with mapi id 15.20.8511.025;
 Tue, 11 Mar 2025 14:31:08 +0000
From: Jane Doe <jane.doe@corp.example>
To: "eng@lists.corp.example" <eng@lists.corp.example>
Subject: SUBJECT_HERE
Thread-Topic: Out of office policy discussion
Thread-Index: AduSZ3T4lL1sQ7a9TyK0b8mHf2xA1wAAb1Cd
Date: Tue, 11 Mar 2025 14:31:08 +0000
Message-ID: <AM9PR07MB72024C1E2D3F4A5B6C7D8E9FA0B1C2D3@AM9PR07MB7202.eurprd07.prod.outlook.com>
References: <m.1a2b3c4d5e@lists.corp.example>
In-Reply-To: <m.1a2b3c4d5e@lists.corp.example>
Accept-Language: en-US
Content-Language: en-US
X-MS-Has-Attach:
X-MS-TNEF-Correlator:
EXTRA_FIELDSContent-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable
MIME-Version: 1.0

I agree with Tom: the out of office policy should say who covers on-call.

Jane
"""


def post(subject: str = "Staging is back", extra: str = "", base: bytes = GMAIL_POST) -> bytes:
    if not subject.isascii():
        subject = Header(subject, "utf-8").encode()  # as clients send it (RFC 2047)
    extra_bytes = "".join(f"{line}\n" for line in extra.split("\n") if line).encode()
    return base.replace(b"SUBJECT_HERE", subject.encode()).replace(b"EXTRA_FIELDS", extra_bytes)


def test_plain_gmail_post_is_a_post_and_may_get_notices():
    raw = post()
    assert run(raw, "sam.patel.dev@gmail.com") == Classification(MailClass.POST, "post")
    assert is_automatic(parse_message(raw), mail_from="sam.patel.dev@gmail.com") is None


@pytest.mark.parametrize(
    ("subject", "base"),
    [
        ("Re: out of office policy discussion", OUTLOOK_POST),
        ("RE: Out of Office policy discussion", OUTLOOK_POST),
        ("Out of office tomorrow, ping me on chat", GMAIL_POST),
        ("Auto-reply rules broken in Outlook?", GMAIL_POST),
        ("Re: Automatic reply: [eng] Q3 roadmap review", OUTLOOK_POST),  # a person answering it
        ("Fwd: Undeliverable: invoice 4471", OUTLOOK_POST),
        ("Undeliverable: parcel for the Berlin office", GMAIL_POST),  # not from a daemon
        ("Ausente el viernes por la tarde", GMAIL_POST),
        ("Afwezigheid tijdens de verhuizing", GMAIL_POST),
        ("Autosvaret i Outlook fungerar inte", GMAIL_POST),
        ("Automatic replies are on for the whole team during the offsite", GMAIL_POST),
        ("Returned mail room keys", GMAIL_POST),
        ("Weekly update: out of office calendar", GMAIL_POST),
    ],
)
def test_subjects_that_merely_mention_absence_stay_posts(subject: str, base: bytes):
    result = run(post(subject, base=base), "jane.doe@corp.example")
    assert result == Classification(MailClass.POST, "post")


@pytest.mark.parametrize(
    "subject",
    [
        "Out of Office",
        "out of office",
        "Out of Office: back on 17 March",
        "Automatic reply: Staging is back",
        "Automatic reply : Staging is back",
        "[Auto-Reply] Staging is back",
        "[Out of Office] Re: Staging is back",
        "Réponse automatique : Staging is back",
        "Réponse automatique d'absence du bureau : Staging is back",
        "Abwesend: Staging is back",
        "Fuori sede",
        "Ausente: hasta el lunes",
        "Afwezig: Staging is back",
        "Frånvaro: Staging is back",
        "Autosvar: Staging is back",
        "Automatyczna odpowiedź: Staging is back",
        "Автоответ: Staging is back",
        "自动回复：Staging is back",
        "自動応答：Staging is back",
        "不在: Staging is back",
        "Otomatik yanıt: Staging is back",
        "Automaattinen vastaus: Staging is back",
        "Poza biurem: Staging is back",
        "Jane Doe is out of the office.",
        "  Automatic reply:   leading spaces",
    ],
)
def test_out_of_office_subjects(subject: str):
    result = run(post(subject), "sam.patel.dev@gmail.com")
    assert (result.kind, result.reason) == (AUTO, "ooo-subject")


def test_decomposed_unicode_subject_still_matches():
    # macOS can send NFD ("e" + combining acute); the prefix list is NFC.
    nfd = "Re\u0301ponse automatique : Staging is back"
    result = run(post(Header(nfd, "utf-8").encode()), "a@partner.example")
    assert (result.kind, result.reason) == (AUTO, "ooo-subject")


# --- headers: classify ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "mail_from", "kind", "reason"),
    [
        ("Auto-Submitted: auto-replied", "a@partner.example", AUTO, "auto-submitted"),
        ("Auto-Submitted: auto-generated", "a@partner.example", AUTO, "auto-submitted"),
        ("Auto-Submitted: auto-notified", "a@partner.example", AUTO, "auto-submitted"),
        ("Auto-Submitted: Auto-Replied (vacation)", "a@partner.example", AUTO, "auto-submitted"),
        ("Auto-Submitted: no", "a@partner.example", MailClass.POST, "post"),
        ("Auto-Submitted: No (sent by a person)", "a@partner.example", MailClass.POST, "post"),
        ("Precedence: auto_reply", "a@partner.example", AUTO, "precedence-auto-reply"),
        ("X-Autoreply: yes", "a@partner.example", AUTO, "x-autoreply"),
        ("X-Autorespond: Staging is back", "a@partner.example", AUTO, "x-autorespond"),
        (
            "X-MS-Exchange-Inbox-Rules-Loop: a@partner.example",
            "a@partner.example",
            AUTO,
            "inbox-rule",
        ),
        ("", "", AUTO, "null-sender"),
        ("", "noreply@partner.example", AUTO, "noreply-sender"),
        ("Precedence: bulk", "a@partner.example", MailClass.MAILING_LIST, "precedence-bulk"),
        ("Precedence: list", "a@partner.example", MailClass.MAILING_LIST, "precedence-list"),
        ("Precedence: junk", "a@partner.example", MailClass.MAILING_LIST, "precedence-junk"),
        (
            "List-Id: Platform Guild <platform-guild.googlegroups.com>\n"
            "List-Post: <mailto:platform-guild@googlegroups.com>",
            "a@partner.example",
            MailClass.MAILING_LIST,
            "list-headers",
        ),
        (
            "List-Unsubscribe: <https://news.partner.example/u/abc>",
            "a@partner.example",
            MailClass.MAILING_LIST,
            "list-headers",
        ),
        (
            "X-Mailing-List: <dev@partner.example>",
            "a@partner.example",
            MailClass.MAILING_LIST,
            "list-headers",
        ),
        (
            "Mailing-List: contact dev-help@partner.example",
            "a@partner.example",
            MailClass.MAILING_LIST,
            "list-headers",
        ),
        # Not signs of automatic mail on their own.
        ("X-Auto-Response-Suppress: All", "a@partner.example", MailClass.POST, "post"),
        ("Feedback-ID: 123:abc:gmail", "a@partner.example", MailClass.POST, "post"),
        ("X-Loop: someone-else@partner.example", "a@partner.example", MailClass.POST, "post"),
    ],
)
def test_header_matrix(extra: str, mail_from: str, kind: MailClass, reason: str):
    result = run(post(extra=extra), mail_from)
    assert (result.kind, result.reason) == (kind, reason)


@pytest.mark.parametrize(
    ("from_field", "reason"),
    [
        ("From: Mail Delivery System <MAILER-DAEMON@mx.partner.example>", "mailer-daemon"),
        ("From: postmaster@partner.example", "mailer-daemon"),
        ("From: GitHub <noreply@github.com>", "noreply-sender"),
        ("From: Jira <no-reply+jira@partner.example>", "noreply-sender"),
        ("From: Billing <DoNotReply@partner.example>", "noreply-sender"),
    ],
)
def test_robot_senders_are_auto_replies(from_field: str, reason: str):
    raw = post().replace(b"From: Sam Patel <sam.patel.dev@gmail.com>", from_field.encode())
    result = run(raw, "bounce-1234@partner.example")
    assert (result.kind, result.reason) == (AUTO, reason)


# --- bounces that are not RFC 3464 reports (BNC-04) -------------------------------------------


@pytest.mark.parametrize(
    ("from_field", "subject", "mail_from", "reason"),
    [
        (
            "postmaster@partner.example",
            "Undeliverable: Staging is back",
            "x@partner.example",
            "mailer-daemon",
        ),
        ("MAILER-DAEMON@partner.example", "Returned mail: User unknown", "", "mailer-daemon"),
        (
            "Mail Delivery <bounce-handler@partner.example>",
            "Mail delivery failed",
            "",
            "null-sender",
        ),
        (
            "Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@corp.example>",
            "Non remis : Staging is back",
            "",
            "mailer-daemon",
        ),
        ("postmaster@corp.example", "No se puede entregar: Staging is back", "", "mailer-daemon"),
        ("postmaster@corp.example", "Unzustellbar: Staging is back", "", "mailer-daemon"),
    ],
)
def test_text_bounces_by_sender_and_subject(
    from_field: str, subject: str, mail_from: str, reason: str
):
    raw = post(subject).replace(
        b"From: Sam Patel <sam.patel.dev@gmail.com>", f"From: {from_field}".encode()
    )
    result = run(raw, mail_from)
    assert (result.kind, result.reason) == (BOUNCE, reason)


def test_x_failed_recipients_makes_a_bounce_even_without_a_bounce_subject():
    raw = post("Re: Staging is back", extra="X-Failed-Recipients: gone@corp.example")
    result = run(raw, "")
    assert result.kind is BOUNCE
    assert [b.address for b in result.bounced] == ["gone@corp.example"]


def test_read_receipt_is_not_a_bounce_but_is_automatic():
    raw = (
        b"From: Jane Doe <jane.doe@corp.example>\n"
        b"To: reply+abc@lists.corp.example\n"
        b"Subject: Read: Staging is back\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=disposition-notification; boundary="r"\n\n'
        b"--r\nContent-Type: text/plain\n\nYour message was read on 11/03/2025 15:10.\n"
        b"--r\nContent-Type: message/disposition-notification\n\n"
        b"Final-Recipient: rfc822;jane.doe@corp.example\n"
        b"Disposition: manual-action/MDN-sent-manually; displayed\n"
        b"--r--\n"
    )
    assert run(raw, "jane.doe@corp.example") == Classification(AUTO, "mdn")
    assert is_automatic(parse_message(raw), mail_from="jane.doe@corp.example") == "report"


# --- loops (LOOP-05) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "from_field", "mail_from", "reason"),
    [
        ("List-Id: Engineering <eng.lists.corp.example>", None, "a@partner.example", "our-list-id"),
        ("List-Id: <ALLHANDS.lists.corp.example>", None, "a@partner.example", "our-list-id"),
        ("List-Post: <mailto:eng@lists.corp.example>", None, "a@partner.example", "our-list-post"),
        ("X-Loop: mailgate@lists.corp.example", None, "a@partner.example", "x-loop"),
        (
            "X-Loop: other@relay.example\nX-Loop: MailGate@lists.corp.example",
            None,
            "a@partner.example",
            "x-loop",
        ),
        ("", "From: Eng list <reply+abc@lists.corp.example>", "a@partner.example", "robot-sender"),
        ("", "From: eng@lists.corp.example", "a@partner.example", "robot-sender"),
        ("", None, "bounces+Zt4wN8cQ@lists.corp.example", "robot-sender"),
        ("", None, "<eng-owner@LISTS.CORP.EXAMPLE>", "robot-sender"),
        # Our loop beats the auto-reply and list checks that would otherwise match.
        (
            "List-Id: Engineering <eng.lists.corp.example>\n"
            "Precedence: list\n"
            "Auto-Submitted: auto-generated",
            None,
            "a@partner.example",
            "our-list-id",
        ),
    ],
)
def test_our_own_mail_is_a_loop(extra: str, from_field: str | None, mail_from: str, reason: str):
    raw = post(extra=extra)
    if from_field:
        raw = raw.replace(b"From: Sam Patel <sam.patel.dev@gmail.com>", from_field.encode())
    result = run(raw, mail_from)
    assert (result.kind, result.reason) == (MailClass.LOOP, reason)


def test_reinjected_outbound_copy_is_a_loop():
    # One of our list copies sent straight back (a member's redirect rule, a re-injection).
    raw = post(
        "[eng] Staging is back",
        extra=(
            "List-Id: Engineering <eng.lists.corp.example>\n"
            "List-Post: <mailto:eng@lists.corp.example>\n"
            "List-Unsubscribe: <mailto:eng-leave@lists.corp.example>\n"
            "Precedence: list\n"
            "X-Loop: mailgate@lists.corp.example\n"
            "X-Auto-Response-Suppress: OOF, AutoReply"
        ),
    )
    assert run(raw, "bounces+q1w2e3@lists.corp.example") == Classification(
        MailClass.LOOP, "our-list-id"
    )


@pytest.mark.parametrize(
    "extra",
    [
        "List-Id: Engineering <eng.lists.corp.example.evil.example>",
        "List-Id: <eng.lists.corp.example.partner.example>",
        "List-Post: <mailto:eng@lists.corp.example.evil.example>",
    ],
)
def test_lookalike_list_ids_are_someone_elses_list(extra: str):
    result = run(post(extra=extra), "a@partner.example")
    assert (result.kind, result.reason) == (MailClass.MAILING_LIST, "list-headers")


def test_employee_on_company_domain_is_not_a_robot():
    # corp.example is the company; only lists.corp.example is ours.
    raw = post().replace(
        b"From: Sam Patel <sam.patel.dev@gmail.com>", b"From: Jane <jane@corp.example>"
    )
    assert run(raw, "jane@corp.example") == Classification(MailClass.POST, "post")


def test_bounce_is_checked_before_loop():
    # A DSN about our list copy quotes our List-Id in the returned headers and goes to
    # our bounces+ address; it is still a bounce, not a loop.
    result = run(load_raw("dsn-postfix-hard.eml"), "")
    assert result.kind is BOUNCE


# --- is_automatic (LOOP-01) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "mail_from", "reason"),
    [
        ("", "", "null-sender"),
        ("", "<>", "null-sender"),
        ("Auto-Submitted: auto-replied", "a@partner.example", "auto-submitted"),
        ("Auto-Submitted: auto-generated", "a@partner.example", "auto-submitted"),
        ("X-Auto-Response-Suppress: All", "a@partner.example", "x-auto-response-suppress"),
        (
            "X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply",
            "a@partner.example",
            "x-auto-response-suppress",
        ),
        ("X-Auto-Response-Suppress: autoreply", "a@partner.example", "x-auto-response-suppress"),
        ("Precedence: bulk", "a@partner.example", "precedence-bulk"),
        ("Precedence: list", "a@partner.example", "precedence-list"),
        ("Precedence: junk", "a@partner.example", "precedence-junk"),
        ("Precedence: auto_reply", "a@partner.example", "precedence-auto-reply"),
        ("List-Id: <dev.partner.example>", "a@partner.example", "list-headers"),
        ("List-Unsubscribe: <mailto:leave@partner.example>", "a@partner.example", "list-headers"),
        ("List-Help: <mailto:help@partner.example>", "a@partner.example", "list-headers"),
        ("X-Autoreply: yes", "a@partner.example", "x-autoreply"),
        # Not reasons on their own: a person sending ordinary mail.
        ("Auto-Submitted: no", "a@partner.example", None),
        ("X-Auto-Response-Suppress: DR, RN, NRN", "a@partner.example", None),
        ("Precedence: first-class", "a@partner.example", None),
        ("Importance: high", "a@partner.example", None),
    ],
)
def test_is_automatic_matrix(extra: str, mail_from: str, reason: str | None):
    assert is_automatic(parse_message(post(extra=extra)), mail_from=mail_from) == reason


def test_is_automatic_multipart_report_without_auto_submitted():
    # Exchange sometimes omits Auto-Submitted on reports.
    raw = _strip_fields(load_raw("dsn-exchange-online-5.1.10.eml"), "Auto-Submitted")
    assert is_automatic(parse_message(raw), mail_from="postmaster@corp.example") == "report"


def test_post_with_suppress_header_is_a_post_but_gets_no_notice():
    raw = post("Re: out of office policy discussion", "X-Auto-Response-Suppress: OOF", OUTLOOK_POST)
    assert run(raw, "jane.doe@corp.example") == Classification(MailClass.POST, "post")
    assert is_automatic(parse_message(raw), mail_from="jane.doe@corp.example") == (
        "x-auto-response-suppress"
    )


# --- hostile input and speed -----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe\x00garbage",
        b"From: \nSubject: \nAuto-Submitted:\nPrecedence:\nList-Id:\n\n",
        b"From: " + b"<" * 10_000 + b"\n\nx",
        b"From: a@b@c@d\nSubject: " + "Автоответ".encode() * 5000 + b"\n\nx",
        b"Content-Type: multipart/report; report-type*=utf-8''delivery-status; boundary=b\n"
        b"\n--b--\n",
        b'Content-Type: multipart/report; report-type="\n\n',
        b"Subject: [" + b"a" * 10_000 + b"\n\n",
    ],
)
def test_hostile_input_never_raises(raw: bytes):
    for mail_from in ("", "x@partner.example"):
        msg = parse_message(raw)
        result = classify(msg, mail_from=mail_from, ours=OURS)
        assert isinstance(result.kind, MailClass)
        assert result.reason
        is_automatic(msg, mail_from=mail_from)


def test_classify_a_normal_post_with_long_history():
    # What it costs per message is measured in bench/stages.py, not asserted here.
    long_body = OUTLOOK_POST.replace(b"Jane\n", b"Jane\n" + b"> quoted history line\n" * 400)
    msg = parse_message(post("Re: Q3 roadmap review", base=long_body))
    assert classify(msg, mail_from="jane.doe@corp.example", ours=OURS).kind is MailClass.POST
    assert is_automatic(msg, mail_from="jane.doe@corp.example") is None
