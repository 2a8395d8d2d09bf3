"""Helpers for end-to-end tests on the cloud emulators: routes, config files, SSE reading.

A :class:`CloudTarget` is one fresh namespace on one emulator (a table prefix on moto, a project
on the Firestore emulator, a database on the Cosmos launcher) with route params that send every
resource kind — and the routing registry's own store — there. ``cloud_target(backend, request)``
starts the emulator through its session fixture (lazily: only the backends a run selects start)
and ``cleanup()`` drops the namespace afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from northstar_adapters import AdapterFactory
from northstar_adapters.compose import REGISTRY_KIND
from northstar_core.routing import RESOURCE_KINDS, Route, Target

CLOUD_BACKENDS = ("dynamodb", "firestore", "cosmos")
JWT_SECRET = "e2e-cloud-hs256-secret-0123456789abcdef"
CURSOR_SECRET = "e2e-cloud-cursor-secret-0123456789abcdef"
AUDIENCE = "northstar-e2e"  # required outside lab; tokens carry it

# The emulator fixtures, by backend: (module, fixture name). Imported by the test modules.
EMULATOR_FIXTURES = {
    "dynamodb": "dynamodb_endpoint",
    "firestore": "firestore_emulator",
    "cosmos": "cosmos_endpoint",
}


@dataclass
class CloudTarget:
    backend: str
    params: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)

    def routes(self) -> list[Route]:
        return [Route(resource_kind=k, connection="cloud") for k in RESOURCE_KINDS]

    def settings_dict(self, *, mode: str = "saas", tail_poll_seconds: float = 0.1) -> dict[str, Any]:
        """A complete non-lab configuration: one connection, every kind (and the registry) on it."""
        return {
            "mode": mode,
            "cursor_secret": CURSOR_SECRET,
            "tail_poll_seconds": tail_poll_seconds,
            "lab_route_all": False,
            "jwt": {"hs256_secret": JWT_SECRET, "audience": AUDIENCE},
            "http": {"sse_heartbeat_seconds": 0.5, "sse_retry_ms": 500},
            "connections": {"cloud": {"backend": self.backend, **self.params}},
            "registry": {"connection": "cloud", "refresh_seconds": 1.0},
            "routes": [{"resource_kind": r.resource_kind, "connection": r.connection} for r in self.routes()],
        }

    async def provision(self) -> None:
        """Create every kind's table/container in-process (what ``northstar provision`` does)."""
        factory = AdapterFactory()
        for kind in (*RESOURCE_KINDS, REGISTRY_KIND):
            await factory.provision(
                Target(resource_kind=kind, backend=self.backend, params=self.params), dry_run=False
            )

    async def cleanup(self) -> None:
        if self.backend == "dynamodb":
            from northstar_adapters.dynamodb import drop

            for kind in (*RESOURCE_KINDS, REGISTRY_KIND):
                await drop(Target(resource_kind=kind, backend="dynamodb", params=self.params))
        elif self.backend == "firestore":
            from tests.emulators.firestore import wipe

            await asyncio.to_thread(wipe, self.params["emulator_host"], self.params["project"])
            if self.params.get("index_file"):
                await asyncio.to_thread(Path(self.params["index_file"]).unlink, missing_ok=True)
        elif self.backend == "cosmos":
            from azure.cosmos import exceptions as cosmos_exc
            from azure.cosmos.aio import CosmosClient

            from tests.emulators.cosmos import EMULATOR_KEY

            async with CosmosClient(self.params["url"], credential=EMULATOR_KEY) as client:
                try:
                    await client.delete_database(self.params["database"])
                except cosmos_exc.CosmosResourceNotFoundError:
                    pass


def cloud_target(backend: str, request: pytest.FixtureRequest) -> CloudTarget:
    """A fresh namespace on ``backend``'s emulator (started on first use, for the session)."""
    endpoint = request.getfixturevalue(EMULATOR_FIXTURES[backend])
    tag = uuid.uuid4().hex[:10]
    if backend == "dynamodb":
        from tests.emulators.moto import TEST_ENV

        return CloudTarget(
            backend,
            {"endpoint_url": endpoint, "table_prefix": f"e{tag}_", "region": TEST_ENV["AWS_REGION"]},
            env=dict(TEST_ENV),
        )
    if backend == "firestore":
        # provision writes the deployable index file: into the temp dir, never over the repo's
        index_file = str(Path(tempfile.gettempdir()) / f"northstar-e2e-{tag}.indexes.json")
        return CloudTarget(
            backend, {"project": f"e2e-{tag}", "emulator_host": endpoint, "index_file": index_file}
        )
    if backend == "cosmos":
        from tests.emulators.cosmos import EMULATOR_KEY, KEY_ENV

        return CloudTarget(backend, {"url": endpoint, "database": f"e{tag}"}, env={KEY_ENV: EMULATOR_KEY})
    raise ValueError(backend)


# --- TOML (the project reads TOML; the standard library only parses it) ------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {type(value).__name__}")


def to_toml(data: dict[str, Any]) -> str:
    """Top-level scalars, sections for dicts of scalars/inline tables, arrays of tables."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    arrays: list[tuple[str, list[dict[str, Any]]]] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, table in tables:
        lines += ["", f"[{key}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    for key, items in arrays:
        for item in items:
            lines += ["", f"[[{key}]]"] + [
                f"{k} = {_toml_value(v)}" for k, v in item.items() if v is not None
            ]
    return "\n".join(lines) + "\n"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any NORTHSTAR_* override, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}
    env.update(extra)
    return env


# --- SSE ---------------------------------------------------------------------------------------


@dataclass
class SseMessage:
    event: str
    id: str
    data: Any


async def sse_messages(response: httpx.Response) -> AsyncIterator[SseMessage | None]:
    """Parsed events of an open SSE response; ``None`` for each comment (open, heartbeat)."""
    event, event_id, data = "message", "", []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield None
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif line == "":
            text = "\n".join(data).strip()
            if text:  # a comment-only message may still carry an empty data line
                yield SseMessage(event, event_id, json.loads(text))
            event, event_id, data = "message", "", []
