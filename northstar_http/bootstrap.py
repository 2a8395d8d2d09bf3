"""The composition root: configuration → routing registry → Engines → app. The only one.

``create_app(settings)`` is what ``northstar serve`` (uvicorn) and the tests run. Engines are
built on startup inside the server's event loop (store clients bind to the loop that opened
them); tests may pass ready ``engines`` instead.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar

from northstar_adapters import AdapterFactory
from northstar_core.clock import SystemClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines, EngineSettings
from northstar_core.errors import NorthstarError
from northstar_core.identity import ServerBinding
from northstar_core.routing import LAB_ONLY_BACKENDS, RoutingError, RoutingRegistry, Target
from northstar_http.app import build_app
from northstar_http.auth import TokenVerifier
from northstar_http.config import Settings, connections, finalize

log = logging.getLogger("northstar")

REGISTRY_KIND = "routing_registry"


def registry_target(settings: Settings) -> Target:
    """Where the routing table itself lives: the registry's connection and table."""
    assert settings.registry is not None
    connection = connections(settings)[settings.registry.connection]
    return Target(
        resource_kind=REGISTRY_KIND,
        backend=connection.backend,
        params=dict(connection.params),
        table=settings.registry.table,
    )


async def build_registry(settings: Settings) -> RoutingRegistry:
    """Open the bootstrap store, load the durable routes, seed configured ones that are absent,
    and refuse (``RoutingError``, listing every problem) what this deployment may not run."""
    assert settings.registry is not None
    problems: list[str] = []
    target = registry_target(settings)
    if target.backend in LAB_ONLY_BACKENDS and not settings.is_lab:
        problems.append(f"the routing registry's own store is on lab-only backend '{target.backend}'")
    factory = AdapterFactory()
    store = factory.open(target)
    registry = RoutingRegistry(
        store,
        factory,
        connections=connections(settings),
        deployment_mode=settings.mode,
        refresh_seconds=settings.registry.refresh_seconds,
    )
    await registry.load()
    present = {(r.resource_kind, r.tenant_id) for r, _ in registry.routes()}
    raced = False
    for route in settings.routes:
        if (route.resource_kind, route.tenant_id) not in present:
            try:
                await registry.set_route(route, probe=False)
            except NorthstarError as exc:
                if exc.code == "routing.version_conflict":
                    # Another replica booting at the same time seeded it first: the durable
                    # route wins, exactly as if it had been there when we loaded.
                    raced = True
                    continue
                problems.append(f"configured route for {route.resource_kind}: {exc.message}")
    if raced:
        await registry.load()
    try:
        registry.check_startup()
    except RoutingError as exc:
        problems.append(str(exc).split(": ", 1)[-1])
    if problems:
        await registry.close()
        await store.close()
        raise RoutingError(f"refusing to start in mode '{settings.mode}': " + "; ".join(problems))
    return registry


async def build_engines(settings: Settings) -> Engines:
    registry = await build_registry(settings)
    assert settings.cursor_secret is not None
    return Engines(
        registry,
        CursorCodec(settings.cursor_secret.encode()),
        SystemClock(),
        EngineSettings(tail_poll_interval=settings.tail_poll_seconds),
    )


def build_verifier(settings: Settings) -> TokenVerifier:
    j = settings.jwt
    common: dict[str, Any] = {
        "hs256_secret": j.hs256_secret,
        "jwks_url": j.jwks_url,
        "audience": j.audience,
        "issuer": j.issuer,
        "leeway": j.leeway_seconds,
    }
    if j.jwks_file:
        return TokenVerifier.from_jwks_file(j.jwks_file, **common)
    return TokenVerifier(**common)


def server_binding(settings: Settings) -> ServerBinding:
    # A lab deployment holds lab data only: tokens claiming another mode are refused.
    return ServerBinding(tenant_id=settings.bind_tenant_id, mode="lab" if settings.is_lab else None)


def lab_banner(engines: Engines) -> str | None:
    registry = engines.registry
    labs = sorted(
        {registry.label_of(r) for r, _ in registry.routes() if registry.backend_of(r) in LAB_ONLY_BACKENDS}
    )
    if not labs:
        return None
    return (
        "*** LAB MODE: data is served by " + ", ".join(labs)
        + " — not for production; responses carry X-Northstar-Backend ***"
    )


def create_app(settings: Settings, *, engines: Engines | None = None) -> Litestar:
    """The service for ``settings`` (lab defaults are filled here)."""
    settings = finalize(settings)
    state: dict[str, Any] = {
        "settings": settings,
        "verifier": build_verifier(settings),
        "binding": server_binding(settings),
        "engines": engines,
        "owns_engines": engines is None,
    }

    async def start(app: Litestar) -> None:
        if app.state.engines is None:
            app.state.engines = await build_engines(settings)
        banner = lab_banner(app.state.engines)
        if banner:
            log.warning(banner)

    async def stop(app: Litestar) -> None:
        if app.state.owns_engines and app.state.engines is not None:
            await app.state.engines.close()

    return build_app(state=state, body_limit=settings.http.body_limit, on_startup=[start], on_shutdown=[stop])
