"""Configuration toggles by scope (resource kind ``config_store``).

Three scopes, each one versioned document of ``values`` (toggle key -> JSON value):

* ``system``  — one document for the whole deployment mode; writable only with the system flag;
* ``tenant``  — one per tenant; writable by admin/owner;
* ``surface`` — one per tenant and ``surface_id``; writable by admin/owner.

Writes replace the document and name the version they replace (``expected_version``; absent
or 0 = create-only), so a stale write is 409 ``config.version_conflict`` with the current
version, never a silent overwrite. :meth:`ConfigService.toggle` resolves a key
surface > tenant > system > the caller's default. Known toggles are validated by type (see
``TOGGLES`` and ``contracts/config_toggles.md``); other keys are accepted as JSON values.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Final, Literal, get_args

import msgspec

from northstar_core.bounds import MAX_VERSION, check_int
from northstar_core.clock import Clock, iso
from northstar_core.errors import NorthstarError, invalid, value_too_large
from northstar_core.identity import RequestContext
from northstar_core.kernel.records import MAX_RECORD_BYTES, VersionedRecords
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import check_id, partition

KIND: Final = "config_store"
DOMAIN: Final = "config"
Scope = Literal["system", "tenant", "surface"]
SCOPES: Final[tuple[str, ...]] = get_args(Scope)
TOGGLE_KEY: Final = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
MAX_KEYS: Final = 500
_DOC_LIMIT: Final = MAX_RECORD_BYTES - 8192
_RECORD: Final = "doc"

# The documented toggles (contracts/config_toggles.md): key -> (allowed JSON type, allowed values).
TOGGLES: Final[dict[str, tuple[type, tuple[Any, ...] | None]]] = {
    "canvas.gestures_enabled": (bool, None),
    "tool_canvas_mode": (str, ("off", "read_only", "interactive")),
}


class ConfigDocument(msgspec.Struct, kw_only=True):
    scope: str
    surface_id: str | None = None
    values: dict[str, Any] = {}
    version: int = 0
    updated_at: str | None = None
    updated_by: str | None = None


def validate_values(values: dict[str, Any]) -> None:
    """422 ``config.invalid_toggle`` for a malformed key or a wrongly typed known toggle."""
    if len(values) > MAX_KEYS:
        raise invalid(DOMAIN, f"at most {MAX_KEYS} keys per scope", keys=len(values))
    for key, value in values.items():
        if len(key) > 128 or not TOGGLE_KEY.fullmatch(key):
            raise NorthstarError(
                f"{DOMAIN}.invalid_toggle",
                "toggle keys are dotted lower-case names, e.g. 'canvas.gestures_enabled'",
                422,
                details={"key": key[:200]},
            )
        spec = TOGGLES.get(key)
        if spec is None:
            continue
        type_, allowed = spec
        # bool is an int subclass in Python; the check must be exact.
        if type(value) is not type_ or (allowed is not None and value not in allowed):
            shown = value if isinstance(value, bool | int | float) else str(value)[:200]
            raise NorthstarError(
                f"{DOMAIN}.invalid_toggle",
                f"toggle '{key}' must be a {type_.__name__}"
                + (f" among {list(allowed)}" if allowed else ""),
                422,
                details={"key": key, "value": shown},
            )


class ConfigService:
    """Versioned scope documents and toggle resolution (surface > tenant > system)."""

    def __init__(self, registry: RoutingRegistry, clock: Clock) -> None:
        self.registry = registry
        self.clock = clock

    async def _records(
        self, ctx: RequestContext, scope: str, surface_id: str | None
    ) -> VersionedRecords:
        if scope not in SCOPES:
            raise NorthstarError(
                f"{DOMAIN}.unknown_scope",
                f"scope must be one of {list(SCOPES)}",
                404,
                details={"scope": scope[:200], "known": list(SCOPES)},
            )
        if scope == "surface":
            if not surface_id:
                raise invalid(DOMAIN, "the 'surface' scope needs a surface_id", field="surface_id")
            check_id(DOMAIN, "surface_id", surface_id)
        if scope == "system":
            # One document for the deployment mode, shared by every tenant; the default route.
            store = await self.registry.store_for(KIND)
            part = f"~system|{ctx.mode}|config"
        else:
            store = await self.registry.store_for(KIND, ctx.tenant_id)
            part = partition(ctx, "config", scope, *((surface_id,) if scope == "surface" else ()))
        return VersionedRecords(store, part, DOMAIN)

    async def get(self, ctx: RequestContext, scope: str, *, surface_id: str | None = None) -> ConfigDocument:
        """The scope's document; an unwritten scope is empty at version 0."""
        records = await self._records(ctx, scope, surface_id)
        item = await records.get(_RECORD)
        sid = surface_id if scope == "surface" else None
        if item is None:
            return ConfigDocument(scope=scope, surface_id=sid)
        doc = msgspec.json.decode(item.value, type=ConfigDocument)
        doc.version = item.version
        return doc

    async def put(
        self,
        ctx: RequestContext,
        scope: str,
        values: dict[str, Any],
        *,
        expected_version: int | None,
        surface_id: str | None = None,
    ) -> ConfigDocument:
        """Replace the scope's values; ``expected_version`` None/0 creates (409 if it exists)."""
        if scope == "system":
            ctx.require_system()
        elif scope in SCOPES:
            ctx.require_role("admin")
        records = await self._records(ctx, scope, surface_id)
        validate_values(values)
        if expected_version is not None:
            # 0 creates; otherwise the new version is expected_version + 1 and must stay storable.
            check_int(DOMAIN, "expected_version", expected_version, lo=0, hi=MAX_VERSION - 1)
        doc = ConfigDocument(
            scope=scope,
            surface_id=surface_id if scope == "surface" else None,
            values=values,
            updated_at=iso(self.clock.now()),
            updated_by=ctx.user_id,
        )
        encoded = msgspec.json.encode(doc)
        if len(encoded) > _DOC_LIMIT:
            raise value_too_large(
                DOMAIN,
                f"the document is {len(encoded)} bytes; the limit is {_DOC_LIMIT}",
                size=len(encoded),
                limit=_DOC_LIMIT,
            )
        doc.version = await records.put(_RECORD, encoded, expected_version=expected_version or None)
        return doc

    async def toggle(self, ctx: RequestContext, key: str, default: Any = None) -> Any:
        """The value of toggle ``key``: surface (``ctx.surface_id``) > tenant > system > ``default``."""
        chain: list[tuple[str, str | None]] = []
        if ctx.surface_id:
            chain.append(("surface", ctx.surface_id))
        chain += [("tenant", None), ("system", None)]
        # The scopes are read concurrently (one round trip deep, not three), then resolved in
        # order: a scope's failure only matters when no scope before it holds the key.
        docs = await asyncio.gather(
            *(self.get(ctx, scope, surface_id=surface_id) for scope, surface_id in chain),
            return_exceptions=True,
        )
        for doc in docs:
            if isinstance(doc, BaseException):
                raise doc
            if key in doc.values:
                return doc.values[key]
        return default
