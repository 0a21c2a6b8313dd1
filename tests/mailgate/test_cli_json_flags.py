"""Every read command takes ``--json`` (README, issue 17): ``inbound explain`` and
``inspect`` print JSON anyway and must accept the flag rather than refuse it."""

from __future__ import annotations

import json

import click
import pytest

from mailgate.cli import cli
from mailgate.ingest import run_ingest
from tests.conftest import DOMAIN, FIXTURES
from tests.conftest import build_mail as mail

READ_VERBS = {"show", "list", "explain", "inspect", "status", "config", "audit", "answers"}


def leaves(cmd: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, click.Command]]:
    if isinstance(cmd, click.Group):
        return [leaf for name, sub in cmd.commands.items() for leaf in leaves(sub, (*path, name))]
    return [(" ".join(path), cmd)]


def test_every_read_command_accepts_json() -> None:
    missing = [
        name
        for name, cmd in leaves(cli)
        if name.split()[-1] in READ_VERBS
        and "--json" not in {o for p in cmd.params for o in getattr(p, "opts", [])}
    ]
    assert missing == []


@pytest.mark.db
def test_inbound_explain_json_is_the_same_json(  # type: ignore[no-untyped-def]
    directory, gateway, session_factory, ingest_context, run_cli
) -> None:
    directory.list("eng", visibility="members")
    directory.member("eng", "alice@corp.example")
    raw_id = gateway.submit(mail(), f"eng@{DOMAIN}", "alice@corp.example")
    run_ingest(session_factory, raw_id, ingest_context)
    plain = run_cli("inbound", "explain", str(raw_id))
    flagged = run_cli("inbound", "explain", str(raw_id), "--json")
    assert flagged.exit_code == 0, flagged.stderr
    assert json.loads(flagged.stdout) == json.loads(plain.stdout)
    assert json.loads(flagged.stdout)["reason"] == "posted"


def test_inspect_json(run_cli) -> None:  # type: ignore[no-untyped-def]
    sample = next(iter(sorted((FIXTURES / "mail").glob("*.eml"))))
    result = run_cli("inspect", str(sample), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(run_cli("inspect", str(sample)).stdout)
