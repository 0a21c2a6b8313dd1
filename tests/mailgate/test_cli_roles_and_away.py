"""Admin commands that tell the whole truth about people (issue 17, item 4): ``people
show`` shows away_until, ``people away`` is audited before/after, ``roles list`` says
who holds which role, and ``audit --target list:eng`` includes its members' changes."""

from __future__ import annotations

import json
from datetime import date

from sqlalchemy import select

from mailgate import questions
from mailgate.db import unit_of_work
from mailgate.models import AuditEntry


def js(result):  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_people_away_is_shown_and_audited(run_cli) -> None:  # type: ignore[no-untyped-def]
    run_cli("lists", "create", "eng")
    run_cli("members", "add", "eng", "alice@corp.example", "--name", "Alice")
    assert js(run_cli("people", "show", "alice@corp.example", "--json"))["away_until"] is None

    assert run_cli("people", "away", "alice@corp.example", "--until", "2027-01-04").exit_code == 0
    assert (
        js(run_cli("people", "show", "alice@corp.example", "--json"))["away_until"] == "2027-01-04"
    )
    table = run_cli("people", "show", "alice@corp.example").stdout
    assert "away_until\t2027-01-04" in table.splitlines()

    run_cli("people", "away", "alice@corp.example", "--back")
    entries = js(run_cli("audit", "--json", "--target", "person:alice@corp.example"))
    away = [e for e in reversed(entries) if e["action"] == "person.away"]
    assert [(e["before"]["away_until"], e["after"]["away_until"]) for e in away] == [
        (None, "2027-01-04"),
        ("2027-01-04", None),
    ]
    assert away[0]["actor"].startswith("cli:")
    assert away[0]["after"]["name"] == "Alice"  # the whole snapshot, like other changes
    text = run_cli("audit", "--target", "person:alice@corp.example").stdout
    assert "away_until: None → 2027-01-04" in text


def test_an_out_of_office_return_date_is_audited(run_cli, directory, session_factory) -> None:  # type: ignore[no-untyped-def]
    directory.list("eng")
    directory.member("eng", "bob@corp.example", name="Bob")
    with unit_of_work(session_factory) as s:
        assert questions.note_return_date(
            s, directory.person_id("bob@corp.example"), date(2027, 2, 1)
        )
    with session_factory() as s:
        entry = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "person.away").order_by(AuditEntry.id)
        ).one()
    assert (entry.actor, entry.target) == ("mail:out-of-office", "person:bob@corp.example")
    assert (entry.before["away_until"], entry.after["away_until"]) == (None, "2027-02-01")


def test_roles_list(run_cli) -> None:  # type: ignore[no-untyped-def]
    run_cli("lists", "create", "eng")
    run_cli("lists", "create", "news", "--posting", "announce")
    run_cli("members", "add", "eng", "olga@corp.example", "--name", "Olga")
    run_cli("members", "add", "eng", "max@corp.example", "--name", "Max")
    run_cli("members", "add", "eng", "ann@corp.example", "--name", "Ann")
    run_cli("people", "add", "ceo@corp.example", "--name", "Cee")
    assert run_cli("roles", "grant", "ceo@corp.example", "executive").exit_code == 0
    assert run_cli("roles", "grant", "ann@corp.example", "admin").exit_code == 0
    assert run_cli("roles", "grant", "olga@corp.example", "owner", "--list", "eng").exit_code == 0
    assert (
        run_cli("roles", "grant", "max@corp.example", "moderator", "--list", "eng").exit_code == 0
    )
    assert run_cli("roles", "grant", "ceo@corp.example", "poster", "--list", "news").exit_code == 0

    rows = js(run_cli("roles", "list", "--json"))
    assert [(r["scope"], r["role"], r["email"]) for r in rows] == [
        ("site", "admin", "ann@corp.example"),
        ("site", "executive", "ceo@corp.example"),
        ("eng", "moderator", "max@corp.example"),
        ("eng", "owner", "olga@corp.example"),
        ("news", "poster", "ceo@corp.example"),
    ]
    assert rows[1]["name"] == "Cee"
    only_eng = js(run_cli("roles", "list", "--list", "eng", "--json"))
    assert [r["role"] for r in only_eng] == ["moderator", "owner"]
    table = run_cli("roles", "list").stdout.splitlines()
    assert table[1] == "scope\trole\temail\tname"
    assert "eng\towner\tolga@corp.example\tOlga" in table


def test_audit_target_takes_in_what_is_under_it(run_cli) -> None:  # type: ignore[no-untyped-def]
    run_cli("lists", "create", "eng")
    run_cli("lists", "create", "engineering")
    run_cli("lists", "create", "en_g")
    run_cli("members", "add", "eng", "alice@corp.example")
    run_cli("members", "add", "engineering", "bob@corp.example")
    run_cli("members", "add", "en_g", "carl@corp.example")
    run_cli("members", "set", "eng", "alice@corp.example", "--delivery", "digest")
    entries = js(run_cli("audit", "--json", "--target", "list:eng"))
    assert [(e["action"], e["target"]) for e in reversed(entries)] == [
        ("list.create", "list:eng"),
        ("member.add", "list:eng/alice@corp.example"),
        ("member.set", "list:eng/alice@corp.example"),
    ]
    # LIKE wildcards in the target are literal: "en_g" is not "eng".
    assert {e["target"] for e in js(run_cli("audit", "--json", "--target", "list:en_g"))} == {
        "list:en_g",
        "list:en_g/carl@corp.example",
    }
    assert "list:eng/alice" in run_cli("audit", "--help").stdout.replace("\n", " ")
