"""Header folding for fields we write as ASCII words (outbound, pure).

Input: a field name and its words (Message-IDs, URIs, DKIM tags). Output: the field as
``Name: word word …\r\n`` folded between words near 78 columns (RFC 5322 §2.2.3), never
inside a word, so ids and URIs stay whole. Fields with free text go through the
standard library's ``email.policy.SMTP`` instead, which also RFC 2047-encodes.
"""

from __future__ import annotations

from collections.abc import Sequence


def fold_words(name: str, words: Sequence[str], sep: str = " ") -> str:
    """Fold an ASCII field between words, near 78 columns (ids and URIs are never split)."""
    lines: list[str] = []
    line = f"{name}:"
    for i, word in enumerate(words):
        piece = word + (sep.rstrip() if i < len(words) - 1 else "")
        if len(line) + 1 + len(piece) > 78 and line != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + piece
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"
