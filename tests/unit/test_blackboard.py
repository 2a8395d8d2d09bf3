"""The blackboard: create-only / compare-and-set writes, size limit, paging, isolation, and a
stateful model check over random sequences of versioned writes, deletes and reads."""

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
from contracts.suite.stores import StoreServices, build_services, make_ctx
from northstar_adapters.memory import MemoryItemStore
from northstar_core.errors import NorthstarError
from tests.adapters.harnesses import MemoryHarness, SqliteHarness

PARAMS = {"blackboard_store": {"max_value_bytes": 100}}


@pytest.fixture
async def svc() -> StoreServices:
    return await build_services(MemoryItemStore(), params=PARAMS)


async def _err(awaitable: Any) -> NorthstarError:
    with pytest.raises(NorthstarError) as info:
        await awaitable
    return info.value


async def test_a_write_without_expected_version_creates_and_then_conflicts(svc: StoreServices) -> None:
    ctx = make_ctx()
    created = await svc.blackboard.put(ctx, "run1", "k", {"a": 1}, expected_version=None)
    assert (created.version, created.value, created.updated_by) == (1, {"a": 1}, "u1")
    err = await _err(svc.blackboard.put(ctx, "run1", "k", {"a": 2}, expected_version=None))
    assert (err.code, err.http_status, err.details["current_version"]) == (
        "blackboard.version_conflict",
        409,
        1,
    )
    assert (await svc.blackboard.get(ctx, "run1", "k")).value == {"a": 1}


async def test_a_stale_expected_version_is_409_with_the_current_version(svc: StoreServices) -> None:
    ctx = make_ctx()
    await svc.blackboard.put(ctx, "run1", "k", 1, expected_version=None)
    await svc.blackboard.put(ctx, "run1", "k", 2, expected_version=1)
    err = await _err(svc.blackboard.put(ctx, "run1", "k", 3, expected_version=1))
    assert err.details == {"current_version": 2, "expected_version": 1}
    assert (await svc.blackboard.get(ctx, "run1", "k")).value == 2


async def test_an_update_keeps_created_at_and_moves_updated_at(svc: StoreServices) -> None:
    ctx = make_ctx()
    first = await svc.blackboard.put(ctx, "run1", "k", 1, expected_version=None)
    svc.clock.advance(5)  # type: ignore[attr-defined]
    second = await svc.blackboard.put(ctx, "run1", "k", 2, expected_version=1)
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at


async def test_an_expected_version_on_a_missing_key_is_409_with_no_current_version(
    svc: StoreServices,
) -> None:
    err = await _err(svc.blackboard.put(make_ctx(), "run1", "nope", 1, expected_version=3))
    assert (err.http_status, err.details["current_version"]) == (409, None)


async def test_a_value_over_the_route_limit_is_413_and_nothing_is_written(svc: StoreServices) -> None:
    err = await _err(svc.blackboard.put(make_ctx(), "run1", "k", "x" * 200, expected_version=None))
    assert (err.code, err.http_status) == ("blackboard.value_too_large", 413)
    assert err.details["limit"] == 100
    assert (await svc.blackboard.list(make_ctx(), "run1")).items == []


async def test_the_default_size_limit_applies_without_route_params() -> None:
    svc = await build_services(MemoryItemStore())
    await svc.blackboard.put(make_ctx(), "run1", "ok", "x" * 60_000, expected_version=None)
    err = await _err(svc.blackboard.put(make_ctx(), "run1", "big", "x" * 70_000, expected_version=None))
    assert err.details["limit"] == 64 * 1024


@pytest.mark.parametrize(("run_id", "key"), [("bad run", "k"), ("run1", "bad#key"), ("run1", ""), ("", "k")])
async def test_malformed_ids_are_422_and_nothing_is_written(
    svc: StoreServices, run_id: str, key: str
) -> None:
    err = await _err(svc.blackboard.put(make_ctx(), run_id, key, 1, expected_version=None))
    assert (err.code, err.http_status) == ("blackboard.invalid_id", 422)
    assert (await svc.blackboard.list(make_ctx(), "run1")).items == []


async def test_a_value_that_is_not_json_is_422(svc: StoreServices) -> None:
    err = await _err(svc.blackboard.put(make_ctx(), "run1", "k", object(), expected_version=None))
    assert (err.code, err.http_status) == ("blackboard.invalid_request", 422)


async def test_a_viewer_cannot_write(svc: StoreServices) -> None:
    err = await _err(svc.blackboard.put(make_ctx(roles=("viewer",)), "run1", "k", 1, expected_version=None))
    assert err.code == "auth.forbidden_role"


async def test_runs_projects_and_tenants_do_not_see_each_other(svc: StoreServices) -> None:
    await svc.blackboard.put(make_ctx(), "run1", "k", 1, expected_version=None)
    for ctx, run in (
        (make_ctx(), "run2"),
        (make_ctx(project_id="p1"), "run1"),
        (make_ctx(tenant="t_b"), "run1"),
    ):
        assert (await svc.blackboard.list(ctx, run)).items == []
        assert (await _err(svc.blackboard.get(ctx, run, "k"))).http_status == 404


async def test_a_delete_then_recreate_continues_versions_so_stale_writers_still_conflict(
    svc: StoreServices,
) -> None:
    ctx = make_ctx()
    await svc.blackboard.put(ctx, "run1", "k", 1, expected_version=None)
    await svc.blackboard.delete(ctx, "run1", "k", expected_version=1)
    again = await svc.blackboard.put(ctx, "run1", "k", 2, expected_version=None)
    assert again.version == 2
    err = await _err(svc.blackboard.put(ctx, "run1", "k", 3, expected_version=1))
    assert err.http_status == 409


async def test_list_pages_follow_cursors_and_a_foreign_cursor_is_410(svc: StoreServices) -> None:
    ctx = make_ctx()
    for i in range(7):
        await svc.blackboard.put(ctx, "run1", f"k{i}", i, expected_version=None)
    first = await svc.blackboard.list(ctx, "run1", limit=3)
    assert [e.key for e in first.items] == ["k0", "k1", "k2"] and first.has_more
    second = await svc.blackboard.list(ctx, "run1", cursor=first.next_cursor, limit=3)
    assert [e.key for e in second.items] == ["k3", "k4", "k5"]
    third = await svc.blackboard.list(ctx, "run1", cursor=second.next_cursor, limit=3)
    assert [e.key for e in third.items] == ["k6"] and not third.has_more
    for other_ctx, run in ((make_ctx(tenant="t_b"), "run1"), (ctx, "run2")):
        err = await _err(svc.blackboard.list(other_ctx, run, cursor=first.next_cursor))
        assert (err.code, err.http_status) == ("blackboard.cursor_invalid", 410)


async def test_of_concurrent_writers_at_one_version_exactly_one_wins(svc: StoreServices) -> None:
    ctx = make_ctx()
    await svc.blackboard.put(ctx, "run1", "k", 0, expected_version=None)
    results = await asyncio.gather(
        *(svc.blackboard.put(ctx, "run1", "k", i, expected_version=1) for i in range(8)),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    assert len(wins) == 1
    assert all(isinstance(r, NorthstarError) and r.http_status == 409 for r in results if r not in wins)


# --- stateful model check ---------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c"])
VALUES = st.one_of(st.integers(-5, 5), st.text(max_size=5), st.lists(st.booleans(), max_size=3))


class BlackboardModel(RuleBasedStateMachine):
    """The blackboard agrees with a dict of (version, value) plus each key's last version."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.harness = self.make_harness()
        self.svc = self.loop.run_until_complete(build_services(self.harness))
        self.ctx = make_ctx()
        self.live: dict[str, tuple[int, Any]] = {}
        self.last: dict[str, int] = {}

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def outcome(self, awaitable: Any) -> Any:
        try:
            return self.run(awaitable)
        except NorthstarError as exc:
            return exc

    def make_harness(self) -> BackendHarness:
        return MemoryHarness()

    def teardown(self) -> None:
        self.loop.run_until_complete(self.harness.cleanup())
        self.loop.close()

    def _expected_choice(self, key: str, pick: int) -> int | None:
        current = self.live.get(key, (self.last.get(key, 0), None))[0]
        return [None, current, current - 1, current + 1, self.last.get(key, 0)][pick]

    @rule(key=KEYS, value=VALUES, pick=st.integers(0, 4))
    def put(self, key: str, value: Any, pick: int) -> None:
        expected = self._expected_choice(key, pick)
        result = self.outcome(self.svc.blackboard.put(self.ctx, "run", key, value, expected_version=expected))
        ok = (
            (key not in self.live)
            if expected is None
            else (key in self.live and self.live[key][0] == expected)
        )
        if expected is not None and expected < 1:
            assert isinstance(result, NorthstarError) and result.http_status == 422
            return
        if ok:
            version = self.last.get(key, 0) + 1
            assert not isinstance(result, NorthstarError), result
            assert result.version == version
            self.live[key] = (version, value)
            self.last[key] = version
        else:
            assert isinstance(result, NorthstarError) and result.http_status == 409
            assert result.details["current_version"] == (self.live[key][0] if key in self.live else None)

    @rule(key=KEYS, pick=st.integers(0, 4))
    def delete(self, key: str, pick: int) -> None:
        expected = self._expected_choice(key, pick)
        result = self.outcome(self.svc.blackboard.delete(self.ctx, "run", key, expected_version=expected))
        if key not in self.live:
            assert isinstance(result, NorthstarError) and result.http_status == 404
        elif expected is None or expected == self.live[key][0]:
            assert not isinstance(result, NorthstarError), result
            del self.live[key]
        else:
            assert isinstance(result, NorthstarError) and result.http_status == 409

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        result = self.outcome(self.svc.blackboard.get(self.ctx, "run", key))
        if key in self.live:
            assert (result.version, result.value) == self.live[key]
        else:
            assert isinstance(result, NorthstarError) and result.http_status == 404

    @invariant()
    def listing_matches(self) -> None:
        seen: list[tuple[str, int, Any]] = []
        cursor = None
        while True:
            page = self.run(self.svc.blackboard.list(self.ctx, "run", cursor=cursor, limit=2))
            seen += [(e.key, e.version, e.value) for e in page.items]
            cursor = page.next_cursor
            if not page.has_more:
                break
        assert seen == [(k, v, val) for k, (v, val) in sorted(self.live.items())]


BlackboardModel.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestBlackboardAgreesWithModel = BlackboardModel.TestCase


class SqliteBlackboardModel(BlackboardModel):
    """The same model check on the durable SQLite backend (one fresh file per example)."""

    def make_harness(self) -> BackendHarness:
        self.directory = tempfile.mkdtemp(prefix="northstar-model-")
        return SqliteHarness(Path(self.directory))

    def teardown(self) -> None:
        super().teardown()
        shutil.rmtree(self.directory, ignore_errors=True)


SqliteBlackboardModel.TestCase.settings = settings(max_examples=15, stateful_step_count=20, deadline=None)
TestBlackboardAgreesWithModelOnSqlite = SqliteBlackboardModel.TestCase


@pytest.mark.parametrize("bad", ["64k", 0, -5, True, 1.5, 2**63])
async def test_an_unusable_size_limit_is_refused_when_the_route_is_set(bad: object) -> None:
    err = await _err(build_services(MemoryItemStore(), params={"blackboard_store": {"max_value_bytes": bad}}))
    assert (err.code, err.http_status, err.details["field"]) == (
        "routing.invalid_params",
        422,
        "options.max_value_bytes",
    )
