"""Outbound list copies: headers, threading, footer, encoding and DKIM (mailgate.copies)."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.copies import (
    CopySettings,
    DkimKey,
    PostSource,
    Recipient,
    envelope_sender,
    prepare_post,
    render_copy,
    tag_subject,
)
from mailgate.tokens import TokenKind, make_token, read_token

DOMAIN = "lists.corp.example"
SECRET = "test-secret"
SELECTOR = "mg2025"

POST_TEXT = """Hi all,

The Q3 planning doc is up: https://wiki.corp.example/eng/q3-plan?view=full.
Please add your team's items by Friday.

Thanks,
Alice"""


def source(**changes: object) -> PostSource:
    base = PostSource(
        post_id=41,
        message_id="CAH7pQ+9x2Lk=Fz3yB_5nR@mail.gmail.com",
        parent_message_id="DM6PR11MB4593.namprd11.prod@corp.example",
        references=("a1b2c3d4-root@corp.example",),
        subject="RE: Q3 planning",
        text=POST_TEXT,
        author_name="Alice Martin",
        author_address="alice@corp.example",
        created_at=datetime(2025, 3, 4, 9, 30, 5, tzinfo=UTC),
        list_slug="eng",
        list_name="Engineering",
        list_description="Engineering discussions",
        announce_only=False,
        mandatory=False,
        discussion_subject="Q3 planning",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def recipient(person_id: int) -> Recipient:
    return Recipient(
        address=f"user{person_id}@corp.example",
        name=f"User {person_id}",
        reply_token=make_token(SECRET, TokenKind.REPLY, person_id, 7),
        verp_token=make_token(SECRET, TokenKind.BOUNCE, 9000 + person_id),
        unsubscribe_token=make_token(SECRET, TokenKind.UNSUBSCRIBE, person_id, 3),
    )


RECIPIENTS = [recipient(101), recipient(102), recipient(12345)]
HTTPS = CopySettings(domain=DOMAIN, base_url="https://lists.corp.example")
PLAIN = CopySettings(domain=DOMAIN)


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def render_all(post: PostSource, config: CopySettings) -> list[bytes]:
    prepared = prepare_post(post, config)
    return [render_copy(prepared, r) for r in RECIPIENTS]


def text_part(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")  # QP hard breaks are CRLF


def html_part(msg: EmailMessage) -> str:
    part = msg.get_body(("html",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")  # QP hard breaks are CRLF


def assert_well_formed(raw: bytes) -> EmailMessage:
    """FMT-02: CRLF only, short lines, 7-bit, one From/Date/Message-ID, no defects."""
    assert raw.isascii()
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = parse(raw)
    assert msg.defects == []
    for part in msg.walk():
        assert part.defects == [], part.get_content_type()
        assert all(part[name].defects == () for name in part.keys()), part.items()
    for name in ("From", "Date", "Message-ID", "MIME-Version"):
        assert len(msg.get_all(name, [])) == 1, name
    head, _, body = raw.partition(b"\r\n\r\n")
    for line in body.split(b"\r\n"):  # both parts are quoted-printable: RFC 2045 §6.7
        assert len(line) <= 76, line
    return msg


# ---------------------------------------------------------------- DKIM fixtures


@pytest.fixture
def dnsfunc(rsa_key: tuple[bytes, bytes]) -> Callable[..., bytes | None]:
    records = {f"{SELECTOR}._domainkey.{DOMAIN}.".encode(): rsa_key[1]}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return lookup


@pytest.fixture
def signed(rsa_key: tuple[bytes, bytes]) -> CopySettings:
    return dataclasses.replace(HTTPS, dkim=DkimKey(SELECTOR, DOMAIN, rsa_key[0]))


# ---------------------------------------------------------------- headers


@pytest.mark.parametrize(
    "post, config",
    [
        (source(), HTTPS),
        (source(), PLAIN),
        (source(parent_message_id=None, references=(), subject="Q3 planning"), HTTPS),
        (source(announce_only=True, mandatory=True, list_slug="all", list_name="Everyone"), HTTPS),
        (source(subject="会議の議事録 🎉", author_name="山田 太郎", list_name="開発チーム"), HTTPS),
        (source(text=""), PLAIN),
    ],
)
def test_copies_parse_without_defects(post: PostSource, config: CopySettings) -> None:
    for raw in render_all(post, config):
        assert_well_formed(raw)


def test_headers_of_a_reply_copy() -> None:
    raw = render_all(source(), HTTPS)[0]
    msg = assert_well_formed(raw)
    reply_token = RECIPIENTS[0].reply_token
    unsub_token = RECIPIENTS[0].unsubscribe_token
    assert b'\r\nFrom: "Alice Martin via Engineering" <eng@lists.corp.example>\r\n' in b"\r\n" + raw
    assert msg["From"] == "Alice Martin via Engineering <eng@lists.corp.example>"
    assert msg["Reply-To"] == f"reply+{reply_token}@{DOMAIN}"
    assert msg["To"] == "eng@lists.corp.example"
    assert msg["Subject"] == "Re: [eng] Q3 planning"
    assert msg["Date"] == "Tue, 04 Mar 2025 09:30:05 +0000"
    assert msg["Message-ID"] == "<CAH7pQ+9x2Lk=Fz3yB_5nR@mail.gmail.com>"
    assert msg["In-Reply-To"] == "<DM6PR11MB4593.namprd11.prod@corp.example>"
    assert msg["References"] == (
        "<a1b2c3d4-root@corp.example> <DM6PR11MB4593.namprd11.prod@corp.example>"
    )
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["List-Id"] == '"Engineering" <eng.lists.corp.example>'
    assert msg["List-Post"] == "<mailto:eng@lists.corp.example>"
    assert msg["List-Help"] == "<mailto:eng-request@lists.corp.example?subject=help>"
    assert msg["List-Subscribe"] == "<mailto:eng-request@lists.corp.example?subject=subscribe>"
    assert msg["List-Unsubscribe"] == (
        f"<https://lists.corp.example/u/{unsub_token}>, "
        "<mailto:eng-request@lists.corp.example?subject=unsubscribe>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Precedence"] == "list"
    assert msg["X-Auto-Response-Suppress"] == "OOF, AutoReply"
    assert msg["X-Loop"] == "mailgate@lists.corp.example"
    assert msg["X-Original-Sender"] == "alice@corp.example"
    for absent in ("Auto-Submitted", "Sender", "List-Owner", "List-Archive", "Cc"):
        assert absent not in msg, absent


def test_message_id_is_shared_and_reply_to_is_personal() -> None:
    msgs = [parse(raw) for raw in render_all(source(), HTTPS)]
    assert {m["Message-ID"] for m in msgs} == {"<CAH7pQ+9x2Lk=Fz3yB_5nR@mail.gmail.com>"}
    reply_tos = [str(m["Reply-To"]) for m in msgs]
    assert len(set(reply_tos)) == 3
    for person, reply_to in zip((101, 102, 12345), reply_tos, strict=True):
        local, _, host = reply_to.partition("@")
        assert host == DOMAIN and local.startswith("reply+")
        assert read_token([SECRET], TokenKind.REPLY, local.removeprefix("reply+")) == (person, 7)


@pytest.mark.parametrize(
    "config, unsubscribe, one_click",
    [
        (PLAIN, "<mailto:eng-request@lists.corp.example?subject=unsubscribe>", False),
        (
            CopySettings(domain=DOMAIN, base_url="http://localhost:8025/"),
            "<http://localhost:8025/u/{token}>, "
            "<mailto:eng-request@lists.corp.example?subject=unsubscribe>",
            False,
        ),
        (
            HTTPS,
            "<https://lists.corp.example/u/{token}>, "
            "<mailto:eng-request@lists.corp.example?subject=unsubscribe>",
            True,
        ),
    ],
)
def test_one_click_only_with_an_https_url(
    config: CopySettings, unsubscribe: str, one_click: bool
) -> None:
    msg = parse(render_all(source(), config)[0])
    assert msg["List-Unsubscribe"] == unsubscribe.format(token=RECIPIENTS[0].unsubscribe_token)
    assert ("List-Unsubscribe-Post" in msg) is one_click


@pytest.mark.parametrize(
    "announce_only, mandatory, list_post",
    [
        (False, False, "<mailto:all@lists.corp.example>"),
        (True, False, "NO"),
        (True, True, "NO"),
    ],
)
def test_list_post_is_no_on_announce_only_lists(
    announce_only: bool, mandatory: bool, list_post: str
) -> None:
    post = source(list_slug="all", announce_only=announce_only, mandatory=mandatory)
    msg = parse(render_all(post, HTTPS)[0])
    assert msg["List-Post"] == list_post
    # Decision 4: a mandatory list still offers one-click; it switches to the digest.
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_mandatory_footer_says_unsubscribe_means_digest() -> None:
    text = text_part(parse(render_all(source(mandatory=True), HTTPS)[0]))
    assert "Switch this list to the daily digest in one click:" in text
    assert "nomail" not in text
    assert "Unsubscribe in one click" not in text


# ---------------------------------------------------------------- subject


@pytest.mark.parametrize(
    "subject, reply, expected",
    [
        ("Q3 planning", False, "[eng] Q3 planning"),
        ("[eng] Q3 planning", False, "[eng] Q3 planning"),
        ("[ENG]  Q3   planning", False, "[eng] Q3 planning"),
        ("Q3 planning", True, "Re: [eng] Q3 planning"),
        ("Re: Q3 planning", True, "Re: [eng] Q3 planning"),
        ("RE: [eng] Q3 planning", True, "Re: [eng] Q3 planning"),
        ("Re: [eng] Re: [eng] Q3 planning", True, "Re: [eng] Q3 planning"),
        ("[eng] Re: Q3 planning", True, "Re: [eng] Q3 planning"),
        ("AW: WG: [eng] Q3 planning", True, "Re: [eng] WG: Q3 planning"),
        ("Fwd: Q3 planning", False, "[eng] Fwd: Q3 planning"),
        ("Re[2]: Q3 planning", False, "Re: [eng] Q3 planning"),
        ("SV: Q3 planning", True, "Re: [eng] Q3 planning"),
        ("答复: Q3 planning", True, "Re: [eng] 答复: Q3 planning"),
        ("", False, "[eng] (no subject)"),
        ("Re: ", True, "Re: [eng] (no subject)"),
        ("hi\r\nBcc: victim@corp.example", False, "[eng] hi Bcc: victim@corp.example"),
        ("[ops] outage", False, "[eng] [ops] outage"),
    ],
)
def test_tag_subject(subject: str, reply: bool, expected: str) -> None:
    assert tag_subject(subject, "eng", reply=reply) == expected
    assert tag_subject(expected, "eng", reply=reply) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120), st.booleans())
def test_tag_subject_is_idempotent(subject: str, reply: bool) -> None:
    once = tag_subject(subject, "eng", reply=reply)
    assert tag_subject(once, "eng", reply=reply) == once
    assert tag_subject(once, "eng", reply=False) == once  # a tagged reply stays a reply
    assert once.startswith("Re: [eng] " if reply else ("[eng] ", "Re: [eng] "))
    assert "\n" not in once and "\r" not in once
    assert not once.lower().startswith(("re: [eng] re:", "[eng] [eng]", "re: [eng] [eng]"))


def test_reply_keeps_the_discussion_subject_when_the_author_left_it_empty() -> None:
    msg = parse(render_all(source(subject="  "), HTTPS)[0])
    assert msg["Subject"] == "Re: [eng] Q3 planning"


# ---------------------------------------------------------------- threading


def test_a_200_message_chain_is_trimmed_and_folded() -> None:
    chain = tuple(f"msg{i:03d}.{'x' * 30}@corp.example" for i in range(200))
    post = source(references=chain[:-1], parent_message_id=chain[-1])
    raw = render_all(post, HTTPS)[0]
    msg = assert_well_formed(raw)
    ids = re.findall(r"<([^<>]+)>", str(msg["References"]))
    assert ids == [chain[0], *chain[-20:]]
    assert msg["In-Reply-To"] == f"<{chain[-1]}>"
    head = raw.partition(b"\r\n\r\n")[0]
    references = re.search(rb"^References:.*?(?=\r\n\S)", head, re.S | re.M)
    assert references is not None
    assert max(len(line) for line in references.group(0).split(b"\r\n")) <= 78


def test_a_new_discussion_has_no_threading_headers() -> None:
    msg = parse(render_all(source(parent_message_id=None, subject="Q3 planning"), HTTPS)[0])
    assert "In-Reply-To" not in msg and "References" not in msg
    assert msg["Subject"] == "[eng] Q3 planning"


def test_unwritable_ids_are_replaced_or_dropped() -> None:
    # FMT-04: 3.11's parser fails on this id; we must not send it on.
    post = source(
        message_id="[b3-JF=@example.com]",
        references=("ok.1@corp.example", "no at sign", "<bad>@x"),
        parent_message_id="ok.2@corp.example",
    )
    msgs = [assert_well_formed(raw) for raw in render_all(post, HTTPS)]
    assert len({m["Message-ID"] for m in msgs}) == 1
    assert re.fullmatch(r"<post\.41\.[0-9a-f]{16}@lists\.corp\.example>", msgs[0]["Message-ID"])
    assert msgs[0]["References"] == "<ok.1@corp.example> <ok.2@corp.example>"


# ---------------------------------------------------------------- names and encodings


@pytest.mark.parametrize(
    "author_name, expected",
    [
        ("ceo@corp.example", "ceo via Engineering"),
        ('"Bob <x@y>"', "Bob via Engineering"),
        ("Bob <bob@evil.example>", "Bob via Engineering"),
        ("Dana (dana@corp.example) Smith", "Dana Smith via Engineering"),
        ("=?utf-8?q?ceo=40corp.example?=", "utf-8?q?ceo=40corp.example via Engineering"),
        ("Eve\uff20corp.example", "ceo via Engineering"),
        ('Mallory "The Boss" \\ Jones', "Mallory The Boss Jones via Engineering"),
        ("", "ceo via Engineering"),
    ],
)
def test_from_has_one_address_and_no_at_in_the_name(author_name: str, expected: str) -> None:
    post = source(author_name=author_name, author_address="ceo@corp.example")
    msg = assert_well_formed(render_all(post, HTTPS)[0])
    addresses = msg["From"].addresses
    assert len(addresses) == 1
    assert addresses[0].addr_spec == "eng@lists.corp.example"
    assert addresses[0].display_name == expected
    assert "@" not in addresses[0].display_name


@pytest.mark.parametrize(
    "subject, name, list_name",
    [
        ("会議の議事録", "山田 太郎", "開発チーム"),
        ("Launch 🚀 party 🎉", "Zoë 😀 Ångström", "Ingeniería"),
        ("Ünïcödé " * 30, "Łukasz Żółć", "Engineering"),
    ],
)
def test_non_ascii_headers_round_trip(subject: str, name: str, list_name: str) -> None:
    post = source(parent_message_id=None, subject=subject, author_name=name, list_name=list_name)
    raw = render_all(post, HTTPS)[0]
    assert b"=?utf-8?" in raw.partition(b"\r\n\r\n")[0]  # RFC 2047, no raw UTF-8
    msg = assert_well_formed(raw)
    assert msg["Subject"] == "[eng] " + " ".join(subject.split())
    assert msg["From"].addresses[0].display_name == f"{name} via {list_name}"
    phrase = f'"{list_name}"' if list_name.isascii() else list_name
    assert msg["List-Id"] == f"{phrase} <eng.lists.corp.example>"


# ---------------------------------------------------------------- bodies


def test_script_is_escaped_in_html_and_verbatim_in_text() -> None:
    text = 'Try this:\n<script>alert(1)</script>\n<img src=x onerror="alert(2)"> & done'
    msg = parse(render_all(source(text=text), HTTPS)[0])
    assert text_part(msg).startswith(text + "\n")
    page = html_part(msg)
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<style" not in page  # inlined by css-inline
    assert 'style="' in page


def test_links_in_the_post_become_plain_anchors() -> None:
    page = html_part(parse(render_all(source(), HTTPS)[0]))
    url = "https://wiki.corp.example/eng/q3-plan?view=full"
    assert f'<a href="{url}">{url}</a>.<br>' in page


def test_footer_carries_each_recipients_addresses() -> None:
    for person, raw in zip(RECIPIENTS, render_all(source(), HTTPS), strict=True):
        msg = parse(raw)
        reply = f"reply+{person.reply_token}@{DOMAIN}"
        url = f"https://lists.corp.example/u/{person.unsubscribe_token}"
        assert reply in text_part(msg) and url in text_part(msg)
        assert f'href="mailto:{reply}"' in html_part(msg)
        assert f'href="{url}"' in html_part(msg)
        others = [r for r in RECIPIENTS if r is not person]
        assert not any(o.reply_token.encode() in raw for o in others)


def test_long_lines_and_odd_characters_survive_quoted_printable() -> None:
    text = "x" * 3000 + "\n" + "trailing spaces   \n\ttab = sign\x00nul\n.\nFrom here\n" + "é" * 900
    msg = assert_well_formed(render_all(source(text=text), HTTPS)[0])
    assert text_part(msg).startswith(text + "\n")


def test_text_part_snapshot() -> None:
    msg = parse(render_all(source(), HTTPS)[0])
    token, unsub = RECIPIENTS[0].reply_token, RECIPIENTS[0].unsubscribe_token
    assert text_part(msg) == (
        "Hi all,\n"
        "\n"
        "The Q3 planning doc is up: https://wiki.corp.example/eng/q3-plan?view=full.\n"
        "Please add your team's items by Friday.\n"
        "\n"
        "Thanks,\n"
        "Alice\n"
        "\n"
        "-- \n"
        "You get this as a member of Engineering <eng@lists.corp.example>.\n"
        "Reply: just reply; your answer goes to the discussion through\n"
        f"  reply+{token}@lists.corp.example\n"
        'Mute: reply with the single word "mute" to stop mail from this discussion.\n'
        "Delivery: mail eng-request@lists.corp.example with one word:\n"
        '  "digest", "every" or "nomail"\n'
        "Unsubscribe in one click:\n"
        f"  https://lists.corp.example/u/{unsub}\n"
    )


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(st.characters(codec="utf-8"), max_size=400),
    subject=st.text(st.characters(codec="utf-8"), max_size=80),
    name=st.text(st.characters(codec="utf-8"), max_size=40),
)
def test_any_post_gives_well_formed_copies(text: str, subject: str, name: str) -> None:
    post = source(text=text, subject=subject, author_name=name)
    prepared = prepare_post(post, HTTPS)
    msg = assert_well_formed(render_copy(prepared, RECIPIENTS[0]))
    normalized = text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")
    assert text_part(msg).startswith(normalized + "\n")
    assert "@" not in msg["From"].addresses[0].display_name


# ---------------------------------------------------------------- envelope and tokens


def test_envelope_sender_is_the_verp_address() -> None:
    prepared = prepare_post(source(), HTTPS)
    senders = [envelope_sender(prepared, r) for r in RECIPIENTS]
    assert senders[0] == f"bounces+{RECIPIENTS[0].verp_token}@{DOMAIN}"
    assert len(set(senders)) == 3
    local = senders[2].partition("@")[0].removeprefix("bounces+")
    assert read_token([SECRET], TokenKind.BOUNCE, local) == (9000 + 12345,)


@pytest.mark.parametrize(
    "field, token",
    [
        ("reply_token", "abc\r\nBcc: victim@corp.example"),
        ("reply_token", "short"),
        ("unsubscribe_token", "a" * 65),
        ("verp_token", "UPPER-case-and-dashes-0189"),
    ],
)
def test_malformed_tokens_are_refused(field: str, token: str) -> None:
    prepared = prepare_post(source(), HTTPS)
    bad = dataclasses.replace(RECIPIENTS[0], **{field: token})
    with pytest.raises(ValueError, match="malformed token"):
        render_copy(prepared, bad)
        envelope_sender(prepared, bad)


@pytest.mark.parametrize(
    "config",
    [
        CopySettings(domain="lists.bücher.example"),
        CopySettings(domain=DOMAIN, base_url="javascript:alert(1)"),
        CopySettings(domain=DOMAIN, base_url="https://lists.corp.example/a b"),
    ],
)
def test_bad_settings_are_refused(config: CopySettings) -> None:
    with pytest.raises(ValueError):
        prepare_post(source(), config)


def test_post_text_cannot_forge_a_placeholder() -> None:
    prepared = prepare_post(source(), HTTPS)
    placeholder = prepared.message.pieces[1].decode()
    # Even text quoting the placeholder of another rendering stays text.
    raw = render_all(source(text=f"see {placeholder}"), HTTPS)[0]
    assert f"see {placeholder}".encode() in raw


# ---------------------------------------------------------------- DKIM


def dkim_tags(raw: bytes) -> dict[str, str]:
    field = parse(raw)["DKIM-Signature"]
    value = re.sub(r"\s+", "", str(field))
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


def test_each_signed_copy_verifies(signed: CopySettings, dnsfunc: Callable[..., object]) -> None:
    copies_ = render_all(source(), signed)
    for raw in copies_:
        assert_well_formed(raw)
        assert dkim.verify(raw, dnsfunc=dnsfunc)
        tags = dkim_tags(raw)
        assert tags["a"] == "rsa-sha256" and tags["c"] == "relaxed/relaxed"
        assert tags["d"] == DOMAIN and tags["s"] == SELECTOR and "l" not in tags
        signed_names = tags["h"].split(":")
        for name in ("from", "subject", "reply-to", "list-unsubscribe", "list-unsubscribe-post"):
            assert signed_names.count(name) == 2, name  # signed and over-signed (AUTH-02)
    assert len({dkim_tags(raw)["b"] for raw in copies_}) == 3


@pytest.mark.parametrize(
    "tamper",
    [
        lambda raw: raw.replace(b"/u/", b"/x/", 1),  # edit List-Unsubscribe (LIST-03)
        lambda raw: raw.replace(
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: No", 1
        ),
        lambda raw: raw.replace(b"\r\nFrom:", b"\r\nFrom: ceo@corp.example\r\nFrom:", 1),
        lambda raw: raw.replace(b"\r\nTo:", b"\r\nReply-To: evil@evil.example\r\nTo:", 1),
        lambda raw: raw.replace(
            b"\r\nPrecedence:", b"\r\nList-Id: <x.evil.example>\r\nPrecedence:", 1
        ),
        lambda raw: raw + b"Appended footer\r\n",  # after the closing boundary
        lambda raw: raw.replace(b"Please add", b"Please drop", 1),
    ],
)
def test_tampering_breaks_the_signature(
    signed: CopySettings, dnsfunc: Callable[..., object], tamper: Callable[[bytes], bytes]
) -> None:
    raw = render_all(source(), signed)[0]
    assert dkim.verify(raw, dnsfunc=dnsfunc)
    changed = tamper(raw)
    assert changed != raw
    assert not dkim.verify(changed, dnsfunc=dnsfunc)


def test_non_ascii_and_long_chains_verify(
    signed: CopySettings, dnsfunc: Callable[..., object]
) -> None:
    chain = tuple(f"id{i}@corp.example" for i in range(60))
    post = source(
        subject="会議 🎉 " * 10, author_name="山田 太郎", references=chain, text="é  \t x \n" * 50
    )
    for raw in render_all(post, signed):
        assert dkim.verify(raw, dnsfunc=dnsfunc)


def test_short_dkim_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.pem"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(path), "1024"], check=True, capture_output=True
    )
    config = dataclasses.replace(HTTPS, dkim=DkimKey(SELECTOR, DOMAIN, path.read_bytes()))
    with pytest.raises(ValueError, match="2048"):
        prepare_post(source(), config)


def test_the_key_is_parsed_once_for_many_posts(signed: CopySettings) -> None:
    # Parsing the PEM costs ~30 ms, more than a whole batch of signatures.
    from mailgate import signing

    signing.load_key.cache_clear()
    for i in range(3):
        prepare_post(source(subject=f"Post {i}"), signed)
    assert signing.load_key.cache_info().misses == 1
