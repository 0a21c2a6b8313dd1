"""Benchmark: the per-call cost of pure stages on typical and on hostile input.

These timings used to be wall-clock asserts inside functional tests (``split_reply`` under
5 ms, ``compose_digest`` under 15 ms, the hostile-input checks under 1-2 s), which flake on
a loaded machine and say nothing about a regression on a fast one. Here each stage runs on
the same inputs those tests use, next to a baseline measured in the same run on the same
bytes, and the ratio is what to compare between runs:

- ``split_reply`` on a 10 KB reply with 90 quoted lines — baseline: one pass over its
  lines (``splitlines`` and ``join``);
- ``compose_digest`` with 10 items — baseline: the bare render of its own text and HTML
  templates with the same view (what ``bench/digest.py`` calls the bare render);
- ``check_shape`` on the MIME bombs (100,000 parts; 1,000 nesting levels) — baseline: one
  ``bytes.count`` scan of the same bytes (the check must stay linear: LIM-04);
- ``inspect_message`` on a reply with 300 References and on the largest encoded Subject
  the field cap lets through — baseline: the stdlib's own parse of the same bytes;
- ``classify`` + ``is_automatic`` on an ordinary post with 400 lines of quoted history
  (was a 0.2 ms test ceiling) — baseline: ``parse_message`` of the same bytes;
- the ``text/plain; format=flowed`` decoding of a 2 MB hostile paragraph (every line
  soft-broken and quoted 50 deep; was a 1 s ceiling) — baseline: decoding the same bytes
  and splitting them into lines.

The old ceilings are printed as bars (met / MISSED) with the absolute times, for the
record; the functional tests now assert only results (and bound work without a clock).

Run: ``.venv/bin/python bench/stages.py [--rounds N]``
"""

from __future__ import annotations

import argparse
import dataclasses
import email
import email.policy
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DOMAIN = "lists.bench.example"
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 3, 3, 7, 0, 12, tzinfo=UTC)


def per_call(fn: Callable[[], object], rounds: int, calls: int) -> float:
    """Median seconds per call over ``rounds`` rounds of ``calls`` calls (after a warm-up)."""
    fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


# ---------------------------------------------------------------- inputs


def typical_reply() -> str:
    old = "".join(
        f"> Paragraph {n}: the quarterly numbers look reasonable to me.\n" for n in range(90)
    )
    return (
        "Thanks Bob, that all makes sense. Two points below, then the rest.\n\n" * 40
        + "Alice\n\nOn Tue, 3 Mar 2026 at 10:12, Bob Smith <bob@corp.example> wrote:\n\n"
        + old
    )


def digest_inputs() -> tuple[Any, Any]:
    from digests.compose import DigestContext
    from digests.facts import DigestItem, DigestPlan
    from mailgate.addressing import digest_address, reply_address
    from mailgate.tokens import TokenKind, make_token

    kinds = ("replies-to-you", "question", "announcement", "lively", "new")
    base = DigestItem(
        kind="lively",
        discussion_id=500,
        list_slug="eng",
        list_name="Engineering",
        subject="Which Postgres version should the new cluster run?",
        excerpt=(
            "Ops would like 16 for the logical replication improvements; any objections "
            "from the data team before we freeze the image on Friday?"
        )[:200],
        authors=("Dee Park", "Eli Ross", "Farah Haddad"),
        replies=7,
        participants=3,
        departments=2,
        reason="bench",
    )
    items = tuple(
        dataclasses.replace(base, kind=kinds[n % 5], discussion_id=500 + n) for n in range(10)
    )
    plan = DigestPlan(person_id=7, local_date=date(2026, 3, 3), items=items, others=6, left_out=())
    ctx = DigestContext(
        domain=DOMAIN,
        member_name="Ana Lima",
        member_address="ana.lima@corp.example",
        local_date=plan.local_date,
        digest_id=42,
        digest_reply_address=digest_address(make_token(SECRET, TokenKind.DIGEST, 7, 42), DOMAIN),
        item_reply_addresses=tuple(
            reply_address(make_token(SECRET, TokenKind.REPLY, 7, i.discussion_id), DOMAIN)
            for i in items
        ),
        unsubscribe_url=f"https://{DOMAIN}/u/digest/aedwi25dss2goktqngkygmgndg",
        settings_address=f"eng-request@{DOMAIN}",
    )
    return plan, ctx


def many_parts(n: int) -> bytes:
    parts = b"".join(b"--p\r\n\r\n%d\r\n" % i for i in range(n))
    return (
        b"From: alice@corp.example\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + parts + b"--p--\r\n"
    )


def nested(depth: int) -> bytes:
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    return b"From: alice@corp.example\r\nSubject: nesting\r\n" + head + b"\r\ndeep\r\n"


def plain(subject: str, headers: list[str]) -> bytes:
    lines = [
        "From: Alice Example <alice@corp.example>",
        f"To: eng@{DOMAIN}",
        f"Subject: {subject}",
        "Message-ID: <bench@corp.example>",
        *headers,
        "Content-Type: text/plain; charset=UTF-8",
    ]
    return ("\r\n".join(lines) + "\r\n\r\nThe numbers are in the shared folder.\r\n").encode()


def many_references(count: int) -> bytes:
    junk = [f"<junk-{i:05d}.{'x' * 20}@evil.example>" for i in range(count)]
    return plain(
        "Re: Quarterly numbers",
        [
            "In-Reply-To: <root-5k@corp.example>",
            "References: " + "\r\n ".join(["<root-5k@corp.example>", *junk]),
        ],
    )


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    from digests import compose
    from mailgate.bodies import split_reply
    from mailgate.reading import inspect_message
    from mailgate.smtp import Limits, check_shape

    rounds = args.rounds
    rows: list[tuple[str, float, str, float, float]] = []

    reply = typical_reply()
    rows.append(
        (
            "split_reply, 10 KB reply",
            per_call(lambda: split_reply(reply), rounds, 200),
            "one pass over its lines",
            per_call(lambda: "\n".join(reply.splitlines()), rounds, 200),
            0.005,
        )
    )

    plan, ctx = digest_inputs()
    view = compose._view(plan, ctx, compose.MAX_EXCERPT, len(plan.items))
    templates = compose._templates()

    def bare_render() -> None:
        templates.text.render(view)
        templates.html.render(view)

    rows.append(
        (
            "compose_digest, 10 items",
            per_call(lambda: compose.compose_digest(plan, ctx, now=NOW), rounds, 20),
            "bare render of its templates",
            per_call(bare_render, rounds, 20),
            0.015,
        )
    )

    limits = Limits()
    for label, raw in (
        ("check_shape, 100k-part bomb", many_parts(100_000)),
        ("check_shape, 1000-level nesting", nested(1_000)),
    ):
        rows.append(
            (
                f"{label} ({len(raw) // 1024} KB)",
                per_call(partial(check_shape, raw, limits), rounds, 3),
                "one bytes.count scan",
                per_call(partial(raw.count, b"\n"), rounds, 3),
                2.0,
            )
        )

    def stdlib_parse(raw: bytes) -> Callable[[], object]:
        return lambda: email.message_from_bytes(raw, policy=email.policy.default).items()

    for label, raw in (
        ("inspect_message, 300 References", many_references(300)),
        (
            "inspect_message, 15 KB encoded Subject",
            plain(" ".join(["=?utf-8?q?a?="] * 1_100), []),
        ),
    ):
        assert check_shape(raw, limits) is None, f"{label}: no longer within the caps"
        rows.append(
            (
                label,
                per_call(partial(inspect_message, raw, domain=DOMAIN), rounds, 5),
                "stdlib parse of the same bytes",
                per_call(stdlib_parse(raw), rounds, 5),
                1.0,
            )
        )

    from mailgate.classify import OurAddresses, classify, is_automatic
    from mailgate.parse import parse_message

    ours = OurAddresses(domain=DOMAIN, list_ids=frozenset(), loop_marker=f"mailgate@{DOMAIN}")
    history = "".join("> quoted history line\r\n" for _ in range(400))
    post = plain("Re: Q3 roadmap review", []).replace(
        b"folder.\r\n", b"folder.\r\n" + history.encode()
    )
    msg = parse_message(post)

    def classified() -> None:
        classify(msg, mail_from="alice@corp.example", ours=ours)
        is_automatic(msg, mail_from="alice@corp.example")

    rows.append(
        (
            "classify + is_automatic, a post",
            per_call(classified, rounds, 500),
            "parse_message of the same bytes",
            per_call(partial(parse_message, post), rounds, 500),
            0.0002,
        )
    )

    flowed = ((">" * 50 + " word \n") * 35_000).encode()
    flowed_raw = (
        b"From: alice@corp.example\r\nSubject: flowed\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + flowed
    )
    rows.append(
        (
            f"format=flowed, hostile {len(flowed) / 1e6:.0f} MB",
            per_call(lambda: parse_message(flowed_raw).text_plain, rounds, 1),
            "decode + splitlines",
            per_call(lambda: flowed_raw.decode().splitlines(), rounds, 1),
            1.0,
        )
    )

    width = max(len(r[0]) for r in rows)
    print(f"per call, median of {rounds} rounds (ratio = stage / same-run baseline)")
    for label, took, base_label, base, bar in rows:
        print(
            f"  {label:<{width}} : {took * 1e3:9.3f} ms   ratio {took / base:8.2f}"
            f"  vs {base_label} {base * 1e3:.3f} ms"
            f"  (old test ceiling {bar * 1e3:g} ms: {'met' if took < bar else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
