"""Settings: the only reader of the environment.

Input: a mapping of environment variables (``os.environ`` by default). Output: one frozen
:class:`Settings`. Every other module receives settings (or the values it needs) as
arguments; nothing else reads ``os.environ``.

Defaults give the embedded shape: SQLite under ``./var/``, kombu's filesystem broker
under ``./var/broker``, outbound mail into the Maildir ``./var/outbox``. Production sets
``MAILGATE_DATABASE_URL=postgresql+psycopg://…`` and ``MAILGATE_BROKER_URL=redis://…``.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


SECRET_FIELDS = frozenset({"secret_key"})


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    database_url: str
    broker_url: str
    domain: str
    smtp_host: str
    smtp_port: int
    relay_url: str
    secret_key: str
    base_url: str | None
    trusted_peers: tuple[str, ...]
    authserv_ids: frozenset[str]
    company_domains: frozenset[str]
    max_message_size: int
    max_recipients: int
    max_received_headers: int
    http_port: int
    dkim_key_file: Path | None = None  # PEM, 0600; signs all outbound mail when set
    dkim_selector: str = "mailgate"
    tls_cert_file: Path | None = None  # PEM chain: the gateway offers STARTTLS (SMTP-11)
    tls_key_file: Path | None = None  # PEM, 0600
    tls_for_loopback: bool = False  # require STARTTLS from loopback peers too
    send_lease_seconds: int = 300  # how long a claimed batch is a worker's (DUR-04)
    relay_rate: float = 0.0  # copies per second per worker process; 0 = no limit (LIM-07)
    verify_dkim: bool = True  # look up DKIM keys in DNS for privileged posts (SPOOF-03)
    authres_hops: int = 0  # Received fields the trusted A-R may sit under (SPOOF-02)
    # Peers whose Authentication-Results count at all (SPOOF-02); none by default. Not
    # trusted_peers: being allowed to connect is no reason to be believed.
    authres_relays: tuple[str, ...] = ()
    failpoint: str = ""  # crash-test hook: "after-commit" kills the gateway before its 250
    company_name: str = "Mailgate"  # the digest's heading ("Acme digest · Tuesday 3 March")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def broker_is_embedded(self) -> bool:
        return self.broker_url.startswith("filesystem")

    def authres_trust(self) -> str:
        """Whose Authentication-Results count, in one sentence (``mailgate config``)."""
        dkim_only = "only a valid DKIM signature authenticates a post"
        if not self.authres_relays and not self.authserv_ids:
            return (
                "not trusted from any peer (set MAILGATE_AUTHRES_RELAYS and "
                f"MAILGATE_AUTHSERV_IDS): {dkim_only}"
            )
        if not self.authserv_ids:
            return f"not trusted: MAILGATE_AUTHSERV_IDS is unset, so {dkim_only}"
        if not self.authres_relays:
            return f"not trusted: MAILGATE_AUTHRES_RELAYS is unset, so {dkim_only}"
        return (
            f"trusted only from {', '.join(self.authres_relays)} with authserv-id "
            f"{', '.join(sorted(self.authserv_ids))}; otherwise {dkim_only}"
        )

    @property
    def one_click(self) -> bool:
        """Whether copies and digests carry RFC 8058 one-click (List-Unsubscribe-Post),
        which ``mailgate.copies`` and ``digests.compose`` add only for an https link."""
        return self.base_url is not None and self.base_url.startswith("https://")

    def unsubscribe_links(self) -> str:
        """What the List-Unsubscribe fields of copies and digests carry, in one sentence
        (``mailgate config``, and a warning at start-up when one-click is off)."""
        if self.base_url is None:
            return "mailto only: MAILGATE_BASE_URL is unset, so no one-click link"
        if not self.base_url.startswith("https://"):
            return (
                f"mailto and {self.base_url}/u/… without List-Unsubscribe-Post: one-click "
                "(RFC 8058) needs an https MAILGATE_BASE_URL, so Gmail and Yahoo show no "
                "unsubscribe button"
            )
        return f"mailto and one-click {self.base_url}/u/… (List-Unsubscribe-Post)"

    def one_click_warning(self) -> str | None:
        """The start-up warning for an http base URL (issue 17: it was silent)."""
        if self.base_url is None or self.one_click:
            return None
        return f"unsubscribe links: {self.unsubscribe_links()}"

    def company_scope(self) -> str:
        """Who is in the company, in one sentence (``mailgate config``): the directory
        decides, never the domain; the company domains only name the company."""
        everyone = "everyone with an address of record in the directory"
        if not self.company_domains:
            return f"(any) {everyone}, whatever their domain"
        domains = ", ".join(sorted(self.company_domains))
        return f"{domains} (names the company); {everyone} is in it, whatever their domain"

    def masked(self) -> dict[str, str]:
        """Every setting as display text, with secrets and URL passwords masked."""
        shown: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS:
                text = "****" if value else ""
            elif isinstance(value, frozenset | tuple):
                text = (
                    ", ".join(sorted(value)) if isinstance(value, frozenset) else ", ".join(value)
                )
            elif isinstance(value, str) and "://" in value:
                text = mask_url_password(value)
            else:
                text = str(value)
            shown[f.name] = text
        return shown


def mask_url_password(url: str) -> str:
    """``scheme://user:pw@host`` → ``scheme://user:****@host``; other URLs unchanged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _csv(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, default).split(",") if item.strip())


def load_secret(var_dir: Path) -> str:
    """Read the token-signing secret from ``var/secret.key``, creating it (0600) once.

    The file is created with O_EXCL so two processes starting together agree on one key.
    """
    path = var_dir / "secret.key"
    var_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SettingsError(
                f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
            ) from None
        secret = path.read_text().strip()
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return path.read_text().strip()
    if len(secret) < 32:
        raise SettingsError(f"{path} holds a secret shorter than 32 characters")
    return secret


def _key_file(value: str | None, name: str = "MAILGATE_DKIM_KEY_FILE") -> Path | None:
    """A private key file must exist and be readable by its owner only (PRIV-07)."""
    if not value:
        return None
    path = Path(value)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        raise SettingsError(f"{name}: cannot read {path}") from None
    if mode & 0o077:
        raise SettingsError(f"{name}: {path} is readable by others (chmod 600)")
    return path


def _cert_file(value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise SettingsError(f"MAILGATE_TLS_CERT: cannot read {path}")
    return path


def _check_relay(url: str) -> str:
    scheme = url.split(":", 1)[0]
    if scheme not in {"smtp", "smtps", "maildir"}:
        raise SettingsError(
            f"MAILGATE_RELAY_URL must be smtp://host:port, smtps://… or maildir:PATH, got {url!r}"
        )
    return url


def _check_peers(peers: tuple[str, ...], name: str = "MAILGATE_TRUSTED_PEERS") -> tuple[str, ...]:
    for peer in peers:
        try:
            ipaddress.ip_network(peer, strict=False)
        except ValueError:
            raise SettingsError(f"{name}: {peer!r} is not an IP network") from None
    return peers


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from the environment (``os.environ`` when not given)."""
    env = os.environ if environ is None else environ
    var_dir = Path(env.get("MAILGATE_VAR_DIR", "var")).resolve()
    database_url = env.get("MAILGATE_DATABASE_URL") or f"sqlite:///{var_dir / 'mailgate.db'}"
    if database_url.startswith("postgresql://"):
        # We ship psycopg 3; plain postgresql:// would make SQLAlchemy look for psycopg2.
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]
    if not database_url.startswith(("sqlite", "postgresql+psycopg")):
        raise SettingsError("MAILGATE_DATABASE_URL must be a sqlite:/// or postgresql:// URL")
    domain = domain_from_env(env)
    if not domain or "@" in domain or " " in domain:
        raise SettingsError(f"MAILGATE_DOMAIN must be a domain name, got {domain!r}")
    secret = env.get("MAILGATE_SECRET_KEY") or load_secret(var_dir)
    if len(secret) < 32:
        raise SettingsError("MAILGATE_SECRET_KEY must be at least 32 characters")
    base_url = (env.get("MAILGATE_BASE_URL") or "").rstrip("/") or None
    company = _csv(env, "MAILGATE_COMPANY_DOMAINS", default_company_domains(domain))
    return Settings(
        var_dir=var_dir,
        database_url=database_url,
        broker_url=env.get("MAILGATE_BROKER_URL") or "filesystem://",
        domain=domain,
        smtp_host=env.get("MAILGATE_SMTP_HOST", "127.0.0.1"),
        smtp_port=_int(env, "MAILGATE_SMTP_PORT", 2525, 0, 65535),
        relay_url=_check_relay(env.get("MAILGATE_RELAY_URL") or f"maildir:{var_dir / 'outbox'}"),
        secret_key=secret,
        base_url=base_url,
        trusted_peers=_check_peers(_csv(env, "MAILGATE_TRUSTED_PEERS", "127.0.0.0/8,::1/128")),
        authserv_ids=frozenset(_csv(env, "MAILGATE_AUTHSERV_IDS", "")),
        company_domains=frozenset(d.lower() for d in company),
        max_message_size=_int(env, "MAILGATE_MAX_MESSAGE_SIZE", 10_240_000, 1024, 2**31),
        max_recipients=_int(env, "MAILGATE_MAX_RECIPIENTS", 100, 1, 10_000),
        max_received_headers=_int(env, "MAILGATE_MAX_RECEIVED", 50, 5, 500),
        http_port=_int(env, "MAILGATE_HTTP_PORT", 8025, 0, 65535),
        dkim_key_file=_key_file(env.get("MAILGATE_DKIM_KEY_FILE")),
        dkim_selector=env.get("MAILGATE_DKIM_SELECTOR", "mailgate"),
        tls_cert_file=_cert_file(env.get("MAILGATE_TLS_CERT")),
        tls_key_file=_key_file(env.get("MAILGATE_TLS_KEY"), "MAILGATE_TLS_KEY"),
        tls_for_loopback=env.get("MAILGATE_TLS_FOR_LOOPBACK", "no").lower() in {"yes", "1", "true"},
        send_lease_seconds=_int(env, "MAILGATE_SEND_LEASE", 300, 1, 3600),
        relay_rate=float(_int(env, "MAILGATE_RELAY_RATE", 0, 0, 1_000_000)),
        verify_dkim=env.get("MAILGATE_VERIFY_DKIM", "yes").lower() not in {"no", "0", "false"},
        authres_hops=_int(env, "MAILGATE_AUTHRES_HOPS", 0, 0, 20),
        authres_relays=_check_peers(
            _csv(env, "MAILGATE_AUTHRES_RELAYS", ""), "MAILGATE_AUTHRES_RELAYS"
        ),
        failpoint=env.get("MAILGATE_FAILPOINT", ""),
        company_name=company_name(env.get("MAILGATE_COMPANY_NAME", ""), company),
    )


def default_company_domains(domain: str) -> str:
    """The parent of ``MAILGATE_DOMAIN`` ("lists.corp.example" → "corp.example"), but only
    when it can be an organisation's domain: a one-label parent ("localhost" for the
    default "lists.localhost", or a bare TLD) names no company, so there is none (issue 17).
    """
    parent = domain.split(".", 1)[1] if "." in domain else ""
    return parent if "." in parent.strip(".") else ""


def company_name(configured: str, company_domains: tuple[str, ...]) -> str:
    """``MAILGATE_COMPANY_NAME``, or the first company domain's name ("acme.com" →
    "Acme"; a single-label domain such as "localhost" names no one: "Mailgate")."""
    name = " ".join(configured.split())[:64]
    if name:
        return name
    labels = company_domains[0].split(".") if company_domains else []
    if len(labels) < 2 or not labels[0]:
        return "Mailgate"
    return labels[0].replace("-", " ").title()


def domain_from_env(environ: Mapping[str, str] | None = None) -> str:
    """Just the mail domain, with no side effects (``mailgate inspect`` must not create
    ``var/`` or a secret)."""
    env = os.environ if environ is None else environ
    return env.get("MAILGATE_DOMAIN", "lists.localhost").strip().lower()
