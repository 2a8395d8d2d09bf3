"""The uniform error envelope (SPEC §4) on every 4xx/5xx, framework errors included.

Litestar's own exceptions (unknown path, wrong method, validation, malformed JSON, oversized
body) are translated to stable ``request.*`` codes; a :class:`NorthstarError` is rendered 1:1;
anything unexpected becomes ``internal.error`` (500) with the request id, is logged with its
stack trace server-side, and never shows one to the caller.
"""

from __future__ import annotations

import logging
import os
import random
import re
import uuid
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response
from litestar.datastructures import MutableScopeHeaders
from litestar.exceptions import (
    HTTPException,
    InternalServerException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    SerializationException,
    ValidationException,
)
from litestar.types import Message, Scope

from northstar_core.errors import Gate, NorthstarError
from northstar_core.routing import served_by

log = logging.getLogger("northstar.http")

# An error code: a domain and a name, dotted (contracts/error_codes.json lists them all).
ERROR_CODE_PATTERN: Final = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$"


class ErrorBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What went wrong: a stable code, a message for humans, the status, the refusing gate (if
    any), the request id (null in a stream's ``error`` event) and details per code."""

    code: Annotated[str, msgspec.Meta(pattern=ERROR_CODE_PATTERN, description="stable dotted code")]
    message: Annotated[str, msgspec.Meta(description="for humans; never parse it")]
    http_status: Annotated[int, msgspec.Meta(ge=400, le=599, description="equal to the response status")]
    gate: Annotated[Gate | None, msgspec.Meta(description="the safety gate that refused, if any")]
    request_id: Annotated[
        str | None, msgspec.Meta(description="equal to the X-Request-Id response header")
    ]
    details: Annotated[dict[str, Any], msgspec.Meta(description="structured, per code")]


class ErrorEnvelope(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of every 4xx/5xx answer (and the data of a stream's ``error`` event)."""

    error: ErrorBody


REQUEST_ID_HEADER: Final = "x-request-id"
BACKEND_HEADER: Final = "x-northstar-backend"
_REQUEST_ID_OK: Final = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_IDS: Final = random.Random(os.urandom(32))
# a forked worker must not repeat its parent's sequence
os.register_at_fork(after_in_child=lambda: _IDS.seed(os.urandom(32)))


def request_id(scope: Scope) -> str:
    """The request's id: the caller's ``X-Request-Id`` if well-formed, else a new UUID.

    Computed once per request and kept in the scope state, so the envelope, the context and
    the echoed header always agree.
    """
    state: dict[str, Any] = scope.setdefault("state", {})  # type: ignore[typeddict-item]
    rid = state.get("northstar_request_id")
    if rid is None:
        presented = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                presented = value.decode("latin-1")
                break
        # A correlation id, not a secret: a random-module UUID4 avoids a getrandom syscall per
        # request (benchmark P1). A private generator, so code that seeds the global one (a
        # test framework, a library) never makes two requests share an id.
        rid = (
            presented
            if _REQUEST_ID_OK.fullmatch(presented)
            else str(uuid.UUID(bytes=_IDS.randbytes(16), version=4))
        )
        state["northstar_request_id"] = rid
    return str(rid)


async def before_send(message: Message, scope: Scope) -> None:
    """Echo ``X-Request-Id`` on every response and label responses served by lab backends."""
    if message["type"] != "http.response.start" or scope.get("type") != "http":
        return
    headers = MutableScopeHeaders.from_message(message)
    headers[REQUEST_ID_HEADER] = request_id(scope)
    labels = served_by.get()
    if labels:
        headers[BACKEND_HEADER] = ", ".join(sorted(labels))
        # this request's record is sent; never let it leak into the next one on this context
        served_by.set(None)


def envelope_response(exc: NorthstarError, scope: Scope) -> Response[Any]:
    headers = dict(exc.headers)
    if exc.http_status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="northstar"')
    return Response(
        exc.envelope(request_id(scope)),
        status_code=exc.http_status,
        headers=headers,
        media_type="application/json",
    )


def _validation_details(exc: ValidationException) -> dict[str, Any]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    errors = [
        {"field": e.get("key"), "source": e.get("source"), "message": str(e.get("message"))[:300]}
        for e in extra
        if isinstance(e, dict)
    ]
    return {"errors": errors}


def _caused_by_decoding(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, msgspec.DecodeError | SerializationException):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _raised_reading_the_body(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) was raised by Litestar reading or decoding the body.

    msgspec reports invalid UTF-8 inside a JSON string as ``UnicodeDecodeError``, which
    Litestar does not wrap as a serialization error; it is still the client's malformed body.
    Matching on where it was raised keeps a decoding bug in the server's own code a 500.
    """
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        tb = seen.__traceback__
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename.replace("\\", "/")
            if "/litestar/" in filename and any(
                part in filename for part in ("/serialization/", "/_kwargs/", "/connection/")
            ):
                return True
            tb = tb.tb_next
        seen = seen.__cause__ or seen.__context__
    return False


def client_disconnected(exc: BaseException) -> bool:
    """Whether Litestar gave up reading the body because the client went away."""
    return isinstance(exc, InternalServerException) and "disconnected" in str(exc.detail).lower()


def translate(exc: Exception) -> NorthstarError:
    """The envelope error for any exception raised while serving a request."""
    if isinstance(exc, NorthstarError):
        return exc
    if isinstance(exc, UnicodeError) and _raised_reading_the_body(exc):
        return NorthstarError("request.malformed_json", "the request body is not valid UTF-8 JSON", 400)
    if client_disconnected(exc):
        # Nobody will read this answer; it is not a server failure either.
        return NorthstarError(
            "request.invalid", "the client disconnected before the request body was received", 400
        )
    if isinstance(exc, ValidationException):
        return NorthstarError(
            "request.validation_failed",
            "the request does not match the expected shape",
            422,
            details=_validation_details(exc),
        )
    if isinstance(exc, RecursionError):
        # msgspec refuses absurdly nested JSON with RecursionError, outside Litestar's wrapping
        return NorthstarError(
            "request.validation_failed",
            "the request body is nested too deeply",
            422,
            details={"errors": [{"field": "body", "source": "body", "message": "nesting too deep"}]},
        )
    if isinstance(exc, NotFoundException):
        return NorthstarError("request.not_found", "no such resource or path", 404)
    if isinstance(exc, MethodNotAllowedException):
        allow = (exc.headers or {}).get("allow") or (exc.headers or {}).get("Allow")
        return NorthstarError(
            "request.method_not_allowed",
            "this method is not allowed on this path",
            405,
            headers={"Allow": allow} if allow else None,
        )
    if isinstance(exc, NotAuthorizedException):
        return NorthstarError("auth.missing_token", "an 'Authorization: Bearer' token is required", 401)
    if isinstance(exc, PermissionDeniedException):
        return NorthstarError("auth.forbidden", "not allowed", 403)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        detail = str(exc.detail or "")
        if status == 413:
            return NorthstarError(
                "request.body_too_large", "the request body exceeds the configured limit", 413
            )
        if status == 400 and (_caused_by_decoding(exc) or "malformed" in detail.lower()):
            return NorthstarError("request.malformed_json", "the request body is not valid JSON", 400)
        if 400 <= status < 500:
            return NorthstarError(
                "request.invalid", detail[:300] or "the request is invalid", status
            )
        return NorthstarError("internal.error", "the server could not complete the request", status)
    return NorthstarError("internal.error", "the server could not complete the request", 500)


def describe_cause(exc: BaseException, limit: int = 4) -> str | None:
    """What caused ``exc``: its chain of causes as ``Type: message`` (outermost first), or
    ``None`` if it has none. For the server log only (messages are cut at 300 characters)."""
    parts: list[str] = []
    seen: BaseException | None = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    while seen is not None and len(parts) < limit:
        parts.append(f"{type(seen).__name__}: {seen}"[:300])
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return " <- ".join(parts) or None


def log_failure(err: NorthstarError, exc: BaseException, method: str, path: str, scope: Scope) -> None:
    """The one server-log record of a 5xx answer (a backend down, a route that cannot be served,
    a bug): its code and cause. The access line says only that it happened."""
    unexpected = not isinstance(exc, NorthstarError)
    cause = describe_cause(exc) if not unexpected else f"{type(exc).__name__}: {exc}"[:300]
    # a readiness probe answering "not ready" is a state report, polled; the fault behind it
    # is logged by the requests it fails
    level = logging.WARNING if err.code.endswith(".not_ready") else logging.ERROR
    log.log(
        level,
        "%s %s failed: %s (%s)",
        method,
        path,
        err.code,
        cause or err.message,
        exc_info=exc if unexpected else None,
        extra={
            "request_id": request_id(scope),
            "error_code": err.code,
            "status": err.http_status,
            "cause": cause or err.message,
        },
    )


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Litestar exception handler for every exception type."""
    err = translate(exc)
    if client_disconnected(exc):
        log.info(
            "client disconnected during %s %s (request %s)",
            request.method,
            request.url.path,
            request_id(request.scope),
        )
    elif err.http_status >= 500:
        log_failure(err, exc, request.method, request.url.path, request.scope)
    return envelope_response(err, request.scope)


EXCEPTION_HANDLERS: Final[dict[type[Exception] | int, Any]] = {Exception: handle_exception}
