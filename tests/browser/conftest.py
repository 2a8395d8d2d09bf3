"""Fixtures of the real-browser tests: headless Chromium (Debian's package, driven over the
DevTools protocol), a real ``northstar serve`` process on lab SQLite that can be killed with
SIGKILL and restarted on its data, and a static file server for the test page on another
loopback origin (so the page's calls are cross-origin: CORS is exercised). Everything binds
127.0.0.1 and every process is stopped by its own PID."""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.browser.cdp import Browser, Page
from tests.e2e.reliability_support import ServeProcess, free_port

PAGES = Path(__file__).parent / "pages"
ARTIFACTS = Path(__file__).parent / "artifacts"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class StaticSite:
    """``tests/browser/pages`` over HTTP on a loopback port of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        handler = functools.partial(_QuietHandler, directory=str(PAGES))
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StaticSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def site() -> Iterator[StaticSite]:
    with StaticSite() as s:
        yield s


@pytest.fixture
def server(tmp_path: Path, site: StaticSite) -> Iterator[ServeProcess]:
    """A lab server that allows the test site's origin, with a short SSE retry hint and
    heartbeat so the browser notices a dead server and comes back promptly."""
    process = ServeProcess(
        tmp_path,
        env={
            "NORTHSTAR_HTTP_CORS_ALLOW_ORIGINS": site.origin,
            "NORTHSTAR_HTTP_SSE_RETRY_MS": "500",
            "NORTHSTAR_HTTP_SSE_HEARTBEAT_SECONDS": "0.5",
        },
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser()
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    p = await browser.new_page()
    try:
        yield p
    finally:
        await p.close()
