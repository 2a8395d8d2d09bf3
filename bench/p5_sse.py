"""P5 SSE fan-out: subscribers of one chat thread on one server process.

The server is ``northstar serve`` (one process, lab SQLite, access log off) pinned to one core;
the clients and the poster run in this process pinned to the other core.

* Delivery: N subscribers (aiohttp, one connection each) receive each of the posted events
  exactly once and in order.
* Memory: the server's RSS per idle subscriber = (VmRSS with N idle subscribers - VmRSS with
  none, after a warm-up subscription) / N, read from ``/proc/PID/status``. Measured with the
  delivery run's N subscribers and, on a fresh server, with 10,000 (or ``idle``) idle
  subscribers whose clients are raw sockets: each sends the request and reads the opening
  frame, then stays connected, so the client side stays cheap.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import Server, cpus, lab_data_dir, row, token

THREAD = "sse-bench"
TARGET_KB = 15
# the access log off: a log line per connection is not what P5 measures
QUIET = {"NORTHSTAR_LOG_ACCESS": "false"}
# Idle subscribers opened at once (the server's listen backlog is 2048).
OPEN_BATCH = 500


def _raise_fd_limit(want: int) -> None:
    """Room for ``want`` sockets in this process and the server it starts (inherited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    limit = want if hard == resource.RLIM_INFINITY else min(want, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


async def _rss(server: Server, samples: int = 5) -> float:
    values = []
    for _ in range(samples):
        values.append(server.rss_kb())
        await asyncio.sleep(0.2)
    return float(statistics.median(values))


def _post(server: Server, tok: str, i: int) -> int:
    body = json.dumps({"role": "user", "content": f"event {i}", "idempotency_key": f"p5-{i}"}).encode()
    request = urllib.request.Request(
        f"{server.url}/chat/threads/{THREAD}/messages",
        data=body,
        headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return int(json.load(resp)["seq"])


async def _scenario(server: Server, tok: str, subscribers: int, events: int) -> dict[str, Any]:
    import aiohttp

    headers = {"Authorization": f"Bearer {tok}"}
    url = f"{server.url}/sse/chat/{THREAD}"
    post_url = f"{server.url}/chat/threads/{THREAD}/messages"
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:

        async def post(i: int) -> int:
            body = {"role": "user", "content": f"event {i}", "idempotency_key": f"p5-{i}"}
            async with session.post(post_url, json=body) as resp:
                assert resp.status in (200, 201), await resp.text()
                return int((await resp.json())["seq"])

        first = await post(0)  # the thread exists; subscribers start at its head

        async def subscribe(seqs: list[int], opened: asyncio.Event, want: int) -> None:
            async with session.get(url) as resp:
                assert resp.status == 200, await resp.text()
                async for raw in resp.content:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith(":") or line.startswith("retry:"):
                        opened.set()
                    elif line.startswith("data:") and line[5:].strip():  # the opener has empty data
                        seqs.append(int(json.loads(line[5:])["seq"]))
                        if len(seqs) >= want:
                            return

        # Warm-up: one subscription opened and closed (imports, first-use allocations).
        warm_seqs: list[int] = []
        warm_open = asyncio.Event()
        warm = asyncio.create_task(subscribe(warm_seqs, warm_open, 1))
        await asyncio.wait_for(warm_open.wait(), 30)
        warm.cancel()
        await asyncio.sleep(1.0)
        rss_idle0 = await _rss(server)

        seqs: list[list[int]] = [[] for _ in range(subscribers)]
        opened = [asyncio.Event() for _ in range(subscribers)]
        tasks = [asyncio.create_task(subscribe(seqs[i], opened[i], events)) for i in range(subscribers)]
        began = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), 120)
        connect_s = time.perf_counter() - began
        await asyncio.sleep(2.0)
        rss_idle_n = await _rss(server)

        began = time.perf_counter()
        for i in range(1, events + 1):
            await post(i)
        post_s = time.perf_counter() - began
        done, pending = await asyncio.wait(tasks, timeout=120)
        deliver_s = time.perf_counter() - began
        for task in pending:
            task.cancel()
        errors = [repr(t.exception()) for t in done if t.exception() is not None]
        rss_after = server.rss_kb()
    expected = list(range(first + 1, first + events + 1))
    complete = sum(1 for s in seqs if s == expected)
    duplicates = sum(1 for s in seqs if len(s) != len(set(s)))
    out_of_order = sum(1 for s in seqs if s != sorted(s))
    return {
        "subscribers": subscribers,
        "events": events,
        "subscribers_complete_in_order": complete,
        "subscribers_with_duplicates": duplicates,
        "subscribers_out_of_order": out_of_order,
        "subscribers_timed_out": len(pending),
        "subscriber_errors": len(errors),
        "first_error": errors[0] if errors else None,
        "sample_seqs": seqs[0][:5] if seqs else [],
        "connect_s": round(connect_s, 2),
        "post_s": round(post_s, 2),
        "deliver_all_s": round(deliver_s, 2),
        "rss_kb_0": rss_idle0,
        "rss_kb_idle": rss_idle_n,
        "rss_kb_after": rss_after,
        "per_subscriber_kb": round((rss_idle_n - rss_idle0) / subscribers, 2),
    }


async def _idle(server: Server, tok: str, subscribers: int) -> dict[str, Any]:
    """``subscribers`` idle raw-socket subscribers: each sends its request and reads up to the
    end of the opening frame, then holds the connection."""
    request = (
        f"GET /sse/chat/{THREAD} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {tok}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()

    async def open_one() -> Any:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=4096)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace")[:200])
        frame = await reader.readuntil(b"\r\n\r\n")  # the first chunk: size line + ": open"
        while b"retry:" not in frame:
            frame += await reader.readuntil(b"\r\n\r\n")
        return writer

    _post(server, tok, 0)  # the thread exists
    warm = await open_one()
    warm.close()
    await asyncio.sleep(1.0)
    rss0 = await _rss(server)
    writers: list[Any] = []
    began = loop.time()
    while len(writers) < subscribers:
        batch = min(OPEN_BATCH, subscribers - len(writers))
        writers += await asyncio.wait_for(asyncio.gather(*(open_one() for _ in range(batch))), 120)
    connect_s = loop.time() - began
    await asyncio.sleep(2.0)
    rss_n = await _rss(server)
    for writer in writers:
        writer.close()
    return {
        "subscribers": subscribers,
        "connect_s": round(connect_s, 2),
        "rss_kb_0": rss0,
        "rss_kb_idle": rss_n,
        "per_subscriber_kb": round((rss_n - rss0) / subscribers, 2),
    }


def run(
    quick: bool = False, subscribers: int = 1000, events: int = 100, idle: int = 10_000
) -> dict[str, Any]:
    cores = cpus()
    server_core, client_core = (cores[0], cores[1]) if len(cores) > 1 else (None, None)
    before = os.sched_getaffinity(0)
    _raise_fd_limit(max(subscribers, idle) + 1024)
    with tempfile.TemporaryDirectory(prefix="ns-bench-p5-") as tmp:
        tok = token(lab_data_dir(Path(tmp) / "fanout"))
        try:
            if client_core is not None:
                os.sched_setaffinity(0, {client_core})
            server = Server.northstar_serve(Path(tmp) / "fanout", server_core, QUIET)
            try:
                result = asyncio.run(_scenario(server, tok, subscribers, events))
            finally:
                server.stop()
            idle_tok = token(lab_data_dir(Path(tmp) / "idle"))
            server = Server.northstar_serve(Path(tmp) / "idle", server_core, QUIET)
            try:
                held = asyncio.run(_idle(server, idle_tok, idle))
            finally:
                server.stop()
        finally:
            os.sched_setaffinity(0, before)
    result["idle"] = held
    delivered = result["subscribers_complete_in_order"] == subscribers
    per = result["per_subscriber_kb"]
    per_idle = held["per_subscriber_kb"]
    note = (
        f"{result['subscribers_complete_in_order']}/{subscribers} got all {events} once, in order; "
        f"RSS {result['rss_kb_0']:.0f} -> {result['rss_kb_idle']:.0f} KB idle; "
        f"all delivered {result['deliver_all_s']} s after the first post"
    )
    idle_note = (
        f"raw-socket clients; RSS {held['rss_kb_0']:.0f} -> {held['rss_kb_idle']:.0f} KB; "
        f"all {idle} open in {held['connect_s']} s"
    )
    return {
        "name": "P5",
        "detail": result,
        "rows": [
            row(
                "P5",
                f"SSE: {subscribers} subscribers x {events} events delivered once, in order",
                result["subscribers_complete_in_order"],
                subscribers,
                round(result["subscribers_complete_in_order"] / subscribers, 3),
                "= 1.0",
                delivered,
                "",
            ),
            row(
                "P5",
                f"server RSS per idle subscriber, {subscribers} subscribers (KB)",
                per,
                TARGET_KB,
                round(per / TARGET_KB, 3),
                f"<= {TARGET_KB} KB",
                per <= TARGET_KB,
                note,
            ),
            row(
                "P5",
                f"server RSS per idle subscriber, {idle} subscribers (KB)",
                per_idle,
                TARGET_KB,
                round(per_idle / TARGET_KB, 3),
                f"<= {TARGET_KB} KB",
                per_idle <= TARGET_KB,
                idle_note,
            ),
        ],
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
