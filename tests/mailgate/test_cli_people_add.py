"""``mailgate people add``: a person in the directory without a list (issue 17), audited
like every directory change, so a site role can be granted to them."""

from __future__ import annotations

import json

import pytest


@pytest.mark.db
def test_people_add_creates_an_audited_person_who_can_be_granted_a_role(run_cli) -> None:  # type: ignore[no-untyped-def]
    added = run_cli(
        "people",
        "add",
        "CEO@corp.example",
        "--name",
        "Dana Chief",
        "--timezone",
        "Europe/Berlin",
        "--department",
        "Leadership",
    )
    assert added.exit_code == 0, added.stderr
    assert added.stdout.strip() == "added ceo@corp.example (Dana Chief)"
    shown = json.loads(run_cli("people", "show", "ceo@corp.example", "--json").stdout)
    assert (shown["name"], shown["timezone"], shown["department"]) == (
        "Dana Chief",
        "Europe/Berlin",
        "Leadership",
    )
    assert run_cli("roles", "grant", "ceo@corp.example", "executive").exit_code == 0
    audit = json.loads(run_cli("audit", "--json").stdout)
    create = [e for e in audit if e["action"] == "person.create"]
    assert [e["target"] for e in create] == ["person:ceo@corp.example"]
    assert create[0]["after"]["department"] == "Leadership"


@pytest.mark.db
def test_people_add_refuses_someone_already_there_and_bad_values(run_cli) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("people", "add", "cto@corp.example").exit_code == 0
    again = run_cli("people", "add", "cto@corp.example", "--name", "Other")
    assert again.exit_code != 0
    assert "already in the directory" in again.stderr
    assert "people update" in again.stderr
    bad = run_cli("people", "add", "x@corp.example", "--timezone", "Mars/Olympus")
    assert bad.exit_code != 0 and "Traceback" not in bad.stderr
    audit = json.loads(run_cli("audit", "--json").stdout)
    assert [e["target"] for e in audit] == ["person:cto@corp.example"]
