"""P8 — live tails: what a followed stream costs while idle, and how soon another process's
append reaches a follower.

Per backend (SQLite and the three cloud emulators), with the shipped defaults of the tail hub
(``northstar_core.kernel.tail``: activity index read every 0.5 s, record flushed at most every
0.2 s, each stream's own head read once per 60 s):

1. **Idle cost** — one Engines whose every store call is counted (``contracts.round_trips``
   :class:`~contracts.round_trips.Trace`, no delay), following N chat streams (N = 100 and
   1,000; a few of them hold an entry already) with a 15 s heartbeat; once every follower has
   replayed what is stored, the store reads made in the next seconds are counted: reads per
   second per followed stream in this process. Baseline: the poller per followed stream it
   replaces, one head read per 0.5 s = 2 reads/s. Target ≤ 0.05. The figure is structural
   (``1/0.5 s / N + 1/60 s``), so it is the same on every backend; the count shows it holds.
2. **Cross-process delivery** — two Engines on the same backend, each with its own adapter
   objects (as two processes would have): a follower on A, posts on B (each after a random
   pause of up to half a poll interval, so posts fall anywhere in A's poll cycle, without
   waiting for the previous one to arrive); the time from the post's start to the follower yielding
   the message, p50 and p95 over 60 posts (and from the post's return, i.e. after the
   commit). Target p50 ≤ 1 s.

``run(quick=True)`` shortens the idle windows (the rates stay the same) and posts 30 times.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Sequence
from typing import Any

from bench.common import PROVISIONED, bench_connection, main, pct, ratio, row, run_per_backend
from contracts.round_trips import REGISTRY_KIND, Trace, instrumented_engines
from northstar_adapters import AdapterFactory
from northstar_core.engines import Engines
from northstar_core.identity import RequestContext
from northstar_core.kernel.activity import ACTIVITY_PARTITION
from northstar_core.kernel.streams import SequencedStream, seq_of
from northstar_core.kernel.tail import DEFAULT_POLL_INTERVAL
from northstar_core.routing import Connection
from northstar_core.scope import partition

BACKENDS = ("sqlite", "dynamodb", "firestore", "cosmos")
STREAM_COUNTS = (100, 1000)
BASELINE_READS_PER_S = 1 / DEFAULT_POLL_INTERVAL  # the poller per followed stream: 2/s
IDLE_TARGET = 0.05  # reads/s per followed stream per process
DELIVERY_TARGET_S = 1.0  # p50
HEARTBEAT = 15.0  # the shipped SSE heartbeat
PRIMED = 20  # streams that hold an entry before they are followed
CTX = RequestContext(tenant_id="t_p8", mode="lab", user_id="u_p8", roles=("member",))


# --- idle cost ---------------------------------------------------------------------------------


async def idle_cost(engines: Engines, trace: Trace, streams: int, seconds: float) -> dict[str, Any]:
    """Store reads per second per followed stream while ``streams`` followed streams are idle
    (``engines``' store calls are recorded into ``trace``)."""
    store = await engines.registry.store_for("chat_store", CTX.tenant_id)
    tag = secrets.token_hex(3)
    followed = [
        SequencedStream(store, partition(CTX, "thread", f"idle-{tag}-{i}"), "chat") for i in range(streams)
    ]
    for stream in followed[:PRIMED]:
        done = await stream.append(lambda _first: [b"{}"], now=time.time())
        engines.tails.notify(stream, done.last_seq)
    replayed = 0

    async def follow(stream: SequencedStream) -> None:
        nonlocal replayed
        async for item in engines.tails.follow(stream, 0, heartbeat=HEARTBEAT):
            if item is not None:
                replayed += 1

    tasks = [asyncio.create_task(follow(s)) for s in followed]
    try:
        async with asyncio.timeout(300):
            while engines.tails.waiting < streams:  # noqa: ASYNC110 - polled, bounded
                await asyncio.sleep(0.05)
        # every follower has made its first read and waits: what follows is the idle cost
        await asyncio.sleep(engines.tails.poll_interval * 2)
        before = replayed
        trace.start()
        began = time.perf_counter()
        await asyncio.sleep(seconds)
        rt = trace.stop()
        elapsed = time.perf_counter() - began
        delivered = replayed - before
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    reads = [c for c in rt.calls if c.method in ("get", "query")]
    index = sum(c.partition == ACTIVITY_PARTITION for c in reads)
    rate = len(reads) / elapsed / streams
    return {
        "streams": streams,
        "seconds": round(elapsed, 2),
        "reads": len(reads),
        "index_queries": index,
        "head_reads": len(reads) - index,
        "writes": sum(c.method == "write" for c in rt.calls),
        "reads_per_s_per_stream": round(rate, 4),
        "model_reads_per_s_per_stream": round(
            1 / engines.tails.poll_interval / streams + 1 / engines.tails.safety_interval, 4
        ),
        "baseline_reads_per_s_per_stream": BASELINE_READS_PER_S,
        "ratio_vs_baseline": ratio(rate, BASELINE_READS_PER_S),
        "entries_delivered_while_idle": delivered,
    }


# --- cross-process delivery -----------------------------------------------------------------


async def delivery(a: Engines, b: Engines, posts: int) -> dict[str, Any]:
    """Posts on ``b``, each after a random pause of up to half a poll interval (not waiting for
    the previous one to arrive), followed on ``a``: the time until ``a``'s follower yields it."""
    thread = f"p8-{secrets.token_hex(4)}"
    await b.chat.post(CTX, thread, role="user", content="start")
    store_a = await a.registry.store_for("chat_store", CTX.tenant_id)
    store_b = await b.registry.store_for("chat_store", CTX.tenant_id)
    # not one store object: the follower can only learn of B's posts through the backend
    assert store_a.backing is not store_b.backing
    tail = await a.chat.open_tail(CTX, thread)  # from the head (the codecs' secrets differ)
    arrived: dict[int, float] = {}
    every = asyncio.Event()

    async def follow() -> None:
        async for item in tail.items(heartbeat=HEARTBEAT):
            if item is not None:
                arrived[seq_of(item.key)] = time.perf_counter()
                if len(arrived) == posts:
                    every.set()

    follower = asyncio.create_task(follow())
    sent: dict[int, tuple[float, float]] = {}
    try:
        async with asyncio.timeout(30):
            while a.tails.waiting < 1:  # noqa: ASYNC110 - polled, bounded
                await asyncio.sleep(0.01)
        for i in range(posts):
            # random gaps: over many posts their phase in A's poll cycle is uniform
            await asyncio.sleep(random.uniform(0, a.tails.poll_interval / 2))
            began = time.perf_counter()
            posted = await b.chat.post(CTX, thread, role="user", content=f"m{i}")
            sent[posted.message.seq] = (began, time.perf_counter())
        async with asyncio.timeout(120):
            await every.wait()
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    assert sorted(arrived) == sorted(sent)
    from_start = [arrived[seq] - began for seq, (began, _) in sent.items()]
    from_commit = [arrived[seq] - done for seq, (_, done) in sent.items()]
    return {
        "posts": posts,
        "poll_interval_s": a.tails.poll_interval,
        "flush_interval_s": b.tails.flush_interval,
        "p50_s": round(pct(from_start, 50), 4),
        "p95_s": round(pct(from_start, 95), 4),
        "max_s": round(max(from_start), 4),
        "after_commit_p50_s": round(pct(from_commit, 50), 4),
        "after_commit_p95_s": round(pct(from_commit, 95), 4),
    }


# --- per backend ----------------------------------------------------------------------------


async def measure(connection: Connection, quick: bool, provision: bool) -> dict[str, Any]:
    if provision:  # only what is used: the registry's table and the chat store's
        factory = AdapterFactory()
        for kind in (REGISTRY_KIND, "chat_store"):
            await factory.provision(connection.target(kind, kind), dry_run=False)
    # quick: windows just long enough that one read more or less cannot cross the target
    seconds = {100: 2.0, 1000: 1.0} if quick else {100: 8.0, 1000: 8.0}
    trace = Trace(delay=0)
    # two "processes": Engines each opening its own adapter objects; A's calls are counted
    async with (
        instrumented_engines(AdapterFactory(), connection, trace) as a,
        instrumented_engines(AdapterFactory(), connection, Trace(delay=0)) as b,
    ):
        idle = {str(n): await idle_cost(a, trace, n, seconds[n]) for n in STREAM_COUNTS}
        return {
            "idle": idle,
            "delivery": await delivery(a, b, 30 if quick else 60),
            "settings": {
                "poll_interval_s": a.tails.poll_interval,
                "flush_interval_s": b.tails.flush_interval,
                "safety_interval_s": a.tails.safety_interval,
                "heartbeat_s": HEARTBEAT,
            },
        }


def run_backend(backend: str, quick: bool) -> dict[str, Any]:
    with bench_connection(backend, "p8") as connection:
        return asyncio.run(measure(connection, quick, backend in PROVISIONED))


def rows_for(backend: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for n, idle in res["idle"].items():
        rate = idle["reads_per_s_per_stream"]
        out.append(
            row(
                f"P8 {backend}",
                f"idle reads/s per followed stream per process, {n} streams",
                rate,
                BASELINE_READS_PER_S,
                idle["ratio_vs_baseline"],
                f"<= {ratio(IDLE_TARGET, BASELINE_READS_PER_S)} (= {IDLE_TARGET} reads/s)",
                rate <= IDLE_TARGET,
                f"ratio = ours / the per-stream poller's 2 reads/s; {idle['reads']} reads in "
                f"{idle['seconds']} s ({idle['index_queries']} index, {idle['head_reads']} head); "
                f"model {idle['model_reads_per_s_per_stream']}; delivered while idle "
                f"{idle['entries_delivered_while_idle']}",
            )
        )
    d = res["delivery"]
    out.append(
        row(
            f"P8 {backend}",
            "cross-process delivery p50 (s): post on B -> A's follower yields",
            d["p50_s"],
            DELIVERY_TARGET_S,
            ratio(d["p50_s"], DELIVERY_TARGET_S),
            f"<= 1 (p50 <= {DELIVERY_TARGET_S} s)",
            d["p50_s"] <= DELIVERY_TARGET_S,
            f"{d['posts']} posts; p95 {d['p95_s']} s, max {d['max_s']} s; after commit p50 "
            f"{d['after_commit_p50_s']} s, p95 {d['after_commit_p95_s']} s",
        )
    )
    return out


def run(quick: bool = False, backends: Sequence[str] = BACKENDS) -> dict[str, Any]:
    return run_per_backend("P8", backends, lambda b: run_backend(b, quick), rows_for, "p8_tails.json")


if __name__ == "__main__":
    main(run, BACKENDS, "p8_tails.json")
