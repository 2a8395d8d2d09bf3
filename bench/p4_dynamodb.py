"""P4 (DynamoDB): the adapter's atomic stream append vs the same write by hand with raw aioboto3.

Each append writes entry ``s#<seq>`` and its idempotency record ``i#<key>`` in ONE
``TransactWriteItems`` (two ``Put`` with ``Absent`` conditions — the same expiry-aware condition
the adapter uses: ``attribute_not_exists(pk) OR exp <= :now`` — and, at a known head, a
``ConditionCheck`` that ``s#<seq-1>`` exists). Three variants run against the
same serialised moto server, each on its own fresh table (moto's transactions copy the table,
so the three tables grow alike), one request at a time (latency, not throughput), interleaved
append by append in rotating order so that noise from the shared machine hits all three alike:

* ``adapter``   — ``SequencedStream.append`` on the DynamoDB ``ItemStore`` (idempotency
  ``GetItem``, then ONE ``TransactWriteItems`` at the head this process last saw, with a
  ``ConditionCheck`` that entry ``s#<head>`` exists: what the core really does per request;
  the head is queried only for a stream it has not seen or after a failed check);
* ``raw_full``  — the same round trips written by hand with an aioboto3 client;
* ``raw_batch`` — only the ``TransactWriteItems``, with the sequence number tracked locally (the
  floor: no read before writing).

Prints the ratios and writes ``bench/results/p4_dynamodb.json``. Usage::

    .venv/bin/python bench/p4_dynamodb.py [--appends 200] [--endpoint http://127.0.0.1:PORT]

Without ``--endpoint`` it starts (and stops) its own moto server through
``scripts/emulators/moto_server.py``. Absolute numbers are moto's on a shared machine: only the
ratios mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
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

import aioboto3  # noqa: E402
import msgspec  # noqa: E402

from bench.common import Append, interleave, p4_report, write_p4_report  # noqa: E402
from northstar_adapters.dynamodb import drop, open_store, provision  # noqa: E402
from northstar_core.kernel.idempotency import IdempotencyRecord  # noqa: E402
from northstar_core.kernel.streams import SequencedStream, seq_key  # noqa: E402
from northstar_core.routing import Target  # noqa: E402
from tests.emulators.moto import TEST_ENV, MotoServer  # noqa: E402

PAYLOAD = b'{"text":"hello from the bench","author":"u1"}'



def _route(endpoint: str, tag: str) -> Target:
    return Target(
        resource_kind="chat_store",
        backend="dynamodb",
        params={"endpoint_url": endpoint, "table_prefix": f"bench_{tag}_{uuid.uuid4().hex[:8]}_"},
    )


@asynccontextmanager
async def _table(endpoint: str, tag: str) -> AsyncIterator[str]:
    route = _route(endpoint, tag)
    await provision(route, dry_run=False)
    try:
        yield route.params["table_prefix"] + route.resource_kind
    finally:
        await drop(route)


@asynccontextmanager
async def adapter_variant(endpoint: str) -> AsyncIterator[Append]:
    route = _route(endpoint, "a")
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
        await drop(route)


def _absent_put(table: str, pk: str, sk: str, value: bytes, now: float) -> dict[str, Any]:
    return {
        "Put": {
            "TableName": table,
            "Item": {"pk": {"S": pk}, "sk": {"S": sk}, "v": {"B": value}, "ver": {"N": "1"}},
            "ConditionExpression": "attribute_not_exists(#pk) OR #exp <= :now",
            "ExpressionAttributeNames": {"#pk": "pk", "#exp": "exp"},
            "ExpressionAttributeValues": {":now": {"N": repr(now)}},
        }
    }


def _entry_exists(table: str, pk: str, sk: str, now: float) -> dict[str, Any]:
    return {
        "ConditionCheck": {
            "TableName": table,
            "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
            "ConditionExpression": "#ver = :ver AND (attribute_not_exists(#exp) OR #exp > :now)",
            "ExpressionAttributeNames": {"#ver": "ver", "#exp": "exp"},
            "ExpressionAttributeValues": {":ver": {"N": "1"}, ":now": {"N": repr(now)}},
        }
    }


async def _transact(client: Any, table: str, pk: str, seq: int, i: int, *, check: bool = False) -> None:
    now = time.time()
    result = msgspec.json.encode({"first_seq": seq, "last_seq": seq})
    record = msgspec.json.encode(IdempotencyRecord("fp", msgspec.Raw(result), now))
    items = [
        _absent_put(table, pk, seq_key(seq), PAYLOAD, now),
        _absent_put(table, pk, f"i#req-{i}", record, now),
    ]
    if check and seq > 1:
        items.append(_entry_exists(table, pk, seq_key(seq - 1), now))
    await client.transact_write_items(TransactItems=items)


@asynccontextmanager
async def raw_full_variant(endpoint: str) -> AsyncIterator[Append]:
    async with _table(endpoint, "f") as table, aioboto3.Session().client(
        "dynamodb", endpoint_url=endpoint
    ) as client:
        pk = f"t_bench|lab|{uuid.uuid4().hex[:8]}"
        known: dict[str, int] = {}  # the head this "process" last wrote

        async def one(i: int) -> None:
            idem = await client.get_item(
                TableName=table, Key={"pk": {"S": pk}, "sk": {"S": f"i#req-{i}"}}, ConsistentRead=True
            )
            item = idem.get("Item")
            if item is not None and ("exp" not in item or float(item["exp"]["N"]) > time.time()):
                return
            head = known.get(pk)
            if head is None:
                last = await client.query(
                    TableName=table,
                    KeyConditionExpression="pk = :pk AND begins_with(sk, :s)",
                    ExpressionAttributeValues={":pk": {"S": pk}, ":s": {"S": "s#"}},
                    ScanIndexForward=False,
                    Limit=1,
                    ConsistentRead=True,
                )
                head = int(last["Items"][0]["sk"]["S"][2:]) if last.get("Items") else 0
            await _transact(client, table, pk, head + 1, i, check=True)
            known[pk] = head + 1

        yield one


@asynccontextmanager
async def raw_batch_variant(endpoint: str) -> AsyncIterator[Append]:
    async with _table(endpoint, "b") as table, aioboto3.Session().client(
        "dynamodb", endpoint_url=endpoint
    ) as client:
        pk = f"t_bench|lab|{uuid.uuid4().hex[:8]}"
        state = {"head": 0}

        async def one(i: int) -> None:
            seq = state["head"] + 1
            await _transact(client, table, pk, seq, i)
            state["head"] = seq

        yield one


async def run(endpoint: str, n: int) -> dict[str, Any]:
    async with (
        raw_batch_variant(endpoint) as raw_batch,
        raw_full_variant(endpoint) as raw_full,
        adapter_variant(endpoint) as adapter_one,
    ):
        results = await interleave({"raw_batch": raw_batch, "raw_full": raw_full, "adapter": adapter_one}, n)
    return p4_report(
        "p4_dynamodb",
        results,
        n,
        what="atomic append of one stream entry + its idempotency record "
        "(TransactWriteItems: two Absent-conditioned puts + a ConditionCheck on the previous entry)",
        backend="moto server (serialised: one lock around moto's WSGI app), loopback HTTP",
        target="adapter / raw_full <= 1.15",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--endpoint", help="URL of a running moto server (default: start one)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "p4_dynamodb.json"))
    args = parser.parse_args()
    for name, value in TEST_ENV.items():
        os.environ.setdefault(name, value)
    server = None
    endpoint = args.endpoint
    if endpoint is None:
        server = MotoServer.start()
        endpoint = server.endpoint
    try:
        report = asyncio.run(run(endpoint, args.appends))
    finally:
        if server is not None:
            server.stop()
    write_p4_report(report, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
