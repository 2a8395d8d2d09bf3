"""Logs, metrics and traces of the service: JSON access lines with the request's fields and no
secrets, Prometheus metrics that move with traffic, W3C trace ids on spine events and log
lines, OpenTelemetry spans for a request and its store calls, and a backend fault logged once
with its cause."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from northstar_adapters.config import Settings
from northstar_core.engines import Engines
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.storage import BackendUnavailable
from northstar_http import observability
from northstar_http.bootstrap import create_app
from northstar_http.observability import LogHandler, log_handler, parse_traceparent
from tests.conftest import CURSOR_SECRET, JWT_SECRET, make_settings
from tests.http.faults import take_down

Client = AsyncTestClient[Litestar]
Auth = Callable[..., dict[str, str]]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
SECRET_CONTENT = "the-launch-code-is-0451"
CHAT_ROUTE = "/chat/threads/{thread_id}/messages"
HTTP_COUNT = "northstar_http_request_duration_seconds_count"
STORE_COUNT = "northstar_store_operation_duration_seconds_count"
STORE_ERRORS = "northstar_store_operation_errors_total"


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return make_settings(tmp_path, log={"format": "json"}, metrics={"enabled": True, "bind": ""})


class Logs:
    """The service's log output (its root handler redirected to a buffer), parsed."""

    def __init__(self, handler: LogHandler) -> None:
        self.handler = handler
        self.buffer = io.StringIO()
        handler.flush()  # what was logged before stays where it went
        handler.target.setStream(self.buffer)

    def text(self) -> str:
        self.handler.flush()
        return self.buffer.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]

    def access(self, request_id: str) -> list[dict[str, Any]]:
        return [
            line for line in self.lines()
            if line["logger"] == "northstar.access" and line.get("request_id") == request_id
        ]


@pytest.fixture
def logs(app: Litestar) -> Logs:
    handler = log_handler()
    assert handler is not None and handler.format_name == "json"
    return Logs(handler)


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(app: Litestar) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    telemetry = app.state.observability.telemetry
    assert telemetry is not None
    return metric_samples(telemetry.exposition().decode())


def post_message(content: str = "hello") -> dict[str, Any]:
    return {"role": "user", "content": content, "idempotency_key": f"k-{content}"}


# --- logs --------------------------------------------------------------------------------------


async def test_each_request_has_one_json_access_line_with_its_fields_and_no_secrets(
    client: Client, auth: Auth, logs: Logs
) -> None:
    headers = auth()
    token = headers["Authorization"].split()[1]
    r = await client.post(
        "/chat/threads/th_log/messages",
        json=post_message(SECRET_CONTENT),
        headers={**headers, "traceparent": TRACEPARENT},
    )
    assert r.status_code == 201, r.text
    cursor = r.json()["cursor"]
    listed = await client.get("/chat/threads/th_log/messages", params={"cursor": cursor}, headers=headers)
    assert listed.status_code == 200
    missing = await client.get("/no/such/path", headers=headers)
    refused = await client.get("/chat/threads/th_log/messages")
    assert (missing.status_code, refused.status_code) == (404, 401)

    [line] = logs.access(r.headers["x-request-id"])
    assert line["level"] == "INFO" and line["ts"].endswith("Z")
    assert line["method"] == "POST" and line["route"] == CHAT_ROUTE
    assert line["path"] == "/chat/threads/th_log/messages"
    assert line["status"] == 201 and isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["tenant_id"] == "t_alpha" and line["trace_id"] == TRACE_ID
    [line] = logs.access(listed.headers["x-request-id"])
    assert (line["route"], line["status"], line["tenant_id"]) == (CHAT_ROUTE, 200, "t_alpha")
    assert "trace_id" not in line and "cursor" not in json.dumps(line)
    [line] = logs.access(missing.headers["x-request-id"])
    assert (line["route"], line["status"]) == ("<unmatched>", 404)
    [line] = logs.access(refused.headers["x-request-id"])
    assert line["status"] == 401 and "tenant_id" not in line

    text = logs.text()
    assert text.count('"logger":"northstar.access"') == 4
    for secret in (token, SECRET_CONTENT, cursor, JWT_SECRET, CURSOR_SECRET, "Bearer"):
        assert secret not in text


def test_the_formatters_mask_tokens_and_configured_secrets() -> None:
    import logging

    redact = observability.Redactor(["s3cr3t-value-123"])
    formatter = observability.JsonFormatter(redact)
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl"
    record = logging.LogRecord(
        "northstar", logging.WARNING, __file__, 1, "got %s and Authorization: Bearer abc.def and %s",
        (token, "s3cr3t-value-123"), None,
    )
    out = json.loads(formatter.format(record))
    assert token not in out["msg"] and "abc.def" not in out["msg"] and "s3cr3t" not in out["msg"]
    assert out["msg"].count("[redacted]") == 3
    human = observability.HumanFormatter(redact).format(record)
    assert token not in human and "s3cr3t" not in human


def test_traceparent_parsing_follows_w3c() -> None:
    assert parse_traceparent(TRACEPARENT) == (TRACE_ID, PARENT_ID)
    assert parse_traceparent(f"01-{TRACE_ID}-{PARENT_ID}-01-future") == (TRACE_ID, PARENT_ID)
    for bad in (
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",  # version 00 has exactly four fields
        f"ff-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{'0' * 32}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
        "00-abc-def-01",
        "",
    ):
        assert parse_traceparent(bad) is None, bad


async def test_a_traceparent_trace_id_reaches_spine_events_and_log_lines(
    client: Client, auth: Auth, logs: Logs, engines: Engines
) -> None:
    body = {"event_type": "note", "source": "agent", "run_id": "run1", "step_id": "s1"}
    r = await client.post("/events/append", json=body, headers={**auth(), "traceparent": TRACEPARENT})
    assert r.status_code == 201, r.text
    assert r.json()["causality"]["trace_id"] == TRACE_ID
    [line] = logs.access(r.headers["x-request-id"])
    assert line["trace_id"] == TRACE_ID
    # a server-written event of the same request (gate decision) carries it too
    ctx = RequestContext(tenant_id="t_alpha", mode="lab", user_id="u_alice", roles=("member",))
    stored = (await engines.spine.list(ctx, event_type="note")).items
    assert [e.causality.trace_id for e in stored] == [TRACE_ID]
    # an explicit X-Trace-Id wins; an invalid traceparent is ignored
    r = await client.post(
        "/events/append", json=body, headers={**auth(), "traceparent": TRACEPARENT, "X-Trace-Id": "tr_mine"}
    )
    assert r.json()["causality"]["trace_id"] == "tr_mine"
    r = await client.post("/events/append", json=body, headers={**auth(), "traceparent": "00-zz-01"})
    assert r.status_code == 201 and r.json()["causality"]["trace_id"] is None


# --- faults ------------------------------------------------------------------------------------


@pytest.fixture
def chat_backend_down(engines: Engines, monkeypatch: pytest.MonkeyPatch) -> None:
    take_down(engines, monkeypatch, "chat_store", reason="connection refused by 10.0.0.7:8000")


async def test_a_backend_fault_is_logged_once_with_its_cause(
    client: Client, auth: Auth, logs: Logs, app: Litestar, chat_backend_down: None
) -> None:
    r = await client.post(
        "/chat/threads/th_down/messages", json=post_message(SECRET_CONTENT), headers=auth()
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "chat_store.backend_unavailable"
    rid = r.headers["x-request-id"]
    lines = logs.lines()
    faults = [
        line for line in lines
        if line["level"] in ("WARNING", "ERROR", "CRITICAL") and "LAB MODE" not in line["msg"]
    ]
    assert len(faults) == 1, faults
    [fault] = faults
    assert fault["request_id"] == rid and fault["tenant_id"] == "t_alpha"
    assert fault["error_code"] == "chat_store.backend_unavailable" and fault["status"] == 503
    assert "BackendUnavailable: connection refused by 10.0.0.7:8000" in fault["cause"]
    [access] = logs.access(rid)
    assert access["status"] == 503
    assert SECRET_CONTENT not in logs.text()
    samples = scrape(app)
    assert sample(
        samples, STORE_ERRORS,
        backend="memory", kind="chat_store", op="write", error="backend_unavailable",
    ) + sample(
        samples, STORE_ERRORS,
        backend="memory", kind="chat_store", op="get", error="backend_unavailable",
    ) >= 1
    assert sample(
        samples, HTTP_COUNT, route=CHAT_ROUTE, method="POST", status="5xx"
    ) == 1


# --- metrics -----------------------------------------------------------------------------------


async def test_metrics_move_with_traffic_and_are_served_to_system_tokens_only(
    client: Client, auth: Auth, app: Litestar, engines: Engines
) -> None:
    before = scrape(app)
    for i in range(3):
        r = await client.post("/chat/threads/th_m/messages", json=post_message(f"m{i}"), headers=auth())
        assert r.status_code == 201
    assert (await client.get("/chat/threads/th_m/messages", headers=auth())).status_code == 200
    admin = auth(sub="u_admin", roles=("admin",))
    switches = {"actions": ["send_email"], "expected_version": 0}
    r = await client.put("/kill-switches", json=switches, headers=admin)
    assert r.status_code == 201, r.text
    ctx = RequestContext(tenant_id="t_alpha", mode="lab", user_id="u_alice", roles=("member",))
    with pytest.raises(NorthstarError) as denied:
        await engines.gate.check(ctx, action_name="send_email", subject_type="agent", subject_id="a1")
    assert denied.value.gate == "kill_switch"
    await engines.gate.check(ctx, action_name="other_action", subject_type="agent", subject_id="a2")

    assert (await client.get("/metrics", headers=auth())).status_code == 403
    assert (await client.get("/metrics")).status_code == 401
    r = await client.get("/metrics", headers=auth(system=True))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    after = metric_samples(r.text)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved(HTTP_COUNT, route=CHAT_ROUTE, method="POST", status="2xx") == 3
    assert moved(HTTP_COUNT, route=CHAT_ROUTE, method="GET", status="2xx") == 1
    assert moved(HTTP_COUNT, route="/metrics", method="GET", status="4xx") == 2
    assert moved(STORE_COUNT, backend="memory", kind="chat_store", op="write") >= 3
    assert moved(STORE_COUNT, backend="memory", kind="chat_store", op="query") >= 1
    assert moved(STORE_COUNT, backend="memory", kind="event_spine", op="write") >= 2
    assert moved("northstar_gate_decisions_total", gate="kill_switch", outcome="deny") == 1
    assert moved("northstar_gate_decisions_total", gate="none", outcome="allow") == 1
    assert sample(after, "northstar_sse_subscribers") == 0
    assert ("process_cpu_seconds_total", frozenset()) in after


async def test_the_metrics_listener_serves_on_its_own_port(tmp_path: Any, auth: Auth) -> None:
    app = create_app(make_settings(tmp_path, metrics={"enabled": True, "bind": "127.0.0.1:0"}))
    async with AsyncTestClient(app=app) as client:
        r = await client.post("/chat/threads/t/messages", json=post_message(), headers=auth())
        assert r.status_code == 201
        host, port = app.state.observability.metrics_address
        async with httpx.AsyncClient() as http:
            r = await http.get(f"http://{host}:{port}/metrics")
        assert r.status_code == 200
        samples = metric_samples(r.text)
        assert sample(
            samples, HTTP_COUNT, route=CHAT_ROUTE, method="POST", status="2xx"
        ) == 1
    # stopped with the app
    with pytest.raises(httpx.TransportError):
        async with httpx.AsyncClient() as http:
            await http.get(f"http://{host}:{port}/metrics", timeout=2)


async def test_metrics_are_off_by_default(tmp_path: Any, auth: Auth) -> None:
    app = create_app(make_settings(tmp_path))
    async with AsyncTestClient(app=app) as client:
        r = await client.get("/metrics", headers=auth(system=True))
        assert (r.status_code, r.json()["error"]["code"]) == (404, "request.not_found")
        assert app.state.observability.telemetry is None


async def test_sqlite_group_commit_sizes_are_observed(tmp_path: Any, auth: Auth) -> None:
    app = create_app(
        make_settings(
            tmp_path,
            connections={"lite": {"backend": "sqlite", "path": str(tmp_path / "n.db")}},
            registry={"connection": "lite", "refresh_seconds": 0.0},
            metrics={"enabled": True, "bind": ""},
        )
    )
    async with AsyncTestClient(app=app) as client:
        posts = [
            client.post(f"/chat/threads/th{i}/messages", json=post_message(f"c{i}"), headers=auth())
            for i in range(8)
        ]
        assert {r.status_code for r in await asyncio.gather(*posts)} == {201}
        samples = scrape(app)
        assert sample(samples, "northstar_store_group_commit_batches_count", backend="sqlite") >= 1
        assert sample(samples, "northstar_store_group_commit_batches_sum", backend="sqlite") >= 8
        assert sample(
            samples, STORE_COUNT, backend="sqlite", kind="chat_store", op="write"
        ) >= 8


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_sse_subscriber_and_poller_gauges_return_to_zero_after_disconnect(
    app: Litestar, live_server: Any, auth: Auth
) -> None:
    def gauge(name: str) -> float:
        return sample(scrape(app), name)

    async def read_until(chunks: Any, marker: bytes) -> None:
        seen = b""
        async with asyncio.timeout(10):
            while marker not in seen:
                seen += await chunks.__anext__()

    async with httpx.AsyncClient(base_url=live_server.url, headers=auth()) as http:
        url = "/sse/chat/th_sse"
        streams = [await http.send(http.build_request("GET", url), stream=True) for _ in range(2)]
        try:
            assert [r.status_code for r in streams] == [200, 200]
            chunks = [r.aiter_bytes() for r in streams]
            for c in chunks:
                await read_until(c, b": open")
            await wait_for(lambda: gauge("northstar_sse_subscribers") == 2, "two subscribers")
            # the app's store is memory: no other process shares it, so no poller runs (a shared
            # store's poller is counted in tests/unit/test_observe.py)
            assert gauge("northstar_tail_pollers") == 0
            posted = await http.post("/chat/threads/th_sse/messages", json=post_message("hi"))
            assert posted.status_code == 201
            for c in chunks:
                await read_until(c, b"event: message")
        finally:
            for r in streams:
                await r.aclose()
    # a disconnect is noticed at the next heartbeat (0.5 s in tests)
    await wait_for(lambda: gauge("northstar_sse_subscribers") == 0, "subscribers gone")
    await wait_for(lambda: gauge("northstar_tail_pollers") == 0, "poller stopped")


# --- traces ------------------------------------------------------------------------------------


async def test_spans_for_a_request_and_its_store_calls_continue_the_callers_trace(
    tmp_path: Any, auth: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(observability, "default_span_exporter", lambda: exporter)
    app = create_app(make_settings(tmp_path, tracing={"enabled": True}, log={"format": "json"}))
    logs = Logs(log_handler())  # type: ignore[arg-type]
    async with AsyncTestClient(app=app) as client:
        body = {"event_type": "note", "source": "agent", "run_id": "run1", "step_id": "s1"}
        r = await client.post("/events/append", json=body, headers={**auth(), "traceparent": TRACEPARENT})
        assert r.status_code == 201, r.text
        assert r.json()["causality"]["trace_id"] == TRACE_ID
        fresh = await client.post("/chat/threads/th_t/messages", json=post_message(), headers=auth())
        assert fresh.status_code == 201
        app.state.observability.flush()
        spans = exporter.get_finished_spans()

    [server] = [s for s in spans if s.name == "POST /events/append"]
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID
    assert server.attributes["http.route"] == "/events/append"
    assert server.attributes["http.response.status_code"] == 201
    assert server.attributes["northstar.tenant_id"] == "t_alpha"
    children = [s for s in spans if s.parent is not None and s.parent.span_id == server.context.span_id]
    assert children and all(s.name.startswith("store.") for s in children)
    assert {s.attributes["northstar.resource_kind"] for s in children} == {"event_spine"}
    assert all(s.context.trace_id == server.context.trace_id for s in children)
    assert "store.write event_spine" in {s.name for s in children}
    [line] = logs.access(r.headers["x-request-id"])
    assert line["trace_id"] == TRACE_ID and line["span_id"] == format(server.context.span_id, "016x")

    # without a traceparent the request starts a trace of its own, and logs carry its id
    [root] = [s for s in spans if s.name == "POST " + CHAT_ROUTE]
    assert root.parent is None
    [line] = logs.access(fresh.headers["x-request-id"])
    assert line["trace_id"] == format(root.context.trace_id, "032x")
    assert any(s.parent is not None and s.parent.span_id == root.context.span_id for s in spans)


def test_tracing_is_off_by_default_and_the_core_observer_is_restored(tmp_path: Any) -> None:
    from litestar.testing import TestClient

    from northstar_core import observe

    before = observe.current()
    app = create_app(make_settings(tmp_path, metrics={"enabled": True, "bind": ""}))
    with TestClient(app=app):
        telemetry = app.state.observability.telemetry
        assert telemetry is not None and telemetry.tracer is None
        assert observe.current() is telemetry
    assert observe.current() is before


@pytest.fixture(autouse=True)
def _no_leaked_observer() -> Iterator[None]:
    from northstar_core import observe

    yield
    assert isinstance(observe.current(), type(observe.NOOP)), "an app left its observer installed"


def test_errors_module_describes_causes() -> None:
    from northstar_http.errors import describe_cause

    try:
        try:
            raise BackendUnavailable("timeout after 3 attempts")
        except BackendUnavailable as exc:
            raise NorthstarError("chat_store.backend_unavailable", "down", 503) from exc
    except NorthstarError as err:
        assert describe_cause(err) == "BackendUnavailable: timeout after 3 attempts"
    assert describe_cause(NorthstarError("x.y", "m", 503)) is None
