# ruff: noqa: F401 - the emulators' session fixtures are imported to be found by name
"""The service answers the same on every backend: sqlite (lab) vs each cloud emulator (saas).

One representative request script — chat post/replay/list/snapshot/SSE resume, canvas
commands/conflict/snapshot/replay/gesture/artifact, blackboard, notes, tabular, memory, events
append/replay/list, the timeline, analytics, budget, config, ``/actions/execute`` allow and
deny, routing diagnostics (every kind routed and reachable) and a few error envelopes — runs
against the service (``create_app``, what ``northstar serve`` runs, under uvicorn on a real
socket) routed entirely to sqlite in lab mode, and against the same service in ``saas`` mode
with every kind (and the registry) routed to one emulator. Responses are normalised (generated
ids, timestamps, cursors and request ids become stable placeholders in order of first
appearance, so references between responses still have to match; the mode and the backend's
name become placeholders) and must be identical, status codes included.

The service runs in-process (not as a subprocess) so that the test can register the action
handler the embedding application would register; the two-process path is covered by
``test_cross_process_cloud.py``.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from northstar_adapters.config import load_settings
from northstar_core.identity import RequestContext
from northstar_core.routing import RESOURCE_KINDS
from northstar_core.safety.actions import ActionOutcome, ActionRequest
from northstar_http.bootstrap import create_app
from northstar_http.tokens import mint_token
from tests.conftest import LiveServer
from tests.e2e.cloud import AUDIENCE, CLOUD_BACKENDS, CURSOR_SECRET, JWT_SECRET, cloud_target, sse_messages
from tests.emulators.cosmos import cosmos_endpoint, cosmos_server
from tests.emulators.firestore import firestore_emulator
from tests.emulators.moto import dynamodb_endpoint, moto_server

TENANT = "t_parity"
ACTION = "parity_echo"

# Values that legitimately differ between two runs: replaced by placeholders, consistently.
_VOLATILE_KEYS = frozenset(
    {
        "message_id",
        "event_id",
        "note_id",
        "record_id",
        "licence_id",
        "lock_id",
        "decision_id",
        "usage_id",
        "request_id",
        "trace_id",
        "span_id",
        "parent_event_id",
        "cursor",
        "etag",
    }
)
# Times differ between runs and may coincide within one: a constant, not an alias.
_TIME_KEYS = frozenset({"ts", "timestamp", "at", "period", "day"})
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MODE_KEYS = frozenset({"mode", "deployment_mode"})
_BACKEND_LABELS = ("sqlite", *CLOUD_BACKENDS)


class Normaliser:
    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}

    def alias(self, key: str, value: Any) -> Any:
        if value is None:
            return value
        text = str(value)
        if text not in self.aliases:
            self.aliases[text] = f"<{key}#{len(self.aliases)}>"
        return self.aliases[text]

    def __call__(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict) and "shard" in value and "seq" in value:
            # a budget usage entry: which ledger shard it landed in (a hash of a key holding a
            # fresh id, or chance) and so its sequence and running totals there differ from run
            # to run; the same entry gets the same placeholder wherever it appears
            value = dict(value)
            position = f"{value.pop('shard')}:{value.pop('seq')}"
            value.pop("month_totals", None)
            value.pop("day_totals", None)
            value["ledger_position"] = self.alias("ledger_position", position)
        if isinstance(value, dict):
            return {k: self(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v, key) for v in value]
        if key in _MODE_KEYS and isinstance(value, str):
            return "<mode>"
        if key == "connection" and isinstance(value, str):
            return "<connection>"  # each deployment names its own connections
        if value is not None and (key in _TIME_KEYS or key.endswith("_at")):
            return "<time>"
        volatile = key in _VOLATILE_KEYS or key.endswith(("_cursor", "_event_id"))
        if volatile:
            return self.alias(key, value)
        if isinstance(value, str):
            if value in self.aliases:
                return self.aliases[value]
            value = _UUID.sub(
                lambda m: self.alias("uuid", m.group()), value.replace("sqlite (lab)", "sqlite")
            )
            for label in _BACKEND_LABELS:
                value = re.sub(rf"\b{label}\b", "<backend>", value)
        return value


class Transcript:
    """Runs requests, keeps each (label, status, normalised body); returns the raw JSON."""

    def __init__(self, http: httpx.AsyncClient, member: dict[str, str], admin: dict[str, str]) -> None:
        self.http = http
        self.member = member
        self.admin = admin
        self.normalise = Normaliser()
        self.steps: list[tuple[str, int, Any]] = []

    async def __call__(
        self,
        label: str,
        method: str,
        path: str,
        *,
        admin: bool = False,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> Any:
        all_headers = {**(self.admin if admin else self.member), **(headers or {})}
        r = await self.http.request(method, path, headers=all_headers, **kw)
        body = r.json() if r.content else None
        self.steps.append((label, r.status_code, self.normalise(body)))
        return body

    async def sse(self, label: str, path: str, count: int, *, want: str) -> None:
        async def read() -> list[Any]:
            out: list[Any] = []
            async with self.http.stream("GET", path, headers=self.member) as live:
                assert live.status_code == 200, await live.aread()
                events = sse_messages(live)
                async for message in events:
                    if message is not None and message.event == want:
                        out.append({"event": message.event, "id": message.id, "data": message.data})
                        if len(out) == count:
                            break
                await events.aclose()
            return out

        events = await asyncio.wait_for(read(), 30)
        self.steps.append((label, 200, self.normalise(events)))


async def _script(t: Transcript) -> None:
    # --- chat ---
    posted = []
    for i in (1, 2, 3):
        posted.append(
            await t(
                f"chat post {i}",
                "POST",
                "/chat/threads/th1/messages",
                json={"role": "user", "content": f"hello {i}", "idempotency_key": f"k{i}"},
            )
        )
    await t(
        "chat post replay",
        "POST",
        "/chat/threads/th1/messages",
        json={"role": "user", "content": "hello 1", "idempotency_key": "k1"},
    )
    await t(
        "chat idempotency mismatch",
        "POST",
        "/chat/threads/th1/messages",
        json={"role": "user", "content": "other", "idempotency_key": "k1"},
    )
    await t("chat list", "GET", "/chat/threads/th1/messages")
    await t(
        "chat list after cursor",
        "GET",
        "/chat/threads/th1/messages",
        params={"cursor": posted[0]["cursor"], "limit": 1},
    )
    await t("chat snapshot", "GET", "/chat/threads/th1/snapshot")
    await t("chat threads", "GET", "/chat/threads")
    await t.sse("chat sse resume", f"/sse/chat/th1?cursor={posted[0]['cursor']}", 2, want="message")
    tampered = posted[0]["cursor"][:-2] + ("AA" if not posted[0]["cursor"].endswith("AA") else "BB")
    await t("chat tampered cursor", "GET", "/chat/threads/th1/messages", params={"cursor": tampered})

    # --- canvas ---
    create = {"op": "create", "atom_id": "a1", "kind": "box", "props": {"w": 1}}
    await t(
        "canvas commit 1",
        "POST",
        "/canvas/cv1/commands",
        json={"base_rev": 0, "ops": [create], "idempotency_key": "c1"},
    )
    await t(
        "canvas commit 2",
        "POST",
        "/canvas/cv1/commands",
        json={
            "base_rev": 1,
            "ops": [{"op": "update", "atom_id": "a1", "patch": {"w": 2}}],
            "idempotency_key": "c2",
        },
    )
    await t(
        "canvas conflict",
        "POST",
        "/canvas/cv1/commands",
        json={"base_rev": 1, "ops": [{"op": "delete", "atom_id": "a1"}], "idempotency_key": "c3"},
    )
    await t(
        "canvas op invalid",
        "POST",
        "/canvas/cv1/commands",
        json={"base_rev": 2, "ops": [{"op": "delete", "atom_id": "nope"}], "idempotency_key": "c4"},
    )
    await t(
        "canvas replayed commit",
        "POST",
        "/canvas/cv1/commands",
        json={"base_rev": 0, "ops": [create], "idempotency_key": "c1"},
    )
    await t("canvas snapshot", "GET", "/canvas/cv1/snapshot")
    await t("canvas gesture", "POST", "/canvas/cv1/gestures", json={"gesture": "pointer", "data": {"x": 1}})
    replay = await t("canvas replay", "GET", "/canvas/cv1/replay")
    first = next(e for e in replay["items"] if e["type"] == "op_committed")
    await t.sse("canvas sse resume", f"/sse/canvas/cv1?cursor={first['event_id']}", 1, want="op_committed")
    await t(
        "canvas artifact",
        "POST",
        "/canvas/cv1/artifacts",
        json={"kind": "image", "body": "hello", "idempotency_key": "a1"},
    )
    await t("canvas artifacts", "GET", "/canvas/cv1/artifacts")

    # --- blackboard ---
    bb = "/blackboard/run1/entries"
    await t("blackboard create", "PUT", f"{bb}/plan", json={"value": {"steps": [1, 2]}})
    await t("blackboard create again", "PUT", f"{bb}/plan", json={"value": {"steps": [9]}})
    await t(
        "blackboard cas", "PUT", f"{bb}/plan", json={"value": {"steps": [3]}}, headers={"If-Match": '"1"'}
    )
    await t("blackboard stale", "PUT", f"{bb}/plan", json={"value": 0, "expected_version": 1})
    await t("blackboard get", "GET", f"{bb}/plan")
    await t("blackboard missing", "GET", f"{bb}/nope")
    await t("blackboard list", "GET", bb)

    # --- notes ---
    note = await t(
        "note create", "POST", "/notes", json={"title": "a note", "surface_id": "chat", "tags": ["x"]}
    )
    url = f"/notes/{note['note_id']}"
    await t("note update", "PUT", url, json={"title": "v2", "expected_version": 1})
    await t("note stale update", "PUT", url, json={"title": "lost", "expected_version": 1})
    await t("note get", "GET", url)
    await t("notes list", "GET", "/notes", params={"surface_id": "chat"})

    # --- tabular ---
    scoped = {"X-Project-Id": "proj", "X-Surface-Id": "builder"}
    await t("tabular create", "PUT", "/tabular/flows/f1", json={"json_blob": {"v": 1}}, headers=scoped)
    await t(
        "tabular update",
        "PUT",
        "/tabular/flows/f1",
        json={"json_blob": {"v": 2}},
        headers={**scoped, "If-Match": '"1"'},
    )
    await t("tabular get v1", "GET", "/tabular/flows/f1", params={"version": 1}, headers=scoped)
    await t("tabular versions", "GET", "/tabular/flows/f1/versions", headers=scoped)
    await t("tabular list", "GET", "/tabular/flows", headers=scoped)

    # --- memory ---
    await t(
        "memory set", "POST", "/memory", json={"session_id": "s1", "key": "name", "value": {"first": "Ada"}}
    )
    await t("memory set 2", "POST", "/memory", json={"session_id": "s1", "key": "lang", "value": "en"})
    await t("memory get one", "GET", "/memory", params={"session_id": "s1", "key": "name"})
    await t("memory delete", "DELETE", "/memory", params={"session_id": "s1", "key": "lang"})
    await t("memory get all", "GET", "/memory", params={"session_id": "s1"})

    # --- events, timeline, analytics, budget, config ---
    run = {"X-Run-Id": "run7", "X-Step-Id": "st1"}
    for i in (1, 2):
        await t(
            f"events append {i}",
            "POST",
            "/events/append",
            json={"event_type": "rl", "source": "agent", "payload": {"i": i}},
            headers=run,
        )
    await t("events bad", "POST", "/events/append", json={"event_type": "rl"}, headers=run)
    await t("events replay", "GET", "/events/replay", params={"run_id": "run7"})
    await t("events list", "GET", "/events/list", params={"event_type": "rl"})
    await t(
        "timeline append", "POST", "/realtime/timeline/tl1/append", json={"type": "note", "data": {"i": 1}}
    )
    await t("timeline list", "GET", "/realtime/timeline/tl1/list")
    await t(
        "analytics",
        "POST",
        "/analytics/events",
        json={"kind": "page_view", "page": "/pricing"},
        headers={"X-Surface-Id": "chat"},
    )
    await t("budget usage", "POST", "/budget/usage", json={"amount": 2, "idempotency_key": "u1"})
    await t("budget totals", "GET", "/budget/usage")
    await t("config put", "PUT", "/config/tenant", json={"values": {"a": 1}}, admin=True)
    await t("config get", "GET", "/config/tenant")

    # --- the gate chain ---
    action = {
        "action_name": ACTION,
        "subject_type": "agent",
        "subject_id": "a1",
        "params": {"to": "x"},
        "estimated_cost": 1.5,
    }
    await t("action allowed", "POST", "/actions/execute", json=action)
    await t(
        "kill switch", "PUT", "/kill-switches", json={"actions": [ACTION], "expected_version": 0}, admin=True
    )
    await t("action denied", "POST", "/actions/execute", json=action)
    await t("safety events", "GET", "/events/list", params={"event_type": "safety"})

    # --- routing ---
    diagnostics = await t("routing diagnostics", "GET", "/routing/diagnostics", admin=True)
    assert diagnostics["unrouted"] == [] and diagnostics["unreachable"] == [], diagnostics
    assert sorted(diagnostics["kinds"]) == sorted(RESOURCE_KINDS)
    await t("readyz", "GET", "/readyz")


async def _run(settings_overrides: dict[str, Any], mode: str) -> list[tuple[str, int, Any]]:
    settings = load_settings(environ={}, overrides=settings_overrides, config_file=None)
    server = LiveServer(create_app(settings))
    await server.start()
    try:

        async def echo(ctx: RequestContext, request: ActionRequest) -> ActionOutcome:
            return ActionOutcome(result={"sent": request.params["to"]}, cost=1.25)

        server.app.state.engines.actions.register(ACTION, echo)

        def bearer(*roles: str) -> dict[str, str]:
            token = mint_token(
                JWT_SECRET, audience=AUDIENCE, tenant_id=TENANT, sub="u_parity", mode=mode, roles=roles
            )
            return {"Authorization": f"Bearer {token}"}

        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            transcript = Transcript(http, bearer("member"), bearer("member", "admin"))
            await _script(transcript)
        return transcript.steps
    finally:
        await server.stop()


_BASELINE: dict[str, list[tuple[str, int, Any]]] = {}


async def _sqlite_baseline(tmp_path: Path) -> list[tuple[str, int, Any]]:
    if "sqlite" not in _BASELINE:
        _BASELINE["sqlite"] = await _run(
            {
                "mode": "lab",
                "data_dir": str(tmp_path / "lab"),
                "cursor_secret": CURSOR_SECRET,
                "tail_poll_seconds": 0.1,
                "jwt": {"hs256_secret": JWT_SECRET, "audience": AUDIENCE},
                "http": {"sse_heartbeat_seconds": 0.5, "sse_retry_ms": 500},
            },
            "lab",
        )
    return _BASELINE["sqlite"]


def test_the_script_itself_succeeds_where_it_should(tmp_path: Path) -> None:
    steps = asyncio.run(_sqlite_baseline(tmp_path))
    statuses = {label: status for label, status, _ in steps}
    expected_errors = {
        "chat idempotency mismatch": 422,
        "chat tampered cursor": 410,
        "canvas conflict": 409,
        "canvas op invalid": 422,
        "blackboard create again": 409,
        "blackboard stale": 409,
        "blackboard missing": 404,
        "note stale update": 409,
        "events bad": 422,
        "action denied": 403,
    }
    for label, status in statuses.items():
        if label in expected_errors:
            assert status == expected_errors[label], (label, status)
        else:
            assert status < 300, (label, status, dict((s[0], s[2]) for s in steps)[label])


@pytest.mark.parametrize("backend", CLOUD_BACKENDS)
async def test_a_cloud_routed_service_answers_exactly_as_the_sqlite_one(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    baseline = await _sqlite_baseline(tmp_path)
    target = cloud_target(backend, request)
    try:
        await target.provision()
        steps = await _run(target.settings_dict(mode="saas"), "saas")
    finally:
        await target.cleanup()
    assert [s[0] for s in steps] == [s[0] for s in baseline]
    differences = [
        f"{label}: {where}: sqlite {expected!r} != {backend} {got!r}"
        for (label, status, body), (_, b_status, b_body) in zip(steps, baseline, strict=True)
        for where, expected, got in _diff(
            {"status": b_status, "body": b_body}, {"status": status, "body": body}
        )
    ]
    assert not differences, "\n".join(differences)


def _diff(a: Any, b: Any, where: str = "") -> list[tuple[str, Any, Any]]:
    """The paths where two JSON values differ (with both values)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(a.keys() | b.keys())
            for d in _diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{where}.{k}")
        ]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{where}[{i}]")]
    return [] if a == b else [(where, a, b)]
