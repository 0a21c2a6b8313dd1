"""Tokens (pure): one token, one spelling (issue 12 item 11)."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from mailgate.tokens import TokenError, TokenKind, make_token, read_token

SECRET = "test-secret-0123456789abcdef0123456789abcdef"
ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def _same_bytes_spellings(token: str) -> list[str]:
    """Every spelling whose base32 decoding gives the same bytes as ``token``."""
    raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    found = []
    for char in ALPHABET:
        other = token[:-1] + char
        try:
            decoded = base64.b32decode(other.upper() + "=" * (-len(other) % 8))
        except ValueError:
            continue
        if decoded == raw:
            found.append(other)
    return found


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        (TokenKind.REPLY, (7, 42)),
        (TokenKind.BOUNCE, (1234,)),
        (TokenKind.UNSUBSCRIBE, (1, 2)),
        (TokenKind.CONFIRM, (99,)),
        (TokenKind.DIGEST, (3, 2_000_000)),
    ],
)
def test_only_the_canonical_spelling_of_a_token_is_accepted(
    kind: TokenKind, fields: tuple[int, ...]
) -> None:
    token = make_token(SECRET, kind, *fields)
    spellings = _same_bytes_spellings(token)
    assert token in spellings and len(spellings) > 1  # the last character has spare bits
    assert read_token((SECRET,), kind, token) == fields
    for other in spellings:
        if other != token:
            with pytest.raises(TokenError):
                read_token((SECRET,), kind, other)


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param(lambda t: t.upper(), id="upper-case (MTAs fold local parts)"),
        pytest.param(lambda t: f" {t} ", id="surrounding whitespace"),
    ],
)
def test_case_folding_is_not_a_second_token(spelling: Callable[[str], str]) -> None:
    token = make_token(SECRET, TokenKind.REPLY, 1, 2)
    assert read_token((SECRET,), TokenKind.REPLY, spelling(token)) == (1, 2)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t + "=" * (-len(t) % 8), id="explicit padding"),
        pytest.param(lambda t: t[:8] + "=" + t[8:], id="padding inside"),
        pytest.param(lambda t: t + "a", id="one character longer"),
        pytest.param(lambda t: t[:-1], id="one character shorter"),
    ],
)
def test_non_canonical_shapes_are_refused(mangle: Callable[[str], str]) -> None:
    token = make_token(SECRET, TokenKind.REPLY, 1, 2)
    with pytest.raises(TokenError):
        read_token((SECRET,), TokenKind.REPLY, mangle(token))
