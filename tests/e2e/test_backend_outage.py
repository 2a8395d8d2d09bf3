# ruff: noqa: F401 - the emulators' session fixtures are imported to be found by name
"""Backend outage (SPEC §4, §8): the emulator goes away mid-run, then comes back.

A real ``northstar serve`` process (``saas`` mode, every kind and the registry on one emulator)
serves concurrent clients that write chat messages and two-op canvas commands with idempotency
keys, retrying 5xx with the same key. Mid-run the backend becomes unreachable:

* ``dynamodb-restart`` / ``cosmos-restart`` — the emulator process itself (one we start for
  this test on a fixed port) is stopped and later restarted on the same port. Both keep
  nothing across a restart, so tables/containers and the configured routes are re-seeded and
  only what happens after recovery is checked;
* ``dynamodb-cut`` / ``firestore-cut`` — the emulator keeps running behind a
  :class:`~tests.e2e.reliability_support.TcpGate` that is cut (listener closed, live
  connections reset) and restored: the data survives, so the *whole* run is verified. (Cosmos
  cannot be gated this way: the SDK's endpoint discovery goes straight to the address the
  account reports, bypassing the gate.)

While it is down, a write answers — within the HTTP client's timeout, i.e. promptly and never
hanging — 503 ``<kind>.backend_unavailable`` with a ``Retry-After`` header, reads answer 503
too, and ``/readyz`` is 503. When it returns, ``/readyz`` is 200 again and writes succeed.
"No partial writes": a canvas command tried during the outage is afterwards either entirely
there or not at all (its retry with the same key then applies it exactly once), and the
concurrent clients' run passes the same exactly-once verification as the crash test; and (data
kept) SSE followers of the chat thread and the canvas, reconnecting with ``Last-Event-ID``
whenever their stream breaks, receive every message/revision exactly once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from northstar_adapters.compose import build_registry
from northstar_adapters.config import finalize, load_settings
from northstar_http.tokens import mint_token
from tests.e2e.cloud import AUDIENCE, JWT_SECRET, CloudTarget, to_toml
from tests.e2e.reliability_support import ServeProcess, SseFollower, TcpGate, Workload, free_port, verify
from tests.emulators import cosmos as cosmos_emulator
from tests.emulators import moto as moto_emulator
from tests.emulators.cosmos import EMULATOR_KEY, KEY_ENV, CosmosServer
from tests.emulators.firestore import firestore_emulator
from tests.emulators.moto import LAUNCHER as MOTO_LAUNCHER
from tests.emulators.moto import TEST_ENV, MotoServer, dynamodb_endpoint, moto_server

REQUEST_TIMEOUT = 45.0  # an outage must be answered (503) within this, never hang
RECOVERY_TIMEOUT = 90.0
TOKEN = mint_token(
    JWT_SECRET, audience=AUDIENCE, tenant_id="t_outage", sub="u_outage", mode="saas", roles=("member",)
)
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Outage:
    """A deployment whose backend can be taken away (``down``) and given back (``up``)."""

    target: CloudTarget
    down: Callable[[], Awaitable[None]]
    up: Callable[[], Awaitable[None]]
    keeps_data: bool


async def reseed(target: CloudTarget) -> None:
    """After an emulator restarted empty: tables/containers, then the configured routes."""
    await target.provision()
    settings = load_settings(environ={}, overrides=target.settings_dict(mode="saas"), config_file=None)
    registry = await build_registry(finalize(settings))  # seeds the configured routes
    await registry.close()
    await registry._store.close()  # the bootstrap store is the caller's to close


@pytest.fixture(params=["dynamodb-restart", "cosmos-restart", "dynamodb-cut", "firestore-cut"])
async def outage(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Outage]:
    backend, how = request.param.split("-")
    tag = uuid.uuid4().hex[:8]
    for name, value in {**TEST_ENV, KEY_ENV: EMULATOR_KEY}.items():
        monkeypatch.setenv(name, value)
    procs: list[Any] = []
    gate: TcpGate | None = None
    if how == "restart":
        # an emulator process of our own, on a fixed port, really stopped and restarted
        port = free_port()
        start = MotoServer.start if backend == "dynamodb" else CosmosServer.start
        procs.append(await asyncio.to_thread(start, port=port))
        if backend == "dynamodb":
            params = {
                "endpoint_url": f"http://127.0.0.1:{port}",
                "table_prefix": f"o{tag}_",
                "region": "us-east-1",
            }
            target = CloudTarget(backend, params, env=dict(TEST_ENV))
        else:
            params = {"url": f"https://127.0.0.1:{port}/", "database": f"o{tag}"}
            target = CloudTarget(backend, params, env={KEY_ENV: EMULATOR_KEY})

        async def down() -> None:
            await asyncio.to_thread(procs[-1].stop)

        async def up() -> None:
            procs.append(await asyncio.to_thread(start, port=port))
            await reseed(target)  # it restarted empty

        keeps = False
    else:
        # the emulator keeps running (and keeps its data) behind a gate that is cut
        endpoint = request.getfixturevalue(
            {"dynamodb": "dynamodb_endpoint", "firestore": "firestore_emulator"}[backend]
        )
        gate = TcpGate(int(endpoint.rstrip("/").rsplit(":", 1)[1]))
        await gate.restore()
        via = f"127.0.0.1:{gate.port}"
        if backend == "dynamodb":
            params = {"endpoint_url": f"http://{via}", "table_prefix": f"o{tag}_", "region": "us-east-1"}
            target = CloudTarget(backend, params, env=dict(TEST_ENV))
        else:
            target = CloudTarget(backend, {"project": f"outage-{tag}", "emulator_host": via})
        down, up, keeps = gate.cut, gate.restore, True
    await target.provision()
    try:
        yield Outage(target, down, up, keeps)
    finally:
        if gate is not None:
            with contextlib.suppress(Exception):
                if gate.is_cut:
                    await gate.restore()
                await target.cleanup()
            await gate.cut()
        for proc in procs:
            proc.stop()


async def _post(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await http.post(path, json=body, timeout=REQUEST_TIMEOUT)


def assert_unavailable(r: httpx.Response, kind: str) -> None:
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == f"{kind}.backend_unavailable" and err["http_status"] == 503, err
    assert int(r.headers["retry-after"]) >= 1


async def wait_ready(http: httpx.AsyncClient, want: int) -> None:
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            last = await http.get("/readyz", timeout=REQUEST_TIMEOUT)
            if last.status_code == want:
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"/readyz never answered {want}: {last and last.text}")


PROBE_COMMAND = {
    "base_rev": 0,
    "idempotency_key": "probe-1",
    "ops": [
        {"op": "create", "atom_id": "p1", "kind": "box"},
        {"op": "create", "atom_id": "p2", "kind": "box"},
        {"op": "create", "atom_id": "p3", "kind": "box"},
    ],
}


async def test_outage_is_503_with_retry_after_no_partial_writes_and_recovery(
    outage: Outage, tmp_path: Path
) -> None:
    config = tmp_path / "northstar.toml"
    config.write_text(to_toml(outage.target.settings_dict(mode="saas")))
    server = ServeProcess(tmp_path, config=config, env=outage.target.env)
    await asyncio.to_thread(server.start)
    try:
        # with the data kept, clients write across the outage; a restarted-empty emulator would
        # invalidate what they knew, so there they write before and after it instead
        work = Workload(server.url, TOKEN, clients=2, ops=6, tag="out", retry_deadline=RECOVERY_TIMEOUT * 2)
        observed: dict[str, Any] = {}

        async def outage_window() -> None:
            await work.wait_acks(3)
            await outage.down()
            async with httpx.AsyncClient(base_url=server.url, headers=HEADERS) as http:
                r = await _post(
                    http,
                    "/chat/threads/probe/messages",
                    {"role": "user", "content": "during", "idempotency_key": "probe-m"},
                )
                assert_unavailable(r, "chat_store")
                r = await _post(http, "/canvas/probe/commands", PROBE_COMMAND)
                assert_unavailable(r, "canvas_command_store")
                r = await http.get("/chat/threads/probe/messages", timeout=REQUEST_TIMEOUT)
                assert_unavailable(r, "chat_store")
                await wait_ready(http, 503)
                observed["down"] = True
                await outage.up()
                await wait_ready(http, 200)

        followers: list[SseFollower] = []
        if outage.keeps_data:
            followers = [
                SseFollower(server.url, TOKEN, f"/sse/chat/{work.thread}", "message"),
                SseFollower(server.url, TOKEN, f"/sse/canvas/{work.canvas}", "op_committed"),
            ]
            tasks = [asyncio.create_task(f.run()) for f in followers]
            ledger = await work.run(during=outage_window)
        else:
            await work.run()
            await outage_window()
            work = Workload(
                server.url, TOKEN, clients=2, ops=4, tag="after", thread="after_t", canvas="after_c"
            )
            ledger = await work.run()
        assert observed.get("down")
        async with httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=REQUEST_TIMEOUT) as http:
            # the command tried during the outage is all there or not at all ...
            snap = (await http.get("/canvas/probe/snapshot")).json()
            assert set(snap["atoms"]) in (set(), {"p1", "p2", "p3"}), snap
            # ... and its retry (same key) applies it exactly once
            r = await _post(http, "/canvas/probe/commands", PROBE_COMMAND)
            assert r.status_code in (200, 201), r.text
            snap = (await http.get("/canvas/probe/snapshot")).json()
            assert snap["head_rev"] == 1 and set(snap["atoms"]) == {"p1", "p2", "p3"}
            r = await _post(
                http,
                "/chat/threads/probe/messages",
                {"role": "user", "content": "during", "idempotency_key": "probe-m"},
            )
            assert r.status_code in (200, 201) and r.json()["seq"] == 1, r.text
        # every acknowledged write exactly once (across the outage when the data was kept)
        result = await verify(server.url, TOKEN, ledger, thread=work.thread, canvas=work.canvas)
        assert result.messages == 2 * work.ops
        if followers:
            # live SSE followers (reconnecting with Last-Event-ID) saw everything once, in order
            followers[0].stop_after(result.messages)
            followers[1].stop_after(result.commands)
            try:
                await asyncio.wait_for(asyncio.gather(*tasks), 120)
            finally:
                for t in tasks:
                    t.cancel()
            assert [m["seq"] for m in followers[0].seen] == list(range(1, result.messages + 1))
            assert [e["data"]["rev"] for e in followers[1].seen] == list(range(1, result.commands + 1))
        print(f"retries={ledger.retries} statuses={ledger.statuses}")
    finally:
        server.stop()
