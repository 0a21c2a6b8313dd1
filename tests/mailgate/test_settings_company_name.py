"""MAILGATE_COMPANY_NAME: the name the digest's heading carries (mailgate.settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.settings import load_settings


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"MAILGATE_COMPANY_NAME": "  Acme   Widgets "}, "Acme Widgets"),
        ({"MAILGATE_DOMAIN": "lists.corp.example"}, "Corp"),
        ({"MAILGATE_COMPANY_DOMAINS": "north-wind.com,nw.example"}, "North Wind"),
        ({"MAILGATE_DOMAIN": "lists.localhost"}, "Mailgate"),  # "localhost" names no one
    ],
)
def test_company_name(tmp_path: Path, env: dict[str, str], name: str) -> None:
    settings = load_settings({"MAILGATE_VAR_DIR": str(tmp_path), **env})
    assert settings.company_name == name
    assert settings.masked()["company_name"] == name  # shown by `mailgate config`
