"""P1 HTTP shell cost: ``POST /chat/threads/{id}/messages`` through the full stack (lab SQLite)
vs a bare Litestar app doing the same single SQLite insert.

Same ASGI server (uvicorn, 1 worker, access log off), same synchronous setting (WAL + FULL),
same load generator (``wrk``, one thread, fixed connections; a bounded aiohttp client if wrk
is missing), server pinned to one core and the load generator to the other. The two variants
alternate, several rounds each; medians are reported. Requests spread over 256 threads so
concurrent posts rarely race on one thread's head.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Server, cpus, lab_data_dir, median, pinned, ratio, row, token

BODY = '{"role":"user","content":"hello from the bench"}'
LUA = """
counter = 0
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
  counter = counter + 1
  return wrk.format(nil, string.format("/chat/threads/b%%d/messages", counter %% 256))
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "\\nJSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, \\"p99_us\\": %%d,"
    .. " \\"errors\\": %%d, \\"non2xx\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def _wrk(url: str, script: Path, seconds: float, connections: int, core: int | None) -> dict[str, Any]:
    cmd = pinned(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(script), url], core
    )
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("JSON "))
    data = json.loads(line[5:])
    return {
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50_ms": data["p50_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "errors": data["errors"] + data["non2xx"],
        "requests": data["requests"],
    }


async def _aiohttp_load(url: str, tok: str, seconds: float, connections: int) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    counter = 0
    stop = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors, counter
        while time.perf_counter() < stop:
            counter += 1
            start = time.perf_counter()
            async with session.post(f"{url}/chat/threads/b{counter % 256}/messages", data=BODY) as resp:
                await resp.read()
                if resp.status >= 300:
                    errors += 1
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    conn = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=conn, headers=headers) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "errors": errors,
        "requests": len(latencies),
    }


def run(quick: bool = False, connections: int = 32) -> dict[str, Any]:
    cores = cpus()
    server_core, load_core = (cores[0], cores[1]) if len(cores) > 1 else (None, None)
    seconds, rounds = (4, 2) if quick else (8, 4)
    with tempfile.TemporaryDirectory(prefix="ns-bench-p1-") as tmp:
        full_dir, bare_dir = Path(tmp) / "full", Path(tmp) / "bare"
        tok = token(lab_data_dir(full_dir))
        bare_dir.mkdir()
        servers = {
            "full": Server.bench_app("full", full_dir, server_core),
            "bare": Server.bench_app("bare", bare_dir, server_core),
        }
        use_wrk = shutil.which("wrk") is not None
        script = Path(tmp) / "post.lua"
        script.write_text(LUA % {"body": BODY, "token": tok})
        samples: dict[str, list[dict[str, Any]]] = {"full": [], "bare": []}
        try:

            def load(name: str, secs: float) -> dict[str, Any]:
                url = servers[name].url
                if use_wrk:
                    return _wrk(url, script, secs, connections, load_core)
                return asyncio.run(_aiohttp_load(url, tok, secs, connections))

            for name in servers:  # warm up: imports, first connections, table creation
                load(name, 2)
            for i in range(rounds):
                order = ["full", "bare"] if i % 2 == 0 else ["bare", "full"]
                for name in order:
                    samples[name].append(load(name, seconds))
        finally:
            for server in servers.values():
                server.stop()
    summary = {
        name: {
            "rps": round(median([s["rps"] for s in runs]), 1),
            "p50_ms": round(median([s["p50_ms"] for s in runs]), 2),
            "p99_ms": round(median([s["p99_ms"] for s in runs]), 2),
            "errors": sum(s["errors"] for s in runs),
            "rounds": [{k: round(v, 2) for k, v in s.items()} for s in runs],
        }
        for name, runs in samples.items()
    }
    value = ratio(summary["full"]["rps"], summary["bare"]["rps"])
    errors = summary["full"]["errors"] + summary["bare"]["errors"]
    note = (
        f"{'wrk' if use_wrk else 'aiohttp'} -c{connections}, {rounds}x{seconds}s alternating, medians; "
        f"p50 {summary['full']['p50_ms']} vs {summary['bare']['p50_ms']} ms, "
        f"p99 {summary['full']['p99_ms']} vs {summary['bare']['p99_ms']} ms"
        + (f"; {errors} non-2xx/errors" if errors else "")
    )
    return {
        "name": "P1",
        "detail": {
            "load_generator": "wrk" if use_wrk else "aiohttp",
            "connections": connections,
            "server_core": server_core,
            "load_core": load_core,
            **summary,
        },
        "rows": [
            row(
                "P1",
                "POST message req/s: full stack / bare Litestar+sqlite",
                summary["full"]["rps"],
                summary["bare"]["rps"],
                value,
                ">= 0.7",
                value >= 0.7 and errors == 0,
                note,
            )
        ],
    }


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2))
