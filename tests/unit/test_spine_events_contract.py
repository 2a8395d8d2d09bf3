"""contracts/events.json describes the shapes the code really produces."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from contracts.suite.spine import _ctx, safety_rig
from northstar_adapters.memory import MemoryItemStore
from northstar_core.spine import Event, EventIn
from northstar_core.timeline import StreamEvent

EVENTS = json.loads((Path(__file__).resolve().parents[2] / "contracts" / "events.json").read_text())


def test_published_schemas_match_the_structs() -> None:
    assert EVENTS["spine_event"]["schema"] == msgspec.json.schema(Event)
    assert EVENTS["spine_event_in"]["schema"] == msgspec.json.schema(EventIn)
    assert EVENTS["stream_event"]["schema"] == msgspec.json.schema(StreamEvent)


async def test_a_real_safety_decision_has_exactly_the_documented_fields() -> None:
    rig = await safety_rig(MemoryItemStore())
    await rig.gate.check(_ctx(), action_name="fire", subject_type="agent", subject_id="a1")
    event = (await rig.spine.list(_ctx(), event_type="safety")).items[0]
    assert set(event.payload) == set(EVENTS["payloads"]["safety"]["fields"])
    published = (await rig.timeline.list(_ctx(), "agent:a1")).items[0]
    assert published.type == "safety_decision"
    assert set(published.data) == set(EVENTS["payloads"]["safety"]["fields"]) | {"event_id"}
    stored = msgspec.json.decode(msgspec.json.encode(event))
    assert set(stored) == set(EVENTS["spine_event"]["schema"]["$defs"]["Event"]["properties"])
