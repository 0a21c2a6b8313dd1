"""Mailer: the outbound relay adapter — SMTP or a local Maildir.

Input: an envelope sender, recipients and message bytes. Output: per-recipient results;
a :class:`TransientRelayError` when the whole attempt should be retried (4xx, connection
trouble). ``MAILGATE_RELAY_URL`` picks the kind: ``smtp://host:port`` (STARTTLS when
offered; ``?starttls=require`` refuses a relay without it; ``user:pass@`` for AUTH),
``smtps://`` for implicit TLS, or ``maildir:PATH`` (the embedded default: one file per
recipient in ``PATH/new`` with a ``Delivered-To:`` header naming that recipient).
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from mailgate.relay import Relay, SendResult, TransientRelayError

Mailer = Relay  # the name the worker uses for the relay adapters
__all__ = ["MaildirMailer", "Mailer", "SendResult", "SmtpMailer", "TransientRelayError"]


class MaildirMailer:
    def __init__(self, path: Path) -> None:
        self.path = path
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True, exist_ok=True)

    @contextmanager
    def open(self) -> Iterator[MaildirMailer]:
        yield self

    def send(self, mail_from: str, recipients: Sequence[str], message: bytes) -> SendResult:
        for rcpt in recipients:
            name = f"{time.time_ns()}.{uuid.uuid4().hex}.{socket.gethostname()}"
            tmp = self.path / "tmp" / name
            header = f"Return-Path: <{mail_from}>\r\nDelivered-To: {rcpt}\r\n".encode()
            with open(tmp, "wb") as fh:
                fh.write(header + message)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, self.path / "new" / name)  # atomic: readers never see a half file
        return SendResult(tuple(recipients), {}, {})


class SmtpMailer:
    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.implicit_tls = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.implicit_tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        options = parse_qs(parts.query)
        self.require_tls = options.get("starttls", [""])[0] == "require"
        self.verify = options.get("verify", ["yes"])[0] != "no"
        self.timeout = timeout
        self._context: ssl.SSLContext | None = None

    def _tls_context(self) -> ssl.SSLContext:
        # Built once and only when TLS is used: loading the CA bundle costs ~80 ms here,
        # more than sending a whole batch to a local relay (bench/fanout).
        if self._context is None:
            context = ssl.create_default_context()
            if not self.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._context = context
        return self._context

    def _connect(self) -> smtplib.SMTP:
        if self.implicit_tls:
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=self._tls_context()
            )
        client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        client.ehlo()
        if client.has_extn("starttls"):
            client.starttls(context=self._tls_context())
            client.ehlo()
        elif self.require_tls or self.username:
            client.close()
            # AUTH-04: never send (or authenticate) in cleartext when TLS is required.
            raise TransientRelayError("relay does not offer STARTTLS")
        return client

    @contextmanager
    def open(self) -> Iterator[_SmtpConnection]:
        """One connection (STARTTLS, AUTH once) for a batch of transactions."""
        try:
            client = self._connect()
            if self.username and self.password:
                client.login(self.username, self.password)
        except smtplib.SMTPResponseException as exc:
            raise TransientRelayError(f"{exc.smtp_code} at connect") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientRelayError(type(exc).__name__) from exc
        try:
            yield _SmtpConnection(client)
        finally:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()

    def send(self, mail_from: str, recipients: Sequence[str], message: bytes) -> SendResult:
        with self.open() as connection:
            return connection.send(mail_from, recipients, message)


class _SmtpConnection:
    """One SMTP transaction per copy on an open connection.

    MAIL, RCPT and DATA are issued with ``docmd`` rather than ``sendmail``: sendmail
    re-parses both addresses with ``email.utils.parseaddr`` on every call, which cost
    more than the network round trips in bench/fanout. Our addresses are already
    validated addr-specs.
    """

    def __init__(self, client: smtplib.SMTP) -> None:
        self.client = client

    def send(self, mail_from: str, recipients: Sequence[str], message: bytes) -> SendResult:
        try:
            code, reply = self.client.docmd("MAIL", f"FROM:<{mail_from}>")
            if code != 250:
                return self._refused_transaction(code, recipients)
            permanent: dict[str, str] = {}
            temporary: dict[str, str] = {}
            for rcpt in recipients:
                code, reply = self.client.docmd("RCPT", f"TO:<{rcpt}>")
                if code in (250, 251):
                    continue
                if code == 421:
                    raise TransientRelayError("421 at RCPT")
                (permanent if code >= 500 else temporary)[rcpt] = str(code)
            accepted = tuple(r for r in recipients if r not in permanent and r not in temporary)
            if not accepted:
                self._reset()
                return SendResult((), permanent, temporary)
            try:
                code, reply = self.client.data(message)
            except smtplib.SMTPDataError as exc:
                # smtplib raises (instead of returning) when DATA itself gets no 354; a
                # 5xx there is as final as one after the dot (TEST-05: smtp-sink -f data),
                # not a reason to retry for days. RSET: the refused transaction may linger.
                code = exc.smtp_code
                self._reset()
            if code != 250:
                if 400 <= code < 500:
                    raise TransientRelayError(f"{code} at DATA")
                permanent.update({r: str(code) for r in accepted})
                return SendResult((), permanent, temporary)
            return SendResult(accepted, permanent, temporary)
        except TransientRelayError:
            self._reset()
            raise
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientRelayError(type(exc).__name__) from exc

    def _refused_transaction(self, code: int, recipients: Sequence[str]) -> SendResult:
        # MAIL FROM refused: 4xx → the whole message later, 5xx → for good.
        self._reset()
        if code == 421 or 400 <= code < 500:
            raise TransientRelayError(f"{code} at MAIL")
        return SendResult((), {r: str(code) for r in recipients}, {})

    def _reset(self) -> None:
        try:
            self.client.rset()
        except (OSError, smtplib.SMTPException):
            pass


def make_mailer(relay_url: str) -> Mailer:
    if relay_url.startswith("maildir:"):
        return MaildirMailer(Path(relay_url[len("maildir:") :]))
    return SmtpMailer(relay_url)
