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
(see :func:`tests.e2e.reliability_support.verify`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from northstar_http.tokens import mint_token
from tests.e2e.cloud import CLOUD_BACKENDS, JWT_SECRET, cloud_target, to_toml
from tests.e2e.reliability_support import ServeProcess, Workload, verify
from tests.emulators.cosmos import cosmos_endpoint, cosmos_server
from tests.emulators.firestore import firestore_emulator
from tests.emulators.moto import dynamodb_endpoint, moto_server

CLIENTS, OPS = 3, 8


@pytest.fixture(params=["sqlite", *CLOUD_BACKENDS])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ServeProcess, str]]:
    """A started server process on the chosen backend and a member token for it."""
    if request.param == "sqlite":
        server = ServeProcess(tmp_path)
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
        token = mint_token(JWT_SECRET, tenant_id="t_crash", sub="u_crash", mode="saas", roles=("member",))
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

    async def killer() -> None:
        nonlocal kills
        # mid-run: after the first acknowledgements, at a random moment
        await work.wait_acks(random.randint(2, 2 * CLIENTS))
        await asyncio.sleep(random.uniform(0.0, 0.4))
        server.kill9()
        kills += 1
        await asyncio.sleep(random.uniform(0.1, 0.5))  # clients hit a dead port meanwhile
        await asyncio.to_thread(server.start)

    ledger = await work.run(during=killer)
    assert kills == 1 and server.starts == 2
    result = await verify(server.url, token, ledger)
    assert result.messages == CLIENTS * OPS
    assert result.commands == len(ledger.canvas_acked) == CLIENTS * ((OPS + 1) // 2)
    print(f"retries={ledger.retries} statuses={ledger.statuses} refused={len(ledger.canvas_refused)}")
