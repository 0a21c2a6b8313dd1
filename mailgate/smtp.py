"""SMTP gateway stage: RCPT/DATA policy and durable acceptance (aiosmtpd adapter).

Input: SMTP sessions from trusted relays. Output: committed ``raw_messages`` rows and an
ingest task per message; every refusal is a named reply from ``mailgate.replies``.

What happens before the reply, and nothing more (STYLE §1.2):

- connect: only peers in ``trusted_peers`` (SMTP-05) — others get 554 and are closed;
- MAIL: a per-session message cap and a per-sender rate (4xx, in memory per gateway);
- RCPT: the address must be one of ours and well-formed — list, ``-request``, signed
  reply or bounce token — else 550 5.1.1 before DATA (SMTP-06); a recipient cap (SMTP-07).
  A hidden list answers only an envelope sender who may know it exists
  (``access.may_know_exists``); anyone else gets the unknown-list reply, byte for byte.
  MAIL FROM can be forged, so this only keeps the list's existence from strangers' probes;
  what is decided after acceptance goes by the parsed From (ingest);
- DATA: cheap shape limits on the header block (LOOP-06, LIM-04) and the same rate per
  author — the From field's address, read from the header block with ingest's From
  parser, never the body — so a new MAIL FROM per message does not reset the count (a
  message counts against both keys); then the exact bytes and the envelope are
  committed through the :class:`Inbox` port and only then ``250`` (SMTP-01). A storage
  failure answers 451 4.3.0 and nothing is half-stored.

The database work runs in a writer thread that commits whatever has queued up in one
transaction (group commit, as Postfix and PostgreSQL do), so the event loop never blocks
and concurrent clients share one fsync.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import secrets
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, AnyStr, Protocol

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailgate import replies
from mailgate.addressing import AddressKind, decode_recipient, redact_address
from mailgate.peers import is_loopback, is_trusted, trusted_networks
from mailgate.senders import FromError, parse_from_value
from mailgate.tokens import TokenError, TokenKind, read_token
from mailgate.trace import SessionFacts, received_field

log = logging.getLogger("mailgate.smtp")

_TOKEN_KINDS = {
    AddressKind.REPLY: TokenKind.REPLY,
    AddressKind.BOUNCE: TokenKind.BOUNCE,
    AddressKind.CONFIRM: TokenKind.CONFIRM,
    AddressKind.DIGEST: TokenKind.DIGEST,
}


@dataclass(frozen=True)
class Accepted:
    """One message as it must be stored before we answer 250."""

    raw: bytes
    mail_from: str
    rcpt_to: tuple[str, ...]
    peer: str
    helo: str


class Inbox(Protocol):
    """The storage port of the gateway (``mailgate.inbox.SqlInbox`` in production)."""

    def list_state(self, slug: str) -> str | None:
        """ "open", "archived", ``HIDDEN_LIST`` (ask :meth:`hidden_list_state`), or None
        for an unknown list."""

    def hidden_list_state(self, slug: str, sender: str) -> str | None:
        """For a hidden list: "open" or "archived" if the envelope ``sender`` may know it
        exists (``mailgate.access.may_know_exists``), else None, as for no list at all."""

    def store_many(self, messages: Sequence[Accepted]) -> list[int]:
        """Commit all messages in one transaction; return their ids in order."""

    def publish(self, raw_ids: Sequence[int]) -> None:
        """Best-effort hand-off to the workers, after commit. Must not raise."""


LIST_CACHE_SECONDS = 5.0
HIDDEN_LIST = "hidden"  # a list_state that depends on who asks


@dataclass(frozen=True)
class Limits:
    max_message_size: int = 10_240_000
    max_recipients: int = 100
    max_received: int = 50
    max_header_bytes: int = 256 * 1024
    max_header_field: int = 16 * 1024  # one field, folded lines included (LIM-04)
    max_mime_parts: int = 500
    max_messages_per_session: int = 100
    # Messages per minute, per gateway, for each envelope sender and, separately, for each
    # author (From address): a message counts against both, over either → 451 4.7.1.
    sender_rate: int = 120


# ---------------------------------------------------------------- pre-parse checks (pure)

_RECEIVED_RE = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)
_MULTIPART_RE = re.compile(rb"content-type:\s*multipart/", re.IGNORECASE)


def header_block(raw: bytes) -> bytes:
    """The bytes before the first empty line (the whole message if there is none)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(sep)
        if end != -1:
            return raw[:end]
    return raw


def longest_field(headers: bytes) -> int:
    """Length of the longest header field, continuation lines included (linear)."""
    longest = current = 0
    for line in headers.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            current += len(line) + 1
        else:
            current = len(line) + 1
        longest = max(longest, current)
    return longest


_FROM_FIELD_RE = re.compile(rb"^from[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def sniff_author(headers: bytes) -> str | None:
    """The author's address (lowercased) in a header block, for the author's rate.

    The one From field, parsed by ``senders.parse_from_value`` — the parser ingest uses to
    name the author — without parsing the message. None when there is no From field,
    more than one, or one that does not parse: ingest refuses such mail (it posts
    nothing), and the envelope sender's rate still applies to it.
    """
    fields = _FROM_FIELD_RE.findall(headers)
    if len(fields) != 1:
        return None
    value = fields[0].decode("utf-8", "surrogateescape").strip()
    try:
        return parse_from_value(value).address.lower()
    except FromError:
        return None


def check_shape(raw: bytes, limits: Limits) -> str | None:
    """A refusal reply if the message is out of bounds, else None. Cheap: no parsing."""
    headers = header_block(raw)
    if len(headers) > limits.max_header_bytes:
        return replies.HEADERS_TOO_BIG.format(limit=limits.max_header_bytes)
    if len(_RECEIVED_RE.findall(headers)) > limits.max_received:
        return replies.TOO_MANY_HOPS
    if longest_field(headers) > limits.max_header_field:
        # The stdlib decodes encoded-words quadratically: one huge field is a DoS.
        return replies.HEADERS_TOO_BIG.format(limit=limits.max_header_field)
    # Upper bounds on MIME work before any parser sees the message (LIM-04): the
    # number of boundary-looking lines bounds the parts, multipart headers the nesting.
    # Counted with bytes.count (C speed; the regexes cost ~40 µs on 5 KB, bench/ingest):
    # lines starting "--" are "\n--" plus a first line that does; and a message with few
    # "multipart/" anywhere cannot have more multipart Content-Type fields.
    if raw.count(b"\n--") + raw.startswith(b"--") > 2 * limits.max_mime_parts:
        return replies.MIME_TOO_COMPLEX.format(detail="too many parts")
    nesting_limit = limits.max_mime_parts // 5
    if raw.lower().count(b"multipart/") > nesting_limit:
        if len(_MULTIPART_RE.findall(raw)) > nesting_limit:
            return replies.MIME_TOO_COMPLEX.format(detail="too deeply nested")
    return None


# ---------------------------------------------------------------- group commit


class GroupCommitter:
    """A writer thread that commits queued messages together and resolves their futures.

    Each commit costs a fixed amount (an fsync, a transaction) whatever it holds, so the
    writer takes everything queued. When more sessions are open than the batch holds, it
    also lingers up to ``linger`` seconds for their messages, as PostgreSQL's
    ``commit_delay``/``commit_siblings`` do: under load a few hundred microseconds buy a
    commit shared by several clients; a lone client never waits (bench/ingest).
    Futures are asyncio futures of the submitting loop, settled with one loop wake-up
    per batch rather than one per message.
    """

    def __init__(
        self,
        inbox: Inbox,
        *,
        max_batch: int = 64,
        linger: float = 0.002,
        open_sessions: Callable[[], int] = lambda: 1,
    ) -> None:
        self._inbox = inbox
        self._queue: queue.Queue[tuple[Accepted, asyncio.Future[int]] | None] = queue.Queue()
        self._max_batch = max_batch
        self._linger = linger
        self._open_sessions = open_sessions
        self._thread = threading.Thread(target=self._run, name="mailgate-writer", daemon=True)
        self._thread.start()

    def submit(self, message: Accepted) -> asyncio.Future[int]:
        """Queue ``message``; the future resolves to its id once committed. Call on a loop."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put((message, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            closing = self._fill(batch)
            self._commit(batch)
            if closing:
                return

    def _fill(self, batch: list[tuple[Accepted, asyncio.Future[int]]]) -> bool:
        """Add what is queued (and, under load, what arrives shortly) to ``batch``.

        Returns True when the close marker was seen."""
        deadline = 0.0
        while len(batch) < self._max_batch:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                # Other sessions are mid-transaction: their DATA is likely on its way.
                if len(batch) >= min(self._open_sessions(), self._max_batch):
                    return False
                now = time.monotonic()
                deadline = deadline or now + self._linger
                if now >= deadline:
                    return False
                try:
                    more = self._queue.get(timeout=deadline - now)
                except queue.Empty:
                    return False
            if more is None:
                return True
            batch.append(more)
        return False

    def _commit(self, batch: list[tuple[Accepted, asyncio.Future[int]]]) -> None:
        # A client that hung up before its commit began has its future cancelled: it never
        # saw 250 and will retry, so skip it. (One cancelled after this check is stored
        # and deduplicated by Message-ID at ingest, DUR-02.)
        batch = [(message, future) for message, future in batch if not future.cancelled()]
        if not batch:
            return
        outcome: list[int] | BaseException
        try:
            ids = self._inbox.store_many([message for message, _ in batch])
            if len(ids) != len(batch):
                raise RuntimeError(f"store_many returned {len(ids)} ids for {len(batch)}")
            outcome = ids
        except Exception as exc:  # noqa: BLE001 - every storage fault becomes a 451
            log.error("storage failed for %d message(s): %s", len(batch), type(exc).__name__)
            outcome = exc
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], Any]]] = {}
        for n, (_, future) in enumerate(batch):
            result = outcome if isinstance(outcome, BaseException) else outcome[n]
            by_loop.setdefault(future.get_loop(), []).append((future, result))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # the loop has closed: its clients are gone and retry
                pass
        if isinstance(outcome, BaseException):
            return
        try:
            self._inbox.publish(outcome)
        except Exception:  # the port must not raise; if it does, the sweeper re-publishes
            log.exception("publish failed for %d message(s)", len(outcome))


def _settle(settled: list[tuple[asyncio.Future[int], Any]]) -> None:
    """On the loop: resolve each future with its id or exception (unless cancelled)."""
    for future, result in settled:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


# ---------------------------------------------------------------- the handler


class RateWindows:
    """Sliding one-minute windows of message times, one per key (in memory, per gateway).

    Memory stays bounded under a flood of distinct keys: past ``prune_at`` keys, those
    whose newest message is older than the window are forgotten (they hold no count).
    """

    WINDOW = 60.0

    def __init__(self, *, prune_at: int = 10_000) -> None:
        self._stamps: dict[str, deque[float]] = {}
        self._min_prune = self._prune_at = prune_at

    def take(self, key: str, now: float, limit: int) -> bool:
        """Count one message for ``key`` at ``now`` if it is under ``limit``; else False."""
        window = self._stamps.get(key)
        if window is None:
            window = self._stamps[key] = deque()
        while window and now - window[0] > self.WINDOW:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        if len(self._stamps) > self._prune_at:
            idle = [k for k, w in self._stamps.items() if not w or now - w[-1] > self.WINDOW]
            for gone in idle:
                del self._stamps[gone]
            # Amortised: scan again only once as many keys again have arrived.
            self._prune_at = max(self._min_prune, 2 * len(self._stamps))
        return True


class GatewayHandler:
    """aiosmtpd hooks. Holds no state that must survive a restart."""

    def __init__(
        self,
        inbox: Inbox,
        *,
        domain: str,
        secrets: Sequence[str],
        limits: Limits,
        clock: Callable[[], float] = time.monotonic,
        after_commit: Callable[[int], None] | None = None,
    ) -> None:
        self.inbox = inbox
        self.domain = domain.lower()
        self.secrets = tuple(secrets)
        self.limits = limits
        self.clock = clock
        self.after_commit = after_commit  # failpoint hook for crash tests (DUR-01)
        self.open_sessions = 0  # kept by GatewaySMTP; read by the writer thread
        self.committer = GroupCommitter(inbox, open_sessions=lambda: self.open_sessions)
        self._senders = RateWindows()  # envelope senders, counted at MAIL
        self._authors = RateWindows()  # From addresses, counted at DATA
        self._lists: dict[tuple[str, str | None], tuple[float, str | None]] = {}

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        session.mailgate_count = getattr(session, "mailgate_count", 0)  # type: ignore[attr-defined]
        # SMTP-04: we send enhanced status codes, so say so (aiosmtpd doesn't by default).
        # aiosmtpd reads pipelined commands in order, so PIPELINING (RFC 2920) is safe.
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        count = getattr(session, "mailgate_count", 0) + 1
        session.mailgate_count = count  # type: ignore[attr-defined]
        if count > self.limits.max_messages_per_session:
            return replies.RATE_LIMITED
        if not self._sender_allowed(address.lower()):
            return replies.RATE_LIMITED
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    def _sender_allowed(self, sender: str) -> bool:
        return self._senders.take(sender, self.clock(), self.limits.sender_rate)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.limits.max_recipients:
            return replies.TOO_MANY_RECIPIENTS
        reply = await self._check_recipient(address, envelope.mail_from or "")
        if reply is not None:
            log.info("refused RCPT %s: %s", redact_address(address), reply[:9])
            return reply
        if address.lower() in (r.lower() for r in envelope.rcpt_tos):
            return replies.DUPLICATE_RCPT
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return replies.RCPT_OK

    async def _check_recipient(self, address: str, sender: str) -> str | None:
        recipient = decode_recipient(address, self.domain)
        if recipient is None:
            return replies.UNKNOWN_RECIPIENT.format(address=_printable(redact_address(address)))
        if recipient.kind in _TOKEN_KINDS:
            kind = _TOKEN_KINDS[recipient.kind]
            try:
                read_token(self.secrets, kind, recipient.value)
            except TokenError:
                return replies.BAD_REPLY_ADDRESS
            return None
        if recipient.kind is AddressKind.ASK:
            return None
        try:
            state = await self._list_state(recipient.value)
            if state == HIDDEN_LIST:
                state = await self._list_state(recipient.value, sender.strip().lower())
        except Exception:  # noqa: BLE001 - database down: let the relay retry
            return replies.STORAGE_UNAVAILABLE
        if state is None:
            return replies.UNKNOWN_RECIPIENT.format(address=address)
        if state == "archived":
            return replies.LIST_ARCHIVED.format(address=address)
        return None

    async def _list_state(self, slug: str, sender: str | None = None) -> str | None:
        """The list's state (for a hidden list, as ``sender`` may see it), remembered for
        ``LIST_CACHE_SECONDS`` per (list, sender).

        A busy list gets every RCPT; asking the database (in a thread) for each one
        would cost more than the rest of the dialogue. A new or archived list is seen
        within a few seconds, and the worker checks the list again anyway.
        """
        now = self.clock()
        key = (slug, sender)
        cached = self._lists.get(key)
        if cached is not None and now - cached[0] < LIST_CACHE_SECONDS:
            return cached[1]
        if sender is None:
            state = await asyncio.to_thread(self.inbox.list_state, slug)
        else:
            state = await asyncio.to_thread(self.inbox.hidden_list_state, slug, sender)
        if len(self._lists) > 10_000:
            self._lists.clear()
        self._lists[key] = (now, state)
        return state

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if not envelope.rcpt_tos:
            return replies.NO_VALID_RECIPIENTS
        refusal = check_shape(raw, self.limits)
        if refusal is not None:
            log.info("refused DATA from %s: %s", _peer(session), refusal[:9])
            return refusal
        author = sniff_author(header_block(raw))
        if author is not None and not self._authors.take(
            author, self.clock(), self.limits.sender_rate
        ):
            log.info("refused DATA from %s: author over the rate", _peer(session))
            return replies.RATE_LIMITED
        # Our own trace field on top of the stored copy (SMTP-16); limits above were
        # checked on the bytes as the client sent them.
        raw = (
            received_field(
                _session_facts(session),
                by=server.hostname,
                queue_id=secrets.token_hex(6),
                now=datetime.now(UTC),
            )
            + raw
        )
        message = Accepted(
            raw=raw,
            mail_from=envelope.mail_from or "",
            rcpt_to=tuple(envelope.rcpt_tos),
            peer=_peer(session),
            helo=session.host_name or "",
        )
        try:
            raw_id = await self.committer.submit(message)
        except Exception:  # noqa: BLE001 - storage failure: the sender must retry (SMTP-01)
            return replies.STORAGE_UNAVAILABLE
        if self.after_commit is not None:
            self.after_commit(raw_id)
        return replies.ACCEPTED.format(ref=raw_id)


def _printable(address: str) -> str:
    """``address`` with undecodable bytes and control characters replaced, for a reply.

    aiosmtpd hands us undecodable bytes as lone surrogates, which would fail to encode (a
    500 naming the exception), and a bare CR must not reach the client.
    """
    text = address.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _session_facts(session: Session) -> SessionFacts:
    version = cipher = None
    ssl_extra = getattr(session, "ssl", None)
    if ssl_extra:
        ssl_object = ssl_extra.get("ssl_object")
        if ssl_object is not None:
            version = ssl_object.version()
            cipher = (ssl_object.cipher() or ("",))[0]
    return SessionFacts(
        peer=_peer(session),
        helo=session.host_name or "",
        esmtp=bool(session.extended_smtp),
        tls_version=version,
        tls_cipher=cipher,
    )


def _peer(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


# ---------------------------------------------------------------- server plumbing


# Enhanced codes (RFC 3463) for aiosmtpd's bare permanent errors: 500 syntax, 501 bad
# arguments, 502/503 command not available here / out of sequence, 552 too big.
_ENHANCED = {
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "530": "5.7.0",  # must issue STARTTLS first (RFC 3207 §4)
    "552": "5.3.4",
}
_HAS_ENHANCED_RE = re.compile(r"[245]\.\d{1,3}\.\d{1,3} ")


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP with a peer allow-list checked before the greeting (SMTP-05).

    aiosmtpd has no connect hook, so the check wraps ``_handle_client``: a refused peer
    gets ``554 5.7.1`` in place of the 220 greeting and the connection is closed.
    """

    def __init__(
        self, *args: Any, trusted: Sequence[Any], tls_for_loopback: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._trusted = trusted
        self._tls_for_loopback = tls_for_loopback

    async def push(self, status: AnyStr) -> None:
        # aiosmtpd's own refusals carry no enhanced status code, but we advertise
        # ENHANCEDSTATUSCODES (RFC 2034 §4), and relays act on 5.3.4 "too big" (SMTP-03).
        if isinstance(status, str) and status[:3] in _ENHANCED and status[3:4] == " ":
            if not _HAS_ENHANCED_RE.match(status, 4):
                if status[:3] == "552":
                    status = replies.TOO_BIG.format(limit=self.data_size_limit)
                else:
                    status = f"{status[:3]} {_ENHANCED[status[:3]]} {status[4:]}"
        await super().push(status)

    async def _handle_client(self) -> None:
        peer = self.session.peer if self.session else None
        host = peer[0] if isinstance(peer, tuple) and peer else ""
        if not is_trusted(host, self._trusted):
            log.warning("refused connection from untrusted peer %s", host)
            await self.push(replies.NOT_ALLOWED_PEER)
            if self.transport is not None:
                self.transport.close()
            return
        if self.tls_context is not None:
            # SMTP-11: with a certificate configured, every peer but loopback (a local
            # MTA or a test) must say STARTTLS first; aiosmtpd then answers 530.
            self.require_starttls = self._tls_for_loopback or not is_loopback(host)
        handler = self.event_handler
        handler.open_sessions += 1
        try:
            await super()._handle_client()
        finally:
            handler.open_sessions -= 1


class GatewayController(Controller):
    """Runs the gateway on its own event-loop thread (``mailgate serve`` and the tests)."""

    def __init__(
        self,
        handler: GatewayHandler,
        *,
        hostname: str,
        port: int,
        trusted_peers: Sequence[str],
        server_name: str,
        tls_context: ssl.SSLContext | None = None,
        tls_for_loopback: bool = False,
    ) -> None:
        self._trusted = trusted_networks(trusted_peers)
        self._tls_for_loopback = tls_for_loopback
        # aiosmtpd logs every command line at INFO ("RCPT TO:<reply+TOKEN@…>"); tokens
        # must never reach a log (PRIV-08), so its logger only passes warnings.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        super().__init__(
            handler,
            hostname=hostname,
            port=port,
            data_size_limit=handler.limits.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            server_hostname=server_name,
            ident="Mailgate",
            timeout=300,
            tls_context=tls_context,
            # Never AUTH: peers are authorised by address, not by password.
            auth_require_tls=True,
        )

    def factory(self) -> SMTP:
        return GatewaySMTP(
            self.handler,
            trusted=self._trusted,
            tls_for_loopback=self._tls_for_loopback,
            **self.SMTP_kwargs,
        )

    def stop(self, no_assert: bool = False) -> None:
        super().stop(no_assert=no_assert)
        self.handler.committer.close()
