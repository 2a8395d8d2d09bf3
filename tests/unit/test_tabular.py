"""Tabular tables: versioned writes with history, per-table kinds, paging, isolation, and a
stateful model check over random sequences of versioned writes, deletes and (historical) reads."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from contracts.harness import BackendHarness
from contracts.suite import make_registry
from contracts.suite.stores import SECRET, StoreServices, build_services, make_ctx
from northstar_adapters.memory import MemoryItemStore
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError
from northstar_core.routing import RESOURCE_KINDS
from northstar_core.tabular import TABLES, TabularStore
from tests.adapters.harnesses import MemoryHarness, SqliteHarness


@pytest.fixture
async def svc() -> StoreServices:
    return await build_services(MemoryItemStore())


async def _err(awaitable: Any) -> NorthstarError:
    with pytest.raises(NorthstarError) as info:
        await awaitable
    return info.value


async def test_a_record_carries_id_scope_blob_version_and_timestamps(svc: StoreServices) -> None:
    ctx = make_ctx(project_id="p1", surface_id="builder", app_id="app1")
    record = await svc.tabular.put(ctx, "flows", "f1", {"nodes": [1]}, expected_version=None)
    assert (record.id, record.table, record.version, record.json_blob) == ("f1", "flows", 1, {"nodes": [1]})
    assert (record.scope.tenant_id, record.scope.mode, record.scope.project_id) == ("t_a", "lab", "p1")
    assert (record.scope.surface_id, record.scope.app_id, record.scope.user_id) == ("builder", "app1", "u1")
    assert record.created_at == record.updated_at
    assert await svc.tabular.get(ctx, "flows", "f1") == record


async def test_past_versions_stay_readable_after_updates_and_delete(svc: StoreServices) -> None:
    ctx = make_ctx()
    await svc.tabular.put(ctx, "graphs", "g", {"v": 1}, expected_version=None)
    await svc.tabular.put(ctx, "graphs", "g", {"v": 2}, expected_version=1)
    await svc.tabular.delete(ctx, "graphs", "g", expected_version=2)
    assert (await _err(svc.tabular.get(ctx, "graphs", "g"))).code == "tabular.not_found"
    assert (await svc.tabular.get(ctx, "graphs", "g", version=1)).json_blob == {"v": 1}
    assert (await svc.tabular.get(ctx, "graphs", "g", version=2)).json_blob == {"v": 2}
    assert (await _err(svc.tabular.get(ctx, "graphs", "g", version=3))).http_status == 404


async def test_stale_write_is_409_with_the_current_version_and_changes_nothing(svc: StoreServices) -> None:
    ctx = make_ctx()
    await svc.tabular.put(ctx, "overlays", "o", 1, expected_version=None)
    await svc.tabular.put(ctx, "overlays", "o", 2, expected_version=1)
    err = await _err(svc.tabular.put(ctx, "overlays", "o", 3, expected_version=1))
    assert (err.code, err.http_status, err.details["current_version"]) == ("tabular.version_conflict", 409, 2)
    assert [v.version for v in (await svc.tabular.versions(ctx, "overlays", "o")).items] == [1, 2]


async def test_an_unknown_table_is_404(svc: StoreServices) -> None:
    err = await _err(svc.tabular.put(make_ctx(), "nope", "x", 1, expected_version=None))
    assert (err.code, err.http_status) == ("tabular.unknown_table", 404)


async def test_each_table_resolves_its_own_resource_kind() -> None:
    # graph_store unrouted: graphs fail loudly with their own kind, flows keep working
    registry = await make_registry(MemoryItemStore(), kinds=[k for k in RESOURCE_KINDS if k != "graph_store"])
    tabular = TabularStore(registry, CursorCodec(SECRET), ManualClock())
    err = await _err(tabular.put(make_ctx(), "graphs", "g", 1, expected_version=None))
    assert (err.code, err.http_status) == ("graph_store.missing_route", 503)
    await tabular.put(make_ctx(), "flows", "f", 1, expected_version=None)
    assert set(TABLES.values()) <= set(RESOURCE_KINDS)


async def test_tables_projects_and_tenants_are_isolated(svc: StoreServices) -> None:
    await svc.tabular.put(make_ctx(), "flows", "f", 1, expected_version=None)
    for ctx, table in (
        (make_ctx(), "graphs"),
        (make_ctx(project_id="p2"), "flows"),
        (make_ctx(tenant="t_b"), "flows"),
    ):
        assert (await svc.tabular.list(ctx, table)).items == []
        assert (await _err(svc.tabular.get(ctx, table, "f"))).http_status == 404
        assert (await _err(svc.tabular.get(ctx, table, "f", version=1))).http_status == 404


async def test_versions_and_list_page_with_cursors(svc: StoreServices) -> None:
    ctx = make_ctx()
    for i in range(5):
        await svc.tabular.put(ctx, "seo_config", f"r{i}", i, expected_version=None)
    for v in range(1, 5):
        await svc.tabular.put(ctx, "seo_config", "r0", v, expected_version=v)
    ids: list[str] = []
    versions: list[int] = []
    cursor = None
    while True:
        page = await svc.tabular.list(ctx, "seo_config", cursor=cursor, limit=2)
        ids += [r.id for r in page.items]
        cursor = page.next_cursor
        if not page.has_more:
            break
    cursor = None
    while True:
        vpage = await svc.tabular.versions(ctx, "seo_config", "r0", cursor=cursor, limit=2)
        versions += [v.version for v in vpage.items]
        cursor = vpage.next_cursor
        if not vpage.has_more:
            break
    assert ids == [f"r{i}" for i in range(5)]
    assert versions == [1, 2, 3, 4, 5]
    err = await _err(svc.tabular.versions(ctx, "seo_config", "r1", cursor=cursor))
    assert (err.code, err.http_status) == ("tabular.cursor_invalid", 410)


@pytest.mark.parametrize("limit", [0, -1, 201])
async def test_a_limit_out_of_range_is_422(svc: StoreServices, limit: int) -> None:
    err = await _err(svc.tabular.list(make_ctx(), "flows", limit=limit))
    assert (err.code, err.http_status) == ("tabular.invalid_request", 422)


async def test_bad_input_writes_nothing(svc: StoreServices) -> None:
    ctx = make_ctx()
    for bad in (
        svc.tabular.put(ctx, "flows", "bad id", 1, expected_version=None),
        svc.tabular.put(ctx, "flows", "f", object(), expected_version=None),
        svc.tabular.put(ctx, "flows", "f", 1, expected_version=0),
        svc.tabular.put(ctx, "flows", "f", "x" * 400_000, expected_version=None),
    ):
        assert (await _err(bad)).http_status in (413, 422)
    assert (await svc.tabular.list(ctx, "flows")).items == []


# --- stateful model check ---------------------------------------------------------------------

IDS = st.sampled_from(["x", "y"])
TABLE_NAMES = st.sampled_from(["flows", "strategy_lock_snapshots"])
BLOBS = st.one_of(st.integers(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


class TabularModel(RuleBasedStateMachine):
    """The tabular store agrees with a model of live records and every version ever written."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.harness = self.make_harness()
        self.svc = self.loop.run_until_complete(build_services(self.harness))
        self.ctx = make_ctx()
        self.live: dict[tuple[str, str], int] = {}
        self.history: dict[tuple[str, str], dict[int, Any]] = {}

    def outcome(self, awaitable: Any) -> Any:
        try:
            return self.loop.run_until_complete(awaitable)
        except NorthstarError as exc:
            return exc

    def make_harness(self) -> BackendHarness:
        return MemoryHarness()

    def teardown(self) -> None:
        self.loop.run_until_complete(self.harness.cleanup())
        self.loop.close()

    def _last(self, rid: tuple[str, str]) -> int:
        return max(self.history.get(rid, {0: None}))

    def _expected(self, rid: tuple[str, str], pick: int) -> int | None:
        current = max(self.live.get(rid, self._last(rid)), 1)
        return [None, current, current + 1, max(current - 1, 1), self._last(rid) or 1][pick]

    @rule(table=TABLE_NAMES, rid=IDS, blob=BLOBS, pick=st.integers(0, 4))
    def put(self, table: str, rid: str, blob: Any, pick: int) -> None:
        key = (table, rid)
        expected = self._expected(key, pick)
        result = self.outcome(self.svc.tabular.put(self.ctx, table, rid, blob, expected_version=expected))
        ok = key not in self.live if expected is None else self.live.get(key) == expected
        if ok:
            version = self._last(key) + 1
            assert not isinstance(result, NorthstarError), result
            assert result.version == version
            self.live[key] = version
            self.history.setdefault(key, {})[version] = blob
        else:
            assert isinstance(result, NorthstarError) and result.http_status == 409
            assert result.details["current_version"] == self.live.get(key)

    @rule(table=TABLE_NAMES, rid=IDS, pick=st.integers(0, 4))
    def delete(self, table: str, rid: str, pick: int) -> None:
        key = (table, rid)
        expected = self._expected(key, pick)
        result = self.outcome(self.svc.tabular.delete(self.ctx, table, rid, expected_version=expected))
        if key not in self.live:
            assert isinstance(result, NorthstarError) and result.http_status == 404
        elif expected is None or expected == self.live[key]:
            assert not isinstance(result, NorthstarError), result
            del self.live[key]
        else:
            assert isinstance(result, NorthstarError) and result.http_status == 409

    @rule(table=TABLE_NAMES, rid=IDS, version=st.one_of(st.none(), st.integers(1, 6)))
    def read(self, table: str, rid: str, version: int | None) -> None:
        key = (table, rid)
        result = self.outcome(self.svc.tabular.get(self.ctx, table, rid, version=version))
        want_version = self.live.get(key) if version is None else version
        history = self.history.get(key, {})
        if want_version is None or want_version not in history:
            assert isinstance(result, NorthstarError) and result.http_status == 404
        else:
            assert (result.version, result.json_blob) == (want_version, history[want_version])

    @invariant()
    def listings_match(self) -> None:
        for table in ("flows", "strategy_lock_snapshots"):
            page = self.outcome(self.svc.tabular.list(self.ctx, table, limit=10))
            assert [(r.id, r.version) for r in page.items] == sorted(
                (rid, v) for (t, rid), v in self.live.items() if t == table
            )


TabularModel.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestTabularAgreesWithModel = TabularModel.TestCase


class SqliteTabularModel(TabularModel):
    """The same model check on the durable SQLite backend (one fresh file per example)."""

    def make_harness(self) -> BackendHarness:
        self.directory = tempfile.mkdtemp(prefix="northstar-model-")
        return SqliteHarness(Path(self.directory))

    def teardown(self) -> None:
        super().teardown()
        shutil.rmtree(self.directory, ignore_errors=True)


SqliteTabularModel.TestCase.settings = settings(max_examples=15, stateful_step_count=20, deadline=None)
TestTabularAgreesWithModelOnSqlite = SqliteTabularModel.TestCase
