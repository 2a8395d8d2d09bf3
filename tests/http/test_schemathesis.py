"""Schemathesis against the served OpenAPI document, for EVERY documented operation.

Complements ``test_no_500_fuzz.py`` (hand-written hypothesis strategies for path ids, queries
and arbitrary JSON): here Schemathesis generates requests from the published schema itself —
valid and schema-violating bodies, query values, ``If-Match`` headers — and sends them over a
real socket to a lab service (memory backend) with a valid owner/admin/system token, so calls get
past authentication into the handlers. For every answer:

* never a 5xx (the lab memory backend cannot be unavailable, so not even 503);
* every 4xx is the envelope: ``error.code`` (dotted), ``error.http_status`` equal to the
  status, ``error.request_id`` equal to the echoed ``X-Request-Id``.

SSE operations are included: a 200 stream is opened and closed at once (only the headers are
checked); an error must be an envelope before any stream starts. The number of examples is
bounded (``MAX_EXAMPLES`` per operation) so the whole module takes well under a minute.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from northstar_http.bootstrap import create_app
from northstar_http.cli import openapi_document
from northstar_http.tokens import mint_token
from tests.conftest import JWT_SECRET, make_settings

# per operation; a deeper hunt by hand: SCHEMATHESIS_EXAMPLES=50 pytest tests/http/test_schemathesis.py
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "6"))
SEEN: Counter[int] = Counter()
CODE = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")

schema = schemathesis.openapi.from_dict(json.loads(openapi_document()))


class _Server:
    def __init__(self, tmp: Any) -> None:
        app = create_app(make_settings(tmp, tail_poll_seconds=0.05))
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(600):
            if self.server.started:
                port = self.server.servers[0].sockets[0].getsockname()[1]
                return f"http://127.0.0.1:{port}"
            if not self.thread.is_alive():
                break
            threading.Event().wait(0.05)
        raise RuntimeError("the fuzz target server did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.server.force_exit = True  # open SSE streams must not hold the shutdown
        self.thread.join(15)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _Server(tmp_path_factory.mktemp("schemathesis")) as url:
        yield url
    print(f"\nschemathesis: {sum(SEEN.values())} requests, by status {dict(sorted(SEEN.items()))}")


HEADERS = {
    "Authorization": "Bearer "
    + mint_token(
        JWT_SECRET,
        tenant_id="t_fuzz",
        sub="u_fuzz",
        mode="lab",
        roles=("owner", "admin", "member"),
        system=True,
    )
}


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_every_operation_answers_below_500_with_envelopes(case: Any, base_url: str) -> None:
    # the generated request (path, query, body, headers such as If-Match), always with a valid token
    kwargs = case.as_transport_kwargs(base_url=base_url, headers=HEADERS)
    where = f"{case.method} {case.formatted_path} {case.query} {str(case.body)[:200]}"
    with requests.request(**kwargs, timeout=20, stream=True) as response:
        status = response.status_code
        SEEN[status] += 1
        if case.path.startswith("/sse/") and status == 200:
            # a live stream: check its headers, never read it to the end
            assert response.headers["content-type"].startswith("text/event-stream"), where
            return
        text = response.text
    assert status < 500, f"{where} -> {status} {text[:300]}"
    if status >= 400:
        assert response.headers.get("content-type", "").startswith("application/json"), where
        err = json.loads(text)["error"]
        assert err["http_status"] == status, (where, err)
        assert CODE.match(err["code"]), (where, err)
        assert err["request_id"] and err["request_id"] == response.headers["x-request-id"], (where, err)


# --- the headers the schema does not describe ---------------------------------------------------

IDENTITY_HEADERS = [
    "X-Tenant-Id",
    "X-Mode",
    "X-User-Id",
    "X-Project-Id",
    "X-Surface-Id",
    "X-App-Id",
    "X-Run-Id",
    "X-Step-Id",
    "X-Trace-Id",
    "X-Request-Id",
    "Last-Event-ID",
    "If-Match",
]
# header values must be latin-1 and free of CR/LF to be sendable at all
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=40
)
PROBES = [
    ("GET", "/chat/threads/th/messages", None),
    ("POST", "/chat/threads/th/messages", {"role": "user", "content": "x"}),
    ("GET", "/canvas/cv/replay", None),
    ("PUT", "/blackboard/r1/entries/k", {"value": 1}),
    (
        "POST",
        "/events/append",
        {"event_type": "rl", "source": "agent", "run_id": "r", "step_id": "s", "payload": {}},
    ),
    ("GET", "/notes", None),
]


@given(
    probe=st.sampled_from(PROBES),
    headers=st.dictionaries(st.sampled_from(IDENTITY_HEADERS), header_values, min_size=1, max_size=4),
)
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_arbitrary_identity_headers_never_cause_a_5xx(
    base_url: str, probe: Any, headers: dict[str, str]
) -> None:
    method, path, body = probe
    sent = {k: v.strip() for k, v in headers.items()}
    r = requests.request(method, base_url + path, json=body, headers={**HEADERS, **sent}, timeout=20)
    where = f"{method} {path} {sent}"
    assert r.status_code < 500, f"{where} -> {r.status_code} {r.text[:300]}"
    if r.status_code >= 400:
        err = r.json()["error"]
        assert err["http_status"] == r.status_code and CODE.match(err["code"]), (where, err)
        assert err["request_id"] == r.headers["x-request-id"], (where, err)
