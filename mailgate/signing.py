"""DKIM signing (outbound, pure): the pieces list copies and every other mail share.

Input: composed message bytes and a :class:`DkimKey`. Output: the same bytes with a
``DKIM-Signature`` field on top (rsa-sha256, relaxed/relaxed, no ``l=``, no ``t=``).

List copies (``mailgate.copies``) prepare their canonical forms once per post and sign
each copy with :func:`signature_field`; notices, digests and question mails are composed
one by one and go through :func:`sign_message` (via :class:`MessageSigner`, which loads the
key once). Every mail from our domain is signed, so a domain with a DMARC policy does not
see its own digests and questions rejected (DMARC-01, AUTH-02).

Why not ``dkim.sign`` from dkimpy: its RSA is pure Python (~10 ms a signature, a minute
and a half for 10,000 digests); the ``cryptography`` package's OpenSSL RSA takes ~1 ms.
The canonicalisation is a few lines of RFC 6376, and dkimpy verifies our output in tests.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mailgate.folding import fold_words

try:  # OpenSSL RSA: ~10x faster than dkimpy's pure-Python RSA.
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    rsa = None  # type: ignore[assignment]


@dataclass(frozen=True)
class DkimKey:
    selector: str
    domain: str  # d=, aligned with the From domain (the list domain or its parent)
    private_key: bytes  # PEM, RSA of at least 2048 bits


# Header fields signed a second time so that a message cannot gain another one (AUTH-02).
OVERSIGN = frozenset(
    {
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
    }
)
# Fields a relay or a mailing list downstream may add or rewrite: never signed.
_UNSIGNED = frozenset(
    {"return-path", "received", "dkim-signature", "arc-seal", "delivered-to", "x-original-to"}
)


# Cached: list copies prepare a signer for every post, and parsing the PEM costs more
# than signing a copy.
@lru_cache(maxsize=8)
def load_key(pem: bytes) -> Any:
    """A private key for :func:`rsa_sign`; refuses non-RSA keys and keys under 2048 bits."""
    if rsa is not None:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the DKIM key must be an RSA key")
        bits = key.key_size
    else:  # pragma: no cover - only without the cryptography package
        key = _load_key_dkimpy(pem)
        bits = key["modulus"].bit_length()
    if bits < 2048:
        raise ValueError(f"the DKIM key has {bits} bits; use at least 2048 (RFC 8301)")
    return key


def _load_key_dkimpy(pem: bytes) -> Any:
    from dkim.crypto import parse_pem_private_key

    return parse_pem_private_key(pem)


def rsa_sign(key: Any, data: bytes) -> bytes:
    if isinstance(key, dict):
        from dkim.crypto import RSASSA_PKCS1_v1_5_sign

        return bytes(RSASSA_PKCS1_v1_5_sign(hashlib.sha256(data), key))
    return bytes(key.sign(data, padding.PKCS1v15(), hashes.SHA256()))


_WSP_RE = re.compile(rb"[ \t]+")
_BARE_LF_RE = re.compile(rb"(?<!\r)\n")


def relaxed_header(field: bytes) -> bytes:
    """RFC 6376 §3.4.2 for one field as written ("Name: value\\r\\n", maybe folded)."""
    name, _, value = field.partition(b":")
    value = _WSP_RE.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.strip().lower() + b":" + value + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4: collapse whitespace, drop it at line ends and trailing empty lines."""
    lines = [_WSP_RE.sub(b" ", line).rstrip(b" ") for line in body.split(b"\r\n")]
    while lines and not lines[-1]:
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def signature_prefix(key: DkimKey, signed_names: Sequence[str]) -> bytes:
    """The tags of our DKIM-Signature up to ``bh=``, as written."""
    return (
        f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={key.domain}; s={key.selector}; "
        f"q=dns/txt; h={': '.join(signed_names)}; bh="
    ).encode("ascii")


def signature_field(private_key: Any, prefix: bytes, canonical_fields: bytes, bh: bytes) -> bytes:
    """The whole ``DKIM-Signature`` field, folded, given the canonical signed fields.

    ``canonical_fields`` are the signed header fields relaxed-canonicalised in ``h=``
    order; ``bh`` the base64 body hash."""
    signed_data = canonical_fields + b"dkim-signature:" + prefix + bh + b"; b="
    signature = base64.b64encode(rsa_sign(private_key, signed_data)).decode("ascii")
    words = (prefix + bh + b";").decode("ascii").split(" ")
    # b= last, in pieces: FWS inside b= is ignored by verifiers (RFC 6376 §3.5).
    words += [
        "b=" + signature[:60],
        *(signature[i : i + 72] for i in range(60, len(signature), 72)),
    ]
    return fold_words("DKIM-Signature", words).encode("ascii")


def _fields(header_block: bytes) -> list[bytes]:
    """Header fields as written, each with its continuation lines and final CRLF."""
    fields: list[bytes] = []
    for line in header_block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + b"\r\n"
        elif line:
            fields.append(line + b"\r\n")
    return fields


def _name(field: bytes) -> str:
    return field.partition(b":")[0].strip().decode("ascii", "replace").lower()


def sign_message(message: bytes, key: DkimKey) -> bytes:
    """``message`` (CRLF or LF line ends) with a DKIM-Signature on top, in CRLF."""
    message = _BARE_LF_RE.sub(b"\r\n", message)
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:  # no body: the header block ends the message
        head, body = message.rstrip(b"\r\n"), b""
    by_name: dict[str, list[bytes]] = {}  # in order of first appearance
    for field in _fields(head):
        name = _name(field)
        if name not in _UNSIGNED:
            by_name.setdefault(name, []).append(field)
    # h= lists each instance bottom-up (RFC 6376 §5.4.2); the extra names of OVERSIGN
    # match no field and so forbid adding one.
    order = [field for fields in by_name.values() for field in reversed(fields)]
    signed = [name for name, fields in by_name.items() for _ in fields]
    signed += [name for name in by_name if name in OVERSIGN]
    bh = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
    canonical = b"".join(relaxed_header(f) for f in order)
    field = signature_field(load_key(key.private_key), signature_prefix(key, signed), canonical, bh)
    return field + message


class MessageSigner:
    """Signs whole messages with one key (``sign`` is the relay's hook); the key is
    loaded and checked when the signer is made, before anything is composed."""

    def __init__(self, key: DkimKey) -> None:
        load_key(key.private_key)
        self.key = key

    def sign(self, message: bytes) -> bytes:
        return sign_message(message, self.key)
