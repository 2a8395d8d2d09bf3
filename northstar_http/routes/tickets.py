"""``POST /sse/tickets``: a short-lived ticket that lets a browser's ``EventSource`` open one
SSE stream (see :mod:`northstar_http.tickets` for what it carries and how long it lives)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

import jwt
import msgspec
from litestar import Request, post
from litestar.datastructures import State
from litestar.params import JSONBody

from northstar_core.clock import iso
from northstar_core.errors import NorthstarError
from northstar_core.identity import ID_PATTERN, Claims
from northstar_http.deps import Ctx
from northstar_http.tickets import TICKET_PARAM, StreamKind, StreamTickets, stream_path

# An id (the id grammar) that is also a URL path segment a browser leaves alone: not "." or "..".
STREAM_ID_PATTERN: Final = r"^(?!\.{1,2}$)" + ID_PATTERN.pattern.removeprefix("^")


class TicketIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The one stream the ticket opens: ``chat`` (a thread id) or ``canvas`` (a canvas id)."""

    kind: StreamKind
    id: Annotated[str, msgspec.Meta(pattern=STREAM_ID_PATTERN)]

    def __post_init__(self) -> None:
        # a pattern is searched, and `$` also matches before a final newline: match in full
        if not re.fullmatch(STREAM_ID_PATTERN, self.id):
            raise ValueError(f"id must match {STREAM_ID_PATTERN}")


class TicketOut(msgspec.Struct, kw_only=True):
    ticket: str
    # the stream's path, and the URL (path + ?ticket=) to give EventSource
    stream: str
    url: str
    # the stream must be opened before this; an EventSource may reconnect to `url` (with
    # Last-Event-ID) until resume_until, after which the page mints a new ticket
    expires_at: str
    resume_until: str


@post(
    "/sse/tickets",
    tags=["streams"],
    summary="Mint a short-lived ticket that opens one SSE stream (for EventSource)",
    status_code=201,
)
async def mint_ticket(
    ctx: Ctx, request: Request[Any, Any, Any], state: State, data: JSONBody[TicketIn]
) -> TicketOut:
    if not isinstance(request.auth, str):
        # a ticket opens its stream and nothing else; the auth middleware refuses it first
        raise NorthstarError("auth.missing_token", "an 'Authorization: Bearer' token is required", 401)
    claims: Claims = request.user
    tickets: StreamTickets = state.tickets
    path = stream_path(data.kind, data.id)
    # the token was verified by the auth middleware; only its expiry is read here
    exp = jwt.decode(request.auth, options={"verify_signature": False}).get("exp")
    token_exp = float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
    ticket, open_by, resume_until = tickets.mint(claims, ctx, path, token_exp=token_exp)
    return TicketOut(
        ticket=ticket,
        stream=path,
        url=f"{path}?{TICKET_PARAM}={ticket}",
        expires_at=iso(open_by),
        resume_until=iso(resume_until),
    )


ROUTES: Final[list[Any]] = [mint_ticket]
