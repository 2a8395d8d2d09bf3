# ruff: noqa: F401 - the emulators' session fixtures are imported to be found by name
"""Two real ``northstar serve`` processes on one cloud emulator: the store is the bus.

For each of DynamoDB (moto), Firestore (emulator) and Cosmos DB (patched launcher): a
``saas``-mode configuration file routes every resource kind — and the routing registry's own
store — to that emulator (so this also proves the service starts outside lab on cloud routes
only); ``northstar provision`` runs twice (idempotent); two server processes start on it; an SSE
client on process A follows a chat thread (and a canvas) while messages (commands) are posted to
process B; A's client must receive every one, in order, exactly once. Spine events appended to
one run on both processes (each retried on the other) list and replay once each, in id order,
from either. Processes are stopped by PID in ``finally``; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.cloud import (
    CLOUD_BACKENDS,
    CloudTarget,
    SseMessage,
    clean_env,
    cloud_target,
    sse_messages,
    to_toml,
)
from tests.emulators.cosmos import cosmos_endpoint, cosmos_server
from tests.emulators.firestore import firestore_emulator
from tests.emulators.moto import dynamodb_endpoint, moto_server

NORTHSTAR = [sys.executable, "-m", "northstar_http.cli"]
N = 12  # messages / commands per stream
EVENT_TIMEOUT = 30.0  # seconds to wait for one SSE event


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Deployment:
    """A config file on one emulator namespace, and the ``northstar`` processes run on it."""

    def __init__(self, target: CloudTarget, workdir: Path) -> None:
        self.target = target
        self.workdir = workdir
        self.config = workdir / "northstar.toml"
        self.config.write_text(to_toml(target.settings_dict(mode="saas")))
        self.env = clean_env(**target.env)
        self.procs: list[subprocess.Popen[str]] = []
        self.ports: list[tuple[subprocess.Popen[str], int]] = []

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*NORTHSTAR, "--config", str(self.config), *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def serve(self) -> tuple[subprocess.Popen[str], int]:
        """Start ``northstar serve`` on a free port (returns at once; see :meth:`wait_healthy`)."""
        port = free_port()
        with open(self.workdir / f"serve-{port}.log", "w") as log:
            proc = subprocess.Popen(
                [*NORTHSTAR, "--config", str(self.config), "serve", "--port", str(port)],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.procs.append(proc)
        self.ports.append((proc, port))
        return proc, port

    def wait_healthy(self, proc: subprocess.Popen[str], port: int) -> str:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}:\n{self.log(port)}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve on {port} did not become healthy:\n{self.log(port)}")

    def log(self, port: int) -> str:
        path = self.workdir / f"serve-{port}.log"
        return path.read_text() if path.is_file() else ""

    def stop_all(self) -> None:
        for proc in self.procs:  # our own processes, by PID
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture(params=CLOUD_BACKENDS)
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    target = cloud_target(request.param, request)
    d = Deployment(target, tmp_path)
    try:
        yield d
    finally:
        d.stop_all()
        asyncio.run(target.cleanup())


async def _next(events: object, *, want: str) -> SseMessage:
    """The next event of type ``want`` (other event types and comments are skipped)."""

    async def read() -> SseMessage:
        async for message in events:  # type: ignore[attr-defined]
            if message is not None and message.event == want:
                return message
        raise AssertionError("the SSE stream ended")

    return await asyncio.wait_for(read(), EVENT_TIMEOUT)


async def test_sse_on_one_process_receives_in_order_exactly_once_what_the_other_accepts(
    deployment: Deployment,
) -> None:
    # provision is idempotent: the second run succeeds and changes nothing
    first = deployment.cli("provision")
    assert first.returncode == 0, first.stdout + first.stderr
    again = deployment.cli("provision")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "routing_registry" in again.stdout and "chat_store" in again.stdout

    minted = deployment.cli("token", "--tenant", "t_xproc", "--user", "u_xproc", "--roles", "member")
    assert minted.returncode == 0, minted.stderr
    headers = {"Authorization": f"Bearer {minted.stdout.strip()}"}

    # Both replicas boot at once on the fresh registry (each seeds the configured routes).
    url_a, url_b = [deployment.wait_healthy(*started) for started in [deployment.serve(), deployment.serve()]]
    backend = deployment.target.backend
    async with (
        httpx.AsyncClient(base_url=url_a, headers=headers, timeout=30) as a,
        httpx.AsyncClient(base_url=url_b, headers=headers, timeout=30) as b,
    ):
        for client in (a, b):
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            diag = (await client.get("/routing/diagnostics")).json()
            assert diag["deployment_mode"] == "saas"
            assert diag["unrouted"] == [] and diag["unreachable"] == []
            assert {v["backend"] for v in diag["kinds"].values()} == {backend}

        # --- chat ---
        async with a.stream("GET", "/sse/chat/xproc") as live:
            assert live.status_code == 200
            events = sse_messages(live)
            posted = []
            for i in range(1, N + 1):
                r = await b.post(
                    "/chat/threads/xproc/messages",
                    json={"role": "user", "content": f"m{i}", "idempotency_key": f"k{i}"},
                )
                assert r.status_code == 201, r.text
                assert r.headers.get("x-northstar-backend") == backend  # served by the cloud, no "(lab)"
                posted.append(r.json())
            # a retried post is a replay: nothing new may reach the stream
            replay = await b.post(
                "/chat/threads/xproc/messages",
                json={"role": "user", "content": "m1", "idempotency_key": "k1"},
            )
            assert replay.json()["replayed"] is True
            received = [await _next(events, want="message") for _ in range(N)]
            # a sentinel posted after everything: the very next event must be it (no duplicates
            # of the N in between)
            r = await b.post(
                "/chat/threads/xproc/messages",
                json={"role": "user", "content": "sentinel", "idempotency_key": "sentinel"},
            )
            assert r.status_code == 201, r.text
            received.append(await _next(events, want="message"))
            await events.aclose()
        assert [m.data["content"] for m in received] == [f"m{i}" for i in range(1, N + 1)] + ["sentinel"]
        assert [m.data["seq"] for m in received] == list(range(1, N + 2))
        assert [m.data["message_id"] for m in received[:N]] == [p["message_id"] for p in posted]
        assert [m.id for m in received[:N]] == [p["cursor"] for p in posted]

        # --- concurrent writers on both processes, a subscriber on each: same order everywhere ---
        async with a.stream("GET", "/sse/chat/both") as live_a, b.stream("GET", "/sse/chat/both") as live_b:
            assert live_a.status_code == live_b.status_code == 200
            on_a, on_b = sse_messages(live_a), sse_messages(live_b)

            async def post(client: httpx.AsyncClient, name: str) -> None:
                for i in range(N // 2):
                    r = await client.post(
                        "/chat/threads/both/messages",
                        json={"role": "user", "content": f"{name}{i}", "idempotency_key": f"{name}{i}"},
                    )
                    assert r.status_code == 201, r.text

            await asyncio.gather(post(a, "a"), post(b, "b"))
            await b.post(
                "/chat/threads/both/messages",
                json={"role": "user", "content": "end", "idempotency_key": "end"},
            )
            seen_a = [await _next(on_a, want="message") for _ in range(N + 1)]
            seen_b = [await _next(on_b, want="message") for _ in range(N + 1)]
            await on_a.aclose()
            await on_b.aclose()
        for seen in (seen_a, seen_b):
            assert [m.data["seq"] for m in seen] == list(range(1, N + 2))
            assert seen[-1].data["content"] == "end"
            expected = {f"a{i}" for i in range(N // 2)} | {f"b{i}" for i in range(N // 2)}
            assert sorted(m.data["content"] for m in seen[:-1]) == sorted(expected)
        assert [m.data["message_id"] for m in seen_a] == [m.data["message_id"] for m in seen_b]

        # --- canvas ---
        async with a.stream("GET", "/sse/canvas/xproc") as live:
            assert live.status_code == 200
            events = sse_messages(live)
            for rev in range(N):
                r = await b.post(
                    "/canvas/xproc/commands",
                    json={
                        "base_rev": rev,
                        "ops": [{"op": "create", "atom_id": f"a{rev}", "kind": "box", "props": {"n": rev}}],
                        "idempotency_key": f"c{rev}",
                    },
                )
                assert r.status_code == 201, r.text
            seen = [await _next(events, want="op_committed") for _ in range(N)]
            r = await b.post(
                "/canvas/xproc/commands",
                json={"base_rev": N, "ops": [{"op": "delete", "atom_id": "a0"}], "idempotency_key": "end"},
            )
            assert r.status_code == 201, r.text
            seen.append(await _next(events, want="op_committed"))
            await events.aclose()
        assert [e.data["data"]["rev"] for e in seen] == list(range(1, N + 2))
        assert len({e.id for e in seen}) == N + 1
        snapshot = (await a.get("/canvas/xproc/snapshot")).json()
        assert snapshot["head_rev"] == N + 1 and len(snapshot["atoms"]) == N - 1

        # --- spine: both processes append to one run (and retry keys on the other process);
        # either lists and replays every event once, in id order, across the shards ---
        async def append(client: httpx.AsyncClient, name: str) -> list[str]:
            ids = []
            for i in range(N // 2):
                body = {
                    "event_type": "xproc.step",
                    "source": "agent",
                    "run_id": "xproc-run",
                    "step_id": f"{name}{i}",
                    "idempotency_key": f"e-{name}{i}",
                    "payload": {"n": f"{name}{i}"},
                }
                r = await client.post("/events/append", json=body)
                assert r.status_code == 201, r.text
                retried = await (b if client is a else a).post("/events/append", json=body)
                assert retried.json()["event_id"] == r.json()["event_id"], retried.text
                ids.append(r.json()["event_id"])
            return ids

        from_a, from_b = await asyncio.gather(append(a, "a"), append(b, "b"))
        appended = from_a + from_b
        for client in (a, b):
            for path, params in (
                ("/events/replay", {"run_id": "xproc-run", "limit": 4}),
                ("/events/list", {"event_type": "xproc.step", "limit": 4}),
            ):
                got: list[str] = []
                cursor = None
                while True:
                    query = {**params, **({"cursor": cursor} if cursor else {})}
                    page = (await client.get(path, params=query)).json()
                    got += [e["event_id"] for e in page["items"]]
                    cursor = page["next_cursor"]
                    if not page["has_more"]:
                        break
                assert got == sorted(appended), (path, got)
    deployment.stop_all()
    for _proc, port in deployment.ports:
        assert "LAB MODE" not in deployment.log(port)
