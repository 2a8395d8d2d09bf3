"""P2: lab SQLite vs the ``eventsourcing`` library's SQLite application recorder, and the fsync limit.

Same durability on both sides: WAL journal and ``synchronous=FULL`` (eventsourcing's default —
it sets WAL and leaves SQLite's default FULL; the lab default of ``northstar_adapters.sqlite``
is FULL too, and the run records both connections' actual ``PRAGMA synchronous``). Both
databases live in one directory on the same disk, where the fsync limit is measured too
(4 KiB write + ``fdatasync``, appending and overwriting in place: the I/O of one WAL commit),
before the first round and after every round; per round the limit is the higher of the two
rates (averaged over the probes around it).

* (a) one writer, one event per transaction, optimistic concurrency:
  - ``ours_stream``: ``SequencedStream.append(expected_head=h)`` — the product path (one
    atomic batch: the new entry under ``Absent`` plus a ``Check`` that entry ``h`` exists);
  - ``ours_put``: ``ItemStore.write([Put(seq_key(h+1), Absent())])`` — the same primitive the
    peer uses (a uniqueness condition, version tracked by the caller);
  - ``peer``: ``SQLiteApplicationRecorder.insert_events([StoredEvent(id, h+1, …)])``.
  Targets: ours ≥ 1.0x the peer, and ≥ 0.8x the fsync limit.
* (b) 32 concurrent writers on 32 different streams (``SequencedStream.append``, group commit)
  vs the peer's single-writer rate from (a). Target ≥ 3x. The peer with 32 threads is shown
  for context.
* (c) reading one 20,000-event stream in pages of 100: ``SequencedStream.read`` vs
  ``select_events(gt=…, limit=100)``. Target ≥ 1.0x.

Variants are interleaved round by round (the machine is shared and noisy) and each figure is
the median over rounds; only the ratios are meant to be compared. Usage::

    .venv/bin/python bench/p2_sqlite.py [--rounds 5] [--appends 300] [--quick]

Prints a table and writes ``bench/results/p2_sqlite.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import queue
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eventsourcing.persistence import StoredEvent  # noqa: E402
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore  # noqa: E402

from bench.common import RESULTS, row  # noqa: E402
from northstar_adapters.sqlite import _INSERT_IF_ABSENT, SCHEMA, SqliteItemStore  # noqa: E402
from northstar_core.kernel.streams import SequencedStream, seq_key  # noqa: E402
from northstar_core.storage import Absent, Put  # noqa: E402

PAYLOAD = json.dumps({"role": "user", "content": "hello " * 12, "actor_id": "u_bench"}).encode()
TOPIC = "bench:Event"
WRITERS = 32
CHUNK = 20


def fsync_limit(directory: Path, seconds: float) -> dict[str, float]:
    """Synchronous 4 KiB writes per second: ``append`` (each extends the file, as a fresh WAL
    does) and ``overwrite`` (in place in a preallocated file, as a recycled WAL does)."""
    out: dict[str, float] = {}
    block = b"\0" * 4096
    span = 4 << 20
    for mode in ("append", "overwrite"):
        path = directory / f"fsync-{mode}.probe"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if mode == "overwrite":
                os.write(fd, b"\0" * span)
                os.fsync(fd)
            n, offset = 0, 0
            start = time.perf_counter()
            while time.perf_counter() - start < seconds / 2:
                if mode == "append":
                    os.write(fd, block)
                else:
                    os.pwrite(fd, block, offset)
                    offset = (offset + 4096) % span
                os.fdatasync(fd)
                n += 1
            out[mode] = n / (time.perf_counter() - start)
        finally:
            os.close(fd)
            path.unlink()
    return out


class Peer:
    """The eventsourcing SQLite application recorder on its own file."""

    def __init__(self, path: Path) -> None:
        self.datastore = SQLiteDatastore(db_name=str(path))
        self.recorder = SQLiteApplicationRecorder(self.datastore)
        self.recorder.create_table()

    def synchronous(self) -> int:
        with self.datastore.transaction(commit=False) as c:
            c.execute("PRAGMA synchronous")
            return int(c.fetchone()[0])

    def journal_mode(self) -> str:
        with self.datastore.transaction(commit=False) as c:
            c.execute("PRAGMA journal_mode")
            return str(c.fetchone()[0])

    def append_one_by_one(self, n: int, originator: uuid.UUID | None = None, after: int = 0) -> float:
        """Seconds for ``n`` single-event transactions at versions ``after+1 …``."""
        originator = originator or uuid.uuid4()
        start = time.perf_counter()
        for version in range(after + 1, after + n + 1):
            self.recorder.insert_events([StoredEvent(originator, version, TOPIC, PAYLOAD)])
        return time.perf_counter() - start

    def append_threads(self, writers: int, per_writer: int) -> float:
        def work() -> None:
            originator = uuid.uuid4()
            for version in range(1, per_writer + 1):
                self.recorder.insert_events([StoredEvent(originator, version, TOPIC, PAYLOAD)])

        threads = [threading.Thread(target=work) for _ in range(writers)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return writers * per_writer / (time.perf_counter() - start)

    def populate(self, n: int) -> uuid.UUID:
        originator = uuid.uuid4()
        for first in range(1, n + 1, 100):
            self.recorder.insert_events(
                [StoredEvent(originator, v, TOPIC, PAYLOAD) for v in range(first, min(first + 100, n + 1))]
            )
        return originator

    def read_all(self, originator: uuid.UUID, n: int) -> float:
        start = time.perf_counter()
        seen, after = 0, 0
        while True:
            page = self.recorder.select_events(originator, gt=after, limit=100)
            seen += len(page)
            if len(page) < 100:
                break
            after = page[-1].originator_version
        assert seen == n, seen
        return n / (time.perf_counter() - start)

    def close(self) -> None:
        self.datastore.close()


class RawFloor:
    """The floor for one event per transaction: plain ``sqlite3`` in the calling thread, the
    lab schema and the same conditional insert, WAL + FULL, no Python layer around it. Its ratio
    to the fsync limit bounds what any Python SQLite writer can reach on this disk."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        for statement in SCHEMA:
            self.conn.execute(statement)

    def commit_one(self, partition: str, seq: int) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_INSERT_IF_ABSENT, ("bench", partition, seq_key(seq), PAYLOAD, 1, None, 0.0))
        conn.execute("COMMIT")

    def inserts(self, partition: str, n: int, after: int) -> float:
        start = time.perf_counter()
        for seq in range(after + 1, after + n + 1):
            self.commit_one(partition, seq)
        return time.perf_counter() - start

    async def inserts_via_thread(self, partition: str, n: int, after: int) -> float:
        """The same transactions run by a writer thread and awaited from the event loop, one
        at a time: the bare hand-off cost of never blocking the loop on a commit."""
        jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def writer() -> None:
            while (job := jobs.get()) is not None:
                loop, fut, seq = job
                self.commit_one(partition, seq)
                loop.call_soon_threadsafe(fut.set_result, None)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        for seq in range(after + 1, after + n + 1):
            fut = loop.create_future()
            jobs.put((loop, fut, seq))
            await fut
        elapsed = time.perf_counter() - start
        jobs.put(None)
        thread.join()
        return elapsed

    def close(self) -> None:
        self.conn.close()


class Ours:
    """The lab SQLite adapter (lab default: WAL, synchronous=FULL) on its own file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = SqliteItemStore(path, namespace="bench", synchronous="FULL", private=True)

    def synchronous(self) -> int:
        conn = sqlite3.connect(self.path)
        try:
            return int(conn.execute("PRAGMA synchronous").fetchone()[0])
        finally:
            conn.close()

    def adapter_synchronous(self) -> int:
        conn = self.store._live_database().connect()
        try:
            return int(conn.execute("PRAGMA synchronous").fetchone()[0])
        finally:
            conn.close()

    async def stream_appends(self, stream: SequencedStream, n: int, after: int) -> float:
        """Seconds for ``n`` appends, each at the expected head ``after``, ``after+1`` …"""
        start = time.perf_counter()
        for head in range(after, after + n):
            await stream.append(lambda first: [PAYLOAD], now=time.time(), expected_head=head)
        return time.perf_counter() - start

    async def conditional_puts(self, partition: str, n: int, after: int) -> float:
        start = time.perf_counter()
        for seq in range(after + 1, after + n + 1):
            await self.store.write(partition, [Put(seq_key(seq), PAYLOAD, condition=Absent())])
        return time.perf_counter() - start

    async def concurrent_stream_appends(self, writers: int, per_writer: int) -> tuple[float, float]:
        tx0, batches0 = self.store.commit_stats()

        async def writer() -> None:
            stream = SequencedStream(self.store, f"t_bench|lab|{uuid.uuid4().hex}", "bench")
            for head in range(per_writer):
                await stream.append(lambda first: [PAYLOAD], now=time.time(), expected_head=head)

        start = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(writers)))
        rate = writers * per_writer / (time.perf_counter() - start)
        tx, batches = self.store.commit_stats()
        return rate, (batches - batches0) / max(1, tx - tx0)

    async def populate(self, n: int) -> SequencedStream:
        stream = SequencedStream(self.store, f"t_bench|lab|{uuid.uuid4().hex}", "bench")
        for _ in range(0, n, 100):
            await stream.append(lambda first: [PAYLOAD] * 100, now=time.time())
        return stream

    async def read_all(self, stream: SequencedStream, n: int) -> float:
        start = time.perf_counter()
        seen, after = 0, 0
        while True:
            page = await stream.read(after, 100)
            seen += len(page)
            if len(page) < 100:
                break
            after = int(page[-1].key[2:])
        assert seen == n, seen
        return n / (time.perf_counter() - start)


def med(values: list[float]) -> float:
    return round(statistics.median(values), 1)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    fsync_samples = [fsync_limit(workdir, 2.0)]
    ours = Ours(workdir / "ours.sqlite3")
    peer = Peer(workdir / "peer.sqlite3")
    rates: dict[str, list[float]] = {
        k: []
        for k in (
            *("ours_stream", "ours_put", "peer", "raw", "raw_thread"),
            *("ours_32", "peer_32", "ours_read", "peer_read"),
        )
    }
    raw = RawFloor(workdir / "raw.sqlite3")
    group_sizes: list[float] = []
    await ours.store.write("warmup", [Put("k", b"v")])
    peer.append_one_by_one(5)

    per_writer = max(5, args.appends // 5)
    read_n = args.read_events
    ours_stream = await ours.populate(read_n)
    peer_stream = peer.populate(read_n)

    for r in range(args.rounds):
        # (a) in chunks of CHUNK appends, variants alternating in rotating order, so that the
        # disk's moods on this shared machine (fsync rates swing several-fold within seconds)
        # hit every variant alike
        stream = SequencedStream(ours.store, f"t_bench|lab|{uuid.uuid4().hex}", "bench")
        partition = f"t_bench|lab|{uuid.uuid4().hex}"
        originator = uuid.uuid4()
        elapsed = {"ours_stream": 0.0, "ours_put": 0.0, "peer": 0.0, "raw": 0.0, "raw_thread": 0.0}
        raw_partition = f"t_bench|lab|{uuid.uuid4().hex}"
        for c, done in enumerate(range(0, args.appends, CHUNK)):
            n = min(CHUNK, args.appends - done)
            order = list(elapsed)
            order = order[c % len(order) :] + order[: c % len(order)]
            for name in order:
                if name == "ours_stream":
                    elapsed[name] += await ours.stream_appends(stream, n, done)
                elif name == "ours_put":
                    elapsed[name] += await ours.conditional_puts(partition, n, done)
                elif name == "raw":
                    elapsed[name] += raw.inserts(partition, n, done)
                elif name == "raw_thread":
                    elapsed[name] += await raw.inserts_via_thread(raw_partition, n, done)
                else:
                    elapsed[name] += peer.append_one_by_one(n, originator, done)
        for name, seconds in elapsed.items():
            rates[name].append(args.appends / seconds)
        if r % 2 == 0:
            rate, group = await ours.concurrent_stream_appends(WRITERS, per_writer)
            rates["ours_32"].append(rate)
            group_sizes.append(group)
            rates["peer_32"].append(await asyncio.to_thread(peer.append_threads, WRITERS, per_writer))
        else:
            rates["peer_32"].append(await asyncio.to_thread(peer.append_threads, WRITERS, per_writer))
            rate, group = await ours.concurrent_stream_appends(WRITERS, per_writer)
            rates["ours_32"].append(rate)
            group_sizes.append(group)
        if r % 2 == 0:
            rates["ours_read"].append(await ours.read_all(ours_stream, read_n))
            rates["peer_read"].append(await asyncio.to_thread(peer.read_all, peer_stream, read_n))
        else:
            rates["peer_read"].append(await asyncio.to_thread(peer.read_all, peer_stream, read_n))
            rates["ours_read"].append(await ours.read_all(ours_stream, read_n))
        fsync_samples.append(fsync_limit(workdir, 2.0))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k}={v[-1]:.0f}/s" for k, v in rates.items()))

    settings = {
        "ours_synchronous": ours.adapter_synchronous(),
        "ours_journal_mode": "wal",
        "peer_synchronous": peer.synchronous(),
        "peer_journal_mode": peer.journal_mode(),
    }
    await ours.store.close()
    peer.close()
    raw.close()

    m = {k: med(v) for k, v in rates.items()}
    fsync_by_mode = {mode: med([f[mode] for f in fsync_samples]) for mode in ("append", "overwrite")}

    # the ratio of each row is the median of the per-round ratios (both sides of a ratio ran
    # in the same round, interleaved), which cancels drift between rounds
    fsync_per_round = [
        max(statistics.mean([a[k], b[k]]) for k in ("append", "overwrite"))
        for a, b in itertools.pairwise(fsync_samples)
    ]
    rates["fsync"] = fsync_per_round
    # per round: the higher (stricter) of the append/overwrite rates, averaged over the probes
    # before and after the round; the limit is their median
    fsync = med(fsync_per_round)

    def rr(a: str, b: str) -> float:
        return round(statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True)), 3)

    spec = [
        (
            "P2a",
            "1 writer, 1 event/txn: stream append (expected head) vs peer insert_events",
            "ours_stream",
            "peer",
            1.0,
            "events/s",
        ),
        (
            "P2a",
            "1 writer, 1 event/txn: conditional put (same primitive) vs peer",
            "ours_put",
            "peer",
            1.0,
            "events/s",
        ),
        (
            "P2a",
            "1 writer stream append vs fsync limit",
            "ours_stream",
            "fsync",
            0.8,
            "fsync: max of append/overwrite fdatasync/s, same disk, around each round",
        ),
        (
            "P2a",
            "(context) peer insert_events vs fsync limit",
            "peer",
            "fsync",
            None,
            "the peer commits in the caller's thread",
        ),
        (
            "P2a",
            "(context) raw sqlite3 via a writer thread, awaited from the loop, vs peer",
            "raw_thread",
            "peer",
            None,
            "no Python layer at all: the cost of never blocking the event loop on a commit",
        ),
        (
            "P2a",
            "(context) conditional put vs raw sqlite3 via a writer thread",
            "ours_put",
            "raw_thread",
            None,
            "what the adapter itself adds",
        ),
        (
            "P2a",
            "(context) raw sqlite3 one-insert transactions vs fsync limit",
            "raw",
            "fsync",
            None,
            "the ceiling for any Python writer committing each event: SQLite's own commit CPU",
        ),
        (
            "P2b",
            f"{WRITERS} concurrent writers (group commit) vs peer single writer",
            "ours_32",
            "peer",
            3.0,
            f"median {statistics.median(group_sizes):.1f} appends per commit",
        ),
        (
            "P2b",
            f"(context) {WRITERS} concurrent writers vs peer with {WRITERS} threads",
            "ours_32",
            "peer_32",
            None,
            "events/s",
        ),
        ("P2c", f"read a {read_n}-event stream in pages of 100", "ours_read", "peer_read", 1.0, "events/s"),
    ]
    rows = []
    for bench, metric, a, b, target, note in spec:
        value = rr(a, b)
        rows.append(
            row(
                bench,
                metric,
                med(rates[a]),
                med(rates[b]),
                value,
                "-" if target is None else f">= {target}",
                None if target is None else value >= target,
                note,
            )
        )
    return {
        "bench": "p2_sqlite",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "durability": settings,
        "fsync_limit_per_s": {
            "limit": fsync,
            "median_by_mode": fsync_by_mode,
            "samples": [{k: round(v, 1) for k, v in f.items()} for f in fsync_samples],
        },
        "params": {
            "rounds": args.rounds,
            "appends": args.appends,
            "writers": WRITERS,
            "per_writer": per_writer,
            "read_events": read_n,
            "payload_bytes": len(PAYLOAD),
        },
        "rates_per_round": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "medians": m,
        "commit_group_sizes": [round(g, 1) for g in group_sizes],
        "rows": rows,
    }


def print_table(report: dict[str, Any]) -> None:
    print()
    f = report["fsync_limit_per_s"]
    print(f"fsync limit: {f['limit']}/s (medians {f['median_by_mode']})  durability: {report['durability']}")
    header = f"{'bench':5} {'metric':72} {'ours':>9} {'baseline':>9} {'ratio':>7} {'target':>7} met"
    print(header)
    print("-" * len(header))
    for r in report["rows"]:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(
            f"{r['bench']:5} {r['metric'][:72]:72} {r['ours']:>9} {r['baseline']:>9} {r['ratio']:>7} "
            f"{r['target']:>7} {met}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--appends", type=int, default=300, help="appends per variant per round in (a)")
    parser.add_argument("--read-events", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round, few appends")
    parser.add_argument(
        "--dir",
        type=Path,
        default=ROOT / ".northstar" / "bench",
        help="where the databases go (a real disk, like the lab default)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "p2_sqlite.json")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.appends, args.read_events = 1, 40, 2_000
    args.dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="p2-", dir=args.dir))
    try:
        report = asyncio.run(run(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
