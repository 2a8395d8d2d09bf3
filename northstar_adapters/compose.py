"""The composition root: configuration → connections → routing registry → Engines. The only one.

The HTTP shell builds its Engines here, and so does an agent that embeds the library:

    from northstar_adapters.compose import open_engines

    engines = await open_engines()                     # lab: ./.northstar/data, SQLite
    engines = await open_engines(data_dir="/var/lib/ns")  # lab elsewhere
    engines = await open_engines("northstar.toml")     # exactly what `northstar serve` reads

No web framework is imported on this path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from northstar_adapters import AdapterFactory
from northstar_adapters.config import Settings, connections, finalize, load_settings
from northstar_core.clock import Clock, SystemClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines, EngineSettings
from northstar_core.errors import NorthstarError
from northstar_core.routing import LAB_ONLY_BACKENDS, RoutingError, RoutingRegistry, Target

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


async def build_engines(settings: Settings, *, clock: Clock | None = None) -> Engines:
    """Engines for finalized ``settings`` (see :func:`open_engines` for the one-call form)."""
    registry = await build_registry(settings)
    assert settings.cursor_secret is not None
    return Engines(
        registry,
        CursorCodec(settings.cursor_secret.encode()),
        clock or SystemClock(),
        EngineSettings(tail_poll_interval=settings.tail_poll_seconds),
    )


async def open_engines(
    config_file: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
) -> Engines:
    """Engines from the same configuration ``northstar serve`` reads, in one call.

    ``config_file`` (else ``./northstar.toml`` if present) plus ``NORTHSTAR_*`` variables
    (``environ``, default the process environment); ``data_dir`` is the lab data directory.
    Raises ``ConfigError`` or ``RoutingError`` exactly where the server would refuse to start.
    Close with ``await engines.close()``.
    """
    extra = dict(overrides or {})
    if data_dir is not None:
        extra["data_dir"] = str(data_dir)
    settings = finalize(load_settings(config_file, environ=environ, overrides=extra or None))
    return await build_engines(settings, clock=clock)
