"""Stream tickets: how a browser's ``EventSource`` (which cannot send an ``Authorization``
header) opens an SSE stream without a long-lived bearer token in a URL.

``POST /sse/tickets`` (bearer-authenticated) mints a ticket for exactly one stream; the page
opens ``GET /sse/<kind>/<id>?ticket=…``. A ticket is an HS256 JWT signed with a key of its own
— derived from the cursor secret, so every process of a deployment (and a restarted one)
accepts the tickets of the others, and a ticket can never pass for a bearer token or a cursor.
It carries:

* the caller's identity claims (``sub``, ``tenant_id``, ``mode``, ``roles``, ``system``,
  ``agent_id``, ``project_id``) — decoded again by the same strict rule as a bearer token's,
  so a ticket never names more than the token it was minted with;
* the optional scope the caller presented in headers when minting (``project_id``,
  ``surface_id``, ``app_id``), which an EventSource cannot repeat;
* ``stream``: the one path it opens (``/sse/chat/<thread_id>`` or ``/sse/canvas/<canvas_id>``);
* ``open_by``: the stream may be *opened* (a request without ``Last-Event-ID``) only until
  then — ``http.stream_ticket_seconds`` after minting (default 30 s);
* ``exp``: the stream may be *resumed* (a request carrying ``Last-Event-ID``: an
  EventSource's automatic reconnect, e.g. after a server restart) until then —
  ``http.stream_ticket_resume_seconds`` after minting (default 15 min; 0 = never).

Neither deadline outlives the bearer token's own ``exp``. After them the stream answers 401
``auth.invalid_ticket`` (``details.reason`` ``expired``), the EventSource gives up, and the page
mints a fresh ticket and opens a new EventSource at the last id it saw (``?cursor=``). A ticket
is refused (401) on any other path, with any other method, next to an ``Authorization``
header, or when repeated; identity headers sent with it are checked as strictly as with a
bearer token (403 ``auth.identity_mismatch``). Query strings, and so tickets, never reach the
access log or a span.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any, Final, Literal

import jwt
import msgspec

from northstar_adapters.config import HttpSettings, Settings
from northstar_core.errors import NorthstarError
from northstar_core.identity import ID_PATTERN, Claims, RequestContext, claims_from_payload

# The streams a ticket can open: kind -> path prefix (the id follows).
STREAM_PATHS: Final[dict[str, str]] = {"chat": "/sse/chat/", "canvas": "/sse/canvas/"}
StreamKind = Literal["chat", "canvas"]
TICKET_PARAM: Final = "ticket"
# What the ticket key is derived for (HMAC-SHA256 of the cursor secret over this label):
# a distinct key per purpose, so no cursor or bearer token verifies as a ticket.
_KEY_LABEL: Final = b"northstar/stream-ticket/v1"
_USE: Final = "sse"
_ALGORITHM: Final = "HS256"
# The optional scope fields a caller may present as headers when minting.
SCOPE_FIELDS: Final = ("project_id", "surface_id", "app_id")
MAX_TICKET_CHARS: Final = 4096


class StreamTicket(msgspec.Struct, frozen=True, kw_only=True):
    """A verified ticket: what ``request.auth`` holds on a ticket-authenticated request."""

    stream: str
    scope: dict[str, str]
    open_by: float
    resume_until: float


def invalid_ticket(reason: str, message: str) -> NorthstarError:
    return NorthstarError("auth.invalid_ticket", message, 401, details={"reason": reason})


def stream_path(kind: str, stream_id: str) -> str:
    return STREAM_PATHS[kind] + stream_id


class StreamTickets:
    """Mints and verifies the tickets of one deployment (see the module doc)."""

    def __init__(self, key: bytes, *, open_seconds: float, resume_seconds: float) -> None:
        if len(key) < 16:
            raise ValueError("a stream-ticket key needs at least 16 bytes")
        self._key = key
        self.open_seconds = open_seconds
        self.resume_seconds = resume_seconds

    @classmethod
    def for_settings(cls, settings: Settings | None) -> StreamTickets:
        http = settings.http if settings is not None else HttpSettings()
        if settings is not None and settings.cursor_secret:
            key = hmac.new(settings.cursor_secret.encode(), _KEY_LABEL, hashlib.sha256).digest()
        else:
            # Only an app built without settings (the OpenAPI generator) gets here; it serves
            # nobody, and its tickets could verify only inside this process anyway.
            key = secrets.token_bytes(32)
        return cls(
            key, open_seconds=http.stream_ticket_seconds, resume_seconds=http.stream_ticket_resume_seconds
        )

    def mint(
        self, claims: Claims, ctx: RequestContext, path: str, *, token_exp: float | None
    ) -> tuple[str, float, float]:
        """``(ticket, open_by, resume_until)`` for ``path``, in the identity of ``claims``."""
        now = time.time()
        ceiling = token_exp if token_exp is not None else now + self.open_seconds
        open_by = min(now + self.open_seconds, ceiling)
        resume_until = max(open_by, min(now + self.resume_seconds, ceiling))
        payload: dict[str, Any] = {
            "use": _USE,
            "stream": path,
            "sub": claims.sub,
            "tenant_id": claims.tenant_id,
            "mode": claims.mode,
            "roles": list(claims.roles),
            "iat": int(now),
            "open_by": open_by,
            "exp": resume_until,
            "jti": secrets.token_urlsafe(12),
        }
        if claims.system:
            payload["system"] = True
        for name in ("agent_id", "project_id"):
            value = getattr(claims, name)
            if value is not None:
                payload[name] = value
        scope = {name: value for name in SCOPE_FIELDS if (value := getattr(ctx, name)) is not None}
        if scope:
            payload["scope"] = scope
        return jwt.encode(payload, self._key, algorithm=_ALGORITHM), open_by, resume_until

    def verify(self, ticket: str, *, method: str, path: str, resuming: bool) -> tuple[Claims, StreamTicket]:
        """The identity a ticket carries, if it may open ``method path`` now (401 otherwise)."""
        if not ticket or len(ticket) > MAX_TICKET_CHARS:
            raise invalid_ticket("malformed", "the stream ticket is not valid")
        try:
            payload = jwt.decode(
                ticket,
                self._key,
                algorithms=[_ALGORITHM],
                options={"require": ["exp", "iat", "sub", "stream", "open_by", "use"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise invalid_ticket("expired", "the stream ticket has expired; mint a new one") from None
        except jwt.InvalidSignatureError:
            raise invalid_ticket("bad_signature", "the stream ticket is not valid") from None
        except jwt.InvalidTokenError:
            raise invalid_ticket("malformed", "the stream ticket is not valid") from None
        stream, open_by, scope = payload.get("stream"), payload.get("open_by"), payload.get("scope", {})
        if (
            payload.get("use") != _USE
            or not isinstance(stream, str)
            or isinstance(open_by, bool)
            or not isinstance(open_by, int | float)
            or not _valid_scope(scope)
        ):
            raise invalid_ticket("malformed", "the stream ticket is not valid")
        if method != "GET" or path != stream:
            raise invalid_ticket(
                "wrong_stream", "a stream ticket opens only the one stream it was minted for (GET)"
            )
        if not resuming and time.time() > open_by:
            raise invalid_ticket(
                "expired",
                "the stream ticket's time to open its stream is over; mint a new one"
                " (reconnects with Last-Event-ID are accepted a while longer)",
            )
        claims = claims_from_payload(payload)
        return claims, StreamTicket(
            stream=stream, scope=dict(scope), open_by=float(open_by), resume_until=float(payload["exp"])
        )


def _valid_scope(scope: Any) -> bool:
    return isinstance(scope, dict) and all(
        name in SCOPE_FIELDS and isinstance(value, str) and ID_PATTERN.fullmatch(value)
        for name, value in scope.items()
    )


def ticket_from_query(query_string: bytes) -> str | None:
    """The ``ticket`` parameter of a raw query string; ``None`` when absent. Sent twice it is
    refused: which copy a proxy or a framework would honour differs."""
    if b"ticket" not in query_string:  # the common case costs one scan
        return None
    from urllib.parse import parse_qsl

    found = [
        value
        for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
        if name == TICKET_PARAM
    ]
    if not found:
        return None
    if len(found) > 1:
        raise invalid_ticket("repeated", "send one stream ticket")
    return found[0]
