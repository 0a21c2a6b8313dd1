"""Trace: the ``Received:`` field the gateway prepends to every stored message (SMTP-16).

Pure. Input: what the SMTP session knows (peer address, HELO name, TLS version and
cipher, whether it was ESMTP), our host name, a queue id and the time. Output: the header
field as bytes, and — for the one place that must ignore it (the idempotency key of a
message without a Message-ID) — the message without it.

RFC 5321 §4.4: every SMTP server that accepts a message for delivery or relaying adds a
trace field at the top. Ours names the peer's IP as we saw it, so an admin can tell which
relay handed over a message; the envelope recipients are deliberately left out ("for
<…>" is optional) because reply and VERP addresses carry tokens.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from datetime import datetime

MARK = b"(Mailgate)"  # in our own field only: how without_own_trace recognises it
_SAFE_HELO = re.compile(r"[^A-Za-z0-9.\-:\[\]_]")


@dataclass(frozen=True)
class SessionFacts:
    peer: str  # IP address as seen on the socket
    helo: str  # what the client said; untrusted
    esmtp: bool
    tls_version: str | None = None  # e.g. "TLSv1.3"
    tls_cipher: str | None = None


def received_field(facts: SessionFacts, *, by: str, queue_id: str, now: datetime) -> bytes:
    """``Received: from HELO ([IP]) by HOST (Mailgate) with ESMTPS id ID (TLS…); DATE``."""
    # The HELO is the client's word: keep it printable and short, so it can neither fold
    # nor inject a header (FMT-09).
    helo = _SAFE_HELO.sub("", facts.helo)[:255] or "unknown"
    peer = _SAFE_HELO.sub("", facts.peer)[:64] or "unknown"
    protocol = ("ESMTP" if facts.esmtp else "SMTP") + ("S" if facts.tls_version else "")
    lines = [
        f"Received: from {helo} ([{peer}])",
        f"\tby {by} (Mailgate) with {protocol} id {queue_id}",
    ]
    if facts.tls_version:
        lines.append(f"\t(version={facts.tls_version} cipher={facts.tls_cipher or 'unknown'})")
    lines[-1] += f"; {email.utils.format_datetime(now)}"
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")


# The first line of our own field, as received_field writes it: the HELO (no spaces or
# parentheses left after _SAFE_HELO) and the peer in "([…])".
_OWN_PEER_RE = re.compile(rb"Received: from [^\s()]+ \(\[([A-Za-z0-9.:_-]{1,64})\]\)\r?\n")


def own_trace_peer(raw: bytes) -> str | None:
    """The peer address our own trace field names — who handed us ``raw`` — or None when
    the message does not start with our field. The gateway prepends it to every message
    it stores, so nothing a sender writes can stand above it."""
    rest = without_own_trace(raw)
    if len(rest) == len(raw):
        return None
    match = _OWN_PEER_RE.match(raw, 0, len(raw) - len(rest))
    return match.group(1).decode("ascii") if match else None


def without_own_trace(raw: bytes) -> bytes:
    """``raw`` without the first header field if it is our own Received."""
    if not raw[:9].lower() == b"received:":
        return raw
    end = 0
    while True:
        newline = raw.find(b"\n", end)
        if newline < 0:
            return raw
        end = newline + 1
        if raw[end : end + 1] not in (b" ", b"\t"):
            break
    return raw[end:] if MARK in raw[:end] else raw
