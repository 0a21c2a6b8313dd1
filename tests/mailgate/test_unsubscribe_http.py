"""One-click unsubscribe (RFC 8058; LIST-04/05/06, PRIV-08/09).

The first half drives a real server on 127.0.0.1 backed by the real database (SQLite, and
PostgreSQL in the second pass) with ``http.client``, as a mailbox provider would. The second
half calls the WSGI app directly with a recording fake port and a fake clock.
"""

from __future__ import annotations

import http.client
import io
import logging
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from sqlalchemy import select

from mailgate.directory import get_list
from mailgate.ingest import DigestStop
from mailgate.models import AuditEntry, Delivery, Membership
from mailgate.tokens import TokenKind, make_token
from mailgate.unsubscribe_http import (
    MAX_BODY,
    _page,
    make_app,
    make_server,
    redact_path,
    unsubscribe_in_db,
)
from tests.conftest import SECRET

ALICE = "a@corp.example"
ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SECURITY_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


def mutate(token: str) -> str:
    """Flip one character in the MAC part: still valid base32, no longer signed by us."""
    i = len(token) - 5
    return token[:i] + ("b" if token[i] != "b" else "c") + token[i + 1 :]


# ---------------------------------------------------------------- real server + database


@dataclass
class Site:
    port: int
    session_factory: Any

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, dict(resp.getheaders()), resp.read().decode())
        finally:
            conn.close()

    def token(self, slug: str, email: str) -> str:
        with self.session_factory() as s:
            list_id = get_list(s, slug).id
        from mailgate.directory import get_person

        with self.session_factory() as s:
            person_id = get_person(s, email).id
        return make_token(SECRET, TokenKind.UNSUBSCRIBE, person_id, list_id)

    def delivery(self, slug: str, email: str) -> Delivery | None:
        from mailgate.directory import get_person

        with self.session_factory() as s:
            ml, person = get_list(s, slug), get_person(s, email)
            m = s.scalar(
                select(Membership).where(
                    Membership.list_id == ml.id, Membership.person_id == person.id
                )
            )
            return None if m is None else m.delivery

    def audit(self, slug: str, email: str) -> list[tuple[str, str]]:
        with self.session_factory() as s:
            rows = s.scalars(
                select(AuditEntry)
                .where(AuditEntry.target == f"list:{slug}/{email}")
                .order_by(AuditEntry.id)
            ).all()
            return [(r.action, (r.after or {}).get("delivery", "")) for r in rows]


@pytest.fixture
def site(session_factory: Any, directory: Any) -> Iterator[Site]:
    directory.list("eng")
    directory.member("eng", ALICE)
    directory.list("all", mandatory=True)
    directory.member("all", ALICE)
    app = make_app(secrets=(SECRET,), unsubscribe=unsubscribe_in_db(session_factory))
    server = make_server(app, "127.0.0.1", 0)
    try:
        yield Site(server.port, session_factory)
    finally:
        server.shutdown()


def test_get_only_confirms_and_post_unsubscribes(site: Site) -> None:
    path = f"/u/{site.token('eng', ALICE)}"

    shown = site.request("GET", path)
    assert shown.status == 200
    assert 'method="post"' in shown.body and "One-Click" in shown.body
    assert site.delivery("eng", ALICE) is Delivery.EVERY  # a link scanner changed nothing

    done = site.request("POST", path, ONE_CLICK, FORM)
    assert done.status == 200
    assert "Location" not in done.headers and "Set-Cookie" not in done.headers
    assert "You are unsubscribed" in done.body
    assert site.delivery("eng", ALICE) is None
    assert site.delivery("all", ALICE) is Delivery.EVERY  # the token names one list
    assert site.audit("eng", ALICE) == [("member.add", "every"), ("member.remove", "")]

    again = site.request("POST", path, ONE_CLICK, FORM)
    assert again.status == 200 and "not on this list" in again.body
    assert site.audit("eng", ALICE) == [("member.add", "every"), ("member.remove", "")]


def test_a_mandatory_list_switches_to_digest(site: Site) -> None:
    path = f"/u/{site.token('all', ALICE)}"
    for _ in range(2):  # the repeat is harmless and writes no second audit row
        reply = site.request("POST", path, ONE_CLICK, FORM)
        assert reply.status == 200 and "digest" in reply.body
        assert "Location" not in reply.headers
        assert site.delivery("all", ALICE) is Delivery.DIGEST
    assert site.audit("all", ALICE) == [("member.add", "every"), ("member.set", "digest")]


def test_the_confirmation_page_form_unsubscribes(site: Site) -> None:
    path = f"/u/{site.token('eng', ALICE)}"
    form = FormReader.read(site.request("GET", path).body)
    assert form.method == "post" and form.action in (None, "")  # posts back to this URL
    reply = site.request("POST", path, urllib.parse.urlencode(form.fields).encode(), FORM)
    assert reply.status == 200
    assert site.delivery("eng", ALICE) is None


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(mutate, id="mutated-mac"),
        pytest.param(lambda t: t[:-4], id="truncated"),
        pytest.param(lambda t: t + "aaaa", id="extended"),
        pytest.param(lambda t: t.replace(t[3], "1"), id="not-base32"),
        pytest.param(
            lambda t: make_token("someone-elses-key", TokenKind.UNSUBSCRIBE, 1, 1), id="other-key"
        ),
    ],
)
def test_a_forged_token_changes_nothing(site: Site, forge: Callable[[str], str]) -> None:
    path = f"/u/{forge(site.token('eng', ALICE))}"
    before = site.audit("eng", ALICE)
    for method in ("GET", "POST"):
        reply = site.request(method, path, ONE_CLICK if method == "POST" else None, FORM)
        assert reply.status == 400
        assert "does not work" in reply.body
    assert site.delivery("eng", ALICE) is Delivery.EVERY
    assert site.audit("eng", ALICE) == before


@pytest.mark.parametrize("path", ["/", "/unsubscribe", "/u", "/favicon.ico", "/static/../u/x"])
def test_other_paths_are_not_found(site: Site, path: str) -> None:
    reply = site.request("GET", path)
    assert reply.status == 404
    assert reply.headers["Cache-Control"] == "no-store"


def test_bad_tokens_are_rate_limited_per_client(site: Site) -> None:
    good = f"/u/{site.token('eng', ALICE)}"
    bad = f"/u/{mutate(site.token('eng', ALICE))}"
    statuses = [site.request("GET", bad).status for _ in range(21)]
    assert statuses == [400] * 20 + [429]
    # While blocked, a guesser cannot tell a good token from a bad one.
    blocked = site.request("POST", good, ONE_CLICK, FORM)
    assert blocked.status == 429 and "Retry-After" in blocked.headers
    assert site.delivery("eng", ALICE) is Delivery.EVERY


def test_tokens_never_reach_the_logs(
    site: Site, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    token = site.token("eng", ALICE)
    caplog.set_level(logging.DEBUG)
    site.request("GET", f"/u/{token}")
    site.request("POST", f"/u/{token}", ONE_CLICK, FORM)
    site.request("GET", f"/u/{mutate(token)}")
    site.request("DELETE", f"/u/{token}")
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "/u/…" in caplog.text  # the requests were logged, redacted
    assert token not in logged and mutate(token) not in logged
    assert token[5:25] not in logged


# ---------------------------------------------------------------- the WSGI app alone


@dataclass
class FakePort:
    outcome: str = "removed"
    calls: list[tuple[int, int]] = field(default_factory=list)
    error: Exception | None = None

    def __call__(self, person_id: int, list_id: int) -> str:
        self.calls.append((person_id, list_id))
        if self.error is not None:
            raise self.error
        return self.outcome


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


TOKEN = make_token(SECRET, TokenKind.UNSUBSCRIBE, 7, 3)


def call(
    app: Any,
    method: str,
    path: str,
    body: bytes = b"",
    content_type: str = "application/x-www-form-urlencoded",
    client: str = "192.0.2.10",
) -> Reply:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "REMOTE_ADDR": client,
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    chunks = b"".join(app(environ, start_response))
    return Reply(seen["status"], seen["headers"], chunks.decode())


def multipart(fields: dict[str, str], boundary: str = "----geckoformboundary4f2a9c") -> bytes:
    lines = []
    for name, value in fields.items():
        lines += [f"--{boundary}", f'Content-Disposition: form-data; name="{name}"', "", value]
    lines += [f"--{boundary}--", ""]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", f"/u/{TOKEN}", b"", 200),
        ("HEAD", f"/u/{TOKEN}", b"", 200),
        ("POST", f"/u/{TOKEN}", ONE_CLICK, 200),
        ("POST", f"/u/{TOKEN}", b"", 400),
        ("GET", f"/u/{mutate(TOKEN)}", b"", 400),
        ("GET", "/robots.txt", b"", 404),
        ("PUT", f"/u/{TOKEN}", ONE_CLICK, 405),
        ("DELETE", f"/u/{TOKEN}", b"", 405),
        ("POST", f"/u/{TOKEN}", ONE_CLICK + b"&pad=" + b"x" * MAX_BODY, 413),
    ],
)
def test_every_response_is_uncacheable_html_with_a_strict_policy(
    method: str, path: str, body: bytes, status: int
) -> None:
    reply = call(make_app(secrets=(SECRET,), unsubscribe=FakePort()), method, path, body)
    assert reply.status == status
    for name, value in SECURITY_HEADERS.items():
        assert reply.headers[name] == value
    csp = reply.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src" not in csp and "unsafe-inline" not in csp
    assert "Location" not in reply.headers and "Set-Cookie" not in reply.headers
    if method == "HEAD":
        assert reply.body == ""
    if status == 405:
        assert reply.headers["Allow"] == "GET, HEAD, POST"


@pytest.mark.parametrize(
    ("content_type", "body", "acts"),
    [
        ("application/x-www-form-urlencoded", b"List-Unsubscribe=One-Click", True),
        ("application/x-www-form-urlencoded; charset=UTF-8", b"List-Unsubscribe=One-Click", True),
        ("application/x-www-form-urlencoded", b"List-Unsubscribe=One-Click\r\n", True),
        (
            "multipart/form-data; boundary=----geckoformboundary4f2a9c",
            multipart({"List-Unsubscribe": "One-Click"}),
            True,
        ),
        (
            "multipart/form-data; boundary=----geckoformboundary4f2a9c",
            multipart({"other": "x", "List-Unsubscribe": "One-Click"}),
            True,
        ),
        (
            "multipart/form-data; boundary=----geckoformboundary4f2a9c",
            multipart({"List-Unsubscribe": "Maybe"}),
            False,
        ),
        ("multipart/form-data; boundary=nope", multipart({"List-Unsubscribe": "One-Click"}), False),
        ("multipart/form-data", b"\xff\xfe garbage", False),
        ("application/x-www-form-urlencoded", b"", False),
        ("application/x-www-form-urlencoded", b"List-Unsubscribe=Two-Click", False),
        ("application/x-www-form-urlencoded", b"list-unsubscribe=one-click", False),
        ("application/x-www-form-urlencoded", b"\xff=\xfe", False),
        ("application/x-www-form-urlencoded", b"&".join([b"a=1"] * 60) + b"&" + ONE_CLICK, False),
        ("text/plain", b"List-Unsubscribe=One-Click", True),  # lenient: the field is there
    ],
)
def test_post_acts_only_on_the_one_click_field(content_type: str, body: bytes, acts: bool) -> None:
    port = FakePort()
    reply = call(
        make_app(secrets=(SECRET,), unsubscribe=port), "POST", f"/u/{TOKEN}", body, content_type
    )
    assert port.calls == ([(7, 3)] if acts else [])
    assert reply.status == (200 if acts else 400)


@pytest.mark.parametrize(
    ("outcome", "words"),
    [
        ("removed", "You are unsubscribed"),
        ("digest", "once a day in your digest"),
        ("not-a-member", "not on this list"),
    ],
)
def test_each_outcome_has_its_page(outcome: str, words: str) -> None:
    app = make_app(secrets=(SECRET,), unsubscribe=FakePort(outcome))
    reply = call(app, "POST", f"/u/{TOKEN}", ONE_CLICK)
    assert reply.status == 200 and words in reply.body


def test_get_and_head_never_call_the_port() -> None:
    port = FakePort()
    app = make_app(secrets=(SECRET,), unsubscribe=port)
    for method in ("GET", "HEAD", "GET"):
        assert call(app, method, f"/u/{TOKEN}").status == 200
    assert port.calls == []


def test_a_failing_port_is_a_500_without_the_token_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = FakePort(error=RuntimeError("database is locked"))
    caplog.set_level(logging.INFO, logger="mailgate.unsubscribe")
    reply = call(make_app(secrets=(SECRET,), unsubscribe=port), "POST", f"/u/{TOKEN}", ONE_CLICK)
    assert reply.status == 500 and "Nothing was changed" in reply.body
    assert "database is locked" in caplog.text and TOKEN not in caplog.text


def test_an_unknown_outcome_is_a_500() -> None:
    app = make_app(secrets=(SECRET,), unsubscribe=FakePort("<script>"))
    reply = call(app, "POST", f"/u/{TOKEN}", ONE_CLICK)
    assert reply.status == 500 and "<script>" not in reply.body


@pytest.mark.parametrize(
    ("minted_with", "secrets", "status"),
    [
        ("new-key", ("new-key", "old-key"), 200),
        ("old-key", ("new-key", "old-key"), 200),  # mail sent before the rotation
        ("retired-key", ("new-key", "old-key"), 400),
    ],
)
def test_key_rotation_keeps_old_links_working(
    minted_with: str, secrets: tuple[str, ...], status: int
) -> None:
    token = make_token(minted_with, TokenKind.UNSUBSCRIBE, 7, 3)
    port = FakePort()
    reply = call(make_app(secrets=secrets, unsubscribe=port), "POST", f"/u/{token}", ONE_CLICK)
    assert reply.status == status
    assert port.calls == ([(7, 3)] if status == 200 else [])


@pytest.mark.parametrize(
    "token",
    [
        make_token(SECRET, TokenKind.REPLY, 7, 3),  # a reply token is not an unsubscribe token
        make_token(SECRET, TokenKind.UNSUBSCRIBE, 7),  # wrong arity
        make_token(SECRET, TokenKind.UNSUBSCRIBE, 7, 3, 1),
        "a" * 129,
        "",
    ],
)
def test_tokens_of_another_kind_or_shape_are_refused(token: str) -> None:
    port = FakePort()
    reply = call(make_app(secrets=(SECRET,), unsubscribe=port), "POST", f"/u/{token}", ONE_CLICK)
    assert reply.status == 400 and port.calls == []


def test_rate_limit_window_is_per_client_and_slides() -> None:
    clock = Clock()
    port = FakePort()
    app = make_app(secrets=(SECRET,), unsubscribe=port, clock=clock)
    bad = f"/u/{mutate(TOKEN)}"
    assert [call(app, "GET", bad).status for _ in range(21)] == [400] * 20 + [429]
    assert call(app, "POST", f"/u/{TOKEN}", ONE_CLICK).status == 429
    assert call(app, "POST", f"/u/{TOKEN}", ONE_CLICK, client="192.0.2.99").status == 200
    clock.now += 59
    assert call(app, "GET", bad).status == 429  # still inside the window
    clock.now += 2
    assert call(app, "POST", f"/u/{TOKEN}", ONE_CLICK).status == 200
    assert port.calls == [(7, 3), (7, 3)]


def test_good_tokens_do_not_count_against_the_limit() -> None:
    app = make_app(secrets=(SECRET,), unsubscribe=FakePort(), clock=Clock())
    statuses = {call(app, "POST", f"/u/{TOKEN}", ONE_CLICK).status for _ in range(50)}
    assert statuses == {200}


def test_pages_escape_what_they_show() -> None:
    page = _page('<img src=x onerror="alert(1)">', "a & b", form=False).decode()
    assert "<img" not in page and "&lt;img" in page and "a &amp; b" in page


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('"POST /u/abcdef234 HTTP/1.1" 200 312', '"POST /u/… HTTP/1.1" 200 312'),
        ('"GET /u/abc?x=1 HTTP/1.0" 400 1', '"GET /u/…?x=1 HTTP/1.0" 400 1'),
        ('"GET /other HTTP/1.0" 404 1', '"GET /other HTTP/1.0" 404 1'),
    ],
)
def test_redact_path(line: str, expected: str) -> None:
    assert redact_path(line) == expected


# ---------------------------------------------------------------- helpers


class FormReader(HTMLParser):
    """The first form of a page: its method, action and the fields it would submit."""

    def __init__(self) -> None:
        super().__init__()
        self.method: str | None = None
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    @classmethod
    def read(cls, page: str) -> FormReader:
        reader = cls()
        reader.feed(page)
        return reader

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and self.method is None:
            self.method = (values.get("method") or "get").lower()
            self.action = values.get("action")
        elif tag == "input" and values.get("name"):
            self.fields[str(values["name"])] = values.get("value") or ""


# ---------------------------------------------------------------- a digest's link (issue 12 item 8)

DIGEST_TOKEN = make_token(SECRET, TokenKind.DIGEST_UNSUBSCRIBE, 7)


@dataclass
class FakeDigestPort:
    plan: DigestStop | None = DigestStop(
        stopped=("Engineering",), kept=("Everyone",), summary=False
    )
    calls: list[tuple[int, bool]] = field(default_factory=list)

    def __call__(self, person_id: int, dry_run: bool) -> DigestStop | None:
        self.calls.append((person_id, dry_run))
        return self.plan


def test_a_digest_link_only_asks_on_get_and_stops_on_post() -> None:
    digest, lists = FakeDigestPort(), FakePort()
    app = make_app(secrets=(SECRET,), unsubscribe=lists, stop_digest=digest)
    for method in ("GET", "HEAD"):
        assert call(app, method, f"/u/{DIGEST_TOKEN}").status == 200
    shown = call(app, "GET", f"/u/{DIGEST_TOKEN}")
    assert "Stop your daily digest?" in shown.body and 'method="post"' in shown.body
    assert "It stops the digest of: Engineering." in shown.body
    assert "stay in it: Everyone." in shown.body
    assert digest.calls == [(7, True)] * 3  # a link scanner only ever asked

    assert call(app, "POST", f"/u/{DIGEST_TOKEN}", b"").status == 400  # no one-click field
    done = call(app, "POST", f"/u/{DIGEST_TOKEN}", ONE_CLICK)
    assert done.status == 200 and "Your daily digest is stopped" in done.body
    assert digest.calls[-1] == (7, False) and lists.calls == []


@pytest.mark.parametrize(
    ("plan", "words"),
    [
        (DigestStop((), (), False), "You will get no more daily digests."),
        (
            DigestStop((), ("Everyone",), False),
            "Only lists everyone must be on stay in it: Everyone.",
        ),
        (None, "You will get no more daily digests."),  # an erased person: nothing to do
    ],
)
def test_a_digest_with_nothing_left_to_stop_offers_no_button(
    plan: DigestStop | None, words: str
) -> None:
    app = make_app(secrets=(SECRET,), unsubscribe=FakePort(), stop_digest=FakeDigestPort(plan))
    shown = call(app, "GET", f"/u/{DIGEST_TOKEN}")
    assert shown.status == 200 and 'method="post"' not in shown.body and words in shown.body


@pytest.mark.parametrize(
    "token",
    [
        make_token(SECRET, TokenKind.DIGEST_UNSUBSCRIBE, 7, 3),  # wrong arity
        make_token("another-key", TokenKind.DIGEST_UNSUBSCRIBE, 7),
        make_token(SECRET, TokenKind.DIGEST, 7, 3),  # the digest's reply token is not a link
    ],
)
def test_digest_tokens_of_another_key_or_shape_are_refused(token: str) -> None:
    digest = FakeDigestPort()
    app = make_app(secrets=(SECRET,), unsubscribe=FakePort(), stop_digest=digest)
    assert call(app, "POST", f"/u/{token}", ONE_CLICK).status == 400 and digest.calls == []


def test_a_list_link_never_stops_a_digest() -> None:
    digest, lists = FakeDigestPort(), FakePort()
    app = make_app(secrets=(SECRET,), unsubscribe=lists, stop_digest=digest)
    assert call(app, "POST", f"/u/{TOKEN}", ONE_CLICK).status == 200
    assert lists.calls == [(7, 3)] and digest.calls == []
