"""Routes cannot reach the network, the file system or another tenant's safety settings.

Backend endpoints, regions, credential sources and file paths exist only in the operator's
configuration (named connections). Every attack below runs with a local listener standing in
for an attacker's server: zero connections may reach it, no file may appear outside the data
directory, and the service keeps answering (no 500, no durable breakage).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from northstar_core.engines import Engines
from northstar_core.routing import DATA_LAYOUTS, PROTECTED_KINDS
from northstar_http.bootstrap import create_app
from tests.conftest import make_settings

Auth = Callable[..., dict[str, str]]


class Listener:
    """A loopback TCP server that only counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def app(tmp_path: Path, data_dir: Path) -> Litestar:
    # The deployment's own memory connection plus one SQLite connection (in the data dir) that
    # the operator opened to tenant overrides.
    base = make_settings(tmp_path)
    connections = {
        **base.connections,
        "tenant_db": {"backend": "sqlite", "path": str(data_dir / "tenants.db"), "tenant_overrides": True},
    }
    return create_app(make_settings(tmp_path, connections=connections))


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app) as c:
        yield c


@pytest.fixture
def engines(app: Litestar, client: AsyncTestClient[Litestar]) -> Engines:
    engines: Engines = app.state.engines
    return engines


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


def _attacks(url: str) -> list[dict[str, Any]]:
    """Route bodies an attacker might send: old-style backend params, endpoints smuggled into
    every field, paths, credentials sources."""
    dynamo = {"endpoint_url": url, "region": "us-east-1", "table": "x"}
    return [
        {"resource_kind": "memory_store", "backend": "dynamodb", "params": dynamo},
        {"resource_kind": "memory_store", "connection": "tenant_db", "params": dynamo},
        {"resource_kind": "memory_store", "connection": url},
        {"resource_kind": "memory_store", "connection": "tenant_db", "table": url},
        {"resource_kind": "memory_store", "connection": "tenant_db", "table": "../../etc/passwd"},
        {"resource_kind": "memory_store", "connection": "tenant_db", "table": "/tmp/x"},
        {"resource_kind": "memory_store", "backend": "cosmos", "params": {"url": url, "key_env": "HOME"}},
        {"resource_kind": "memory_store", "backend": "sqlite", "params": {"path": 123}},
        {"resource_kind": "memory_store", "backend": "sqlite", "params": {"synchronous": "bogus"}},
        {"resource_kind": "memory_store", "connection": "tenant_db", "options": {"endpoint_url": url}},
        {"resource_kind": "memory_store", "connection": "tenant_db", "table": "ok_table\n"},
        {"resource_kind": "memory_store", "connection": "tenant_db", "tenant_id": "t_other"},
    ]


@pytest.mark.parametrize("system", [False, True], ids=["tenant-admin", "system-admin"])
async def test_no_route_body_reaches_the_network_or_the_file_system(
    client: AsyncTestClient[Litestar], auth: Auth, listener: Listener, tmp_path: Path, system: bool
) -> None:
    headers = auth(roles=("admin",), system=system)
    before = _files(tmp_path)
    cwd_before = set(os.listdir(Path.cwd()))
    attacks = _attacks(listener.url)
    if system:  # the operator may route another tenant; everything else stays refused
        attacks = [a for a in attacks if a.get("tenant_id") != "t_other"]
    for body in attacks:
        for tenant in (None, "t_alpha"):
            payload = {**body, **({"tenant_id": tenant} if tenant and "tenant_id" not in body else {})}
            r = await client.post("/routing/routes", json=payload, headers=headers)
            assert 400 <= r.status_code < 500, (payload, r.status_code, r.text)
            assert r.json()["error"]["code"], r.text
    assert listener.accepted == 0
    # the only files are the ones the operator's configuration names (the data dir)
    assert _files(tmp_path) == before
    assert set(os.listdir(Path.cwd())) == cwd_before
    routes = (await client.get("/routing/routes", headers=auth(roles=("admin",), system=True))).json()
    assert all(r.get("tenant_id") is None for r in routes["routes"])  # no override was stored


@pytest.mark.parametrize("kind", sorted(PROTECTED_KINDS))
async def test_a_tenant_admin_cannot_reroute_the_audit_trail_or_safety_kinds(
    client: AsyncTestClient[Litestar], auth: Auth, kind: str
) -> None:
    member, admin = auth(), auth(roles=("admin",))
    event = {"event_type": "rl", "source": "agent", "payload": {}, "run_id": "r1"}
    await client.post("/events/append", json=event, headers=member)
    listed = (await client.get("/events/list", headers=member)).json()["items"]
    override = {"resource_kind": kind, "connection": "tenant_db", "tenant_id": "t_alpha"}
    r = await client.post("/routing/routes", json=override, headers=admin)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "routing.override_forbidden")
    assert (await client.get("/events/list", headers=member)).json()["items"] == listed


async def test_a_tenant_admin_may_move_its_own_ordinary_kind_to_an_open_connection(
    client: AsyncTestClient[Litestar], auth: Auth, data_dir: Path
) -> None:
    admin = auth(roles=("admin",))
    r = await client.post(
        "/routing/routes",
        json={"resource_kind": "notes_store", "connection": "tenant_db", "table": "alpha_notes",
              "tenant_id": "t_alpha"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["label"], r.json()["table"]) == ("sqlite (lab)", "alpha_notes")
    # the stored route records the data layout it was written for, and the table lists it
    assert r.json()["layout"] == DATA_LAYOUTS["notes_store"]
    listed = (await client.get("/routing/routes", headers=admin)).json()["routes"]
    assert [x["layout"] for x in listed if x.get("tenant_id") == "t_alpha"] == [DATA_LAYOUTS["notes_store"]]
    created = await client.post("/notes", json={"title": "n", "surface_id": "chat"}, headers=auth())
    assert created.status_code == 201, created.text
    assert created.headers["x-northstar-backend"] == "sqlite (lab)"
    other = await client.post("/notes", json={"title": "n", "surface_id": "chat"}, headers=auth("t_gamma"))
    assert other.headers["x-northstar-backend"] == "memory (lab)"
    assert (data_dir / "tenants.db").exists()


async def test_diagnostics_and_readiness_never_500_whatever_the_stored_routes(
    client: AsyncTestClient[Litestar], auth: Auth, engines: Engines
) -> None:
    # A route stored by another version (or tampered with in the table) does not decode; one
    # names a connection the configuration no longer has.
    from northstar_core.storage import Put

    registry_store = engines.registry._store
    old_format = {"resource_kind": "chat_store", "backend": "sqlite", "params": {"synchronous": 1}}
    removed_connection = {"resource_kind": "notes_store", "connection": "gone"}
    await registry_store.write(
        "routing_registry",
        [
            Put("route#chat_store#*", json.dumps(old_format).encode()),
            Put("route#notes_store#*", json.dumps(removed_connection).encode()),
        ],
    )
    await engines.registry.load()
    system = auth(roles=("admin",), system=True)
    for path, headers in (("/routing/diagnostics", system), ("/readyz", {}), ("/routing/routes", system)):
        r = await client.get(path, headers=headers)
        assert r.status_code in (200, 503), (path, r.status_code, r.text)
    report = (await client.get("/routing/diagnostics", headers=system)).json()
    assert {"chat_store", "notes_store"} <= set(report["unreachable"])
    for url, body, code in (
        ("/chat/threads/th/messages", {"role": "user", "content": "x"}, "chat_store.route_misconfigured"),
        ("/notes", {"title": "n", "surface_id": "chat"}, "notes_store.route_misconfigured"),
    ):
        r = await client.post(url, json=body, headers=auth())
        assert (r.status_code, r.json()["error"]["code"]) == (503, code)
    # setting the route again repairs it
    repair = {"resource_kind": "chat_store", "connection": "mem"}
    r = await client.post("/routing/routes", json=repair, headers=system)
    assert r.status_code == 200, r.text
    r = await client.post("/chat/threads/th/messages", json={"role": "user", "content": "x"}, headers=auth())
    assert r.status_code == 201


async def test_many_route_changes_do_not_leak_open_stores(
    client: AsyncTestClient[Litestar], auth: Auth, engines: Engines
) -> None:
    admin = auth(roles=("admin",))
    fds_before = len(os.listdir("/proc/self/fd"))
    registry = engines.registry
    clock = [0.0]
    registry._monotonic = lambda: clock[0]
    for i in range(40):
        r = await client.post(
            "/routing/routes",
            json={"resource_kind": "notes_store", "connection": "tenant_db", "table": f"t{i:03d}",
                  "tenant_id": "t_alpha"},
            headers=admin,
        )
        assert r.status_code == 200, r.text
        clock[0] += 31.0  # past the grace period: replaced stores are closed at the next load
    await registry.load()
    # the deployment's own (memory, per kind) stores plus the tenant's current one
    open_keys = set(registry._stores)
    assert sum(1 for c, _ in open_keys if c == "tenant_db") == 1
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 8
