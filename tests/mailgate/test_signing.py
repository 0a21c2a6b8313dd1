"""DKIM signing of whole composed messages (notices, digests, question mails).

Every signature is checked by dkimpy against the public key, as a receiving server would.
"""

from __future__ import annotations

import email.message
import email.policy
import email.utils
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from mailgate import signing
from mailgate.signing import DkimKey, MessageSigner, sign_message
from tests.conftest import DOMAIN, Dkim


@pytest.fixture
def signer(dkim_key: Dkim) -> MessageSigner:
    pem = Path(dkim_key.env["MAILGATE_DKIM_KEY_FILE"]).read_bytes()
    return MessageSigner(DkimKey(dkim_key.env["MAILGATE_DKIM_SELECTOR"], DOMAIN, pem))


@pytest.fixture
def dnsfunc(dkim_key: Dkim) -> Callable[..., bytes | None]:
    return dkim_key.dnsfunc


def composed(body: str = "Hello,\n\nthe digest for today.\n", **extra: str) -> bytes:
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["From"] = f"Mailgate <digest@{DOMAIN}>"
    msg["To"] = "Ana Lima <ana@corp.example>"
    msg["Subject"] = "Your digest — 3 new discussions, 会議 🎉"
    msg["Date"] = email.utils.formatdate()
    msg["Message-ID"] = f"<d.1@{DOMAIN}>"
    for name, value in extra.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def test_signed_message_verifies(signer: MessageSigner, dnsfunc: Callable[..., bytes]) -> None:
    signed = signer.sign(composed())
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert dkim.verify(signed, dnsfunc=dnsfunc)


def test_html_and_odd_whitespace_verify(
    signer: MessageSigner, dnsfunc: Callable[..., bytes]
) -> None:
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["From"] = f"Mailgate <digest@{DOMAIN}>"
    msg["To"] = "ana@corp.example"
    msg["Subject"] = "a  subject\twith   gaps " + "long " * 30
    msg.set_content("trailing spaces   \n\ttabs\t\there\n\n\n\n")
    msg.add_alternative("<p>Hi <b>there</b></p>\n", subtype="html")
    assert dkim.verify(signer.sign(msg.as_bytes()), dnsfunc=dnsfunc)


def test_bare_lf_message_is_signed_as_crlf(
    signer: MessageSigner, dnsfunc: Callable[..., bytes]
) -> None:
    raw = composed().replace(b"\r\n", b"\n")
    signed = signer.sign(raw)
    assert b"\n" not in signed.replace(b"\r\n", b"")
    assert dkim.verify(signed, dnsfunc=dnsfunc)


def test_repeated_fields_verify(signer: MessageSigner, dnsfunc: Callable[..., bytes]) -> None:
    raw = b"X-Tag: one\r\n" + composed().replace(b"\r\n\r\n", b"\r\nX-Tag: two\r\n\r\n", 1)
    signed = signer.sign(raw)
    assert b"x-tag: x-tag" in signed.replace(b"\r\n ", b" ").lower()
    assert dkim.verify(signed, dnsfunc=dnsfunc)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace(b"the digest for today", b"the digest for TODAY"),
        lambda m: m.replace(b"Subject: ", b"Subject: [changed] ", 1),
        lambda m: m,
        # A second Subject or From where a mail client would show it: oversigning refuses.
        lambda m: b"Subject: prepended\r\n" + m,
        lambda m: m.replace(b"\r\n\r\n", b"\r\nFrom: evil@example.com\r\n\r\n", 1),
    ],
    ids=["body", "subject", "untouched", "added-subject", "added-from"],
)
def test_tampering_breaks_the_signature(
    signer: MessageSigner, dnsfunc: Callable[..., bytes], tamper: Callable[[bytes], bytes]
) -> None:
    signed = signer.sign(composed())
    changed = tamper(signed)
    assert dkim.verify(changed, dnsfunc=dnsfunc) is (changed == signed)


def test_trace_fields_are_not_signed(signer: MessageSigner, dnsfunc: Callable[..., bytes]) -> None:
    raw = b"Return-Path: <x@y>\r\nReceived: from a by b\r\n" + composed()
    signed = signer.sign(raw)
    header = signed.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ").lower()
    h = header.split(b"h=", 1)[1].split(b";", 1)[0]
    assert b"received" not in h and b"return-path" not in h
    # A relay adding its own trace on top keeps the signature valid.
    assert dkim.verify(b"Received: from relay by mx\r\n" + signed, dnsfunc=dnsfunc)


def test_fallback_rsa_matches_openssl(rsa_key: tuple[bytes, bytes]) -> None:
    # Without the cryptography package the signer uses dkimpy's RSA; PKCS#1 v1.5 is
    # deterministic, so both must give the same bytes.
    data = b"from:x\r\nsubject:y\r\n"
    fast = signing.rsa_sign(signing.load_key(rsa_key[0]), data)
    slow = signing.rsa_sign(signing._load_key_dkimpy(rsa_key[0]), data)
    assert fast == slow


def test_sign_message_without_a_body(signer: MessageSigner, dnsfunc: Callable[..., bytes]) -> None:
    key = signer.key
    raw = f"From: a@{DOMAIN}\r\nSubject: empty\r\n".encode()
    signed = sign_message(raw, key)
    assert dkim.verify(signed + b"\r\n", dnsfunc=dnsfunc)
