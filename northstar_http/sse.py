"""Server-Sent Events shared by every live stream (chat, canvas, timeline…).

Usage in a handler: validate the cursor *before* building the response (so a bad cursor is a
410 envelope, not a broken stream), then return ``sse_response(events, http, start=...)``
where ``events`` yields ``SseEvent`` or ``None`` (an idle heartbeat) — typically adapted from
``engines.tails.follow(...)`` (see ``northstar_core.kernel.tail``). The event ``id`` must be
the event's cursor, so ``Last-Event-ID`` and ``?cursor=`` are interchangeable on reconnect.

``start`` is the cursor of the position the stream starts from (the client's resume cursor,
or the head's when the subscription was made). The opening frame carries it as an id-only
frame — ``id:``, ``retry:`` and a comment, no ``data:`` — which sets the client's last event
id without dispatching a message; so a client that drops before the first event reconnects
with a ``Last-Event-ID`` and misses nothing written in between.

On shutdown the server calls :func:`close_event_streams`: every open stream sends a last
comment and ends (see :class:`EventStreams`), so a stopping server is not held open by its
subscribers and they reconnect, without a gap, wherever the service runs next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any, Final

import msgspec
from litestar import Request
from litestar.datastructures import MutableScopeHeaders, State
from litestar.response import ServerSentEvent, Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import Receive, Scope, Send
from litestar.utils.empty import Empty
from litestar.utils.scope.state import ScopeState

from northstar_adapters.config import HttpSettings
from northstar_core.errors import NorthstarError
from northstar_http.errors import describe_cause
from northstar_http.observability import sse_subscribers

log = logging.getLogger("northstar.sse")

SSE_HEADERS: Final = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class SseEvent(msgspec.Struct, frozen=True):
    event: str
    data: Any
    id: str


def resume_cursor(request: Request[Any, Any, Any], cursor: str | None) -> str | None:
    """Where a client resumes: ``Last-Event-ID`` wins over ``?cursor=`` (SPEC §6 "SSE")."""
    return request.headers.get("last-event-id") or cursor or None


HEARTBEAT: Final = b": heartbeat"
PROBE_SECONDS: Final = 1.0
# The last frame of a stream ended by a server shutdown: a comment, so it carries no `id` and
# the client's Last-Event-ID stays on the last event it received; its reconnect (to this
# server restarted, or another replica) resumes exactly after that event.
SHUTDOWN_FRAME: Final = b": server shutting down; reconnect with Last-Event-ID\r\n\r\n"
# How long that last frame may take to reach a client that is not reading.
LAST_FRAME_SECONDS: Final = 1.0
STREAMS_STATE_KEY: Final = "event_streams"
_SHUTDOWN_MESSAGE: Final = "northstar: event streams closed for shutdown"


class EventStreams:
    """The event streams one app is serving, so that a server shutdown can end them at once.

    An SSE response never finishes by itself: left alone, a stopping server waits out its
    graceful-shutdown timeout and then cancels each stream mid-write (an ERROR and a traceback
    per stream in its log). :meth:`close` instead cancels every stream's own task where it is
    waiting (for an event, a heartbeat or a slow client); the stream takes that cancellation as
    the signal to send :data:`SHUTDOWN_FRAME` and finish its response normally. A stream that
    starts after :meth:`close` gets that frame at once. One set entry per open stream: nothing
    else (no task, no waiter) is added per subscriber.
    """

    __slots__ = ("_tasks", "closing")

    def __init__(self) -> None:
        self.closing = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def close(self) -> None:
        """End every open stream (idempotent; call it from the event loop's thread)."""
        if self.closing:
            return
        self.closing = True
        for task in self._tasks:
            task.cancel(_SHUTDOWN_MESSAGE)

    def opened(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)

    def ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)


async def _send_last_frame(send: Send) -> None:
    try:
        async with asyncio.timeout(LAST_FRAME_SECONDS):
            await send({"type": "http.response.body", "body": SHUTDOWN_FRAME, "more_body": False})
    except TimeoutError:
        pass  # a client that does not read: the server closes its connection


def event_streams(app: Any) -> EventStreams | None:
    """The :class:`EventStreams` of ``app``: a Litestar app, or a server's wrapper around one
    (uvicorn's proxy-headers middleware, say)."""
    for _ in range(16):
        state = getattr(app, "state", None)
        if isinstance(state, State):
            streams = state.get(STREAMS_STATE_KEY)
            return streams if isinstance(streams, EventStreams) else None
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def close_event_streams(app: Any) -> None:
    """End the open event streams of ``app`` (see :class:`EventStreams`); servers call this
    when they begin to shut down."""
    streams = event_streams(app)
    if streams is not None:
        streams.close()


async def _client_gone(receive: Receive) -> bool:
    """Whether the client has disconnected, without waiting (and without a task): a pending
    ``http.disconnect`` is returned at once by the server; otherwise ``receive`` would block
    and the zero timeout ends the wait."""
    try:
        async with asyncio.timeout(0):
            while (await receive())["type"] != "http.disconnect":
                pass  # the (empty) request body of the GET
            return True
    except TimeoutError:
        return False


def _field(value: str) -> bytes:
    # SSE fields end at a line break: never let one inside an id or event name split a frame
    return value.replace("\r", "").replace("\n", "").encode()


def opening_frame(start: str, retry_ms: int) -> bytes:
    """The first frame of every stream: a comment, the start position as ``id`` and the
    ``retry`` hint. Without a ``data`` line no message is dispatched, but the client's last
    event id becomes ``start`` (the SSE processing model sets it before the empty-data check)."""
    return b": open\r\nid: " + _field(start) + b"\r\nretry: " + str(retry_ms).encode() + b"\r\n\r\n"


HEARTBEAT_FRAME: Final = HEARTBEAT + b"\r\n\r\n"


class _Frames:
    """What a stream sends: its opening frame, then ``events`` encoded as they come (by
    ``convert`` first, when given). Held by the response, which encodes and sends each event
    itself: no generator of frames between the events and the connection."""

    __slots__ = ("convert", "events", "opening")

    def __init__(
        self,
        opening: bytes,
        events: AsyncGenerator[Any, None],
        convert: Callable[[Any], SseEvent] | None,
    ) -> None:
        self.opening = opening
        self.events = events
        self.convert = convert

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return _frames(self)

    def encode(self, item: Any) -> bytes:
        """The frame of one item of ``events`` (``None``: an idle heartbeat)."""
        if item is None:
            return HEARTBEAT_FRAME
        ev: SseEvent = self.convert(item) if self.convert is not None else item
        return (
            b"id: " + _field(ev.id) + b"\r\nevent: " + _field(ev.event)
            + b"\r\ndata: " + msgspec.json.encode(ev.data) + b"\r\n\r\n"
        )


def _error_frame(exc: NorthstarError) -> bytes:
    """The last frame of a stream whose store failed mid-stream (e.g. backend unavailable):
    the error in the envelope's shape. It has no id, so the client's Last-Event-ID stays on
    the last delivered event and its reconnect resumes exactly there."""
    if exc.http_status >= 500:  # the fault's one log record (the response was a 200)
        log.error(
            "event stream ended: %s (%s)",
            exc.code,
            describe_cause(exc) or exc.message,
            extra={"error_code": exc.code, "cause": describe_cause(exc) or exc.message},
        )
    return b"event: error\r\ndata: " + msgspec.json.encode(exc.envelope()) + b"\r\n\r\n"


async def _frames(source: _Frames) -> AsyncGenerator[bytes, None]:
    """The frames of ``source`` as a generator, for a consumer other than the response."""
    yield source.opening
    async with contextlib.aclosing(source.events):  # closing unsubscribes the tail at once
        try:
            async for item in source.events:
                yield source.encode(item)
        except NorthstarError as exc:
            yield _error_frame(exc)


class _EventStreamASGI(ASGIStreamingResponse):
    """Litestar's streaming response without its per-response anyio task group and without a
    watcher task: the frames are encoded and sent from the request's own task, all in this
    one coroutine, and a disconnect is noticed at the next heartbeat (or, on a busy stream, at
    most once a second) by a non-blocking ``receive``. An idle subscriber holds its
    connection, its request task and its events generator, nothing else (benchmark P5:
    server memory per idle subscriber). A stream registers with the app's
    :class:`EventStreams`, and takes its shutdown cancellation as the signal to send
    :data:`SHUTDOWN_FRAME` and finish normally."""

    __slots__ = ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope.get("litestar_app")
        streams = app.state.get(STREAMS_STATE_KEY) if app is not None else None
        if not isinstance(streams, EventStreams):
            streams = None
        source = self.iterator
        assert isinstance(source, _Frames)
        await self.start_response(send=send)
        # The request is answered: what was kept to build the response (its headers, the
        # parsed request headers, the dependency cache) is dead weight for the stream's life.
        self.headers = MutableScopeHeaders()
        state = ScopeState.from_scope(scope)
        state.headers = Empty
        state.dependency_cache = Empty
        state.parsed_query = Empty
        # So are the request's headers and its credential (the bearer token, in "auth"): every
        # middleware and the handler have read them by now. The headers are emptied in place,
        # which frees the server's reference to them too.
        request_headers = scope.get("headers")
        if isinstance(request_headers, list):
            request_headers.clear()
        if "auth" in scope:
            scope["auth"] = None
        events = source.events
        if streams is not None and streams.closing:
            await events.aclose()
            await _send_last_frame(send)
            await self.after_response()
            return
        task = asyncio.current_task()
        assert task is not None
        if streams is not None:
            streams.opened(task)
        try:
            sse_subscribers(1)
            try:
                # Sent at once: it flushes the headers (clients see the stream is live) and
                # pins the client's resume position before any event exists.
                opening, source.opening = source.opening, b""  # sent once: not kept
                await send({"type": "http.response.body", "body": opening, "more_body": True})
                del opening
                loop = asyncio.get_running_loop()
                probed = loop.time()
                gone = False
                try:
                    async for item in events:
                        body = source.encode(item)
                        now = loop.time()
                        if item is None or now - probed >= PROBE_SECONDS:
                            probed = now
                            # sends to a gone client are dropped silently: stop here
                            gone = await _client_gone(receive)
                            if gone:
                                break
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                except NorthstarError as exc:
                    error = _error_frame(exc)
                    await send({"type": "http.response.body", "body": error, "more_body": True})
                if not gone:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                sse_subscribers(-1)
                await events.aclose()  # unsubscribes the live tail now, not at garbage collection
        except asyncio.CancelledError:
            # Only the cancellation close() asked for ends the stream cleanly; any other one
            # (the server's own timeout, say) stays a cancellation.
            if streams is None:
                raise
            streams.ended(task)
            if not streams.closing or task.uncancel() > 0:
                raise
            await _send_last_frame(send)
        finally:
            # No await between the end of the stream and this: close() only ever cancels a
            # task suspended inside the try above.
            if streams is not None:
                streams.ended(task)
        await self.after_response()


class EventStream(ServerSentEvent):
    """A ``text/event-stream`` response served by :class:`_EventStreamASGI` from ready-encoded
    frames. (A :class:`ServerSentEvent` for the OpenAPI schema; its constructor is bypassed:
    Litestar's SSE iterator would first hop to a worker thread and then keep that exception's
    traceback alive for the whole life of the stream.)"""

    def __init__(self, frames: _Frames, *, headers: dict[str, str]) -> None:
        Stream.__init__(self, frames, media_type="text/event-stream", headers=headers)
        self.headers.setdefault("Connection", "keep-alive")

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        response = super().to_asgi_response(*args, **kwargs)
        response.__class__ = _EventStreamASGI
        return response


def sse_response(
    events: AsyncGenerator[Any, None],
    http: HttpSettings,
    convert: Callable[[Any], SseEvent] | None = None,
    *,
    start: str,
) -> ServerSentEvent:
    """Stream ``events`` (``SseEvent``, or items ``convert`` maps to one; ``None`` = idle
    heartbeat) after an opening frame whose ``id`` is ``start``, the cursor of the position
    ``events`` begins after. Passing the core's generator with a ``convert`` function, rather
    than wrapping it in another generator, keeps an idle subscriber's chain short (benchmark P5)."""
    frames = _Frames(opening_frame(start, http.sse_retry_ms), events, convert)
    return EventStream(frames, headers=dict(SSE_HEADERS))
