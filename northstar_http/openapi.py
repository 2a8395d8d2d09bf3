"""The OpenAPI document: its configuration, and the completion every operation gets.

Litestar builds paths, parameters and schemas from the handlers' signatures. What the service
does for every operation alike cannot be said by one handler's annotations, so
:func:`complete` adds it to the generated document (the served ``/schema/openapi.json`` and
``contracts/openapi.json`` alike, through :class:`NorthstarOpenAPIConfig`):

* every error answer is the SPEC §4 envelope, one reusable component (``ErrorEnvelope``,
  generated from :class:`northstar_http.errors.ErrorEnvelope`). Litestar's own 400
  ``{status_code, detail, extra}`` response is replaced: the service never sends that shape
  (``errors.py`` answers a validation failure with a 422 envelope);
* the statuses that follow from how an operation is served: 400 (a malformed identity header;
  with a body, malformed JSON), 401/403 when it is secured, 408/413 when it reads a body, 422
  when it takes input, 503 whenever a backend (store, JWKS) is involved;
* public operations (``auth.PUBLIC_PATHS``) carry ``security: []``;
* object schemas of Structs that forbid unknown fields say ``additionalProperties: false``;
* ``Page[T]`` components get short, module-independent names (``Page_Note``);
* live streams are documented as ``text/event-stream`` (:func:`sse_stream`);
* the request rules the core enforces in code (id and event-type patterns, version bounds,
  fields one operation needs, exactly-one-of pairs) are written into the request schemas from
  the explicit tables ``BODY_RULES`` / ``PARAMETER_RULES`` / ``OPERATION_RULES`` below, each
  entry built from the core constant it comes from: input valid by the document is accepted.

A handler adds the statuses only it can answer with ``responses=error_responses(404, 409)``,
documents a second success status with :func:`success`, and a body it reads as a free-form
mapping (so that the core validates it with its own error codes) with
``operation_class=body_schema(SomeStruct)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any, ClassVar, Final

import msgspec
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.params import PathParameter, QueryParameter

from northstar_core.bounds import MAX_AMOUNT, MAX_MAGNITUDE, MAX_TOTAL, MAX_TTL_SECONDS
from northstar_core.canvas.model import KIND_PATTERN, CreateOp, DeleteOp, MoveOp, UpdateOp
from northstar_core.canvas.records import HASH_PATTERN
from northstar_core.config import TOGGLE_KEY
from northstar_core.identity import ID_PATTERN, TENANT_PATTERN
from northstar_core.notes import Tag
from northstar_core.routing import RESOURCE_KINDS, RouteOptions
from northstar_core.safety.budget import PERIOD_PATTERN
from northstar_core.spine import EVENT_TYPE_PATTERN as SPINE_EVENT_TYPE
from northstar_core.spine import SOURCES, Causality
from northstar_core.storage import MAX_EXPIRES_AT, MAX_VERSION
from northstar_core.timeline import EVENT_TYPE_PATTERN as TIMELINE_EVENT_TYPE
from northstar_http.auth import PUBLIC_PATHS
from northstar_http.docs import docs_render_plugins
from northstar_http.errors import ErrorEnvelope
from northstar_http.tickets import STREAM_PATHS

OPENAPI_PATH: Final = "/schema"
SCHEMA_REF: Final = "#/components/schemas/{name}"
ENVELOPE_REF: Final = SCHEMA_REF.format(name="ErrorEnvelope")
WRITE_METHODS: Final = frozenset({"post", "put", "patch", "delete"})
SSE_MEDIA_TYPE: Final = "text/event-stream"
JSON_LINES_MEDIA_TYPE: Final = "application/x-ndjson"

# What each documented error status means here (the codes are in contracts/error_codes.json).
ERROR_DESCRIPTIONS: Final[dict[int, str]] = {
    400: "Bad request: malformed JSON (`request.malformed_json`), an invalid identity header "
    "(`auth.invalid_identity`) or an unreadable request (`request.invalid`)",
    401: "No valid bearer token (`auth.missing_token`, `auth.invalid_token`)",
    403: "Not allowed: role, identity mismatch, a safety gate (`gate.*`) or a domain rule",
    404: "No such resource (`<domain>.not_found` and kin)",
    408: "The request body did not arrive in time (`request.timeout`)",
    409: "Conflict: a stale version or revision, or a state that does not allow this",
    410: "Gone: the cursor is invalid, tampered, foreign or ahead of the head "
    "(`<domain>.cursor_invalid`), or the tenant was erased (`tenant.erased`)",
    413: "The body or a value in it exceeds a size limit (`request.body_too_large`, "
    "`<domain>.*_too_large`)",
    422: "The request is well-formed JSON but invalid (`request.validation_failed`, "
    "`<domain>.invalid_*`, idempotency mismatches)",
    429: "An allowance is used up (`user_data.export_rate_limited`); retry after `Retry-After`",
    502: "An upstream (an action's handler or webhook) failed (`actions.handler_failed`)",
    503: "A backend is unavailable, unrouted or contended, or the service is not ready; retry "
    "after `Retry-After` (`<kind>.backend_unavailable`, `<kind>.missing_route`…)",
}


# --- what handlers declare ---------------------------------------------------------------------


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """The error statuses only this operation answers (404, 409, 410…); :func:`complete`
    gives each the envelope schema and adds the statuses every operation shares."""
    unknown = [s for s in statuses if s not in ERROR_DESCRIPTIONS]
    if unknown:
        raise ValueError(f"no description for error statuses {unknown}")
    return {s: ResponseSpec(data_container=None, description=ERROR_DESCRIPTIONS[s]) for s in statuses}


def success(status: int, body: Any, description: str) -> dict[int, ResponseSpec]:
    """A second success status of an operation (e.g. 200 for an idempotent replay next to the
    decorator's 201), with its body type."""
    return {status: ResponseSpec(data_container=body, description=description, generate_examples=False)}


# Structs the document names that no handler signature shows Litestar (documented bodies and
# event payloads); their schemas are msgspec's own.
_DOC_STRUCTS: dict[str, type[msgspec.Struct]] = {}


def _register(struct: type[msgspec.Struct]) -> str:
    known = _DOC_STRUCTS.setdefault(struct.__name__, struct)
    if known is not struct:
        raise ValueError(f"two documented Structs are named {struct.__name__}")
    return SCHEMA_REF.format(name=struct.__name__)


def body_schema(struct: type[msgspec.Struct], *, required: bool = True) -> type[Operation]:
    """An ``operation_class`` documenting the request body as ``struct``, for handlers that read
    a free-form mapping and leave its validation (and error codes) to the core, which decodes
    it into ``struct``. The schema is msgspec's own for ``struct``."""
    ref = Reference(ref=_register(struct))

    @dataclass
    class DocumentedBody(Operation):
        body_required: ClassVar[bool] = required

        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={"application/json": OpenAPIMediaType(schema=ref)}, required=self.body_required
            )

    DocumentedBody.__name__ = DocumentedBody.__qualname__ = f"{struct.__name__}Operation"
    return DocumentedBody


def _sse_event(name: Schema, payload: Reference, *, with_id: bool) -> Schema:
    return Schema(
        type=OpenAPIType.OBJECT,
        required=["event", "data", "id"] if with_id else ["event", "data"],
        properties={
            "event": name,
            "data": Schema(
                type=OpenAPIType.STRING, content_media_type="application/json", content_schema=payload
            ),
            "id": Schema(type=OpenAPIType.STRING, description="the event's cursor"),
            "retry": Schema(type=OpenAPIType.INTEGER),
        },
    )


def sse_stream(payload: type[msgspec.Struct], *, events: list[str] | None = None) -> type[Operation]:
    """An ``operation_class`` documenting a live stream's events: each is named from ``events``
    (any name but ``error`` when None), has its cursor as ``id`` and a ``payload`` as JSON
    ``data``; a backend failure ends the stream with an ``error`` event carrying the envelope.
    The first frame carries only ``id`` (the start position) and ``retry``: no event."""
    ref = Reference(ref=_register(payload))
    name = (
        Schema(type=OpenAPIType.STRING, enum=list(events))
        if events
        else Schema(type=OpenAPIType.STRING, schema_not=Schema(const="error"))
    )
    frame = Schema(
        one_of=[
            _sse_event(name, ref, with_id=True),
            _sse_event(Schema(const="error"), Reference(ref=_register(ErrorEnvelope)), with_id=False),
        ],
        description="One event of the stream (send the last `id` back as `Last-Event-ID`). The "
        "first frame carries only `id` (the cursor the stream starts from) and `retry`.",
    )

    @dataclass
    class EventStream(Operation):
        def __post_init__(self) -> None:
            assert self.responses is not None
            self.responses["200"] = OpenAPIResponse(
                description="Server-Sent Events",
                content={SSE_MEDIA_TYPE: OpenAPIMediaType(schema=frame)},
            )

    EventStream.__name__ = EventStream.__qualname__ = f"{payload.__name__}StreamOperation"
    return EventStream


def json_lines(*lines: type[msgspec.Struct], description: str) -> type[Operation]:
    """An ``operation_class`` documenting a 200 answer streamed as JSON lines, each one of
    ``lines`` (tagged Structs)."""
    line = Schema(one_of=[Reference(ref=_register(struct)) for struct in lines], description=description)

    @dataclass
    class JsonLines(Operation):
        def __post_init__(self) -> None:
            assert self.responses is not None
            self.responses["200"] = OpenAPIResponse(
                description="JSON lines (one JSON object per line)",
                content={JSON_LINES_MEDIA_TYPE: OpenAPIMediaType(schema=line)},
            )

    JsonLines.__name__ = JsonLines.__qualname__ = f"{lines[0].__name__}LinesOperation"
    return JsonLines


# --- the configuration ---------------------------------------------------------------------------


class _Document(OpenAPI):
    """The generated document; its dictionary form is completed (see module doc)."""

    def to_schema(self) -> dict[str, Any]:
        return complete(super().to_schema())


@dataclass
class NorthstarOpenAPIConfig(OpenAPIConfig):
    """Litestar's configuration, building a :class:`_Document` so that every rendering of the
    document (served or written by ``northstar openapi``) is completed."""

    def to_openapi_schema(self) -> OpenAPI:
        base = super().to_openapi_schema()
        document = _Document.__new__(_Document)
        document.__dict__.update(base.__dict__)
        return document


def openapi_config() -> OpenAPIConfig:
    return NorthstarOpenAPIConfig(
        title="Northstar durable engines",
        version="0.1.0",
        path=OPENAPI_PATH,
        # Swagger UI with locally served assets: the docs page works on a host without internet
        render_plugins=docs_render_plugins(OPENAPI_PATH),
        components=Components(
            security_schemes={
                "BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
                # what a browser's EventSource presents instead of a header (POST /sse/tickets)
                "StreamTicket": SecurityScheme(
                    type="apiKey",
                    name="ticket",
                    security_scheme_in="query",
                    description="a stream ticket from POST /sse/tickets, valid on its one stream",
                ),
            }
        ),
        security=[{"BearerToken": []}],
    )


# --- the completion ------------------------------------------------------------------------------

_PUBLIC: Final = [re.compile(p) for p in PUBLIC_PATHS]
_PAGE_NAME: Final = re.compile(r"^Page_(?:[A-Za-z0-9_]+\.)*([A-Za-z0-9_]+)_$")


def _is_public(path: str) -> bool:
    return any(p.search(path) for p in _PUBLIC)


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method in {"get", "put", "post", "patch", "delete", "head", "options"}:
                yield path, method, op


def _litestar_400(response: dict[str, Any]) -> bool:
    """Litestar's generated ValidationException response (a shape the service never sends)."""
    for media in (response.get("content") or {}).values():
        props = (media.get("schema") or {}).get("properties") or {}
        if {"status_code", "detail"} <= props.keys():
            return True
    return False


def _shared_statuses(path: str, op: dict[str, Any]) -> set[int]:
    """The error statuses that follow from how the operation is served."""
    has_body = "requestBody" in op
    has_input = has_body or bool(op.get("parameters"))
    statuses: set[int] = set()
    if _is_public(path):
        # the public probes: /readyz verifies a token only when one is sent, and reports
        # "not ready" as 503; /healthz answers from the process alone
        if path != "/healthz":
            statuses |= {401, 503}
    else:
        # 410: any tenant's request once its data has been erased
        statuses |= {400, 401, 403, 410, 503}
    if has_input:
        statuses.add(422)
    if has_body:
        statuses |= {400, 408, 413}
    return statuses


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": ERROR_DESCRIPTIONS.get(status) or HTTPStatus(status).phrase,
        "content": {"application/json": {"schema": {"$ref": ENVELOPE_REF}}},
    }


def _complete_operation(path: str, op: dict[str, Any]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    declared = {
        int(status)
        for status, response in responses.items()
        if int(status) >= 400 and not _litestar_400(response)
    }
    for key in [s for s in responses if int(s) >= 400]:
        del responses[key]
    for code in sorted(declared | _shared_statuses(path, op)):
        responses[str(code)] = _error_response(code)
    if _is_public(path):
        op["security"] = []
    elif any(path.startswith(prefix) for prefix in STREAM_PATHS.values()):
        op["security"] = [{"BearerToken": []}, {"StreamTicket": []}]
    for response in responses.values():
        if response.get("headers") == {}:
            del response["headers"]


def _closed_structs() -> dict[str, bool]:
    """Struct names → whether every Struct of that name forbids unknown fields."""
    seen: dict[str, bool] = {}
    stack = list(msgspec.Struct.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if not cls.__module__.startswith("northstar_"):
            continue
        forbid = bool(cls.__struct_config__.forbid_unknown_fields)
        seen[cls.__name__] = seen.get(cls.__name__, True) and forbid
    return seen


def _add_components(doc: dict[str, Any]) -> None:
    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    structs: list[type[msgspec.Struct]] = [ErrorEnvelope, *_DOC_STRUCTS.values()]
    _, components = msgspec.json.schema_components(structs, ref_template=SCHEMA_REF)
    for name, schema in components.items():
        schemas.setdefault(name, schema)


def _close_objects(doc: dict[str, Any]) -> None:
    closed = _closed_structs()
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        title = schema.get("title", name)
        if schema.get("type") == "object" and "properties" in schema and closed.get(title):
            schema["additionalProperties"] = False


def _rename_pages(doc: dict[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = doc.get("components", {}).get("schemas", {})
    renames: dict[str, str] = {}
    for name in list(schemas):
        match = _PAGE_NAME.fullmatch(name)
        if match is None:
            continue
        short = f"Page_{match.group(1)}"
        if short != name and short not in schemas and short not in renames.values():
            renames[name] = short
    if not renames:
        return doc
    for old, new in renames.items():
        schemas[new] = schemas.pop(old)
    refs = {SCHEMA_REF.format(name=old): SCHEMA_REF.format(name=new) for old, new in renames.items()}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (refs.get(v, v) if k == "$ref" else walk(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    renamed: dict[str, Any] = walk(doc)
    return renamed


# --- the request rules the core enforces in code ------------------------------------------------
#
# Each fragment is merged into a property's or a parameter's schema. Type-specific keywords
# (pattern, minimum, format) constrain only their type, so a nullable field keeps its null.

ID: Final = {"pattern": ID_PATTERN.pattern}  # northstar_core.identity.ID_PATTERN (check_id)
SPINE_TYPE: Final = {"pattern": SPINE_EVENT_TYPE.pattern}  # northstar_core.spine.EVENT_TYPE_PATTERN
# northstar_core.timeline.EVENT_TYPE_PATTERN
TIMELINE_TYPE: Final = {"pattern": TIMELINE_EVENT_TYPE.pattern}
KIND: Final = {"pattern": KIND_PATTERN.pattern}  # northstar_core.canvas.model.KIND_PATTERN (kinds, gestures)
PERIOD: Final = {"pattern": PERIOD_PATTERN.pattern}  # northstar_core.safety.budget.PERIOD_PATTERN
# northstar_core.bounds.check_expected_version (writes): a version a record can have, followed by
# one that stays storable (northstar_core.storage.MAX_VERSION)
WRITE_VERSION: Final = {"minimum": 1, "maximum": MAX_VERSION - 1}
# the same for a policy document's write, where 0 names "does not exist yet" (safety.documents)
DOCUMENT_VERSION: Final = {"minimum": 0, "maximum": MAX_VERSION - 1}
# northstar_core.bounds.check_expected_version(delete=True): representable
DELETE_VERSION: Final = {"minimum": -MAX_VERSION, "maximum": MAX_VERSION}
TIMESTAMP: Final = {"format": "date-time"}  # northstar_core parse_iso: RFC 3339
NON_EMPTY: Final = {"minLength": 1}
SOURCE: Final = {"enum": list(SOURCES)}  # northstar_core.spine.SOURCES
AMOUNT: Final = {"minimum": 0, "maximum": MAX_AMOUNT}  # northstar_core.bounds.MAX_AMOUNT
# northstar_core.bounds.MAX_TTL_SECONDS; a TTL of 0 would expire at once and is refused
TTL: Final = {"exclusiveMinimum": 0, "maximum": MAX_TTL_SECONDS}
EXPIRES_AT: Final = {"minimum": 0, "maximum": MAX_EXPIRES_AT}  # northstar_core.storage.MAX_EXPIRES_AT
# northstar_core.safety.checks.expiry: "give 'expires_at' or 'ttl_seconds', not both"
ONE_EXPIRY: Final = {
    "not": {
        "required": ["expires_at", "ttl_seconds"],
        "properties": {"expires_at": {"type": "number"}, "ttl_seconds": {"type": "number"}},
    }
}
# northstar_core.notes.Tag (msgspec's schema of it: the handler's list drops the item's Meta)
TAG: Final = msgspec.json.schema(Tag)
# If-Match: the ETag the service sends ("N", N a stored version, which check_expected_version
# bounds by MAX_VERSION); weak (W/) and unquoted forms are accepted too. The digit count is the
# largest that stays below MAX_VERSION whatever the digits.
IF_MATCH: Final = {
    "pattern": f'^(?:W/)?"?[1-9][0-9]{{0,{len(str(MAX_VERSION)) - 2}}}"?$',
    "description": "the ETag of the version replaced (as a GET answers it, e.g. `\"3\"`)",
}

CANVAS_OPS: Final = (CreateOp, UpdateOp, DeleteOp, MoveOp)  # northstar_core.canvas.model.CanvasOp
# northstar_core.spine.Causality: each field an id
CAUSALITY_IDS: Final = tuple(Causality.__struct_fields__)
POLICY_WRITES: Final = (
    "BudgetPolicyWrite",
    "FirearmsGrantsWrite",
    "FirearmsPolicyWrite",
    "KillSwitchesWrite",
    "CorridorsWrite",
    "StrategyLockPolicyWrite",
)

# component schema → property → fragment
BODY_RULES: Final[dict[str, dict[str, dict[str, Any]]]] = {
    # northstar_core.safety.actions: names and subjects are ids (actions._check_ids)
    "ActionRequest": {
        **{
            f: ID
            for f in ("action_name", "subject_type", "subject_id", "idempotency_key", "app_id", "surface_id")
        },
        # northstar_core.safety.gates: a subject's stream is "<type>:<id>", so no ':' in the type
        "subject_type": {**ID, "not": {"pattern": ":"}},
        "estimated_cost": AMOUNT,
    },
    "AnalyticsEventIn": {"occurred_at": TIMESTAMP},
    # northstar_core.safety.budget.UsageIn: ids (budget.record_usage)
    "UsageIn": {**{f: ID for f in ("action_name", "idempotency_key", "surface_id")}, "amount": AMOUNT},
    # northstar_core.canvas.records._validate / gestures / service
    "RecordIn": {
        "kind": KIND,
        "idempotency_key": ID,
        "content_hash": {"pattern": HASH_PATTERN.pattern},
        # canvas.records._validate: "uri must be 1 to 2048 characters"
        "uri": {"minLength": 1, "maxLength": 2048},
    },
    "GestureIn": {"gesture": KIND, "idempotency_key": ID},
    "CommandIn": {
        "idempotency_key": ID,
        "correlation_id": ID,
        "actor_id": ID,
        # northstar_core.canvas.model: each op converts to CanvasOp (strictly), at least one
        "ops": {"minItems": 1, "items": {"oneOf": [{"$ref": _register(op)} for op in CANVAS_OPS]}},
    },
    **{op.__name__: {"atom_id": ID} for op in CANVAS_OPS},
    "CreateOp": {"atom_id": ID, "kind": KIND},
    # northstar_core.safety.documents.validate (check_name is the id grammar)
    "FirearmsBinding": {"action_name": ID, "licence_type": ID},
    "FirearmsGrant": {"licence_type": ID, "subject_type": ID, "subject_id": {"anyOf": [ID, {"const": "*"}]}},
    "LockRule": {"action_name": ID, "surface_id": ID},
    "BudgetLimit": {"limit": {"minimum": 0, "maximum": MAX_TOTAL}, "surface_id": ID},
    "Corridor": {
        "parameter": ID,
        "action_name": ID,
        "surface_id": ID,
        "min": {"minimum": -MAX_MAGNITUDE, "maximum": MAX_MAGNITUDE},
        "max": {"minimum": -MAX_MAGNITUDE, "maximum": MAX_MAGNITUDE},
    },
    # northstar_core.config: toggle keys are dotted lower-case names of at most 128 characters
    "ConfigWrite": {
        "expected_version": WRITE_VERSION,
        "values": {"propertyNames": {"pattern": TOGGLE_KEY.pattern, "maxLength": 128}},
    },
    "PostMessageIn": {"idempotency_key": ID},
    # northstar_core.spine.append: event_type and the ids it carries
    "EventIn": {
        "event_type": SPINE_TYPE,
        "source": SOURCE,
        **{f: ID for f in ("idempotency_key", "project_id", "run_id", "step_id", "surface_id")},
        "parent_event_id": {"format": "uuid"},  # "'parent_event_id' must be an event id (UUID)"
    },
    "Causality": {f: ID for f in CAUSALITY_IDS},
    # northstar_core.timeline.append
    "AppendIn": {"type": TIMELINE_TYPE, "idempotency_key": ID},
    # northstar_core.safety.licences / locks (safety.checks.check_optional_id)
    "LicenceIn": {
        **{f: ID for f in ("licence_type", "subject_type", "subject_id")},
        "ttl_seconds": TTL,
        "expires_at": EXPIRES_AT,
    },
    "LockIn": {"action_name": ID, "surface_id": ID, "ttl_seconds": TTL, "expires_at": EXPIRES_AT},
    "LockPatch": {
        "action_name": ID,
        "surface_id": ID,
        "ttl_seconds": TTL,
        "expires_at": EXPIRES_AT,
        "expected_version": WRITE_VERSION,
    },
    "ReviewIn": {"expected_version": WRITE_VERSION},
    "RevokeIn": {"expected_version": WRITE_VERSION},
    "MemorySet": {"key": ID, "session_id": ID, "ttl_seconds": TTL},
    # northstar_core.routing: RESOURCE_KINDS, TENANT_PATTERN (identity)
    "RouteIn": {
        "resource_kind": {"enum": list(RESOURCE_KINDS)},
        "tenant_id": {"pattern": TENANT_PATTERN.pattern},
        # RouteIn's own Meta(ge=0), which Litestar's schema of the nullable field leaves out
        "expected_version": {"minimum": 0},
    },
    # northstar_core.notes: tags are non-empty; surface_id is needed (here or as X-Surface-Id)
    "NoteIn": {"tags": {"items": TAG}},
    "NoteUpdate": {"tags": {"items": TAG}, "expected_version": WRITE_VERSION},
    "BlackboardWrite": {"expected_version": WRITE_VERSION},
    "TabularWrite": {"expected_version": WRITE_VERSION},
    **{name: {"expected_version": DOCUMENT_VERSION} for name in POLICY_WRITES},
    # (these two override the line above's entries for them, and so repeat its version rule)
    "KillSwitchesWrite": {
        "expected_version": DOCUMENT_VERSION,
        "providers": {"items": ID},
        "actions": {"items": ID},
    },
    # "'required_approvals' must be between 1 and 10"
    "StrategyLockPolicyWrite": {
        "expected_version": DOCUMENT_VERSION,
        "required_approvals": {"minimum": 1, "maximum": 10},
    },
}

# component schema → the core Struct whose own (msgspec) property schemas replace Litestar's:
# Litestar drops the constraints (msgspec.Meta) of a nullable or container field's type
MSGSPEC_PROPERTIES: Final[dict[str, type[msgspec.Struct]]] = {
    "RouteOptions": RouteOptions,  # northstar_core.routing: bounds of each option
}

# component schema → keywords for the object as a whole (rules that tie fields together)
OBJECT_RULES: Final[dict[str, dict[str, Any]]] = {
    # northstar_core.analytics.validate: page_view needs page, click target, custom name
    "AnalyticsEventIn": {
        "allOf": [
            {
                "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                "then": {"required": [field], "properties": {field: {"type": "string"}}},
            }
            for kind, field in (("page_view", "page"), ("click", "target"), ("custom", "name"))
        ]
    },
    # northstar_core.canvas.records._validate: "give exactly one of uri or body"
    "RecordIn": {
        "oneOf": [
            {"required": ["uri"], "properties": {"uri": {"type": "string"}, "body": {"type": "null"}}},
            {"required": ["body"], "properties": {"body": {"type": "string"}, "uri": {"type": "null"}}},
        ]
    },
    # northstar_core.canvas.service: "a command needs an idempotency_key (or correlation_id)"
    "CommandIn": {
        "anyOf": [
            {"required": [field], "properties": {field: {"type": "string"}}}
            for field in ("idempotency_key", "correlation_id")
        ]
    },
    # northstar_core.chat.post: content must not be null or empty
    "PostMessageIn": {"properties": {"content": {"not": {"enum": [None, ""]}}}},
    # northstar_core.notes: a note needs a surface_id; it may instead come from the X-Surface-Id
    # header, which this document leaves out: a body that names it is always enough
    "NoteIn": {"required": ["surface_id"], "properties": {"surface_id": {"type": "string"}}},
    # northstar_core.spine.append: "'run_id' / 'step_id' is required (body or X-Run-Id /
    # X-Step-Id)"; as for notes, the header alternative is left out: a body naming it is enough
    "EventIn": {
        "required": ["run_id", "step_id"],
        "properties": {"run_id": {"type": "string"}, "step_id": {"type": "string"}},
    },
    # northstar_core.notes.update: "an update needs expected_version (body field or If-Match)"
    "NoteUpdate": {"required": ["expected_version"], "properties": {"expected_version": {"type": "integer"}}},
    # northstar_core.safety.locks: "a lock names a surface, an action or both"
    "LockIn": {
        **ONE_EXPIRY,
        "anyOf": [
            {"required": [field], "properties": {field: {"type": "string"}}}
            for field in ("surface_id", "action_name")
        ]
    },
    "LicenceIn": ONE_EXPIRY,
    "LockPatch": ONE_EXPIRY,
    # northstar_core.safety.documents: "a rule names an action, a surface or both"
    "LockRule": {
        "anyOf": [
            {"required": [field], "properties": {field: {"type": "string"}}}
            for field in ("action_name", "surface_id")
        ]
    },
    # "a corridor needs 'min', 'max' or both"
    "Corridor": {
        "anyOf": [
            {"required": [field], "properties": {field: {"type": "number"}}} for field in ("min", "max")
        ]
    },
    # a policy document's PUT names the version it replaces (0 when creating) here or as
    # If-Match (northstar_core.safety.documents); the body field is documented as the way
    **{
        name: {"required": ["expected_version"], "properties": {"expected_version": {"type": "integer"}}}
        for name in POLICY_WRITES
    },
}

# (path, parameter) → fragment ("*" for every path); header names as sent
PARAMETER_RULES: Final[dict[tuple[str, str], dict[str, Any]]] = {
    ("*", "If-Match"): IF_MATCH,
    ("/events/list", "event_type"): SPINE_TYPE,
    ("/events/list", "source"): SOURCE,
    ("/events/list", "since"): TIMESTAMP,
    ("/events/list", "until"): TIMESTAMP,
    ("/events/replay", "run_id"): ID,
    ("/budget/usage", "period"): PERIOD,
    ("/firearms/licences", "subject_type"): ID,
    ("/firearms/licences", "subject_id"): ID,
    ("/firearms/licences/check/{subject_type}/{subject_id}", "action_name"): ID,
    ("/memory", "session_id"): ID,
    ("/memory", "key"): ID,
    ("/notes", "surface_id"): ID,
    ("/notes", "project_id"): ID,
    ("/notes", "tag"): NON_EMPTY,
    ("/config/{config_scope}", "surface_id"): ID,
    ("/blackboard/{run_id}/entries/{key}", "expected_version"): DELETE_VERSION,
    ("/notes/{note_id}", "expected_version"): DELETE_VERSION,
    ("/tabular/{table}/{record_id}", "expected_version"): DELETE_VERSION,
    ("/tabular/{table}/{record_id}", "version"): {"minimum": 1},
}

# query parameters the core requires although the handler's signature does not
REQUIRED_PARAMETERS: Final[dict[str, set[str]]] = {
    "/events/replay": {"run_id"},  # northstar_core.spine.replay: "'run_id' is required"
}


def _merge(schema: dict[str, Any], fragment: dict[str, Any]) -> None:
    for key, value in fragment.items():
        if isinstance(value, dict) and isinstance(schema.get(key), dict):
            _merge(schema[key], value)
        else:
            schema[key] = value


def _constrain_requests(doc: dict[str, Any]) -> None:
    schemas: dict[str, Any] = doc.get("components", {}).get("schemas", {})
    for name, struct in MSGSPEC_PROPERTIES.items():
        _, own = msgspec.json.schema_components([struct], ref_template=SCHEMA_REF)
        schemas[name]["properties"] = own[struct.__name__]["properties"]
    for name, fields in BODY_RULES.items():
        props = schemas.get(name, {}).get("properties")
        if props is None:
            raise ValueError(f"BODY_RULES names {name}, which the document does not have")
        for field, fragment in fields.items():
            if field not in props:
                raise ValueError(f"BODY_RULES names {name}.{field}, which {name} does not have")
            _merge(props[field], fragment)
    for name, keywords in OBJECT_RULES.items():
        schema = schemas[name]
        for key, value in keywords.items():
            if key == "required":
                schema["required"] = sorted({*schema.get("required", []), *value})
            elif key == "properties":
                for field, fragment in value.items():
                    props = schema["properties"][field]
                    schema["properties"][field] = {"allOf": [props, fragment]} if props else fragment
            else:
                schema[key] = value
    for path, _method, op in _operations(doc):
        for param in op.get("parameters", []):
            name = param.get("name")
            fragment = PARAMETER_RULES.get((path, name)) or PARAMETER_RULES.get(("*", name))
            if fragment is not None:
                fragment = dict(fragment)
                if "description" in fragment:
                    param["description"] = fragment.pop("description")
                _merge(param.setdefault("schema", {}), fragment)
            # a header is absent or a string: never null
            if param.get("in") == "header" or name in REQUIRED_PARAMETERS.get(path, ()):
                if param.get("in") != "header":
                    param["required"] = True
                schema = param.get("schema", {})
                for key in ("oneOf", "anyOf"):
                    branches = [b for b in schema.get(key, []) if b.get("type") != "null"]
                    if key in schema and len(branches) == 1:
                        del schema[key]
                        schema.update(branches[0])


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    """The generated document with what every operation shares (see module doc)."""
    _add_components(doc)
    for path, _method, op in _operations(doc):
        _complete_operation(path, op)
    _close_objects(doc)
    _constrain_requests(doc)
    return _rename_pages(doc)


# --- parameters ----------------------------------------------------------------------------------

IdPath = Annotated[
    str,
    PathParameter(
        description="an id: 1 to 200 of A-Z a-z 0-9 _ . : -",
        schema_extra={"pattern": ID_PATTERN.pattern},
    ),
]


def page_limit(maximum: int, *, description: str | None = None) -> Any:
    """A ``limit`` query parameter the core bounds to ``1..maximum`` (documented here only: the
    core refuses other values with its own code)."""
    return QueryParameter(
        description=description or f"page size, 1 to {maximum}",
        schema_extra={"minimum": 1, "maximum": maximum},
    )
