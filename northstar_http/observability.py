"""Logs, metrics and traces of the HTTP service (README "Operations").

* **Logs** — stdlib ``logging`` configured through Litestar's :class:`LoggingConfig`: one
  handler on the root logger that formats JSON lines (or a human line on a terminal) and writes
  them from a thread of its own, so a slow log pipe never stalls the event loop. Every record
  made while a request is served carries its request id, tenant (once the token is verified)
  and trace id. :class:`RequestObserver` writes exactly one access line per request (logger
  ``northstar.access``) in place of uvicorn's. Headers, bodies and message contents are never
  logged; tokens and the configured secrets are masked in anything that is.
* **Metrics** — Prometheus (``prometheus_client``) in a registry of the app's own: request
  latency by route template, method and status class; store calls by backend, kind and
  operation (the core reports them through :mod:`northstar_core.observe`); SSE subscribers;
  live-tail pollers; gate decisions; group-commit sizes. Off unless ``metrics.enabled``; then
  served on a listener of its own (``metrics.bind``) and at ``GET /metrics`` for system tokens.
* **Traces** — OpenTelemetry, off unless ``tracing.enabled``: a server span per request (W3C
  ``traceparent`` honoured) with a child span per store call, exported over OTLP/HTTP as the
  standard ``OTEL_*`` variables say. With tracing off a valid incoming ``traceparent`` still
  gives the request its trace id (logs, ``ctx.trace_id``, spine events' ``causality``).
"""

from __future__ import annotations

import contextvars
import copy
import logging
import queue
import re
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from logging.handlers import QueueHandler, QueueListener
from typing import TYPE_CHECKING, Any, Final, TextIO

import msgspec
from litestar import Request, Response, get
from litestar.logging.config import LoggingConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from northstar_core import observe
from northstar_core.observe import error_kind
from northstar_http.errors import request_id

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

    from northstar_adapters.config import Settings

ACCESS_LOGGER: Final = "northstar.access"
REQUEST_INFO_KEY: Final = "northstar_request_info"
UNMATCHED_ROUTE: Final = "<unmatched>"

# --- the request being served ------------------------------------------------------------------


class RequestInfo:
    """What logs, metrics and spans say about one request (kept in the scope state and in a
    context variable for the records made while it is served)."""

    __slots__ = ("method", "path", "request_id", "route", "span_id", "status", "tenant_id", "trace_id")

    def __init__(self, request_id: str, method: str, path: str) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        self.route: str | None = None
        self.tenant_id: str | None = None
        self.trace_id: str | None = None
        self.span_id: str | None = None
        self.status = 0


_current_request: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar(
    "northstar_request_info", default=None
)


def request_info(scope: Any) -> RequestInfo | None:
    state = scope.get("state")
    info = state.get(REQUEST_INFO_KEY) if state is not None else None
    return info if isinstance(info, RequestInfo) else None


def note_tenant(scope: Any, tenant_id: str | None) -> None:
    """The request's verified tenant, for its log lines and span."""
    info = request_info(scope)
    if info is not None and tenant_id:
        info.tenant_id = tenant_id


def trace_id_of(scope: Any) -> str | None:
    """The request's trace id: its server span's, else a valid incoming ``traceparent``'s."""
    info = request_info(scope)
    return info.trace_id if info is not None else None


_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """``(trace_id, parent_span_id)`` of a valid W3C ``traceparent`` value, else ``None``."""
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id, parent_id


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


# --- logs --------------------------------------------------------------------------------------

# Fields a record may carry (as ``extra=``), in output order after the fixed ones.
LOG_FIELDS: Final = (
    "request_id",
    "tenant_id",
    "method",
    "route",
    "path",
    "status",
    "duration_ms",
    "trace_id",
    "span_id",
    "error_code",
    "cause",
)
_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_BEARER: Final = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
REDACTED: Final = "[redacted]"


class Redactor:
    """Masks bearer tokens, JWTs and the configured secrets in text that is about to be logged
    (defence in depth: nothing logs them on purpose)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # short strings would mask ordinary words; configured secrets are long
        self.secrets = tuple(s for s in secrets if s and len(s) >= 8)

    def __call__(self, text: str) -> str:
        if "eyJ" in text:
            text = _JWT.sub(REDACTED, text)
        if "earer" in text or "EARER" in text:
            text = _BEARER.sub(r"\g<1>" + REDACTED, text)
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, then the request
    fields present (:data:`LOG_FIELDS`) and ``exc`` (a traceback) if any."""

    def __init__(self, redact: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": self.redact(record.getMessage()),
        }
        for name in LOG_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = self.redact(value) if isinstance(value, str) else value
        exc = _exception_text(self, record)
        if exc:
            out["exc"] = self.redact(exc)
        return msgspec.json.encode(out, enc_hook=str).decode()


class HumanFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message> key=value…`` for a terminal."""

    def __init__(self, redact: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        # the access line's message already shows method, path, status and duration
        shown = ("method", "path", "status", "duration_ms") if record.name == ACCESS_LOGGER else ()
        extras = [
            f"{name}={value}"
            for name in LOG_FIELDS
            if name not in shown and (value := getattr(record, name, None)) is not None
        ]
        if extras:
            line += "  " + " ".join(extras)
        exc = _exception_text(self, record)
        if exc:
            line += "\n" + exc
        return self.redact(line)


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text or None


class _RequestFields(logging.Filter):
    """Adds the request being served (if any) to every record, in the thread that logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = _current_request.get()
        if info is not None:
            for name in ("request_id", "tenant_id", "trace_id", "span_id"):
                if getattr(record, name, None) is None:
                    setattr(record, name, getattr(info, name))
        return True


class LogHandler(QueueHandler):
    """The service's root handler: records are completed in the logging thread (message,
    request fields, traceback rendered) and queued; a listener thread formats and writes them.
    ``flush()`` waits until everything queued is written."""

    def __init__(
        self, fmt: str = "auto", secrets: Iterable[str | None] = (), stream: TextIO | None = None
    ) -> None:
        super().__init__(queue.Queue(-1))
        stream = stream or sys.stderr
        if fmt == "auto":
            fmt = "human" if _isatty(stream) else "json"
        redact = Redactor(secrets)
        self.format_name = fmt
        self.target = logging.StreamHandler(stream)
        self.target.setFormatter(HumanFormatter(redact) if fmt == "human" else JsonFormatter(redact))
        self.addFilter(_RequestFields())
        self.listener: QueueListener | None = QueueListener(self.queue, self.target)
        self.listener.start()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Render what may change or hold references (args, exc_info) now; format later.
        record = copy.copy(record)
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record

    def flush(self) -> None:
        if self.listener is not None and self.listener._thread is not None:
            self.queue.join()  # type: ignore[attr-defined]
        self.target.flush()

    def close(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None and listener._thread is not None:
            listener.stop()  # writes what is still queued
        self.target.flush()
        super().close()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def log_handler() -> LogHandler | None:
    """The service's handler on the root logger (tests read and redirect it)."""
    return next((h for h in logging.getLogger().handlers if isinstance(h, LogHandler)), None)


# --- metrics and traces ------------------------------------------------------------------------

HTTP_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STORE_BUCKETS: Final = (0.0001, 0.00025, 0.0005, *HTTP_BUCKETS[:-1])
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _StoreCall:
    """Times (and, inside a traced request, spans) one store call."""

    __slots__ = ("labels", "span", "started", "telemetry")

    def __init__(self, telemetry: Telemetry, labels: tuple[str, str, str]) -> None:
        self.telemetry = telemetry
        self.labels = labels
        self.span: Span | None = None
        self.started = 0.0

    def __enter__(self) -> None:
        tracer = self.telemetry.tracer
        if tracer is not None:
            from opentelemetry import trace

            # Only inside a request's trace: pollers and background work would otherwise make a
            # root span of every read.
            if trace.get_current_span().is_recording():
                backend, kind, op = self.labels
                self.span = tracer.start_span(
                    f"store.{op} {kind}",
                    kind=trace.SpanKind.CLIENT,
                    attributes={
                        "db.system": backend,
                        "northstar.resource_kind": kind,
                        "northstar.store.op": op,
                    },
                )
        self.started = time.perf_counter()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        elapsed = time.perf_counter() - self.started
        error = error_kind(exc)
        self.telemetry.store_done(self.labels, elapsed, error)
        span = self.span
        if span is not None:
            if error is not None:
                span.set_attribute("northstar.store.error", error)
                if error != "condition_failed":  # a lost optimistic race is not a failure
                    from opentelemetry.trace import Status, StatusCode

                    span.set_status(Status(StatusCode.ERROR, error))
            span.end()


class Telemetry:
    """The shell's :class:`northstar_core.observe.Observer`: Prometheus metrics (``metrics``)
    and OpenTelemetry spans (``tracer_provider``)."""

    def __init__(self, *, metrics: bool, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer_provider = tracer_provider
        self.stopped = False
        self.tracer: Tracer | None = (
            tracer_provider.get_tracer("northstar") if tracer_provider is not None else None
        )
        self.registry: Any = None
        self._store_children: dict[tuple[str, str, str], Any] = {}
        self._request_children: dict[tuple[str, str, str], Any] = {}
        if metrics:
            self._build_metrics()

    def _build_metrics(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            gc_collector,
            platform_collector,
            process_collector,
        )

        reg = self.registry = CollectorRegistry()
        process_collector.ProcessCollector(registry=reg)
        platform_collector.PlatformCollector(registry=reg)
        gc_collector.GCCollector(registry=reg)
        self.http_duration = Histogram(
            "northstar_http_request_duration_seconds",
            "HTTP request duration (SSE: the stream's life) by route template, method and status class",
            ["route", "method", "status"],
            buckets=HTTP_BUCKETS,
            registry=reg,
        )
        self.store_duration = Histogram(
            "northstar_store_operation_duration_seconds",
            "Store call duration by backend, resource kind and operation",
            ["backend", "kind", "op"],
            buckets=STORE_BUCKETS,
            registry=reg,
        )
        self.store_errors = Counter(
            "northstar_store_operation_errors",
            "Store calls that did not succeed, by backend, kind, operation and error "
            "(condition_failed: a conditional write lost its race, expected under contention)",
            ["backend", "kind", "op", "error"],
            registry=reg,
        )
        self.sse = Gauge("northstar_sse_subscribers", "Open SSE streams", registry=reg)
        self.pollers = Gauge(
            "northstar_tail_pollers",
            "Live-tail pollers running (one per shared store with followed streams)",
            registry=reg,
        )
        self.gates = Counter(
            "northstar_gate_decisions",
            "Gate-chain decisions by blocking gate (none: every gate passed) and outcome",
            ["gate", "outcome"],
            registry=reg,
        )
        self.group_commit_sizes = Histogram(
            "northstar_store_group_commit_batches",
            "Write batches committed per transaction by a group-committing backend (SQLite)",
            ["backend"],
            buckets=BATCH_BUCKETS,
            registry=reg,
        )

    # --- Observer (the core's port) --------------------------------------------------------

    def store_call(self, kind: str, backend: str, op: str) -> AbstractContextManager[object]:
        return _StoreCall(self, (backend, kind, op))

    def gate_decision(self, gate: str, outcome: str) -> None:
        if self.registry is not None:
            self.gates.labels(gate, outcome).inc()

    def tail_pollers(self, delta: int) -> None:
        if self.registry is not None:
            self.pollers.inc(delta)

    def group_commit(self, backend: str, batches: int) -> None:
        if self.registry is not None:
            self.group_commit_sizes.labels(backend).observe(batches)

    # --- the shell's own -------------------------------------------------------------------

    def store_done(self, labels: tuple[str, str, str], seconds: float, error: str | None) -> None:
        if self.registry is None:
            return
        child = self._store_children.get(labels)
        if child is None:
            child = self._store_children[labels] = self.store_duration.labels(*labels)
        child.observe(seconds)
        if error is not None:
            self.store_errors.labels(*labels, error).inc()

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        if self.registry is None:
            return
        key = (route, method, f"{status // 100}xx")
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.http_duration.labels(*key)
        child.observe(seconds)

    def sse_subscribers(self, delta: int) -> None:
        if self.registry is not None:
            self.sse.inc(delta)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


def sse_subscribers(delta: int) -> None:
    """An SSE stream opened (``+1``) or closed (``-1``)."""
    telemetry = observe.current()
    if isinstance(telemetry, Telemetry):
        telemetry.sse_subscribers(delta)


def default_span_exporter() -> SpanExporter:
    """OTLP over HTTP, configured by the standard ``OTEL_EXPORTER_OTLP_*`` variables."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def build_tracer_provider(exporter: SpanExporter | None = None) -> TracerProvider:
    """A tracer provider of the service's own (the process-global one is left alone). Sampler,
    resource and batching follow ``OTEL_TRACES_SAMPLER``, ``OTEL_SERVICE_NAME``,
    ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_BSP_*``; the service name defaults to ``northstar``."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "northstar"}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter or default_span_exporter()))
    return provider


# --- the request middleware --------------------------------------------------------------------

access_log = logging.getLogger(ACCESS_LOGGER)


class RequestObserver:
    """Wraps the whole app (outside routing and the exception handlers, so 404s, 405s and
    refused tokens are seen too): request id and trace context first, then — when the response
    is over — one access line, the latency histogram and the server span's end."""

    def __init__(self, app: ASGIApp, observability: Observability) -> None:
        self.app = app
        self.observability = observability

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        info = RequestInfo(request_id(scope), scope["method"], scope["path"])
        scope["state"][REQUEST_INFO_KEY] = info
        telemetry = self.observability.telemetry
        tracer = telemetry.tracer if telemetry is not None else None
        span: Span | None = None
        otel_token: object = None
        if tracer is not None:
            span, otel_token = _start_server_span(tracer, scope, info)
        else:
            traceparent = _header(scope, b"traceparent")
            parsed = parse_traceparent(traceparent) if traceparent else None
            if parsed is not None:
                info.trace_id = parsed[0]
        token = _current_request.set(info)

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                info.status = message["status"]
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, send_observed)
        except BaseException:
            failed = True
            raise
        finally:
            if not info.status:
                # nothing was answered: the app failed, or the client left first (nginx's 499)
                info.status = 500 if failed else 499
            info.route = scope.get("path_template") or UNMATCHED_ROUTE
            elapsed = time.perf_counter() - started
            if telemetry is not None:
                telemetry.request_done(info.route, info.method, info.status, elapsed)
            if span is not None:
                _end_server_span(span, info, otel_token)
            if self.observability.access_log:
                _log_access(info, elapsed)
            _current_request.reset(token)


def _start_server_span(tracer: Tracer, scope: Scope, info: RequestInfo) -> tuple[Span, object]:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    for key, value in scope["headers"]:
        if key in (b"traceparent", b"tracestate"):
            carrier.setdefault(key.decode(), value.decode("latin-1"))
    parent = TraceContextTextMapPropagator().extract(carrier) if carrier else None
    span = tracer.start_span(
        info.method,
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={
            "http.request.method": info.method,
            "url.path": info.path,
            "url.scheme": scope.get("scheme", "http"),
            "northstar.request_id": info.request_id,
        },
    )
    span_context = span.get_span_context()
    if span_context.is_valid:
        info.trace_id = trace.format_trace_id(span_context.trace_id)
        info.span_id = trace.format_span_id(span_context.span_id)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    return span, token


def _end_server_span(span: Span, info: RequestInfo, token: object) -> None:
    from opentelemetry import context as otel_context
    from opentelemetry.trace import Status, StatusCode

    if info.route != UNMATCHED_ROUTE:
        span.update_name(f"{info.method} {info.route}")
        span.set_attribute("http.route", info.route)
    span.set_attribute("http.response.status_code", info.status)
    if info.tenant_id:
        span.set_attribute("northstar.tenant_id", info.tenant_id)
    if info.status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()
    otel_context.detach(token)  # type: ignore[arg-type]


def _log_access(info: RequestInfo, elapsed: float) -> None:
    duration_ms = round(elapsed * 1000, 2)
    # the path without its query string: cursors and filters stay out of the log
    access_log.info(
        "%s %s %d %.1fms",
        info.method,
        info.path,
        info.status,
        duration_ms,
        extra={
            "request_id": info.request_id,
            "tenant_id": info.tenant_id,
            "method": info.method,
            "route": info.route,
            "path": info.path,
            "status": info.status,
            "duration_ms": duration_ms,
            "trace_id": info.trace_id,
            "span_id": info.span_id,
        },
    )


# --- GET /metrics on the service's port ---------------------------------------------------------


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus exposition for a system token (the separate listener needs none)."""
    from northstar_core.errors import NorthstarError
    from northstar_core.identity import Claims

    claims: Claims = request.user
    if not claims.system:
        raise NorthstarError("auth.system_required", "this operation needs the system flag", 403)
    observability: Observability = request.app.state.observability
    telemetry = observability.telemetry
    if telemetry is None or telemetry.registry is None:
        raise NorthstarError("request.not_found", "no such resource or path", 404)
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(telemetry.exposition(), media_type=CONTENT_TYPE_LATEST)


# --- wiring -------------------------------------------------------------------------------------


class Observability:
    """Everything above for one app, from its settings (``None``: the defaults).

    ``build_app`` passes :meth:`logging_config` to Litestar, wraps the app with
    :meth:`middleware`, adds :meth:`route_handlers`, and runs :meth:`start` / :meth:`stop`
    with the app's lifespan (metrics and tracing exist only while it is served).
    """

    def __init__(self, settings: Settings | None, *, span_exporter: SpanExporter | None = None) -> None:
        from northstar_adapters.config import LogSettings, MetricsSettings, TracingSettings

        self.log = settings.log if settings is not None else LogSettings()
        self.metrics = settings.metrics if settings is not None else MetricsSettings()
        self.tracing = settings.tracing if settings is not None else TracingSettings()
        self.access_log = self.log.access
        self._secrets: tuple[str | None, ...] = ()
        if settings is not None:
            self._secrets = (settings.cursor_secret, settings.jwt.hs256_secret)
        self._span_exporter = span_exporter
        self.telemetry: Telemetry | None = None
        self._previous: observe.Observer | None = None
        self._metrics_server: Any = None
        self.metrics_address: tuple[str, int] | None = None

    def logging_config(self) -> LoggingConfig:
        """The process's logging: the root logger at ``log.level`` through :class:`LogHandler`."""
        fmt, secrets = self.log.format, self._secrets

        def handler() -> LogHandler:  # a closure: the secrets never appear in the config dict
            return LogHandler(fmt, secrets)

        config = LoggingConfig(
            logging_module="logging",
            formatters={},
            handlers={"northstar": {"()": handler}},
            root={"level": self.log.level, "handlers": ["northstar"]},
            loggers={
                "litestar": {"level": self.log.level, "handlers": [], "propagate": True},
                # an HTTP client's request lines carry whole URLs, query strings included
                "httpx": {"level": "WARNING"},
                "httpcore": {"level": "WARNING"},
            },
            log_exceptions="never",  # the envelope handler logs each 5xx once, with its cause
            disable_existing_loggers=False,
        )
        # Litestar adds handlers of its own to the dict (one starts a thread): unused here.
        for name in ("console", "queue_listener"):
            config.handlers.pop(name, None)
        return config

    def middleware(self, app: ASGIApp) -> ASGIApp:
        return RequestObserver(app, self)

    def route_handlers(self) -> list[Any]:
        return [metrics_endpoint] if self.metrics.enabled else []

    async def start(self, *_: Any) -> None:
        if not (self.metrics.enabled or self.tracing.enabled):
            return
        provider = build_tracer_provider(self._span_exporter) if self.tracing.enabled else None
        self.telemetry = Telemetry(metrics=self.metrics.enabled, tracer_provider=provider)
        self._previous = observe.install(self.telemetry)
        address = self.metrics.address if self.metrics.enabled else None
        if address is not None:
            from prometheus_client import start_http_server

            host, port = address
            log = logging.getLogger("northstar")
            try:
                server, _thread = start_http_server(port, host, registry=self.telemetry.registry)
            except OSError as exc:
                # Metrics are not worth refusing to serve for (several workers share one bind,
                # say): say so loudly; GET /metrics still answers system tokens.
                log.error("metrics listener not started on %s: %s", self.metrics.bind, exc)
                return
            self._metrics_server = server
            self.metrics_address = (host, int(server.server_address[1]))
            log.info("metrics served on http://%s:%d/metrics", host, self.metrics_address[1])

    async def stop(self, *_: Any) -> None:
        server, self._metrics_server = self._metrics_server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        telemetry, self.telemetry = self.telemetry, None
        if telemetry is None:
            return
        telemetry.stopped = True
        if observe.current() is telemetry:
            previous = self._previous
            # another app of this process that stopped meanwhile must not come back
            observe.install(None if isinstance(previous, Telemetry) and previous.stopped else previous)
        if telemetry.tracer_provider is not None:
            telemetry.tracer_provider.shutdown()  # exports what is still batched

    def flush(self) -> None:
        """Export batched spans and write queued log records now."""
        if self.telemetry is not None and self.telemetry.tracer_provider is not None:
            self.telemetry.tracer_provider.force_flush()
        handler = log_handler()
        if handler is not None:
            handler.flush()
