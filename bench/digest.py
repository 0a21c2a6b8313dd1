"""Benchmark: every member's daily digest, built and sent, over a month of activity.

Data (generated, not timed): 10,000 members (``--members``) in 10 departments and 20
timezones from UTC−12 to UTC+14, imported with ``directory.import_members``; 30 lists
(company- and members-only, two announce-only) with each member on 3–8 of them, mostly by
digest; 3,000 discussions and 20,000 posts of 5–50 words over 30 days (reply chains among
a cast that crosses departments; weekends quiet, the last day busy), a few hundred mutes,
and yesterday's digest row for most members so their window is one day. Posts and
discussions go in with bulk Core inserts, not through SMTP.

1. One process (a warmed-up subprocess, so its memory is its own): ``send_digests`` over
   all members in batches of 200 (``BATCH``) for "today" — the due list is every member
   with their local date at the end of the month, passed explicitly since no single
   instant is past 08:00 everywhere — with a relay that keeps nothing: claim → windows →
   gather → plan → compose → mark. Members per second, with the time split by stage.
2. Two warmed-up worker processes on the same database, each taking half the batches,
   hand the digests to an SMTP sink on 127.0.0.1 in its own process (Postfix
   ``smtp-sink`` when installed, else a no-op aiosmtpd server) over one connection per
   batch. The aim: all 10,000 built and handed to the relay in under 30 seconds. After
   each run every digest row must be ``sent`` or ``empty`` and the sink must count one
   message per sent digest.
3. Baseline, same run: the bare jinja2 render of the digest's text and HTML templates
   (``digests.compose``'s own template objects) with one fixed 10-item context, 10,000
   times.
4. Peak memory: each digest process's peak RSS (``VmHWM``), read at its end.

Run: ``.venv/bin/python bench/digest.py [--members N] [--database-url URL] [--sink KIND]``
(default SQLite in a temp dir; PostgreSQL with e.g.
``--database-url postgresql+psycopg://postgres@127.0.0.1/test`` — it creates and drops a
scratch database).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.fanout import (  # noqa: E402
    Sink,
    TimedRelay,
    drive_workers,
    pick_sink,
    prepare_database,
    timed,
)

DOMAIN = "lists.bench.example"
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
BASE_URL = "https://mg.corp.example"
NOW = datetime(2026, 3, 31, 16, 0, tzinfo=UTC)  # "today": the end of the month
DAYS = 30
AIM_SECONDS = 30.0
ANNOUNCE_LISTS = ("announce", "leadership")

DEPARTMENTS = [  # (name, list slug, share of the company)
    ("Engineering", "eng", 30),
    ("Sales", "sales", 15),
    ("Support", "support", 14),
    ("Marketing", "marketing", 8),
    ("Product", "product", 8),
    ("Design", "design", 5),
    ("Finance", "finance", 6),
    ("People", "people", 5),
    ("Legal", "legal", 3),
    ("Operations", "ops", 6),
]
PRIVATE_DEPARTMENTS = {"finance", "people", "legal"}
TOPICS = [  # (slug, name, visibility, popularity)
    ("random", "Random", "company", 10),
    ("incidents", "Incidents", "company", 6),
    ("launches", "Launches", "company", 6),
    ("hiring", "Hiring", "members", 3),
    ("security", "Security", "members", 3),
    ("data", "Data and analytics", "company", 4),
    ("mobile", "Mobile apps", "company", 3),
    ("web", "Web platform", "company", 3),
    ("infra", "Infrastructure", "company", 4),
    ("customers", "Customer stories", "company", 5),
    ("pricing", "Pricing council", "members", 2),
    ("events", "Events", "company", 4),
    ("wellbeing", "Wellbeing", "company", 3),
    ("books", "Book club", "company", 2),
    ("devtools", "Developer tools", "company", 3),
    ("office-berlin", "Berlin office", "members", 2),
    ("office-nyc", "New York office", "members", 2),
    ("office-tokyo", "Tokyo office", "members", 1),
]
ZONES = [  # (IANA name, share): offices plus remote staff, UTC−12 to UTC+14
    ("America/Los_Angeles", 13),
    ("America/Denver", 3),
    ("America/Chicago", 6),
    ("America/New_York", 15),
    ("America/Sao_Paulo", 5),
    ("Europe/London", 10),
    ("Europe/Berlin", 14),
    ("Europe/Helsinki", 3),
    ("Africa/Lagos", 2),
    ("Asia/Dubai", 2),
    ("Asia/Kolkata", 9),
    ("Asia/Kathmandu", 1),
    ("Asia/Singapore", 5),
    ("Asia/Tokyo", 5),
    ("Australia/Sydney", 4),
    ("Pacific/Auckland", 2),
    ("Pacific/Honolulu", 1),
    ("Pacific/Kiritimati", 1),
    ("Pacific/Pago_Pago", 1),
    ("Etc/GMT+12", 1),
]
FIRST = (
    "Ana Bo Cy Dana Eli Fatima Gus Hana Ivan Jo Kai Lena Mo Nia Omar Pia Quinn Ravi Sara "
    "Tomas Uma Vik Wen Xia Yusuf Zoe Amara Bjorn Chen Diego Emeka Freya Goran Hiro Ines "
    "Jonas Kemal Lucia Mateo Noor Oskar Priya Rosa Sven Tariq Ulla Vera Wim Yara Zain"
).split()
LAST = (
    "Garcia Smith Müller Tanaka Okafor Rossi Novak Silva Kim Nguyen Cohen Dubois Jensen "
    "Kowalski Larsen Mendes Nakamura Olsen Patel Quist Reyes Schmidt Torres Varga Wong "
    "Yilmaz Andersen Brown Costa Diaz Eriksen Fischer Gupta Hansen Ito Johansson Khan"
).split()
WORDS = (
    "the we should ship this next week after review and then measure latency again because "
    "customers asked about pricing for the enterprise plan so let us align with sales on a "
    "rollout date I think the migration is mostly done but the cache warm-up still takes "
    "twenty minutes on staging which blocks the release train can someone from support "
    "confirm whether tickets went down since Tuesday our onboarding flow drops half of new "
    "users at the second step design has a proposal with fewer fields finance needs the "
    "budget numbers by Friday hiring for two backend roles is open please share the posting "
    "the incident yesterday was caused by an expired certificate on the edge proxy we added "
    "an alert and a runbook thanks everyone for jumping in so quickly"
).split()
NOUNS = (
    "roadmap budget launch migration incident dashboard pricing onboarding offsite release "
    "hiring plan survey API cache search billing report retro policy benefits audit"
).split()
QUALIFIERS = (
    "Q2 update draft proposal follow-up question review timeline checklist for Friday "
    "feedback wanted next steps numbers rollout"
).split()


# ---------------------------------------------------------------- generated activity


def sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choices(WORDS, k=words))
    return text[0].upper() + text[1:] + "."


def subject(rng: random.Random) -> str:
    noun = rng.choice(NOUNS)
    return f"{noun[0].upper()}{noun[1:]} {rng.choice(QUALIFIERS)} {rng.choice(QUALIFIERS)}"


def weighted_sample(
    rng: random.Random, items: Sequence[str], weights: Sequence[float], k: int
) -> list[str]:
    """``k`` distinct items, each drawn with its weight."""
    chosen: list[str] = []
    while len(chosen) < k:
        pick = rng.choices(items, weights)[0]
        if pick not in chosen:
            chosen.append(pick)
    return chosen


def catalogue() -> list[tuple[str, str, str, str, bool]]:
    """(slug, name, visibility, posting, mandatory) of the 30 lists."""
    lists = [
        ("announce", "Company announcements", "company", "announce", True),
        ("leadership", "From the leadership team", "company", "announce", False),
    ]
    lists += [
        (slug, name, "members" if slug in PRIVATE_DEPARTMENTS else "company", "members", False)
        for name, slug, _ in DEPARTMENTS
    ]
    lists += [(slug, name, vis, "members", False) for slug, name, vis, _ in TOPICS]
    return lists


def people(rng: random.Random, members: int) -> list[Any]:
    """Import rows for everyone, on announce by digest."""
    from mailgate.directory import ImportRow

    zones, zone_weights = zip(*ZONES, strict=True)
    names, shares = [d[0] for d in DEPARTMENTS], [d[2] for d in DEPARTMENTS]
    rows = []
    for i in range(members):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        rows.append(
            ImportRow(
                line=i + 2,
                email=f"{first}.{last}.{i}@corp.example".lower().replace("ü", "u"),
                name=f"{first} {last}",
                timezone=rng.choices(zones, zone_weights)[0],
                department=rng.choices(names, shares)[0],
                delivery="digest",
            )
        )
    return rows


def memberships(
    rng: random.Random, departments: dict[int, str]
) -> tuple[dict[str, list[int]], list[tuple[str, int, str]]]:
    """Members per list, and (slug, person id, delivery) beyond announce: 3-8 lists each
    in all — announce, their department's, and more (leadership is popular, other
    departments' lists less so, topics by popularity)."""
    slug_of = {d[0]: d[1] for d in DEPARTMENTS}
    optional = ["leadership"] + [d[1] for d in DEPARTMENTS] + [t[0] for t in TOPICS]
    weights = [12.0] + [1.5] * len(DEPARTMENTS) + [float(t[3]) for t in TOPICS]
    members: dict[str, list[int]] = defaultdict(list)
    members["announce"] = list(departments)
    rows = []
    for pid, department in departments.items():
        own = slug_of[department]
        others = [(s, w) for s, w in zip(optional, weights, strict=True) if s != own]
        extra = weighted_sample(
            rng, [s for s, _ in others], [w for _, w in others], rng.randint(1, 6)
        )
        for slug in [own, *extra]:
            draw = rng.random()
            delivery = "none" if draw > 0.97 else "every" if draw > 0.8 else "digest"
            members[slug].append(pid)
            rows.append((slug, pid, delivery))
    return members, rows


def activity(
    rng: random.Random, members: dict[str, list[int]], n_discussions: int, n_posts: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Discussions and posts over the month (list slugs in ``list_id``, for the caller to
    map); explicit ids so a reply can point at its parent. Announce-only lists get a post
    or two a day from their owners (the first three members); the other lists' share
    grows with the square root of their size; weekends are quiet and the last day busy."""
    lists = [slug for slug, *_ in catalogue()]
    weights = [len(members[s]) ** 0.5 * (0.15 if s in ANNOUNCE_LISTS else 1) for s in lists]
    day_weights = []
    for day in range(DAYS):  # day DAYS-1 is the last 24 hours before NOW
        weekend = (NOW - timedelta(days=DAYS - day)).weekday() >= 5
        day_weights.append(3.0 if day == DAYS - 1 else 0.25 if weekend else 1.0)
    chosen = [rng.choices(lists, weights)[0] for _ in range(n_discussions)]
    # Announcements get a reply or two from the owners; discussions are heavy-tailed.
    sizes = [
        rng.randint(1, 3)
        if s in ANNOUNCE_LISTS
        else max(1, min(50, int(rng.lognormvariate(1.3, 0.95))))
        for s in chosen
    ]
    free = [i for i, s in enumerate(chosen) if s not in ANNOUNCE_LISTS]
    total = sum(sizes)
    while total != n_posts:  # hit the total by growing or shrinking random discussions
        i = rng.choice(free)
        size = min(50, max(1, sizes[i] + (1 if total < n_posts else -1)))
        total += size - sizes[i]
        sizes[i] = size

    discussions: list[dict[str, Any]] = []
    posts: list[dict[str, Any]] = []
    horizon = NOW - timedelta(minutes=1)
    for did, (slug, size) in enumerate(zip(chosen, sizes, strict=True), start=1):
        day = rng.choices(range(DAYS), day_weights)[0]
        started = NOW - timedelta(days=DAYS - day) + timedelta(seconds=rng.uniform(0, 86_340))
        room = (horizon - started).total_seconds()
        pool = members[slug][:3] if slug in ANNOUNCE_LISTS else members[slug]
        # A cast of people, from whichever departments are on the list, reply to each other.
        cast = rng.sample(pool, min(len(pool), max(2, int(size**0.7) + 1)))
        title = subject(rng)
        times = [started]
        for _ in range(size - 1):
            # Replies come hours after the start, some days later; none after "now".
            offset = rng.expovariate(1 / (8 * 3600))
            times.append(
                started + timedelta(seconds=offset if offset < room else rng.uniform(0, room))
            )
        times.sort()
        ids: list[int] = []
        for n, at in enumerate(times):
            post_id = len(posts) + 1
            parent = None
            if ids:
                parent = ids[-1] if rng.random() < 0.7 else rng.choice(ids)
            message_id = f"{post_id}.{did}@corp.example"
            words = _split_words(rng, rng.randint(5, 50), rng.randint(1, 3))
            posts.append(
                {
                    "id": post_id,
                    "discussion_id": did,
                    "list_id": slug,
                    "author_id": cast[0] if n == 0 else rng.choice(cast),
                    "parent_id": parent,
                    "message_id": message_id,
                    "message_key": hashlib.sha256(message_id.encode()).hexdigest(),
                    "subject": title if n == 0 else f"Re: {title}",
                    "text": " ".join(sentence(rng, w) for w in words),
                    "elided": "",
                    "created_at": at,
                }
            )
            ids.append(post_id)
        discussions.append(
            {
                "id": did,
                "list_id": slug,
                "subject": title,
                "started_by_id": cast[0],
                "created_at": started,
                "last_post_at": times[-1],
                "closed": False,
            }
        )
    return discussions, posts


def generate(factory: Any, n_members: int, seed: int = 42) -> dict[str, Any]:
    """Write a month of activity; returns counts and the (person id, local date) due list."""
    from sqlalchemy import func, insert, select, text, update

    from mailgate import directory
    from mailgate.db import unit_of_work
    from mailgate.models import (
        Address,
        Digest,
        Discussion,
        MailingList,
        Membership,
        Mute,
        Person,
        Post,
        Role,
    )

    rng = random.Random(seed)
    lists = catalogue()
    rows = people(rng, n_members)
    with unit_of_work(factory) as session:
        for slug, name, visibility, posting, mandatory in lists:
            directory.create_list(
                session,
                "bench",
                slug,
                name=name,
                visibility=visibility,
                posting=posting,
                mandatory=mandatory,
            )
        session.flush()
        # Everyone is on announce by digest, through the real importer.
        directory.import_members(session, "bench", "announce", rows)
    with factory() as session:
        list_ids = dict(session.execute(select(MailingList.slug, MailingList.id)).all())
        by_email = dict(session.execute(select(Address.email, Address.person_id)).all())
    person_ids = [by_email[row.email] for row in rows]
    zone_of = {pid: row.timezone for pid, row in zip(person_ids, rows, strict=True)}
    members, joined = memberships(
        rng, {pid: row.department for pid, row in zip(person_ids, rows, strict=True)}
    )
    discussions, posts = activity(
        rng, members, 3000 * n_members // 10_000, 20_000 * n_members // 10_000
    )
    for row in (*discussions, *posts):
        row["list_id"] = list_ids[row["list_id"]]

    # A few hundred mutes, by members of the list, of discussions active on the last day.
    last_day = NOW - timedelta(days=1)
    slug_of = {v: k for k, v in list_ids.items()}
    recent = [d for d in discussions if d["last_post_at"] > last_day]
    mutes = set()
    for _ in range(n_members // 30):
        muted = rng.choice(recent)
        mutes.add((muted["id"], rng.choice(members[slug_of[muted["list_id"]]])))
    # Yesterday's digest for 90% of members, so most windows start a day ago.
    previous = [
        {
            "person_id": pid,
            "local_date": last_day.astimezone(ZoneInfo(zone_of[pid])).date().isoformat(),
            "status": "sent",
            "items": [],
            "created_at": last_day,
            "sent_at": last_day,
        }
        for pid in person_ids
        if rng.random() < 0.9
    ]
    stamp = NOW - timedelta(days=DAYS + 10)
    with unit_of_work(factory) as session:
        session.execute(
            insert(Membership),
            [
                {
                    "list_id": list_ids[slug],
                    "person_id": pid,
                    "role": Role.MEMBER,
                    "delivery": delivery,
                    "created_at": stamp,
                }
                for slug, pid, delivery in joined
            ],
        )
        for slug, pids in members.items():  # the first three members own each list
            session.execute(
                update(Membership)
                .where(Membership.list_id == list_ids[slug], Membership.person_id.in_(pids[:3]))
                .values(role=Role.OWNER)
            )
        session.execute(insert(Discussion), discussions)
        session.execute(insert(Post), posts)
        session.execute(
            insert(Mute),
            [{"discussion_id": d, "person_id": p, "created_at": last_day} for d, p in mutes],
        )
        session.execute(insert(Digest), previous)
        if session.get_bind().dialect.name == "postgresql":
            for table in ("discussions", "posts"):  # explicit ids: move the sequences on
                session.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
    with factory() as session:
        last_digest = int(session.scalar(select(func.max(Digest.id))) or 0)
        persons = int(session.scalar(select(func.count()).select_from(Person)) or 0)
    return {
        "members": persons,
        "lists": len(lists),
        "memberships": len(joined) + n_members,
        "discussions": len(discussions),
        "posts": len(posts),
        "posts_last_day": sum(1 for p in posts if p["created_at"] > last_day),
        "active_last_day": len(recent),
        "mutes": len(mutes),
        "zones": len(set(zone_of.values())),
        "last_digest_id": last_digest,
        "due": [(pid, NOW.astimezone(ZoneInfo(zone_of[pid])).date()) for pid in person_ids],
    }


def _split_words(rng: random.Random, total: int, sentences: int) -> list[int]:
    """``total`` words in up to ``sentences`` sentences of at least 3 words."""
    sentences = max(1, min(sentences, total // 3))
    cuts = sorted(rng.sample(range(1, total), sentences - 1)) if sentences > 1 else []
    bounds = [0, *cuts, total]
    return [max(1, b - a) for a, b in zip(bounds, bounds[1:], strict=False)]


# ---------------------------------------------------------------- relays


class NullRelay:
    """A relay that accepts everything and keeps nothing (mailgate.relay.Relay)."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    @contextmanager
    def open(self) -> Iterator[NullRelay]:
        yield self

    def send(self, mail_from: str, recipients: Sequence[str], message: bytes) -> Any:
        from mailgate.relay import SendResult

        self.messages += 1
        self.bytes += len(message)
        return SendResult(accepted=tuple(recipients), permanent={}, temporary={})


# ---------------------------------------------------------------- a digest worker process


def instrument(phases: dict[str, float]) -> None:
    """Time the stages ``send_digests`` calls, by wrapping them where it looks them up."""
    from digests import sending

    for name in ("claim_digests", "windows", "gather", "plan_digest", "compose_for"):
        setattr(sending, name, timed(phases, name, getattr(sending, name)))


def peak_rss_kb() -> int:
    """This process's peak RSS. VmHWM rather than getrusage's ru_maxrss: on Linux a
    spawned child's ru_maxrss starts at its parent's peak (kept across exec), which here
    is the data generator's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def digest_worker(url: str, relay_url: str) -> None:
    """A worker process (subprocess): batches as JSON on stdin, warm up, ``ready``; on
    ``go`` run ``send_digests`` over each batch and print the totals as JSON."""
    from sqlalchemy import text

    from digests import compose
    from digests.sending import DigestMail, send_digests
    from mailgate.db import make_engine, make_sessionmaker
    from worker.mailer import SmtpMailer

    batches = [
        [(int(pid), date.fromisoformat(day)) for pid, day in batch]
        for batch in json.loads(sys.stdin.readline())
    ]
    factory = make_sessionmaker(make_engine(url))
    mail = DigestMail(domain=DOMAIN, secret=SECRET, base_url=BASE_URL)
    inner: Any = NullRelay() if relay_url == "null" else SmtpMailer(relay_url)
    phases: dict[str, float] = {}
    instrument(phases)
    relay = TimedRelay(inner, phases)
    # Warm up as a long-running worker would be: imports, templates, a pooled connection.
    compose._templates()
    with factory() as session:
        session.execute(text("SELECT 1"))
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    totals = {"sent": 0, "empty": 0, "deferred": 0}
    start = time.perf_counter()
    for batch in batches:
        report = send_digests(factory, batch, mail=mail, relay=relay, now=NOW)
        totals["sent"] += report.sent
        totals["empty"] += report.empty
        totals["deferred"] += report.deferred
    elapsed = time.perf_counter() - start
    result = {
        **totals,
        "seconds": elapsed,
        "phases": phases,
        "max_rss_kb": peak_rss_kb(),
        "bytes": getattr(inner, "bytes", 0),
        "messages": getattr(inner, "messages", 0),
    }
    print(json.dumps(result), flush=True)


def run_workers(
    url: str, relay_url: str, shares: list[list[list[Any]]]
) -> tuple[float, list[dict[str, Any]]]:
    """Seconds for one warmed-up worker process per share to send all its batches."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", "--database-url", url, "--relay", relay_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in shares
    ]
    elapsed, results = drive_workers(procs, shares)
    if any(r["deferred"] for r in results):
        raise RuntimeError(f"worker reports: {results}")
    return elapsed, results


def digest_rows(factory: Any, after_id: int) -> dict[str, int]:
    from sqlalchemy import func, select

    from mailgate.models import Digest

    with factory() as session:
        rows = session.execute(
            select(Digest.status, func.count()).where(Digest.id > after_id).group_by(Digest.status)
        ).all()
    return {str(status): int(n) for status, n in rows}


def items_per_digest(factory: Any, after_id: int) -> float:
    from sqlalchemy import select

    from mailgate.models import Digest

    with factory() as session:
        lists = session.scalars(
            select(Digest.items).where(Digest.id > after_id, Digest.status == "sent")
        ).all()
    return sum(len(x) for x in lists) / max(1, len(lists))


def reset_today(factory: Any, after_id: int) -> None:
    """Forget today's digests so the next run starts from the same state."""
    from sqlalchemy import delete

    from mailgate.db import unit_of_work
    from mailgate.models import Digest

    with unit_of_work(factory) as session:
        session.execute(delete(Digest).where(Digest.id > after_id))


def verify(rows: dict[str, int], members: int, sent: int, what: str) -> None:
    if set(rows) - {"sent", "empty"} or sum(rows.values()) != members or rows.get("sent") != sent:
        raise RuntimeError(f"{what}: digest rows {rows}, {sent} reported sent of {members}")


# ---------------------------------------------------------------- baseline


def bare_render(renders: int) -> tuple[float, int]:
    """Renders per second of the digest's text + HTML templates with one fixed 10-item
    context (the templates ``compose_digest`` uses), and that digest's full size."""
    from digests import compose
    from digests.facts import DigestItem, DigestPlan
    from mailgate.addressing import command_address, digest_address, reply_address
    from mailgate.tokens import TokenKind, make_token

    rng = random.Random(1)
    kinds = ["replies-to-you"] * 2 + ["announcement"] + ["lively"] * 5 + ["new"] * 2
    items = tuple(
        DigestItem(
            kind=kind,
            discussion_id=100 + n,
            list_slug="eng",
            list_name="Engineering",
            subject=subject(rng),
            excerpt=sentence(rng, 30)[:200],
            authors=("Ana Garcia", "Bo Smith", "Cy Tanaka", "Dana Okafor"),
            replies=7,
            participants=4,
            departments=3,
            reason="lively: 4 people from 3 departments",
        )
        for n, kind in enumerate(kinds)
    )
    plan = DigestPlan(person_id=1, local_date=NOW.date(), items=items, others=6, left_out=())
    ctx = compose.DigestContext(
        domain=DOMAIN,
        member_name="Ana Garcia",
        member_address="ana.garcia@corp.example",
        local_date=NOW.date(),
        digest_id=1,
        digest_reply_address=digest_address(make_token(SECRET, TokenKind.DIGEST, 1, 1), DOMAIN),
        item_reply_addresses=tuple(
            reply_address(make_token(SECRET, TokenKind.REPLY, 1, i.discussion_id), DOMAIN)
            for i in items
        ),
        unsubscribe_url=f"{BASE_URL}/u/{make_token(SECRET, TokenKind.UNSUBSCRIBE, 1, 1)}",
        settings_address=command_address("eng", DOMAIN),
    )
    size = len(compose.compose_digest(plan, ctx, now=NOW))
    view = compose._view(plan, ctx, compose.MAX_EXCERPT, len(items))
    templates = compose._templates()
    templates.text.render(view)
    templates.html.render(view)
    start = time.perf_counter()
    for _ in range(renders):
        templates.text.render(view)
        templates.html.render(view)
    return renders / (time.perf_counter() - start), size


# ---------------------------------------------------------------- main


def split(result: dict[str, Any]) -> str:
    """Where a worker's time went. With two processes on SQLite, claim and rest include
    waiting for the write lock the other holds."""
    phases = result["phases"]
    parts = ", ".join(
        f"{name} {phases[key]:.1f}"
        for name, key in (
            ("claim", "claim_digests"),
            ("windows", "windows"),
            ("gather", "gather"),
            ("plan", "plan_digest"),
            ("compose", "compose_for"),
            ("relay", "relay"),
        )
    )
    rest = result["seconds"] - sum(phases.values())
    return f"{parts}; rest (addresses, mark, commits) {rest:.1f}"


def batches_of(due: Sequence[tuple[int, date]], size: int) -> list[list[list[Any]]]:
    return [
        [[pid, day.isoformat()] for pid, day in due[i : i + size]] for i in range(0, len(due), size)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--database-url")
    parser.add_argument("--sink", choices=["auto", "smtp-sink", "aiosmtpd"], default="auto")
    parser.add_argument("--renders", type=int, default=10_000)
    # Internal: the worker processes this script starts.
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--relay")
    args = parser.parse_args()
    if args.worker:
        digest_worker(args.database_url, args.relay)
        return

    from digests.sending import BATCH
    from mailgate.db import make_engine, make_sessionmaker

    sink_kind = pick_sink(args.sink)
    load = os.getloadavg()[0]  # other work on the machine skews every figure below
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        url, cleanup = prepare_database(args.database_url, Path(tmp))
        engine = make_engine(url)
        factory = make_sessionmaker(engine)
        try:
            start = time.perf_counter()
            data = generate(factory, args.members)
            generated = time.perf_counter() - start
            due, base = data["due"], data["last_digest_id"]
            batches = batches_of(due, BATCH)

            one_elapsed, (one,) = run_workers(url, "null", [batches])
            one_rows = digest_rows(factory, base)
            verify(one_rows, len(due), one["sent"], "one process")
            if one["messages"] != one["sent"]:
                raise RuntimeError(f"null relay saw {one['messages']} of {one['sent']}")
            items = items_per_digest(factory, base)

            reset_today(factory, base)
            sink = Sink(sink_kind, Path(tmp))
            try:
                half = (len(batches) + 1) // 2
                two_elapsed, two = run_workers(url, sink.url, [batches[:half], batches[half:]])
                sent = sum(r["sent"] for r in two)
                received = sink.wait_for(sent)
            finally:
                sink.stop()
            two_rows = digest_rows(factory, base)
            verify(two_rows, len(due), sent, "two processes")
            if received != sent:
                raise RuntimeError(f"two processes: sink counted {received} of {sent} sent")

            bare, bare_size = bare_render(args.renders)
        finally:
            engine.dispose()
            if cleanup is not None:
                cleanup()

    kind = "PostgreSQL" if url.startswith("postgresql") else "SQLite (WAL, synchronous=FULL)"
    n = len(due)
    rate = n / one_elapsed
    print(f"digest benchmark on {kind}, sink: {sink_kind} (own process, 127.0.0.1)")
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} when the run started")
    print(
        f"a month of activity ({generated:.1f} s to generate): {data['members']:,} members in "
        f"{data['zones']} timezones, {data['lists']} lists, {data['memberships']:,} memberships,"
    )
    print(
        f"  {data['discussions']:,} discussions, {data['posts']:,} posts "
        f"({data['posts_last_day']:,} in the last day, {data['active_last_day']:,} discussions "
        f"active), {data['mutes']} mutes"
    )
    print(f"today's digests for all {n:,} members, batches of {BATCH}:")
    print(f"  bare jinja2 render (text+HTML) : {bare:8.0f} renders/s  (baseline, fixed 10 items)")
    print(
        f"  one process, no-op relay       : {rate:8.0f} members/s  ({one_elapsed:.1f} s; "
        f"{one['sent']:,} digests composed, {one['sent'] / one_elapsed:.0f}/s)"
    )
    print(f"  ratio one process / bare render: {rate / bare:8.2f}")
    print(f"    split (s): {split(one)}")
    verdict = "met" if two_elapsed < AIM_SECONDS else "MISSED"
    print(
        f"  two worker processes, SMTP sink: {two_elapsed:8.1f} s  "
        f"({n / two_elapsed:.0f} members/s; aim < {AIM_SECONDS:.0f} s: {verdict})"
    )
    print(f"  ratio two processes / one      : {one_elapsed / two_elapsed:8.2f}")
    for r in two:
        print(f"    a worker's split (s): {split(r)}")
    print(
        f"  checked: every row sent or empty; sink counted {received:,} = sent; "
        f"{one_rows.get('empty', 0):,} members had nothing worth reading"
    )
    print(
        f"  digest size {one['bytes'] / max(1, one['messages']) / 1024:.1f} KB average "
        f"(fixed 10-item one {bare_size / 1024:.1f} KB), {items:.1f} items per digest"
    )
    rss = [r["max_rss_kb"] / 1024 for r in two]
    print(
        f"  peak RSS: one process {one['max_rss_kb'] / 1024:.0f} MB; two processes "
        + " + ".join(f"{r:.0f}" for r in rss)
        + f" = {sum(rss):.0f} MB"
    )
    print(f"(benchmark took {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
