"""The composition root: configuration → connections → routing registry → Engines. The only one.

The HTTP shell builds its Engines here, and so does an agent that embeds the library:

    from northstar_adapters.compose import open_engines

    engines = await open_engines()                     # lab: ./.northstar/data, SQLite
    engines = await open_engines(data_dir="/var/lib/ns")  # lab elsewhere
    engines = await open_engines("northstar.toml")     # exactly what `northstar serve` reads

The configured ``[[actions]]`` are resolved here too (:func:`action_handlers`: import strings
imported and checked, webhooks built with their secrets) and registered on ``engines.actions``,
so ``northstar serve`` and an embedding agent serve the same actions.

No web framework is imported on this path.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from northstar_adapters import AdapterFactory
from northstar_adapters.config import (
    ENV_PREFIX,
    ActionSettings,
    ConfigError,
    Settings,
    connections,
    finalize,
    load_settings,
)
from northstar_adapters.sealing import AesGcmCipher, kek_from_env, kek_from_file
from northstar_core.clock import Clock, SystemClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines, EngineSettings
from northstar_core.errors import NorthstarError
from northstar_core.identity import ID_PATTERN
from northstar_core.routing import LAB_ONLY_BACKENDS, RoutingError, RoutingRegistry, Target
from northstar_core.safety.actions import Handler

REGISTRY_KIND = "routing_registry"


def registry_target(settings: Settings) -> Target:
    """Where the routing table itself lives: the registry's connection and table."""
    assert settings.registry is not None
    connection = connections(settings)[settings.registry.connection]
    return connection.target(REGISTRY_KIND, settings.registry.table)


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
        max_view_seconds=settings.registry.max_view_seconds,
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


def _import_handler(where: str, spec: str) -> Handler:
    """``package.module:function`` (or ``:Class.attribute``) → an async ``f(ctx, request)``."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"{where}: handler must be 'package.module:function' (got {spec!r})")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # any failure to import is a refusal to start, naming it
        raise ConfigError(f"{where}: cannot import module {module_name!r}: {exc!r}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"{where}: {module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise ConfigError(f"{where}: {spec!r} is not callable")
    is_async = inspect.iscoroutinefunction(inspect.unwrap(target)) or (
        # an instance whose __call__ is async (a class itself is not: calling it awaits nothing)
        not inspect.isclass(target) and inspect.iscoroutinefunction(type(target).__call__)
    )
    if not is_async:
        raise ConfigError(f"{where}: {spec!r} must be an async function 'async def f(ctx, request)'")
    try:
        inspect.signature(target).bind(None, None)
    except TypeError:
        raise ConfigError(f"{where}: {spec!r} must accept two positional arguments (ctx, request)") from None
    except ValueError:
        pass  # no introspectable signature (a builtin): trust the callable
    handler: Handler = target
    return handler


def _webhook(where: str, action: ActionSettings, environ: Mapping[str, str]) -> Handler:
    from northstar_adapters.webhooks import MIN_SECRET_BYTES, WebhookHandler  # needs httpx

    assert action.webhook is not None
    parts = urlsplit(action.webhook)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: webhook must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{where}: webhook URL must not carry credentials; use secret_env")
    if not action.secret_env:
        raise ConfigError(f"{where}: a webhook needs secret_env (the variable holding its HMAC secret)")
    if action.secret_env.upper().startswith(ENV_PREFIX):
        raise ConfigError(
            f"{where}: secret_env must not start with {ENV_PREFIX} (those names are configuration keys)"
        )
    secret = environ.get(action.secret_env, "")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{where}: the environment variable {action.secret_env} must hold the webhook secret "
            f"(at least {MIN_SECRET_BYTES} bytes)"
        )
    return WebhookHandler(
        action.name,
        action.webhook,
        secret.encode(),
        timeout_seconds=action.timeout_seconds,
        max_response_bytes=action.max_response_bytes,
    )


def action_handlers(settings: Settings, *, environ: Mapping[str, str] | None = None) -> dict[str, Handler]:
    """The configured ``[[actions]]``, each resolved to a handler; :class:`ConfigError` naming
    every problem (an unknown module, a function that is not ``async def f(ctx, request)``, a
    webhook without its secret…) — the service refuses to start. Opens no connection."""
    environ = os.environ if environ is None else environ
    handlers: dict[str, Handler] = {}
    problems: list[str] = []
    for index, action in enumerate(settings.actions):
        where = f"actions[{index}] ({action.name!r})"
        try:
            if not ID_PATTERN.fullmatch(action.name):
                raise ConfigError(f"{where}: name must match {ID_PATTERN.pattern}")
            if action.name in handlers:
                raise ConfigError(f"{where}: the action is configured twice")
            if (action.handler is None) == (action.webhook is None):
                raise ConfigError(f"{where}: set exactly one of handler or webhook")
            if action.handler is not None:
                if action.secret_env is not None:
                    raise ConfigError(f"{where}: secret_env is for webhooks only")
                handlers[action.name] = _import_handler(where, action.handler)
            else:
                handlers[action.name] = _webhook(where, action, environ)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("; ".join(problems))
    return handlers


def data_key_cipher(settings: Settings, *, environ: Mapping[str, str] | None = None) -> AesGcmCipher | None:
    """The data keys' cipher under the configured key-encryption key (``None``: not configured);
    ``ConfigError`` naming what is wrong, as at startup."""
    keys = settings.data_keys
    env = os.environ if environ is None else environ
    try:
        if keys.key_env is not None:
            value = env.get(keys.key_env)
            if not value:
                raise ConfigError(f"data_keys.key_env: {keys.key_env} is not set")
            return AesGcmCipher(kek_from_env(value, keys.key_env))
        if keys.key_file is not None:
            return AesGcmCipher(kek_from_file(Path(keys.key_file)))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"data_keys: {exc}") from None
    return None


async def build_engines(
    settings: Settings, *, clock: Clock | None = None, environ: Mapping[str, str] | None = None
) -> Engines:
    """Engines for finalized ``settings`` (see :func:`open_engines` for the one-call form)."""
    # Actions first: a deployment whose handlers cannot be loaded opens nothing.
    handlers = action_handlers(settings, environ=environ)
    cipher = data_key_cipher(settings, environ=environ)
    registry = await build_registry(settings)
    assert settings.cursor_secret is not None
    engines = Engines(
        registry,
        CursorCodec(settings.cursor_secret.encode()),
        clock or SystemClock(),
        EngineSettings(
            tail_poll_interval=settings.tail_poll_seconds,
            spine_retention_days=dict(settings.retention.spine_days),
            user_export_interval_seconds=settings.http.user_export_interval_seconds,
        ),
        cipher=cipher,
    )
    for name, handler in handlers.items():
        engines.actions.register(name, handler)
    return engines


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
    return await build_engines(settings, clock=clock, environ=environ)
