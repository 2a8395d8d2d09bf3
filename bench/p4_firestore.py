"""P4 (Firestore): the adapter's atomic stream append vs the same write by hand with the raw SDK.

Each append writes entry ``s#<seq>`` and its idempotency record ``i#<key>`` in ONE atomic
batch (two ``create()`` writes: the uniqueness preconditions) in the stream's ``items``
subcollection. Three variants run against the same official Firestore emulator, each on its
own fresh project (so their data never mix), one request at a time (latency, not throughput),
interleaved append by append in rotating order so that noise from the shared machine hits all
three alike:

* ``adapter``   — ``SequencedStream.append`` on the Firestore ``ItemStore`` (idempotency lookup,
  head query, atomic batch: what the core really does per request);
* ``raw_full``  — the same three round trips written by hand with ``firestore.AsyncClient``;
* ``raw_batch`` — only the atomic batch, with the sequence number tracked locally (the floor:
  no read before writing).

Prints the ratios and writes ``bench/results/p4_firestore.json``. Usage::

    .venv/bin/python bench/p4_firestore.py [--appends 200] [--host 127.0.0.1:PORT]

Without ``--host`` it starts (and stops) its own emulator through
``scripts/emulators/firestore_emulator.py``. Absolute numbers are the emulator's on a shared
machine: only the ratios mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
from google.cloud import firestore  # noqa: E402

from bench.common import Append, interleave, p4_report, write_p4_report  # noqa: E402
from northstar_adapters.firestore import open_store  # noqa: E402
from northstar_adapters.firestore.layout import doc_id  # noqa: E402
from northstar_core.kernel.idempotency import IdempotencyRecord  # noqa: E402
from northstar_core.kernel.streams import SequencedStream, seq_key  # noqa: E402
from northstar_core.routing import Target  # noqa: E402
from tests.emulators.firestore import launcher  # noqa: E402

PAYLOAD = b'{"text":"hello from the bench","author":"u1"}'
COLLECTION = "northstar_chat_store"



@asynccontextmanager
async def adapter_variant() -> AsyncIterator[Append]:
    route = Target(
        resource_kind="chat_store", backend="firestore", params={"project": f"bench-a-{uuid.uuid4().hex[:8]}"}
    )
    store = open_store(route)
    stream = SequencedStream(store, f"t_bench|lab|{uuid.uuid4().hex[:8]}", "chat")

    async def one(i: int) -> None:
        await stream.append(
            lambda first: [PAYLOAD], now=time.time(), idempotency_key=f"req-{i}", payload_fingerprint="fp"
        )

    try:
        yield one
    finally:
        await store.close()


def _items(client: firestore.AsyncClient, partition: str) -> Any:
    return client.collection(COLLECTION).document(doc_id(partition)).collection("items")


def _batch(client: firestore.AsyncClient, items: Any, seq: int, i: int) -> Any:
    result = msgspec.json.encode({"first_seq": seq, "last_seq": seq})
    record = msgspec.json.encode(IdempotencyRecord("fp", msgspec.Raw(result), time.time()))
    batch = client.batch()
    entry, idem = seq_key(seq), f"i#req-{i}"
    batch.create(items.document(doc_id(entry)), {"sk": entry, "v": PAYLOAD, "ver": 1})
    batch.create(items.document(doc_id(idem)), {"sk": idem, "v": record, "ver": 1})
    return batch


@asynccontextmanager
async def raw_full_variant() -> AsyncIterator[Append]:
    client = firestore.AsyncClient(project=f"bench-f-{uuid.uuid4().hex[:8]}")
    items = _items(client, f"t_bench|lab|{uuid.uuid4().hex[:8]}")

    def live(data: dict[str, Any]) -> bool:
        expires = data.get("expires_at")
        return expires is None or expires > dt.datetime.now(dt.UTC)

    async def one(i: int) -> None:
        idem = await items.document(doc_id(f"i#req-{i}")).get()
        if idem.exists and live(idem.to_dict()):
            return
        query = (
            items.where(filter=firestore.FieldFilter("sk", ">=", "s#"))
            .where(filter=firestore.FieldFilter("sk", "<", "s$"))
            .order_by("sk", direction=firestore.Query.DESCENDING)
            .limit(1)
        )
        head = 0
        async for snap in query.stream():
            head = int(snap.to_dict()["sk"][2:])
        await _batch(client, items, head + 1, i).commit()

    yield one


@asynccontextmanager
async def raw_batch_variant() -> AsyncIterator[Append]:
    client = firestore.AsyncClient(project=f"bench-b-{uuid.uuid4().hex[:8]}")
    items = _items(client, f"t_bench|lab|{uuid.uuid4().hex[:8]}")
    state = {"head": 0}

    async def one(i: int) -> None:
        seq = state["head"] + 1
        await _batch(client, items, seq, i).commit()
        state["head"] = seq

    yield one


async def run(n: int) -> dict[str, Any]:
    async with (
        raw_batch_variant() as raw_batch,
        raw_full_variant() as raw_full,
        adapter_variant() as adapter_one,
    ):
        results = await interleave({"raw_batch": raw_batch, "raw_full": raw_full, "adapter": adapter_one}, n)
    return p4_report(
        "p4_firestore",
        results,
        n,
        what="atomic append of one stream entry + its idempotency record (batch of two create())",
        backend="Cloud Firestore emulator (gcloud cloud-firestore-emulator jar), loopback gRPC",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--host", help="host:port of a running emulator (default: start one)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "p4_firestore.json"))
    args = parser.parse_args()
    emulator = None
    if args.host:
        os.environ["FIRESTORE_EMULATOR_HOST"] = args.host
    else:
        emulator = launcher().start()
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    try:
        report = asyncio.run(run(args.appends))
    finally:
        if emulator is not None:
            emulator.stop()
    write_p4_report(report, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
