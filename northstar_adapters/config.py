"""Configuration: one TOML file plus ``NORTHSTAR_*`` environment overrides.

Sources, weakest first: built-in defaults < the TOML file (``--config``, else
``$NORTHSTAR_CONFIG``, else ``./northstar.toml`` if present) < environment variables. Every
key of the file can be set from the environment as ``NORTHSTAR_<KEY>`` (top level) or
``NORTHSTAR_<SECTION>_<KEY>`` (sections ``jwt``, ``http``, ``registry``, ``log``, ``metrics``, ``tracing``,
``retention``); ``NORTHSTAR_CONNECTIONS``, ``NORTHSTAR_ROUTES``, ``NORTHSTAR_ACTIONS`` and
``NORTHSTAR_RETENTION_SPINE_DAYS`` take JSON. See the
README's "Configuration" section for every key. Any other ``NORTHSTAR_*`` name is refused (a
misspelt variable must not be ignored silently), except the reserved ones
(:data:`RESERVED_ENV_NAMES`, ``NORTHSTAR_SMOKE_*``).

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

import difflib
import json
import os
import re
import secrets
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final

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
from northstar_core.spine import spine_retention

DEFAULT_CONFIG_FILE: Final = "northstar.toml"
ENV_PREFIX: Final = "NORTHSTAR_"
# The configuration file's path, when no file is passed explicitly (``--config`` wins): how a
# server that imports the app factory (uvicorn --factory, worker processes) is told which file.
CONFIG_FILE_ENV: Final = "NORTHSTAR_CONFIG"
# NORTHSTAR_* names that are not configuration keys but belong to other tools of this
# repository: the cloud smoke tests' NORTHSTAR_SMOKE_* and the emulator launcher's jar path.
RESERVED_ENV_PREFIXES: Final = ("NORTHSTAR_SMOKE_",)
RESERVED_ENV_NAMES: Final = frozenset({CONFIG_FILE_ENV, "NORTHSTAR_FIRESTORE_EMULATOR_JAR"})
_SECTIONS: Final = ("jwt", "http", "registry", "log", "metrics", "tracing", "retention", "data_keys")
_JSON_KEYS: Final = {"connections", "routes", "actions", "retention_spine_days"}
# List-valued section keys: a comma-separated environment value (or a JSON array).
_LIST_KEYS: Final = {"http_cors_allow_origins"}
LAB_CONNECTION: Final = "lab"
LAB_SECRETS_FILE: Final = "secrets.json"


class ConfigError(Exception):
    """The configuration cannot run a service; the message says what to fix."""


class JwtSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    hs256_secret: str | None = None
    jwks_file: str | None = None
    jwks_url: str | None = None
    audience: str | None = None
    issuer: str | None = None
    leeway_seconds: float = 0.0


# A browser origin as an Origin header spells it (RFC 6454 §6.1): lower-case scheme and host.
_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ORIGIN: Final = re.compile(rf"(?i)https?://(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::[0-9]{{1,5}})?")


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
    # /readyz answers from a result this young instead of pinging every backend on each probe
    # (0 = ping on every call): probes from many load balancers must not load the backends.
    ready_cache_seconds: float = 2.0
    # Browsers (README "Browsers"). Origins a browser UI may call the API from, each exactly
    # scheme://host[:port]; empty = no CORS headers at all. "*" alone allows any origin (no
    # cookie is ever honoured, so that opens no ambient-credential hole, only reachability).
    cors_allow_origins: list[str] = []
    # how long a browser may cache a preflight answer
    cors_max_age_seconds: Annotated[int, msgspec.Meta(ge=0, le=86_400)] = 600
    # A stream ticket (POST /sse/tickets) opens its one stream only this soon after minting...
    stream_ticket_seconds: Annotated[float, msgspec.Meta(ge=1, le=300)] = 30.0
    # ...and lets an EventSource reconnect to it (with Last-Event-ID) for this long (0 = never).
    stream_ticket_resume_seconds: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 900.0
    # GET /users/me/data: a user may export their own data once per this many seconds (an
    # export reads the tenant's whole spine and analytics).
    user_export_interval_seconds: Annotated[int, msgspec.Meta(ge=60, le=30 * 86_400)] = 3600

    def __post_init__(self) -> None:
        origins = []
        for origin in self.cors_allow_origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"http.cors_allow_origins: {origin[:100]!r} is not an origin"
                    " (scheme://host[:port], no path, no trailing slash, no wildcard; or \"*\" alone)"
                )
            origins.append(origin.lower())
        if "*" in origins and len(origins) > 1:
            raise ValueError('http.cors_allow_origins: "*" allows every origin; list no others with it')
        self.cors_allow_origins = list(dict.fromkeys(origins))


LOG_FORMATS: Final = ("auto", "json", "human")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class LogSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # auto: JSON lines unless stderr is a terminal (then the human format)
    format: str = "auto"
    level: str = "INFO"
    # one access line per request (off for benchmarks that measure request handling only)
    access: bool = True

    def __post_init__(self) -> None:
        self.format = self.format.lower()
        self.level = self.level.upper()
        if self.format not in LOG_FORMATS:
            raise ValueError(f"log.format must be one of {', '.join(LOG_FORMATS)}")
        if self.level not in LOG_LEVELS:
            raise ValueError(f"log.level must be one of {', '.join(LOG_LEVELS)}")


class MetricsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Off by default. When on: a Prometheus listener of its own on `bind` (loopback by default:
    # no token, so keep it off public interfaces; "" = none) and GET /metrics on the service's
    # port for system tokens.
    enabled: bool = False
    bind: str = "127.0.0.1:9464"

    def __post_init__(self) -> None:
        if self.bind:
            host, sep, port = self.bind.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError("metrics.bind must be HOST:PORT (e.g. 127.0.0.1:9464), or empty")

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` of the separate listener, or ``None``."""
        if not self.bind:
            return None
        host, _, port = self.bind.rpartition(":")
        return host.strip("[]"), int(port)


class TracingSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # OpenTelemetry spans over OTLP/HTTP; the exporter, sampler and resource are configured by
    # the standard OTEL_* environment variables (OTEL_EXPORTER_OTLP_ENDPOINT, ...).
    enabled: bool = False


class DataKeySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Where the key-encryption key of the data keys comes from (operator only; see
    :mod:`northstar_core.kernel.sealing`). At most one: ``key_env`` names an environment
    variable holding it (base64 of 32 bytes), ``key_file`` a local file (created with a random
    key, mode 0600, if absent). Neither: content is stored unsealed and a user cannot be erased
    (only a whole tenant)."""

    key_env: Annotated[str, msgspec.Meta(pattern=r"^[A-Z_][A-Z0-9_]{0,127}$(?!\n)")] | None = None
    key_file: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None

    def __post_init__(self) -> None:
        if self.key_env is not None and self.key_file is not None:
            raise ValueError("data_keys: give key_env or key_file, not both")

    @property
    def enabled(self) -> bool:
        return self.key_env is not None or self.key_file is not None


class RetentionSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How long the event spine keeps its events (operator only; nothing a request sends changes
    it). ``spine_days`` maps an event type, a ``<type>.*`` family or ``*`` (every other type) to
    days; an event takes its exact type's rule, else its longest family's, else ``*``'s, else it
    is kept forever. Absent: every event is kept forever. The analytics view keeps an event as
    long as the spine keeps its ``analytics`` event. An event's expiry is fixed when it is
    written: a change here applies to events written afterwards."""

    # days from 1 to 36500, checked with the keys by the spine's rules (which name the key)
    spine_days: dict[str, int] = {}

    def __post_init__(self) -> None:
        try:
            spine_retention(self.spine_days)
        except ValueError as exc:
            raise ValueError(f"retention.spine_days: {exc}") from None


class RegistrySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    connection: str
    table: str = "routing_registry"
    refresh_seconds: float = 5.0
    # A process that cannot re-read the routing table for this long stops writing (reads go
    # on); a migration waits this long before relying on every writer. Default: the larger of
    # 30 s and six refresh intervals. Every process sharing the registry must use one value.
    max_view_seconds: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.refresh_seconds <= 3600:
            raise ValueError("registry.refresh_seconds must be in [0, 3600]")
        if self.max_view_seconds is not None and not self.refresh_seconds < self.max_view_seconds <= 86_400:
            raise ValueError("registry.max_view_seconds must be longer than refresh_seconds (at most 86400)")


class ActionSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One ``[[actions]]`` entry: the handler behind an action name of ``/actions/execute``.

    Exactly one of ``handler`` (an import string ``package.module:function`` naming an async
    ``function(ctx, request)``) or ``webhook`` (an http(s) URL the operator chose, POSTed with an
    HMAC-SHA256 signature made with the secret in the environment variable ``secret_env``).
    Checked, imported and wired by the composition root (``northstar_adapters.compose``): a
    service whose actions cannot be loaded refuses to start.
    """

    name: str
    handler: str | None = None
    webhook: str | None = None
    secret_env: str | None = None
    # the whole webhook exchange (connect, send, answer) must finish within this
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    # a larger webhook answer is a failure (502); kept small enough to store for replays
    max_response_bytes: Annotated[int, msgspec.Meta(ge=1, le=262_144)] = 65_536


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    mode: str = "lab"
    data_dir: str = ".northstar/data"
    cursor_secret: str | None = None
    bind_tenant_id: str | None = None
    lab_route_all: bool = True
    # Every resource kind without a configured deployment-wide route is routed to this
    # connection (an explicit operator choice, so not a silent fallback).
    default_connection: str | None = None
    tail_poll_seconds: float = 0.5
    jwt: JwtSettings = msgspec.field(default_factory=JwtSettings)
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    tracing: TracingSettings = msgspec.field(default_factory=TracingSettings)
    retention: RetentionSettings = msgspec.field(default_factory=RetentionSettings)
    data_keys: DataKeySettings = msgspec.field(default_factory=DataKeySettings)
    connections: dict[str, dict[str, Any]] = {}
    registry: RegistrySettings | None = None
    routes: list[Route] = []
    actions: list[ActionSettings] = []

    @property
    def is_lab(self) -> bool:
        return self.mode == "lab"


class _StrictRetention(msgspec.Struct):
    retention: RetentionSettings


def _section_type(section: str) -> type[msgspec.Struct]:
    hint = typing.get_type_hints(Settings)[section]
    candidates = (hint, *typing.get_args(hint))  # `RegistrySettings | None` too
    return next(t for t in candidates if isinstance(t, type) and issubclass(t, msgspec.Struct))


def env_names() -> list[str]:
    """Every ``NORTHSTAR_*`` variable the configuration reads, sorted."""
    names = [CONFIG_FILE_ENV]
    for field in Settings.__struct_fields__:
        if field in _SECTIONS:
            keys = _section_type(field).__struct_fields__
            names += [f"{ENV_PREFIX}{field}_{key}".upper() for key in keys]
        else:
            names.append(f"{ENV_PREFIX}{field}".upper())
    return sorted(names)


def check_env_names(environ: Mapping[str, str]) -> None:
    """Refuse ``NORTHSTAR_*`` variables that configure nothing: a misspelt or invented name
    (``NORTHSTAR_PORT``) would otherwise be ignored without a word."""
    known = set(env_names())
    unknown = sorted(
        name for name in environ
        if name.startswith(ENV_PREFIX)
        and name.upper() not in known
        and name.upper() not in RESERVED_ENV_NAMES
        and not name.upper().startswith(RESERVED_ENV_PREFIXES)
    )
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
        hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
    raise ConfigError(
        f"unknown environment variable{'s' if len(unknown) > 1 else ''} {', '.join(hints)}: "
        f"the configuration reads {', '.join(sorted(known))} "
        f"({', '.join(p + '*' for p in RESERVED_ENV_PREFIXES)} is reserved for the tests)"
    )


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    check_env_names(environ)
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or not raw or name in RESERVED_ENV_NAMES:
            continue
        if name.startswith(RESERVED_ENV_PREFIXES):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        value: Any = raw
        if key in _JSON_KEYS:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{name} must be JSON: {exc}") from None
        elif key in _LIST_KEYS:
            value = _env_list(name, raw)
        section = next((s for s in _SECTIONS if key.startswith(s + "_")), None)
        if section is not None:
            out.setdefault(section, {})[key[len(section) + 1 :]] = value
        elif key in Settings.__struct_fields__:
            out[key] = value
    return out


def _env_list(name: str, raw: str) -> list[str]:
    if raw.lstrip().startswith("["):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name} must be a JSON array or a comma-separated list: {exc}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} must be a JSON array of strings or a comma-separated list")
        return value
    return [part.strip() for part in raw.split(",") if part.strip()]


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
    """Read the file and the environment into :class:`Settings` (no side effects).

    The file: ``config_file``, else ``$NORTHSTAR_CONFIG``, else ``./northstar.toml`` if present.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    config_file = config_file or environ.get(CONFIG_FILE_ENV) or None
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
        # Typed values only: the environment's JSON and TOML both carry real integers, and a
        # quoted or fractional number of days is a mistake to report, not to round.
        msgspec.convert({"retention": data.get("retention", {})}, type=_StrictRetention, strict=True)
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


def _route_unrouted(routes: list[Route], connection: str) -> list[Route]:
    """``routes`` plus a route to ``connection`` for every kind without a deployment-wide one."""
    have = {r.resource_kind for r in routes if r.tenant_id is None}
    added = [Route(resource_kind=k, connection=connection) for k in RESOURCE_KINDS if k not in have]
    return [*routes, *added]


def finalize(settings: Settings, *, create: bool = True) -> Settings:
    """Fill defaults and check completeness. Lab: the lab connection and registry, the
    persisted secrets (the data dir and ``secrets.json`` are created unless ``create`` is
    false; then secrets that do not exist yet stay unset and nothing is written).
    ``default_connection`` (any mode) routes every kind without a configured route there.

    Raises :class:`ConfigError` when a deployment lacks something it needs.
    """
    if settings.default_connection is not None:
        name = settings.default_connection
        known = set(settings.connections) | ({LAB_CONNECTION} if settings.is_lab else set())
        if name not in known:
            raise ConfigError(
                f"default_connection {name!r} is not a configured connection"
                f" (configured: {', '.join(sorted(known)) or 'none'})"
            )
        settings = msgspec.structs.replace(settings, routes=_route_unrouted(list(settings.routes), name))
    if settings.is_lab:
        data_dir = Path(settings.data_dir)
        if create:
            data_dir.mkdir(parents=True, exist_ok=True)
            stored: dict[str, str] = _lab_secrets(data_dir)
        else:
            stored = read_lab_secrets(data_dir) or {}
        jwt_settings = settings.jwt
        if not (jwt_settings.hs256_secret or jwt_settings.jwks_file or jwt_settings.jwks_url):
            jwt_settings = msgspec.structs.replace(jwt_settings, hs256_secret=stored.get("jwt_hs256_secret"))
        conns = dict(settings.connections)
        registry = settings.registry
        if registry is None:
            if LAB_CONNECTION not in conns:
                conns[LAB_CONNECTION] = {"backend": "sqlite", "path": lab_data_file(settings)}
            registry = RegistrySettings(connection=LAB_CONNECTION)
        routes = list(settings.routes)
        if settings.lab_route_all:
            routes = _route_unrouted(routes, registry.connection)
        settings = msgspec.structs.replace(
            settings,
            jwt=jwt_settings,
            cursor_secret=settings.cursor_secret or stored.get("cursor_secret"),
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


def lab_secrets_file(settings: Settings) -> Path:
    """Where a lab deployment keeps its generated JWT and cursor secrets."""
    return Path(settings.data_dir) / LAB_SECRETS_FILE


def read_lab_secrets(data_dir: Path) -> dict[str, str] | None:
    """The lab's persisted secrets, or ``None`` if none were generated yet (nothing written)."""
    path = data_dir / LAB_SECRETS_FILE
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); delete it to generate new lab secrets") from None
    if not isinstance(stored, dict) or not {"jwt_hs256_secret", "cursor_secret"} <= stored.keys():
        raise ConfigError(f"{path} is incomplete; delete it to generate new lab secrets")
    return stored


def _lab_secrets(data_dir: Path) -> dict[str, str]:
    """The lab's persisted secrets, generated on first use.

    Created with a hard link from a private temp file, which fails if the file exists, so two
    processes starting at once agree on one set of secrets.
    """
    path = data_dir / LAB_SECRETS_FILE
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
    stored = read_lab_secrets(data_dir)
    assert stored is not None
    return stored
