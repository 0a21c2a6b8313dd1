"""Tokens: signed, opaque identifiers carried in reply, bounce and unsubscribe addresses.

Pure. Input: a secret (or several, newest first, for key rotation) and small integers.
Output: a lowercase base32 string, or the integers back after the signature checks.

A token is ``varint(kind) varint(a) varint(b) … || HMAC-SHA256(secret, those bytes)[:16]``,
so it carries 128 bits of MAC (LIST-05) and needs no database lookup to be checked at RCPT
time. Base32 in lowercase because some MTAs fold the case of local parts. Tokens are
never logged (PRIV-08); ``mailgate.addressing.redact_address`` hides them.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from collections.abc import Sequence

MAC_BYTES = 16


class TokenKind(enum.IntEnum):
    REPLY = 1  # (person_id, discussion_id)
    BOUNCE = 2  # (delivery_id,)
    UNSUBSCRIBE = 3  # (person_id, list_id)
    CONFIRM = 4  # (pending_action_id,)
    DIGEST = 5  # (person_id, digest_id): replies to a digest carry commands
    DIGEST_UNSUBSCRIBE = 6  # (person_id,): a digest's one-click link stops that digest


class TokenError(ValueError):
    """The token is malformed, of another kind, or its signature does not match."""


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("token fields are non-negative integers")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varints(data: bytes) -> list[int]:
    values: list[int] = []
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if shift > 63:
            raise TokenError("malformed token")
        if not byte & 0x80:
            values.append(value)
            value = shift = 0
    if shift:
        raise TokenError("malformed token")
    return values


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), payload, hashlib.sha256).digest()[:MAC_BYTES]


def make_token(secret: str, kind: TokenKind, *fields: int) -> str:
    payload = _varint(int(kind)) + b"".join(_varint(f) for f in fields)
    raw = payload + _mac(secret, payload)
    return base64.b32encode(raw).decode().rstrip("=").lower()


def read_token(secrets: Sequence[str], kind: TokenKind, token: str) -> tuple[int, ...]:
    """The fields of a valid ``kind`` token signed by any of ``secrets``.

    Only the spelling :func:`make_token` writes is accepted (in either letter case, as MTAs
    may fold local parts): base32 leaves spare low bits in the last character, and a
    decoder that ignores them would take several spellings of one token.
    """
    text = token.strip().upper()
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (ValueError, TypeError):
        raise TokenError("malformed token") from None
    if base64.b32encode(raw).decode().rstrip("=") != text:
        raise TokenError("malformed token")
    if len(raw) <= MAC_BYTES:
        raise TokenError("malformed token")
    payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if not any(hmac.compare_digest(mac, _mac(secret, payload)) for secret in secrets):
        raise TokenError("bad signature")
    values = _read_varints(payload)
    if not values or values[0] != int(kind):
        raise TokenError("token of another kind")
    return tuple(values[1:])
