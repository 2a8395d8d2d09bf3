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
* live streams are documented as ``text/event-stream`` (:func:`sse_stream`).

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

from northstar_core.identity import ID_PATTERN
from northstar_http.auth import PUBLIC_PATHS
from northstar_http.docs import docs_render_plugins
from northstar_http.errors import ErrorEnvelope
from northstar_http.tickets import STREAM_PATHS

OPENAPI_PATH: Final = "/schema"
SCHEMA_REF: Final = "#/components/schemas/{name}"
ENVELOPE_REF: Final = SCHEMA_REF.format(name="ErrorEnvelope")
WRITE_METHODS: Final = frozenset({"post", "put", "patch", "delete"})
SSE_MEDIA_TYPE: Final = "text/event-stream"

# What each documented error status means here (the codes are in contracts/error_codes.json).
ERROR_DESCRIPTIONS: Final[dict[int, str]] = {
    400: "Bad request: malformed JSON (`request.malformed_json`), an invalid identity header "
    "(`auth.invalid_identity`) or an unreadable request (`request.invalid`)",
    401: "No valid bearer token (`auth.missing_token`, `auth.invalid_token`)",
    403: "Not allowed: role, identity mismatch, a safety gate (`gate.*`) or a domain rule",
    404: "No such resource (`<domain>.not_found` and kin)",
    408: "The request body did not arrive in time (`request.timeout`)",
    409: "Conflict: a stale version or revision, or a state that does not allow this",
    410: "The cursor is invalid, tampered, foreign or ahead of the head (`<domain>.cursor_invalid`)",
    413: "The body or a value in it exceeds a size limit (`request.body_too_large`, "
    "`<domain>.*_too_large`)",
    422: "The request is well-formed JSON but invalid (`request.validation_failed`, "
    "`<domain>.invalid_*`, idempotency mismatches)",
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
        statuses |= {400, 401, 403, 503}
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


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    """The generated document with what every operation shares (see module doc)."""
    _add_components(doc)
    for path, _method, op in _operations(doc):
        _complete_operation(path, op)
    _close_objects(doc)
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
