"""``mailgate inspect`` and ``mailgate inbound …`` end to end.

Mail goes through the real gateway on 127.0.0.1 into the real database (SQLite, and
PostgreSQL in the second pass); the ingest service runs where a worker would; the CLI
runs in-process as the console script does. ``inspect`` is also run as a subprocess to
check that it starts fast and never loads the database or broker libraries.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailgate.ingest import run_ingest
from mailgate.models import Notice, Post, RawMessage, RawStatus
from mailgate.tokens import TokenKind, make_token
from mailgate.trace import without_own_trace
from tests.conftest import DOMAIN, FIXTURES, SECRET
from tests.conftest import build_mail as mail

ALICE, CAROL, EVE = "alice@corp.example", "carol@corp.example", "eve@elsewhere.example"
CEO = "ceo@corp.example"
ENG, ALL = f"eng@{DOMAIN}", f"all@{DOMAIN}"
MAIL = FIXTURES / "mail"
REPO = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {
    "id",
    "received_at",
    "status",
    "reason",
    "mail_from",
    "rcpt_to",
    "message_id",
    "size",
    "attempts",
}


@pytest.fixture
def eng(directory):
    directory.list("eng", name="Engineering", visibility="members")
    directory.member("eng", ALICE, name="Alice")
    return directory


@pytest.fixture
def announce(eng):
    eng.list("all", posting="announce", mandatory=True)
    eng.member("all", CEO, role="owner")
    return eng


@pytest.fixture
def store(gateway):
    """Send through the real gateway; return the stored raw id (ingest not run)."""

    def send(raw: bytes, rcpt: str = ENG, mail_from: str = ALICE) -> int:
        raw_id = gateway.submit(raw, rcpt, mail_from)
        return int(raw_id)

    return send


@pytest.fixture
def deliver(store, session_factory, ingest_context):
    """Store through the gateway, then run the ingest service as the worker would."""

    def send(raw: bytes, rcpt: str = ENG, mail_from: str = ALICE) -> int:
        raw_id = int(store(raw, rcpt, mail_from))
        run_ingest(session_factory, raw_id, ingest_context)
        return raw_id

    return send


def raw_row(session_factory: Any, raw_id: int) -> RawMessage:
    with session_factory() as s:
        row: RawMessage = s.get_one(RawMessage, raw_id)
        return row


def posts(session_factory: Any) -> list[Post]:
    with session_factory() as s:
        return list(s.scalars(select(Post).order_by(Post.id)))


def confirm_token(session_factory: Any) -> str:
    with session_factory() as s:
        notice = s.scalars(select(Notice).where(Notice.reason == "held-for-authentication")).one()
        return str(notice.context["confirm_token"])


def ok_json(result: Any) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def one_error_line(result: Any) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def audit(run_cli: Any, action: str) -> list[dict[str, Any]]:
    return [e for e in ok_json(run_cli("audit", "--json")) if e["action"] == action]


# ---------------------------------------------------------------- inbound list


@pytest.fixture
def three(eng, deliver, session_factory):
    """A processed post, a refused non-member post and a suppressed auto-reply."""
    posted = deliver(mail(body="Ship it Monday.", message_id="posted@corp.example"))
    rejected = deliver(
        mail(sender=EVE, body="Buy my widgets", message_id="eve@elsewhere.example"),
        mail_from=EVE,
    )
    suppressed = deliver(
        mail(
            subject="Out of office: Launch plan",
            body="I am away until Monday.",
            message_id="ooo@corp.example",
            headers={"Auto-Submitted": "auto-replied"},
        )
    )
    assert raw_row(session_factory, posted).status is RawStatus.PROCESSED
    assert raw_row(session_factory, rejected).status is RawStatus.REJECTED
    assert raw_row(session_factory, suppressed).status is RawStatus.SUPPRESSED
    return posted, rejected, suppressed


def test_list_defaults_to_everything_not_processed(three, run_cli) -> None:
    posted, rejected, suppressed = three
    rows = ok_json(run_cli("inbound", "list", "--json"))
    assert [(r["id"], r["status"], r["reason"]) for r in rows] == [
        (suppressed, "suppressed", "auto-submitted"),
        (rejected, "rejected", "unknown-sender"),
    ]
    shown = ok_json(run_cli("inbound", "list", "--status", "processed", "--json"))
    assert [(r["id"], r["status"], r["reason"]) for r in shown] == [(posted, "processed", "posted")]
    both = ok_json(
        run_cli("inbound", "list", "--status", "processed", "--status", "rejected", "--json")
    )
    assert [r["id"] for r in both] == [rejected, posted]
    newest = ok_json(run_cli("inbound", "list", "--limit", "1", "--json"))
    assert [r["id"] for r in newest] == [suppressed]
    assert ok_json(run_cli("inbound", "list", "--status", "failed", "--json")) == []


def test_list_json_shape(three, run_cli, session_factory) -> None:
    _, rejected, _ = three
    rows = ok_json(run_cli("inbound", "list", "--status", "rejected", "--json"))
    (row,) = rows
    assert set(row) == SUMMARY_KEYS
    stored = raw_row(session_factory, rejected)
    assert row == {
        "id": rejected,
        "received_at": stored.received_at.isoformat(timespec="seconds"),
        "status": "rejected",
        "reason": "unknown-sender",
        "mail_from": EVE,
        "rcpt_to": [ENG],
        "message_id": "<eve@elsewhere.example>",  # the header text, as stored
        "size": len(stored.raw),
        "attempts": 1,
    }
    assert row["received_at"].endswith("+00:00")  # aware UTC, not a naive local time


def test_list_table_names_the_refusals(three, run_cli, mailgate_env) -> None:
    # rich cuts cells to fit 80 columns when stdout is not a terminal; give it room.
    mailgate_env["COLUMNS"] = "200"
    result = run_cli("inbound", "list")
    assert result.exit_code == 0, result.stderr
    assert "unknown-sender" in result.stdout and "auto-submitted" in result.stdout
    assert "posted" not in result.stdout


def test_list_rejects_an_unknown_status(run_cli) -> None:
    result = run_cli("inbound", "list", "--status", "lost")
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr


def test_tokens_in_recipients_are_redacted_everywhere(
    announce, deliver, session_factory, run_cli
) -> None:
    deliver(mail(message_id="root@corp.example"))
    (root,) = posts(session_factory)
    reply_token = make_token(SECRET, TokenKind.REPLY, announce.person_id(ALICE), root.discussion_id)
    replied = deliver(
        mail(subject="Re: Launch plan", body="Agreed."), rcpt=f"reply+{reply_token}@{DOMAIN}"
    )
    deliver(mail(sender=CEO, to=ALL, body="Big news"), rcpt=ALL, mail_from=CEO)
    token = confirm_token(session_factory)
    # Alice tries to confirm the CEO's post: refused, and listed by default.
    mismatch = deliver(mail(subject="Re: Confirm", body="yes"), rcpt=f"confirm+{token}@{DOMAIN}")
    assert raw_row(session_factory, replied).reason == "posted"
    assert raw_row(session_factory, mismatch).reason == "confirmation-mismatch"

    outputs = {
        "list": run_cli("inbound", "list"),
        "list-json": run_cli("inbound", "list", "--json"),
        "list-processed": run_cli("inbound", "list", "--status", "processed", "--json"),
        "show-reply": run_cli("inbound", "show", str(replied), "--json"),
        "show-reply-table": run_cli("inbound", "show", str(replied)),
        "show-confirm": run_cli("inbound", "show", str(mismatch), "--json"),
        "explain-reply": run_cli("inbound", "explain", str(replied)),
        "explain-confirm": run_cli("inbound", "explain", str(mismatch)),
    }
    for name, result in outputs.items():
        assert result.exit_code == 0, (name, result.stderr)
        assert reply_token not in result.stdout, name
        assert token not in result.stdout, name

    by_id = {r["id"]: r for r in json.loads(outputs["list-json"].stdout)}
    assert by_id[mismatch]["rcpt_to"] == [f"confirm+…@{DOMAIN}"]
    processed = {r["id"]: r for r in json.loads(outputs["list-processed"].stdout)}
    assert processed[replied]["rcpt_to"] == [f"reply+…@{DOMAIN}"]
    assert json.loads(outputs["show-reply"].stdout)["rcpt_to"] == [f"reply+…@{DOMAIN}"]
    assert json.loads(outputs["show-confirm"].stdout)["rcpt_to"] == [f"confirm+…@{DOMAIN}"]
    explained = json.loads(outputs["explain-reply"].stdout)
    assert explained["explanation"]["recipients"][0]["recipient"] == f"reply+…@{DOMAIN}"


# ---------------------------------------------------------------- inbound show

# What a real client sends: 8-bit UTF-8 in the body, a line starting with a dot (which
# SMTP dot-stuffs on the wire and the gateway must un-stuff), trailing spaces.
EXACT = (
    b"From: Alice Example <alice@corp.example>\r\n"
    b"To: eng@lists.corp.example\r\n"
    b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_M=C3=BCnchen?=\r\n"
    b"Date: Tue, 03 Mar 2026 10:12:00 +0100\r\n"
    b"Message-ID: <exact-1@corp.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Gr\xc3\xbc\xc3\x9fe aus M\xc3\xbcnchen \xe2\x80\x94 the build is green.  \r\n"
    b".hidden files are now ignored\r\n"
    b"..and so are two dots\r\n"
    b"\r\n"
    b"Alice\r\n"
)


def test_show_json_has_envelope_and_the_digest_of_the_bytes_stored(  # type: ignore[no-untyped-def]
    eng, store, run_cli, session_factory
) -> None:
    raw_id = store(EXACT)
    data = ok_json(run_cli("inbound", "show", str(raw_id), "--json"))
    assert set(data) == SUMMARY_KEYS | {"sha256", "peer", "helo"}
    with session_factory() as s:
        stored = s.get_one(RawMessage, raw_id).raw
    assert without_own_trace(stored) == EXACT
    assert data["sha256"] == hashlib.sha256(stored).hexdigest()
    assert data["size"] == len(stored)
    assert (data["id"], data["status"], data["attempts"]) == (raw_id, "received", 0)
    assert (data["mail_from"], data["rcpt_to"]) == (ALICE, [ENG])
    assert data["message_id"] == "<exact-1@corp.example>"
    assert data["peer"].startswith("127.0.0.1")


def test_show_raw_prints_exactly_the_bytes_sent(eng, store, run_cli) -> None:
    raw_id = store(EXACT)
    result = run_cli("inbound", "show", str(raw_id), "--raw")
    assert result.exit_code == 0, result.stderr
    # Our Received trace (SMTP-16), then exactly the bytes the client sent.
    assert result.stdout.encode().startswith(b"Received: from ")
    assert without_own_trace(result.stdout.encode()) == EXACT


def test_show_raw_is_byte_exact_for_text_that_is_not_utf8(eng, store, mailgate_env) -> None:
    raw = mail(subject="Caf\xe9", body="x").replace(b"Caf\xc3\xa9", b"Caf\xe9")  # Latin-1
    raw_id = store(raw)
    runner = CliRunner()
    from mailgate.cli import main

    with runner.isolation(env=mailgate_env) as (out, _err, *_):
        with pytest.raises(SystemExit) as exit_:
            main(["inbound", "show", str(raw_id), "--raw"])
        printed = out.getvalue()
    assert exit_.value.code == 0
    assert without_own_trace(printed) == raw


@pytest.mark.parametrize("extra", [(), ("--json",), ("--raw",)])
def test_show_unknown_id_is_one_line(run_cli, extra) -> None:
    line = one_error_line(run_cli("inbound", "show", "4242", *extra))
    assert line.endswith("no inbound message 4242")


# ---------------------------------------------------------------- inbound explain


def test_explain_a_processed_post(eng, deliver, session_factory, run_cli) -> None:
    raw_id = deliver(mail(subject="[eng] Launch plan", message_id="p1@corp.example"))
    (post,) = posts(session_factory)
    data = ok_json(run_cli("inbound", "explain", str(raw_id)))
    assert (data["id"], data["status"], data["reason"]) == (raw_id, "processed", "posted")
    explanation = data["explanation"]
    assert explanation["class"] == "ok"
    assert explanation["from"] == ALICE
    assert explanation["message_id"] == "p1@corp.example"
    (recipient,) = explanation["recipients"]
    assert recipient["recipient"] == ENG
    assert (recipient["status"], recipient["reason"]) == ("processed", "posted")
    assert recipient["thread"] == "new-discussion"
    assert recipient["post"] == post.id
    assert recipient["discussion"] == post.discussion_id
    assert "not_processed_yet" not in explanation


def test_explain_a_refusal_names_the_reason(three, run_cli) -> None:
    _, rejected, suppressed = three
    refused = ok_json(run_cli("inbound", "explain", str(rejected)))["explanation"]
    assert [(r["status"], r["reason"]) for r in refused["recipients"]] == [
        ("rejected", "unknown-sender")
    ]
    auto = ok_json(run_cli("inbound", "explain", str(suppressed)))["explanation"]
    assert auto["classification"] == "auto_reply"
    assert auto["automatic"]


def test_explain_a_message_not_processed_yet_reads_it_without_changing_it(
    eng, store, session_factory, run_cli
) -> None:
    raw_id = store(mail(body="Still in the queue.", message_id="queued@corp.example"))
    data = ok_json(run_cli("inbound", "explain", str(raw_id)))
    assert (data["status"], data["reason"]) == ("received", "")
    explanation = data["explanation"]
    assert explanation["not_processed_yet"] is True
    reading = explanation["reading"]
    assert (reading["class"], reading["text"]) == ("ok", "Still in the queue.")
    assert (reading["from"], reading["message_id"]) == (ALICE, "queued@corp.example")
    row = raw_row(session_factory, raw_id)
    assert (row.status, row.attempts, row.explanation) == (RawStatus.RECEIVED, 0, {})
    assert posts(session_factory) == []


def test_explain_unknown_id(run_cli) -> None:
    assert one_error_line(run_cli("inbound", "explain", "77")).endswith("no inbound message 77")


# ---------------------------------------------------------------- release and discard


@pytest.fixture
def held(announce, deliver, session_factory):
    """The CEO's announcement without Authentication-Results: held for confirmation."""
    raw_id = deliver(
        mail(sender=CEO, to=ALL, subject="All hands", body="Big news on Friday."),
        rcpt=ALL,
        mail_from=CEO,
    )
    row = raw_row(session_factory, raw_id)
    assert (row.status, row.reason) == (RawStatus.HELD, "held-for-authentication")
    assert posts(session_factory) == []
    return raw_id


def test_release_posts_a_held_message_and_audits_it(
    held, run_cli, session_factory, deliver
) -> None:
    result = run_cli("inbound", "release", str(held))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"released inbound message {held}: posted"
    (post,) = posts(session_factory)
    assert (post.text, post.subject, post.raw_id) == ("Big news on Friday.", "All hands", held)
    row = raw_row(session_factory, held)
    assert (row.status, row.reason) == (RawStatus.PROCESSED, "posted")
    (entry,) = audit(run_cli, "inbound.release")
    assert entry["target"] == f"inbound:{held}"
    assert entry["before"] == {"status": "held"}
    assert entry["after"] == {"status": "processed", "reason": "posted"}
    assert entry["actor"].startswith("cli:")
    # The CEO confirming afterwards must not post it a second time.
    token = confirm_token(session_factory)
    deliver(mail(sender=CEO, body="yes"), rcpt=f"confirm+{token}@{DOMAIN}", mail_from=CEO)
    assert len(posts(session_factory)) == 1
    # Nor may it be released twice.
    line = one_error_line(run_cli("inbound", "release", str(held)))
    assert line.endswith(f"inbound message {held} is processed, not held")
    assert len(audit(run_cli, "inbound.release")) == 1


def test_release_refuses_what_is_not_held(three, run_cli, session_factory) -> None:
    _, rejected, _ = three
    line = one_error_line(run_cli("inbound", "release", str(rejected)))
    assert line.endswith(f"inbound message {rejected} is rejected, not held")
    assert raw_row(session_factory, rejected).status is RawStatus.REJECTED
    assert len(posts(session_factory)) == 1
    assert audit(run_cli, "inbound.release") == []
    assert one_error_line(run_cli("inbound", "release", "999")).endswith("no inbound message 999")


def test_release_leaves_a_held_subscription_request_held(
    eng, deliver, session_factory, run_cli
) -> None:
    eng.list("social", visibility="company")
    request = f"social-request@{DOMAIN}"
    raw_id = deliver(mail(to=request, subject="subscribe", body=""), rcpt=request)
    assert raw_row(session_factory, raw_id).reason == "awaiting-confirmation"
    line = one_error_line(run_cli("inbound", "release", str(raw_id)))
    assert line.endswith(
        f"inbound message {raw_id} is held for awaiting-confirmation, not a post; nothing released"
    )
    row = raw_row(session_factory, raw_id)
    assert (row.status, row.reason) == (RawStatus.HELD, "awaiting-confirmation")
    assert "released" not in row.explanation
    assert posts(session_factory) == []
    assert audit(run_cli, "inbound.release") == []


def test_discard_a_held_message_is_final(held, run_cli, session_factory, deliver) -> None:
    result = run_cli("inbound", "discard", str(held))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"discarded inbound message {held}"
    row = raw_row(session_factory, held)
    assert (row.status, row.reason) == (RawStatus.DISCARDED, "discarded-by-admin")
    assert hashlib.sha256(row.raw).hexdigest() == row.sha256  # bytes kept for retention
    (entry,) = audit(run_cli, "inbound.discard")
    assert entry["target"] == f"inbound:{held}"
    assert (entry["before"], entry["after"]) == ({"status": "held"}, {"status": "discarded"})
    listed = ok_json(run_cli("inbound", "list", "--status", "discarded", "--json"))
    assert [r["id"] for r in listed] == [held]
    # Neither a release nor the CEO's late confirmation brings it back.
    line = one_error_line(run_cli("inbound", "release", str(held)))
    assert line.endswith("is discarded, not held")
    token = confirm_token(session_factory)
    deliver(mail(sender=CEO, body="yes"), rcpt=f"confirm+{token}@{DOMAIN}", mail_from=CEO)
    assert posts(session_factory) == []
    assert raw_row(session_factory, held).status is RawStatus.DISCARDED


def test_discard_refuses_a_processed_message(three, run_cli, session_factory) -> None:
    posted, _, _ = three
    line = one_error_line(run_cli("inbound", "discard", str(posted)))
    assert line.endswith(f"inbound message {posted} was posted; nothing to discard")
    row = raw_row(session_factory, posted)
    assert (row.status, row.reason) == (RawStatus.PROCESSED, "posted")
    assert audit(run_cli, "inbound.discard") == []


# ---------------------------------------------------------------- replay


def test_replay_after_adding_the_sender_posts_the_message(
    eng, deliver, session_factory, ingest_context, run_cli
) -> None:
    raw_id = deliver(
        mail(sender=CAROL, body="Can I join the launch?", message_id="carol-1@corp.example"),
        mail_from=CAROL,
    )
    refused = raw_row(session_factory, raw_id)
    assert refused.status is RawStatus.REJECTED
    assert posts(session_factory) == []

    assert run_cli("members", "add", "eng", CAROL).exit_code == 0
    result = run_cli("inbound", "replay", str(raw_id))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"queued inbound message {raw_id} for processing again"
    row = raw_row(session_factory, raw_id)
    assert (row.status, row.reason, row.attempts) == (RawStatus.RECEIVED, "", 0)
    assert row.explanation == {}
    (entry,) = audit(run_cli, "inbound.replay")
    assert entry["target"] == f"inbound:{raw_id}"
    assert entry["before"] == {"status": "rejected", "reason": refused.reason}
    assert entry["after"] == {"status": "received"}

    assert run_ingest(session_factory, raw_id, ingest_context) is RawStatus.PROCESSED
    (post,) = posts(session_factory)
    assert (post.text, post.raw_id) == ("Can I join the launch?", raw_id)
    assert raw_row(session_factory, raw_id).reason == "posted"

    line = one_error_line(run_cli("inbound", "replay", str(raw_id)))
    assert line.endswith(f"inbound message {raw_id} was posted; replaying would add nothing")
    assert len(audit(run_cli, "inbound.replay")) == 1


def test_replay_unknown_id(run_cli) -> None:
    assert one_error_line(run_cli("inbound", "replay", "31")).endswith("no inbound message 31")


# ---------------------------------------------------------------- inspect


@pytest.fixture
def no_database(mailgate_env, tmp_path):
    """``inspect`` must work with no reachable database and create no files."""
    mailgate_env["MAILGATE_DATABASE_URL"] = "postgresql+psycopg://nobody@127.0.0.1:9/none"
    mailgate_env.pop("MAILGATE_SECRET_KEY")  # would make load_settings create var/secret.key
    var = Path(mailgate_env["MAILGATE_VAR_DIR"])
    assert not var.exists()
    return var


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("autoreply-gmail-en.eml", {"class": "auto_reply", "reason": "auto-submitted"}),
        ("autoreply-outlook-de.eml", {"class": "auto_reply"}),
        (
            "dsn-postfix-hard.eml",
            {"class": "bounce", "reason": "dsn", "bounced": ["j.doe@corp.example"], "text": ""},
        ),
        (
            "gmail-reply-plain.eml",
            {
                "class": "ok",
                "reason": "post",
                "from": ALICE,
                "subject": "Re: [eng] Postgres 16 upgrade window",
                "in_reply_to": ["post-1@lists.corp.example"],
            },
        ),
    ],
)
def test_inspect_classifies_a_file_without_a_database(
    run_cli, no_database, fixture, expected
) -> None:
    data = ok_json(run_cli("inspect", str(MAIL / fixture)))
    assert {k: data[k] for k in expected} == expected
    if expected["class"] == "ok":
        assert data["text"].startswith("Thursday works for the payments team.")
        assert data["text"].endswith("Alice")
        assert "wrote:" not in data["text"] and "wrote:" in data["elided"]
    if expected["class"] == "bounce":
        assert data["bounces"][0]["permanent"] is True
    assert not no_database.exists()


def test_inspect_reads_stdin(run_cli, no_database) -> None:
    path = MAIL / "gmail-reply-plain.eml"
    from_file = ok_json(run_cli("inspect", str(path)))
    from_stdin = ok_json(run_cli("inspect", "-", stdin=path.read_text()))
    assert from_stdin == from_file
    assert from_stdin["class"] == "ok"
    assert not no_database.exists()


def test_inspect_mail_from_option_overrides_the_guess(run_cli, no_database) -> None:
    raw = mail(body="Here is the plan.").decode()
    assert ok_json(run_cli("inspect", "-", stdin=raw))["class"] == "ok"
    null_sender = ok_json(run_cli("inspect", "--mail-from", "", "-", stdin=raw))
    assert null_sender["class"] != "ok"  # mail from <> is never a post


def test_inspect_missing_file_is_one_line(run_cli, no_database, tmp_path) -> None:
    missing = tmp_path / "nope.eml"
    line = one_error_line(run_cli("inspect", str(missing)))
    assert f"cannot read {missing}" in line
    assert "No such file or directory" in line
    assert not no_database.exists()


def _inspect_subprocess(path: Path, tmp_path: Path, *flags: str) -> tuple[float, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGATE_", "PYTHON"))} | {
        "PYTHONPATH": str(REPO),
        "MAILGATE_VAR_DIR": str(tmp_path / "var"),
        "MAILGATE_DOMAIN": DOMAIN,
    }
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, *flags, "-m", "mailgate.cli", "inspect", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )
    return time.monotonic() - started, proc


def test_inspect_starts_fast_without_database_or_broker_libraries(tmp_path) -> None:
    path = MAIL / "autoreply-gmail-en.eml"
    _, proc = _inspect_subprocess(path, tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["class"] == "auto_reply"

    # "Fast" without a stopwatch: the start-up cost is the imports, and the heavy ones
    # (database, broker, SMTP server) are not among them.
    _, traced = _inspect_subprocess(path, tmp_path, "-X", "importtime")
    assert traced.returncode == 0
    imported = traced.stderr.decode()
    assert "mailgate.reading" in imported  # the trace really is of this command
    for heavy in ("sqlalchemy", "celery", "kombu", "aiosmtpd"):
        assert heavy not in imported, heavy
    assert not (tmp_path / "var").exists()


# ------------------------------------------------ anonymous answers (issue 12 item 13)

BOSS, ANN, ROOT, MO = (
    "boss@corp.example",
    "ann@corp.example",
    "root@corp.example",
    "mo@corp.example",
)
HIDDEN = "(anonymous answer)"


@pytest.fixture
def answers(eng, deliver, store, session_factory):  # type: ignore[no-untyped-def]
    """Raw ids: an anonymous answer (processed, and one stored but not yet processed),
    the asker's own reply in that discussion, and an answer to a named question."""
    from datetime import UTC, datetime

    from mailgate import questions
    from mailgate.addressing import reply_address
    from mailgate.db import unit_of_work
    from mailgate.directory import find_person

    eng.member("eng", BOSS, name="Boss", role="owner")
    for who in (ANN, MO, ROOT):
        eng.member("eng", who, name=who.split("@")[0].title())
    eng.grant(ROOT, "admin")
    when = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    discussions = {}
    with unit_of_work(session_factory) as s:
        for anonymous in (True, False):
            q = questions.create_question(
                s,
                asker=find_person(s, BOSS),
                spec=questions.QuestionSpec(
                    subject=f"Pulse anonymous={anonymous}",
                    text="How is the team doing, honestly?",
                    audience="eng",
                    anonymous=anonymous,
                ),
                now=when,
                domain=DOMAIN,
            )
            discussions[anonymous] = q.discussion_id

    def to(anonymous: bool, who: str) -> str:
        token = make_token(SECRET, TokenKind.REPLY, eng.person_id(who), discussions[anonymous])
        return reply_address(token, DOMAIN)

    def answer(anonymous: bool, who: str, text: str, *, ingest: bool = True) -> int:
        rcpt = to(anonymous, who)
        raw = mail(sender=who, to=rcpt, subject="Re: Pulse", body=text)
        return (deliver if ingest else store)(raw, rcpt, who)

    ids = {
        "anonymous": answer(True, ANN, "The on-call rota is burning me out."),
        "pending": answer(True, ALICE, "Too many meetings.", ingest=False),
        "asker": answer(True, BOSS, "Thanks, keep them coming."),
        "named": answer(False, ANN, "Fine, thanks."),
    }
    with session_factory() as s:
        stored = {p.raw_id: p for p in s.scalars(select(Post))}
    assert stored[ids["anonymous"]].author_id == eng.person_id(ANN)  # it was posted
    return ids


def test_routine_commands_never_name_an_anonymous_answerer(answers, run_cli) -> None:  # type: ignore[no-untyped-def]
    for key, who in (("anonymous", ANN), ("pending", ALICE)):
        raw_id = answers[key]
        explained = run_cli("inbound", "explain", str(raw_id))
        assert explained.exit_code == 0, explained.stderr
        assert who not in explained.stdout and "question" not in explained.stdout
        data = json.loads(explained.stdout)
        assert (data["mail_from"], data["message_id"], data["anonymous_answer"]) == (
            HIDDEN,
            HIDDEN,
            True,
        )
        assert data["explanation"]["from"] == HIDDEN
        shown = run_cli("inbound", "show", str(raw_id), "--json")
        assert shown.exit_code == 0 and who not in shown.stdout
        assert json.loads(shown.stdout)["mail_from"] == HIDDEN
        raw = run_cli("inbound", "show", str(raw_id), "--raw")
        assert "--reveal-anonymous" in one_error_line(raw) and who not in raw.stdout
    processed = ok_json(run_cli("inbound", "explain", str(answers["anonymous"])))
    assert [(o["status"], o["reason"]) for o in processed["explanation"]["recipients"]] == [
        ("processed", "posted")
    ]

    listed = ok_json(
        run_cli("inbound", "list", "--status", "processed", "--status", "received", "--json")
    )
    senders = {row["id"]: row["mail_from"] for row in listed}
    assert senders == {
        answers["anonymous"]: HIDDEN,
        answers["pending"]: HIDDEN,
        answers["asker"]: BOSS,  # the asker's reply is theirs, by name
        answers["named"]: ANN,  # a named question's answers are named
    }
    table = run_cli("inbound", "list", "--status", "received")
    assert table.exit_code == 0 and ALICE not in table.stdout
    named = ok_json(run_cli("inbound", "explain", str(answers["named"])))
    assert named["mail_from"] == ANN and named["explanation"]["from"] == ANN


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--reveal-anonymous",), "--reveal-anonymous needs --admin and --reason"),
        (("--reveal-anonymous", "--admin", ROOT), "--reveal-anonymous needs --admin and --reason"),
        (("--reveal-anonymous", "--admin", ROOT, "--reason", "  "), "needs --admin and --reason"),
        (
            ("--reveal-anonymous", "--admin", MO, "--reason", "curious"),
            f"{MO} is not a site admin; only a site admin may reveal an anonymous answer",
        ),
        (("--admin", ROOT, "--reason", "x"), "--admin and --reason go with --reveal-anonymous"),
    ],
)
def test_revealing_needs_a_site_admin_and_a_reason(answers, run_cli, args, message) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("inbound", "explain", str(answers["anonymous"]), *args)
    assert message in one_error_line(result) and ANN not in result.stdout
    assert audit(run_cli, "inbound.reveal-anonymous") == []


def test_a_site_admin_reveals_one_answer_with_an_audit_row(answers, run_cli) -> None:  # type: ignore[no-untyped-def]
    raw_id = answers["anonymous"]
    revealed = ok_json(
        run_cli(
            "inbound",
            "explain",
            str(raw_id),
            "--reveal-anonymous",
            "--admin",
            ROOT,
            "--reason",
            "HR case 2026-117",
        )
    )
    assert revealed["mail_from"] == ANN and revealed["explanation"]["from"] == ANN
    (entry,) = audit(run_cli, "inbound.reveal-anonymous")
    assert entry["target"] == f"inbound:{raw_id}"
    assert entry["actor"].startswith("cli:")
    assert entry["after"] == {"admin": ROOT, "reason": "HR case 2026-117"}
    # The audit log says who looked and why, never whom they found.
    assert ANN not in json.dumps(entry)
    # Revealing is per message and per request: the routine view stays anonymous.
    again = ok_json(run_cli("inbound", "explain", str(raw_id)))
    assert again["mail_from"] == HIDDEN

    named = run_cli(
        "inbound",
        "explain",
        str(answers["named"]),
        "--reveal-anonymous",
        "--admin",
        ROOT,
        "--reason",
        "x",
    )
    assert "not an anonymous answer" in one_error_line(named)
    assert len(audit(run_cli, "inbound.reveal-anonymous")) == 1


def test_ask_answers_as_the_answerer_does_not_name_them(answers, run_cli, session_factory) -> None:  # type: ignore[no-untyped-def]
    """``ask answers --as`` is run by an operator, not by the person named: for an anonymous
    question it shows the pooled view only, never "this one is theirs"."""
    from mailgate.models import Question

    with session_factory() as s:
        qid = s.scalar(select(Question.id).where(Question.anonymous.is_(True)))
    for who in (ANN, BOSS, MO):
        shown = ok_json(run_cli("ask", "answers", str(qid), "--as", who, "--json"))
        texts = [p["text"] for p in shown["posts"] if not p["question"]]
        assert texts == [], who  # one answer so far: below the threshold, nobody sees any
