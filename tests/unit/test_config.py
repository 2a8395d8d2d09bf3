"""Config scopes in the core: versioned documents, who may write which scope, toggle
resolution surface > tenant > system > default, typed known toggles."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.round_trips import InstrumentedStore, Trace
from contracts.suite.stores import StoreServices, build_services, make_ctx
from northstar_adapters.memory import MemoryItemStore
from northstar_core.config import TOGGLES, validate_values
from northstar_core.errors import NorthstarError
from northstar_core.storage import BackendUnavailable, Item

ADMIN = make_ctx(roles=("admin",))
SYSTEM = make_ctx(roles=("admin",), is_system=True)
GESTURES = "canvas.gestures_enabled"


@pytest.fixture
async def svc() -> StoreServices:
    return await build_services(MemoryItemStore())


async def _err(awaitable: Any) -> NorthstarError:
    with pytest.raises(NorthstarError) as info:
        await awaitable
    return info.value


async def test_an_unwritten_scope_is_empty_at_version_0(svc: StoreServices) -> None:
    doc = await svc.config.get(make_ctx(), "tenant")
    assert (doc.scope, doc.values, doc.version) == ("tenant", {}, 0)


async def test_writes_are_create_only_then_compare_and_set(svc: StoreServices) -> None:
    first = await svc.config.put(ADMIN, "tenant", {GESTURES: False}, expected_version=0)
    assert first.version == 1
    err = await _err(svc.config.put(ADMIN, "tenant", {GESTURES: True}, expected_version=None))
    assert (err.code, err.details["current_version"]) == ("config.version_conflict", 1)
    second = await svc.config.put(ADMIN, "tenant", {GESTURES: True}, expected_version=1)
    assert (second.version, second.updated_by) == (2, "u1")
    err = await _err(svc.config.put(ADMIN, "tenant", {}, expected_version=1))
    assert err.details["current_version"] == 2
    assert (await svc.config.get(make_ctx(), "tenant")).values == {GESTURES: True}


async def test_system_scope_needs_the_system_flag(svc: StoreServices) -> None:
    err = await _err(svc.config.put(ADMIN, "system", {GESTURES: False}, expected_version=None))
    assert (err.code, err.http_status) == ("auth.system_required", 403)
    await svc.config.put(SYSTEM, "system", {GESTURES: False}, expected_version=None)
    assert (await svc.config.get(make_ctx(tenant="t_other"), "system")).values == {GESTURES: False}


@pytest.mark.parametrize("scope", ["tenant", "surface"])
async def test_tenant_and_surface_scopes_need_admin(svc: StoreServices, scope: str) -> None:
    err = await _err(svc.config.put(make_ctx(), scope, {}, expected_version=None, surface_id="canvas"))
    assert (err.code, err.http_status) == ("auth.forbidden_role", 403)


async def test_surface_scope_needs_a_surface_id(svc: StoreServices) -> None:
    err = await _err(svc.config.put(ADMIN, "surface", {}, expected_version=None))
    assert (err.code, err.http_status) == ("config.invalid_request", 422)
    err = await _err(svc.config.get(ADMIN, "surface", surface_id="bad id"))
    assert err.code == "config.invalid_id"


async def test_an_unknown_scope_is_404(svc: StoreServices) -> None:
    err = await _err(svc.config.get(ADMIN, "galaxy"))
    assert (err.code, err.http_status) == ("config.unknown_scope", 404)


async def test_tenants_do_not_share_tenant_or_surface_config(svc: StoreServices) -> None:
    await svc.config.put(ADMIN, "tenant", {"a": 1}, expected_version=None)
    await svc.config.put(ADMIN, "surface", {"a": 2}, expected_version=None, surface_id="chat")
    other = make_ctx(tenant="t_b", roles=("admin",))
    assert (await svc.config.get(other, "tenant")).version == 0
    assert (await svc.config.get(other, "surface", surface_id="chat")).version == 0


async def test_toggle_resolves_surface_then_tenant_then_system_then_default(svc: StoreServices) -> None:
    chat = make_ctx(surface_id="chat")
    canvas = make_ctx(surface_id="canvas")
    assert await svc.config.toggle(canvas, GESTURES, default=True) is True
    await svc.config.put(
        SYSTEM, "system", {GESTURES: False, "tool_canvas_mode": "off"}, expected_version=None
    )
    assert await svc.config.toggle(canvas, GESTURES, default=True) is False
    await svc.config.put(ADMIN, "tenant", {"tool_canvas_mode": "interactive"}, expected_version=None)
    assert await svc.config.toggle(canvas, "tool_canvas_mode") == "interactive"
    await svc.config.put(ADMIN, "surface", {GESTURES: True}, expected_version=None, surface_id="canvas")
    assert await svc.config.toggle(canvas, GESTURES, default=False) is True
    assert await svc.config.toggle(chat, GESTURES, default=True) is False
    assert await svc.config.toggle(make_ctx(tenant="t_b"), "tool_canvas_mode") == "off"


class _SystemDown(MemoryItemStore):
    """Every read of the system scope's partition fails as an unreachable backend would."""

    async def get(self, partition: str, key: str) -> Item | None:
        if partition.startswith("~system|"):
            raise BackendUnavailable("down")
        return await super().get(partition, key)


async def test_toggle_reads_the_three_scopes_concurrently() -> None:
    trace = Trace()
    svc = await build_services(InstrumentedStore(MemoryItemStore(), "config_store", trace))
    trace.start()
    assert await svc.config.toggle(make_ctx(surface_id="canvas"), GESTURES, default=True) is True
    rt = trace.stop()
    assert (rt.total, rt.depth) == (3, 1), rt


async def test_a_failing_scope_only_matters_when_no_scope_before_it_holds_the_key() -> None:
    svc = await build_services(_SystemDown())
    canvas = make_ctx(surface_id="canvas")
    await svc.config.put(ADMIN, "surface", {GESTURES: False}, expected_version=None, surface_id="canvas")
    assert await svc.config.toggle(canvas, GESTURES, default=True) is False
    err = await _err(svc.config.toggle(canvas, "tool_canvas_mode", default="off"))
    assert (err.code, err.http_status) == ("config_store.backend_unavailable", 503)


@pytest.mark.parametrize(
    "values",
    [
        {GESTURES: "yes"},
        {GESTURES: 1},
        {"tool_canvas_mode": "sideways"},
        {"tool_canvas_mode": True},
        {"Bad Key": 1},
        {"trailing.": 1},
        {"": 1},
    ],
)
async def test_invalid_toggles_are_422_and_nothing_is_written(
    svc: StoreServices, values: dict[str, Any]
) -> None:
    err = await _err(svc.config.put(ADMIN, "tenant", values, expected_version=None))
    assert (err.code, err.http_status) == ("config.invalid_toggle", 422)
    assert (await svc.config.get(ADMIN, "tenant")).version == 0


@settings(max_examples=50, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"\A[a-z][a-z0-9_]{0,8}(\.[a-z][a-z0-9_]{0,8}){0,2}\Z"), st.integers(), max_size=5
    )
)
def test_any_dotted_lower_case_key_with_a_json_value_is_accepted(values: dict[str, int]) -> None:
    validate_values({k: v for k, v in values.items() if k not in TOGGLES})
