"""Shared test fixtures: a lab service on the memory backend, tokens, and a live server.

HTTP tests of every domain use these: ``client`` (Litestar's AsyncTestClient on a fresh app),
``token(...)`` (mint a JWT for the app's secret), ``auth(...)`` (headers with that token),
``engines`` (the app's core facade), and ``live_server`` (the same app under uvicorn on a free
loopback port, for SSE and anything that needs a real socket).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvicorn
from litestar import Litestar
from litestar.testing import AsyncTestClient

from northstar_adapters.config import Settings, load_settings
from northstar_core.engines import Engines
from northstar_http.bootstrap import create_app
from northstar_http.tokens import mint_token

JWT_SECRET = "test-hs256-secret-0123456789abcdef"
CURSOR_SECRET = "test-cursor-secret-0123456789abcdef"


def make_settings(tmp_path: Any, **overrides: Any) -> Settings:
    """Lab settings on a private memory store (every kind routed there unless overridden)."""
    name = f"test-{uuid.uuid4().hex}"
    base: dict[str, Any] = {
        "mode": "lab",
        "data_dir": str(tmp_path / "data"),
        "cursor_secret": CURSOR_SECRET,
        "tail_poll_seconds": 0.05,
        "jwt": {"hs256_secret": JWT_SECRET},
        "http": {"sse_heartbeat_seconds": 0.5, "sse_retry_ms": 500},
        "connections": {"mem": {"backend": "memory", "name": name}},
        "registry": {"connection": "mem", "refresh_seconds": 0.0},
    }
    base.update(overrides)
    return load_settings(environ={}, overrides=base, config_file=None)


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app) as c:
        yield c


@pytest.fixture
def engines(app: Litestar, client: AsyncTestClient[Litestar]) -> Engines:
    engines: Engines = app.state.engines
    return engines


@pytest.fixture
def token() -> Callable[..., str]:
    def _token(tenant_id: str = "t_alpha", sub: str = "u_alice", **kw: Any) -> str:
        kw.setdefault("roles", ("member",))
        kw.setdefault("mode", "lab")
        return mint_token(JWT_SECRET, tenant_id=tenant_id, sub=sub, **kw)

    return _token


@pytest.fixture
def auth(token: Callable[..., str]) -> Callable[..., dict[str, str]]:
    def _auth(tenant_id: str = "t_alpha", sub: str = "u_alice", **kw: Any) -> dict[str, str]:
        headers = kw.pop("headers", {})
        return {"Authorization": f"Bearer {token(tenant_id, sub, **kw)}", **headers}

    return _auth


class LiveServer:
    def __init__(self, app: Litestar) -> None:
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        self.server.force_exit = True
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def live_server(app: Litestar) -> AsyncIterator[LiveServer]:
    server = LiveServer(app)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
