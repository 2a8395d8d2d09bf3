"""Session memory in the core: TTL by the core clock (whatever the backend's deletion lag),
route default TTL, last-writer-wins versions, scope isolation, bad input."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from contracts.round_trips import InstrumentedStore, Trace
from contracts.suite.stores import StoreServices, build_services, make_ctx
from northstar_adapters.memory import MemoryItemStore
from northstar_core.clock import ManualClock, iso
from northstar_core.errors import NorthstarError
from northstar_core.kernel.records import Item


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def svc(clock: ManualClock) -> StoreServices:
    # The backend's own clock never moves: only the core clock decides expiry here, which is
    # exactly the "backend has not deleted it yet" situation.
    return await build_services(MemoryItemStore(clock=lambda: 0.0), clock)


async def _err(awaitable: Any) -> NorthstarError:
    with pytest.raises(NorthstarError) as info:
        await awaitable
    return info.value


async def test_a_value_is_returned_until_its_ttl_and_never_after(
    svc: StoreServices, clock: ManualClock
) -> None:
    ctx = make_ctx()
    stored = await svc.memory.set(ctx, "s1", "k", "v", ttl_seconds=10)
    assert stored.expires_at == iso(clock.now() + 10)
    clock.advance(9.999)
    assert (await svc.memory.get(ctx, "s1", "k")).value == "v"
    clock.advance(0.001)
    assert (await _err(svc.memory.get(ctx, "s1", "k"))).code == "memory.not_found"
    assert await svc.memory.get_all(ctx, "s1") == []
    assert (await _err(svc.memory.delete(ctx, "s1", "k"))).code == "memory.not_found"


async def test_the_expired_item_is_still_in_the_backend_but_never_returned(
    svc: StoreServices, clock: ManualClock
) -> None:
    ctx = make_ctx()
    await svc.memory.set(ctx, "s1", "k", "v", ttl_seconds=1)
    clock.advance(5)
    store = await svc.registry.store_for("memory_store", "t_a")
    assert await store.get("t_a|lab|memory|~|u1|s1", "r#k") is not None  # the backend still has it
    assert (await _err(svc.memory.get(ctx, "s1", "k"))).http_status == 404


async def test_setting_an_expired_key_again_makes_it_live(svc: StoreServices, clock: ManualClock) -> None:
    ctx = make_ctx()
    await svc.memory.set(ctx, "s1", "k", 1, ttl_seconds=1)
    clock.advance(2)
    again = await svc.memory.set(ctx, "s1", "k", 2)
    assert (again.value, again.expires_at) == (2, None)
    assert (await svc.memory.get(ctx, "s1", "k")).value == 2


async def test_the_route_default_ttl_applies_and_a_request_ttl_overrides_it(clock: ManualClock) -> None:
    svc = await build_services(MemoryItemStore(), clock, params={"memory_store": {"default_ttl_seconds": 60}})
    ctx = make_ctx()
    assert (await svc.memory.set(ctx, "s1", "a", 1)).ttl_seconds == 60
    assert (await svc.memory.set(ctx, "s1", "b", 1, ttl_seconds=600)).ttl_seconds == 600
    clock.advance(61)
    assert [v.key for v in await svc.memory.get_all(ctx, "s1")] == ["b"]


async def test_without_any_ttl_values_are_durable(svc: StoreServices, clock: ManualClock) -> None:
    ctx = make_ctx()
    await svc.memory.set(ctx, "s1", "k", 1)
    clock.advance(10 * 365 * 24 * 3600)
    assert (await svc.memory.get(ctx, "s1", "k")).value == 1


async def test_each_set_bumps_the_version(svc: StoreServices) -> None:
    ctx = make_ctx()
    versions = [(await svc.memory.set(ctx, "s1", "k", i)).version for i in range(3)]
    assert versions == [1, 2, 3]


@pytest.mark.parametrize(
    "other",
    [
        make_ctx(tenant="t_b"),
        make_ctx(user="u2"),
        make_ctx(project_id="p1"),
        make_ctx(mode="saas"),
    ],
)
async def test_scope_is_tenant_mode_project_user_session(svc: StoreServices, other: Any) -> None:
    await svc.memory.set(make_ctx(), "s1", "k", 1)
    assert await svc.memory.get_all(other, "s1") == []
    assert (await _err(svc.memory.get(other, "s1", "k"))).http_status == 404


async def test_a_user_id_with_any_characters_is_scoped_safely(svc: StoreServices) -> None:
    odd = make_ctx(user="ada@example.com|x")
    await svc.memory.set(odd, "s1", "k", 1)
    assert (await svc.memory.get(odd, "s1", "k")).user_id == "ada@example.com|x"
    assert await svc.memory.get_all(make_ctx(user="ada@example.com"), "s1") == []


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), 10 * 365 * 24 * 3600 + 1])
async def test_an_invalid_ttl_is_422_and_nothing_is_written(svc: StoreServices, ttl: float) -> None:
    err = await _err(svc.memory.set(make_ctx(), "s1", "k", 1, ttl_seconds=ttl))
    assert (err.code, err.http_status) == ("memory.invalid_request", 422)
    assert await svc.memory.get_all(make_ctx(), "s1") == []


async def test_a_too_large_value_is_413(svc: StoreServices) -> None:
    err = await _err(svc.memory.set(make_ctx(), "s1", "k", "x" * 400_000))
    assert (err.code, err.http_status) == ("memory.value_too_large", 413)


@pytest.mark.parametrize("bad", ["1h", 0, -1, True, 10 * 365 * 24 * 3600 + 1])
async def test_an_unusable_default_ttl_is_refused_when_the_route_is_set(
    clock: ManualClock, bad: object
) -> None:
    params = {"memory_store": {"default_ttl_seconds": bad}}
    err = await _err(build_services(MemoryItemStore(), clock, params=params))
    assert (err.code, err.http_status) == ("routing.invalid_params", 422)
    assert err.details["field"] == "options.default_ttl_seconds"


async def test_deleting_a_key_is_one_read_and_one_conditional_write(clock: ManualClock) -> None:
    trace = Trace()
    svc = await build_services(InstrumentedStore(MemoryItemStore(), "memory_store", trace), clock)
    ctx = make_ctx()
    await svc.memory.set(ctx, "s1", "k", 1)
    trace.start()
    assert await svc.memory.delete(ctx, "s1", "k") == 1
    assert [c.method for c in trace.stop().calls] == ["get", "write"]


class _RacingSet(MemoryItemStore):
    """Once armed, the next read is followed by another writer's set of the same record."""

    armed: Callable[[], Awaitable[object]] | None = None

    async def get(self, partition: str, key: str) -> Item | None:
        item = await super().get(partition, key)
        race, self.armed = self.armed, None
        if race is not None:
            await race()
        return item


async def test_a_set_between_the_read_and_the_delete_wins_with_409(clock: ManualClock) -> None:
    store = _RacingSet(clock=lambda: 0.0)
    svc = await build_services(store, clock)
    ctx = make_ctx()
    await svc.memory.set(ctx, "s1", "k", 1)
    store.armed = lambda: svc.memory.set(ctx, "s1", "k", 2)
    err = await _err(svc.memory.delete(ctx, "s1", "k"))
    assert (err.code, err.http_status) == ("memory.version_conflict", 409)
    assert (err.details["current_version"], err.details["expected_version"]) == (2, 1)
    assert (await svc.memory.get(ctx, "s1", "k")).value == 2


async def test_deleting_a_session_counts_only_live_values(svc: StoreServices, clock: ManualClock) -> None:
    ctx = make_ctx()
    await svc.memory.set(ctx, "s1", "old", 1, ttl_seconds=5)
    await svc.memory.set(ctx, "s1", "a", 1)
    await svc.memory.set(ctx, "s1", "b", 2)
    clock.advance(10)
    assert await svc.memory.delete(ctx, "s1") == 2
    assert await svc.memory.get_all(ctx, "s1") == []
