"""Relay port: what the outbound stages need from a mail relay (adapters in
``worker/mailer.py``: SMTP and Maildir).

A relay is opened once per batch and sends one SMTP transaction per recipient copy over
that connection, reporting per-recipient outcomes (BNC-05): accepted, refused for good
(5xx) or for now (4xx). :class:`TransientRelayError` means the whole attempt failed for
now (connection refused or lost, 4xx to MAIL/DATA, no STARTTLS when required).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol


class TransientRelayError(Exception):
    """The relay could not take the message now; try again later."""


@dataclass(frozen=True)
class SendResult:
    accepted: tuple[str, ...]
    permanent: dict[str, str]  # recipient → reply, refused for good (5xx)
    temporary: dict[str, str]  # recipient → reply, try again (4xx)


class RelayConnection(Protocol):
    def send(self, mail_from: str, recipients: Sequence[str], message: bytes) -> SendResult: ...


class Relay(Protocol):
    def open(self) -> AbstractContextManager[RelayConnection]: ...

    def send(self, mail_from: str, recipients: Sequence[str], message: bytes) -> SendResult:
        """One message on its own connection (notices)."""


class SigningRelay:
    """A relay that passes every message through ``sign`` (DKIM) before sending.

    Used for the mail composed one message at a time — notices, digests, question mails —
    so each of those stages stays unaware of keys; list copies are signed while they are
    rendered (``mailgate.copies``) and go through the bare relay.
    """

    def __init__(self, inner: Relay, sign: Callable[[bytes], bytes]) -> None:
        self._inner = inner
        self._sign = sign

    @contextmanager
    def open(self) -> Iterator[RelayConnection]:
        with self._inner.open() as connection:
            yield _SigningConnection(connection, self._sign)

    def send(self, mail_from: str, recipients: Sequence[str], message: bytes) -> SendResult:
        return self._inner.send(mail_from, recipients, self._sign(message))


class _SigningConnection:
    def __init__(self, inner: RelayConnection, sign: Callable[[bytes], bytes]) -> None:
        self._inner = inner
        self._sign = sign

    def send(self, mail_from: str, recipients: Sequence[str], message: bytes) -> SendResult:
        return self._inner.send(mail_from, recipients, self._sign(message))
