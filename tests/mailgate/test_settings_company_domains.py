"""MAILGATE_COMPANY_DOMAINS' default (issue 17): the parent of MAILGATE_DOMAIN only when
that parent can be an organisation's domain; a one-label parent ("localhost", a TLD)
names no company, so nobody is left out by domain."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.settings import load_settings


@pytest.mark.parametrize(
    ("env", "domains", "shown"),
    [
        ({"MAILGATE_DOMAIN": "lists.localhost"}, frozenset(), "(any)"),
        ({}, frozenset(), "(any)"),  # the default domain is lists.localhost
        ({"MAILGATE_DOMAIN": "lists.test"}, frozenset(), "(any)"),
        ({"MAILGATE_DOMAIN": "localhost"}, frozenset(), "(any)"),
        ({"MAILGATE_DOMAIN": "lists.corp.example"}, {"corp.example"}, "corp.example"),
        ({"MAILGATE_DOMAIN": "lists.acme.co.uk"}, {"acme.co.uk"}, "acme.co.uk"),
        (
            {"MAILGATE_DOMAIN": "lists.localhost", "MAILGATE_COMPANY_DOMAINS": "corp.example"},
            {"corp.example"},
            "corp.example",
        ),
    ],
)
def test_company_domains_default(tmp_path: Path, env, domains, shown) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings({"MAILGATE_VAR_DIR": str(tmp_path), **env})
    assert settings.company_domains == domains
    assert settings.company_scope().startswith(shown)


def test_config_says_who_is_in_the_company(run_cli, mailgate_env) -> None:  # type: ignore[no-untyped-def]
    mailgate_env.pop("MAILGATE_COMPANY_DOMAINS")
    mailgate_env["MAILGATE_DOMAIN"] = "lists.localhost"
    result = run_cli("config")
    assert result.exit_code == 0, result.stderr
    assert "Company: (any) everyone with an address of record in the directory" in result.stdout
