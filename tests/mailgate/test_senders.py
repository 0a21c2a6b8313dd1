"""Sender stage: From hardening (SPOOF-05), trusted A-R (SPOOF-02), DKIM (SPOOF-03)."""

from __future__ import annotations

import email.message
import subprocess
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.parse import InboundMessage, parse_message
from mailgate.senders import (
    NO_AUTHSERV_ID,
    AuthResult,
    AuthVerdict,
    FromAddress,
    FromError,
    addresses_match,
    authenticate,
    decode_encoded_words,
    domains_aligned,
    parse_address,
    parse_authentication_results,
    parse_from,
    parse_from_value,
    trusted_authentication_results,
    verify_dkim,
)

MAIL = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
CORP_MX = frozenset({"mx.corp.example"})

# Our own trace field, as trace.received_field writes it: the relay at 10.20.0.25 handed
# the message over.
GATEWAY_RECEIVED = (
    "Received: from mx.corp.example ([10.20.0.25])\r\n"
    "\tby lists.corp.example (Mailgate) with ESMTPS id 7f3a9c\r\n"
    "\t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384); Tue, 14 May 2024 09:12:04 +0000\r\n"
)
RELAYS = ("10.20.0.0/24",)  # MAILGATE_AUTHRES_RELAYS: where A-R may come from
RELAY_RECEIVED = (
    "Received: from mail-out.corp.example (mail-out.corp.example [192.0.2.10])\r\n"
    "\tby mx.corp.example (Postfix) with ESMTPS id 4VfG2k1XyZz9sTq\r\n"
    "\tfor <all-staff@lists.corp.example>; Tue, 14 May 2024 09:12:03 +0000 (UTC)\r\n"
)
SENDER_RECEIVED = (
    "Received: from [10.0.0.7] (unknown [198.51.100.23]) by smtp.sender.example"
    " (Postfix) with ESMTPSA id 9C1F2A0; Tue, 14 May 2024 09:11:58 +0000 (UTC)\r\n"
)
BODY = "Hi all,\r\n\r\nThe town hall moves to Thursday 10:00.\r\n\r\nAlice\r\n"


def mail(top: str = "", from_value: str = "Alice Martin <alice@corp.example>") -> bytes:
    """A Thunderbird-style message; ``top`` is the raw trace/auth block above it."""
    return (
        top + f"From: {from_value}\r\n"
        "To: all-staff@lists.corp.example\r\n"
        "Subject: Quarterly town hall moved to Thursday\r\n"
        "Date: Tue, 14 May 2024 11:12:01 +0200\r\n"
        "Message-ID: <5d1e2f3a-9b8c-4d7e-a6f5-0e1d2c3b4a59@corp.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "User-Agent: Mozilla Thunderbird\r\n"
        "\r\n" + BODY
    ).encode("utf-8")


def ar(value: str) -> str:
    return f"Authentication-Results: {value}\r\n"


# --------------------------------------------------------------------------- From header

SPOOF05_HELD = [
    # the four values from the checklist (CVE-2023-27043 shapes)
    ("alice@x <bob@y>", "address-in-display-name"),
    ("alice@x)<bob@y>", "unparseable-from"),
    ('"ceo@corp" <attacker@evil>', "address-in-display-name"),
    ("ceo@corp, attacker@evil", "multiple-addresses"),
]

REJECTED = SPOOF05_HELD + [
    ("dana.whitfield@corp.example <attacker@evil.example>", "address-in-display-name"),
    ('"dana.whitfield@corp.example" <attacker@evil.example>', "address-in-display-name"),
    ("=?utf-8?q?ceo=40corp.example?= <x@evil.example>", "address-in-display-name"),
    ("=?utf-8?b?Y2VvQGNvcnAuZXhhbXBsZQ==?= <x@evil.example>", "address-in-display-name"),
    ("=?x-unknown?q?ceo=40corp.example?= <x@evil.example>", "address-in-display-name"),
    ('"=?utf-8?q?ceo=40corp.example?=" <x@evil.example>', "address-in-display-name"),
    ("ceo\uff20corp.example <x@evil.example>", "address-in-display-name"),  # fullwidth @
    ("x@evil.example (ceo@corp.example)", "address-in-display-name"),
    ("Dana (dana@corp.example) <x@evil.example>", "address-in-display-name"),
    ("Team: alice@corp.example, bob@corp.example;", "multiple-addresses"),
    ("undisclosed-recipients:;", "multiple-addresses"),
    ("Alice <alice@corp.example>, Bob <bob@corp.example>", "multiple-addresses"),
    ("Alice <alice@corp.example> <attacker@evil.example>", "multiple-addresses"),
    ("Alice <alice@corp.example> trailing", "unparseable-from"),
    ("<alice@corp.example", "unparseable-from"),
    ("Alice alice@corp.example", "unparseable-from"),
    ('"Alice <alice@corp.example>', "unparseable-from"),
    ("Alice (unclosed <alice@corp.example>", "unparseable-from"),
    ("alice@corp.example\\", "unparseable-from"),
    ("Alice <(comment)alice@corp.example>", "unparseable-from"),
    ("alice(c)@corp.example", "unparseable-from"),
    ("Alice\x00 <alice@corp.example>", "unparseable-from"),
    ("", "no-from"),
    ("   ", "no-from"),
    ("Alice <alice>", "invalid-address"),
    ("Alice <alice@localhost>", "invalid-address"),
    ("Alice <alice@[192.0.2.1]>", "invalid-address"),
    ("Alice <alice@-corp.example>", "invalid-address"),
    ("Alice <alice..martin@corp.example>", "invalid-address"),
    ("Alice <alice@corp..example>", "invalid-address"),
    ('Alice <"ceo@corp.example"@evil.example>', "invalid-address"),
    ("Alice <alice@corp.example.>", "invalid-address"),
]


@pytest.mark.parametrize(("value", "reason"), REJECTED)
def test_parse_from_value_rejects(value: str, reason: str) -> None:
    with pytest.raises(FromError) as caught:
        parse_from_value(value)
    assert caught.value.reason == reason


@pytest.mark.parametrize(("value", "reason"), SPOOF05_HELD)
def test_spoof05_values_held_through_a_whole_message(value: str, reason: str) -> None:
    with pytest.raises(FromError) as caught:
        parse_from(parse_message(mail(from_value=value)))
    assert caught.value.reason == reason


ACCEPTED = [
    ("Alice Martin <alice@corp.example>", "alice@corp.example", "Alice Martin"),
    ('"Martin, Alice" <Alice.Martin@corp.example>', "alice.martin@corp.example", "Martin, Alice"),
    ("alice@corp.example", "alice@corp.example", ""),
    ("<alice@corp.example>", "alice@corp.example", ""),
    ("alice@corp.example (Alice Martin)", "alice@corp.example", "Alice Martin"),
    ("Alice B. Martin <alice@corp.example>", "alice@corp.example", "Alice B. Martin"),
    ("Alice Martin < alice@corp.example >", "alice@corp.example", "Alice Martin"),
    ("Alice Martin (Finance) <alice@corp.example>", "alice@corp.example", "Alice Martin"),
    ("O'Brien <sean.o'brien@corp.example>", "sean.o'brien@corp.example", "O'Brien"),
    ("Bob <bob+lists@mail.corp.example>", "bob+lists@mail.corp.example", "Bob"),
    ('"Quoted \\"Nick\\" Name" <nick@corp.example>', "nick@corp.example", 'Quoted "Nick" Name'),
    ("=?utf-8?b?SsO2cmFuIMOFYmVyZw==?= <joran@corp.example>", "joran@corp.example", "Jöran Åberg"),
    (
        "=?iso-8859-1?q?Fran=E7ois?= =?iso-8859-1?q?_Lef=E8vre?= <francois@corp.example>",
        "francois@corp.example",
        "François Lefèvre",
    ),
    ("=?UTF-8?B?5bGx55Sw5aSq6YOO?= <yamada@corp.example>", "yamada@corp.example", "山田太郎"),
    ("Jöran <jöran@exämple.test>", "jöran@exämple.test", "Jöran"),
    ("Jöran <jöran@xn--exmple-cua.test>", "jöran@exämple.test", "Jöran"),
    ('"Alice" <"alice"@corp.example>', "alice@corp.example", "Alice"),
    ('Odd <"john doe"@corp.example>', '"john doe"@corp.example', "Odd"),
    ("ALICE <ALICE@CORP.EXAMPLE>", "alice@corp.example", "ALICE"),
    ("Alice\u202e Martin <alice@corp.example>", "alice@corp.example", "Alice Martin"),
]


@pytest.mark.parametrize(("value", "address", "display"), ACCEPTED)
def test_parse_from_value_accepts(value: str, address: str, display: str) -> None:
    assert parse_from_value(value) == FromAddress(address=address, display_name=display)


def test_folded_from_header_from_outlook() -> None:
    raw = mail(from_value='"Martin, Alice (Finance, EMEA)"\r\n <alice@corp.example>')
    got = parse_from(parse_message(raw))
    assert got == FromAddress("alice@corp.example", "Martin, Alice (Finance, EMEA)")
    assert got.domain == "corp.example"


def test_smtputf8_from_survives_compat32_parse() -> None:
    # parse.py's str(Header) turns 8-bit bytes into U+FFFD; senders reads raw_items().
    got = parse_from(parse_message(mail(from_value="Jöran Åberg <jöran@exämple.test>")))
    assert got == FromAddress("jöran@exämple.test", "Jöran Åberg")


def test_invalid_utf8_in_from_is_refused() -> None:
    raw = mail(from_value="X <x@corp.example>").replace(b"X <x@", b"\xff <\xfe@")
    with pytest.raises(FromError) as caught:
        parse_from(parse_message(raw))
    assert caught.value.reason in ("unparseable-from", "invalid-address")


@pytest.mark.parametrize(
    ("top", "reason"),
    [
        ("From: Dana Whitfield <dana.whitfield@corp.example>\r\n", "multiple-from-headers"),
        ("From : Dana Whitfield <dana.whitfield@corp.example>\r\n", "multiple-from-headers"),
        ("from: Alice Martin <alice@corp.example>\r\n", "multiple-from-headers"),
        # compat32 drops the From line after a colon-less line into the body
        (
            "X-Mailer Outlook Express 6\r\nFrom: Dana <dana.whitfield@corp.example>\r\n",
            "unparseable-from",
        ),
    ],
)
def test_two_from_headers(top: str, reason: str) -> None:
    with pytest.raises(FromError) as caught:
        parse_from(parse_message(mail(top=GATEWAY_RECEIVED + top)))
    assert caught.value.reason == reason


def test_no_from_header() -> None:
    raw = mail().replace(b"From: Alice Martin <alice@corp.example>\r\n", b"")
    with pytest.raises(FromError) as caught:
        parse_from(parse_message(raw))
    assert caught.value.reason == "no-from"


def test_from_error_is_a_value_error_with_reason() -> None:
    err = FromError("multiple-addresses")
    assert isinstance(err, ValueError) and err.reason == "multiple-addresses"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alice@corp.example", "alice@corp.example"),
        ("  Alice.Martin@Corp.Example ", "alice.martin@corp.example"),
        ("bounce+srs=x@lists.corp.example", "bounce+srs=x@lists.corp.example"),
        ("jöran@exämple.test", "jöran@exämple.test"),
        ('"alice"@corp.example', "alice@corp.example"),
    ],
)
def test_parse_address_valid(text: str, expected: str) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "alice",
        "<alice@corp.example>",
        "Alice <alice@corp.example>",
        "alice@corp.example, bob@corp.example",
        "alice@@corp.example",
        "alice@corp",
        "alice@corp.123",
        ".alice@corp.example",
        "alice.@corp.example",
        "alice@corp.example (Alice)",
        "al ice@corp.example",
        "alice\u200b@corp.example",
        "a" * 65 + "@corp.example",
        "alice@" + "a" * 64 + ".example",
        "alice@xn--zz.example",
    ],
)
def test_parse_address_invalid(text: str) -> None:
    with pytest.raises(FromError) as caught:
        parse_address(text)
    assert caught.value.reason == "invalid-address"


@pytest.mark.parametrize(
    ("known", "expected"),
    [
        ("alice@corp.example", True),
        ("ALICE@corp.example", True),
        ("alice+lists@corp.example", False),
        ("a.lice@corp.example", False),
        ("alice@mail.corp.example", False),
        ("not an address", False),
    ],
)
def test_addresses_match_is_exact(known: str, expected: bool) -> None:
    assert addresses_match(FromAddress("alice@corp.example", "Alice"), known) is expected


def test_decode_encoded_words_joins_adjacent_words() -> None:
    assert decode_encoded_words("=?utf-8?q?Jo?= =?utf-8?q?ran?= x") == "Joran x"
    assert decode_encoded_words("=?utf-8?b?!!!?=") == "=?utf-8?b?!!!?="


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_parse_from_value_only_raises_from_error(text: str) -> None:
    try:
        got = parse_from_value(text)
    except FromError as exc:
        assert exc.reason
    else:
        assert "@" in got.address and "@" not in got.display_name


_FROMISH = st.lists(
    st.sampled_from(
        [
            '"',
            "(",
            ")",
            "<",
            ">",
            "@",
            ",",
            ";",
            ":",
            ".",
            "\\",
            " ",
            "=?utf-8?q?",
            "?=",
            "=40",
            "alice",
            "corp.example",
            "é",
            "\uff20",
            "[",
            "]",
            "\t",
        ]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(_FROMISH, st.text(alphabet=st.characters(codec="utf-8"), max_size=120)))
def test_parse_from_through_parse_message_only_raises_from_error(text: str) -> None:
    text = text.replace("\r", " ").replace("\n", " ")
    try:
        got = parse_from(parse_message(mail(from_value=text)))
    except FromError:
        return
    assert parse_address(got.address) == got.address  # normalised and idempotent


def test_hand_built_message_without_stdlib_tree() -> None:
    msg = InboundMessage(
        headers=(("From", "Alice <alice@corp.example>"),),
        message_id=None,
        in_reply_to=(),
        references=(),
        subject="",
        content_type="text/plain",
        text_plain="",
        text_html=None,
        attachments=(),
        defects=(),
        message=email.message.Message(),
    )
    assert parse_from(msg).address == "alice@corp.example"


# ------------------------------------------------------------------ Authentication-Results


@pytest.mark.parametrize(
    ("value", "authserv_id", "results"),
    [
        (
            "mx.corp.example; dmarc=pass (p=reject dis=none) header.from=corp.example",
            "mx.corp.example",
            [("dmarc", "pass", ("header.from", "corp.example"))],
        ),
        (
            "mx.google.com;\r\n       dkim=pass header.i=@corp.example header.s=google"
            " header.b=Gx3kPq2w;\r\n       spf=pass (google.com: domain of alice@corp.example"
            " designates 209.85.220.41 as permitted sender) smtp.mailfrom=alice@corp.example;"
            "\r\n       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=corp.example",
            "mx.google.com",
            [
                ("dkim", "pass", ("header.i", "@corp.example")),
                ("spf", "pass", ("smtp.mailfrom", "alice@corp.example")),
                ("dmarc", "pass", ("header.from", "corp.example")),
            ],
        ),
        (
            "spf=pass (sender IP is 40.107.22.52) smtp.mailfrom=corp.example; dkim=pass"
            " (signature was verified) header.d=corp.example;dmarc=pass action=none"
            " header.from=corp.example;compauth=pass reason=100",
            NO_AUTHSERV_ID,
            [
                ("spf", "pass", ("smtp.mailfrom", "corp.example")),
                ("dkim", "pass", ("header.d", "corp.example")),
                ("dmarc", "pass", ("action", "none")),
                ("compauth", "pass", ("reason", "100")),
            ],
        ),
        ("mx.corp.example 1; none", "mx.corp.example", []),
        (
            'mx.corp.example; dkim/1=fail reason="signature (bad; really)" header.d=corp.example',
            "mx.corp.example",
            [("dkim", "fail", ("reason", "signature (bad; really)"))],
        ),
        (
            "mx.corp.example; garbage here; dmarc=fail header.from=corp.example",
            "mx.corp.example",
            [("dmarc", "fail", ("header.from", "corp.example"))],
        ),
    ],
)
def test_parse_authentication_results(
    value: str, authserv_id: str, results: list[tuple[str, str, tuple[str, str]]]
) -> None:
    field = parse_authentication_results(value)
    assert field is not None
    assert field.authserv_id == authserv_id
    got = [(r.method, r.result, r.props[0]) for r in field.results]
    assert got == results


@pytest.mark.parametrize(
    "value", ["", "mx.corp.example; dmarc=pass (unclosed", "a b c; dmarc=pass", ";;;"]
)
def test_parse_authentication_results_malformed(value: str) -> None:
    field = parse_authentication_results(value)
    assert field is None or field.results == ()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_authentication_results_never_raises(text: str) -> None:
    parse_authentication_results(text)


DMARC_PASS = "mx.corp.example; dmarc=pass (p=reject dis=none) header.from=corp.example"
DMARC_FAIL = "mx.corp.example; dmarc=fail (p=reject dis=reject) header.from=corp.example"

AR_CASES = [
    # (case id, trace block above From, verdict, method, from value)
    (
        "trusted-pass",
        GATEWAY_RECEIVED + ar(DMARC_PASS) + RELAY_RECEIVED,
        "pass",
        "trusted-ar-dmarc",
    ),
    (
        "trusted-fail",
        GATEWAY_RECEIVED + ar(DMARC_FAIL) + RELAY_RECEIVED,
        "fail",
        "trusted-ar-dmarc",
    ),
    (
        "forged-pass-below-real-fail",
        GATEWAY_RECEIVED + ar(DMARC_FAIL) + RELAY_RECEIVED + ar(DMARC_PASS) + SENDER_RECEIVED,
        "fail",
        "trusted-ar-dmarc",
    ),
    (
        "forged-pass-below-relay-received-only",
        GATEWAY_RECEIVED + RELAY_RECEIVED + ar(DMARC_PASS) + SENDER_RECEIVED,
        "none",
        "none",
    ),
    (
        "other-authserv-id-ignored",
        GATEWAY_RECEIVED
        + ar(DMARC_PASS.replace("mx.corp.example", "mx.evil.example"))
        + RELAY_RECEIVED,
        "none",
        "none",
    ),
    (
        "dmarc-pass-for-other-domain",
        GATEWAY_RECEIVED
        + ar(DMARC_PASS.replace("=corp.example", "=evil.example"))
        + RELAY_RECEIVED,
        "fail",
        "trusted-ar-dmarc",
    ),
    (
        "conflicting-dmarc",
        GATEWAY_RECEIVED
        + ar(DMARC_PASS)
        + ar("mx.corp.example; dmarc=none header.from=corp.example")
        + RELAY_RECEIVED,
        "fail",
        "trusted-ar-dmarc",
    ),
    (
        "dkim-aligned-subdomain",
        GATEWAY_RECEIVED
        + ar("mx.corp.example; dkim=pass header.d=mail.corp.example header.s=s1")
        + RELAY_RECEIVED,
        "pass",
        "trusted-ar-dkim",
    ),
    (
        "dkim-unaligned",
        GATEWAY_RECEIVED
        + ar("mx.corp.example; dkim=pass header.d=esp.example header.s=s1")
        + RELAY_RECEIVED,
        "none",
        "none",
    ),
    (
        "dkim-fail-only",
        GATEWAY_RECEIVED + ar("mx.corp.example; dkim=fail header.d=corp.example") + RELAY_RECEIVED,
        "none",
        "none",
    ),
    ("no-ar", GATEWAY_RECEIVED + RELAY_RECEIVED, "none", "none"),
    (
        "dmarc-pass-without-header-from",
        GATEWAY_RECEIVED + ar("mx.corp.example; dmarc=pass") + RELAY_RECEIVED,
        "none",
        "none",
    ),
]


@pytest.mark.parametrize(
    ("top", "verdict", "method"), [c[1:] for c in AR_CASES], ids=[c[0] for c in AR_CASES]
)
def test_trusted_authentication_results(top: str, verdict: str, method: str) -> None:
    got = trusted_authentication_results(parse_message(mail(top=top)), CORP_MX)
    assert (got.verdict, got.method) == (AuthVerdict(verdict), method)


def test_forged_field_is_reported_in_detail() -> None:
    top = GATEWAY_RECEIVED + ar(DMARC_FAIL) + RELAY_RECEIVED + ar(DMARC_PASS)
    got = trusted_authentication_results(parse_message(mail(top=top)), CORP_MX)
    assert got == AuthResult(AuthVerdict.FAIL, "trusted-ar-dmarc", "dmarc=fail forged-ar-ignored=1")


@pytest.mark.parametrize(
    "top",
    [GATEWAY_RECEIVED + ar(DMARC_PASS) + RELAY_RECEIVED, GATEWAY_RECEIVED + RELAY_RECEIVED],
)
def test_no_configured_authserv_id_is_gray_never_pass(top: str) -> None:
    got = trusted_authentication_results(parse_message(mail(top=top)), frozenset())
    assert got.verdict is AuthVerdict.GRAY


def test_unparseable_from_cannot_pass() -> None:
    top = GATEWAY_RECEIVED + ar(DMARC_PASS) + RELAY_RECEIVED
    msg = parse_message(mail(top=top, from_value="alice@x <bob@y>"))
    got = trusted_authentication_results(msg, CORP_MX)
    assert got.verdict is AuthVerdict.FAIL and got.detail == "from-address-in-display-name"


def test_without_gateway_received_the_region_shrinks() -> None:
    top = ar(DMARC_PASS) + RELAY_RECEIVED + ar(DMARC_PASS) + SENDER_RECEIVED
    msg = parse_message(mail(top=top))
    assert trusted_authentication_results(msg, CORP_MX, received_above=0).verdict == "pass"
    forged_only = parse_message(mail(top=RELAY_RECEIVED + ar(DMARC_PASS) + SENDER_RECEIVED))
    got = trusted_authentication_results(forged_only, CORP_MX, received_above=0)
    assert got.verdict is AuthVerdict.NONE


FIXTURE_CASES = [
    # (file, authserv-ids, received_above, verdict, method, From address)
    (
        "auth-postfix-opendmarc-pass.eml",
        CORP_MX,
        1,
        "pass",
        "trusted-ar-dmarc",
        "alice@corp.example",
    ),
    (
        "auth-postfix-forged-pass-below-real-fail.eml",
        CORP_MX,
        1,
        "fail",
        "trusted-ar-dmarc",
        "dana.whitfield@corp.example",
    ),
    # Google writes its A-R below its own hops: gateway + Workspace egress + mx.google.com.
    (
        "auth-google-workspace-pass.eml",
        frozenset({"mx.google.com"}),
        3,
        "pass",
        "trusted-ar-dmarc",
        "alice@corp.example",
    ),
    (
        "auth-google-workspace-pass.eml",
        frozenset({"mx.google.com"}),
        1,
        "none",
        "none",
        "alice@corp.example",
    ),
    # M365 writes no authserv-id; trusted only when the deployment lists NO_AUTHSERV_ID.
    (
        "auth-m365-pass.eml",
        frozenset({NO_AUTHSERV_ID}),
        2,
        "pass",
        "trusted-ar-dmarc",
        "alice.martin@corp.example",
    ),
    (
        "auth-m365-pass.eml",
        frozenset({"protection.outlook.com"}),
        2,
        "none",
        "none",
        "alice.martin@corp.example",
    ),
    (
        "auth-m365-pass.eml",
        frozenset({"mx.microsoft.com"}),
        2,
        "none",
        "none",
        "alice.martin@corp.example",
    ),  # ARC-Authentication-Results is not an A-R field
]


@pytest.mark.parametrize(
    ("name", "ids", "received_above", "verdict", "method", "address"), FIXTURE_CASES
)
def test_relay_samples(
    name: str, ids: frozenset[str], received_above: int, verdict: str, method: str, address: str
) -> None:
    msg = parse_message((MAIL / name).read_bytes())
    sender = parse_from(msg)
    assert sender.address == address
    got = trusted_authentication_results(
        msg, ids, from_domain=sender.domain, received_above=received_above
    )
    assert (got.verdict, got.method) == (AuthVerdict(verdict), method)


@pytest.mark.parametrize(
    ("a", "b", "aligned"),
    [
        ("corp.example", "corp.example", True),
        ("Corp.Example.", "corp.example", True),
        ("mail.corp.example", "corp.example", True),
        ("corp.example", "mail.corp.example", True),
        ("eu.corp.example", "us.corp.example", False),
        ("corp.co.uk", "evil.co.uk", False),
        ("evilcorp.example", "corp.example", False),
        ("corp.example", "example", False),
        ("exämple.test", "xn--exmple-cua.test", True),
        ("", "corp.example", False),
    ],
)
def test_domains_aligned(a: str, b: str, aligned: bool) -> None:
    assert domains_aligned(a, b) is aligned


# ---------------------------------------------------------------------------------- DKIM


@pytest.fixture(scope="session")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A throwaway RSA-2048 key made per test session: (private PEM, DNS TXT record)."""
    folder = tmp_path_factory.mktemp("dkim")
    private, public = folder / "test-only.key", folder / "test-only.pub"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(private), "2048"], check=True, capture_output=True
    )
    subprocess.run(
        ["openssl", "rsa", "-in", str(private), "-pubout", "-out", str(public)],
        check=True,
        capture_output=True,
    )
    b64 = "".join(line for line in public.read_text().splitlines() if "-----" not in line)
    return private.read_bytes(), f"v=DKIM1; k=rsa; p={b64}".encode()


def signed(
    key: tuple[bytes, bytes], raw: bytes, domain: bytes = b"corp.example", **kwargs: object
) -> bytes:
    header = dkim.sign(
        raw,
        b"mail2024",
        domain,
        key[0],
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        **kwargs,
    )
    return header + raw


def dns_for(key: tuple[bytes, bytes], *domains: str) -> Callable[[bytes], bytes | None]:
    records = {f"mail2024._domainkey.{d}.".encode(): key[1] for d in domains}
    return records.get


def test_dkim_valid_aligned_signature_passes(dkim_key: tuple[bytes, bytes]) -> None:
    raw = signed(dkim_key, mail())
    got = verify_dkim(raw, "corp.example", dns_for(dkim_key, "corp.example"))
    assert got == AuthResult(AuthVerdict.PASS, "dkim", "dkim=pass d=corp.example")


def test_dkim_parent_domain_signature_aligns_with_subdomain_from(
    dkim_key: tuple[bytes, bytes],
) -> None:
    raw = signed(dkim_key, mail(from_value="Alice <alice@mail.corp.example>"))
    got = verify_dkim(raw, "mail.corp.example", dns_for(dkim_key, "corp.example"))
    assert got.verdict is AuthVerdict.PASS


def test_dkim_tampered_body_fails(dkim_key: tuple[bytes, bytes]) -> None:
    raw = signed(dkim_key, mail()).replace(b"Thursday 10:00", b"Friday 16:00 ")
    got = verify_dkim(raw, "corp.example", dns_for(dkim_key, "corp.example"))
    assert got.verdict is AuthVerdict.FAIL and got.method == "dkim"


def test_dkim_tampered_from_fails(dkim_key: tuple[bytes, bytes]) -> None:
    raw = signed(dkim_key, mail()).replace(b"From: Alice Martin", b"From: Dana Whitfield")
    got = verify_dkim(raw, "corp.example", dns_for(dkim_key, "corp.example"))
    assert got.verdict is AuthVerdict.FAIL


def test_dkim_prepended_second_from_breaks_signature(dkim_key: tuple[bytes, bytes]) -> None:
    # dkimpy counts an extra From into the hash (bug#644046), so this cannot pass.
    raw = b"From: Dana Whitfield <dana.whitfield@corp.example>\r\n" + signed(dkim_key, mail())
    got = verify_dkim(raw, "corp.example", dns_for(dkim_key, "corp.example"))
    assert got.verdict is not AuthVerdict.PASS


def test_dkim_signature_of_another_domain_is_not_aligned(dkim_key: tuple[bytes, bytes]) -> None:
    raw = signed(dkim_key, mail(), domain=b"esp-mailer.example")
    got = verify_dkim(raw, "corp.example", dns_for(dkim_key, "esp-mailer.example"))
    assert got == AuthResult(AuthVerdict.NONE, "none", "dkim-not-aligned d=esp-mailer.example")


def test_dkim_length_tag_never_passes(dkim_key: tuple[bytes, bytes]) -> None:
    raw = signed(dkim_key, mail(), length=True) + b"\r\nP.S. pay the invoice to IBAN XX00.\r\n"
    got = verify_dkim(raw, "corp.example", dns_for(dkim_key, "corp.example"))
    assert got.verdict is AuthVerdict.FAIL and "length-tag" in got.detail


def test_dkim_missing_key_fails(dkim_key: tuple[bytes, bytes]) -> None:
    raw = signed(dkim_key, mail())
    got = verify_dkim(raw, "corp.example", dns_for(dkim_key, "other.example"))
    assert got.verdict is AuthVerdict.FAIL


def test_dkim_dns_exception_fails_without_raising(dkim_key: tuple[bytes, bytes]) -> None:
    def broken(name: bytes) -> bytes:
        raise TimeoutError("resolver timed out")

    got = verify_dkim(signed(dkim_key, mail()), "corp.example", broken)
    assert got == AuthResult(AuthVerdict.FAIL, "dkim", "dkim=fail TimeoutError")


def test_dkim_one_good_signature_among_bad_passes(dkim_key: tuple[bytes, bytes]) -> None:
    good = signed(dkim_key, mail())
    bad = dkim.sign(good, b"mail2024", b"esp-mailer.example", dkim_key[0])
    got = verify_dkim(bad + good, "corp.example", dns_for(dkim_key, "corp.example"))
    assert got.verdict is AuthVerdict.PASS


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (mail(), AuthResult(AuthVerdict.NONE, "none", "dkim-no-signature")),
        (
            b"\x00\xff garbage",
            AuthResult(AuthVerdict.FAIL, "dkim", "dkim-error MessageFormatError"),
        ),
    ],
)
def test_dkim_without_signature(raw: bytes, expected: AuthResult) -> None:
    no_keys: dict[bytes, bytes] = {}
    assert verify_dkim(raw, "corp.example", no_keys.get) == expected


def test_dkim_without_dns_is_none(dkim_key: tuple[bytes, bytes]) -> None:
    got = verify_dkim(signed(dkim_key, mail()), "corp.example", None)
    assert got == AuthResult(AuthVerdict.NONE, "none", "dkim-no-dns")


# --------------------------------------------------------------------------- authenticate


@pytest.mark.parametrize(
    ("top", "sign", "ids", "verdict", "method"),
    [
        # trusted A-R is final even when DKIM would say otherwise
        (
            GATEWAY_RECEIVED + ar(DMARC_FAIL) + RELAY_RECEIVED,
            True,
            CORP_MX,
            "fail",
            "trusted-ar-dmarc",
        ),
        (
            GATEWAY_RECEIVED + ar(DMARC_PASS) + RELAY_RECEIVED,
            False,
            CORP_MX,
            "pass",
            "trusted-ar-dmarc",
        ),
        # no trusted verdict: our own DKIM decides
        (GATEWAY_RECEIVED + RELAY_RECEIVED, True, CORP_MX, "pass", "dkim"),
        (GATEWAY_RECEIVED + RELAY_RECEIVED, True, frozenset(), "pass", "dkim"),
        # a spoofed CEO post without a signature: nothing to believe
        (GATEWAY_RECEIVED + RELAY_RECEIVED, False, CORP_MX, "none", "none"),
        (GATEWAY_RECEIVED + ar(DMARC_PASS) + RELAY_RECEIVED, False, frozenset(), "gray", "none"),
    ],
)
def test_authenticate(
    dkim_key: tuple[bytes, bytes],
    top: str,
    sign: bool,
    ids: frozenset[str],
    verdict: str,
    method: str,
) -> None:
    body = mail(from_value="Dana Whitfield <dana.whitfield@corp.example>")
    raw = top.encode() + (signed(dkim_key, body) if sign else body)
    msg = parse_message(raw)
    got = authenticate(
        msg,
        raw,
        parse_from(msg),
        authserv_ids=ids,
        dnsfunc=dns_for(dkim_key, "corp.example"),
        relays=RELAYS,
    )
    assert (got.verdict, got.method) == (AuthVerdict(verdict), method)


# A local process (or anyone allowed to connect) writes the relay's A-R itself.
LOCAL_TRACE = GATEWAY_RECEIVED.replace("[10.20.0.25]", "[127.0.0.1]")


@pytest.mark.parametrize(
    ("top", "relays", "sign", "verdict", "method", "why"),
    [
        # the relay's own A-R, from the relay: believed
        (GATEWAY_RECEIVED + ar(DMARC_PASS), RELAYS, False, "pass", "trusted-ar-dmarc", ""),
        # nothing configured (the default): no A-R counts, only DKIM
        (GATEWAY_RECEIVED + ar(DMARC_PASS), (), False, "gray", "none", "no-authres-relay"),
        (GATEWAY_RECEIVED + ar(DMARC_FAIL), (), True, "pass", "dkim", ""),
        # the same A-R presented by another peer (a local process): not believed
        (LOCAL_TRACE + ar(DMARC_PASS), RELAYS, False, "gray", "none", "peer-not-an-authres"),
        (LOCAL_TRACE + ar(DMARC_PASS), ("10.20.0.25/32", "::1/128"), True, "pass", "dkim", ""),
        # a message without our trace on top names no peer: not believed
        (ar(DMARC_PASS), RELAYS, False, "gray", "none", "peer-not-an-authres"),
        (ar(DMARC_PASS) + GATEWAY_RECEIVED, RELAYS, False, "gray", "none", "peer-not-an-authres"),
    ],
)
def test_authentication_results_count_only_from_configured_relays(  # issue 12 item 14
    dkim_key: tuple[bytes, bytes],
    top: str,
    relays: tuple[str, ...],
    sign: bool,
    verdict: str,
    method: str,
    why: str,
) -> None:
    body = mail(from_value="Dana Whitfield <dana.whitfield@corp.example>")
    raw = top.encode() + (signed(dkim_key, body) if sign else body)
    msg = parse_message(raw)
    got = authenticate(
        msg,
        raw,
        parse_from(msg),
        authserv_ids=CORP_MX,
        dnsfunc=dns_for(dkim_key, "corp.example"),
        relays=relays,
    )
    assert (got.verdict, got.method) == (AuthVerdict(verdict), method)
    assert why in got.detail


def test_authenticate_tampered_signature_overrides_gray(dkim_key: tuple[bytes, bytes]) -> None:
    raw = signed(dkim_key, mail()).replace(b"Thursday", b"Saturday")
    msg = parse_message(raw)
    got = authenticate(
        msg,
        raw,
        parse_from(msg),
        authserv_ids=frozenset(),
        dnsfunc=dns_for(dkim_key, "corp.example"),
    )
    assert got.verdict is AuthVerdict.FAIL
