"""End to end: the real ``northstar serve`` process on the lab SQLite default.

Each test runs the CLI as a subprocess on a fresh data dir and a free loopback port, talks to
it over HTTP with the Python client, and stops it by its PID.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from northstar_core.errors import NorthstarError
from northstar_http.client import NorthstarClient

NORTHSTAR = [sys.executable, "-m", "northstar_http.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}
    env.update(extra)
    return env


class Served:
    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[str] | None = None
        self.output = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*NORTHSTAR, "serve", "--port", str(self.port), "--log-level", "warning"],
            cwd=self.workdir,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {self.proc.stdout.read() if self.proc.stdout else ''}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("serve did not become healthy")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.output += out or ""
        self.proc = None

    def token(self, *args: str) -> str:
        result = subprocess.run(
            [*NORTHSTAR, "token", *args], cwd=self.workdir, env=clean_env(),
            capture_output=True, text=True, check=True,
        )
        return result.stdout.strip()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_serve_prints_banner_token_docs_and_curl(served: Served) -> None:
    served.stop()
    assert "LAB MODE" in served.output and "sqlite (lab)" in served.output
    assert "lab token" in served.output and "/schema" in served.output and "curl -s -X POST" in served.output
    assert "/console" in served.output


async def first_sse_event(response: httpx.Response) -> tuple[str, str]:
    """(id, data) of the first event carrying data on an open SSE response."""
    event_id, data = "", ""
    async for line in response.aiter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:") and line[5:].strip():
            data = line[5:].strip()
        elif line == "" and data:
            return event_id, data
    raise AssertionError("stream ended")


async def test_fresh_lab_service_round_trip_with_cursors_idempotency_and_sse_resume(served: Served) -> None:
    token = served.token()
    async with NorthstarClient(served.url, token) as ns, httpx.AsyncClient(base_url=served.url) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        headers = {"Authorization": f"Bearer {token}"}
        async with http.stream("GET", "/sse/chat/e2e", headers=headers, timeout=30) as live:
            # headers received: the stream is positioned at the (empty) thread's head
            assert live.status_code == 200
            m = [
                await ns.chat.post("e2e", role="user", content=f"m{i}", idempotency_key=f"k{i}")
                for i in (1, 2, 3)
            ]
            event_id, data = await asyncio.wait_for(first_sse_event(live), 30)
        # disconnected after message 1
        assert '"content":"m1"' in data and event_id == m[0].cursor
        assert [x.message.seq for x in m] == [1, 2, 3]
        again = await ns.chat.post("e2e", role="user", content="m1", idempotency_key="k1")
        assert again.replayed is True and again.message.message_id == m[0].message.message_id
        page = await ns.chat.list_messages("e2e")
        assert [x.content for x in page.items] == ["m1", "m2", "m3"]
        after = await ns.chat.list_messages("e2e", cursor=m[0].cursor)
        assert [x.content for x in after.items] == ["m2", "m3"]

        resumed = ns.chat.follow("e2e", event_id)
        rest = [await asyncio.wait_for(resumed.__anext__(), 30) for _ in range(2)]
        await ns.chat.post("e2e", role="user", content="m4", idempotency_key="k4")
        await ns.chat.post("e2e", role="user", content="m5", idempotency_key="k5")
        rest += [await asyncio.wait_for(resumed.__anext__(), 30) for _ in range(2)]
        await resumed.aclose()
        assert [e.content for e in rest] == ["m2", "m3", "m4", "m5"]

        tampered = m[0].cursor[:-1] + ("A" if m[0].cursor[-1] != "A" else "B")
        with pytest.raises(NorthstarError) as err:
            await ns.chat.list_messages("e2e", cursor=tampered)
        assert err.value.http_status == 410 and err.value.details["cursor"] == tampered


async def test_restart_loses_nothing_acknowledged(served: Served) -> None:
    token = served.token()
    acknowledged = []
    async with NorthstarClient(served.url, token) as ns:
        for i in range(20):
            acknowledged.append(
                await ns.chat.post("durable", role="user", content=f"v{i}", idempotency_key=f"d{i}")
            )
    served.stop(signal.SIGKILL)  # a crash, not a clean shutdown
    served.start()
    async with NorthstarClient(served.url, token) as ns:  # the lab secret survived the restart
        page = await ns.chat.list_messages("durable", limit=200)
        assert [x.message_id for x in page.items] == [a.message.message_id for a in acknowledged]
        # cursors issued before the restart still work
        after = await ns.chat.list_messages("durable", cursor=acknowledged[9].cursor, limit=200)
        assert len(after.items) == 10
        # a retry of an acknowledged write after the crash is still a replay
        replay = await ns.chat.post("durable", role="user", content="v3", idempotency_key="d3")
        assert replay.replayed is True and replay.message.seq == 4
        assert (await ns.chat.snapshot("durable")).head_seq == 20


def test_saas_mode_with_sqlite_routes_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [*NORTHSTAR, "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=clean_env(
            NORTHSTAR_MODE="saas",
            NORTHSTAR_CURSOR_SECRET="x" * 32,
            NORTHSTAR_JWT_HS256_SECRET="y" * 32,
            NORTHSTAR_JWT_AUDIENCE="northstar",
            NORTHSTAR_CONNECTIONS='{"local": {"backend": "sqlite", "path": "reg.db"}}',
            NORTHSTAR_REGISTRY_CONNECTION="local",
            NORTHSTAR_ROUTES='[{"resource_kind": "chat_store", "connection": "local"}]',
        ),
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "refusing to start in mode 'saas'" in result.stderr
    assert "lab-only backend 'sqlite'" in result.stderr


def test_saas_mode_without_configuration_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [*NORTHSTAR, "serve", "--port", str(free_port())],
        cwd=tmp_path, env=clean_env(NORTHSTAR_MODE="saas"), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "cursor_secret" in result.stderr and "registry" in result.stderr


async def test_two_processes_on_one_lab_data_dir_deliver_each_others_messages_live(tmp_path: Path) -> None:
    a, b = Served(tmp_path, free_port()), Served(tmp_path, free_port())
    a.start()
    b.start()
    try:
        token = a.token()
        headers = {"Authorization": f"Bearer {token}"}
        async with NorthstarClient(b.url, token) as on_b, httpx.AsyncClient(base_url=a.url) as http:
            async with http.stream("GET", "/sse/chat/shared", headers=headers, timeout=30) as live:
                assert live.status_code == 200
                posted = [
                    await on_b.chat.post("shared", role="user", content=f"x{i}", idempotency_key=f"x{i}")
                    for i in range(5)
                ]
                # a replay: no new event
                await on_b.chat.post("shared", role="user", content="x0", idempotency_key="x0")
                seen: list[str] = []

                async def collect() -> None:
                    # the opening frame's id (where the stream starts), then one per message
                    async for line in live.aiter_lines():
                        if line.startswith("id:"):
                            seen.append(line[3:].strip())
                            if len(seen) == 6:
                                return

                await asyncio.wait_for(collect(), 30)
        opening, *delivered = seen
        assert delivered == [p.cursor for p in posted]
        assert opening not in delivered  # the empty thread's head: before the first message
    finally:
        a.stop()
        b.stop()
