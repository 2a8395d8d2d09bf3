# ruff: noqa: F401 - the emulators' session fixtures are imported to be found by name
"""Online migration with real processes: ``northstar migrate`` killed with SIGKILL mid-way.

A lab deployment (routing registry on its SQLite file) routes ``chat_store``,
``canvas_command_store`` and ``event_spine`` to one table ``live`` on a source connection
(SQLite, or an emulator); a second connection on an emulator is the target. One ``northstar
serve`` process takes concurrent writes (chat posts, canvas commands, keyed spine events, with
idempotent retries), a second one sharing the configuration serves an SSE follower of the chat
thread. ``northstar migrate`` moves the three kinds to the target while that goes on, and is
``kill -9``-ed twice — while it copies a prefilled table, and right after it reports ``frozen``
— and run again each time; the writing server is ``kill -9``-ed and restarted once while the
migration is dual. Afterwards every acknowledged write is served exactly once with gap-free
seqs/revisions, the follower saw every message once in order across the cutover, the routes
name the target, a cursor taken before the migration still pages, and ``migrate release``
leaves no item of the scope in the source. A last case rolls a switched migration back (the
rollback killed once) and finds every write, including those made on the target, on the source.

Writes made while the kinds are frozen wait for the cutover and complete on the target — also
on Firestore and Cosmos, which have no atomic checks: a stream batch planned for the source
(with a ``Check``) is planned again there, never refused. Moto is slow to take in data (see
``PARTITIONS``): into it the copy is smaller and the writes sparser.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from northstar_adapters import AdapterFactory
from northstar_core.routing import Target
from northstar_core.storage import Put
from tests.e2e.cloud import CloudTarget, clean_env, cloud_target, to_toml
from tests.e2e.reliability_support import (
    CANVAS_ID,
    CHAT_THREAD,
    NORTHSTAR,
    Ledger,
    ServeProcess,
    SseFollower,
    Workload,
    verify,
)
from tests.emulators.cosmos import cosmos_endpoint, cosmos_server
from tests.emulators.firestore import firestore_emulator
from tests.emulators.moto import dynamodb_endpoint, moto_server

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("chat_store", "canvas_command_store", "event_spine")
TABLE = "live"
TENANT = "t_mig"
SECRET = "m" * 40
JWT = "j" * 40
PER_PARTITION = 100
# Partitions prefilled: the copy then takes several scan pages (1000 items each). Fewer into
# moto: its TransactWriteItems deep-copies the whole table once per item of the transaction, so
# a 25-item batch into a table of n items costs 25 n item copies (seconds at a few thousand).
# Into moto the copy is one scan page, and the migrator is killed once the target table holds
# some of it (its item count, polled), not on a progress line (written after a whole page).
PARTITIONS = {"dynamodb": 3, "firestore": 25, "cosmos": 25}
MOTO_SOURCE_PARTITIONS = 11
TAG = "mig"
# How long one `northstar migrate` run may take before it is killed and the test fails.
RUN_TIMEOUT = 90.0
# Between two rounds of writes: a steady trickle, not a flood the emulators would queue. Moto
# takes in a few dozen items a second (see PARTITIONS): faster writes and the migrator's drain
# would chase them without end.
PAUSE = {"dynamodb": 2.0}
COPYING = re.compile(r"^# \S+ dual: (\d+) items copied")


# --- the deployment -----------------------------------------------------------------------------


@dataclass
class Deployment:
    where: Path
    config: Path
    source: str  # connection names
    target: str
    env: dict[str, str]
    clouds: list[CloudTarget] = field(default_factory=list)

    def cli(self, *args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*NORTHSTAR, "--config", str(self.config), *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )


def _deployment(tmp_path: Path, request: pytest.FixtureRequest, source: str, target: str) -> Deployment:
    data = tmp_path / "data"
    data.mkdir(parents=True)
    connections: dict[str, Any] = {"lab": {"backend": "sqlite", "path": str(data / "northstar.db")}}
    env: dict[str, str] = {}
    clouds: list[CloudTarget] = []
    names: list[str] = []
    for role, backend in (("src", source), ("dst", target)):
        if backend == "sqlite":
            names.append("lab")
            continue
        cloud = cloud_target(backend, request)
        clouds.append(cloud)
        connections[role] = {"backend": backend, **cloud.params}
        if backend == "dynamodb":
            # moto serialises every request: a 25-item transaction queued behind others (the
            # copy runs 8 at once) may wait longer than the default 10 s read timeout
            connections[role]["read_timeout"] = 60.0
        env.update(cloud.env)
        names.append(role)
    settings = {
        "mode": "lab",
        "data_dir": str(data),
        "cursor_secret": SECRET,
        "tail_poll_seconds": 0.1,
        "jwt": {"hs256_secret": JWT},
        "http": {"sse_heartbeat_seconds": 0.5, "sse_retry_ms": 200},
        "connections": connections,
        "registry": {"connection": "lab", "refresh_seconds": 0.2, "max_view_seconds": 1.5},
        "routes": [{"resource_kind": k, "connection": names[0], "table": TABLE} for k in KINDS],
    }
    config = tmp_path / "northstar.toml"
    config.write_text(to_toml(settings))
    deployment = Deployment(tmp_path, config, names[0], names[1], clean_env(**env), clouds)
    done = deployment.cli("provision")  # the registry and the source table
    assert done.returncode == 0, done.stdout + done.stderr
    return deployment


@pytest.fixture
def make_deployment(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str, str], Deployment]]:
    made: list[Deployment] = []

    def make(source: str, target: str) -> Deployment:
        made.append(_deployment(tmp_path, request, source, target))
        return made[-1]

    yield make
    for deployment in made:
        for cloud in deployment.clouds:
            asyncio.run(cloud.cleanup())


async def _prefill(deployment: Deployment, tenant: str, partitions: int) -> int:
    """``partitions`` x 100 items in the source table, in partitions of the tenant (written
    before any server runs: data of the scope like any other)."""
    settings = _settings_of(deployment)
    connection = settings["connections"][deployment.source]
    params = {k: v for k, v in connection.items() if k != "backend"}
    target = Target(resource_kind="chat_store", backend=connection["backend"], params=params, table=TABLE)
    old = dict(os.environ)
    os.environ.update({k: v for k, v in deployment.env.items() if k not in old})
    try:
        store = AdapterFactory().open(target)
        try:
            for p in range(partitions):
                partition = f"{tenant}|lab|bulk|{p:03d}"
                # one item a write: a single put (moto's transactions are slow, see PARTITIONS)
                for i in range(PER_PARTITION):
                    await store.write(partition, [Put(f"k#{i:04d}", os.urandom(64))])
        finally:
            await store.close()
    finally:
        for key in set(os.environ) - set(old):
            del os.environ[key]
    return partitions * PER_PARTITION


def _settings_of(deployment: Deployment) -> dict[str, Any]:
    return tomllib.loads(deployment.config.read_text())


def _source_rows(deployment: Deployment, tenant: str | None) -> list[tuple[Any, ...]]:
    """The rows of the scope in the source's SQLite table (``live``): ``~…`` partitions are each
    side's own bookkeeping (the activity index), never moved (``Migration.in_scope``)."""
    with sqlite3.connect(deployment.where / "data" / "northstar.db") as conn:
        query = (
            "SELECT pk, sk, version, expires_at FROM items WHERE ns = ? AND pk LIKE ? AND pk NOT LIKE '~%'"
        )
        return conn.execute(query, (TABLE, f"{tenant}|%" if tenant else "%")).fetchall()


# --- driving `northstar migrate` ----------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    stdout: str
    lines: list[str]

    def result(self) -> dict[str, Any]:
        assert self.returncode == 0, "\n".join(self.lines)
        return json.loads(self.stdout.strip().splitlines()[-1])


def _run_migrate(
    deployment: Deployment, args: list[str], *, kill_when: Callable[[str], bool] | None = None,
    on_line: Callable[[str], None] | None = None, kill_poll: Callable[[], bool] | None = None,
) -> Run:
    """Run ``northstar migrate ARGS``; SIGKILL it on the first stderr line ``kill_when`` accepts,
    or once ``kill_poll()`` (asked every 50 ms) says so (the test fails if neither happens)."""
    process = subprocess.Popen(
        [*NORTHSTAR, "--config", str(deployment.config), "migrate", *args],
        cwd=ROOT, env=deployment.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    watchdog = threading.Timer(RUN_TIMEOUT, process.kill)
    watchdog.start()
    lines: list[str] = []
    killed = False
    polled = threading.Event()

    def poll() -> None:
        assert kill_poll is not None
        while process.poll() is None:
            if kill_poll():
                os.kill(process.pid, signal.SIGKILL)
                polled.set()
                return
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True) if kill_poll is not None else None
    if poller is not None:
        poller.start()
    try:
        assert process.stderr is not None and process.stdout is not None
        for line in process.stderr:
            lines.append(f"{time.strftime('%H:%M:%S')} {line.rstrip()}")
            if on_line is not None:
                on_line(line)
            if kill_when is not None and kill_when(line):
                os.kill(process.pid, signal.SIGKILL)
                killed = True
                break
        stdout = process.stdout.read()
        process.wait(30)
        if poller is not None:
            poller.join(30)
            killed = killed or polled.is_set()
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    print(f"-- migrate {args[0]}: {'killed' if killed else process.returncode}")
    for line in lines:
        print(f"   {line[:200]}")
    if kill_when is not None or kill_poll is not None:
        assert killed and process.returncode == -signal.SIGKILL, (process.returncode, lines)
    else:
        assert process.returncode != -signal.SIGKILL, "the migration outlived its time limit"
    return Run(process.returncode, stdout, lines)


def _moto_items(deployment: Deployment) -> int:
    """How many items the moto target table holds (DescribeTable counts them live on moto)."""
    import boto3

    params = _settings_of(deployment)["connections"][deployment.target]
    client = boto3.client(
        "dynamodb", endpoint_url=params["endpoint_url"], region_name=params["region"],
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    try:
        table = client.describe_table(TableName=params["table_prefix"] + TABLE)["Table"]
    except client.exceptions.ResourceNotFoundException:
        return 0
    return int(table["ItemCount"])


def _status(deployment: Deployment) -> list[dict[str, Any]]:
    done = deployment.cli("migrate", "status")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _routes(deployment: Deployment) -> dict[tuple[str, str | None], dict[str, Any]]:
    done = deployment.cli("routes", "show")
    assert done.returncode == 0, done.stderr
    out = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            route = json.loads(line)
            out[(route["resource_kind"], route.get("tenant_id"))] = route
    return out


def _assert_routed(deployment: Deployment, tenant: str | None, connection: str) -> None:
    routes = _routes(deployment)
    for kind in KINDS:
        route = routes.get((kind, tenant))
        assert route is not None, (kind, tenant, routes)
        assert (route["connection"], route.get("table")) == (connection, TABLE), route


def _kind_args(tenant: str | None) -> list[str]:
    args = [a for kind in KINDS for a in ("--kind", kind)]
    return [*args, *(["--tenant", tenant] if tenant else [])]


# --- the load -----------------------------------------------------------------------------------


class Rounds:
    """Workload rounds on the one thread and canvas, back to back until stopped; every round's
    ledger merged into one (the keys carry the round, all start with ``TAG-``)."""

    def __init__(self, url: str, token: str, *, pause: float = 0.3, ops: int = 3) -> None:
        self.url = url
        self.token = token
        self.pause = pause
        self.ops = ops
        self.ledger = Ledger(tag=TAG)
        self.rounds = 0
        self.stop = asyncio.Event()

    def _merge(self, led: Ledger) -> None:
        m = self.ledger
        m.chat_attempted.update(led.chat_attempted)
        m.chat_acked.update(led.chat_acked)
        m.spine_attempted.update(led.spine_attempted)
        m.spine_acked.update(led.spine_acked)
        m.canvas_attempted |= led.canvas_attempted
        m.canvas_acked.update(led.canvas_acked)
        m.canvas_refused |= led.canvas_refused
        m.retries += led.retries
        for status, n in led.statuses.items():
            m.statuses[status] = m.statuses.get(status, 0) + n
        m.unexpected += led.unexpected

    async def one(self) -> None:
        tag = f"{TAG}-r{self.rounds}"
        work = Workload(self.url, self.token, clients=2, ops=self.ops, tag=tag, retry_deadline=60)
        self.rounds += 1
        self._merge(await work.run())
        await asyncio.sleep(self.pause)

    async def burst(self) -> None:
        """One round started now, merged when it ends: started while the kinds are frozen, its
        writes wait for the cutover and complete on the target."""
        tag = f"{TAG}-f{self.rounds}"
        work = Workload(self.url, self.token, clients=2, ops=1, tag=tag, retry_deadline=60)
        self.rounds += 1
        self._merge(await work.run())

    async def run(self) -> None:
        while not self.stop.is_set():
            await self.one()
        await self.one()  # a last round after the stop: on whatever serves now


async def _list(url: str, token: str, cursor: str | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        for _ in range(1000):
            params: dict[str, Any] = {"limit": 50, **({"cursor": cursor} if cursor else {})}
            r = await http.get(f"/chat/threads/{CHAT_THREAD}/messages", params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            out += page["items"]
            if not page["has_more"]:
                return out
            cursor = page["next_cursor"]
    raise AssertionError("paging did not end")


async def _cursor_after(url: str, token: str, n: int) -> tuple[str, list[int]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        r = await http.get(f"/chat/threads/{CHAT_THREAD}/messages", params={"limit": n})
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["has_more"] and page["next_cursor"], page
        return page["next_cursor"], [m["seq"] for m in page["items"]]


# --- the online migration under kills -----------------------------------------------------------


PAIRS = [
    pytest.param("sqlite", "dynamodb", None, id="sqlite-dynamodb-deployment"),
    pytest.param("sqlite", "firestore", TENANT, id="sqlite-firestore-tenant"),
    pytest.param("sqlite", "cosmos", TENANT, id="sqlite-cosmos-tenant"),
    pytest.param("dynamodb", "cosmos", TENANT, id="dynamodb-cosmos-tenant"),
]


@pytest.mark.parametrize(("source", "target", "scope"), PAIRS)
async def test_migration_killed_while_copying_and_frozen_resumes_and_loses_nothing(
    make_deployment: Callable[[str, str], Deployment], source: str, target: str, scope: str | None
) -> None:
    started = time.monotonic()
    deployment = make_deployment(source, target)
    partitions = MOTO_SOURCE_PARTITIONS if source == "dynamodb" else PARTITIONS[target]
    prefilled = await _prefill(deployment, TENANT, partitions)
    writer = ServeProcess(deployment.where, config=deployment.config, env=deployment.env)
    reader = ServeProcess(deployment.where / "reader", config=deployment.config, env=deployment.env)
    reader.workdir.mkdir()
    servers = [writer, reader]
    follower_task: asyncio.Task[Any] | None = None
    rounds_task: asyncio.Task[None] | None = None
    try:
        await asyncio.gather(asyncio.to_thread(writer.start), asyncio.to_thread(reader.start))
        token = writer.cli("token", "--tenant", TENANT, "--user", "u_mig")
        follower = SseFollower(reader.url, token, f"/sse/chat/{CHAT_THREAD}", "message")
        follower_task = asyncio.create_task(follower.run(deadline=240))
        load = Rounds(writer.url, token, pause=PAUSE.get(target, 0.3), ops=2 if target == "dynamodb" else 3)
        await load.one()  # before the migration: a cursor into the thread to use after it
        cursor, before = await _cursor_after(writer.url, token, 3)
        rounds_task = asyncio.create_task(load.run())

        args = [*_kind_args(scope), "--to", deployment.target, "--table", TABLE,
                "--fence-seconds", "0.3", "--settle-seconds", "1"]
        restarted: list[threading.Thread] = []

        def crash_writer_when_dual(line: str) -> None:
            # the writing server dies (and comes back) while the migration journals its writes
            if not restarted and " dual: " in line and "started: writes are journaled" in line:
                writer.kill9()
                thread = threading.Thread(target=writer.start, daemon=True)
                thread.start()
                restarted.append(thread)

        def copying(line: str) -> bool:
            m = COPYING.match(line)
            return m is not None and int(m.group(1)) > 0 and "— copied" not in line

        if target == "dynamodb":
            holding: list[int] = []

            def part_copied() -> bool:
                holding.append(_moto_items(deployment))
                return holding[-1] > 0

            first = await asyncio.to_thread(
                _run_migrate, deployment, args, kill_poll=part_copied, on_line=crash_writer_when_dual
            )
            assert 0 < holding[-1] < prefilled, holding[-5:]
        else:
            first = await asyncio.to_thread(
                _run_migrate, deployment, args, kill_when=copying, on_line=crash_writer_when_dual
            )
        assert restarted, first.lines
        await asyncio.to_thread(restarted[0].join, 60)
        assert writer.starts == 2 and writer.proc is not None and writer.proc.poll() is None
        [status] = _status(deployment)
        assert status["active"] and status["phase"] == "dual", status
        assert status["copied_items"] < prefilled, status
        assert status["copied_items"] > 0 or target == "dynamodb", status
        assert not any(step.startswith("copied ") for step, _ in status["steps"]), status["steps"]

        second = await asyncio.to_thread(
            _run_migrate, deployment, args, kill_when=lambda line: " frozen: " in line
        )
        assert any("— copied" in line for line in second.lines), second.lines  # resumed the copy
        [status] = _status(deployment)
        assert status["active"] and status["phase"] == "frozen", status
        # writes made now wait for the cutover the next run makes: in flight across it
        burst = asyncio.create_task(load.burst())

        third = (await asyncio.to_thread(_run_migrate, deployment, args)).result()
        await asyncio.wait_for(burst, 120)
        assert third["phase"] == "switched" and third["state"] == "switched", third
        assert third["copied_items"] >= prefilled and third["verified_items"] >= prefilled, third
        load.stop.set()
        await asyncio.wait_for(rounds_task, 120)
        migrated_at = time.monotonic() - started

        _assert_routed(deployment, scope, deployment.target)
        # refusals (4xx other than a canvas conflict) fail the test at its end: every other
        # property is checked first (a refused write was not applied: not in the ledger's acks)
        refused = load.ledger.unexpected[:]
        load.ledger.unexpected.clear()
        result = await verify(writer.url, token, load.ledger)
        listed = await _list(writer.url, token)
        assert len(listed) == result.messages == len(load.ledger.chat_acked)
        # the follower, on the other server, saw every message once, in order, across the cutover
        follower.stop_after(result.messages)
        await asyncio.wait_for(follower_task, 60)
        assert [(m["seq"], m["message_id"]) for m in follower.seen] == [
            (m["seq"], m["message_id"]) for m in listed
        ]
        # a cursor taken before the migration pages on from where it stood
        after = await _list(writer.url, token, cursor)
        assert [m["seq"] for m in after] == [m["seq"] for m in listed if m["seq"] > before[-1]]
        assert len(after) == len(listed) - 3
        # the second server reads the target too
        assert [m["seq"] for m in await _list(reader.url, token)] == [m["seq"] for m in listed]

        released = deployment.cli("migrate", "release", *_kind_args(scope))
        assert released.returncode == 0, released.stderr
        end = json.loads(released.stdout.strip().splitlines()[-1])
        assert end["state"] == "released" and not end["active"], end
        assert end["deleted_items"] >= prefilled + result.messages, end
        if source == "sqlite":
            assert _source_rows(deployment, scope) == []
        _assert_routed(deployment, scope, deployment.target)
        again = await verify(writer.url, token, load.ledger)
        assert again == result
        assert not refused, refused
        print(f"{source}->{target} scope={scope or '*'}: switched after {migrated_at:.1f}s, "
              f"total {time.monotonic() - started:.1f}s, rounds={load.rounds} "
              f"messages={result.messages} commands={result.commands} retries={load.ledger.retries} "
              f"statuses={load.ledger.statuses}")
    finally:
        for task in (rounds_task, follower_task):
            if task is not None:
                task.cancel()
        for server in servers:
            server.stop()


@pytest.mark.parametrize(
    # onto a backend without atomic checks and back: the rollback's writes return to SQLite
    "target", ["firestore"]
)
async def test_rollback_killed_once_brings_every_write_back_to_the_source(
    make_deployment: Callable[[str, str], Deployment], target: str
) -> None:
    started = time.monotonic()
    deployment = make_deployment("sqlite", target)
    writer = ServeProcess(deployment.where, config=deployment.config, env=deployment.env)
    rounds_task: asyncio.Task[None] | None = None
    try:
        writer.start()
        token = writer.cli("token", "--tenant", TENANT, "--user", "u_mig")
        load = Rounds(writer.url, token, pause=PAUSE.get(target, 0.3), ops=2 if target == "dynamodb" else 3)
        await load.one()
        rounds_task = asyncio.create_task(load.run())
        args = [*_kind_args(TENANT), "--to", deployment.target, "--table", TABLE,
                "--fence-seconds", "0.3", "--settle-seconds", "1"]
        loop = asyncio.get_running_loop()
        bursts: list[Any] = []

        def burst_when_frozen(line: str) -> None:
            # writes made while frozen wait for the cutover: in flight across it
            if not bursts and " frozen: " in line:
                bursts.append(asyncio.run_coroutine_threadsafe(load.burst(), loop))

        run = await asyncio.to_thread(_run_migrate, deployment, args, on_line=burst_when_frozen)
        switched = run.result()
        assert switched["phase"] == "switched", switched
        assert bursts
        await asyncio.wait_for(asyncio.wrap_future(bursts[0]), 120)
        _assert_routed(deployment, TENANT, deployment.target)
        # writes land on the target now
        rounds_at_switch = load.rounds
        acked_at_switch = set(load.ledger.chat_acked)
        for _ in range(600):
            if load.rounds >= rounds_at_switch + 2:
                break
            await asyncio.sleep(0.1)
        on_target = set(load.ledger.chat_acked) - acked_at_switch
        assert on_target, "no write was acknowledged after the cutover"
        # (the writes go on: the full check comes once they stop)
        served = {m["idempotency_key"] for m in await _list(writer.url, token)}
        assert on_target <= served

        rollback = ["rollback", *_kind_args(TENANT)]
        await asyncio.to_thread(
            _run_migrate, deployment, rollback, kill_when=lambda line: "frozen for the rollback" in line
        )
        [status] = _status(deployment)
        assert status["phase"] == "frozen_back" and status["state"] == "rolling_back", status
        done = (await asyncio.to_thread(_run_migrate, deployment, rollback)).result()
        assert done["state"] == "rolled_back" and not done["active"], done
        assert done["deleted_items"] > 0, done  # the target's copy
        load.stop.set()
        await asyncio.wait_for(rounds_task, 120)

        routes = _routes(deployment)
        for kind in KINDS:
            # the tenant's override made for the migration is gone: the deployment route serves
            route = routes.get((kind, TENANT)) or routes[(kind, None)]
            assert (route["connection"], route.get("table")) == ("lab", TABLE), route
        refused = load.ledger.unexpected[:]  # (as above: checked last)
        load.ledger.unexpected.clear()
        result = await verify(writer.url, token, load.ledger)
        assert result.messages == len(load.ledger.chat_acked)
        assert on_target <= set(load.ledger.chat_acked)
        # served from the source: its SQLite table holds them
        with sqlite3.connect(deployment.where / "data" / "northstar.db") as conn:
            query = "SELECT count(*) FROM items WHERE ns = ? AND pk LIKE ?"
            assert int(conn.execute(query, (TABLE, f"{TENANT}|%")).fetchone()[0]) >= result.messages
        assert not refused, refused
        print(f"rollback sqlite->{target}: {time.monotonic() - started:.1f}s, rounds={load.rounds} "
              f"messages={result.messages} commands={result.commands}")
    finally:
        if rounds_task is not None:
            rounds_task.cancel()
        writer.stop()
