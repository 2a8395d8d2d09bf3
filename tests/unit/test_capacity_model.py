"""The capacity model of benchmark P7 (``bench/p7_capacity.py``): its arithmetic on small cases
computed by hand, and what its workload driver records for today's layout.

The driver tests pin the layout's shape as the model sees it (a spine append is one transaction
of two items in the partition of its hour and its run's shard; a keyed one claims its key
first): a layout change must show up here and in the README's P7 rows, not silently change the
model's figures.
"""

from __future__ import annotations

import math

import pytest

from bench import p7_capacity as p7
from contracts.round_trips import Call, Moved

PART = "t_cap|lab|spine"
KEY = "ev#01a22fa7-b1cd-7579-bb2d-cc7529cbb5eb"


def put(key: str, size: int, condition: str = "absent") -> Moved:
    return Moved(key, size, "put", condition)


def write(kind: str, partition: str, *moved: Moved) -> Call:
    keys = tuple(f"{m.op}:{m.key}" for m in moved)
    return Call(kind, "write", partition, keys, 1, moved)


def item_of(total_bytes: int, partition: str = PART, key: str = KEY) -> Moved:
    """A put whose DynamoDB item is exactly ``total_bytes`` (partition, key and overhead included)."""
    value = total_bytes - len(partition) - len(key) - p7.DDB_ITEM_OVERHEAD_BYTES
    assert value >= 0
    return put(key, value)


# --- DynamoDB -----------------------------------------------------------------------------------


def test_dynamodb_write_units_round_up_per_kb_and_double_in_a_transaction() -> None:
    assert p7.ddb_wcu(1024, transactional=False) == 1
    assert p7.ddb_wcu(1025, transactional=False) == 2
    assert p7.ddb_wcu(1536, transactional=True) == 4  # 1.5 KB -> 2 units, x2
    assert p7.ddb_wcu(10, transactional=True) == 2  # at least one unit


def test_dynamodb_read_units_round_up_per_4_kb_and_a_miss_costs_one() -> None:
    assert p7.ddb_rcu(0) == 1
    assert p7.ddb_rcu(4096) == 1
    assert p7.ddb_rcu(4097) == 2
    assert p7.ddb_rcu(4096, transactional=True) == 2


def test_dynamodb_item_size_counts_partition_key_value_and_attributes() -> None:
    m = put("s#0000000000000001", 100)
    assert p7.ddb_item_bytes("p", m) == 1 + 18 + 100 + 44
    assert p7.ddb_item_bytes("p", Moved(m.key, 100, "put", "absent", expires=True)) == 1 + 18 + 100 + 44 + 23


def test_five_small_items_in_one_transaction_cost_ten_wcu() -> None:
    call = write("event_spine", PART, *(item_of(900, key=f"e{i}#{KEY}") for i in range(5)))
    loads = p7.loads_of([(call,)], "dynamodb", {"t_cap": "<tenant>", "lab": "<mode>"})
    (load,) = loads.values()
    assert (load.wcu, load.items_written, load.transactional_writes, load.writes) == (10, 5, 1, 1)
    assert load.shape == "<tenant>|<mode>|spine" and not load.per_entity
    # 1,000 WCU/s per partition key at 10 WCU per event
    assert p7.limits_of(load, "dynamodb") == {"1000 WCU/s per partition key": 100}


def test_a_single_put_is_a_standard_write_and_a_check_is_billed_as_a_transactional_write() -> None:
    single = write("memory_store", "t|lab|memory|s", item_of(1536, "t|lab|memory|s", "r#k"))
    (load,) = p7.loads_of([(single,)], "dynamodb", {}).values()
    assert (load.wcu, load.transactional_writes) == (2, 0)  # 1.5 KB, not transactional
    entry = item_of(500, "t|lab|thread|th", "s#0000000000000002")
    check = Moved("s#0000000000000001", entry.value_bytes, "check", "version")
    appended = write("chat_store", "t|lab|thread|th", entry, check)
    (load,) = p7.loads_of([(appended,)], "dynamodb", {}).values()
    assert (load.wcu, load.checks, load.items_written, load.sequenced_appends) == (4, 1, 1, 1)


# --- Cosmos DB ----------------------------------------------------------------------------------


def test_cosmos_request_units() -> None:
    assert p7.cosmos_point_read_ru(1024) == 1.0
    assert p7.cosmos_point_read_ru(1025) == 2.0
    assert p7.cosmos_point_read_ru(0) == 1.0  # a miss
    assert p7.cosmos_write_ru(500) == 5.5
    assert p7.cosmos_write_ru(2048) == 11.0
    assert p7.cosmos_query_ru(0) == 2.5
    assert p7.cosmos_query_ru(1500) == 4.5


def test_cosmos_document_size_is_the_adapters_json_plus_system_properties() -> None:
    m = put("ab", 3)
    # id: 3 base64url characters for a 2-byte key; v: 4 base64 characters for 3 bytes
    doc = '{"id":"AAA","pk":"p","sk":"ab","v":"AAAA","ver":1,"expires_at":null}'
    assert p7.cosmos_doc_bytes("p", m) == len(doc) + p7.COSMOS_SYSTEM_PROPERTIES_BYTES


def test_a_cosmos_batch_costs_the_sum_of_its_operations_and_a_versioned_put_reads_first() -> None:
    batch = write("chat_store", "p", put("s#0000000000000002", 100), put("i#k", 100))
    (load,) = p7.loads_of([(batch,)], "cosmos", {}).values()
    assert load.ru == 2 * 5.5
    replace = write("memory_store", "p", put("r#k", 100, "version"))
    (load,) = p7.loads_of([(replace,)], "cosmos", {}).values()
    assert load.ru == 5.5 + 1.0  # the etag read, then the replace
    assert p7.limits_of(load, "cosmos") == {"10000 RU/s per logical partition": 10_000 / 6.5}


# --- Firestore ----------------------------------------------------------------------------------


def test_firestore_sequential_keys_and_per_document_rate() -> None:
    assert p7.is_sequential_key("ev#01a22fa7-b1cd-7579-bb2d-cc7529cbb5eb")
    assert p7.is_sequential_key("er#run-1#01a22fa7-b1cd-7579-bb2d-cc7529cbb5eb")
    assert p7.is_sequential_key("s#0000000000000042")
    assert not p7.is_sequential_key("i#k42")
    assert not p7.is_sequential_key("r#doc#budget_policy")
    event = write("event_spine", PART, *(put(f"e{i}#{KEY}", 300) for i in range(5)), put("i#k1", 50))
    (load,) = p7.loads_of([(event,)], "firestore", {}).values()
    assert (load.fs_writes, load.fs_sequential_writes) == (6, 5)
    assert p7.limits_of(load, "firestore") == {"~500 writes/s per collection with sequential keys": 100}
    # the same document written by 2 of 4 operations: 0.5 writes per op -> 2 ops/s at 1 write/s
    rewrite = write("memory_store", "p", put("r#k", 10, "version"))
    other = write("memory_store", "p", put("r#j", 10, "version"))
    new = write("memory_store", "p", put("r#x", 1))
    (load,) = p7.loads_of([(rewrite,), (rewrite,), (other,), (new,)], "firestore", {}).values()
    assert load.fs_hot_doc_writes == 0.5
    assert p7.limits_of(load, "firestore") == {"~1 write/s per document": 2}
    # a marker rewritten by every operation on its own entity: 1 write per op on each entity,
    # however the samples alternate between entities
    names = {"cv-a": "<canvas>", "cv-b": "<canvas>"}
    marker = [
        (write("event_stream", f"t|lab|canvas|{c}", put("m#op", 2, "version")),) for c in ("cv-a", "cv-b") * 2
    ]
    (load,) = p7.loads_of(marker, "firestore", names).values()
    assert load.fs_hot_doc_writes == 1 and load.per_entity
    # one operation writing its own record three times is a burst, not a sustained rate
    burst = [
        (
            write("budget_store", "p", put(f"r#{k}", 9)),
            write("budget_store", "p", put(f"r#{k}", 9, "version")),
        )
        for k in ("a", "b")
    ]
    (load,) = p7.loads_of(burst, "firestore", {}).values()
    assert load.fs_hot_doc_writes == 0


def test_firestore_ramp_rule() -> None:
    assert p7.ramp_minutes(500) == 0
    # 500 * 1.5**n >= 50,000 first at n = 12 steps of 5 minutes
    assert p7.ramp_minutes(50_000) == 60


# --- sustainable rate, shapes, growth ------------------------------------------------------------


def test_the_sustainable_rate_is_set_by_the_hottest_tenant_wide_partition() -> None:
    spine = p7.Load("event_spine", "<tenant>|<mode>|spine", wcu=20)  # 1000/20 = 50/s
    budget = p7.Load("budget_store", "<tenant>|<mode>|budget|<month>", wcu=4, sequenced_appends=1)  # 100/s
    thread = p7.Load("chat_store", "<tenant>|<mode>|thread|<thread>", wcu=500)  # 2/s, per thread
    loads = {(x.kind, x.shape): x for x in (budget, thread, spine)}
    cap = p7.capacity(loads, "dynamodb")
    assert cap.ops_per_s == 50 and cap.hottest is spine and cap.limit == "1000 WCU/s per partition key"
    assert cap.entity_ops_per_s == 2 and cap.entity_hottest is thread
    # without the spine, the budget stream's one append per round trip is the ceiling
    del loads[(spine.kind, spine.shape)]
    cap = p7.capacity(loads, "dynamodb")
    assert cap.ops_per_s == 1 / p7.SEQUENCED_APPEND_SECONDS and cap.hottest is budget
    # only per-entity partitions: no tenant-wide ceiling
    assert math.isinf(p7.capacity({("c", thread.shape): thread}, "dynamodb").ops_per_s)


def test_partition_shapes() -> None:
    names = {"t_cap": "<tenant>", "lab": "<mode>", "th-a": "<thread>"}
    assert p7.shape_of("t_cap|lab|budget|2026-12", names) == "<tenant>|<mode>|budget|<month>"
    assert p7.shape_of("t_cap|lab|thread|th-a", names) == "<tenant>|<mode>|thread|<thread>"
    assert p7.shape_of("t_cap|lab|spine|2026120105|07", names) == "<tenant>|<mode>|spine|<hour>|<shard>"
    assert p7.shape_of("t_cap|lab|spine|2026120105|115", names) == "<tenant>|<mode>|spine|<hour>|<shard>"
    assert p7.shape_of("t_cap|lab|spine|keys|63", names) == "<tenant>|<mode>|spine|keys|<slot>"
    assert p7.shape_of("t_cap|lab|budget|2026-12|31", names) == "<tenant>|<mode>|budget|<month>|<ledger>"
    assert not p7.is_per_entity("<tenant>|<mode>|budget|<month>")
    assert p7.is_time_bucketed("<tenant>|<mode>|budget|<month>")
    assert p7.is_per_entity("<tenant>|<mode>|thread|<thread>")
    assert not p7.is_time_bucketed("<tenant>|<mode>|spine")
    assert not p7.is_per_entity("<tenant>|<mode>|spine|<hour>|<shard>")
    assert p7.is_time_bucketed("<tenant>|<mode>|spine|<hour>|<shard>")
    assert p7.bucket_seconds("<tenant>|<mode>|spine|<hour>|<shard>") == 3_600
    assert math.isinf(p7.bucket_seconds("<tenant>|<mode>|spine|keys|<slot>"))


def test_a_spread_load_reaches_its_limit_at_spread_times_the_rate() -> None:
    shape = "<tenant>|<mode>|spine|<hour>|<shard>"
    spine = p7.Load("event_spine", shape, wcu=4)  # 250/s per partition
    cap = p7.capacity({(spine.kind, shape): spine}, "dynamodb")
    assert p7.spread_of(shape) == p7.MODEL_SHARDS
    assert cap.ops_per_s == 250 * p7.MODEL_SHARDS and cap.hottest is spine


def test_only_new_items_add_stored_bytes() -> None:
    calls = (write("memory_store", "p", put("r#a", 100), put("r#b", 100, "version")),)
    (load,) = p7.loads_of([calls], "dynamodb", {}).values()
    assert load.gained["dynamodb"] == p7.ddb_item_bytes("p", put("r#a", 100)) + p7.DDB_STORAGE_OVERHEAD_BYTES


# --- the workload driver, on the layout -------------------------------------------------------


def test_the_models_call_shapes_are_the_adapters() -> None:
    assert p7.atomic_checks_of("dynamodb") is True
    assert p7.atomic_checks_of("cosmos") is False
    assert p7.atomic_checks_of("firestore") is False


async def test_a_spine_append_is_two_items_in_one_transaction_in_its_hours_shard() -> None:
    traced = await p7.trace_workload(True, reps=2, names=["spine_ui", "spine_keyed", "spine_server_audit"])
    for name in ("spine_ui", "spine_keyed", "spine_server_audit"):
        for calls in traced["samples"][name]:
            shapes = {(c.kind, p7.shape_of(c.partition, traced["placeholders"])) for c in calls}
            writes = [c for c in calls if c.method == "write"]
            event = [c for c in writes if "<shard>" in p7.shape_of(c.partition, traced["placeholders"])]
            assert len(event) == 1 and [m.key[:3] for m in event[0].moved] == ["ev#", "er#"], name
            assert all(m.op == "put" and m.condition == "absent" for m in event[0].moved)
            expected = {("event_spine", "<tenant>|<mode>|spine|<hour>|<shard>")}
            if name == "spine_keyed":  # the idempotency claim, in its key's slot, with an expiry
                expected.add(("event_spine", "<tenant>|<mode>|spine|keys|<slot>"))
                (claim,) = [c for c in writes if "|keys|" in p7.shape_of(c.partition, traced["placeholders"])]
                assert [(m.key[:2], m.condition, m.expires) for m in claim.moved] == [("i#", "absent", True)]
            # (a process re-checks its hour's directory entry every few seconds: it may show)
            assert shapes - {("event_spine", "<tenant>|<mode>|spine|buckets")} == expected, name
    loads = p7.loads_of(traced["samples"]["spine_ui"], "dynamodb", traced["placeholders"])
    load = loads[("event_spine", "<tenant>|<mode>|spine|<hour>|<shard>")]
    assert (load.items_written, load.transactional_writes) == (2, 1)
    assert load.wcu == 4  # two items under 1 KB, transactional


@pytest.mark.parametrize(("atomic_checks", "reads_head"), [(True, False), (False, True)])
async def test_a_chat_post_follows_the_backends_call_shape(atomic_checks: bool, reads_head: bool) -> None:
    traced = await p7.trace_workload(atomic_checks, reps=2, names=["chat_post"])
    for calls in traced["samples"]["chat_post"]:
        (written,) = [c for c in calls if c.method == "write"]
        ops = [m.op for m in written.moved]
        assert ops.count("check") == (0 if reads_head else 1)
        assert any(c.method == "query" for c in calls) is reads_head
        # a check's size is the checked entry's, looked up in the store (DynamoDB bills it)
        assert all(m.value_bytes > 0 for m in written.moved if m.op == "check")
        shapes = {p7.shape_of(c.partition, traced["placeholders"]) for c in calls}
        assert shapes == {"<tenant>|<mode>|thread|<thread>"}


async def test_a_gated_action_reaches_the_spine_and_budget_shards() -> None:
    traced = await p7.trace_workload(True, reps=2, names=["gated_action"])
    loads = p7.loads_of(traced["samples"]["gated_action"], "dynamodb", traced["placeholders"])
    spine = loads[("event_spine", "<tenant>|<mode>|spine|<hour>|<shard>")]
    assert spine.writes == 3  # the safety decision, the budget charge, the analytics report
    budget = loads[("budget_store", "<tenant>|<mode>|budget|<month>|<ledger>")]
    assert budget.sequenced_appends == 1
    cap = p7.capacity(loads, "dynamodb")
    assert cap.hottest is not None and not cap.hottest.per_entity
