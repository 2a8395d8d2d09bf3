"""Configuration: one TOML file plus ``NORTHSTAR_*`` environment overrides.

Sources, weakest first: built-in defaults < the TOML file (``--config``, else
``./northstar.toml`` if present) < environment variables. Every key of the file can be set
from the environment as ``NORTHSTAR_<KEY>`` (top level) or ``NORTHSTAR_<SECTION>_<KEY>``
(sections ``jwt``, ``http``, ``registry``); ``NORTHSTAR_CONNECTIONS`` and ``NORTHSTAR_ROUTES``
take JSON. See the README's "Configuration" section for every key.

Backends are reached only through **connections** named here (``[connections.<name>]``: a
backend, its params — endpoint, region, file path, credential source — and whether tenant
admins may route their own tenant there). Routes, durable in the registry, name a connection
and a table; nothing a request carries can name an endpoint, a file or a credential.

Lab conveniences (``mode = "lab"`` only): without connections, one connection ``lab`` on the
SQLite file ``<data_dir>/northstar.db`` (absolute) holds the registry; every resource kind
without a configured route is routed to the registry's connection (``lab_route_all``); the JWT
secret and the cursor secret are generated once and kept in ``<data_dir>/secrets.json`` so
tokens and cursors survive restarts. Outside lab nothing is defaulted: secrets, a JWT audience,
connections and the registry must be configured.
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from northstar_adapters.params import check as check_params
from northstar_core.identity import MODES
from northstar_core.routing import (
    BACKENDS,
    CONNECTION_PATTERN,
    RESOURCE_KINDS,
    TABLE_PATTERN,
    Connection,
    Route,
)

DEFAULT_CONFIG_FILE: Final = "northstar.toml"
ENV_PREFIX: Final = "NORTHSTAR_"
_SECTIONS: Final = ("jwt", "http", "registry")
_JSON_KEYS: Final = {"connections", "routes"}
LAB_CONNECTION: Final = "lab"


class ConfigError(Exception):
    """The configuration cannot run a service; the message says what to fix."""


class JwtSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    hs256_secret: str | None = None
    jwks_file: str | None = None
    jwks_url: str | None = None
    audience: str | None = None
    issuer: str | None = None
    leeway_seconds: float = 0.0


class HttpSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8787
    body_limit: int = 1_048_576
    sse_retry_ms: int = 2000
    sse_heartbeat_seconds: float = 15.0
    # A client must send a request head within this (408 otherwise), and a whole body within
    # the second: a drip-fed connection cannot hold a worker slot indefinitely.
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0


class RegistrySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    connection: str
    table: str = "routing_registry"
    refresh_seconds: float = 5.0


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    mode: str = "lab"
    data_dir: str = ".northstar/data"
    cursor_secret: str | None = None
    bind_tenant_id: str | None = None
    lab_route_all: bool = True
    tail_poll_seconds: float = 0.5
    jwt: JwtSettings = msgspec.field(default_factory=JwtSettings)
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    connections: dict[str, dict[str, Any]] = {}
    registry: RegistrySettings | None = None
    routes: list[Route] = []

    @property
    def is_lab(self) -> bool:
        return self.mode == "lab"


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or not raw:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        value: Any = raw
        if key in _JSON_KEYS:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{name} must be JSON: {exc}") from None
        section = next((s for s in _SECTIONS if key.startswith(s + "_")), None)
        if section is not None:
            out.setdefault(section, {})[key[len(section) + 1 :]] = value
        elif key in Settings.__struct_fields__:
            out[key] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_settings(
    config_file: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the file and the environment into :class:`Settings` (no side effects)."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    path = Path(config_file) if config_file else Path(DEFAULT_CONFIG_FILE)
    if config_file and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    data = _merge(data, _env_overrides(environ))
    if overrides:
        data = _merge(data, overrides)
    try:
        settings = msgspec.convert(data, type=Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    if settings.mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)} (got {settings.mode!r})")
    connections(settings)  # every connection checked before anything is opened
    return settings


def connections(settings: Settings) -> dict[str, Connection]:
    """The configured connections, each checked against its backend's declared params."""
    out: dict[str, Connection] = {}
    for name, raw in settings.connections.items():
        if not CONNECTION_PATTERN.fullmatch(name):
            raise ConfigError(f"connection name {name!r} must match {CONNECTION_PATTERN.pattern}")
        if not isinstance(raw, dict):
            raise ConfigError(f"connections.{name} must be a table")
        params = dict(raw)
        backend = params.pop("backend", None)
        overrides = params.pop("tenant_overrides", False)
        if backend not in BACKENDS:
            raise ConfigError(f"connections.{name}: backend must be one of {', '.join(sorted(BACKENDS))}")
        if not isinstance(overrides, bool):
            raise ConfigError(f"connections.{name}: tenant_overrides must be true or false")
        try:
            check_params(backend, params)
        except ValueError as exc:
            raise ConfigError(f"connections.{name}: {exc}") from None
        out[name] = Connection(name=name, backend=backend, params=params, tenant_overrides=overrides)
    return out


def lab_data_file(settings: Settings) -> str:
    # Absolute: the same data dir reached from another working directory is the same database.
    return str((Path(settings.data_dir) / "northstar.db").resolve())


def finalize(settings: Settings) -> Settings:
    """Fill lab defaults (creating the data dir and persisted secrets) and check completeness.

    Raises :class:`ConfigError` when a non-lab deployment lacks something it needs.
    """
    if settings.is_lab:
        data_dir = Path(settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        stored = _lab_secrets(data_dir)
        jwt_settings = settings.jwt
        if not (jwt_settings.hs256_secret or jwt_settings.jwks_file or jwt_settings.jwks_url):
            jwt_settings = msgspec.structs.replace(jwt_settings, hs256_secret=stored["jwt_hs256_secret"])
        conns = dict(settings.connections)
        registry = settings.registry
        if registry is None:
            if LAB_CONNECTION not in conns:
                conns[LAB_CONNECTION] = {"backend": "sqlite", "path": lab_data_file(settings)}
            registry = RegistrySettings(connection=LAB_CONNECTION)
        routes = list(settings.routes)
        if settings.lab_route_all:
            have = {r.resource_kind for r in routes if r.tenant_id is None}
            routes += [
                Route(resource_kind=k, connection=registry.connection)
                for k in RESOURCE_KINDS
                if k not in have
            ]
        settings = msgspec.structs.replace(
            settings,
            jwt=jwt_settings,
            cursor_secret=settings.cursor_secret or stored["cursor_secret"],
            connections=conns,
            registry=registry,
            routes=routes,
        )
        _check_references(settings)
        return settings
    problems = []
    if not settings.cursor_secret:
        problems.append("cursor_secret (NORTHSTAR_CURSOR_SECRET) is required outside lab")
    if not (settings.jwt.hs256_secret or settings.jwt.jwks_file or settings.jwt.jwks_url):
        problems.append("jwt.hs256_secret, jwt.jwks_file or jwt.jwks_url is required outside lab")
    if not settings.jwt.audience:
        problems.append("jwt.audience (NORTHSTAR_JWT_AUDIENCE) is required outside lab")
    if settings.registry is None:
        problems.append("[registry] (the routing registry's bootstrap store) is required outside lab")
    if problems:
        raise ConfigError("; ".join(problems))
    _check_references(settings)
    return settings


def _check_references(settings: Settings) -> None:
    """The registry and configured routes name connections that exist, and valid tables."""
    known = settings.connections
    assert settings.registry is not None
    problems = []
    if settings.registry.connection not in known:
        name = settings.registry.connection
        problems.append(f"registry.connection {name!r} is not a configured connection")
    if not TABLE_PATTERN.fullmatch(settings.registry.table):
        problems.append(f"registry.table must match {TABLE_PATTERN.pattern}")
    for route in settings.routes:
        if route.connection not in known:
            problems.append(f"route {route.resource_kind}: connection {route.connection!r} is not configured")
        if route.table is not None and not TABLE_PATTERN.fullmatch(route.table):
            problems.append(f"route {route.resource_kind}: table must match {TABLE_PATTERN.pattern}")
    if problems:
        raise ConfigError("; ".join(problems))


def _lab_secrets(data_dir: Path) -> dict[str, str]:
    """The lab's persisted secrets, generated on first use.

    Created with a hard link from a private temp file, which fails if the file exists, so two
    processes starting at once agree on one set of secrets.
    """
    path = data_dir / "secrets.json"
    if not path.is_file():
        fresh = {"jwt_hs256_secret": secrets.token_urlsafe(32), "cursor_secret": secrets.token_urlsafe(32)}
        tmp = data_dir / f".secrets.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        tmp.write_text(json.dumps(fresh))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won; use its secrets
        finally:
            tmp.unlink()
    stored: dict[str, str] = json.loads(path.read_text())
    if not {"jwt_hs256_secret", "cursor_secret"} <= stored.keys():
        raise ConfigError(f"{path} is incomplete; delete it to generate new lab secrets")
    return stored
