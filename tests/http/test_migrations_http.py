"""``GET /system/migrations``: what a migration did, for system tokens only; the kinds keep
answering the same over HTTP across the move (cursors included)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar.testing import AsyncTestClient

from northstar_http.bootstrap import create_app
from tests.conftest import make_settings


async def test_a_migration_is_reported_to_the_system_and_invisible_to_clients(
    tmp_path: Any, auth: Any
) -> None:
    settings = make_settings(
        tmp_path,
        connections={
            "mem": {"backend": "memory", "name": f"a-{uuid.uuid4().hex}"},
            "other": {"backend": "memory", "name": f"b-{uuid.uuid4().hex}"},
        },
        registry={"connection": "mem", "refresh_seconds": 0.0, "max_view_seconds": 0.2},
    )
    app = create_app(settings)
    async with AsyncTestClient(app=app) as client:
        member, system = auth("t_alpha"), auth("t_alpha", system=True)
        for i in range(3):
            r = await client.post("/chat/threads/th/messages", json={"role": "user", "content": f"m{i}"},
                                  headers=member)
            assert r.status_code == 201, r.text
        before = await client.get("/chat/threads/th/messages", params={"limit": 2}, headers=member)
        cursor = before.json()["next_cursor"]
        assert (await client.get("/system/migrations", headers=system)).json() == {"migrations": []}

        migrations = app.state.engines.migrations
        started = await migrations.start(
            ["chat_store"], "other", tenant_id="t_alpha", fence_seconds=0.05, settle_seconds=0.05
        )
        await migrations.run(started.id)

        r = await client.get("/system/migrations", headers=system)
        assert r.status_code == 200, r.text
        [entry] = r.json()["migrations"]
        assert entry["id"] == "chat_store@t_alpha" and entry["active"] is True
        assert (entry["phase"], entry["state"]) == ("switched", "switched")
        assert entry["source"] == {"connection": "mem", "table": "chat_store"}
        assert entry["target"] == {"connection": "other", "table": "chat_store"}
        assert entry["copied_items"] >= 3 and entry["verified_items"] >= 3 and entry["mismatched"] == 0
        assert entry["steps"][0][0] == "started: writes are journaled"

        denied = await client.get("/system/migrations", headers=member)
        assert (denied.status_code, denied.json()["error"]["code"]) == (403, "auth.system_required")

        # the same messages, and a cursor from before the move continues where it was
        after = await client.get("/chat/threads/th/messages", params={"cursor": cursor}, headers=member)
        assert [m["content"] for m in after.json()["items"]] == ["m2"]
        r = await client.post("/chat/threads/th/messages", json={"role": "user", "content": "m3"},
                              headers=member)
        assert r.json()["seq"] == 4

        await migrations.release(started.id)
        [entry] = (await client.get("/system/migrations", headers=system)).json()["migrations"]
        assert (entry["active"], entry["state"]) == (False, "released") and entry["deleted_items"] >= 3
        r = await client.get("/chat/threads/th/messages", headers=member)
        assert [m["content"] for m in r.json()["items"]] == ["m0", "m1", "m2", "m3"]
