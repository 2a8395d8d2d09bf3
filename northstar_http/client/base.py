"""The Python client's base: httpx, bearer auth, envelopes raised as ``NorthstarError``, SSE.

A non-2xx answer is re-raised as the same :class:`NorthstarError` the server raised (same
code, status, gate, details) with ``upstream = {service, status, request_id}``, so code calling
the service over HTTP handles errors exactly like code embedding the library.

Live streams are read with httpx-sse. :meth:`BaseClient.sse` is one connection;
:meth:`BaseClient.follow` is what the domain clients' ``follow()`` use: it reconnects after a
dropped connection, a server restart or a mid-stream backend failure, sending the id of the
last event it delivered as ``Last-Event-ID``, so the caller sees every event once and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import msgspec
from httpx_sse import aconnect_sse

from northstar_core.errors import NorthstarError

T = TypeVar("T")

# Answers after which the same request may succeed: the service or its backend is restarting.
RETRYABLE_STATUSES = frozenset({502, 503, 504})


class _Replayed(msgspec.Struct):
    replayed: bool = False


class SseMessage(msgspec.Struct, frozen=True):
    """One Server-Sent Event as received (``data`` is the raw text; use :meth:`json`)."""

    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return msgspec.json.decode(self.data)


class BaseClient:
    """Holds the connection, the token and identity headers; domain clients wrap it.

    ``reconnect_delay`` is the pause before a live stream reconnects (default: the server's
    ``retry:`` hint); ``max_reconnects`` bounds consecutive failed reconnects (default: keep
    trying, as a server restart may take a while); ``sse_read_timeout`` is how long a stream
    may stay silent — the server sends heartbeats — before it counts as dropped.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        service: str = "northstar",
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        reconnect_delay: float | None = None,
        max_reconnects: int | None = None,
        sse_read_timeout: float | None = 60.0,
    ) -> None:
        self.service = service
        self.reconnect_delay = reconnect_delay
        self.max_reconnects = max_reconnects
        self.sse_read_timeout = sse_read_timeout
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}", **(headers or {})},
            timeout=timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> BaseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def error_from(self, response: httpx.Response, body: bytes) -> NorthstarError:
        upstream = {
            "service": self.service,
            "status": response.status_code,
            "request_id": response.headers.get("x-request-id"),
        }
        try:
            decoded = msgspec.json.decode(body)
            return NorthstarError.from_envelope(decoded, upstream=upstream)
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            return NorthstarError(
                "upstream.bad_response",
                f"{self.service} answered {response.status_code} without an error envelope",
                502,
                details={"status": response.status_code, "body": body[:200].decode("utf-8", "replace")},
                upstream=upstream,
            )

    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request; the response, or raise the server's error."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        content = None if json is None else msgspec.json.encode(json)
        sent = dict(headers or {})
        if content is not None:
            sent["Content-Type"] = "application/json"
        response = await self._http.request(method, path, content=content, params=query, headers=sent)
        if response.status_code >= 400:
            raise self.error_from(response, response.content)
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send a request; the decoded JSON body, or raise the server's error."""
        response = await self.send(method, path, json=json, params=params, headers=headers)
        return msgspec.json.decode(response.content) if response.content else None

    async def call(
        self,
        type_: type[T],
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> T:
        """Send a request and decode the answer as ``type_`` (the library's result type)."""
        response = await self.send(method, path, json=json, params=params, headers=headers)
        return self.decode(type_, response.content, response)

    async def call_replayable(
        self, type_: type[T], method: str, path: str, *, json: Any = None
    ) -> tuple[T, bool]:
        """A write answering its result with ``replayed`` beside its fields: both, as the
        library's ``(result, replayed)``."""
        response = await self.send(method, path, json=json)
        result = self.decode(type_, response.content, response)
        return result, self.decode(_Replayed, response.content, response).replayed

    def decode(self, type_: type[T], body: bytes, response: httpx.Response | None = None) -> T:
        try:
            return msgspec.json.decode(body, type=type_)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            status = response.status_code if response is not None else None
            raise NorthstarError(
                "upstream.bad_response",
                f"{self.service} answered a body that is not a {getattr(type_, '__name__', type_)}: {exc}",
                502,
                details={"status": status, "body": body[:200].decode("utf-8", "replace")},
                upstream={"service": self.service, "status": status},
            ) from None

    def _stream_error(self, message: SseMessage) -> NorthstarError:
        upstream: dict[str, Any] = {"service": self.service, "status": 200, "request_id": None}
        try:
            return NorthstarError.from_envelope(message.json(), upstream=upstream)
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            return NorthstarError(
                "upstream.bad_response",
                f"{self.service} ended a stream with an unreadable error event",
                502,
                details={"body": message.data[:200]},
                upstream=upstream,
            )

    async def sse(
        self,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        last_event_id: str | None = None,
        on_retry: Callable[[int], None] | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncGenerator[SseMessage, None]:
        """One connection to an SSE stream: its events until the server ends it.

        Comments (heartbeats) and data-less frames are skipped; ``on_retry`` receives the
        server's ``retry:`` hint (ms) and ``on_open`` is called once the stream is accepted.
        Errors before the stream starts (e.g. 410 for a bad cursor) are raised as
        :class:`NorthstarError`."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        timeout = httpx.Timeout(self._http.timeout.connect, read=self.sse_read_timeout)
        async with aconnect_sse(
            self._http, "GET", path, params=query, headers=headers, timeout=timeout
        ) as source:
            response = source.response
            if response.status_code >= 400:
                raise self.error_from(response, await response.aread())
            if on_open is not None:
                on_open()
            async for event in source.aiter_sse():
                if event.retry is not None and on_retry is not None:
                    on_retry(event.retry)
                if event.data:  # an event with empty data is not dispatched (SSE spec)
                    yield SseMessage(event.event, event.data, event.id or None)

    async def follow(
        self,
        path: str,
        decode: Callable[[SseMessage], T],
        *,
        cursor: str | None = None,
        start: Callable[[], Awaitable[str | None]] | None = None,
    ) -> AsyncGenerator[T, None]:
        """Every event of an SSE stream after ``cursor``, across reconnects, each once and in
        order; ``decode`` turns a message into the library's type.

        Without a cursor the stream starts at its head: ``start`` (when given) reads the
        head's cursor first, so that a connection dropped before the first event still
        resumes at the right place. A refusal (4xx, e.g. 410 for a cursor the server no
        longer accepts) is raised; a dropped connection, a transport error, a 502/503/504
        or an ``error`` event (the server's store failed mid-stream) leads to a reconnect
        with ``Last-Event-ID`` = the last delivered event. The first connection is not
        retried: a wrong address or a server that is down fails at once.
        """
        position = cursor
        if position is None and start is not None:
            position = await start()
        hint = [1.0]  # seconds; the server's retry: hint replaces it
        opened = [False]
        failures = 0

        def on_retry(ms: int) -> None:
            hint[0] = ms / 1000

        def on_open() -> None:
            opened[0] = True

        while True:
            error: BaseException | None = None
            try:
                stream = self.sse(path, last_event_id=position, on_retry=on_retry, on_open=on_open)
                async with contextlib.aclosing(stream):
                    async for message in stream:
                        if message.event == "error":
                            # the server's store failed; the stream ends here and is resumed
                            # after the last delivered event
                            error = self._stream_error(message)
                            break
                        item = decode(message)
                        failures = 0
                        position = message.id or position
                        yield item
            except NorthstarError as exc:
                if exc.http_status not in RETRYABLE_STATUSES or not opened[0]:
                    raise
                error = exc
            except httpx.TransportError as exc:
                if not opened[0]:
                    raise
                error = exc
            failures += 1
            if self.max_reconnects is not None and failures > self.max_reconnects:
                if error is not None:
                    raise error
                raise NorthstarError(
                    "upstream.bad_response",
                    f"{self.service} kept ending the stream {path}",
                    502,
                    details={"reconnects": failures - 1},
                    upstream={"service": self.service},
                )
            delay = self.reconnect_delay if self.reconnect_delay is not None else hint[0]
            await asyncio.sleep(min(delay * min(failures, 5), 30.0))
