"""CORS for browser UIs on other origins (``http.cors_allow_origins``; none by default).

Litestar's :class:`CORSConfig` does the work: preflights of allowed origins are answered 204
with the methods and request headers the API reads, and every answer to an allowed origin
carries ``Access-Control-Allow-Origin`` and exposes the response headers a client needs
(``ETag``, ``Location``, ``Retry-After``…). Without configured origins no CORS middleware runs
and no response carries a CORS header. Credentials (cookies) are never allowed: the API reads
bearer tokens and stream tickets only.

A refused preflight (origin, method or header not allowed) is answered with the service's
error envelope, 403 ``request.cors_refused``, instead of Litestar's plain-text 400.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from litestar.config.cors import CORSConfig
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from northstar_adapters.config import HttpSettings
from northstar_core.identity import HEADER_FIELDS
from northstar_http.errors import request_id

ALLOW_METHODS: Final = ["GET", "POST", "PUT", "PATCH", "DELETE"]
# Request headers the API reads: auth, bodies, idempotency and versioning, SSE resume, the
# identity headers (SPEC §3), request ids and W3C trace context.
ALLOW_HEADERS: Final = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "Last-Event-ID",
    "X-Request-Id",
    "traceparent",
    "tracestate",
    *(name.title() for name in HEADER_FIELDS),
]
# Response headers a browser script may read.
EXPOSE_HEADERS: Final = [
    "ETag",
    "Location",
    "Retry-After",
    "WWW-Authenticate",
    "X-Request-Id",
    "X-Northstar-Backend",
]


def cors_config(http: HttpSettings) -> CORSConfig | None:
    """The app's CORS configuration, or ``None`` (no CORS at all) without allowed origins."""
    if not http.cors_allow_origins:
        return None
    return CORSConfig(
        allow_origins=list(http.cors_allow_origins),
        allow_methods=list(ALLOW_METHODS),  # type: ignore[arg-type]
        allow_headers=list(ALLOW_HEADERS),
        allow_credentials=False,
        expose_headers=list(EXPOSE_HEADERS),
        max_age=http.cors_max_age_seconds,
    )


def _refusal(config: CORSConfig, origin: str, method: str, requested: str) -> list[str]:
    refused = []
    if not config.is_origin_allowed(origin):
        refused.append("origin")
    if method and not config.is_allow_all_methods and method.upper() not in config.allow_methods:
        refused.append("method")
    allowed = {h.lower() for h in config.allow_headers}
    asked = {h.strip().lower() for h in requested.split(",") if h.strip()}
    # headers a browser may always send (CORS-safelisted) need no permission
    if asked - allowed - {"accept", "accept-language", "content-language"}:
        refused.append("headers")
    return refused


class PreflightGuard:
    """Answers a preflight Litestar's CORS middleware would refuse with the error envelope."""

    def __init__(self, app: ASGIApp, config: CORSConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope.get("method") == "OPTIONS":
            headers = {k.lower(): v.decode("latin-1") for k, v in scope["headers"]}
            origin = headers.get(b"origin")
            if origin is not None and b"access-control-request-method" in headers:
                refused = _refusal(
                    self.config,
                    origin,
                    headers[b"access-control-request-method"],
                    headers.get(b"access-control-request-headers", ""),
                )
                if refused:
                    await _send_refusal(scope, send, refused)
                    return
        await self.app(scope, receive, send)


async def _send_refusal(scope: Scope, send: Send, refused: list[str]) -> None:
    from northstar_core.errors import NorthstarError

    error = NorthstarError(
        "request.cors_refused",
        "this cross-origin request is not allowed (see the service's http.cors_allow_origins)",
        403,
        details={"refused": refused},
    )
    rid = request_id(scope)
    body = msgspec.json.encode(error.envelope(rid))
    headers: list[tuple[bytes, bytes]] = [
        (b"x-request-id", rid.encode("latin-1")),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"vary", b"Origin"),
    ]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def wrap(app: ASGIApp, config: CORSConfig | None) -> Any:
    return app if config is None else PreflightGuard(app, config)
