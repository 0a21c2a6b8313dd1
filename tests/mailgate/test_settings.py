"""Settings from the environment: defaults, validation, the generated secret."""

from __future__ import annotations

import os
import stat

import pytest

from mailgate.settings import SettingsError, load_settings


def test_embedded_defaults(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = load_settings({"MAILGATE_VAR_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{tmp_path / 'mailgate.db'}"
    assert s.broker_is_embedded and s.is_sqlite
    assert (s.smtp_host, s.smtp_port) == ("127.0.0.1", 2525)
    assert s.relay_url == f"maildir:{tmp_path / 'outbox'}"
    key = tmp_path / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert s.secret_key == key.read_text().strip() and len(s.secret_key) >= 32
    # The same secret comes back on the next start.
    assert load_settings({"MAILGATE_VAR_DIR": str(tmp_path)}).secret_key == s.secret_key


def test_world_readable_secret_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    load_settings({"MAILGATE_VAR_DIR": str(tmp_path)})
    os.chmod(tmp_path / "secret.key", 0o644)
    with pytest.raises(SettingsError, match="readable by others"):
        load_settings({"MAILGATE_VAR_DIR": str(tmp_path)})


def test_postgres_url_uses_psycopg3(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = load_settings(
        {
            "MAILGATE_VAR_DIR": str(tmp_path),
            "MAILGATE_DATABASE_URL": "postgresql://mg:pw@db/mailgate",
            "MAILGATE_BROKER_URL": "redis://127.0.0.1:6379/0",
        }
    )
    assert s.database_url == "postgresql+psycopg://mg:pw@db/mailgate"
    assert not s.broker_is_embedded
    assert s.masked()["database_url"] == "postgresql+psycopg://mg:****@db/mailgate"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MAILGATE_SMTP_PORT", "99999", "between 0 and 65535"),
        ("MAILGATE_RELAY_URL", "ftp://x", "MAILGATE_RELAY_URL must be"),
        ("MAILGATE_DATABASE_URL", "mysql://x", "sqlite:/// or postgresql://"),
        ("MAILGATE_TRUSTED_PEERS", "10.0.0.0/8,nonsense", "not an IP network"),
        ("MAILGATE_SECRET_KEY", "short", "at least 32"),
        ("MAILGATE_DOMAIN", "a@b", "must be a domain"),
    ],
)
def test_bad_values_name_the_variable(tmp_path, name, value, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SettingsError, match=message):
        load_settings({"MAILGATE_VAR_DIR": str(tmp_path), name: value})


# ---------------------------------------------------------------- A-R trust (issue 12 item 14)


def test_authentication_results_are_trusted_from_nobody_by_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = load_settings({"MAILGATE_VAR_DIR": str(tmp_path)})
    assert s.authres_relays == () and s.authserv_ids == frozenset()
    # Loopback may still connect (a local MTA in front); that is no reason to believe it.
    assert "127.0.0.0/8" in s.trusted_peers
    assert s.authres_trust() == (
        "not trusted from any peer (set MAILGATE_AUTHRES_RELAYS and MAILGATE_AUTHSERV_IDS): "
        "only a valid DKIM signature authenticates a post"
    )


@pytest.mark.parametrize(
    ("relays", "ids", "sentence"),
    [
        (
            "10.20.0.25/32",
            "",
            "not trusted: MAILGATE_AUTHSERV_IDS is unset, so only a valid DKIM signature "
            "authenticates a post",
        ),
        (
            "",
            "mx.corp.example",
            "not trusted: MAILGATE_AUTHRES_RELAYS is unset, so only a valid DKIM signature "
            "authenticates a post",
        ),
        (
            "10.20.0.25/32, 2001:db8::25",
            "mx.corp.example,-",
            "trusted only from 10.20.0.25/32, 2001:db8::25 with authserv-id -, mx.corp.example; "
            "otherwise only a valid DKIM signature authenticates a post",
        ),
    ],
)
def test_authentication_results_trust_is_explicit(tmp_path, relays, ids, sentence) -> None:  # type: ignore[no-untyped-def]
    s = load_settings(
        {
            "MAILGATE_VAR_DIR": str(tmp_path),
            "MAILGATE_AUTHRES_RELAYS": relays,
            "MAILGATE_AUTHSERV_IDS": ids,
        }
    )
    assert s.authres_trust() == sentence


def test_authres_relays_must_be_networks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SettingsError, match="MAILGATE_AUTHRES_RELAYS: 'mx.corp.example'"):
        load_settings(
            {"MAILGATE_VAR_DIR": str(tmp_path), "MAILGATE_AUTHRES_RELAYS": "mx.corp.example"}
        )
