"""Configuration: one TOML file plus ``NORTHSTAR_*`` environment overrides.

Sources, weakest first: built-in defaults < the TOML file (``--config``, else
``./northstar.toml`` if present) < environment variables. Every key of the file can be set
from the environment as ``NORTHSTAR_<KEY>`` (top level) or ``NORTHSTAR_<SECTION>_<KEY>``
(sections ``jwt``, ``http``, ``registry``); ``NORTHSTAR_REGISTRY_PARAMS`` and
``NORTHSTAR_ROUTES`` take JSON. See the README's "Configuration" section for every key.

Lab conveniences (``mode = "lab"`` only): the registry's bootstrap store defaults to the SQLite
file ``<data_dir>/northstar.db``; every resource kind without a configured route is routed
there (``lab_route_all``); the JWT secret and the cursor secret are generated once and kept in
``<data_dir>/secrets.json`` so tokens and cursors survive restarts. Outside lab nothing is
defaulted: secrets and the registry store must be configured.
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

from northstar_core.identity import MODES
from northstar_core.routing import RESOURCE_KINDS, Route

DEFAULT_CONFIG_FILE: Final = "northstar.toml"
ENV_PREFIX: Final = "NORTHSTAR_"
_SECTIONS: Final = ("jwt", "http", "registry")
_JSON_KEYS: Final = {"registry_params", "routes"}


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


class RegistrySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    backend: str
    params: dict[str, Any] = {}
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
    return settings


def lab_store_params(settings: Settings) -> dict[str, Any]:
    return {"path": str(Path(settings.data_dir) / "northstar.db")}


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
        registry = settings.registry or RegistrySettings(backend="sqlite", params=lab_store_params(settings))
        routes = list(settings.routes)
        if settings.lab_route_all:
            have = {r.resource_kind for r in routes if r.tenant_id is None}
            routes += [
                Route(resource_kind=k, backend=registry.backend, params=dict(registry.params))
                for k in RESOURCE_KINDS
                if k not in have
            ]
        return msgspec.structs.replace(
            settings,
            jwt=jwt_settings,
            cursor_secret=settings.cursor_secret or stored["cursor_secret"],
            registry=registry,
            routes=routes,
        )
    problems = []
    if not settings.cursor_secret:
        problems.append("cursor_secret (NORTHSTAR_CURSOR_SECRET) is required outside lab")
    if not (settings.jwt.hs256_secret or settings.jwt.jwks_file or settings.jwt.jwks_url):
        problems.append("jwt.hs256_secret, jwt.jwks_file or jwt.jwks_url is required outside lab")
    if settings.registry is None:
        problems.append("[registry] (the routing registry's bootstrap store) is required outside lab")
    if problems:
        raise ConfigError("; ".join(problems))
    return settings


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
