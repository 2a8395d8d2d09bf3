"""Shared machinery of the reliability tests and ``bench/reliability.py``.

* :class:`ServeProcess` — one real ``northstar serve`` subprocess on a fixed loopback port that
  can be ``kill -9``-ed and restarted on the same port and backend (lab SQLite in a work dir, or
  a configuration file that routes every kind to a cloud emulator).
* :class:`Workload` — concurrent clients that post chat messages and canvas commands with
  idempotency keys, retrying connection errors and 5xx answers with the *same* key and body
  (what a well-behaved client does when it does not know whether its write landed), and a
  ledger of what was attempted, acknowledged or refused.
* :func:`verify` — reads everything back through the API and checks the crash-safety
  guarantees: every acknowledged write present exactly once with the acknowledged identity,
  nothing applied twice, gap-free seqs/revisions, refused (409) keys absent, multi-op canvas
  commands all-or-nothing.
* :class:`TcpGate` — a loopback TCP forwarder in front of an emulator that can be cut (listener
  closed, live connections reset) and restored on the same port: a backend outage that keeps
  the backend's data, for the "recovery with data" half of the outage tests.

Every wait is bounded; processes are stopped by their own PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

NORTHSTAR = [sys.executable, "-m", "northstar_http.cli"]
CHAT_THREAD = "rel_chat"
CANVAS_ID = "rel_canvas"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}
    env.update(extra)
    return env


class ServeProcess:
    """``northstar [--config FILE] serve --port PORT`` in ``workdir``; restartable on its port."""

    def __init__(
        self, workdir: Path, *, config: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.config = config
        self.env = clean_env(**(env or {}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _base(self) -> list[str]:
        return [*NORTHSTAR, *(["--config", str(self.config)] if self.config else [])]

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [*self._base(), *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.strip()

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("serve-*.log")))

    def start(self, timeout: float = 60.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with open(self.workdir / f"serve-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [*self._base(), "serve", "--port", str(self.port), "--log-level", "warning"],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"serve did not become healthy:\n{self.log()[-4000:]}")

    def kill9(self) -> None:
        """A crash: SIGKILL, no shutdown hooks, no flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(20)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# --- the workload ------------------------------------------------------------------------------

RETRYABLE = (httpx.TransportError,)


@dataclass
class Ledger:
    tag: str = "rel"
    chat_attempted: dict[str, str] = field(default_factory=dict)  # key -> content
    chat_acked: dict[str, dict[str, Any]] = field(default_factory=dict)
    spine_attempted: dict[str, str] = field(default_factory=dict)  # key -> run id
    spine_acked: dict[str, dict[str, Any]] = field(default_factory=dict)
    canvas_attempted: set[str] = field(default_factory=set)
    canvas_acked: dict[str, dict[str, Any]] = field(default_factory=dict)
    canvas_refused: set[str] = field(default_factory=set)  # 409: never committed under this key
    retries: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)


class Workload:
    """``clients`` concurrent writers, each ``ops`` chat posts and ``ops // 2`` canvas commands
    (two ``create`` ops each) on one shared thread and one shared canvas."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        clients: int = 3,
        ops: int = 10,
        tag: str = "rel",
        retry_deadline: float = 120.0,
        thread: str = CHAT_THREAD,
        canvas: str = CANVAS_ID,
    ) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.clients = clients
        self.ops = ops
        self.tag = tag
        self.retry_deadline = retry_deadline
        self.thread = thread
        self.canvas = canvas
        self.ledger = Ledger(tag=tag)
        self.acks = 0
        self._acked = asyncio.Event()

    def _ack(self) -> None:
        self.acks += 1
        self._acked.set()

    async def wait_acks(self, n: int) -> None:
        """Until ``n`` writes were acknowledged (across all clients)."""
        while self.acks < n:
            self._acked.clear()
            await self._acked.wait()

    async def _send(self, http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST until the service gives a definite answer (< 500); same body on every try."""
        deadline = time.monotonic() + self.retry_deadline
        delay = 0.05
        while True:
            try:
                r = await http.post(path, json=body)
                self.ledger.statuses[r.status_code] = self.ledger.statuses.get(r.status_code, 0) + 1
                if r.status_code < 500:
                    return r
            except RETRYABLE:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no definite answer for {path} {body} within {self.retry_deadline}s")
            self.ledger.retries += 1
            await asyncio.sleep(delay + random.uniform(0, delay))
            delay = min(delay * 2, 1.0)

    async def _head(self, http: httpx.AsyncClient) -> int:
        deadline = time.monotonic() + self.retry_deadline
        while True:
            try:
                r = await http.get(f"/canvas/{self.canvas}/snapshot")
                if r.status_code == 200:
                    return int(r.json()["head_rev"])
            except RETRYABLE:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("could not read the canvas head")
            await asyncio.sleep(0.1)

    async def _client(self, c: int) -> None:
        led = self.ledger
        async with httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=30) as http:
            base = 0
            for i in range(self.ops):
                key = f"{self.tag}-c{c}-m{i}"
                content = f"{self.tag}-content-{c}-{i}"
                led.chat_attempted[key] = content
                body = {"role": "user", "content": content, "idempotency_key": key}
                r = await self._send(http, f"/chat/threads/{self.thread}/messages", body)
                if r.status_code in (200, 201):
                    led.chat_acked[key] = r.json()
                    self._ack()
                else:
                    led.unexpected.append(f"chat {key}: {r.status_code} {r.text[:300]}")
                # a keyed spine event of this client's run (a plain run id: the spine registers
                # where the run starts)
                skey = f"{self.tag}-c{c}-e{i}"
                run = f"{self.tag}-run-c{c}"
                led.spine_attempted[skey] = run
                event = {
                    "event_type": "rel.step",
                    "source": "agent",
                    "run_id": run,
                    "step_id": f"s{i}",
                    "idempotency_key": skey,
                    "payload": {"key": skey},
                }
                r = await self._send(http, "/events/append", event)
                if r.status_code in (200, 201):
                    led.spine_acked[skey] = r.json()
                    self._ack()
                else:
                    led.unexpected.append(f"spine {skey}: {r.status_code} {r.text[:300]}")
                if i % 2:
                    continue
                attempt = 0
                while True:
                    ckey = f"{self.tag}-c{c}-k{i}-a{attempt}"
                    led.canvas_attempted.add(ckey)
                    command = {
                        "base_rev": base,
                        "idempotency_key": ckey,
                        "ops": [
                            {"op": "create", "atom_id": f"{ckey}-x", "kind": "box", "props": {"k": ckey}},
                            {"op": "create", "atom_id": f"{ckey}-y", "kind": "box", "props": {"k": ckey}},
                        ],
                    }
                    r = await self._send(http, f"/canvas/{self.canvas}/commands", command)
                    if r.status_code in (200, 201):
                        led.canvas_acked[ckey] = r.json()
                        base = int(r.json()["head_rev"])
                        self._ack()
                        break
                    if r.status_code == 409 and r.json()["error"]["code"] == "canvas.rev_conflict":
                        led.canvas_refused.add(ckey)
                        base = int(r.json()["error"]["details"]["expected_rev"])
                        attempt += 1
                        if attempt > 200:
                            raise AssertionError(f"{ckey}: starved by conflicts")
                        continue
                    led.unexpected.append(f"canvas {ckey}: {r.status_code} {r.text[:300]}")
                    break

    async def run(self, during: Callable[[], Any] | None = None) -> Ledger:
        """Run the clients; ``during`` (a coroutine function) runs alongside, e.g. a killer."""
        tasks = [asyncio.create_task(self._client(c)) for c in range(self.clients)]
        extra = asyncio.create_task(during()) if during is not None else None
        try:
            await asyncio.gather(*tasks, *([extra] if extra else []))
        finally:
            for t in (*tasks, *([extra] if extra else [])):
                t.cancel()
        return self.ledger


async def _pages(http: httpx.AsyncClient, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10_000):
        q = dict(params)
        if cursor:
            q["cursor"] = cursor
        r = await http.get(path, params=q)
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        if not page["has_more"] or not page["next_cursor"]:
            return items
        cursor = page["next_cursor"]
    raise AssertionError("paging did not end")


@dataclass
class Verified:
    messages: int
    commands: int
    head_rev: int


async def verify(
    url: str,
    token: str,
    ledger: Ledger,
    *,
    thread: str = CHAT_THREAD,
    canvas: str = CANVAS_ID,
    all_acked: bool = True,
) -> Verified:
    """Check the crash-safety guarantees (see module doc) against what the service now serves."""
    assert not ledger.unexpected, ledger.unexpected
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        # --- chat: exactly once per key, acknowledged identity kept, gap-free seqs ---
        msgs = await _pages(http, f"/chat/threads/{thread}/messages", {"limit": 200})
        seqs = [m["seq"] for m in msgs]
        assert seqs == list(range(1, len(msgs) + 1)), f"chat seqs not gap-free: {seqs}"
        keys = [m["idempotency_key"] for m in msgs]
        dupes = {k for k in keys if keys.count(k) > 1}
        assert not dupes, f"chat keys applied more than once: {sorted(dupes)}"
        by_key = {m["idempotency_key"]: m for m in msgs}
        assert set(by_key) <= set(ledger.chat_attempted), "a chat message nobody attempted"
        for key, ack in ledger.chat_acked.items():
            got = by_key.get(key)
            assert got is not None, f"acknowledged chat write {key} lost"
            assert (got["message_id"], got["seq"]) == (ack["message_id"], ack["seq"]), (key, got, ack)
            assert got["content"] == ledger.chat_attempted[key]
        if all_acked:
            assert set(by_key) == set(ledger.chat_acked)

        # --- canvas: gap-free revisions, each key at most once, commands all-or-nothing ---
        events = await _pages(http, f"/canvas/{canvas}/replay", {"limit": 500, "types": "op_committed"})
        revs = [e["data"]["rev"] for e in events]
        assert revs == list(range(1, len(events) + 1)), f"canvas revs not gap-free: {revs}"
        ckeys = [e["data"]["idempotency_key"] for e in events]
        cdupes = {k for k in ckeys if ckeys.count(k) > 1}
        assert not cdupes, f"canvas commands applied more than once: {sorted(cdupes)}"
        assert set(ckeys) <= ledger.canvas_attempted
        assert not set(ckeys) & ledger.canvas_refused, "a command refused with 409 was committed"
        committed = {e["data"]["idempotency_key"]: e["data"]["rev"] for e in events}
        for key, ack in ledger.canvas_acked.items():
            assert key in committed, f"acknowledged canvas command {key} lost"
            assert committed[key] == ack["head_rev"], (key, committed[key], ack)
        if all_acked:
            assert set(committed) == set(ledger.canvas_acked)

        # --- spine: each key at most once, acknowledged events kept, runs replay in order ---
        listed = await _pages(http, "/events/list", {"limit": 50, "event_type": "rel.step"})
        ours = [e for e in listed if str(e["payload"].get("key", "")).startswith(f"{ledger.tag}-")]
        ids = [e["event_id"] for e in listed]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), "the spine list is not in id order"
        skeys = [e["payload"]["key"] for e in ours]
        sdupes = {k for k in skeys if skeys.count(k) > 1}
        assert not sdupes, f"spine events appended more than once: {sorted(sdupes)}"
        assert set(skeys) <= set(ledger.spine_attempted), "a spine event nobody attempted"
        stored = {e["payload"]["key"]: e for e in ours}
        for key, ack in ledger.spine_acked.items():
            assert key in stored, f"acknowledged spine event {key} lost"
            assert stored[key]["event_id"] == ack["event_id"], (key, stored[key], ack)
        if all_acked:
            assert set(stored) == set(ledger.spine_acked)
        for run in sorted(set(ledger.spine_attempted.values())):
            replayed = await _pages(http, "/events/replay", {"limit": 3, "run_id": run})
            expected = [e["event_id"] for e in ours if e["run_id"] == run]
            assert [e["event_id"] for e in replayed] == expected, run
        r = await http.get(f"/canvas/{canvas}/snapshot")
        assert r.status_code == 200, r.text
        snap = r.json()
        assert snap["head_rev"] == len(events)
        atoms = set(snap["atoms"])
        expected = {f"{k}-{s}" for k in committed for s in ("x", "y")}
        assert atoms == expected, (
            f"snapshot atoms differ from committed commands: missing {sorted(expected - atoms)[:5]}, "
            f"extra {sorted(atoms - expected)[:5]}"
        )
        assert sorted(snap["order"]) == sorted(atoms), "z-order and atoms disagree"
    return Verified(messages=len(msgs), commands=len(events), head_rev=snap["head_rev"])


# --- a cuttable TCP path to a backend ----------------------------------------------------------


class TcpGate:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port`` until :meth:`cut`.

    ``cut()`` closes the listener and resets every live connection (the backend "goes away":
    new connections are refused, in-flight requests fail); ``restore()`` listens again on the
    same port. The backend itself keeps running, so its data survives the outage.
    """

    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def is_cut(self) -> bool:
        return self._server is None

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._conns):
            with contextlib.suppress(Exception):
                sock = w.get_extra_info("socket")
                if sock is not None:  # RST, not FIN: like a dead host's connection
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                w.transport.abort()
        self._conns.clear()
        pending = {t for t in self._tasks if not t.done()}
        if pending:  # let the forwarding tasks see their connections die
            await asyncio.wait(pending, timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._conns.update({writer, up_writer})

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer), return_exceptions=True)
        self._conns.discard(writer)
        self._conns.discard(up_writer)


# --- an SSE follower that reconnects with Last-Event-ID ----------------------------------------


class SseFollower:
    """Follows ``path`` (an SSE endpoint) across server crashes: on any disconnect or non-200
    answer it reconnects with ``Last-Event-ID`` = the last event it received, and records every
    event of type ``want`` in order. Stops once :meth:`stop_after` set a count it has reached."""

    def __init__(self, url: str, token: str, path: str, want: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.path = path
        self.want = want
        self.seen: list[dict[str, Any]] = []
        self.reconnects = 0
        self._target: int | None = None
        self._changed = asyncio.Event()

    def stop_after(self, count: int) -> None:
        self._target = count
        self._changed.set()

    def _done(self) -> bool:
        return self._target is not None and len(self.seen) >= self._target

    async def run(self, deadline: float = 180.0) -> list[dict[str, Any]]:
        end = time.monotonic() + deadline
        last_id: str | None = None
        timeout = httpx.Timeout(30, read=5)  # heartbeats come every 0.5 s on a live stream
        async with httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=timeout) as http:
            while not self._done():
                assert time.monotonic() < end, f"{self.path}: saw {len(self.seen)} of {self._target}"
                headers = {"Last-Event-ID": last_id} if last_id else {}
                try:
                    async with http.stream("GET", self.path, headers=headers) as r:
                        if r.status_code != 200:
                            await r.aread()
                            assert r.status_code >= 500, f"{self.path}: {r.status_code} {r.text[:300]}"
                            raise httpx.TransportError("not ready")
                        event, event_id, data = "message", "", []
                        async for line in r.aiter_lines():
                            if line.startswith("event:"):
                                event = line[6:].strip()
                            elif line.startswith("id:"):
                                event_id = line[3:].strip()
                            elif line.startswith("data:"):
                                data.append(line[5:].lstrip())
                            elif line == "":
                                # as a browser does: an id sets the last event id even on a
                                # frame without data (the stream's opening position)
                                last_id = event_id or last_id
                                if data and event == self.want:
                                    self.seen.append(json.loads("\n".join(data)))
                                event, event_id, data = "message", "", []
                            if self._done():
                                return self.seen
                except (httpx.TransportError, httpx.StreamError):
                    pass
                self.reconnects += 1
                await asyncio.sleep(0.1)
        return self.seen
