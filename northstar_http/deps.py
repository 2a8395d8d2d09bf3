"""Dependencies every handler may declare: ``ctx`` (the caller) and ``engines`` (the core)."""

from __future__ import annotations

from typing import Final, TypeAlias

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from northstar_core.engines import Engines
from northstar_core.identity import RequestContext
from northstar_http.auth import provide_ctx

# Annotate handler parameters with these (Litestar's explicit dependency style):
#     async def handler(ctx: Ctx, engines: Eng, thread_id: FromPath[str]) -> ...
Ctx: TypeAlias = NamedDependency[RequestContext]
Eng: TypeAlias = NamedDependency[Engines]


def provide_engines(state: State) -> Engines:
    engines: Engines = state.engines
    return engines


async def provide_ctx_after_engines(
    request: Request, state: State, engines: Eng  # type: ignore[type-arg]
) -> RequestContext:
    # Declaring ``engines`` makes Litestar resolve the two dependencies one after the other;
    # side by side it would spawn an anyio task group per request (a fifth of a cheap
    # request's CPU, benchmark P1).
    return await provide_ctx(request, state)


DEPENDENCIES: Final = {
    "ctx": Provide(provide_ctx_after_engines),
    "engines": Provide(provide_engines, sync_to_thread=False),
}
