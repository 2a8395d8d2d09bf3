# ruff: noqa: F401 - the emulators' session fixtures are imported to be found by name
"""A tenant exported from one deployment and imported into another reads back exactly the same.

The source is the lab service on SQLite (``northstar serve``'s default) after the parity
script (chat, canvas, blackboard, notes, tabular, memory, spine, timeline, analytics, budget,
config, the gate chain). Its archive is taken over HTTP (``GET
/system/tenants/{tenant}/archive``, resumed once from a mark) and imported with ``northstar
import`` into a fresh SQLite deployment, and in-process into a deployment routed to each cloud
emulator. Every read endpoint then answers both deployments identically — ids, sequence
numbers, revisions, times and signed cursors included (both use one cursor secret); only the
backend's label in ``route`` fields differs between backends.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from northstar_adapters.compose import build_engines
from northstar_adapters.config import finalize, load_settings
from northstar_core.identity import RequestContext
from northstar_core.kernel import archive
from northstar_core.routing import RESOURCE_KINDS
from northstar_core.safety.actions import ActionOutcome, ActionRequest
from northstar_http.bootstrap import create_app
from northstar_http.tokens import mint_token
from tests.conftest import LiveServer
from tests.e2e.cloud import AUDIENCE, CLOUD_BACKENDS, CURSOR_SECRET, JWT_SECRET, cloud_target
from tests.e2e.test_backend_parity import ACTION, TENANT, Transcript, _script
from tests.emulators.cosmos import cosmos_endpoint, cosmos_server
from tests.emulators.firestore import firestore_emulator
from tests.emulators.moto import dynamodb_endpoint, moto_server

ROOT = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = {
    "mode": "lab",
    "cursor_secret": CURSOR_SECRET,
    "tail_poll_seconds": 0.1,
    "jwt": {"hs256_secret": JWT_SECRET, "audience": AUDIENCE},
    "http": {"sse_heartbeat_seconds": 0.5, "sse_retry_ms": 500},
}


def bearer(*roles: str, system: bool = False) -> dict[str, str]:
    token = mint_token(
        JWT_SECRET,
        audience=AUDIENCE,
        tenant_id=TENANT,
        sub="u_parity",
        mode="lab",
        roles=roles,
        system=system,
    )
    return {"Authorization": f"Bearer {token}"}


# Every read the parity script's data can be read back through (none writes).
READS: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("/chat/threads/th1/messages", {}, {}),
    ("/chat/threads/th1/messages", {"limit": 1}, {}),
    ("/chat/threads/th1/snapshot", {}, {}),
    ("/chat/threads", {}, {}),
    ("/canvas/cv1/snapshot", {}, {}),
    ("/canvas/cv1/replay", {}, {}),
    ("/canvas/cv1/artifacts", {}, {}),
    ("/blackboard/run1/entries/plan", {}, {}),
    ("/blackboard/run1/entries", {}, {}),
    ("/notes", {"surface_id": "chat"}, {}),
    ("/tabular/flows/f1", {}, {"X-Project-Id": "proj", "X-Surface-Id": "builder"}),
    ("/tabular/flows/f1", {"version": 1}, {"X-Project-Id": "proj", "X-Surface-Id": "builder"}),
    ("/tabular/flows/f1/versions", {}, {"X-Project-Id": "proj", "X-Surface-Id": "builder"}),
    ("/tabular/flows", {}, {"X-Project-Id": "proj", "X-Surface-Id": "builder"}),
    ("/memory", {"session_id": "s1"}, {}),
    ("/memory", {"session_id": "s1", "key": "name"}, {}),
    ("/events/replay", {"run_id": "run7"}, {}),
    ("/events/list", {}, {}),
    ("/events/list", {"event_type": "rl"}, {}),
    ("/events/list", {"event_type": "safety"}, {}),
    ("/realtime/timeline/tl1/list", {}, {}),
    ("/budget/usage", {}, {}),
    ("/config/tenant", {}, {}),
    ("/kill-switches", {}, {}),
]


async def read_everything(server: LiveServer) -> list[tuple[str, int, Any]]:
    out = []
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for path, params, headers in READS:
            r = await http.get(path, params=params, headers={**bearer("member", "admin"), **headers})
            out.append((f"{path} {params}", r.status_code, r.json()))
        if out[1][1] != 200:
            return out
        # a cursor of the source is a cursor of the copy: the page after it is the same
        first = out[1][2]["next_cursor"]
        r = await http.get("/chat/threads/th1/messages", params={"cursor": first}, headers=bearer("member"))
        out.append(("after the source's cursor", r.status_code, r.json()))
    return out


async def populate_and_export(data_dir: Path) -> tuple[bytes, list[tuple[str, int, Any]]]:
    server = LiveServer(create_app(load_settings(environ={}, overrides={**BASE, "data_dir": str(data_dir)})))
    await server.start()
    try:

        async def echo(ctx: RequestContext, request: ActionRequest) -> ActionOutcome:
            return ActionOutcome(result={"sent": request.params["to"]}, cost=1.25)

        server.app.state.engines.actions.register(ACTION, echo)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            await _script(Transcript(http, bearer("member"), bearer("member", "admin")))
            url = f"/system/tenants/{TENANT}/archive"
            refused = await http.get(url, headers=bearer("owner"))
            assert (refused.status_code, refused.json()["error"]["code"]) == (403, "auth.system_required")
            full = await http.get(url, headers=bearer("owner", system=True))
            assert full.status_code == 200 and full.headers["content-type"].startswith("application/x-ndjson")
            lines = full.content.splitlines(keepends=True)
            marks = [i for i, x in enumerate(lines) if b'"t":"mark"' in x]
            assert len(marks) >= 2
            # an export cut after its first mark continues from that mark's cursor
            cursor = msgspec.json.decode(lines[marks[0]])["cursor"]
            rest = await http.get(url, params={"cursor": cursor}, headers=bearer("owner", system=True))
            assert rest.status_code == 200
            assert lines[: marks[0] + 1] + rest.content.splitlines(keepends=True) == lines
        return b"".join(lines), await read_everything(server)
    finally:
        await server.stop()


def _masked(value: Any, labels: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _masked(v, labels) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, labels) for v in value]
    if isinstance(value, str):
        for label in labels:
            value = re.sub(rf"\b{label}\b( \(lab\))?", "<backend>", value)
    return value


async def read_deployment(overrides: dict[str, Any]) -> list[tuple[str, int, Any]]:
    server = LiveServer(create_app(load_settings(environ={}, overrides=overrides)))
    await server.start()
    try:
        return await read_everything(server)
    finally:
        await server.stop()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, int, Any]]]:
    where = tmp_path_factory.mktemp("archive-source")
    archive_file = where / "t_parity.jsonl"
    body, reads = asyncio.run(populate_and_export(where / "data"))
    archive_file.write_bytes(body)
    return archive_file, reads


def _cli(config: Path, data_dir: Path) -> list[str]:
    """The command line of a lab deployment on ``data_dir`` with this module's secrets."""
    config.write_text(
        f'mode = "lab"\ndata_dir = "{data_dir}"\ncursor_secret = "{CURSOR_SECRET}"\n'
        f'[jwt]\nhs256_secret = "{JWT_SECRET}"\naudience = "{AUDIENCE}"\n'
    )
    return [sys.executable, "-m", "northstar_http.cli", "--config", str(config)]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}


def test_northstar_import_into_a_fresh_sqlite_deployment_reads_back_identically(
    source: tuple[Path, list[tuple[str, int, Any]]], tmp_path: Path
) -> None:
    archive_file, expected = source
    cli = _cli(tmp_path / "northstar.toml", tmp_path / "data")
    env = _env()
    done = subprocess.run(
        [*cli, "import", "--tenant", TENANT, "--in", str(archive_file)],
        capture_output=True,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr.decode()
    report = msgspec.json.decode(done.stdout)
    end = msgspec.json.decode(archive_file.read_bytes().splitlines()[-1], type=archive.ArchiveEnd)
    assert (report["items"], report["written"], report["digest"]) == (end.items, end.items, end.digest)
    # a second import is refused; resumed, it finds everything in place
    again = subprocess.run(
        [*cli, "import", "--tenant", TENANT, "--in", str(archive_file)],
        capture_output=True,
        env=env,
        cwd=ROOT,
    )
    assert again.returncode == 1 and b"archive.not_empty" in again.stderr
    resumed = subprocess.run(
        [*cli, "import", "--tenant", TENANT, "--in", str(archive_file), "--resume"],
        capture_output=True,
        env=env,
        cwd=ROOT,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert msgspec.json.decode(resumed.stdout)["already_present"] == end.items
    got = asyncio.run(read_deployment({**BASE, "data_dir": str(tmp_path / "data")}))
    assert got == expected

    # erased: no row of the tenant is left in the database file, and it is served no more
    erase = [*cli, "erase", "--tenant", TENANT, "--confirm", TENANT]
    done = subprocess.run(erase, capture_output=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr.decode()
    assert msgspec.json.decode(done.stdout)["deleted"] == end.items
    [database] = [p for p in (tmp_path / "data").iterdir() if p.suffix in (".db", ".sqlite", ".sqlite3")]
    with sqlite3.connect(database) as conn:
        left = conn.execute("SELECT count(*) FROM items WHERE pk LIKE ?", (TENANT + "|%",)).fetchone()[0]
    assert left == 0
    gone = asyncio.run(read_deployment({**BASE, "data_dir": str(tmp_path / "data")}))
    assert {(status, body["error"]["code"]) for _, status, body in gone} == {(410, "tenant.erased")}


@pytest.mark.parametrize("backend", CLOUD_BACKENDS)
async def test_an_import_into_a_cloud_routed_deployment_reads_back_identically(
    backend: str,
    source: tuple[Path, list[tuple[str, int, Any]]],
    request: pytest.FixtureRequest,
) -> None:
    archive_file, expected = source
    target = cloud_target(backend, request)
    try:
        await target.provision()
        overrides = {**target.settings_dict(mode="lab"), **{k: BASE[k] for k in ("jwt", "http")}}
        engines = await build_engines(finalize(load_settings(environ={}, overrides=overrides)))
        try:

            async def lines() -> Any:
                for line in archive_file.read_bytes().splitlines(keepends=True):
                    yield line

            operator = RequestContext(
                tenant_id="t_ops", mode="lab", user_id="op", roles=("owner",), is_system=True
            )
            report = await engines.archives.import_(operator, TENANT, lines())
            assert report.written == report.items > 0
        finally:
            await engines.close()
        got = await read_deployment(overrides)
        # erased on the cloud backend: a scan of every kind's table finds nothing of the tenant
        engines = await build_engines(finalize(load_settings(environ={}, overrides=overrides)))
        try:
            erased = await engines.archives.erase(operator, TENANT, confirm=TENANT, settle_seconds=0)
            assert erased.deleted == report.items
            for kind in RESOURCE_KINDS:
                store = await engines.registry.store_for(kind, TENANT, retired_ok=True)
                assert (await store.scan(TENANT + "|", limit=1000)).items == [], kind
        finally:
            await engines.close()
    finally:
        await target.cleanup()
    labels = ("sqlite", *CLOUD_BACKENDS)
    assert _masked(got, labels) == _masked(expected, labels)


def test_northstar_export_resumes_an_unfinished_file_to_the_same_archive(
    source: tuple[Path, list[tuple[str, int, Any]]], tmp_path: Path
) -> None:
    archive_file, _ = source
    env = _env()
    out = tmp_path / "export.jsonl"
    command = [*_cli(tmp_path / "northstar.toml", archive_file.parent / "data"), "export", "--tenant", TENANT]
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr.decode()
    full = out.read_bytes()
    assert full == archive_file.read_bytes()  # the CLI and HTTP exports are the same archive
    lines = full.splitlines(keepends=True)
    marks = [i for i, x in enumerate(lines) if b'"t":"mark"' in x]
    # cut in the middle of a line after the third mark, as a crash would leave it
    out.write_bytes(b"".join(lines[: marks[2] + 2]) + lines[marks[2] + 2][:10])
    resumed = subprocess.run([*command, "--out", str(out)], capture_output=True, env=env, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert b"resuming" in resumed.stderr
    assert out.read_bytes() == full
    again = subprocess.run([*command, "--out", str(out)], capture_output=True, env=env, cwd=ROOT)
    assert again.returncode == 0 and b"complete archive already" in again.stderr
    assert out.read_bytes() == full
