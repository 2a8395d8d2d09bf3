"""``GET /users/me/data``: a user exports their own data — only theirs, only in their tenant —
and at most once per interval."""

from __future__ import annotations

import json
from typing import Any

from litestar.testing import AsyncTestClient

from northstar_http.bootstrap import create_app
from tests.conftest import make_settings


def _lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


async def test_a_user_exports_their_own_data_once_per_interval(tmp_path: Any, auth: Any) -> None:
    app = create_app(make_settings(tmp_path, http={"user_export_interval_seconds": 120}))
    async with AsyncTestClient(app=app) as client:
        alice, bob = auth("t_alpha", "u_alice"), auth("t_alpha", "u_bob")
        alice_elsewhere = auth("t_beta", "u_alice")
        for headers, text in ((alice, "alice-note"), (bob, "bob-note"), (alice_elsewhere, "beta-note")):
            r = await client.post("/notes", json={"title": text, "surface_id": "s1"}, headers=headers)
            assert r.status_code == 201, r.text
            message = {"role": "user", "content": f"{text}-msg"}
            r = await client.post("/chat/threads/th/messages", json=message, headers=headers)
            assert r.status_code == 201, r.text

        r = await client.get("/users/me/data", headers=alice)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = _lines(r.content)
        assert lines[0] == {
            "t": "header", "format": "northstar.user_data", "version": 1, "tenant_id": "t_alpha",
            "user_id": "u_alice",
        }
        assert lines[-1] == {"t": "end", "items": len(lines) - 2}
        text = r.text
        assert "alice-note" in text and "alice-note-msg" in text
        # nobody else's data, not even the same user id in another tenant
        assert "bob-note" not in text and "beta-note" not in text
        kinds = {line["t"] for line in lines[1:-1]}
        assert {"note", "chat_message"} <= kinds

        again = await client.get("/users/me/data", headers=alice)
        assert again.status_code == 429, again.text
        error = again.json()["error"]
        assert error["code"] == "user_data.export_rate_limited"
        assert 0 < int(again.headers["retry-after"]) <= 120
        # the allowance is per user and per tenant
        assert (await client.get("/users/me/data", headers=bob)).status_code == 200
        other = await client.get("/users/me/data", headers=alice_elsewhere)
        assert other.status_code == 200 and "beta-note" in other.text and "alice-note" not in other.text
