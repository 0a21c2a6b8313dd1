"""Export (PRIV-04) and erasure (PRIV-05), end to end on a real database.

A member's data is built the way production builds it: mail through the real gateway and
the ingest service, copies through ``fan_out``, and the admin CLI. After ``people erase``
a generic search reads every text, JSON and bytes column of every table (MIME parts
decoded) for the member's addresses and name. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import hashlib
import json
import mailbox
import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import compat32
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, String, select, update

from mailgate.db import unit_of_work
from mailgate.delivery import fan_out, post_source
from mailgate.ingest import run_ingest
from mailgate.models import (
    AuditEntry,
    Base,
    BounceState,
    DeliveryRecord,
    DeliveryStatus,
    Digest,
    Discussion,
    Follow,
    Like,
    Mute,
    Person,
    Post,
    RawMessage,
    RawStatus,
)
from mailgate.privacy import COLUMN_POLICY, ERASED_ADDRESS, Scrubber, redact_tokens, senders_of
from mailgate.tokens import TokenKind, make_token
from tests.conftest import DOMAIN, SECRET

ALICE, ALICE_HOME, BOB = "alice@corp.example", "a.liddell@home.example", "bob@corp.example"
NAME = "Alice Liddell"
NOW = datetime(2025, 6, 3, 9, 0, tzinfo=UTC)  # the fixed clock of every mail and row here
TOKENISH = re.compile(r"[a-z2-7]{30,}")


# ---------------------------------------------------------------- the column map


def person_tables(metadata: MetaData) -> set[str]:
    """Tables that hold person data: they point at people or carry contact addresses."""
    contact = {"address", "email", "mail_from", "rcpt_to"}
    return {
        t.name
        for t in metadata.sorted_tables
        if t.name == "people"
        or any(fk.column.table.name == "people" for fk in t.foreign_keys)
        or contact & {c.name for c in t.columns}
    }


def unclassified(metadata: MetaData) -> list[str]:
    """Columns of person-data tables that the export map neither exports nor excludes."""
    missing = [f"{name} (table)" for name in sorted(person_tables(metadata) - COLUMN_POLICY.keys())]
    for name, policy in sorted(COLUMN_POLICY.items()):
        table = metadata.tables.get(name)
        columns = {c.name for c in table.columns} if table is not None else set()
        missing += [f"{name}.{c}" for c in sorted(columns - policy.columns)]
    return missing


def test_every_column_of_person_data_is_exported_or_excluded_with_a_reason() -> None:
    assert unclassified(Base.metadata) == []


def test_map_names_only_real_columns_once_and_reasons_are_given() -> None:
    for name, policy in COLUMN_POLICY.items():
        columns = {c.name for c in Base.metadata.tables[name].columns}
        assert policy.columns <= columns, (name, policy.columns - columns)
        excluded = set(policy.excluded)
        assert not policy.exported & excluded and not policy.exported & policy.not_personal
        assert not excluded & policy.not_personal
        assert all(len(reason) > 10 for reason in policy.excluded.values())


def test_a_new_personal_column_fails_the_map_check() -> None:
    metadata = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(metadata)
    metadata.tables["people"].append_column(Column("phone", String(40)))
    assert unclassified(metadata) == ["people.phone"]


# ---------------------------------------------------------------- scrubbing (pure)

SCRUB = Scrubber([ALICE, ALICE_HOME], NAME, "former member #7")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"mail {ALICE} please", f"mail {ERASED_ADDRESS} please"),
        ("ALICE@Corp.Example wrote", f"{ERASED_ADDRESS} wrote"),
        ("malice@corp.example is someone else", "malice@corp.example is someone else"),
        ("alice@corp.example.org is elsewhere", "alice@corp.example.org is elsewhere"),
        (f"end of sentence {ALICE}.", f"end of sentence {ERASED_ADDRESS}."),
        (f"{NAME} <{ALICE}> wrote:", f"former member #7 <{ERASED_ADDRESS}> wrote:"),
        (f"Thanks {NAME}!", f"Thanks {NAME}!"),  # someone else's words, no address: kept
        ("Alice Liddellson", "Alice Liddellson"),
    ],
)
def test_scrub_text(text: str, expected: str) -> None:
    assert SCRUB.text(text) == expected


def test_scrub_own_text_removes_the_name_without_an_address() -> None:
    assert SCRUB.text(f"Cheers,\n{NAME}", own=True) == "Cheers,\nformer member #7"


def raw_mail(headers: list[str], body: str) -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f'From: "{NAME}" <{ALICE}>', f'From: "former member #7" <{ERASED_ADDRESS}>'),
        (f"From: {NAME} <{ALICE}>", f'From: "former member #7" <{ERASED_ADDRESS}>'),
        (
            f"Cc: Bob <{BOB}>, {NAME}\r\n <{ALICE_HOME}>",
            f'Cc: Bob <{BOB}>, "former member #7" <{ERASED_ADDRESS}>',
        ),
        (f"Return-Path: <{ALICE}>", f"Return-Path: <{ERASED_ADDRESS}>"),
        (
            "DKIM-Signature: v=1; a=rsa-sha256; d=corp.example; i=alice@corp.example; s=s1",
            f"DKIM-Signature: v=1; a=rsa-sha256; d=corp.example; i={ERASED_ADDRESS}; s=s1",
        ),
        (
            "Received: from mx.corp.example by lists.corp.example for <alice@corp.example>",
            f"Received: from mx.corp.example by lists.corp.example for <{ERASED_ADDRESS}>",
        ),
    ],
)
def test_scrub_raw_headers(header: str, expected: str) -> None:
    raw = raw_mail([header, "Subject: hi"], "body\r\n")
    assert SCRUB.raw(raw) == raw_mail([expected, "Subject: hi"], "body\r\n")


def test_scrub_raw_reaches_quoted_printable_and_base64_parts() -> None:
    qp = "Agreed.\r\n\r\nOn Tue, Alice Liddell <alice@corp.exam=\r\nple> wrote:\r\n> plan\r\n"
    b64 = base64.encodebytes(b"Contact: alice@corp.example\n").decode().replace("\n", "\r\n")
    raw = raw_mail(
        [
            f"From: Bob <{BOB}>",
            'Content-Type: multipart/mixed; boundary="b1"',
            "MIME-Version: 1.0",
        ],
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: quoted-printable\r\n\r\n{qp}"
        "--b1\r\nContent-Type: text/plain; name=card.txt\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{b64}--b1--\r\n",
    )
    assert SCRUB.mentions_raw(raw)
    scrubbed = SCRUB.raw(raw)
    assert searchable(scrubbed).count("alice") == 0
    parts = [p.get_payload(decode=True) for p in message_from_bytes(scrubbed).walk()]
    assert b"On Tue, former member #7 <erased@invalid> wrote:" in parts[1]
    assert parts[2] == b"Contact: erased@invalid\n"
    assert SCRUB.raw(raw_mail([f"From: {BOB}"], "nothing here\r\n")) == raw_mail(
        [f"From: {BOB}"], "nothing here\r\n"
    )


def test_senders_and_token_redaction() -> None:
    raw = raw_mail([f"From: {NAME} <{ALICE}>", f"Sender: {ALICE_HOME}", f"To: {BOB}"], "x")
    assert senders_of(raw) == {ALICE, ALICE_HOME}
    token = make_token(SECRET, TokenKind.REPLY, 1, 2)
    assert redact_tokens(f"To: reply+{token}@{DOMAIN}") == f"To: reply+[redacted]@{DOMAIN}"
    assert redact_tokens({"a": [f"confirm+{token}@x".encode()]}) == {"a": [b"confirm+[redacted]@x"]}


# ---------------------------------------------------------------- a member with a history


def mail(
    *,
    sender: str = f"{NAME} <{ALICE}>",
    to: str = f"eng@{DOMAIN}",
    subject: str = "Launch plan",
    body: str = "Here is the plan.",
    message_id: str | None = None,
    headers: list[str] | None = None,
) -> bytes:
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate()}",
        f"Message-ID: <{message_id or email.utils.make_msgid(domain='corp.example').strip('<>')}>",
        "MIME-Version: 1.0",
        *(headers or ['Content-Type: text/plain; charset="UTF-8"']),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n") + "\r\n").encode()


BOB_REPLY_QP = (
    "Agreed =E2=80=94 let's ship on Thursday.\n\n"
    "On Tue, 3 Jun 2025 at 10:04, Alice Liddell <alice@corp.exam=\n"
    "ple> wrote:\n"
    "> Here is the plan.\n"
)


@pytest.fixture
def history(directory, gateway, session_factory, ingest_context):  # type: ignore[no-untyped-def]
    directory.list("eng", name="Engineering", visibility="members")
    directory.list("sales", name="Sales", visibility="company")
    directory.list("news", name="News", posting="announce")
    directory.member("eng", ALICE, name=NAME, department="Platform")
    directory.member("eng", BOB, name="Bob Stone", department="Sales")
    directory.grant(ALICE, "executive")
    directory.grant(ALICE, "poster", "news")
    from mailgate import directory as d

    with unit_of_work(session_factory) as s:
        d.add_address(s, "test", ALICE, ALICE_HOME)
    alice, bob = directory.person_id(ALICE), directory.person_id(BOB)

    ctx = dataclasses.replace(ingest_context, now=lambda: NOW)

    def deliver(raw: bytes, rcpt: str, mail_from: str) -> int:
        raw_id = gateway.submit(raw, rcpt, mail_from)
        run_ingest(session_factory, raw_id, ctx)
        return raw_id

    eng = f"eng@{DOMAIN}"
    deliver(mail(message_id="p1@corp.example"), eng, ALICE)
    with session_factory() as s:
        root = s.scalars(select(Post)).one()
    bob_reply = mail(
        sender=f"Bob Stone <{BOB}>",
        subject="Re: Launch plan",
        body=BOB_REPLY_QP,
        message_id="p2@corp.example",
        headers=[
            'Content-Type: text/plain; charset="UTF-8"',
            "Content-Transfer-Encoding: quoted-printable",
            f"Cc: {NAME} <{ALICE}>",
            "In-Reply-To: <p1@corp.example>",
        ],
    )
    deliver(bob_reply, eng, BOB)
    token = make_token(SECRET, TokenKind.REPLY, alice, root.discussion_id)
    deliver(
        mail(
            sender=f"Alice <{ALICE_HOME}>",
            to=f"Engineering <reply+{token}@{DOMAIN}>",
            subject="Re: Launch plan",
            body="Thursday works. Cheers, Alice Liddell",
            message_id="p3@home.example",
        ),
        f"reply+{token}@{DOMAIN}",
        ALICE_HOME,
    )
    deliver(mail(sender=f"Bob Stone <{BOB}>", subject="Offsite", body="Who is in?"), eng, BOB)
    deliver(mail(to=f"sales@{DOMAIN}", subject="Pricing?"), f"sales@{DOMAIN}", ALICE)
    deliver(
        mail(to=f"sales-request@{DOMAIN}", subject="subscribe", body="subscribe"),
        f"sales-request@{DOMAIN}",
        ALICE,
    )

    with unit_of_work(session_factory) as s:
        posts = s.scalars(select(Post).order_by(Post.id)).all()
        assert [p.author_id for p in posts] == [alice, bob, alice, bob], "fixture mail refused"
        for post in posts:
            fan_out(s, post.id)
        # One of Bob's copies to Alice went out; the other is still queued.
        s.execute(
            update(DeliveryRecord)
            .where(DeliveryRecord.person_id == alice, DeliveryRecord.post_id == posts[1].id)
            .values(status=DeliveryStatus.SENT, sent_at=NOW, attempts=1)
        )
        s.add(Like(post_id=posts[1].id, person_id=alice))
        s.add(Mute(discussion_id=posts[3].discussion_id, person_id=alice))
        s.add(Follow(discussion_id=posts[0].discussion_id, person_id=alice))
        s.add(Digest(person_id=alice, local_date="2025-06-03", status="sent", items=[1]))
        s.add(
            BounceState(
                person_id=alice,
                score=1.5,
                bounces=1,
                updated_at=NOW,
                last_diagnostic=f"smtp; 452 4.2.2 <{ALICE}>: Mailbox full",
            )
        )
    return {"alice": alice, "bob": bob, "posts": [p.id for p in posts]}


def searchable(value: Any) -> str:
    """A value as lowercase text, MIME parts decoded, for the everything-search."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        texts = [value.decode("latin-1")]
        for part in message_from_bytes(value, policy=compat32).walk():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                texts.append(payload.decode("utf-8", "replace"))
        return "\n".join(texts).lower()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False).lower()
    return str(value).lower()


def findings(session_factory, needles: list[str]) -> list[tuple[str, str, int, str]]:  # type: ignore[no-untyped-def]
    hits = []
    with session_factory() as s:
        for table in Base.metadata.sorted_tables:
            for row in s.execute(select(table)).mappings():
                for column in table.columns:
                    text = searchable(row[column.name])
                    hits += [(table.name, column.name, row["id"], n) for n in needles if n in text]
    return hits


def snapshot(session_factory) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        return {
            t.name: sorted(repr(tuple(r)) for r in s.execute(select(t)))
            for t in Base.metadata.sorted_tables
        }


NEEDLES = [ALICE, ALICE_HOME, NAME.lower()]


# ---------------------------------------------------------------- export


def test_export_has_every_section_the_sent_mail_and_no_secrets(  # type: ignore[no-untyped-def]
    history, run_cli, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    result = run_cli("people", "export", ALICE.upper(), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    json_path, mbox_path = out / f"{ALICE}.json", out / f"{ALICE}.mbox"
    assert f"wrote {json_path}" in result.stdout and "(4 messages)" in result.stdout
    assert json_path.stat().st_mode & 0o777 == 0o600
    doc = json.loads(json_path.read_text())

    assert doc["profile"]["name"] == NAME and doc["profile"]["department"] == "Platform"
    assert doc["preferences"]["timezone"] == "UTC"
    assert sorted(a["email"] for a in doc["addresses"]) == [ALICE_HOME, ALICE]
    assert [r["role"] for r in doc["site_roles"]] == ["executive"]
    assert [(m["list"], m["delivery"]) for m in doc["memberships"]] == [("eng", "every")]
    assert [a["list"] for a in doc["allowed_to_post"]] == ["news"]
    assert [p["text"] for p in doc["posts"]] == [
        "Here is the plan.",
        "Thursday works. Cheers, Alice Liddell",
    ]
    assert {"subject", "list", "created_at", "message_id", "elided"} <= doc["posts"][0].keys()
    assert [x["post_id"] for x in doc["likes"]] == [history["posts"][1]]
    assert len(doc["mutes"]) == len(doc["follows"]) == 1
    assert sorted(d["status"] for d in doc["deliveries"]) == ["pending", "sent"]
    assert doc["bounce_state"]["bounces"] == 1
    assert [(d["local_date"], d["status"]) for d in doc["digests"]] == [("2025-06-03", "sent")]
    assert sorted(n["reason"] for n in doc["notices"]) == ["confirm-command", "not-a-member"]
    assert all("context" not in n for n in doc["notices"])  # it holds the confirm token
    assert [p["action"] for p in doc["pending_actions"]] == ["subscribe"]
    assert {e["action"] for e in doc["audit"]} >= {"person.create", "member.add", "role.grant"}
    assert "posts.message_key" in doc["not_included"]
    # Every section shows exactly the columns the map exports.
    for section, table in [
        ("posts", "posts"),
        ("deliveries", "deliveries"),
        ("audit", "audit_log"),
    ]:
        shown = doc[section][0].keys() - {"list", "attachments"}
        assert shown == COLUMN_POLICY[table].exported, section

    box = mailbox.mbox(str(mbox_path))
    subjects = sorted(str(m["Subject"]) for m in box)
    assert subjects == ["Launch plan", "Pricing?", "Re: Launch plan", "subscribe"]
    assert {m.get_from().split()[0] for m in box} == {ALICE, ALICE_HOME}
    assert "p1@corp.example" in [str(m["Message-ID"]).strip("<>") for m in box]
    box.close()

    for path in (json_path, mbox_path):
        text = path.read_text(errors="replace")
        assert TOKENISH.findall(text) == [], path
        assert SECRET not in text, path
    # Her reply went to her own reply address: the token is a secret, so it is redacted.
    assert f"reply+[redacted]@{DOMAIN}" in mbox_path.read_text()


def test_export_json_to_stdout(history, run_cli, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    result = run_cli("people", "export", ALICE_HOME, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["format"] == "mailgate-export/1" and doc["profile"]["name"] == NAME
    assert list((tmp_path / "cwd").iterdir()) == []  # --json alone writes no files


# ---------------------------------------------------------------- erasure


def test_erase_needs_yes_and_changes_nothing_without_it(  # type: ignore[no-untyped-def]
    history, run_cli, session_factory
) -> None:
    before = snapshot(session_factory)
    result = run_cli("people", "erase", ALICE)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: nothing erased: run again with --yes to erase"
    assert "would erase" in result.stdout
    dry = json.loads(run_cli("people", "erase", ALICE, "--json").stdout)
    assert dry["applied"] is False
    expected = {
        "posts": 2,
        "addresses": 2,
        "deliveries_queued": 1,
        "deliveries_history_scrubbed": 1,
        "notices": 2,
        "raw_sent_scrubbed": 2,
        "raw_sent_emptied": 2,
    }
    assert {k: dry["counts"][k] for k in expected} == expected
    assert snapshot(session_factory) == before


@pytest.mark.parametrize("delete_posts", [False, True], ids=["anonymise", "delete-posts"])
def test_erase_leaves_no_trace_but_a_hashed_audit_row(  # type: ignore[no-untyped-def]
    history, run_cli, session_factory, delete_posts: bool
) -> None:
    with session_factory() as s:
        audit_before = s.scalars(select(AuditEntry.id).order_by(AuditEntry.id)).all()
        raw_hashes = {r.id: r.sha256 for r in s.execute(select(RawMessage.id, RawMessage.sha256))}
    assert findings(session_factory, NEEDLES)  # the search does find her before

    args = ["people", "erase", ALICE, "--yes", "--json"]
    result = run_cli(*args, *(["--delete-posts"] if delete_posts else []))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["label"] == "former member #1" and report["applied"] is True

    # Only the audit rows written before the erasure still hold her address (PRIV-03:
    # append-only, the lawful record); the erasure's own row holds digests only.
    hits = findings(session_factory, NEEDLES)
    assert hits and all(t == "audit_log" and i in audit_before for t, _, i, _ in hits), hits
    with session_factory() as s:
        assert s.scalars(select(AuditEntry.id).order_by(AuditEntry.id)).all()[:-1] == audit_before
        erase_row = s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
        assert erase_row is not None and erase_row.action == "person.erase"
        digests = [hashlib.sha256(a.encode()).hexdigest() for a in sorted([ALICE, ALICE_HOME])]
        assert erase_row.target == f"person:sha256:{hashlib.sha256(ALICE.encode()).hexdigest()}"
        assert erase_row.after is not None and erase_row.after["addresses_sha256"] == digests

        posts = s.scalars(select(Post).order_by(Post.id)).all()
        assert len(posts) == 4 and [p.author_id for p in posts][::2] == [None, None]
        mine = [posts[0], posts[2]]
        if delete_posts:
            assert [p.text for p in mine] == ["[removed]", "[removed]"]
        else:
            assert [p.text for p in mine] == [
                "Here is the plan.",
                "Thursday works. Cheers, former member #1",
            ]
        # The queued copy is gone; the sent one stays as a count, without her address.
        copies = s.execute(
            select(DeliveryRecord.status, DeliveryRecord.address).where(
                DeliveryRecord.person_id == history["alice"]
            )
        ).all()
        assert [tuple(c) for c in copies] == [(DeliveryStatus.SENT, ERASED_ADDRESS)]
        tombstone = s.get_one(Person, history["alice"])
        assert (tombstone.name, tombstone.active, tombstone.addresses) == ("", False, [])
        assert (
            s.scalar(
                select(Discussion.started_by_id).where(Discussion.id == posts[0].discussion_id)
            )
            is None
        )
        # Bob's reply keeps his words; her address and name around it are gone.
        assert posts[1].text.startswith("Agreed") and "former member #1" in posts[1].elided
        raws = {r.id: r for r in s.scalars(select(RawMessage))}
        assert {i: r.sha256 for i, r in raws.items()} == raw_hashes  # the record stays
        root_raw = raws[posts[0].raw_id]  # type: ignore[index]
        if delete_posts:
            assert root_raw.raw == b""
        else:
            head = message_from_bytes(root_raw.raw)
            assert head["From"] == f'"former member #1" <{ERASED_ADDRESS}>'
            assert root_raw.mail_from == ERASED_ADDRESS
            assert root_raw.explanation["from"] == ERASED_ADDRESS
        emptied = [r for r in raws.values() if r.raw == b""]
        assert len(emptied) == (4 if delete_posts else 2)
        assert all(r.status is not RawStatus.RECEIVED for r in emptied)

        # Shown anonymised: the copy has no author, the digest says "a former member".
        source, _ = post_source(s, posts[0].id)
        assert (source.author_name, source.author_address) == ("", "")
        from digests.gather import gather

        now = NOW + timedelta(minutes=30)
        gathered = gather(s, {history["bob"]: now - timedelta(hours=1)}, now)
        names = {p.post_id: p.author_name for d in gathered.discussions for p in d.posts}
        assert names[posts[0].id] == "a former member"
        assert names[posts[1].id] == "Bob Stone"

    again = run_cli("people", "erase", ALICE_HOME, "--yes")
    assert again.exit_code == 1
    assert again.stderr.strip() == f"error: no person with address '{ALICE_HOME}'"
    assert run_cli("people", "export", ALICE).stderr.startswith("error: no person with address")
