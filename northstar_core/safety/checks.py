"""Field checks shared by the safety stores: bodies, names, expiry times (422 on a bad value)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from northstar_core.bounds import MAX_EXPIRES_AT, MAX_TTL_SECONDS, check_float
from northstar_core.errors import invalid
from northstar_core.identity import ID_PATTERN

T = TypeVar("T", bound=msgspec.Struct)


def convert(domain: str, data: Any, type_: type[T]) -> T:
    """Validate ``data`` (a mapping or JSON bytes) into ``type_``; 422 ``<domain>.invalid_request``."""
    try:
        if isinstance(data, bytes | bytearray):
            return msgspec.json.decode(bytes(data), type=type_)
        return msgspec.convert(data, type=type_)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise invalid(domain, f"invalid body: {exc}", reason=str(exc)) from None


def check_name(domain: str, field: str, value: str | None) -> None:
    """``value`` (when given) follows the id grammar; 422 naming ``field`` if not."""
    if value is not None and (not isinstance(value, str) or not ID_PATTERN.fullmatch(value)):
        raise invalid(
            domain, f"'{field}' must match {ID_PATTERN.pattern}", field=field, value=str(value)[:200]
        )


def expiry(domain: str, now: float, expires_at: float | None, ttl: float | None) -> float | None:
    """The expiry time given as ``expires_at`` or ``ttl_seconds`` from ``now`` (not both)."""
    if expires_at is not None and ttl is not None:
        raise invalid(domain, "give 'expires_at' or 'ttl_seconds', not both")
    if ttl is not None:
        ttl = check_float(domain, "ttl_seconds", ttl, lo=0.0, hi=MAX_TTL_SECONDS)
        if ttl <= 0:
            raise invalid(domain, "'ttl_seconds' must be positive", field="ttl_seconds")
        return now + ttl
    if expires_at is not None:
        return check_float(domain, "expires_at", expires_at, lo=0.0, hi=MAX_EXPIRES_AT)
    return expires_at


__all__ = ["check_name", "convert", "expiry"]
