"""Relay port: what the outbound stages need from a mail relay (adapters in
``worker/mailer.py``: SMTP and Maildir).

A relay is opened once per batch and sends one SMTP transaction per recipient copy over
that connection, reporting per-recipient outcomes (BNC-05): accepted, refused for good
(5xx) or for now (4xx). :class:`TransientRelayError` means the whole attempt failed for
now (connection refused or lost, 4xx to MAIL/DATA, no STARTTLS when required).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
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
