"""A nine-item digest as people see it: rendered by headless Chromium at a phone's width
(390 px, an iPhone 14) and a desktop's (1200 px), measured, and kept as screenshots.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: no
port, no extra package): a headless window cannot be narrower than 500 px, so the phone
is emulated (``Emulation.setDeviceMetricsOverride``), as DevTools' device mode does.

On a phone the whole digest — heading, nine items, commands and footer — must fit in
about one and a half screens (1.5 × 844 px). The screenshots land in
``tests/artifacts/digest/`` (git-ignored) and their paths are printed.

Skipped when Chromium is not installed, unless ``MAILGATE_REQUIRE_CHROMIUM=1`` (CI,
.ci/run installs it), which turns the skip into a failure.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from digests.compose import compose_digest
from tests.digests.test_compose import KINDS, NOW, context, item, plan

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
if CHROMIUM is None:
    if os.environ.get("MAILGATE_REQUIRE_CHROMIUM") == "1":
        pytest.fail("chromium is not on PATH but MAILGATE_REQUIRE_CHROMIUM=1", pytrace=False)
    pytest.skip(
        "chromium is not installed (apt-get install chromium); "
        "set MAILGATE_REQUIRE_CHROMIUM=1 to make this an error",
        allow_module_level=True,
    )

# bash, not sh: dash's redirections take single-digit descriptors only.
BASH = shutil.which("bash") or "/bin/bash"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "digest"
PHONE_SCREEN = 844  # px, an iPhone 14 in portrait at 390 px wide
HEIGHT = "Math.ceil(document.querySelector('table.page').getBoundingClientRect().bottom)"
DEADLINE = 20.0  # seconds for the whole browser session


def nine_item_digest() -> str:
    """The HTML part of a digest of nine items in five groups, as rank orders them."""
    counts = {"replies-to-you": 2, "question": 2, "announcement": 2, "lively": 2, "new": 1}
    items = []
    for kind in KINDS:
        for _ in range(counts[kind]):
            n = len(items)
            items.append(item(n, kind=kind, replies=1 + (n * 3) % 11, likes=(n * 2) % 7))
    p = plan(tuple(items), others=6)
    raw = compose_digest(p, context(p, company_name="Corp"), now=NOW)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    part = msg.get_body(("html",))
    assert part is not None
    return str(part.get_content())


class Browser:
    """Headless Chromium and one page, over the DevTools protocol on fds 3 and 4."""

    def __init__(self, tmp: Path) -> None:
        cmd_r, self._out = os.pipe()  # we write commands; Chromium reads fd 3
        self._in, out_w = os.pipe()  # Chromium writes replies to fd 4
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-quic",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            f"--user-data-dir={tmp / 'profile'}",
            "about:blank",
        ]
        self._log = (tmp / "chromium.log").open("wb")
        self.proc = subprocess.Popen(
            [BASH, "-c", f'exec "$0" "$@" 3<&{cmd_r} 4>&{out_w}', str(CHROMIUM), *flags],
            pass_fds=(cmd_r, out_w),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        os.close(cmd_r)
        os.close(out_w)
        self._buffer = b""
        self._next = 0
        self._events: list[dict[str, Any]] = []
        self._deadline = time.monotonic() + DEADLINE
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable", page=True)

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = self._deadline - time.monotonic()
            ready, _, _ = select.select([self._in], [], [], max(left, 0))
            assert ready, "Chromium did not answer in time"
            chunk = os.read(self._in, 1 << 20)
            assert chunk, "Chromium closed the pipe (see chromium.log)"
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, *, page: bool = False, **params: Any) -> dict[str, Any]:
        self._next += 1
        command: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if page:
            command["sessionId"] = self._session
        os.write(self._out, json.dumps(command).encode() + b"\0")
        while True:
            message = self._message()
            if message.get("id") == self._next:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result
            self._events.append(message)

    def wait_for(self, event: str) -> None:
        while not any(e.get("method") == event for e in self._events):
            self._events.append(self._message())
        self._events.clear()

    def render(self, url: str, width: int) -> tuple[int, bytes]:
        """Load ``url`` in a ``width``-pixel viewport: its height and a full screenshot."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            page=True,
            width=width,
            height=PHONE_SCREEN,
            deviceScaleFactor=1,
            mobile=width < 600,
        )
        self._events.clear()
        self.call("Page.navigate", page=True, url=url)
        self.wait_for("Page.loadEventFired")
        found = self.call("Runtime.evaluate", page=True, expression=HEIGHT, returnByValue=True)
        height = int(found["result"]["value"])
        shot = self.call(
            "Page.captureScreenshot",
            page=True,
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        )
        return height, base64.b64decode(shot["data"])

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except AssertionError:
            pass
        finally:
            os.close(self._out)
            os.close(self._in)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._log.close()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[int, Path]]:
    """The nine-item digest at each width: (height in px, screenshot path)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    source = ARTIFACTS / "nine-items.html"
    source.write_text(nine_item_digest(), encoding="utf-8")
    browser = Browser(tmp_path_factory.mktemp("chromium"))
    out = {}
    try:
        for width in (390, 1200):
            height, png = browser.render(source.as_uri(), width)
            shot = ARTIFACTS / f"nine-items-{width}px.png"
            shot.write_bytes(png)
            print(f"\n{width} px wide: {height} px tall; screenshot {shot}")
            out[width] = (height, shot)
    finally:
        browser.close()
    return out


def test_nine_items_fit_in_one_and_a_half_phone_screens(
    rendered: dict[int, tuple[int, Path]],
) -> None:
    height, shot = rendered[390]
    assert height <= 1.5 * PHONE_SCREEN, f"{height} px is more than 1.5 phone screens ({shot})"
    assert _png_size(shot) == (390, height)


def test_a_desktop_shows_the_same_digest_in_a_600px_column(
    rendered: dict[int, tuple[int, Path]],
) -> None:
    height, shot = rendered[1200]
    assert _png_size(shot) == (1200, height)
    # Excerpts show in full there (two lines, not clamped to one) and it still fits.
    assert height <= 1.5 * PHONE_SCREEN


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
