"""An http MAILGATE_BASE_URL drops List-Unsubscribe-Post (RFC 8058 needs https): say so
in ``mailgate config`` (and its --json) and warn when the gateway starts (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import free_port
from tests.worker.conftest import wait_for


def test_config_says_whether_one_click_is_on(run_cli, mailgate_env) -> None:  # type: ignore[no-untyped-def]
    mailgate_env["MAILGATE_BASE_URL"] = "http://mg.corp.example"
    text = run_cli("config").stdout
    assert (
        "Unsubscribe links: mailto and http://mg.corp.example/u/… without "
        "List-Unsubscribe-Post" in text
    )
    data = json.loads(run_cli("config", "--json").stdout)
    assert data["one_click_unsubscribe"] is False
    assert "needs an https MAILGATE_BASE_URL" in data["unsubscribe_links"]

    mailgate_env["MAILGATE_BASE_URL"] = "https://mg.corp.example"
    data = json.loads(run_cli("config", "--json").stdout)
    assert data["one_click_unsubscribe"] is True
    assert data["unsubscribe_links"].startswith("mailto and one-click https://mg.corp.example")

    del mailgate_env["MAILGATE_BASE_URL"]
    data = json.loads(run_cli("config", "--json").stdout)
    assert data["one_click_unsubscribe"] is False
    assert data["unsubscribe_links"].startswith("mailto only")


def test_serve_warns_at_start_up_about_an_http_base_url(  # type: ignore[no-untyped-def]
    mailgate_env, processes, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    env = {
        **mailgate_env,
        "MAILGATE_BASE_URL": "http://127.0.0.1:1",
        "MAILGATE_SMTP_PORT": str(free_port()),
        "MAILGATE_HTTP_PORT": str(free_port()),
    }
    processes(["serve"], env, log)
    wait_for(lambda: "listening" in log.read_text(), timeout=60, what="the gateway")
    text = log.read_text()
    assert "warning: unsubscribe links:" in text
    assert "without List-Unsubscribe-Post" in text
