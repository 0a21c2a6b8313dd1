"""STARTTLS on the gateway (SMTP-11), with a real certificate made for the test.

Loopback is exempt from the STARTTLS requirement by default (a local MTA or the README's
swaks line); ``tls_for_loopback`` makes the gateway treat 127.0.0.1 like any remote peer,
so the requirement can be tested without traffic beyond loopback.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import smtplib
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from mailgate.models import RawMessage
from mailgate.smtp import GatewayController, GatewayHandler, Limits
from tests.conftest import DOMAIN, SECRET, free_port

ALICE = "alice@corp.example"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(DOMAIN), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def tls_gateway(certificate, session_factory, directory):  # type: ignore[no-untyped-def]
    from mailgate.inbox import SqlInbox

    directory.list("eng")
    directory.member("eng", ALICE)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    handler = GatewayHandler(
        SqlInbox(session_factory), domain=DOMAIN, secrets=(SECRET,), limits=Limits()
    )
    port = free_port()
    controller = GatewayController(
        handler,
        hostname="127.0.0.1",
        port=port,
        trusted_peers=("127.0.0.1/32",),
        server_name=DOMAIN,
        tls_context=context,
        tls_for_loopback=True,
    )
    controller.start()
    yield port
    controller.stop()


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    context.check_hostname = True
    return context


MESSAGE = (
    f"From: {ALICE}\r\nTo: eng@{DOMAIN}\r\nSubject: tls\r\nMessage-ID: <t1@corp>\r\n\r\nhi\r\n"
)


def test_mail_before_starttls_is_refused_with_530(tls_gateway) -> None:  # type: ignore[no-untyped-def]
    with smtplib.SMTP("127.0.0.1", tls_gateway, timeout=10) as smtp:
        code, features = smtp.ehlo("client.corp.example")
        assert code == 250 and b"STARTTLS" in features
        assert b"AUTH" not in features  # never AUTH in cleartext (or at all)
        code, reply = smtp.mail(ALICE)
        assert (code, reply) == (530, b"5.7.0 Must issue a STARTTLS command first")


def test_after_starttls_mail_is_accepted_and_the_trace_names_tls(  # type: ignore[no-untyped-def]
    tls_gateway, certificate, session_factory
) -> None:
    with smtplib.SMTP("127.0.0.1", tls_gateway, timeout=10) as smtp:
        smtp.ehlo("client.corp.example")
        smtp.starttls(context=client_context(certificate))
        smtp.ehlo("client.corp.example")  # RFC 3207: a new EHLO after the handshake
        smtp.sendmail(ALICE, [f"eng@{DOMAIN}"], MESSAGE.encode())
    with session_factory() as s:
        (raw,) = s.scalars(select(RawMessage.raw)).all()
    head = raw.split(b"\r\nFrom:")[0]
    assert b"with ESMTPS id" in head
    assert b"version=TLSv1.3" in head or b"version=TLSv1.2" in head


def read_reply(stream: Any) -> bytes:
    lines = []
    while True:
        line = stream.readline()
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return b"".join(lines)


def test_commands_pipelined_before_the_handshake_are_discarded(  # type: ignore[no-untyped-def]
    tls_gateway, certificate
) -> None:
    """CVE-2011-0411 style injection: 'STARTTLS\\r\\nHELP\\r\\n' in one write. After the
    handshake the injected HELP must not be answered inside the TLS session."""
    raw = socket.create_connection(("127.0.0.1", tls_gateway), timeout=10)
    plain = raw.makefile("rb")
    assert read_reply(plain).startswith(b"220 ")
    raw.sendall(b"EHLO client.corp.example\r\n")
    assert read_reply(plain).startswith(b"250-")
    raw.sendall(b"STARTTLS\r\nHELP\r\n")
    assert read_reply(plain).startswith(b"220 ")
    tls = client_context(certificate).wrap_socket(raw, server_hostname=DOMAIN)
    secure = tls.makefile("rb")
    tls.sendall(b"NOOP\r\n")
    first = read_reply(secure)
    assert first.startswith(b"250 "), first  # NOOP's answer, not HELP's "214"/"250 Supported"
    assert b"Supported" not in first
    tls.sendall(b"MAIL FROM:<alice@corp.example>\r\n")
    # Without a fresh EHLO the session has no ESMTP state; aiosmtpd asks for HELO/EHLO.
    assert read_reply(secure)[:3] in (b"503", b"250")
    tls.close()


def test_loopback_is_exempt_by_default(certificate, session_factory, directory) -> None:  # type: ignore[no-untyped-def]
    from mailgate.inbox import SqlInbox

    directory.list("eng")
    directory.member("eng", ALICE)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    port = free_port()
    controller = GatewayController(
        GatewayHandler(
            SqlInbox(session_factory), domain=DOMAIN, secrets=(SECRET,), limits=Limits()
        ),
        hostname="127.0.0.1",
        port=port,
        trusted_peers=("127.0.0.1/32",),
        server_name=DOMAIN,
        tls_context=context,
    )
    controller.start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            code, features = smtp.ehlo("localhost")
            assert b"STARTTLS" in features  # offered …
            smtp.sendmail(ALICE, [f"eng@{DOMAIN}"], MESSAGE.encode())  # … not required
    finally:
        controller.stop()


@pytest.mark.parametrize(
    ("host", "exempt"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped, as is_trusted reads it
        ("::ffff:10.0.0.1", False),
        ("10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("not-an-address", False),
    ],
)
def test_which_peers_count_as_loopback(host: str, exempt: bool) -> None:
    from mailgate.peers import is_loopback

    assert is_loopback(host) is exempt
