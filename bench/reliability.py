"""Reliability soak, by hand: the long variants of ``tests/e2e/test_crash_kill9.py`` and
``tests/e2e/test_backend_outage.py`` (the test command runs one short round of each).

    python -m bench.reliability crash  --backend all --kills 5 --clients 6 --ops 40
    python -m bench.reliability outage --backend firestore --cycles 3 --clients 4 --ops 30

``crash``: a real ``northstar serve`` process on lab SQLite or (``saas`` mode) with every kind
routed to one emulator; concurrent clients post chat messages and two-op canvas commands with
idempotency keys, retrying connection errors/5xx with the same key; the server is ``kill -9``-ed
``--kills`` times at random moments and restarted on the same port and backend. Then every
acknowledged write must be present exactly once, seqs and revisions gap-free, no 409-refused
command committed, every command all-or-nothing (``reliability_support.verify``); SSE followers
of the chat thread and the canvas, reconnecting with ``Last-Event-ID`` after every crash, must
have received every message/revision exactly once, in order.

``outage``: the emulator stays up but the service's path to it is cut ``--cycles`` times (a TCP
gate: data kept) while clients write; during each cut a probe write must answer 503
``<kind>.backend_unavailable`` with ``Retry-After``; after each restore ``/readyz`` must return
to 200; at the end the same exactly-once verification runs. Backends: dynamodb, firestore
(Cosmos cannot be gated: its SDK discovers the emulator's own address; the test suite stops and
restarts the Cosmos emulator process instead).

Prints one line per run and writes ``bench/results/reliability-<scenario>.json``. Exit status 1 if any
run failed. No timing is asserted; latencies of the 503 answers are reported for context.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import traceback
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx

from bench.common import RESULTS
from northstar_http.tokens import mint_token
from tests.e2e.cloud import AUDIENCE, JWT_SECRET, CloudTarget, to_toml
from tests.e2e.reliability_support import (
    CANVAS_ID,
    CHAT_THREAD,
    ServeProcess,
    SseFollower,
    TcpGate,
    Workload,
    verify,
)

BACKENDS = ("sqlite", "dynamodb", "firestore", "cosmos")


class Emulators:
    """Starts the emulators a run needs (once each) and stops them at the end, by PID."""

    def __init__(self) -> None:
        self.endpoints: dict[str, str] = {}
        self._stops: list[Any] = []

    def endpoint(self, backend: str) -> str:
        if backend in self.endpoints:
            return self.endpoints[backend]
        if backend == "dynamodb":
            from tests.emulators.moto import TEST_ENV, MotoServer

            os.environ.update(TEST_ENV)
            moto = MotoServer.start()
            self._stops.append(moto.stop)
            url = moto.endpoint
        elif backend == "firestore":
            from tests.emulators.firestore import ENV, launcher

            emulator = launcher().start()
            self._stops.append(emulator.stop)
            os.environ[ENV] = emulator.host
            url = emulator.host
        elif backend == "cosmos":
            from tests.emulators.cosmos import EMULATOR_KEY, KEY_ENV, CosmosServer

            os.environ[KEY_ENV] = EMULATOR_KEY
            cosmos = CosmosServer.start()
            self._stops.append(cosmos.stop)
            url = cosmos.endpoint
        else:
            raise ValueError(backend)
        self.endpoints[backend] = url
        return url

    def stop(self) -> None:
        for stop in reversed(self._stops):
            try:
                stop()
            except Exception:  # stop the others anyway
                traceback.print_exc()


def target_for(backend: str, endpoint: str) -> CloudTarget:
    tag = uuid.uuid4().hex[:10]
    if backend == "dynamodb":
        from tests.emulators.moto import TEST_ENV

        params = {"endpoint_url": endpoint, "table_prefix": f"r{tag}_", "region": TEST_ENV["AWS_REGION"]}
        return CloudTarget(backend, params, env=dict(TEST_ENV))
    if backend == "firestore":
        return CloudTarget(backend, {"project": f"rel-{tag}", "emulator_host": endpoint})
    from tests.emulators.cosmos import EMULATOR_KEY, KEY_ENV

    return CloudTarget(backend, {"url": endpoint, "database": f"r{tag}"}, env={KEY_ENV: EMULATOR_KEY})


async def run_crash(
    backend: str, emulators: Emulators, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    target: CloudTarget | None = None
    if backend == "sqlite":
        server = ServeProcess(workdir, env={"NORTHSTAR_HTTP_SSE_HEARTBEAT_SECONDS": "0.5"})
        await asyncio.to_thread(server.start)
        token = server.cli("token", "--tenant", "t_soak", "--user", "u_soak")
    else:
        target = target_for(backend, await asyncio.to_thread(emulators.endpoint, backend))
        config = workdir / "northstar.toml"
        config.write_text(to_toml(target.settings_dict(mode="saas")))
        await target.provision()
        server = ServeProcess(workdir, config=config, env=target.env)
        await asyncio.to_thread(server.start)
        token = mint_token(
            JWT_SECRET, audience=AUDIENCE, tenant_id="t_soak", sub="u_soak", mode="saas", roles=("member",)
        )
    try:
        work = Workload(server.url, token, clients=args.clients, ops=args.ops, tag="soak", retry_deadline=300)
        total = args.clients * (args.ops + (args.ops + 1) // 2)
        kills = 0

        async def killer() -> None:
            nonlocal kills
            for k in range(args.kills):
                # spread the kills over the run, each at a random moment of its slice
                await work.wait_acks(int(total * (k + random.random()) / (args.kills + 1)) + 1)
                server.kill9()
                kills += 1
                await asyncio.sleep(random.uniform(0.05, 0.5))
                await asyncio.to_thread(server.start)

        started = time.monotonic()
        chat_sse = SseFollower(server.url, token, f"/sse/chat/{CHAT_THREAD}", "message")
        canvas_sse = SseFollower(server.url, token, f"/sse/canvas/{CANVAS_ID}", "op_committed")
        followers = [asyncio.create_task(f.run(deadline=600)) for f in (chat_sse, canvas_sse)]
        try:
            ledger = await work.run(during=killer)
            result = await verify(server.url, token, ledger)
            chat_sse.stop_after(result.messages)
            canvas_sse.stop_after(result.commands)
            await asyncio.wait_for(asyncio.gather(*followers), 120)
        finally:
            for f in followers:
                f.cancel()
        assert [m["seq"] for m in chat_sse.seen] == list(range(1, result.messages + 1)), "chat SSE"
        assert [e["data"]["rev"] for e in canvas_sse.seen] == list(range(1, result.commands + 1)), (
            "canvas SSE"
        )
        return {
            "sse_reconnects": chat_sse.reconnects + canvas_sse.reconnects,
            "kills": kills,
            "messages": result.messages,
            "commands": result.commands,
            "retries": ledger.retries,
            "replayed_200": ledger.statuses.get(200, 0),
            "refused_409": len(ledger.canvas_refused),
            "statuses": ledger.statuses,
            "seconds": round(time.monotonic() - started, 1),
        }
    finally:
        server.stop()
        if target is not None:
            await target.cleanup()


async def run_outage(
    backend: str, emulators: Emulators, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    if backend not in ("dynamodb", "firestore"):
        raise SystemExit(f"outage soak: {backend} cannot be gated (see module doc)")
    endpoint = await asyncio.to_thread(emulators.endpoint, backend)
    gate = TcpGate(int(endpoint.rstrip("/").rsplit(":", 1)[1]))
    await gate.restore()
    via = f"127.0.0.1:{gate.port}"
    target = target_for(backend, f"http://{via}" if backend == "dynamodb" else via)
    config = workdir / "northstar.toml"
    config.write_text(to_toml(target.settings_dict(mode="saas")))
    await target.provision()
    server = ServeProcess(workdir, config=config, env=target.env)
    await asyncio.to_thread(server.start)
    token = mint_token(
        JWT_SECRET, audience=AUDIENCE, tenant_id="t_soak", sub="u_soak", mode="saas", roles=("member",)
    )
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    try:
        work = Workload(server.url, token, clients=args.clients, ops=args.ops, tag="cut", retry_deadline=300)
        total = args.clients * (args.ops + (args.ops + 1) // 2)

        async def cutter() -> None:
            async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120) as http:
                for c in range(args.cycles):
                    await work.wait_acks(int(total * (c + random.random()) / (args.cycles + 1)) + 1)
                    await gate.cut()
                    t0 = time.monotonic()
                    r = await http.post(
                        f"/chat/threads/probe{c}/messages",
                        json={"role": "user", "content": "x", "idempotency_key": "p"},
                    )
                    latencies.append(time.monotonic() - t0)
                    err = r.json().get("error", {})
                    assert r.status_code == 503 and err.get("code") == "chat_store.backend_unavailable", (
                        r.text
                    )
                    assert int(r.headers["retry-after"]) >= 1
                    await asyncio.sleep(random.uniform(0.5, 3.0))
                    await gate.restore()
                    deadline = time.monotonic() + 120
                    while (await http.get("/readyz")).status_code != 200:
                        assert time.monotonic() < deadline, "readyz did not recover"
                        await asyncio.sleep(0.2)

        started = time.monotonic()
        ledger = await work.run(during=cutter)
        result = await verify(server.url, token, ledger)
        return {
            "cycles": args.cycles,
            "messages": result.messages,
            "commands": result.commands,
            "retries": ledger.retries,
            "statuses": ledger.statuses,
            "max_503_seconds": round(max(latencies), 2) if latencies else None,
            "seconds": round(time.monotonic() - started, 1),
        }
    finally:
        server.stop()
        if gate.is_cut:
            await gate.restore()
        try:
            await target.cleanup()
        finally:
            await gate.cut()


async def main_async(args: argparse.Namespace) -> int:
    backends = list(BACKENDS) if args.backend == "all" else [args.backend]
    if args.scenario == "outage" and args.backend == "all":
        backends = ["dynamodb", "firestore"]
    emulators = Emulators()
    runs: list[dict[str, Any]] = []
    failed = False
    async with AsyncExitStack() as stack:
        stack.callback(emulators.stop)
        for backend in backends:
            for round_ in range(args.rounds):
                with tempfile.TemporaryDirectory(prefix="northstar-soak-") as tmp:
                    fn = run_crash if args.scenario == "crash" else run_outage
                    entry: dict[str, Any] = {"scenario": args.scenario, "backend": backend, "round": round_}
                    try:
                        entry.update(await fn(backend, emulators, args, Path(tmp)), ok=True)
                    except (AssertionError, Exception) as exc:
                        failed = True
                        entry.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
                        traceback.print_exc()
                    runs.append(entry)
                    print(json.dumps(entry), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"reliability-{args.scenario}.json"
    out.write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2) + "\n")
    print(f"{sum(r['ok'] for r in runs)}/{len(runs)} runs passed; wrote {out}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.splitlines()[0])
    p.add_argument("scenario", choices=["crash", "outage"])
    p.add_argument("--backend", choices=[*BACKENDS, "all"], default="sqlite")
    p.add_argument("--kills", type=int, default=3, help="crash: kill -9 this many times per run")
    p.add_argument("--cycles", type=int, default=2, help="outage: cut/restore this many times per run")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--ops", type=int, default=20, help="chat posts per client (canvas commands: half)")
    p.add_argument("--rounds", type=int, default=1, help="runs per backend")
    return asyncio.run(main_async(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
