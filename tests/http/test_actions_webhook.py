"""Webhook actions end to end: configuration → composition root → /actions/execute → a real
HTTP receiver on a loopback port that verifies the HMAC signature and counts its calls.

The receiver (``Receiver``) is a ``ThreadingHTTPServer`` on 127.0.0.1:0, so the service's
client really connects, sends, times out and reads over a socket. Each path is one behaviour:
``/ok`` answers ``{"result", "cost"}``, ``/slow`` sleeps past the timeout, ``/fail`` answers 500,
``/big`` answers more than ``max_response_bytes``, ``/badjson`` answers something that is not
JSON. Every request's signature is checked with the receiver's own copy of the secret.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from northstar_adapters.webhooks import (
    ACTION_HEADER,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
    verify_signature,
)
from northstar_core.engines import Engines
from northstar_core.identity import RequestContext
from northstar_http.bootstrap import create_app
from tests.conftest import make_settings

SECRET_ENV = "NS_TEST_WEBHOOK_SECRET"
SECRET = "webhook-secret-0123456789abcdef"
TIMEOUT = 0.5  # the slow webhook's, which it outlasts
# Every other webhook answers at once: a bound a loaded machine cannot turn into a timeout.
ANSWER_TIMEOUT = 10.0
MAX_RESPONSE = 2048

Auth = Callable[..., dict[str, str]]


class Receiver:
    """A loopback HTTP receiver: verifies every request's HMAC and records what it got."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ok = verify_signature(
                    SECRET.encode(),
                    self.headers.get(TIMESTAMP_HEADER),
                    self.headers.get(SIGNATURE_HEADER),
                    body,
                )
                receiver.calls[self.path] += 1
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
                )
                if not ok:
                    receiver.bad_signatures += 1
                    return self._answer(401, b'{"error": "bad signature"}')
                if self.path == "/ok":
                    sent = json.loads(body)
                    answer = {
                        "result": {"echo": sent["params"], "key": sent["idempotency_key"]},
                        "cost": 0.75,
                    }
                    return self._answer(200, json.dumps(answer).encode())
                if self.path == "/empty":
                    return self._answer(204, b"")
                if self.path == "/slow":
                    time.sleep(TIMEOUT * 4)
                    return self._answer(200, b'{"result": "late"}')
                if self.path == "/fail":
                    return self._answer(500, b'{"error": "boom"}')
                if self.path == "/big":
                    return self._answer(200, json.dumps({"result": "x" * (MAX_RESPONSE * 2)}).encode())
                if self.path == "/chunked-big":
                    return self._chunked(b"[" + b"1," * MAX_RESPONSE + b"1]")
                if self.path == "/badjson":
                    return self._answer(200, b"<html>not json</html>")
                if self.path == "/array":
                    return self._answer(200, b"[1, 2]")
                return self._answer(404, b"{}")

            def _answer(self, status: int, payload: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    if status != 204:
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if payload:
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test)

            def _chunked(self, payload: bytes) -> None:
                # no Content-Length: the size is only known by reading
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for i in range(0, len(payload), 512):
                        piece = payload[i : i + 512]
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


PATHS = ("ok", "empty", "slow", "fail", "big", "chunked-big", "badjson", "array")


@pytest.fixture
async def client(tmp_path: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service as deployed: one webhook action per receiver path, from configuration only."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    actions = [
        {
            "name": f"hook_{path.replace('-', '_')}",
            "webhook": f"{receiver.url}/{path}",
            "secret_env": SECRET_ENV,
            "timeout_seconds": TIMEOUT if path == "slow" else ANSWER_TIMEOUT,
            "max_response_bytes": MAX_RESPONSE,
        }
        for path in PATHS
    ]
    app = create_app(make_settings(tmp_path, actions=actions))
    async with AsyncTestClient(app=app) as c:
        yield c


@pytest.fixture
def engines(client: AsyncTestClient[Litestar]) -> Engines:
    engines: Engines = client.app.state.engines
    return engines


def body(action: str, **extra: Any) -> dict[str, Any]:
    return {
        "action_name": action,
        "subject_type": "agent",
        "subject_id": "a1",
        "params": {"to": "x"},
        "estimated_cost": 2.0,
        **extra,
    }


def ctx() -> RequestContext:
    return RequestContext(tenant_id="t_alpha", mode="lab", user_id="u_alice", roles=("member",))


async def test_the_webhook_gets_a_signed_request_and_its_answer_is_the_result(
    client: AsyncTestClient[Litestar], auth: Auth, engines: Engines, receiver: Receiver
) -> None:
    r = await client.post(
        "/actions/execute", json=body("hook_ok", idempotency_key="k-1"), headers=auth(agent_id="ag_7")
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["result"] == {"echo": {"to": "x"}, "key": "k-1"}
    assert (out["usage"]["amount"], out["replayed"]) == (0.75, False)  # the webhook's cost, not the estimate
    assert (receiver.calls["/ok"], receiver.bad_signatures) == (1, 0)
    (sent,) = receiver.requests
    headers = sent["headers"]
    assert (headers[IDEMPOTENCY_HEADER], headers[ACTION_HEADER]) == ("k-1", "hook_ok")
    assert headers[SIGNATURE_HEADER].startswith("v1=")
    assert abs(int(headers[TIMESTAMP_HEADER]) - time.time()) < 60
    assert sent["body"]["context"]["tenant_id"] == "t_alpha"
    assert sent["body"]["context"]["agent_id"] == "ag_7"
    assert (sent["body"]["action_name"], sent["body"]["subject_id"]) == ("hook_ok", "a1")
    report = (await engines.spine.list(ctx(), event_type="analytics")).items[-1].payload["properties"]
    assert (report["handler"], report["outcome"], report["cost"]) == ("webhook", "ok", 0.75)


async def test_a_retry_after_success_does_not_call_the_webhook_or_charge_again(
    client: AsyncTestClient[Litestar], auth: Auth, engines: Engines, receiver: Receiver
) -> None:
    request = body("hook_ok", idempotency_key="k-retry")
    first = (await client.post("/actions/execute", json=request, headers=auth())).json()
    for _ in range(3):
        again = await client.post("/actions/execute", json=request, headers=auth())
        assert again.status_code == 200, again.text
        assert again.json()["replayed"] is True
        assert again.json()["result"] == first["result"] and again.json()["usage"] == first["usage"]
    assert receiver.calls["/ok"] == 1
    usage = (await client.get("/budget/usage", headers=auth())).json()
    assert (usage["total"], len(usage["items"])) == (0.75, 1)
    assert len((await engines.spine.list(ctx(), event_type="budget")).items) == 1
    assert len((await engines.spine.list(ctx(), event_type="analytics")).items) == 1


async def test_an_empty_2xx_answer_is_a_null_result_charged_at_the_estimate(
    client: AsyncTestClient[Litestar], auth: Auth, receiver: Receiver
) -> None:
    r = await client.post("/actions/execute", json=body("hook_empty"), headers=auth())
    assert r.status_code == 200, r.text
    assert (r.json()["result"], r.json()["usage"]["amount"]) == (None, 2.0)
    assert receiver.calls["/empty"] == 1


@pytest.mark.parametrize(
    ("action", "path", "reason"),
    [
        ("hook_slow", "/slow", "timeout"),
        ("hook_fail", "/fail", "bad_status"),
        ("hook_big", "/big", "response_too_large"),
        ("hook_chunked_big", "/chunked-big", "response_too_large"),
        ("hook_badjson", "/badjson", "invalid_response"),
        ("hook_array", "/array", "invalid_response"),
    ],
)
async def test_a_failing_webhook_is_502_charges_nothing_and_a_retry_calls_again(
    client: AsyncTestClient[Litestar],
    auth: Auth,
    engines: Engines,
    receiver: Receiver,
    action: str,
    path: str,
    reason: str,
) -> None:
    request = body(action, idempotency_key=f"k-{reason}")
    started = time.monotonic()
    r = await client.post("/actions/execute", json=request, headers=auth())
    elapsed = time.monotonic() - started
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert (error["code"], error["http_status"], error["details"]["reason"]) == (
        "actions.handler_failed",
        502,
        reason,
    )
    assert elapsed < TIMEOUT * 3  # bounded by the configured timeout, not the receiver
    if reason == "bad_status":
        assert error["details"]["status"] == 500
    assert (await engines.budget.usage(ctx())).items == []
    assert (await engines.spine.list(ctx(), event_type="budget")).items == []
    audit = (await engines.spine.list(ctx(), event_type="audit")).items
    assert [(a.payload["action"], a.payload["reason"]) for a in audit] == [("action_failed", reason)]
    report = (await engines.spine.list(ctx(), event_type="analytics")).items[-1].payload["properties"]
    assert (report["outcome"], report["reason"], report["cost"]) == ("failed", reason, 0.0)
    assert receiver.calls[path] == 1 and receiver.bad_signatures == 0
    # nothing was done for this key: a retry calls the webhook again (with the same key)
    r = await client.post("/actions/execute", json=request, headers=auth())
    assert r.status_code == 502
    assert receiver.calls[path] == 2
    keys = {sent["headers"][IDEMPOTENCY_HEADER] for sent in receiver.requests if sent["path"] == path}
    assert keys == {f"k-{reason}"}


async def test_without_a_key_the_webhook_gets_one_derived_from_the_decision(
    client: AsyncTestClient[Litestar], auth: Auth, receiver: Receiver
) -> None:
    out = (await client.post("/actions/execute", json=body("hook_ok"), headers=auth())).json()
    (sent,) = receiver.requests
    assert sent["headers"][IDEMPOTENCY_HEADER] == f"decision-{out['decision']['event_id']}"


async def test_a_blocked_action_never_reaches_the_webhook(
    client: AsyncTestClient[Litestar], auth: Auth, receiver: Receiver
) -> None:
    admin = auth(sub="u_admin", roles=("admin",))
    r = await client.put(
        "/kill-switches", json={"actions": ["hook_ok"], "expected_version": 0}, headers=admin
    )
    assert r.status_code == 201, r.text
    r = await client.post("/actions/execute", json=body("hook_ok", idempotency_key="k-b"), headers=auth())
    assert (r.status_code, r.json()["error"]["code"]) == (403, "gate.kill_switch.action_blocked")
    check = await client.post("/actions/check", json=body("hook_ok"), headers=auth())
    assert check.status_code == 200, check.text
    assert (check.json()["allowed"], check.json()["registered"]) == (False, True)
    assert receiver.calls["/ok"] == 0


def test_the_signature_is_the_documented_hmac() -> None:
    import hashlib
    import hmac

    raw = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + raw, hashlib.sha256).hexdigest()
    assert signature(SECRET.encode(), 1700000000, raw) == f"v1={expected}"
    good = signature(SECRET.encode(), 1700000000, raw)
    assert verify_signature(SECRET.encode(), "1700000000", good, raw, now=1700000100)
    assert not verify_signature(
        SECRET.encode(), "1700000000", good, raw, now=1700000000 + 301
    )  # replayed late
    assert not verify_signature(SECRET.encode(), "1700000000", good, raw + b" ", now=1700000000)
    assert not verify_signature(b"another-secret-0123456789", "1700000000", good, raw, now=1700000000)
    assert not verify_signature(SECRET.encode(), "1700000001", good, raw, now=1700000000)
    assert not verify_signature(SECRET.encode(), None, good, raw)
