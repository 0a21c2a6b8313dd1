"""One-click unsubscribe endpoint (RFC 8058; LIST-04, LIST-05, PRIV-08, PRIV-09): an adapter.

Input: HTTP requests to ``/u/<token>``, where the token is a signed
``TokenKind.UNSUBSCRIBE`` token for (person_id, list_id) — a list copy's link — or a
``TokenKind.DIGEST_UNSUBSCRIBE`` token for (person_id,) — a digest's link. Output: a short
HTML page, and a call to an injected port: ``unsubscribe(person_id, list_id)`` returns
``"removed"``, ``"digest"`` (a mandatory list: the member stays, digest-only) or
``"not-a-member"``; ``stop_digest(person_id, dry_run)`` stops that member's digest exactly
as the digest's mailto ``unsubscribe`` does (``mailgate.ingest.stop_digests``) and returns
what it does, or None for an unknown person.

A plain WSGI app on the standard library, served by :func:`make_server` (``wsgiref`` plus a
thread per request) when ``MAILGATE_BASE_URL`` is set. Behaviour, and why:

* ``GET``/``HEAD`` only show a confirmation page whose form POSTs back: link scanners and
  mail-security gateways fetch every URL in a message, so a GET must never change state.
  For a digest the page says what will happen (which lists leave the digest, which stay).
* ``POST`` with ``List-Unsubscribe=One-Click`` (form-urlencoded or multipart/form-data, the
  two encodings RFC 8058 §3.2 allows; the confirmation page sends the same field) acts and
  answers 200 with a page, never a redirect: mailbox providers POST without following one.
  No cookie, login or CSRF token: the token is the authentication and it can only
  unsubscribe (RFC 8058 §3.1, PRIV-09's one exception). Repeating it is harmless.
* A bad or forged token → 400 and nothing changes. Bad tokens are counted per client
  address in a sliding window; past the limit every token request from that address gets
  429 until the window passes, so guessing is slow and a guesser cannot tell a hit from a
  miss. The counter lives in this process's memory (each ``mailgate serve`` counts alone;
  behind a reverse proxy all clients share the proxy's address, so limit there too).
* Bodies over 8 KB → 413, unread. Every response: ``Cache-Control: no-store``, a CSP that
  allows nothing but posting the form to ourselves, ``nosniff``, no framing (clickjacking
  the confirmation button), ``Referrer-Policy: no-referrer`` (the token is in the URL).
* Logs never contain the token (PRIV-08): paths are logged as ``/u/…``, including the
  request lines ``wsgiref`` itself would print.
"""

from __future__ import annotations

import email.parser
import email.policy
import html
import logging
import re
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import Any, NamedTuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from sqlalchemy import select

from mailgate.db import read_only, unit_of_work
from mailgate.ingest import DigestStop, apply_membership_command, stop_digests
from mailgate.models import Delivery, MailingList, Membership, Person
from mailgate.tokens import TokenError, TokenKind, read_token

log = logging.getLogger("mailgate.unsubscribe")

MAX_BODY = 8 * 1024
BAD_TOKEN_LIMIT = 20
BAD_TOKEN_WINDOW = 60.0  # seconds
# Enough clients for any company network; beyond it the oldest are forgotten first.
_MAX_TRACKED_CLIENTS = 10_000
# Base32 (our tokens are about 40 characters); the bound keeps decoding work trivial.
_PATH_RE = re.compile(r"/u/([A-Za-z2-7]{1,128})")
_REDACT_RE = re.compile(r"/u/[^\s\"?]*")

Unsubscribe = Callable[[int, int], str]
StopDigest = Callable[[int, bool], DigestStop | None]  # (person_id, dry_run)
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_HEADERS = [
    ("Content-Type", "text/html; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    (
        "Content-Security-Policy",
        "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Robots-Tag", "noindex"),
]
_STATUS_LINES = {
    200: "200 OK",
    400: "400 Bad Request",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    413: "413 Content Too Large",
    429: "429 Too Many Requests",
    500: "500 Internal Server Error",
}

_CONFIRM_FORM = (
    '<form method="post">'
    '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
    '<button type="submit">Unsubscribe</button>'
    "</form>"
)
# (title, message) per outcome or refusal. Nothing from the request is echoed today;
# _page escapes anyway so that stays safe if that changes.
_PAGES: dict[str, tuple[str, str]] = {
    "confirm": (
        "Unsubscribe from this list?",
        "Press the button to stop getting this list's mail. On a list everyone must be "
        "on, you will get it in your daily digest instead.",
    ),
    "removed": ("You are unsubscribed", "You will get no more mail from this list."),
    "digest": (
        "You will get this list in your digest",
        "Everyone in the company stays on this list, so instead of every message you "
        "will now get it once a day in your digest.",
    ),
    "not-a-member": (
        "You are not on this list",
        "Nothing to do: you are not subscribed to this list, or you already left it.",
    ),
    "digest-confirm": (
        "Stop your daily digest?",
        "Press the button to stop getting your daily digest.",
    ),
    "digest-stopped": ("Your daily digest is stopped", "You will get no more daily digests."),
    "digest-stopped-kept": (
        "Your daily digest is stopped",
        "Only lists everyone must be on stay in it:",
    ),
    "bad-token": (
        "This link does not work",
        "The unsubscribe link is damaged or was not made by us. Use the link from a "
        "recent message, or reply to it with the word unsubscribe.",
    ),
    "missing-one-click": (
        "Nothing was changed",
        "Open the link and press the Unsubscribe button to confirm.",
    ),
    "rate-limited": ("Too many attempts", "Too many bad links from here; try again later."),
    "too-large": ("Request too large", "Nothing was changed."),
    "not-found": ("Not found", "There is nothing here."),
    "method-not-allowed": ("Not allowed", "Nothing was changed."),
    "error": ("Something went wrong", "Nothing was changed; please try again later."),
}


def redact_path(text: str) -> str:
    """``text`` with every ``/u/<token>`` replaced by ``/u/…`` (PRIV-08)."""
    return _REDACT_RE.sub("/u/…", text)


class BadTokenLimiter:
    """Bad tokens per client address in a sliding window; thread-safe, per process."""

    def __init__(
        self,
        limit: int = BAD_TOKEN_LIMIT,
        window: float = BAD_TOKEN_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, client: str) -> bool:
        with self._lock:
            times = self._seen.get(client)
            if times is None:
                return False
            self._expire(times, self._clock())
            if not times:
                del self._seen[client]
                return False
            return len(times) >= self.limit

    def record(self, client: str) -> None:
        with self._lock:
            now = self._clock()
            times = self._seen.pop(client, None) or deque()
            self._expire(times, now)
            times.append(now)
            self._seen[client] = times  # re-inserted: dict order is least recently bad first
            while len(self._seen) > _MAX_TRACKED_CLIENTS:
                del self._seen[next(iter(self._seen))]

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()


class _Answer(NamedTuple):
    status: int
    reason: str  # a key of _PAGES
    headers: Sequence[tuple[str, str]] = ()
    detail: str = ""  # a sentence added to the page's message


class UnsubscribeApp:
    """The WSGI app; see the module docstring. Build it with :func:`make_app`."""

    def __init__(
        self,
        secrets: Sequence[str],
        unsubscribe: Unsubscribe,
        limiter: BadTokenLimiter,
        stop_digest: StopDigest | None = None,
    ):
        if not secrets:
            raise ValueError("at least one secret is needed to check tokens")
        self._secrets = tuple(secrets)
        self._unsubscribe = unsubscribe
        self._stop_digest = stop_digest
        self._limiter = limiter

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        status, reason, extra, detail = self._handle(environ, method)
        title, message = _PAGES[reason]
        if detail:
            message = f"{message} {detail}"
        body = _page(title, message, form=reason in ("confirm", "digest-confirm"))
        headers = [*_HEADERS, ("Content-Length", str(len(body))), *extra]
        start_response(_STATUS_LINES[status], headers)
        log.info(
            "unsubscribe %s %s %d %s",
            method[:10],
            "/u/…" if str(environ.get("PATH_INFO", "")).startswith("/u/") else "-",
            status,
            reason,
        )
        return [] if method == "HEAD" else [body]

    def _handle(self, environ: dict[str, Any], method: str) -> _Answer:
        path = str(environ.get("PATH_INFO", ""))
        if not path.startswith("/u/"):
            return _Answer(404, "not-found")
        if method not in ("GET", "HEAD", "POST"):
            return _Answer(405, "method-not-allowed", [("Allow", "GET, HEAD, POST")])
        client = str(environ.get("REMOTE_ADDR", ""))
        if self._limiter.blocked(client):
            return _Answer(429, "rate-limited", [("Retry-After", str(int(self._limiter.window)))])
        ids = self._read(path)
        if ids is None:
            self._limiter.record(client)
            return _Answer(400, "bad-token")
        digest = len(ids) == 1
        if method != "POST":
            return self._digest(ids[0], dry_run=True) if digest else _Answer(200, "confirm")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _Answer(400, "missing-one-click")
        if length > MAX_BODY:
            return _Answer(413, "too-large")
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        if not _one_click(str(environ.get("CONTENT_TYPE", "")), body):
            return _Answer(400, "missing-one-click")
        if digest:
            return self._digest(ids[0], dry_run=False)
        person_id, list_id = ids
        try:
            outcome = self._unsubscribe(person_id, list_id)
        except Exception:
            # The port's unit of work has rolled back; say so and keep the token out of
            # the log (the traceback holds ids only).
            log.exception("unsubscribe failed for person %d list %d", person_id, list_id)
            return _Answer(500, "error")
        if outcome not in ("removed", "digest", "not-a-member"):
            log.error("unsubscribe port returned %r", outcome)
            return _Answer(500, "error")
        log.info("unsubscribe person %d list %d: %s", person_id, list_id, outcome)
        return _Answer(200, outcome)

    def _digest(self, person_id: int, *, dry_run: bool) -> _Answer:
        """A digest's link: GET says what stopping it would do, POST stops it."""
        assert self._stop_digest is not None  # _read accepts digest tokens only with it
        try:
            plan = self._stop_digest(person_id, dry_run)
        except Exception:
            log.exception("digest stop failed for person %d", person_id)
            return _Answer(500, "error")
        if plan is None:
            return _Answer(200, "digest-stopped")
        if not dry_run:
            log.info("unsubscribe person %d: digest stopped", person_id)
        kept = ", ".join(plan.kept)
        if dry_run and plan.changes:
            detail = [f"It stops the digest of: {', '.join(plan.stopped)}."] if plan.stopped else []
            if kept:
                detail.append(f"Lists everyone must be on stay in it: {kept}.")
            return _Answer(200, "digest-confirm", detail=" ".join(detail))
        if kept:
            return _Answer(200, "digest-stopped-kept", detail=f"{kept}.")
        return _Answer(200, "digest-stopped")

    def _read(self, path: str) -> tuple[int, ...] | None:
        """(person_id, list_id) of a list's link, (person_id,) of a digest's, or None."""
        match = _PATH_RE.fullmatch(path)
        if match is None:
            return None
        kinds = [(TokenKind.UNSUBSCRIBE, 2)]
        if self._stop_digest is not None:
            kinds.append((TokenKind.DIGEST_UNSUBSCRIBE, 1))
        for kind, size in kinds:
            try:
                fields = read_token(self._secrets, kind, match.group(1))
            except TokenError:
                continue
            return fields if len(fields) == size else None
        return None


def make_app(
    *,
    secrets: Sequence[str],
    unsubscribe: Unsubscribe,
    stop_digest: StopDigest | None = None,
    bad_token_limit: int = BAD_TOKEN_LIMIT,
    bad_token_window: float = BAD_TOKEN_WINDOW,
    clock: Callable[[], float] = time.monotonic,
) -> WSGIApp:
    """The one-click WSGI app. ``secrets`` newest first (old ones keep old mail working).
    Without ``stop_digest`` a digest's link is refused as a bad token."""
    limiter = BadTokenLimiter(bad_token_limit, bad_token_window, clock)
    return UnsubscribeApp(secrets, unsubscribe, limiter, stop_digest)


def unsubscribe_app_over(factory: Any, secrets: Sequence[str]) -> WSGIApp:
    """The app over the database, as ``mailgate serve`` runs it: both ports wired."""
    return make_app(
        secrets=secrets,
        unsubscribe=unsubscribe_in_db(factory),
        stop_digest=stop_digest_in_db(factory),
    )


def _one_click(content_type: str, body: bytes) -> bool:
    """Does the form carry ``List-Unsubscribe=One-Click``? (RFC 8058 §3.2)"""
    if content_type.lower().startswith("multipart/form-data"):
        return _multipart_one_click(content_type, body)
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return False
    try:
        fields = urllib.parse.parse_qs(text, keep_blank_values=True, max_num_fields=50)
    except ValueError:  # too many fields: not a one-click form
        return False
    # Strip: some senders end the body with a newline.
    return any(v.strip() == "One-Click" for v in fields.get("List-Unsubscribe", ()))


def _multipart_one_click(content_type: str, body: bytes) -> bool:
    # The body is at most MAX_BODY bytes, so the stdlib MIME parser is safe to use here.
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    try:
        root = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        for part in root.iter_parts():
            if part.get_param("name", header="content-disposition") != "List-Unsubscribe":
                continue
            value = part.get_payload(decode=True)
            if isinstance(value, bytes) and value.strip() == b"One-Click":
                return True
    except Exception:  # noqa: BLE001 - a hostile body is simply not a one-click request
        return False
    return False


def _page(title: str, message: str, *, form: bool) -> bytes:
    title_html = html.escape(title)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{title_html}</title></head>\n"
        f"<body><main><h1>{title_html}</h1><p>{html.escape(message)}</p>"
        f"{_CONFIRM_FORM if form else ''}</main></body></html>\n"
    ).encode()


# ---------------------------------------------------------------- the database port


def unsubscribe_in_db(factory: Any) -> Unsubscribe:
    """The ``unsubscribe`` port over the database: one unit of work per call, reusing the
    mail command's rules (leave; on a mandatory list switch to digest) and its audit row."""

    def unsubscribe(person_id: int, list_id: int) -> str:
        with unit_of_work(factory) as session:
            person = session.get(Person, person_id)
            ml = session.get(MailingList, list_id)
            if person is None or ml is None:
                return "not-a-member"
            # FOR UPDATE: two concurrent POSTs (a provider retrying) serialise here on
            # PostgreSQL, and the second finds the row gone instead of failing its DELETE.
            membership = session.scalar(
                select(Membership)
                .where(Membership.list_id == ml.id, Membership.person_id == person.id)
                .with_for_update()
            )
            if membership is None:
                return "not-a-member"
            if ml.mandatory:
                if membership.delivery is not Delivery.DIGEST:
                    apply_membership_command(session, ml, person, "unsubscribe")
                return "digest"  # already digest-only: no second audit row
            apply_membership_command(session, ml, person, "unsubscribe")
            return "removed"

    return unsubscribe


def stop_digest_in_db(factory: Any) -> StopDigest:
    """The ``stop_digest`` port over the database: the digest mailto's own service
    (``stop_digests``) in one unit of work per call."""

    def stop_digest(person_id: int, dry_run: bool) -> DigestStop | None:
        # The confirmation page only reads; on SQLite it takes no write lock.
        with read_only(factory) if dry_run else unit_of_work(factory) as session:
            # FOR UPDATE: a provider's retried POSTs serialise here on PostgreSQL, and the
            # second finds nothing left to stop (no second audit row).
            person = session.get(Person, person_id, with_for_update=not dry_run)
            if person is None:
                return None
            return stop_digests(session, person, dry_run=dry_run)

    return stop_digest


# ---------------------------------------------------------------- the server


class _RedactingHandler(WSGIRequestHandler):
    # A client that opens a connection and sends nothing must not hold a thread forever.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), redact_path(format % args))

    def address_string(self) -> str:
        return str(self.client_address[0])


class UnsubscribeServer(ThreadingMixIn, WSGIServer):
    """``wsgiref`` with a thread per request, served from a background thread."""

    daemon_threads = True
    allow_reuse_address = True
    _thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, name="unsubscribe-http", daemon=True
        )
        self._thread.start()

    def shutdown(self) -> None:
        """Stop serving, close the socket and wait for the serving thread."""
        super().shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def make_server(app: WSGIApp, host: str, port: int) -> UnsubscribeServer:
    """A started server for ``app`` on ``host:port`` (0 for any free port; see ``.port``)."""
    server_class = UnsubscribeServer
    if ":" in host:

        class _V6(UnsubscribeServer):
            address_family = socket.AF_INET6

        server_class = _V6
    server = server_class((host, port), _RedactingHandler)
    server.set_app(app)
    server.start()
    return server
