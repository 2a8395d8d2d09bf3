"""``/memory``: session memory (``memory_store``): set, get one or all, delete."""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from litestar import delete, get, post
from litestar.params import JSONBody, QueryParameter

from northstar_core.memory import MemoryValue
from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import error_responses

SessionId = Annotated[str, QueryParameter(name="session_id")]
Key = Annotated[str | None, QueryParameter(name="key", required=False)]


class MemorySet(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Set ``key`` of ``session_id``; ``ttl_seconds`` overrides the route's default TTL."""

    session_id: str
    key: str
    value: Any
    ttl_seconds: float | None = None


class SessionValues(msgspec.Struct, kw_only=True):
    session_id: str
    items: list[MemoryValue]


class Deleted(msgspec.Struct, kw_only=True):
    session_id: str
    key: str | None
    deleted: int


@post(
    "/memory",
    tags=["memory"],
    status_code=200,
    summary="Set a session-memory value",
    responses=error_responses(409),
)
async def set_value(ctx: Ctx, engines: Eng, data: JSONBody[MemorySet]) -> MemoryValue:
    return await engines.memory.set(ctx, data.session_id, data.key, data.value, ttl_seconds=data.ttl_seconds)


@get(
    "/memory",
    tags=["memory"],
    summary="Get one value (key) or every value of a session",
    responses=error_responses(404),
)
async def get_values(
    ctx: Ctx,
    engines: Eng,
    session_id: SessionId,
    key: Key = None,
) -> MemoryValue | SessionValues:
    if key is not None:
        return await engines.memory.get(ctx, session_id, key)
    return SessionValues(session_id=session_id, items=await engines.memory.get_all(ctx, session_id))


@delete(
    "/memory",
    tags=["memory"],
    status_code=200,
    summary="Delete one value (key) or every value of a session",
    responses=error_responses(404),
)
async def delete_values(
    ctx: Ctx,
    engines: Eng,
    session_id: SessionId,
    key: Key = None,
) -> Deleted:
    count = await engines.memory.delete(ctx, session_id, key)
    return Deleted(session_id=session_id, key=key, deleted=count)


ROUTES: Final[list[Any]] = [set_value, get_values, delete_values]
