"""P4 (Cosmos): the adapter's atomic stream append vs the same write by hand with the raw SDK.

Each append writes entry ``s#<seq>`` and its idempotency record ``i#<key>`` in one
transactional batch in the stream's partition, under create (``Absent``) conditions. Three
variants run against the same patched emulator (``scripts/cosmos/launcher.js``), each on its
own fresh container, one request at a time (latency, not throughput), interleaved append by
append in rotating order so that noise from the shared machine hits all three alike:

* ``adapter``     — ``SequencedStream.append`` on the Cosmos ``ItemStore`` (idempotency lookup,
  head query, batch: what the core really does per request);
* ``raw_full``    — the same three round trips written by hand with ``azure.cosmos.aio``;
* ``raw_batch``   — only the transactional batch, with the sequence number tracked locally (the
  floor: no read before writing).

Prints the ratios and writes ``bench/results/p4_cosmos.json``. Usage::

    .venv/bin/python bench/p4_cosmos.py [--appends 200] [--endpoint https://127.0.0.1:PORT/]

Without ``--endpoint`` it starts (and stops) its own emulator. Absolute numbers are the
emulator's, which re-scans a container on every query: only the ratios mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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
from azure.cosmos import PartitionKey  # noqa: E402
from azure.cosmos import exceptions as cosmos_exc  # noqa: E402
from azure.cosmos.aio import CosmosClient  # noqa: E402

from bench.common import Append, interleave, p4_report, write_p4_report  # noqa: E402
from northstar_adapters.cosmos import open_store, provision  # noqa: E402
from northstar_adapters.cosmos.layout import encode_id  # noqa: E402
from northstar_core.kernel.idempotency import IdempotencyRecord  # noqa: E402
from northstar_core.kernel.streams import SequencedStream, seq_key  # noqa: E402
from northstar_core.routing import Target  # noqa: E402
from tests.emulators.cosmos import EMULATOR_KEY, KEY_ENV, CosmosServer  # noqa: E402

PAYLOAD = b'{"text":"hello from the bench","author":"u1"}'


def _doc(partition: str, key: str, value: bytes) -> dict[str, Any]:
    return {
        "id": encode_id(key),
        "pk": partition,
        "sk": key,
        "v": base64.b64encode(value).decode(),
        "ver": 1,
        "expires_at": None,
    }




@asynccontextmanager
async def adapter_variant(endpoint: str, database: str) -> AsyncIterator[Append]:
    route = Target(
        resource_kind="chat_store",
        backend="cosmos",
        params={"url": endpoint, "database": database, "container_prefix": "adapter_"},
    )
    await provision(route, dry_run=False)
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


async def _raw_container(client: CosmosClient, database: str, name: str) -> Any:
    db = await client.create_database_if_not_exists(database)
    return await db.create_container_if_not_exists(
        id=name, partition_key=PartitionKey(path="/pk"), default_ttl=-1
    )


def _batch(partition: str, seq: int, i: int) -> list[tuple[Any, ...]]:
    result = msgspec.json.encode({"first_seq": seq, "last_seq": seq})
    record_bytes = msgspec.json.encode(IdempotencyRecord("fp", msgspec.Raw(result), time.time()))
    return [
        ("create", (_doc(partition, seq_key(seq), PAYLOAD),)),
        ("create", (_doc(partition, f"i#req-{i}", record_bytes),)),
    ]


@asynccontextmanager
async def raw_full_variant(endpoint: str, database: str) -> AsyncIterator[Append]:
    async with CosmosClient(endpoint, credential=os.environ[KEY_ENV]) as client:
        container = await _raw_container(client, database, "raw_full_chat_store")
        partition = f"t_bench|lab|{uuid.uuid4().hex[:8]}"
        head_sql = (
            "SELECT c.sk FROM c WHERE c.pk = @pk AND STARTSWITH(c.sk, @prefix) "
            "AND (IS_NULL(c.expires_at) OR c.expires_at > @now) ORDER BY c.sk DESC"
        )

        async def one(i: int) -> None:
            try:
                await container.read_item(encode_id(f"i#req-{i}"), partition_key=partition)
                return
            except cosmos_exc.CosmosResourceNotFoundError:
                pass
            params: list[dict[str, Any]] = [
                {"name": "@pk", "value": partition},
                {"name": "@prefix", "value": "s#"},
                {"name": "@now", "value": time.time()},
            ]
            head = 0
            async for page in container.query_items(
                head_sql, parameters=params, partition_key=partition, max_item_count=1
            ).by_page():
                async for doc in page:
                    head = int(doc["sk"][2:])
                break
            await container.execute_item_batch(_batch(partition, head + 1, i), partition_key=partition)

        yield one


@asynccontextmanager
async def raw_batch_variant(endpoint: str, database: str) -> AsyncIterator[Append]:
    async with CosmosClient(endpoint, credential=os.environ[KEY_ENV]) as client:
        container = await _raw_container(client, database, "raw_batch_chat_store")
        partition = f"t_bench|lab|{uuid.uuid4().hex[:8]}"
        state = {"head": 0}

        async def one(i: int) -> None:
            seq = state["head"] + 1
            await container.execute_item_batch(_batch(partition, seq, i), partition_key=partition)
            state["head"] = seq

        yield one


async def run(endpoint: str, n: int) -> dict[str, Any]:
    database = f"bench{uuid.uuid4().hex[:8]}"
    try:
        async with (
            raw_batch_variant(endpoint, database) as raw_batch,
            raw_full_variant(endpoint, database) as raw_full,
            adapter_variant(endpoint, database) as adapter_one,
        ):
            variants = {"raw_batch": raw_batch, "raw_full": raw_full, "adapter": adapter_one}
            results = await interleave(variants, n)
    finally:
        async with CosmosClient(endpoint, credential=os.environ[KEY_ENV]) as client:
            try:
                await client.delete_database(database)
            except cosmos_exc.CosmosResourceNotFoundError:
                pass
    return p4_report(
        "p4_cosmos",
        results,
        n,
        what="atomic append of one stream entry + its idempotency record (transactional batch)",
        backend="@vercel/cosmosdb-server 1.0.1 via scripts/cosmos/launcher.js (loopback, HTTPS)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--endpoint", default=None)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "p4_cosmos.json"))
    args = parser.parse_args()
    os.environ.setdefault(KEY_ENV, EMULATOR_KEY)
    server = None if args.endpoint else CosmosServer.start()
    endpoint = args.endpoint or (server.endpoint if server else "")
    try:
        report = asyncio.run(run(endpoint, args.appends))
    finally:
        if server is not None:
            server.stop()
    write_p4_report(report, Path(args.out))


if __name__ == "__main__":
    main()
