# ruff: noqa: F401 - the emulators' session fixtures are imported to be found by name
"""Crash safety (SPEC §8): ``kill -9`` the real server while clients write with retries.

A real ``northstar serve`` process runs on lab SQLite (a fresh data dir) or — non-lab, ``saas``
mode — with every resource kind routed to one emulator (DynamoDB/moto, Firestore, Cosmos).
Three concurrent clients post chat messages to one thread and two-op canvas commands to one
canvas, each with an idempotency key, retrying connection errors and 5xx answers with the same
key and body. At a random moment after the first acknowledgements the server is killed with
SIGKILL and restarted on the same port and backend; the clients finish their retries. Then
every acknowledged write is present exactly once with the acknowledged seq/revision, nothing is
applied twice, seqs and revisions are gap-free, and no command refused with 409 was committed
(see :func:`tests.e2e.reliability_support.verify`). Two SSE followers (chat, canvas) connected
from the start reconnect across the crash with ``Last-Event-ID`` and must have received every
message/revision exactly once, in order.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from northstar_http.tokens import mint_token
from tests.e2e.cloud import AUDIENCE, CLOUD_BACKENDS, JWT_SECRET, cloud_target, to_toml
from tests.e2e.reliability_support import CANVAS_ID, CHAT_THREAD, ServeProcess, SseFollower, Workload, verify
from tests.emulators.cosmos import cosmos_endpoint, cosmos_server
from tests.emulators.firestore import firestore_emulator
from tests.emulators.moto import dynamodb_endpoint, moto_server

CLIENTS, OPS = 3, 8


@pytest.fixture(params=["sqlite", *CLOUD_BACKENDS])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ServeProcess, str]]:
    """A started server process on the chosen backend and a member token for it."""
    if request.param == "sqlite":
        # SSE heartbeats often enough for followers to notice a dead server promptly
        server = ServeProcess(tmp_path, env={"NORTHSTAR_HTTP_SSE_HEARTBEAT_SECONDS": "0.5"})
        server.start()
        token = server.cli("token", "--tenant", "t_crash", "--user", "u_crash")
        target = None
    else:
        target = cloud_target(request.param, request)
        config = tmp_path / "northstar.toml"
        config.write_text(to_toml(target.settings_dict(mode="saas")))
        asyncio.run(target.provision())
        server = ServeProcess(tmp_path, config=config, env=target.env)
        server.start()
        token = mint_token(
            JWT_SECRET, audience=AUDIENCE, tenant_id="t_crash", sub="u_crash", mode="saas", roles=("member",)
        )
    try:
        yield server, token
    finally:
        server.stop()
        if target is not None:
            asyncio.run(target.cleanup())


async def test_acknowledged_writes_survive_kill9_exactly_once(deployment: tuple[ServeProcess, str]) -> None:
    server, token = deployment
    work = Workload(server.url, token, clients=CLIENTS, ops=OPS)
    kills = 0

    total = CLIENTS * (OPS + (OPS + 1) // 2)  # chat posts + canvas commands
    acks_at_kill: list[int] = []

    async def killer() -> None:
        nonlocal kills
        # mid-run by construction: at a random number of acknowledged writes, well before the end
        await work.wait_acks(random.randint(2, total // 2))
        server.kill9()
        acks_at_kill.append(work.acks)
        kills += 1
        await asyncio.sleep(random.uniform(0.1, 0.5))  # clients hit a dead port meanwhile
        await asyncio.to_thread(server.start)

    chat_sse = SseFollower(server.url, token, f"/sse/chat/{CHAT_THREAD}", "message")
    canvas_sse = SseFollower(server.url, token, f"/sse/canvas/{CANVAS_ID}", "op_committed")
    followers = [asyncio.create_task(f.run()) for f in (chat_sse, canvas_sse)]
    try:
        ledger = await work.run(during=killer)
        assert kills == 1 and server.starts == 2 and acks_at_kill[0] < total
        result = await verify(server.url, token, ledger)
        assert result.messages == CLIENTS * OPS
        assert result.commands == len(ledger.canvas_acked) == CLIENTS * ((OPS + 1) // 2)
        # live followers that reconnected across the crash with Last-Event-ID saw every event
        # exactly once, in order
        chat_sse.stop_after(result.messages)
        canvas_sse.stop_after(result.commands)
        await asyncio.wait_for(asyncio.gather(*followers), 120)
    finally:
        for f in followers:
            f.cancel()
    assert [m["seq"] for m in chat_sse.seen] == list(range(1, result.messages + 1))
    assert [e["data"]["rev"] for e in canvas_sse.seen] == list(range(1, result.commands + 1))
    assert chat_sse.reconnects >= 1 and canvas_sse.reconnects >= 1  # the crash cut them
    assert ledger.retries >= 1  # some client felt the crash and retried
    print(f"retries={ledger.retries} statuses={ledger.statuses} refused={len(ledger.canvas_refused)}")
