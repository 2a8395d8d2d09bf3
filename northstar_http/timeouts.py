"""Bounded request read times: the body must arrive within a total deadline.

A client that sends its headers and then drip-feeds the body (one byte now and then) would
otherwise hold a request task, its buffers and a connection for as long as it likes. The
deadline counts from the moment the request reaches the app and covers the whole body, so
sending slowly but steadily does not extend it; on expiry the app answers 408
``request.timeout`` (the usual envelope) and the connection is closed, because the rest of
the body is still on its way.

The request head has its own bound, enforced by the server's protocol (see
:mod:`northstar_http.server`): the app only ever sees requests whose head is complete.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from northstar_core.errors import NorthstarError

DEFAULT_HEADER_TIMEOUT_SECONDS: Final = 10.0
DEFAULT_BODY_TIMEOUT_SECONDS: Final = 30.0


def _http_setting(settings: Any, name: str, default: float) -> float:
    value = getattr(getattr(settings, "http", None), name, None)
    return float(value) if isinstance(value, int | float) and value > 0 else default


def header_timeout_seconds(settings: Any) -> float:
    """``http.header_timeout_seconds`` of ``settings`` (the default when absent)."""
    return _http_setting(settings, "header_timeout_seconds", DEFAULT_HEADER_TIMEOUT_SECONDS)


def body_timeout_seconds(settings: Any) -> float:
    """``http.body_timeout_seconds`` of ``settings`` (the default when absent)."""
    return _http_setting(settings, "body_timeout_seconds", DEFAULT_BODY_TIMEOUT_SECONDS)


def body_timeout_error(timeout: float) -> NorthstarError:
    return NorthstarError(
        "request.timeout",
        "the request body was not received in time",
        408,
        details={"timeout_seconds": timeout},
        # The unread rest of the body would otherwise be taken for the next request.
        headers={"Connection": "close"},
    )


def _has_body(headers: Any) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class BodyDeadlineMiddleware:
    """ASGI middleware: the whole request body within ``timeout`` seconds, else 408.

    Requests without a body pass straight through (nothing to bound, and no cost on the
    cheap reads). Once the last body chunk has arrived, ``receive`` is passed through
    unchanged: a streaming response waits on it for the disconnect, for as long as it runs.
    """

    def __init__(self, app: ASGIApp, timeout: float = DEFAULT_BODY_TIMEOUT_SECONDS) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope.get("headers", ())):
            await self.app(scope, receive, send)
            return
        timeout = self.timeout
        deadline = asyncio.get_running_loop().time() + timeout
        complete = False

        async def bounded_receive() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                # timeout_at runs ``receive`` inline: a chunk already buffered is returned
                # even when the app asks for it after the deadline (the client was on time).
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise body_timeout_error(timeout) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, bounded_receive, send)
