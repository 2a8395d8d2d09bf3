"""Seed behaviours on the spine and the canvas stream:

* a write or delete of a strategy-lock snapshot (tabular ``strategy_lock_snapshots``) is a
  ``strategy_lock`` event on the spine (seed 001: "tabular_store + event_spine emit");
* an agent may append its own ``audit`` events with ``source=agent`` (seed 003), while
  ``safety``, ``budget``, ``strategy_lock``, audit sub-types and ``source=system`` stay
  server-only;
* the canvas stream carries a ``system`` event ``limits_changed`` when a command is accepted
  under limits other than the ones last announced there.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from contracts.suite import make_registry
from contracts.suite.canvas import canvas_rig, command, create, make_ctx
from northstar_adapters.memory import MemoryItemStore
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.routing import RouteOptions, RoutingRegistry

EVENTS = json.loads((Path(__file__).resolve().parents[2] / "contracts" / "events.json").read_text())


def ctx(**kw: Any) -> RequestContext:
    base: dict[str, Any] = {
        "tenant_id": "t_x",
        "mode": "lab",
        "user_id": "u1",
        "roles": ("member",),
        "run_id": "r1",
        "step_id": "s1",
        "project_id": "p1",
    }
    return RequestContext(**{**base, **kw})


async def make_engines() -> Engines:
    return Engines(await make_registry(MemoryItemStore()), CursorCodec(b"a" * 32), ManualClock())


# --- strategy-lock snapshots ------------------------------------------------------------------


async def test_strategy_lock_snapshot_writes_and_deletes_are_strategy_lock_events() -> None:
    engines = await make_engines()
    blob = {"locked": ["send_email"], "note": "q3"}
    first = await engines.tabular.put(ctx(), "strategy_lock_snapshots", "snap1", blob, expected_version=None)
    second = await engines.tabular.put(
        ctx(), "strategy_lock_snapshots", "snap1", {"locked": []}, expected_version=1
    )
    await engines.tabular.delete(ctx(), "strategy_lock_snapshots", "snap1", expected_version=2)
    events = (await engines.spine.list(ctx(), event_type="strategy_lock")).items
    assert [(e.payload["action"], e.payload["version"]) for e in events] == [
        ("snapshot.written", first.version),
        ("snapshot.written", second.version),
        ("snapshot.deleted", 2),
    ]
    written = events[0]
    assert (written.source, written.run_id, written.project_id) == ("system", "r1", "p1")
    assert written.payload["table"] == "strategy_lock_snapshots" and written.payload["id"] == "snap1"
    canonical = msgspec.json.encode(blob, order="sorted")
    assert written.payload["json_blob_sha256"] == hashlib.sha256(canonical).hexdigest()
    assert written.payload["updated_at"] == first.updated_at
    # the event names the version: the blob itself is read back from the table's history
    snapshot = await engines.tabular.get(
        ctx(), "strategy_lock_snapshots", "snap1", version=written.payload["version"]
    )
    assert snapshot.json_blob == blob


async def test_other_tables_put_nothing_on_the_spine() -> None:
    engines = await make_engines()
    for table in ("flows", "graphs", "overlays", "seo_config"):
        await engines.tabular.put(ctx(), table, "r1", {"v": 1}, expected_version=None)
    assert (await engines.spine.list(ctx())).items == []


async def test_a_refused_snapshot_write_is_not_on_the_spine() -> None:
    engines = await make_engines()
    await engines.tabular.put(ctx(), "strategy_lock_snapshots", "s", {"v": 1}, expected_version=None)
    with pytest.raises(NorthstarError) as info:
        await engines.tabular.put(ctx(), "strategy_lock_snapshots", "s", {"v": 2}, expected_version=7)
    assert info.value.http_status == 409
    assert len((await engines.spine.list(ctx(), event_type="strategy_lock")).items) == 1


async def test_without_a_spine_route_a_snapshot_write_fails_loudly() -> None:
    from northstar_core.routing import RESOURCE_KINDS

    registry = await make_registry(MemoryItemStore(), kinds=[k for k in RESOURCE_KINDS if k != "event_spine"])
    engines = Engines(registry, CursorCodec(b"a" * 32), ManualClock())
    with pytest.raises(NorthstarError) as info:
        await engines.tabular.put(ctx(), "strategy_lock_snapshots", "s", {"v": 1}, expected_version=None)
    assert (info.value.code, info.value.http_status) == ("event_spine.missing_route", 503)


# --- agent audit events -----------------------------------------------------------------------


def audit(source: str = "agent", event_type: str = "audit", **payload: Any) -> dict[str, Any]:
    return {"event_type": event_type, "source": source, "payload": {"action": "tool_called", **payload}}


async def test_an_agent_appends_its_own_audit_event_stamped_with_its_id() -> None:
    engines = await make_engines()
    agent = ctx(agent_id="ag_1")
    event = await engines.spine.append(agent, audit(), client=True)
    assert (event.event_type, event.source, event.user_id) == ("audit", "agent", "u1")
    assert event.payload == {"action": "tool_called", "agent_id": "ag_1"}
    same = await engines.spine.append(agent, audit(agent_id="ag_1"), client=True)
    assert same.payload["agent_id"] == "ag_1"
    listed = (await engines.spine.list(ctx(), event_type="audit", source="agent")).items
    assert [e.event_id for e in listed] == [event.event_id, same.event_id]
    assert (await engines.spine.list(ctx(), event_type="audit", source="system")).items == []


@pytest.mark.parametrize(
    ("context", "body", "field"),
    [
        (ctx(), audit(), "event_type"),  # a user token, not an agent
        (ctx(agent_id="ag_1"), audit(source="ui"), "event_type"),
        (ctx(agent_id="ag_1"), audit(source="tool"), "event_type"),
        (ctx(agent_id="ag_1"), audit(source="system"), "event_type"),
        (ctx(agent_id="ag_1"), audit(event_type="audit.identity_mismatch"), "event_type"),
        (ctx(agent_id="ag_1"), audit(event_type="safety"), "event_type"),
        (ctx(agent_id="ag_1"), audit(event_type="budget"), "event_type"),
        (ctx(agent_id="ag_1"), audit(event_type="strategy_lock"), "event_type"),
        (ctx(agent_id="ag_1"), audit(event_type="rl", source="system"), "source"),
    ],
)
async def test_everything_else_reserved_stays_server_only(
    context: RequestContext, body: dict[str, Any], field: str
) -> None:
    engines = await make_engines()
    with pytest.raises(NorthstarError) as info:
        await engines.spine.append(context, body, client=True)
    assert (info.value.code, info.value.http_status, info.value.details["field"]) == (
        "event_spine.reserved_event_type",
        403,
        field,
    )
    assert (await engines.spine.list(ctx())).items == []


async def test_an_agent_cannot_sign_an_audit_event_as_another_agent() -> None:
    engines = await make_engines()
    with pytest.raises(NorthstarError) as info:
        await engines.spine.append(ctx(agent_id="ag_1"), audit(agent_id="ag_2"), client=True)
    assert (info.value.code, info.value.http_status) == ("auth.identity_mismatch", 403)
    (event,) = (await engines.spine.list(ctx())).items
    assert (event.source, event.payload["action"], event.payload["field"]) == (
        "system",
        "identity_mismatch",
        "agent_id",
    )


async def test_a_viewer_agent_cannot_append() -> None:
    engines = await make_engines()
    with pytest.raises(NorthstarError) as info:
        await engines.spine.append(ctx(agent_id="ag_1", roles=("viewer",)), audit(), client=True)
    assert info.value.code == "auth.forbidden_role"


# --- canvas system events ---------------------------------------------------------------------


async def _set_canvas_limits(registry: RoutingRegistry, value: dict[str, int] | None) -> None:
    route, version = next((r, v) for r, v in registry.routes() if r.resource_kind == "canvas_command_store")
    await registry.set_route(
        msgspec.structs.replace(route, options=RouteOptions(canvas_limits=value)), expected_version=version
    )


def _types(page: Any) -> list[str]:
    return [e.type for e in page.items]


async def test_a_change_of_canvas_limits_is_announced_before_the_next_commit() -> None:
    registry = await make_registry(MemoryItemStore())
    rig = await canvas_rig(registry)
    c, context = f"c{uuid.uuid4().hex[:8]}", make_ctx()
    await rig.canvas.commit(context, c, command(0, create("a")))
    assert _types(await rig.canvas.replay(context, c, None)) == ["op_committed"]  # defaults: no notice

    await _set_canvas_limits(registry, {"max_ops_per_command": 5, "max_atoms": 50})
    await rig.canvas.commit(context, c, command(1, create("b")))
    await rig.canvas.commit(context, c, command(2, create("c")))
    page = await rig.canvas.replay(context, c, None)
    assert _types(page) == ["op_committed", "system", "op_committed", "op_committed"]
    notice = page.items[1].data
    assert (notice["reason"], notice["head_rev"]) == ("limits_changed", 1)
    assert (notice["limits"]["max_ops_per_command"], notice["limits"]["max_atoms"]) == (5, 50)
    assert (notice["previous"]["max_ops_per_command"], notice["previous"]["max_atoms"]) == (200, 10_000)
    assert set(notice) == set(EVENTS["payloads"]["system"]["fields"])

    # back to the defaults: announced again, once, and a fresh process finds nothing to add
    await _set_canvas_limits(registry, None)
    await rig.canvas.commit(context, c, command(3, create("d")))
    fresh = await canvas_rig(registry)
    await fresh.canvas.commit(context, c, command(4, create("e")))
    page = await rig.canvas.replay(context, c, None)
    assert (
        _types(page)
        == ["op_committed", "system", "op_committed", "op_committed", "system"] + ["op_committed"] * 2
    )
    back = page.items[4].data
    assert back["limits"]["max_ops_per_command"] == 200 and back["previous"]["max_ops_per_command"] == 5


async def test_a_refused_command_announces_nothing() -> None:
    registry = await make_registry(MemoryItemStore())
    await _set_canvas_limits(registry, {"max_ops_per_command": 1})
    rig = await canvas_rig(registry)
    c, context = f"c{uuid.uuid4().hex[:8]}", make_ctx()
    with pytest.raises(NorthstarError) as info:
        await rig.canvas.commit(context, c, command(0, create("a"), create("b")))
    assert info.value.code == "canvas.too_many_ops"
    assert (await rig.canvas.replay(context, c, None)).items == []
    await rig.canvas.commit(context, c, command(0, create("a")))
    assert _types(await rig.canvas.replay(context, c, None)) == ["system", "op_committed"]
