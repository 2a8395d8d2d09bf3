"""A small Chrome DevTools Protocol client: Debian's ``chromium`` run headless, driven over
its DevTools websocket with ``websockets`` — no browser download, no driver binary.

:class:`Browser` starts ``chromium --headless`` on a private profile with the DevTools port
chosen by the browser (read back from ``DevToolsActivePort``), and stops it by its PID.
:class:`Page` is one tab: navigate, evaluate JavaScript (promises awaited), wait for a
condition, click an element with real mouse events, type text as keyboard input, and take a
screenshot. Console messages and uncaught exceptions of the page are kept (``page.log``), to
explain a failure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

CHROMIUM_NAMES = ("chromium", "chromium-browser")
_TICKET = re.compile(r"ticket=[^&\s\"']+")


class CdpError(AssertionError):
    """A DevTools command failed, or a page condition was not met in time."""


def chromium_path() -> str:
    """The Chromium binary; a clear failure (never a skip) when it is missing, since the test
    command (scripts/test) installs Debian's package."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(
        "chromium is not installed: the browser tests need Debian's `chromium` package "
        "(`apt-get install chromium`; scripts/test installs it when missing)"
    )


class Page:
    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: dict[str, list[asyncio.Future[Any]]] = {}
        self.log: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                if "id" in message:
                    future = self._pending.pop(message["id"], None)
                    if future is not None and not future.done():
                        if "error" in message:
                            future.set_exception(CdpError(f"DevTools error: {message['error']}"))
                        else:
                            future.set_result(message.get("result", {}))
                    continue
                method, params = message.get("method"), message.get("params", {})
                self._note(method, params)
                for waiter in self._events.pop(method, []):
                    if not waiter.done():
                        waiter.set_result(params)
        except websockets.ConnectionClosed:
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(CdpError("the DevTools connection closed"))

    def _note(self, method: str | None, params: dict[str, Any]) -> None:
        before = len(self.log)
        self._record(method, params)
        # a stream ticket lives seconds, but a failure message is no place for one either
        self.log[before:] = [_TICKET.sub("ticket=<ticket>", line) for line in self.log[before:]]

    def _record(self, method: str | None, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            args = [a.get("value", a.get("description", "")) for a in params.get("args", [])]
            self.log.append(f"console.{params.get('type')}: {' '.join(map(str, args))}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.log.append(f"exception: {text}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.log.append(f"{entry.get('level')}: {entry.get('text')} {entry.get('url', '')}")

    async def send(self, method: str, params: dict[str, Any] | None = None, seconds: float = 30) -> Any:
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._ws.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
        return await asyncio.wait_for(future, seconds)

    def expect(self, method: str) -> asyncio.Future[Any]:
        """A future for the next event ``method`` (register before triggering it)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._events.setdefault(method, []).append(future)
        return future

    async def navigate(self, url: str, seconds: float = 30) -> None:
        loaded = self.expect("Page.loadEventFired")
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CdpError(f"navigation to {url} failed: {result['errorText']}")
        await asyncio.wait_for(loaded, seconds)

    async def evaluate(self, expression: str, seconds: float = 30) -> Any:
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            seconds=seconds,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"{expression[:200]!r} raised: {text}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, seconds: float = 20, what: str | None = None) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + seconds
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                log = "\n".join(self.log[-30:])
                raise CdpError(f"timed out waiting for {what or expression!r}; page log:\n{log}")
            await asyncio.sleep(0.1)

    async def click(self, selector: str) -> None:
        """A real mouse click at the element's centre (it must be visible and enabled)."""
        box = await self.evaluate(
            f"""(() => {{
                const el = document.querySelector({json.dumps(selector)});
                if (!el) return null;
                el.scrollIntoView({{block: "center"}});
                const r = el.getBoundingClientRect();
                return {{x: r.left + r.width / 2, y: r.top + r.height / 2, w: r.width, h: r.height}};
            }})()"""
        )
        if not box or not box["w"] or not box["h"]:
            raise CdpError(f"{selector} is not on the page (or not visible)")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            params = {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1}
            if kind == "mouseMoved":
                params["button"] = "none"
            await self.send("Input.dispatchMouseEvent", params)

    async def type(self, selector: str, text: str) -> None:
        """Focus ``selector`` and type ``text`` as keyboard input."""
        focused = await self.evaluate(
            f"""(() => {{
                const el = document.querySelector({json.dumps(selector)});
                if (!el) return false;
                el.focus();
                return document.activeElement === el;
            }})()"""
        )
        if not focused:
            raise CdpError(f"{selector} cannot be focused")
        await self.send("Input.insertText", {"text": text})

    async def screenshot(self, path: Path) -> Path:
        data = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        image = base64.b64decode(data["data"])

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image)

        await asyncio.to_thread(write)
        return path

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


class Browser:
    """Headless Chromium on a private profile, stopped by its PID."""

    def __init__(self) -> None:
        self.binary = chromium_path()
        self.profile = Path(tempfile.mkdtemp(prefix="northstar-chromium-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self.devtools = ""

    def start(self, timeout: float = 30) -> None:
        args = [
            self.binary,
            "--headless=new",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1600",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self._stderr = open(self.profile / "stderr.log", "wb")  # closed in stop()
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self._stderr)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode}:\n{self.stderr()}")
            if port_file.is_file():
                lines = port_file.read_text().splitlines()
                if lines and lines[0].isdigit():
                    self.devtools = f"http://127.0.0.1:{lines[0]}"
                    return
            time.sleep(0.05)
        raise AssertionError(f"chromium did not open its DevTools port:\n{self.stderr()}")

    def stderr(self) -> str:
        path = self.profile / "stderr.log"
        return path.read_text(errors="replace")[-4000:] if path.is_file() else ""

    async def new_page(self) -> Page:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.put(f"{self.devtools}/json/new?about:blank")
            r.raise_for_status()
            target = r.json()
        ws = await websockets.connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        page = Page(ws)
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            await page.send(domain)
        return page

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._stderr is not None:
            self._stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

