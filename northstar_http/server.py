"""The uvicorn server for the app, with a bounded time to receive every request head.

uvicorn bounds the idle time between requests on a keep-alive connection, but not the time a
client takes to send a request head: a client that sends one header byte every few seconds
keeps its connection (a file descriptor, buffers, a slot in the server's connection set) for
ever, and a few hundred such clients exhaust the process. The protocol classes below add that
bound to uvicorn's two HTTP/1.1 implementations (h11 and httptools):

* the deadline is armed when a connection opens and again when a response completes on a
  connection that stays open, and disarmed as soon as the next request head is complete; so
  every request of a keep-alive connection gets the whole bound, and time spent serving a
  request does not count against it;
* on expiry the connection is closed. When part of a request head had arrived, a 408
  ``request.timeout`` envelope is sent first; a connection that sent nothing is closed
  silently, as uvicorn's keep-alive timeout does (an unsolicited answer could be taken for
  the response to the request the client is about to send);
* after an early answer (a 401 before the body was read, say) uvicorn reads and drops the
  rest of that body to keep the connection: the same deadline bounds that drain, so a body
  drip-fed after the answer cannot hold the connection either.

The body of a request being served is bounded by the app (:mod:`northstar_http.timeouts`).

When the server begins to shut down (SIGTERM, SIGINT), the protocols and :class:`Server` end
the app's open event streams (:func:`northstar_http.sse.close_event_streams`): each sends a
last comment and completes, so in-flight requests drain, the stores close and nothing is cut.

A connection serving an event stream lives as long as its subscriber, so what each connection
keeps is the server's memory per idle subscriber (benchmark P5): the protocols keep their own
state in slots (new attributes on uvicorn's protocol would grow each instance's dict to the
next size), and swap uvicorn's per-connection ``asyncio.Event`` objects (each with a
64-slot deque) and request-pipeline deque for :class:`_SlimEvent` and :class:`_Pipeline`.

``northstar serve`` runs :func:`run_server` (one process) or :func:`run_workers`
(``--workers N``); tests and embedders use :func:`build_server`.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import uuid
from types import FrameType
from typing import Any, Final

import h11
import msgspec
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState
from uvicorn.supervisors.multiprocess import Multiprocess

from northstar_core.errors import NorthstarError
from northstar_http.sse import close_event_streams
from northstar_http.timeouts import DEFAULT_HEADER_TIMEOUT_SECONDS, header_timeout_seconds

# The largest request head (request line and headers) accepted. h11 enforces its own limit,
# set to this; httptools has none, so a fast client could otherwise send megabytes of headers
# within the deadline.
DEFAULT_MAX_HEAD_BYTES: Final = 64 * 1024

# After a timeout, how long our closed side still reads and drops what the client has in
# flight: closing a socket with unread data makes the kernel reset the connection, and the
# reset can destroy the 408 before the client has read it.
LINGER_SECONDS: Final = 2.0


def timeout_response(default_headers: list[tuple[bytes, bytes]], timeout: float) -> bytes:
    """The raw 408 sent when a request head did not arrive in time (no app, no request)."""
    rid = str(uuid.uuid4())
    error = NorthstarError(
        "request.timeout",
        "the request head was not received in time",
        408,
        details={"timeout_seconds": timeout},
    )
    body = msgspec.json.encode(error.envelope(rid))
    lines = [b"HTTP/1.1 408 Request Timeout"]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
        b"x-request-id: " + rid.encode(),
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _SlimEvent:
    """What uvicorn uses of :class:`asyncio.Event` (``set``, ``clear``, ``is_set``, ``wait``),
    without a deque per instance: uvicorn keeps two events per connection and at most one
    task ever waits on each."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            waiters, self._waiters = self._waiters, None
            for fut in waiters or ():
                if not fut.done():
                    fut.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(fut)
        try:
            return await fut
        finally:
            if self._waiters is not None and fut in self._waiters:
                self._waiters.remove(fut)


class _Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests (``appendleft``, ``pop``, truth), as a list:
    almost always empty, and an empty deque costs a 64-slot block."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class _HeadDeadline:
    """The deadline's timer and expiry, shared by both protocols (hooks in the subclasses,
    which hold this state in their ``__slots__``)."""

    # set by uvicorn's protocol constructor / connection_made
    config: uvicorn.Config
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    server_state: ServerState
    app: Any
    flow: Any
    _head_timer: asyncio.TimerHandle | None
    _lingering: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._head_timer = None
        self._lingering = False
        super().__init__(*args, **kwargs)

    def _head_timeout(self) -> float:
        return float(getattr(self.config, "header_timeout_seconds", DEFAULT_HEADER_TIMEOUT_SECONDS))

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_timer = self.loop.call_later(self._head_timeout(), self._head_deadline_passed)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_started(self) -> bool:
        """Whether bytes of a request head not yet complete have arrived."""
        raise NotImplementedError

    def _head_deadline_passed(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_started():
            self.transport.write(timeout_response(self.server_state.default_headers, self._head_timeout()))
        self._close_lingering()

    # The hooks both protocols share (the mixin comes first in their bases, so super() reaches
    # uvicorn's protocol).
    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        # uvicorn's flow control starts writable (its event set)
        self.flow._is_writable_event = _SlimEvent(self.flow._is_writable_event.is_set())
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        super().data_received(data)

    def shutdown(self) -> None:
        close_event_streams(self.app)  # or the server would wait for them to end by themselves
        super().shutdown()

    def _close_lingering(self) -> None:
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.transport.resume_reading()  # reading may be paused: drain what is in flight
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


# The attributes uvicorn's protocols set on each instance (uvicorn 0.3x-0.5x). Declared as
# slots of the subclasses, they are stored in the instance itself instead of a per-connection
# dict; one uvicorn adds later just lands in the dict, and one it drops leaves an unused slot.
_PROTOCOL_STATE: Final = (
    "access_log", "access_logger", "app", "app_state", "asgi_version", "client", "config",
    "connections", "cycle", "flow", "headers", "limit_concurrency", "logger", "loop",
    "root_path", "scheme", "scope", "server", "server_state", "tasks", "timeout_keep_alive",
    "timeout_keep_alive_task", "transport", "ws_protocol_class",
)
_HTTPTOOLS_STATE: Final = (*_PROTOCOL_STATE, "expect_100_continue", "parser", "pipeline", "url")
_H11_STATE: Final = (*_PROTOCOL_STATE, "conn")


def _instance_slots(base: type, names: tuple[str, ...]) -> tuple[str, ...]:
    # a name the base defines on the class (a default, a property) must stay a class attribute
    return tuple(name for name in names if not hasattr(base, name))


def _slim_message_event(cycle: Any) -> None:
    """Swap a new request cycle's ``asyncio.Event`` for a :class:`_SlimEvent` in the same
    state. Its task is only scheduled yet, so nothing waits on the event being replaced."""
    event = getattr(cycle, "message_event", None)
    if isinstance(event, asyncio.Event):
        cycle.message_event = _SlimEvent(event.is_set())


class H11HeadTimeoutProtocol(_HeadDeadline, H11Protocol):
    """uvicorn's h11 protocol with the request-head deadline."""

    __slots__ = ("_head_timer", "_lingering", *_instance_slots(H11Protocol, _H11_STATE))

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request head was complete: its request is being served
            self._disarm_head_deadline()
            _slim_message_event(self.cycle)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._disarm_head_deadline()
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm_head_deadline()  # disarmed again at once if a pipelined head is waiting
        super().on_response_complete()

    def _head_started(self) -> bool:
        return self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional: h11 is then the only implementation
    HttpToolsHeadTimeoutProtocol: type[asyncio.Protocol] | None = None
else:

    class _HttpToolsHeadTimeoutProtocol(_HeadDeadline, HttpToolsProtocol):
        """uvicorn's httptools protocol with the request-head deadline."""

        __slots__ = (
            "_head_bytes", "_head_timer", "_in_head", "_lingering",
            *_instance_slots(HttpToolsProtocol, _HTTPTOOLS_STATE),
        )

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._in_head = False
            self._head_bytes = 0
            super().__init__(*args, **kwargs)
            self.pipeline = _Pipeline()  # type: ignore[assignment]  # the deque's methods it uses

        def on_message_begin(self) -> None:
            self._in_head = True
            self._head_bytes = 0
            super().on_message_begin()

        def _count_head(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > getattr(self.config, "max_head_bytes", DEFAULT_MAX_HEAD_BYTES):
                # raised inside the parser: uvicorn answers 400 and closes, as h11 does
                raise ValueError("request head too large")

        def on_url(self, url: bytes) -> None:
            self._count_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_head(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm_head_deadline()
            super().on_headers_complete()
            _slim_message_event(self.cycle)

        def handle_websocket_upgrade(self) -> None:
            self._disarm_head_deadline()
            super().handle_websocket_upgrade()

        def on_response_complete(self) -> None:
            # A queued pipelined request already has its head: it starts now, undeadlined.
            if not self.pipeline and not self.transport.is_closing():
                self._arm_head_deadline()
            super().on_response_complete()

        def _head_started(self) -> bool:
            return self._in_head

    HttpToolsHeadTimeoutProtocol = _HttpToolsHeadTimeoutProtocol


def protocol_class(http: str = "auto") -> type[asyncio.Protocol]:
    """The deadline-enforcing protocol: ``h11``, ``httptools``, or ``auto`` (httptools if
    installed, as uvicorn's own ``auto``)."""
    if http == "h11" or (http == "auto" and HttpToolsHeadTimeoutProtocol is None):
        return H11HeadTimeoutProtocol
    if http in ("httptools", "auto"):
        if HttpToolsHeadTimeoutProtocol is None:
            raise ValueError("the httptools HTTP implementation is not installed")
        return HttpToolsHeadTimeoutProtocol
    raise ValueError(f"unknown HTTP implementation {http!r} (h11, httptools or auto)")


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration plus the request-head deadline and size the protocols read."""

    def __init__(
        self,
        app: Any,
        *,
        header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS,
        max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
        **kwargs: Any,
    ) -> None:
        if header_timeout_seconds <= 0 or max_head_bytes <= 0:
            raise ValueError("header_timeout_seconds and max_head_bytes must be positive")
        kwargs.setdefault("h11_max_incomplete_event_size", max_head_bytes)
        super().__init__(app, **kwargs)
        self.header_timeout_seconds = header_timeout_seconds
        self.max_head_bytes = max_head_bytes


def build_config(
    app: Any,
    settings: Any = None,
    *,
    host: str | None = None,
    port: int | None = None,
    http: str = "auto",
    header_timeout: float | None = None,
    **uvicorn_options: Any,
) -> ServerConfig:
    """The server configuration for ``app``: host, port and head deadline from ``settings.http``
    (``host``/``port``/``header_timeout`` override them); other options go to uvicorn."""
    http_settings = getattr(settings, "http", None)
    if header_timeout is None:
        header_timeout = header_timeout_seconds(settings)
    # The app's logging owns the process's log output (northstar_http/observability.py): its
    # own access line per request replaces uvicorn's, and uvicorn's records reach its handler.
    uvicorn_options.setdefault("access_log", False)
    uvicorn_options.setdefault("log_config", None)
    return ServerConfig(
        app,
        host=host if host is not None else getattr(http_settings, "host", "127.0.0.1"),
        port=port if port is not None else getattr(http_settings, "port", 8787),
        http=protocol_class(http),
        header_timeout_seconds=header_timeout,
        **uvicorn_options,
    )


class Server(uvicorn.Server):
    """uvicorn's server, ending the app's event streams as its shutdown begins, and exiting
    normally after a SIGTERM it has handled."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises a handled signal after its graceful shutdown, so the process dies
        # of SIGTERM (status -15/143). A stop that was asked for and completed is a success:
        # exit status 0 for systemd, container runtimes and process supervisors.
        captured = getattr(self, "_captured_signals", None)
        if sig == signal.SIGTERM and isinstance(captured, list) and captured and captured[-1] == sig:
            captured.pop()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        close_event_streams(self.config.loaded_app)
        await super().shutdown(sockets=sockets)


def build_server(app: Any, settings: Any = None, **kwargs: Any) -> Server:
    """A uvicorn server for ``app`` (see :func:`build_config`); ``await server.serve()``."""
    return Server(build_config(app, settings, **kwargs))


def run_server(app: Any, settings: Any = None, **kwargs: Any) -> int:
    """Serve until interrupted; the exit status (1 if the server never started)."""
    server = build_server(app, settings, **kwargs)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0 if server.started else 1


def run_workers(factory: str, settings: Any = None, *, workers: int, **kwargs: Any) -> int:
    """Serve with ``workers`` processes, each building its app by calling ``factory`` (an
    import string, ``"module:function"``: processes are spawned, an app object cannot be
    handed to them), on one socket bound here; the same protocols (head deadline) and
    shutdown as :func:`run_server`. Exit status 1 if a worker could not start."""
    if workers < 2:
        raise ValueError("run_workers needs at least 2 workers (run_server serves with one)")
    config = build_config(factory, settings, factory=True, workers=workers, **kwargs)
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    return 1 if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes) else 0
