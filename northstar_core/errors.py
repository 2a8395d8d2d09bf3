"""One exception vocabulary for the whole system.

Every error the core, an adapter or the HTTP shell raises is a :class:`NorthstarError` carrying
the fields of the uniform envelope (SPEC §4). The shell renders it 1:1; the Python client
re-raises the same type from a received envelope and adds ``upstream``.
"""

from __future__ import annotations

from typing import Any, Final, Literal

Gate = Literal["kill_switch", "firearms", "strategy_lock", "budget", "kpi", "temperature"]
GATES: Final[tuple[Gate, ...]] = (
    "kill_switch",
    "firearms",
    "strategy_lock",
    "budget",
    "kpi",
    "temperature",
)


class NorthstarError(Exception):
    """An error with a stable dotted code, an HTTP status and structured details."""

    def __init__(
        self,
        code: str,
        message: str,
        http_status: int,
        *,
        gate: Gate | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        upstream: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status
        self.gate = gate
        self.details: dict[str, Any] = details or {}
        self.headers: dict[str, str] = headers or {}
        self.upstream = upstream

    def envelope(self, request_id: str | None = None) -> dict[str, Any]:
        """The SPEC §4 envelope for this error."""
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "http_status": self.http_status,
                "gate": self.gate,
                "request_id": request_id,
                "details": self.details,
            }
        }

    @classmethod
    def from_envelope(
        cls, body: dict[str, Any], *, upstream: dict[str, Any] | None = None
    ) -> NorthstarError:
        """Rebuild the error a server sent (used by the Python client)."""
        err = body["error"]
        return cls(
            err["code"],
            err.get("message", ""),
            int(err["http_status"]),
            gate=err.get("gate"),
            details=err.get("details") or {},
            upstream=upstream,
        )

    def __repr__(self) -> str:
        return f"NorthstarError({self.code!r}, {self.http_status}, {self.message!r})"

    def __str__(self) -> str:
        # The code is what callers branch on and search logs for; a bare message hides it.
        return f"{self.code} ({self.http_status}): {self.message}"


# --- constructors for the fixed rules of SPEC §4 -------------------------------------------


def missing_route(kind: str) -> NorthstarError:
    return NorthstarError(
        f"{kind}.missing_route",
        f"no backend route is configured for resource kind '{kind}'",
        503,
        details={"resource_kind": kind},
    )


def backend_unavailable(kind: str, reason: str, retry_after: int = 1) -> NorthstarError:
    return NorthstarError(
        f"{kind}.backend_unavailable",
        f"the backend for '{kind}' is unavailable: {reason}",
        503,
        details={"resource_kind": kind, "reason": reason},
        headers={"Retry-After": str(retry_after)},
    )


def cursor_invalid(domain: str, cursor: str, reason: str) -> NorthstarError:
    return NorthstarError(
        f"{domain}.cursor_invalid",
        f"cursor is invalid or expired: {reason}",
        410,
        details={"cursor": cursor, "reason": reason},
    )


def idempotency_mismatch(domain: str, key: str) -> NorthstarError:
    return NorthstarError(
        f"{domain}.idempotency_mismatch",
        "this idempotency key was already used with a different payload",
        422,
        details={"idempotency_key": key},
    )


def version_conflict(domain: str, current_version: int | None, expected: int | None) -> NorthstarError:
    return NorthstarError(
        f"{domain}.version_conflict",
        "the record changed since the version you read",
        409,
        details={"current_version": current_version, "expected_version": expected},
    )


def not_found(domain: str, what: str, **details: Any) -> NorthstarError:
    return NorthstarError(f"{domain}.not_found", f"{what} not found", 404, details=details)


def invalid(domain: str, message: str, **details: Any) -> NorthstarError:
    return NorthstarError(f"{domain}.invalid_request", message, 422, details=details)


def invalid_event(domain: str, message: str, **details: Any) -> NorthstarError:
    """422 ``<domain>.invalid_event``: an event's shape is refused before anything is written."""
    return NorthstarError(f"{domain}.invalid_event", message, 422, details=details)


def value_too_large(domain: str, message: str, *, size: int, limit: int, **details: Any) -> NorthstarError:
    """413 ``<domain>.value_too_large``: an encoded value of ``size`` bytes exceeds ``limit``."""
    return NorthstarError(
        f"{domain}.value_too_large", message, 413, details={"size": size, "limit": limit, **details}
    )


def route_option_invalid(domain: str, kind: str, param: str, value: Any) -> NorthstarError:
    """503 ``<domain>.route_misconfigured``: a route option this domain reads is unusable.

    A bad route is an operator error: the domain refuses loudly rather than guess a value.
    """
    return NorthstarError(
        f"{domain}.route_misconfigured",
        f"the route of '{kind}' has an invalid '{param}' parameter",
        503,
        details={"resource_kind": kind, "param": param, "value": str(value)[:100]},
        headers={"Retry-After": "30"},
    )


def forbidden(code: str, message: str, **details: Any) -> NorthstarError:
    return NorthstarError(code, message, 403, details=details)


def gate_blocked(gate: Gate, reason: str, message: str, **details: Any) -> NorthstarError:
    return NorthstarError(f"gate.{gate}.{reason}", message, 403, gate=gate, details=details)
