"""Two real server processes sharing one sqlite file: a policy change made through one is
enforced by the other on its very next call (no cache anywhere)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from northstar_core.errors import NorthstarError
from northstar_http.client import NorthstarClient
from northstar_http.tokens import mint_token

SECRET = "two-servers-jwt-secret-0123456789abcdef"
LAUNCHER = textwrap.dedent(
    """
    import sys, uvicorn
    from northstar_http.bootstrap import create_app
    from northstar_adapters.config import load_settings

    async def handler(ctx, request):
        return {"fired": request.subject_id}

    async def register(app):
        app.state.engines.actions.register("fire", handler)

    app = create_app(load_settings(config_file=None))
    app.on_startup.append(register)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _spawn(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "NORTHSTAR_MODE": "lab",
        "NORTHSTAR_DATA_DIR": str(data_dir),
        "NORTHSTAR_JWT_HS256_SECRET": SECRET,
        "NORTHSTAR_CURSOR_SECRET": "two-servers-cursor-secret-0123456789",
    }
    log = (data_dir / f"server-{port}.log").open("wb")
    return subprocess.Popen([sys.executable, "-c", LAUNCHER, str(port)], env=env, stderr=log, stdout=log)


async def _start(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = _spawn(data_dir, port)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError((data_dir / f"server-{port}.log").read_text())
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    proc.wait(10)
    raise RuntimeError("server did not start")


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    first, url_a = await _start(tmp_path)
    try:
        second, url_b = await _start(tmp_path)
    except Exception:
        first.terminate()
        first.wait(10)
        raise
    try:
        yield url_a, url_b
    finally:
        for proc in (first, second):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _client(url: str, role: str, sub: str) -> NorthstarClient:
    return NorthstarClient(url, mint_token(SECRET, tenant_id="t_two", sub=sub, roles=(role,)))


async def _outcome(client: NorthstarClient, cost: float = 0.0) -> str:
    try:
        await client.actions.execute(
            {"action_name": "fire", "subject_type": "agent", "subject_id": "a1", "estimated_cost": cost}
        )
    except NorthstarError as exc:
        assert exc.http_status == 403 and exc.gate is not None, exc
        return exc.code
    return "allow"


async def test_policy_changes_through_one_server_apply_on_the_others_next_call(servers: Any) -> None:
    url_a, url_b = servers
    async with _client(url_a, "admin", "u_admin") as a, _client(url_b, "member", "u_agent") as b:
        await a.policies.put_document(
            "firearms_policy",
            {"bindings": [{"action_name": "fire", "licence_type": "l1"}]},
            expected_version=0,
        )
        await a.policies.put_document(
            "firearms_grants",
            {"grants": [{"licence_type": "l1", "subject_type": "agent"}]},
            expected_version=0,
        )
        assert await _outcome(b) == "gate.firearms.licence_required"
        licence = await a.policies.issue_licence(
            {"licence_type": "l1", "subject_type": "agent", "subject_id": "a1"}
        )
        assert await _outcome(b) == "allow"
        await a.policies.revoke_licence(licence.licence_id, reason="test")
        assert await _outcome(b) == "gate.firearms.licence_revoked"
        await a.policies.issue_licence({"licence_type": "l1", "subject_type": "agent", "subject_id": "a1"})
        assert await _outcome(b) == "allow"

        await a.policies.put_document("kill_switches", {"tenant_blocked": True}, expected_version=0)
        assert await _outcome(b) == "gate.kill_switch.tenant_blocked"
        await a.policies.put_document("kill_switches", {"tenant_blocked": False}, expected_version=1)
        assert await _outcome(b) == "allow"

        await a.policies.put_document(
            "budget_policy", {"limits": [{"period": "month", "limit": 100}]}, expected_version=0
        )
        assert await _outcome(b, cost=10) == "allow"
        await a.policies.put_document(
            "budget_policy", {"limits": [{"period": "month", "limit": 15}]}, expected_version=1
        )
        assert await _outcome(b, cost=10) == "gate.budget.limit_exceeded"

        # every decision made by B is on the spine A reads
        safety = await a.spine.list(event_type="safety", limit=500)
        assert len(safety.items) == 8
