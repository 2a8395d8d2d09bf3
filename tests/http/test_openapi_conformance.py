"""Every answer the service gives conforms to its published OpenAPI document.

Schemathesis generates requests from the document (``contracts/openapi.json`` is the same text,
see ``test_openapi.py``) — valid ones and schema-violating ones — and sends them in-process to
the ASGI app on the lab memory backend with a real owner/admin/member token, so calls get past
authentication into the handlers. Every response must pass:

* ``not_a_server_error`` — no 5xx (a memory backend cannot be unavailable, so not even 503);
* ``status_code_conformance`` — the status is one the operation documents;
* ``content_type_conformance`` — the media type is one documented for that status;
* ``response_schema_conformance`` — the body validates against the documented schema
  (error envelopes included);
* ``response_headers_conformance`` — documented response headers are present and valid;
* ``positive_data_acceptance`` — a request valid by the document is not refused as invalid:
  generated positive data may only be answered with a status in ``ACCEPTED_FOR_VALID_INPUT``
  (the code-enforced request rules are in the document, ``openapi.py``'s ``BODY_RULES``…).
  A few rules relate values in different places of a request, which OpenAPI 3.1 cannot say
  (each parameter and the body have schemas of their own): ``_cross_location_rule`` names each,
  and only a case that breaks one is left to the other checks.

``test_schemathesis.py`` is the other half: the same generator over a real socket, asserting the
error envelope itself. Generation is seeded and derandomized and each operation gets a few
examples (``CONFORMANCE_EXAMPLES`` to hunt deeper by hand), so CI sees the same requests on
every run and the module stays well under a minute.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar
from schemathesis.checks import not_a_server_error, positive_data_acceptance
from schemathesis.core.failures import FailureGroup
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from northstar_http.bootstrap import create_app
from northstar_http.cli import openapi_document
from northstar_http.tokens import mint_token
from tests.conftest import JWT_SECRET, make_settings

MAX_EXAMPLES = int(os.environ.get("CONFORMANCE_EXAMPLES", "5"))
# The SSE operations are tested like the others, but a live stream never ends by itself: the
# in-process transport stops reading it after its first data event or at this deadline, and the
# checks see the status, the headers and the events read so far.
SSE_READ_SECONDS = 0.5
# A stream opened at the head carries only what is written while it is open, so while one of
# these is open the test keeps writing to its thread / canvas: the first event arrives (and
# ends the read) and its documented event schema is checked, instead of an empty stream.
LIVE_WRITES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "/sse/chat/{thread_id}": ("thread_id", "/chat/threads/{}/messages", {"role": "user", "content": "live"}),
    "/sse/canvas/{canvas_id}": ("canvas_id", "/canvas/{}/gestures", {"gesture": "pointer.move", "data": {}}),
}
WRITE_EVERY_SECONDS = 0.05

# What a valid request may still be answered with: not "your input is invalid" (400/422), but
ACCEPTED_FOR_VALID_INPUT = [
    "2xx",
    # 401/403: a role rule, an identity mismatch (actor_id ≠ the token's user) or a safety gate
    # (kill switch, strategy lock, firearms licence) refuses a well-formed request
    "401",
    "403",
    # 404: the resource a valid id names does not exist (yet)
    "404",
    # 409: a stale expected_version / base_rev / If-Match, or a state that forbids the change
    "409",
    # 410: a cursor is a signed, opaque token minted by the service; any string is "well formed"
    # by the document, and no schema can describe the signature, so a generated one is refused
    "410",
    # 429: an allowance is used up (a user's own export, once per interval): the request was
    # valid, its repeat too soon
    "429",
]


def _cross_location_rule(case: Any, response: Any) -> str | None:
    """The rule a refused case broke that OpenAPI 3.1 cannot express, if any."""
    if response.status_code != 422:
        return None
    try:
        code = response.json()["error"]["code"]
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None
    if "If-Match" in message and "disagree" in message:
        # If-Match (a header) and expected_version (the body or a query parameter) may both be
        # given, and then must name the same version: a rule across two locations
        return "If-Match = expected_version"
    if code.endswith(".idempotency_mismatch"):
        # an idempotency key reused with another payload: state (an earlier example of the same
        # operation, against the same app), not shape
        return "idempotency key reuse"
    field = (response.json()["error"].get("details") or {}).get("field")
    decoded = re.search(r"got `float` - at `\$\.(\w+)`", message)
    field = decoded.group(1) if decoded else field
    value = case.body.get(field) if isinstance(case.body, dict) and isinstance(field, str) else None
    if isinstance(value, float) and value.is_integer():
        # JSON Schema counts 2462.0 as an integer; the service's strict decoding does not
        return "an integer written with a fraction"
    if code == "canvas.content_hash_mismatch":
        # content_hash must be the digest of body: a value computed from another field
        return "content_hash = sha256(body)"
    if "idempotency_key and correlation_id differ" in message:
        # both may be given, and then must be equal: JSON Schema cannot compare two fields
        return "idempotency_key = correlation_id"
    if code == "request.validation_failed" and "S+$(?!" in response.text:
        # a note tag's "non-space" (\S): Python's whitespace (the service) is wider than
        # ECMA-262's (the document's regex dialect), e.g. U+001C..U+001F
        return "non-space across regex dialects"
    if message == "body is not valid base64":
        # body must be base64 when body_encoding says so: a rule across two fields (OpenAPI's
        # contentEncoding is an annotation, not a validation)
        return "body_encoding=base64 requires base64"
    if code == "canvas.op_invalid" and ("atom does not exist" in message or "atom already exists" in message):
        # an op on an atom the canvas lacks (or a create of one it has): state, not shape
        return "atoms of the canvas's state"
    if code == "canvas.rev_invalid":
        # base_rev must not be ahead of the canvas's head revision: state, not shape
        return "base_rev <= head revision"
    if code == "routing.unknown_connection":
        # the connections are the deployment's configuration, not part of the API's document
        return "a configured connection name"
    if "is bound twice" in message:
        # one binding per action: uniqueness of one field across array items
        return "unique action_name across bindings"
    if "'min' exceeds 'max'" in message:
        # a corridor's min <= max: JSON Schema cannot compare two fields
        return "min <= max"
    if case.path == "/firearms/licences" and "needs 'subject_type'" in message:
        # query parameters are independent in OpenAPI: subject_id needs subject_type
        return "subject_id requires subject_type"
    if case.path == "/config/{config_scope}" and "needs a surface_id" in message:
        # the query parameter surface_id is needed by one value of the path parameter
        return "config_scope=surface requires surface_id"
    return None


def valid_input_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """``positive_data_acceptance``, but for the cases ``_cross_location_rule`` names."""
    if _cross_location_rule(case, response) is not None:
        return None
    return positive_data_acceptance(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    valid_input_accepted,
]


CONFIG = schemathesis.Config.from_dict(
    {
        # the same requests on every run: a fixed seed, derandomized, no example database
        "seed": 20240615,
        "generation": {"deterministic": True, "no-shrink": True, "database": "none"},
        "max-stream-events": 1,
        "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED_FOR_VALID_INPUT}},
    }
)
schema = schemathesis.openapi.from_dict(json.loads(openapi_document()), config=CONFIG)

HEADERS = {
    "Authorization": "Bearer "
    + mint_token(
        JWT_SECRET,
        tenant_id="t_conformance",
        sub="u_conformance",
        mode="lab",
        roles=("owner", "admin", "member"),
        system=True,
    )
}


@pytest.fixture
def conformance_app(tmp_path: Path) -> Iterator[Litestar]:
    # One app per operation: Schemathesis' pytest plugin ends an ASGI app's lifespan after each
    # test item (an operation), and an app whose lifespan has ended has closed its stores and
    # ends every new event stream at once, so it is not reused.
    app = create_app(make_settings(tmp_path))
    try:
        yield app
    finally:
        asgi.shutdown_lifespans()  # already done by the plugin for its own items; not for others


@contextlib.contextmanager
def _writing_while_open(app: Litestar, case: Any) -> Iterator[None]:
    """For a live-stream case, post to the same thread / canvas every few ms until it returns."""
    live = LIVE_WRITES.get(case.path)
    resource = (case.path_parameters or {}).get(live[0]) if live else None
    if live is None or not isinstance(resource, str):
        yield
        return
    _, template, body = live
    done = threading.Event()

    def write() -> None:
        with asgi.get_client(app) as client:
            while not done.wait(WRITE_EVERY_SECONDS):
                # an id the route refuses is refused here too (4xx): then the stream is never open
                client.post(template.format(quote(resource, safe="")), json=body, headers=HEADERS, timeout=5)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        yield
    finally:
        done.set()
        writer.join(10)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_response_conforms_to_the_document(case: Any, conformance_app: Litestar) -> None:
    timeout = SSE_READ_SECONDS if case.path.startswith("/sse/") else 20
    with _writing_while_open(conformance_app, case):
        case.call_and_validate(app=conformance_app, headers=HEADERS, checks=CHECKS, timeout=timeout)


def test_the_checks_catch_a_response_the_document_does_not_describe(conformance_app: Litestar) -> None:
    # The harness must be able to fail on this app's answers: with /healthz documented as
    # requiring a field it never sends, and without its 200, both checks object.
    document = json.loads(openapi_document())
    ok = document["paths"]["/healthz"]["get"]["responses"]["200"]
    ok["content"]["application/json"]["schema"] = {"type": "object", "required": ["no_such_field"]}
    wrong_schema = schemathesis.openapi.from_dict(document, config=CONFIG)
    case = wrong_schema["/healthz"]["GET"].Case()
    with pytest.raises(FailureGroup) as caught:
        case.call_and_validate(app=conformance_app, headers=HEADERS, checks=CHECKS)
    assert any("no_such_field" in str(failure) for failure in caught.value.exceptions), caught.value

    document["paths"]["/healthz"]["get"]["responses"] = {"204": {"description": "no content"}}
    case = schemathesis.openapi.from_dict(document, config=CONFIG)["/healthz"]["GET"].Case()
    with pytest.raises(FailureGroup, match="Undocumented status code"):
        case.call_and_validate(app=conformance_app, headers=HEADERS, checks=CHECKS)
