"""The OpenAPI document is a complete contract: every success answer typed, every error status
documented with the one envelope schema, public probes unsecured, ids and page sizes bounded,
closed request bodies closed — and real answers of the service match what it says."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import msgspec
import pytest

from northstar_http.cli import openapi_document
from northstar_http.errors import ErrorEnvelope

DOC: dict[str, Any] = json.loads(openapi_document())
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]
ENVELOPE = "#/components/schemas/ErrorEnvelope"
OPERATIONS = [
    (method, path, op)
    for path, item in sorted(DOC["paths"].items())
    for method, op in sorted(item.items())
    if method in {"get", "put", "post", "patch", "delete"}
]
IDS = [f"{m.upper()} {p}" for m, p, _ in OPERATIONS]
PUBLIC = {"/healthz", "/readyz"}


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _validate(instance: Any, schema: dict[str, Any]) -> None:
    """``instance`` against ``schema``, its ``$ref``s resolved inside the document."""
    jsonschema.Draft202012Validator({**DOC, **schema}).validate(instance)


def _response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    response = DOC["paths"][path][method]["responses"][str(status)]
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS, ids=IDS)
def test_every_success_answer_is_typed(method: str, path: str, op: dict[str, Any]) -> None:
    successes = {s: r for s, r in op["responses"].items() if s.startswith("2")}
    assert successes, "no success response"
    for status, response in successes.items():
        if status == "204":
            assert "content" not in response
            continue
        (media, body), *_ = response["content"].items()
        schema = body["schema"]
        if media == "text/event-stream":
            events = schema["oneOf"]
            payloads = [e["properties"]["data"]["contentSchema"]["$ref"] for e in events]
            assert ENVELOPE in payloads and len(payloads) == 2, payloads
            assert all(_resolve({"$ref": ref}).get("properties") for ref in payloads)
            continue
        if media == "application/x-ndjson":  # each line one of the documented objects
            assert all(_resolve(one).get("properties") for one in schema["oneOf"]), schema
            continue
        assert media == "application/json"
        target = _resolve(schema)
        assert target.get("properties") or target.get("oneOf") or target.get("anyOf"), (status, schema)


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS, ids=IDS)
def test_every_error_status_is_the_envelope(method: str, path: str, op: dict[str, Any]) -> None:
    errors = {int(s): r for s, r in op["responses"].items() if int(s) >= 400}
    for status, response in errors.items():
        assert response["content"] == {"application/json": {"schema": {"$ref": ENVELOPE}}}, status
        assert response["description"], status
    expected: set[int] = set()
    if path not in PUBLIC:
        expected |= {400, 401, 403, 410, 503}
    if "requestBody" in op:
        expected |= {400, 413, 422}
    if op.get("parameters"):
        expected.add(422)
    assert expected <= errors.keys(), sorted(expected - errors.keys())


def test_litestar_validation_shape_is_nowhere() -> None:
    text = json.dumps(DOC)
    assert "Validation Exception" not in text
    for name, schema in SCHEMAS.items():
        assert not {"status_code", "detail", "extra"} <= set(schema.get("properties", {})), name


def test_domain_error_statuses_are_documented() -> None:
    def statuses(path: str, method: str) -> set[str]:
        return set(DOC["paths"][path][method]["responses"])

    assert {"404", "410"} <= statuses("/chat/threads/{thread_id}/snapshot", "get") | {"410"}
    assert "410" in statuses("/sse/chat/{thread_id}", "get")
    assert "410" in statuses("/sse/canvas/{canvas_id}", "get")
    assert "409" in statuses("/canvas/{canvas_id}/commands", "post")
    assert {"404", "409"} <= statuses("/blackboard/{run_id}/entries/{key}", "delete")
    assert {"404", "409", "502"} <= statuses("/actions/execute", "post")
    assert "409" in statuses("/kill-switches", "put")


def test_the_envelope_component_matches_what_the_server_sends() -> None:
    envelope = _resolve({"$ref": ENVELOPE})
    assert envelope["required"] == ["error"] and envelope["additionalProperties"] is False
    body = _resolve(envelope["properties"]["error"])
    assert set(body["required"]) == {"code", "message", "http_status", "gate", "request_id", "details"}


def test_public_probes_need_no_token_and_the_rest_do() -> None:
    assert DOC["security"] == [{"BearerToken": []}]
    for method, path, op in OPERATIONS:
        if path in PUBLIC:
            assert op["security"] == [], path
            assert "403" not in op["responses"], path
        else:
            assert "security" not in op or op["security"], (method, path)
    assert set(DOC["paths"]["/healthz"]["get"]["responses"]) == {"200"}
    assert {"401", "503"} <= set(DOC["paths"]["/readyz"]["get"]["responses"])


def test_put_blackboard_documents_create_and_replace() -> None:
    responses = DOC["paths"]["/blackboard/{run_id}/entries/{key}"]["put"]["responses"]
    for status in ("200", "201"):
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/BlackboardEntry"
        }
    assert responses["201"]["description"] != responses["200"]["description"]


def test_id_path_parameters_carry_their_pattern_and_limits_their_bounds() -> None:
    for method, path, op in OPERATIONS:
        for param in op.get("parameters", []):
            schema = param["schema"]
            if param["in"] == "path":
                assert "pattern" in schema or "enum" in schema, (method, path, param["name"])
                if "pattern" in schema:
                    re.compile(schema["pattern"])
            if param["in"] == "query" and param["name"] == "limit":
                assert schema["minimum"] == 1 and schema["maximum"] >= 1, (method, path)


def test_closed_request_bodies_refuse_unknown_fields_and_mark_required_ones() -> None:
    for method, path, op in OPERATIONS:
        body = op.get("requestBody")
        if body is None:
            continue
        schema = _resolve(body["content"]["application/json"]["schema"])
        assert schema["additionalProperties"] is False, (method, path)
    chat = _resolve(DOC["paths"]["/chat/threads/{thread_id}/messages"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"])
    assert set(chat["required"]) == {"role", "content"}
    assert chat["properties"]["role"]["enum"] == ["user", "agent", "system", "tool"]
    action = _resolve(DOC["paths"]["/actions/execute"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ])
    assert set(action["required"]) == {"action_name", "subject_type", "subject_id"}


def _body(path: str, method: str) -> dict[str, Any]:
    return _resolve(DOC["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"])


def test_every_if_match_header_is_a_version_etag() -> None:
    # every versioned write takes If-Match; a header is absent or a string (never "null"), and
    # its pattern admits exactly the ETags of storable versions the service sends
    from northstar_core.storage import MAX_VERSION

    headers = [
        (method, path, param)
        for method, path, op in OPERATIONS
        for param in op.get("parameters", [])
        if param["in"] == "header" and param["name"] == "If-Match"
    ]
    assert len(headers) >= 14, headers
    for method, path, param in headers:
        assert method in {"put", "patch", "delete"}, (method, path)
        schema = param["schema"]
        assert schema["type"] == "string" and "oneOf" not in schema, (method, path)
        pattern = re.compile(schema["pattern"])
        assert pattern.fullmatch('"3"') and pattern.fullmatch('W/"3"') and pattern.fullmatch("3")
        assert not pattern.fullmatch("") and not pattern.fullmatch("null") and not pattern.fullmatch('"0"')
        largest = "9" * (len(str(MAX_VERSION)) - 1)
        assert pattern.fullmatch(largest) and int(largest) < MAX_VERSION


def test_request_rules_enforced_in_code_are_in_the_document() -> None:
    from northstar_core.identity import ID_PATTERN
    from northstar_core.spine import EVENT_TYPE_PATTERN as SPINE_TYPE
    from northstar_core.timeline import EVENT_TYPE_PATTERN as TIMELINE_TYPE

    action = _body("/actions/execute", "post")["properties"]
    for field in ("action_name", "subject_type", "subject_id", "idempotency_key", "surface_id"):
        assert action[field]["pattern"] == ID_PATTERN.pattern, field
    assert _body("/events/append", "post")["properties"]["event_type"]["pattern"] == SPINE_TYPE.pattern
    timeline = _body("/realtime/timeline/{stream_id}/append", "post")
    assert timeline["properties"]["type"]["pattern"] == TIMELINE_TYPE.pattern
    # fields required only in code
    replay = {p["name"]: p for p in DOC["paths"]["/events/replay"]["get"]["parameters"]}
    assert replay["run_id"]["required"] is True and replay["run_id"]["schema"]["type"] == "string"
    assert "surface_id" in _body("/notes", "post")["required"]
    assert {"run_id", "step_id"} <= set(_body("/events/append", "post")["required"])
    assert "expected_version" in _body("/kill-switches", "put")["required"]
    record = _body("/canvas/{canvas_id}/artifacts", "post")
    _validate({"kind": "doc", "uri": "s3://x"}, record)
    for wrong in ({"kind": "doc"}, {"kind": "doc", "uri": "s3://x", "body": "b"}):
        with pytest.raises(jsonschema.ValidationError):
            _validate(wrong, record)
    command = _body("/canvas/{canvas_id}/commands", "post")
    with pytest.raises(jsonschema.ValidationError):
        _validate({"base_rev": 0, "ops": [{"op": "delete", "atom_id": "a"}]}, command)
    _validate({"base_rev": 0, "ops": [{"op": "delete", "atom_id": "a"}], "correlation_id": "c"}, command)
    chat = _body("/chat/threads/{thread_id}/messages", "post")
    with pytest.raises(jsonschema.ValidationError):
        _validate({"role": "user", "content": ""}, chat)
    with pytest.raises(jsonschema.ValidationError):
        _validate({"title": "t", "surface_id": "s", "tags": [""]}, _body("/notes", "post"))
    # versions: a write's expected_version is a storable version; a tabular read's is one or more
    blackboard = _body("/blackboard/{run_id}/entries/{key}", "put")
    assert blackboard["properties"]["expected_version"]["minimum"] == 1
    version = {p["name"]: p for p in DOC["paths"]["/tabular/{table}/{record_id}"]["get"]["parameters"]}
    assert version["version"]["schema"]["minimum"] == 1
    since = {p["name"]: p for p in DOC["paths"]["/events/list"]["get"]["parameters"]}["since"]
    assert since["schema"]["format"] == "date-time"
    assert _body("/canvas/{canvas_id}/gestures", "post")["properties"]["gesture"]["pattern"]


def test_page_components_have_short_names() -> None:
    pages = [name for name in SCHEMAS if name.startswith("Page")]
    assert "Page_Note" in pages and "Page_ChatEntry" in pages
    assert all("." not in name for name in pages), pages


# --- real answers --------------------------------------------------------------------------------


async def test_real_error_answers_are_the_documented_envelope(client: Any, auth: Any) -> None:
    answers = [
        await client.get("/notes/n1", headers=auth()),  # 404
        await client.get("/notes"),  # 401
        await client.get("/chat/threads/th/messages", params={"cursor": "x"}, headers=auth()),  # 410
        await client.post("/chat/threads/th/messages", json={"role": "nobody"}, headers=auth()),  # 422
        await client.post(
            "/chat/threads/th/messages", content=b"{", headers={**auth(), "content-type": "application/json"}
        ),  # 400
        await client.get("/routing/routes", headers=auth(roles=("viewer",))),  # 403
    ]
    assert [r.status_code for r in answers] == [404, 401, 410, 422, 400, 403]
    for r in answers:
        msgspec.json.decode(r.content, type=ErrorEnvelope, strict=True)
        _validate(r.json(), {"$ref": ENVELOPE})


async def test_real_success_answers_match_their_documented_schema(client: Any, auth: Any) -> None:
    url = "/blackboard/run1/entries/k"
    created = await client.put(url, json={"value": {"a": 1}}, headers=auth())
    replaced = await client.put(url, json={"value": 2, "expected_version": 1}, headers=auth())
    assert (created.status_code, replaced.status_code) == (201, 200)
    path = "/blackboard/{run_id}/entries/{key}"
    _validate(created.json(), _response_schema(path, "put", 201))
    _validate(replaced.json(), _response_schema(path, "put", 200))

    message = {"role": "user", "content": "hi", "idempotency_key": "k"}
    posted = await client.post("/chat/threads/th/messages", json=message, headers=auth())
    again = await client.post("/chat/threads/th/messages", json=message, headers=auth())
    assert (posted.status_code, again.status_code) == (201, 200) and again.json()["replayed"] is True
    chat = "/chat/threads/{thread_id}/messages"
    _validate(posted.json(), _response_schema(chat, "post", 201))
    _validate(again.json(), _response_schema(chat, "post", 200))
    listed = await client.get("/chat/threads/th/messages", headers=auth())
    _validate(listed.json(), _response_schema(chat, "get", 200))

    health = await client.get("/healthz")
    _validate(health.json(), _response_schema("/healthz", "get", 200))
    ready = await client.get("/readyz")
    _validate(ready.json(), _response_schema("/readyz", "get", 200))
    routes = await client.get("/routing/routes", headers=auth(roles=("admin",), system=True))
    _validate(routes.json(), _response_schema("/routing/routes", "get", 200))
    diagnostics = await client.get("/routing/diagnostics", headers=auth(roles=("admin",), system=True))
    _validate(diagnostics.json(), _response_schema("/routing/diagnostics", "get", 200))


def test_a_wrong_body_fails_the_documented_schema() -> None:
    """The schema checks above can fail: a body missing a required field does not validate."""
    with pytest.raises(jsonschema.ValidationError):
        _validate({"value": 1}, _response_schema("/blackboard/{run_id}/entries/{key}", "put", 201))
    with pytest.raises(jsonschema.ValidationError):
        _validate({"error": {"code": "Not A Code"}}, {"$ref": ENVELOPE})
