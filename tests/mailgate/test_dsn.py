"""DSN parsing (BNC-02): fixture bounces from real MTAs, RFC 3464 edge cases, hostile input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgate import dsn
from mailgate.dsn import BouncedRecipient, parse_bounce
from mailgate.parse import parse_message

MAIL = Path(__file__).resolve().parent.parent / "fixtures" / "mail"


def load(name: str):
    return parse_message((MAIL / name).read_bytes())


# (fixture, [(address, permanent, status)], a piece of the diagnostic)
FIXTURES = [
    ("dsn-postfix-hard.eml", [("j.doe@corp.example", True, "5.1.1")], "User unknown in virtual"),
    (
        "dsn-postfix-delayed.eml",
        [("a.kumar@corp.example", False, "4.4.1")],
        "Connection timed out",
    ),
    # Original-Recipient (the address we sent to) wins over the alias target.
    ("dsn-postfix-alias.eml", [("peter.novak@corp.example", True, "5.2.2")], "Mailbox full"),
    # Its delivery-status part is garbage: the Postfix notice text still names the recipient.
    ("dsn-postfix-damaged-report.eml", [("s.park@corp.example", True, "5.1.1")], "550 5.1.1"),
    # Exim reports a generic 5.0.0 in Status; the real code stays in the diagnostic.
    ("dsn-exim-hard.eml", [("m.schmidt@corp.example", True, "5.0.0")], "550 5.1.1"),
    ("dsn-exim-classic.eml", [("r.ortiz@corp.example", True, "5.1.1")], "User unknown"),
    (
        "dsn-exchange-online-5.1.10.eml",
        [("t.nguyen@corp.example", True, "5.1.10")],
        "RESOLVER.ADR.RecipientNotFound",
    ),
    (
        "dsn-exchange-de-unzustellbar.eml",
        [("h.weber@corp.example", True, "5.1.1")],
        "RESOLVER.ADR.RecipNotFound",
    ),
    (
        "dsn-gmail-hard.eml",
        [("ana.silva@corp.example", True, "5.1.1")],
        "550-5.1.1 The email account that you tried to reach does not exist.",
    ),
    ("dsn-qmail-failure-notice.eml", [("l.moreau@corp.example", True, "5.1.1")], "User unknown"),
    ("dsn-sendmail-returned-mail.eml", [("k.berg@corp.example", True, "5.1.1")], "User unknown"),
]


@pytest.mark.parametrize(("name", "expected", "diagnostic"), FIXTURES)
def test_fixture_bounces(name: str, expected: list[tuple[str, bool, str]], diagnostic: str):
    bounced = parse_bounce(load(name))
    assert [(b.address, b.permanent, b.status) for b in bounced] == expected
    for item in bounced:
        assert diagnostic in item.diagnostic
        assert len(item.diagnostic) <= 200
        assert "\n" not in item.diagnostic


def _report(*recipient_blocks: str, status_part_headers: str = "") -> bytes:
    blocks = "\n".join(recipient_blocks)
    return (
        "From: MAILER-DAEMON@mx1.corp.example (Mail Delivery System)\n"
        "To: bounces+T0k3n@lists.corp.example\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n'
        "\n"
        "--b\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
        "Your message could not be delivered.\n"
        "\n"
        "--b\n"
        f"{status_part_headers or 'Content-Type: message/delivery-status'}\n"
        "\n"
        "Reporting-MTA: dns; mx1.corp.example\n"
        "\n"
        f"{blocks}"
        "\n--b--\n"
    ).encode()


def _block(**fields: str) -> str:
    return "".join(f"{k.replace('_', '-')}: {v}\n" for k, v in fields.items())


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        pytest.param(
            [_block(Final_Recipient="rfc822; a@corp.example", Action="failed", Status="5.1.1")],
            [("a@corp.example", True, "5.1.1")],
            id="failed-5xx-hard",
        ),
        pytest.param(
            [_block(Final_Recipient="rfc822; a@corp.example", Action="delayed", Status="4.2.2")],
            [("a@corp.example", False, "4.2.2")],
            id="delayed-soft",
        ),
        pytest.param(
            # Gave up after retrying a temporary error: failed, but still soft.
            [_block(Final_Recipient="rfc822; a@corp.example", Action="failed", Status="4.4.7")],
            [("a@corp.example", False, "4.4.7")],
            id="failed-4xx-expired-soft",
        ),
        pytest.param(
            [
                _block(
                    Final_Recipient="rfc822; a@corp.example",
                    Action="failed",
                    Diagnostic_Code="smtp; 550 no such user",
                )
            ],
            [("a@corp.example", True, "")],
            id="failed-no-status-uses-smtp-code",
        ),
        pytest.param(
            [
                _block(
                    Final_Recipient="rfc822; ok@corp.example", Action="delivered", Status="2.0.0"
                ),
                _block(
                    Final_Recipient="rfc822; relay@corp.example", Action="relayed", Status="2.0.0"
                ),
            ],
            [],
            id="success-reports-are-not-failures",
        ),
        pytest.param(
            [
                _block(Final_Recipient="rfc822; a@corp.example", Action="delayed", Status="4.4.1"),
                _block(Final_Recipient="rfc822; A@Corp.Example", Action="failed", Status="5.1.1"),
                _block(Final_Recipient="rfc822; b@corp.example", Action="failed", Status="5.7.1"),
            ],
            [("a@corp.example", True, "5.1.1"), ("b@corp.example", True, "5.7.1")],
            id="dedupe-hard-wins-order-kept",
        ),
        pytest.param(
            [
                _block(
                    Original_Recipient="rfc822;alias@corp.example",
                    Final_Recipient="rfc822; real@corp.example",
                    Action="failed",
                    Status="5.1.1",
                )
            ],
            [("alias@corp.example", True, "5.1.1")],
            id="original-recipient-preferred",
        ),
        pytest.param(
            [
                _block(
                    Final_Recipient="utf-8; ünïcode@corp.example", Action="failed", Status="5.1.1"
                )
            ],
            [("ünïcode@corp.example", True, "5.1.1")],
            id="utf8-address-type",
        ),
        pytest.param(
            [
                _block(
                    Final_Recipient="rfc822; <bracketed@corp.example>",
                    Action="FAILED",
                    Status="5.1.1 (bad mailbox)",
                ),
            ],
            [("bracketed@corp.example", True, "5.1.1")],
            id="brackets-case-and-status-comment",
        ),
        pytest.param(
            [
                _block(Final_Recipient="rfc822; not an address", Action="failed", Status="5.1.1"),
                _block(Final_Recipient="x400; /C=US/O=Corp/", Action="failed", Status="5.1.1"),
                _block(Action="failed", Status="5.1.1"),
            ],
            [],
            id="unusable-recipients-skipped",
        ),
    ],
)
def test_delivery_status_fields(blocks: list[str], expected: list[tuple[str, bool, str]]):
    bounced = parse_bounce(parse_message(_report(*blocks)))
    assert [(b.address, b.permanent, b.status) for b in bounced] == expected


def test_long_folded_diagnostic_is_one_short_line():
    long_tail = " ".join(["word"] * 200)
    block = (
        "Final-Recipient: rfc822; a@corp.example\nAction: failed\nStatus: 5.1.1\n"
        f"Diagnostic-Code: smtp; 550-5.1.1 first line\n {long_tail}\n"
    )
    (item,) = parse_bounce(parse_message(_report(block)))
    assert item.diagnostic.startswith("smtp; 550-5.1.1 first line word word")
    assert len(item.diagnostic) == 200
    assert "\n" not in item.diagnostic


def test_base64_encoded_report_part():
    import base64

    text = "Reporting-MTA: dns; mx\r\n\r\nFinal-Recipient: rfc822; b64@corp.example\r\n"
    text += "Action: failed\r\nStatus: 5.1.1\r\n"
    raw = (
        "From: postmaster@corp.example\n"
        "Subject: Undeliverable: x\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nfailed\n"
        "--b\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(text.encode()).decode()
        + "--b--\n"
    ).encode()
    assert parse_bounce(parse_message(raw)) == (
        BouncedRecipient("b64@corp.example", True, "5.1.1", ""),
    )


def test_global_delivery_status_rfc6533():
    block = "Final-Recipient: utf-8; jürgen@corp.example\nAction: failed\nStatus: 5.1.1\n"
    raw = _report(block, status_part_headers="Content-Type: message/global-delivery-status")
    assert [(b.address, b.permanent) for b in parse_bounce(parse_message(raw))] == [
        ("jürgen@corp.example", True)
    ]


def test_not_a_bounce_gives_nothing():
    raw = (
        b"From: Jane Doe <jane.doe@corp.example>\nTo: eng@lists.corp.example\n"
        b"Subject: Lunch?\n\nAnyone up for lunch at 12:30?\n"
    )
    assert parse_bounce(parse_message(raw)) == ()


def test_heuristic_errors_never_escape(monkeypatch: pytest.MonkeyPatch):
    # flufl.bounce re-raises whatever a detector throws; parse_bounce must swallow it.
    def boom(msg: object) -> object:
        raise ValueError("detector crashed")

    monkeypatch.setattr(dsn, "all_failures", boom)
    assert parse_bounce(load("dsn-qmail-failure-notice.eml")) == ()
    # The RFC 3464 path does not depend on flufl at all.
    assert [b.address for b in parse_bounce(load("dsn-postfix-hard.eml"))] == ["j.doe@corp.example"]


HOSTILE = [
    b"",
    b"\x00\xff\xfe garbage",
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n--b\n'
    b"Content-Type: message/delivery-status\n\n" + b"Final-Recipient: rfc822; " + b"a" * 100_000,
    b"Content-Type: multipart/report; report-type=delivery-status\n\nno boundary at all\n",
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n--b\n'
    b"Content-Type: message/delivery-status\n\n\n\n\n--b\n--b--\n",
    b"From: MAILER-DAEMON@x\nSubject: failure notice\n\nHi. This is the qmail-send program\n\n"
    + b"<" * 5000
    + b">:\n",
    b"Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822;a@b.example\n"
    b"Action: failed\nStatus: 5.1.1\n",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_input_never_raises(raw: bytes):
    result = parse_bounce(parse_message(raw))
    assert isinstance(result, tuple)
    assert all(isinstance(item, BouncedRecipient) for item in result)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=60), max_size=8))
def test_random_report_fields_never_raise(lines: list[str]):
    block = "\n".join(lines)
    result = parse_bounce(parse_message(_report(block)))
    assert isinstance(result, tuple)
