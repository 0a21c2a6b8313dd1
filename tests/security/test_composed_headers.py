"""Every kind of mail we compose keeps its headers ours (issue 12, item 3; FMT-09, TEST-07).

From hostile values — subjects, names and Message-IDs holding CR, LF, NUL, Unicode line
breaks, and RFC 2047 encoded-words that *decode* to CR LF and a header — every kind of
mail we write (notices, confirmations, digests, question mails, reminders, follow-ups,
summaries, roundups, list copies) has:
- a header block of physical lines that each end in CRLF, with no other CR or LF,
- exactly the fields we write, each once (no injected Reply-To, Bcc or body),
- no field value starting with white space (the 3.11 folder's break after ``Subject:``),
- a Subject that parses back to what we meant: the value cleaned by
  ``mailgate.headers.clean_text`` (control characters gone, ``=?`` defused),
- In-Reply-To/References holding only valid msg-ids (or left out).

Pure: no database, no sockets; Hypothesis with ``derandomize=True`` and a fixed budget.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from datetime import UTC, date, datetime
from email.header import decode_header, make_header
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from digests.compose import DigestContext, compose_digest
from digests.questions import QuestionMailSettings, compose_question_mail
from digests.summary import Summary
from mailgate.copies import CopySettings, prepare_post, render_copy, tag_subject
from mailgate.headers import (
    clean_text,
    fold_field,
    msg_id,
    named_address,
    new_message,
    thread_fields,
)
from mailgate.models import Address as ModelAddress
from mailgate.models import Person, QuestionMail
from mailgate.notices import compose_notice
from tests.conftest import DOMAIN, SECRET
from tests.digests.test_compose import context as digest_context
from tests.digests.test_compose import item as digest_item
from tests.digests.test_compose import plan as digest_plan
from tests.mailgate.test_copies import recipient
from tests.mailgate.test_copies import source as post_source

BUDGET = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# The review's payload: an encoded-word that decodes to CR LF, a Reply-To and a body.
INJECTION = (
    "=?utf-8?q?h8@x.example=0D=0AReply-To:_attacker@x.example=0D=0A=0D=0A"
    "IT_SECURITY:_reply_with_your_password?="
)
DOUBLE = "=?utf-8?q?=3D=3Futf-8=3Fq=3Fx=3D0D=3D0ABcc=3A_a=40b=3F=3D?="  # decodes to one
HOSTILE_PIECES = st.sampled_from(
    [
        "\r\n",
        "\n",
        "\r",
        "\x00",
        "\u2028",
        "\x85",
        "Reply-To: attacker@x.example",
        "\r\nBcc: all@corp.example\r\n\r\nbody",
        INJECTION,
        DOUBLE,
        "=?",
        "?=",
        ":",
        "<",
        ">",
        '"',
        "Jöran Zürich 日本語 🎉",
        "x" * 120,
        "Weekly roundup: What is the one thing you most want to finish by Friday?",
        " ",
    ]
)
HOSTILE = st.lists(
    HOSTILE_PIECES | st.text(st.characters(codec="utf-8"), max_size=20), max_size=8
).map("".join)
HOSTILE_ID = HOSTILE | st.sampled_from(
    [INJECTION, f"<{INJECTION}>", "<h8@x.example>\r\nReply-To: a@b", "<ok@corp.example>"]
)


def header_block(raw: bytes) -> bytes:
    head, sep, _ = raw.partition(b"\r\n\r\n")
    assert sep, "no end of header block"
    return head + b"\r\n"


def assert_our_headers(raw: bytes, expected: set[str]) -> EmailMessage:
    """The invariant every composed message keeps; returns the parsed message."""
    head = header_block(raw)
    # Only CRLF line ends; no bare CR or LF anywhere in the header block.
    assert b"\r" not in head.replace(b"\r\n", b"")
    assert b"\n" not in head.replace(b"\r\n", b"")
    names: list[str] = []
    empty = b""  # the name of a field whose first line held no value
    for line in head[:-2].split(b"\r\n"):
        assert len(line) <= 998
        if line[:1] in (b" ", b"\t"):
            # A value never starts on the next line (Subject:\r\n value).
            assert not empty, f"{empty!r} folded straight after its name"
            continue
        name, colon, value = line.partition(b":")
        assert colon and re.fullmatch(rb"[!-9;-~]+", name), line
        empty = name if not value.strip(b" \t") else b""
        names.append(name.decode().lower())
    assert len(names) == len(set(names)), names  # each field once: nothing injected
    assert set(names) <= expected, set(names) - expected
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    for field in ("in-reply-to", "references", "message-id"):
        for ids in msg.get_all(field, []):
            assert all(msg_id(token) for token in str(ids).split()), (field, ids)
    for field, parsed in msg.items():
        assert not str(parsed).startswith((" ", "\t")), (field, str(parsed))
        assert not any(c in str(parsed) for c in "\r\n\x00"), (field, str(parsed))
    return msg


def subject_of(msg: EmailMessage) -> str:
    return str(msg["Subject"])


def raw_field(raw: bytes, name: str) -> str:
    """A field's value as written, unfolded."""
    head = header_block(raw).decode("ascii")
    match = re.search(rf"^{name}:(.*?)\r\n(?![ \t])", head, re.MULTILINE | re.DOTALL)
    assert match, name
    return re.sub(r"\r\n([ \t])", r"\1", match.group(1)).strip()


def display_name(field: str) -> str:
    """The display name of ``Name <addr>`` decoded as RFC 2047 §6.2 says: white space
    between encoded-words is dropped (the 3.11 address parser keeps it, a reader bug)."""
    phrase = field.rpartition("<")[0].strip()
    if phrase.startswith('"') and phrase.endswith('"'):
        phrase = re.sub(r"\\(.)", r"\1", phrase[1:-1])
    return str(make_header(decode_header(phrase)))


# ---------------------------------------------------------------- the sanitising step


@BUDGET
@given(HOSTILE)
@example(INJECTION)
@example(DOUBLE)
@example("Weekly roundup: What is the one thing you most want to finish by Friday?")
def test_every_field_written_through_the_policy_parses_back(value: str) -> None:
    msg = new_message()
    msg["Subject"] = value
    msg["X-Mailgate-Test"] = value
    msg["To"] = named_address(value, "dummy@corp.example")
    for name, ids in thread_fields(value, [value]):
        msg[name] = ids
    msg.set_content("body")
    parsed = assert_our_headers(
        msg.as_bytes(),
        {
            "subject",
            "x-mailgate-test",
            "to",
            "in-reply-to",
            "references",
            "content-type",
            "content-transfer-encoding",
            "mime-version",
        },
    )
    assert subject_of(parsed) == clean_text(value)
    assert str(parsed["X-Mailgate-Test"]) == clean_text(value)
    assert display_name(raw_field(msg.as_bytes(), "To")) == clean_text(value, 64)


@pytest.mark.parametrize(
    "subject",
    [
        "Weekly roundup: What is the one thing you most want to finish by Friday?",
        "[eng] Weekly roundup: What is the one thing you most want to finish by Friday?",
        "Re: [all-hands] What is the single thing you most want us to stop doing now?",
    ],
)
def test_a_long_subject_folds_between_words_never_after_the_name(subject: str) -> None:
    field = fold_field("Subject", subject)
    first, *rest = field.removesuffix("\r\n").split("\r\n")
    assert first.startswith("Subject: ") and len(first) > len("Subject: ")
    assert all(len(line) <= 78 for line in (first, *rest))
    parsed = email.message_from_bytes(field.encode() + b"\r\nx", policy=email.policy.default)
    assert str(parsed["Subject"]) == subject


def test_a_message_id_that_decodes_to_a_header_is_dropped() -> None:
    assert thread_fields(INJECTION) == []
    assert thread_fields(f"<{INJECTION}>") == []
    assert msg_id("=?utf-8?q?a?=@x.example") is None
    assert thread_fields("<ok@corp.example>", [INJECTION, "root@corp.example"]) == [
        ("In-Reply-To", "<ok@corp.example>"),
        ("References", "<root@corp.example> <ok@corp.example>"),
    ]


# ---------------------------------------------------------------- each kind of mail

NOTICE_FIELDS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "reply-to",
    "auto-submitted",
    "x-auto-response-suppress",
    "x-loop",
    "x-mailgate-notice",
    "content-type",
    "content-transfer-encoding",
    "mime-version",
}
NOTICE_REASONS = [
    "not-a-member",
    "unknown-sender",
    "held-for-authentication",  # the confirmation the review forged
    "confirm-command",
    "posting-not-allowed",
    "empty-reply",
    "command-done",
]


@BUDGET
@given(st.sampled_from(NOTICE_REASONS), HOSTILE, HOSTILE, HOSTILE_ID)
@example("held-for-authentication", "Hello", "Eng", INJECTION)
def test_notices_and_confirmations(reason: str, subject: str, list_name: str, mid: str) -> None:
    stored = {
        "subject": subject,
        "list_slug": "eng",
        "list_name": list_name,
        "message_id": mid,
        "confirm_token": "abcdefghijklmnopqrstuvwxyz234567",
        "command": subject,
        "details": subject,
    }
    msg = compose_notice(
        notice_id=7, reason=reason, address="eve@x.example", stored=stored, domain=DOMAIN
    )
    parsed = assert_our_headers(msg.as_bytes(), NOTICE_FIELDS)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["eve@x.example"]
    reply_to = parsed.get_all("Reply-To", [])
    assert all("attacker" not in str(v) for v in reply_to)
    body = parsed.get_body(("plain",))
    assert body is not None
    assert not body.get_content().startswith("IT SECURITY")  # our body, not the attacker's


QUESTION_FIELDS = {
    "from",
    "to",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "x-mailgate-question",
    "x-mailgate-kind",
    "auto-submitted",
    "precedence",
    "content-type",
    "content-transfer-encoding",
    "mime-version",
}
QUESTION_KINDS = ["ask", "reminder", "followup-due", "answered", "summary"]


def question_context(kind: str, subject: str, name: str, mid: str, prompt: bool) -> dict:
    return {
        "name": name,
        "asker": name,
        "sender": f"{name} (via Mailgate)",
        "audience_line": subject,
        "subject": subject,
        "question": subject,
        "audience": name,
        "prompt": prompt,  # a prompt's summary is the weekly roundup
        "open": True,
        "anonymous": False,
        "threshold": 5,
        "deadline": "",
        "reminder_number": 1,
        "summary": Summary(3, 0, False, (), ()) if kind == "summary" else None,
        "is_asker": kind == "followup-due",
        "followup_due": date(2026, 12, 11),
        "followup_text": subject,
        "followup_is_question": False,
        "followup_author": name,
        "answer_text": subject,
        "first_message_id": mid,
        "thread_message_id": mid,
    }


@BUDGET
@given(st.sampled_from(QUESTION_KINDS), st.booleans(), HOSTILE, HOSTILE, HOSTILE_ID)
@example("summary", True, "What is the one thing you most want to finish by Friday?", "A", "a@b")
def test_question_mails_reminders_followups_summaries_and_roundups(
    kind: str, prompt: bool, subject: str, name: str, mid: str
) -> None:
    mail = QuestionMail(id=3, key="k", kind=kind, question_id=5, person_id=9)
    person = Person(id=9, name=name, timezone="UTC")
    person.addresses = [ModelAddress(email="bob@corp.example", is_primary=True)]
    ctx = question_context(kind, subject, name, mid, prompt)
    raw = compose_question_mail(
        mail, person, 11, ctx, QuestionMailSettings(domain=DOMAIN, secret=SECRET)
    )
    parsed = assert_our_headers(raw, QUESTION_FIELDS)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["bob@corp.example"]
    assert len(parsed["Reply-To"].addresses) == 1
    assert parsed["Reply-To"].addresses[0].domain == DOMAIN
    assert clean_text(subject) in subject_of(parsed) or not clean_text(subject)
    if msg_id(mid) is None:
        assert parsed["In-Reply-To"] is None and parsed["References"] is None


DIGEST_FIELDS = {
    "from",
    "reply-to",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "auto-submitted",
    "precedence",
    "x-auto-response-suppress",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "x-loop",
    "x-mailgate-digest",
}


@BUDGET
@given(HOSTILE, HOSTILE)
@example(INJECTION, DOUBLE)
def test_digests(subject: str, name: str) -> None:
    plan = digest_plan((digest_item(0, subject=subject or "x", list_name=name or "x"),))
    ctx: DigestContext = dataclasses.replace(digest_context(plan), member_name=name)
    raw = compose_digest(plan, ctx, now=datetime(2026, 3, 3, 7, 0, tzinfo=UTC))
    parsed = assert_our_headers(raw, DIGEST_FIELDS)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["ana.lima@corp.example"]


COPY_FIELDS = {
    "from",
    "reply-to",
    "to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "list-id",
    "list-post",
    "list-help",
    "list-subscribe",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "precedence",
    "x-auto-response-suppress",
    "x-loop",
    "x-original-sender",
}


@BUDGET
@given(HOSTILE, HOSTILE, HOSTILE, HOSTILE_ID, HOSTILE_ID)
@example(INJECTION, "Eve", "Eng", INJECTION, INJECTION)
@example("Weekly roundup: What is the one thing you most want to finish by Friday?", "", "", "", "")
def test_list_copies(subject: str, author: str, list_name: str, mid: str, parent: str) -> None:
    src = post_source(
        subject=subject,
        author_name=author,
        list_name=list_name,
        message_id=mid,
        parent_message_id=parent,
        references=(mid, parent),
    )
    prepared = prepare_post(src, CopySettings(domain=DOMAIN, base_url="https://lists.corp.example"))
    raw = render_copy(prepared, recipient(101))
    parsed = assert_our_headers(raw, COPY_FIELDS)
    meant = subject if subject.strip() else src.discussion_subject  # what copies fall back to
    assert subject_of(parsed) == clean_text(tag_subject(meant, "eng", reply=True))
    assert len(parsed["Reply-To"].addresses) == 1
    assert parsed["Reply-To"].addresses[0].domain == DOMAIN
