"""The hostile-input suite's harness: a service, an attacker, a canary, and the raw store.

``harness`` is a fresh lab service on the memory backend (under Litestar's TestClient) with:

* the attacker: tenant ``t_hostile``, user ``u_hostile``, roles owner+admin+member, *not*
  system — a tenant admin, the most a tenant can be;
* the canary: tenant ``t_canary``, which keeps posting chat messages and writing blackboard
  entries between attacks (:meth:`Harness.canary_round`) and must never notice anything;
* :meth:`Harness.snapshot` — every item of every memory store the service uses, read from
  the stores themselves (not through the API), so "nothing was written" means nothing;
* :meth:`Harness.judge` — the verdict on one attack: no 5xx, the error envelope on every 4xx,
  a 4xx where the attack must be refused, no write outside the attacker's tenant, and no write
  at all on a refusal except the refusal's own audit trail.

The fixtures here have their own names (``harness``, ``hostile_settings``), so other test
files in this folder keep the root fixtures (``app``, ``client``, ``token``...) unchanged.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from northstar_adapters.config import Settings
from northstar_core.identity import RequestContext
from northstar_core.safety.actions import ActionOutcome, ActionRequest
from northstar_http.bootstrap import create_app
from northstar_http.tokens import mint_token
from tests import conftest as root

ATTACKER: Final = "t_hostile"
ATTACKER_USER: Final = "u_hostile"
ATTACKER_ROLES: Final = ("owner", "admin", "member")
CANARY: Final = "t_canary"
CANARY_USER: Final = "u_canary"
ECHO_ACTION: Final = "hostile_echo"
# A connection tenant admins may route their own tenant to (when the configuration has them).
SPARE_CONNECTION: Final = "tenant_spare"
REGISTRY_TABLE: Final = "routing_registry"
CODE: Final = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
# What a refusal may leave behind: its audit trail on the spine and the subject's stream.
TRAIL_EVENT_TYPES: Final = frozenset({"audit", "safety"})
TRAIL_STREAM_TYPES: Final = frozenset({"safety_decision"})


def _memory_names(settings: Settings) -> set[str]:
    names = set()
    for params in (getattr(settings, "connections", None) or {}).values():
        if isinstance(params, Mapping) and params.get("backend") == "memory":
            names.add(str(params.get("name", "default")))
    registry = getattr(settings, "registry", None)
    old_params = getattr(registry, "params", None)  # the configuration before connections
    if isinstance(old_params, Mapping) and "name" in old_params:
        names.add(str(old_params["name"]))
    return names


@dataclass(frozen=True)
class Change:
    table: str
    partition: str
    key: str
    before: Any  # Item | None
    after: Any  # Item | None

    def owner(self) -> str | None:
        """The tenant an item belongs to (None: deployment-wide)."""
        if self.table == REGISTRY_TABLE or self.partition == REGISTRY_TABLE:
            tail = self.key.rsplit("#", 1)[-1]
            return None if tail == "*" else tail
        head = self.partition.split("|", 1)[0]
        return head if "|" in self.partition else None

    def is_refusal_trail(self) -> bool:
        """A new audit/safety record: what a refusal is allowed (and meant) to write."""
        if self.before is not None or self.after is None:
            return False
        # the spine's bookkeeping for the audit event: its hour in the directory of buckets, its
        # run's start in the run registry
        parts = self.partition.split("|")
        if parts[2:4] == ["spine", "buckets"] and self.key.startswith("b#"):
            return True
        if parts[2:4] == ["spine", "runs"] and self.key.startswith("r#"):
            return True
        try:
            value = json.loads(self.after.value)
        except ValueError:
            return False
        if not isinstance(value, dict):
            return False
        return value.get("event_type") in TRAIL_EVENT_TYPES or value.get("type") in TRAIL_STREAM_TYPES

    def __str__(self) -> str:
        what = "added" if self.before is None else "deleted" if self.after is None else "changed"
        return f"{what} {self.table}:{self.partition!r}:{self.key!r}"


Snapshot = dict[tuple[str, str, str], Any]


class Harness:
    """One service under attack (see module doc)."""

    def __init__(self, app: Litestar, client: TestClient[Litestar], settings: Settings) -> None:
        self.app = app
        self.client = client
        self.settings = settings
        self._store_names = _memory_names(settings)
        self._canary_n = itertools.count(1)

    # --- tokens and requests ---

    def token(
        self,
        tenant: str = ATTACKER,
        sub: str = ATTACKER_USER,
        roles: Iterable[str] = ATTACKER_ROLES,
        **kw: Any,
    ) -> str:
        return mint_token(root.JWT_SECRET, tenant_id=tenant, sub=sub, roles=tuple(roles), mode="lab", **kw)

    def call(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        params: Iterable[tuple[str, str]] = (),
        content: bytes | None = None,
        json_body: Any = None,
    ) -> httpx.Response:
        """One request; ``token`` None means the attacker's (pass "" for none at all)."""
        token = self.token() if token is None else token
        all_headers = [("Content-Type", "application/json"), *headers]
        if token:
            all_headers.append(("Authorization", f"Bearer {token}"))
        if json_body is not None:
            content = json.dumps(json_body).encode()
        return self.client.request(method, url, headers=all_headers, params=list(params), content=content)

    def ok(self, method: str, url: str, **kw: Any) -> dict[str, Any]:
        """A request that must succeed (setup steps); its JSON body."""
        r = self.call(method, url, **kw)
        assert r.status_code < 300, f"setup {method} {url}: {r.status_code} {r.text[:300]}"
        return r.json() if r.content else {}

    # --- the raw store ---

    def _stores(self) -> dict[Any, Any]:
        from northstar_adapters.memory import _SHARED

        def name_of(key: Any) -> str:
            return str(key[0] if isinstance(key, tuple) else key)

        mine = {k: s for k, s in _SHARED.items() if name_of(k) in self._store_names}
        return mine or dict(_SHARED)

    def snapshot(self) -> Snapshot:
        """Every item of the service's memory stores (items are immutable: no copies needed)."""
        out: Snapshot = {}
        for store_key, store in self._stores().items():
            table = str(store_key[1] if isinstance(store_key, tuple) else store_key)
            for partition, (_, items) in store._parts.items():
                for key, item in items.items():
                    out[(table, partition, key)] = item
        return out

    @staticmethod
    def changes(before: Snapshot, after: Snapshot) -> list[Change]:
        out = []
        for address in before.keys() | after.keys():
            old, new = before.get(address), after.get(address)
            if old != new:
                out.append(Change(*address, old, new))
        return sorted(out, key=str)

    # --- the canary ---

    def canary_round(self) -> None:
        """The canary tenant writes and reads back a chat message and a blackboard entry."""
        n = next(self._canary_n)
        token = self.token(CANARY, CANARY_USER, ("member",))
        content = f"canary {n} {uuid.uuid4().hex[:8]}"
        r = self.call(
            "POST",
            "/chat/threads/canary/messages",
            token=token,
            json_body={"role": "user", "content": content, "idempotency_key": f"canary-{n}"},
        )
        assert r.status_code == 201, f"canary chat post: {r.status_code} {r.text[:300]}"
        r = self.call("GET", "/chat/threads/canary/snapshot", token=token, params=[("last", "1")])
        assert r.status_code == 200, f"canary chat read: {r.status_code} {r.text[:300]}"
        assert [m["content"] for m in r.json()["messages"]] == [content]
        url = f"/blackboard/canary/entries/k{n}"
        r = self.call("PUT", url, token=token, json_body={"value": {"n": n}})
        assert r.status_code == 201, f"canary blackboard put: {r.status_code} {r.text[:300]}"
        r = self.call("GET", url, token=token)
        assert r.status_code == 200 and r.json()["value"] == {"n": n}, (
            f"canary blackboard read: {r.text[:300]}"
        )

    # --- the verdict ---

    def judge(
        self, response: httpx.Response, before: Snapshot, after: Snapshot, *, must_refuse: bool
    ) -> list[str]:
        """What is wrong with the service's answer to one attack (empty: nothing)."""
        problems = []
        status = response.status_code
        code = None
        if status >= 400:
            try:
                error = response.json()["error"]
                code = error["code"]
                if not (isinstance(code, str) and CODE.match(code) and error["http_status"] == status):
                    problems.append(f"malformed envelope {response.text[:200]}")
            except (ValueError, KeyError, TypeError):
                problems.append(f"no error envelope: {response.text[:200]!r}")
        if status >= 500:
            problems.append(f"{status} {code}")
        elif must_refuse and status < 400:
            problems.append(f"accepted ({status}), must be refused")
        changes = self.changes(before, after)
        foreign = [c for c in changes if c.owner() != ATTACKER]
        if foreign:
            problems.append(
                f"wrote outside the attacker's tenant ({status}): {', '.join(map(str, foreign[:5]))}"
            )
        if 400 <= status < 500:
            written = [c for c in changes if not c.is_refusal_trail()]
            if written:
                problems.append(f"refused ({status} {code}) but wrote: {', '.join(map(str, written[:5]))}")
        return problems


def hostile_settings_for(tmp_path: Any) -> Settings:
    """Lab settings on a private memory store, plus a spare memory connection open to tenant
    overrides (so a tenant admin's route change can succeed and be attacked)."""
    if "connections" not in Settings.__struct_fields__:
        return root.make_settings(tmp_path)
    name = f"hostile-{uuid.uuid4().hex}"
    return root.make_settings(
        tmp_path,
        connections={
            "mem": {"backend": "memory", "name": name},
            SPARE_CONNECTION: {"backend": "memory", "name": f"{name}-spare", "tenant_overrides": True},
        },
    )


@pytest.fixture
def hostile_settings(tmp_path: Any) -> Settings:
    return hostile_settings_for(tmp_path)


async def _echo(ctx: RequestContext, request: ActionRequest) -> ActionOutcome:
    return ActionOutcome(result={"echo": request.action_name}, cost=0.0)


@pytest.fixture
def harness(hostile_settings: Settings) -> Iterator[Harness]:
    app = create_app(hostile_settings)
    with TestClient(app=app, raise_server_exceptions=False) as client:
        app.state.engines.actions.register(ECHO_ACTION, _echo)
        yield Harness(app, client, app.state.settings)
