"""Golden corpus: real-looking client mail → classification and new text (TEST-09, FMT-08).

Each ``tests/fixtures/mail/<client>-<case>.eml`` is written the way that client formats mail
(headers, MIME structure, transfer encodings, attribution lines, signatures, footers), and
``expected.toml`` beside it says what :func:`mailgate.reading.inspect_message` must make
of it: the class, the author's new text (exact), phrases that must end up in what was cut,
and the recipients a bounce reports. The manifest's header comment states the text rules.

The other fixture families in that folder (``dsn-``, ``autoreply-``, ``bodies-``,
``auth-``) belong to their own stage tests and are not listed here.
"""

from __future__ import annotations

import email
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

inspection = pytest.importorskip("mailgate.reading")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "mail"
MANIFEST: dict[str, dict[str, Any]] = tomllib.loads(
    (FIXTURES / "expected.toml").read_text(encoding="utf-8")
)["files"]
DOMAIN = "lists.corp.example"

# File-name prefixes (the client part of <client>-<case>.eml) that this corpus owns.
PREFIXES = frozenset(
    {
        "applemail", "becky", "evolution", "exchange", "fastmail", "forged", "foxmail", "gmail",
        "googlegroups", "ipad", "iphone", "mailgate", "mailman", "mailx", "mutt", "notes",
        "outlook", "outlook2010", "owa", "postfix", "protonmail", "roundcube", "samsung",
        "thunderbird", "yahoo",
    }
)  # fmt: skip
CLASSES = frozenset(
    {
        "ok", "auto_reply", "bounce", "mailing_list", "loop", "command",
        "reject-empty", "reject-no-sender", "reject-invalid",
    }
)  # fmt: skip
NAMES = sorted(MANIFEST)


def _raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _as_text(value: object) -> str:
    """``elided`` as one string, whether the stage returns a string or a list of cut blocks."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable):
        return "\n".join(_as_text(v) for v in value)
    return str(value)


def _addresses(values: object) -> set[str]:
    """Bounced recipients as lowercase addresses (plain strings or objects with ``.address``)."""
    out: set[str] = set()
    for v in values or ():  # type: ignore[attr-defined]
        addr = v if isinstance(v, str) else getattr(v, "address", str(v))
        out.add(addr.strip().strip("<>").lower())
    return out


@pytest.mark.parametrize("name", NAMES)
def test_corpus_message(name: str) -> None:
    expected = MANIFEST[name]
    result = inspection.inspect_message(_raw(name), domain=DOMAIN)

    assert result["class"] == expected["class"], expected["note"]
    if "text" in expected:
        assert result["text"].replace("\r\n", "\n") == expected["text"], expected["note"]
    elided = _as_text(result["elided"]).replace("\r\n", "\n")
    for phrase in expected.get("elided_contains", []):
        assert phrase in elided, f"not elided: {phrase!r} ({expected['note']})"
    assert _addresses(result["bounced"]) == set(expected.get("bounced", [])), expected["note"]


def test_every_corpus_fixture_is_in_the_manifest() -> None:
    on_disk = {p.name for p in FIXTURES.glob("*.eml") if p.name.split("-", 1)[0] in PREFIXES}
    assert on_disk == set(MANIFEST)


def test_manifest_is_large_and_well_formed() -> None:
    assert len(MANIFEST) >= 75
    for name, entry in MANIFEST.items():
        assert name.split("-", 1)[0] in PREFIXES, name
        assert entry["class"] in CLASSES, name
        assert entry["note"], name
        text = entry.get("text")
        if text is not None:
            # The manifest itself must follow the normalisation rules it states.
            assert all(line == line.rstrip() for line in text.split("\n")), name
            assert "\n\n\n" not in text and text == text.strip("\n"), name
        if entry["class"] == "bounce":
            assert entry.get("bounced"), name
        if entry["class"] == "reject-empty":
            assert text == "", name


@pytest.mark.parametrize("name", NAMES)
def test_fixture_parses_and_is_sane(name: str) -> None:
    raw = _raw(name)
    assert 1024 <= len(raw) <= 20 * 1024
    assert b"\r\n" not in raw  # the corpus uses LF line ends throughout
    assert max(len(line) for line in raw.split(b"\n")) <= 998  # RFC 5322 §2.1.1
    msg = email.message_from_bytes(raw)
    assert msg["To"]
    for part in msg.walk():
        if not part.is_multipart():
            part.get_payload(decode=True)
    # References, when present, hold well-formed message ids.
    refs = msg.get("References", "")
    if refs:
        assert re.search(r"<[^<>\s]+@[^<>\s]+>", refs)
