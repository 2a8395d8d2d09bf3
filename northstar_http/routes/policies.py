"""Safety policy endpoints: kill switches, firearms, strategy locks, budget, corridors.

Policy documents are versioned: a ``PUT`` names the version it replaces (``expected_version``
in the body, or ``If-Match``; 0 = the document does not exist yet) and a stale one is 409 with
the current version. Reads answer the version in the body and as an ``ETag``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from litestar import Response, get, patch, post, put
from litestar.params import Body, JSONBody, QueryParameter

from northstar_core.errors import NorthstarError
from northstar_core.kernel.paging import Page
from northstar_core.safety.budget import UsageEntry, UsageIn, UsagePage
from northstar_core.safety.documents import DOC_TYPES, PolicyDocument
from northstar_core.safety.licences import Licence, LicenceIn, LicenceView
from northstar_core.safety.locks import LockIn, LockPatch, LockView, StrategyLock, lock_view
from northstar_core.safety.policies import PolicyStores
from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import IdPath, body_schema, error_responses, success
from northstar_http.versions import IfMatch, expected_version, with_etag

Cursor = Annotated[str | None, QueryParameter(description="opaque position; reads are exclusive")]
Limit = Annotated[int, QueryParameter(ge=1, le=500)]
Text = Annotated[str | None, QueryParameter()]
OptionalBody = Annotated[dict[str, Any] | None, Body()]


def _doc(doc: PolicyDocument, status: int = 200) -> Response[PolicyDocument]:
    return with_etag(doc, doc.version, status)


def _expected(domain: str, body: dict[str, Any], if_match: str | None) -> dict[str, Any]:
    """Merge ``If-Match`` into the body's ``expected_version`` (422 if malformed or different)."""
    if if_match is None:
        return body
    return {**body, "expected_version": expected_version(domain, body.get("expected_version"), if_match)}


_WRITES: dict[type[msgspec.Struct], type[msgspec.Struct]] = {}


def _write_body(document: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """The documented body of a policy document's ``PUT``: the document and the version it
    replaces (0 when creating; required here or as ``If-Match``). The core validates it."""
    if document not in _WRITES:
        _WRITES[document] = msgspec.defstruct(
            f"{document.__name__}Write",
            [("expected_version", int | None, None)],
            bases=(document,),
            kw_only=True,
            forbid_unknown_fields=True,
            module=__name__,
        )
    return _WRITES[document]


def _document_routes(path: str, name: str, domain: str, tag: str) -> list[Any]:
    async def read(ctx: Ctx, engines: Eng) -> Response[PolicyDocument]:
        return _doc(await engines.policies.get_document(ctx, name))

    async def write(
        ctx: Ctx, engines: Eng, data: JSONBody[dict[str, Any]], if_match: IfMatch = None
    ) -> Response[PolicyDocument]:
        body = _expected(domain, data, if_match)
        doc = await engines.policies.put_document(ctx, name, body, expected_version=None)
        return _doc(doc, 201 if doc.version == 1 else 200)

    read.__name__ = read.__qualname__ = f"get_{name}"
    write.__name__ = write.__qualname__ = f"put_{name}"
    title = name.replace("_", " ")
    return [
        get(path, tags=[tag], summary=f"Read the {title} (versioned)")(read),
        put(
            path,
            tags=[tag],
            summary=f"Replace the {title} at the expected version",
            status_code=201,
            response_description="Created (version 1)",
            operation_class=body_schema(_write_body(DOC_TYPES[name][1])),
            responses={
                **success(200, PolicyDocument, "Replaced the expected version"),
                **error_responses(409),
            },
        )(write),
    ]


DOCUMENT_ROUTES: Final[list[Any]] = [
    *_document_routes("/kill-switches", "kill_switches", "kill_switch", "kill switches"),
    *_document_routes("/firearms/policy", "firearms_policy", "firearms", "firearms"),
    *_document_routes("/firearms/grants", "firearms_grants", "firearms", "firearms"),
    *_document_routes("/strategy-lock/policy", "strategy_lock_policy", "strategy_lock", "strategy lock"),
    *_document_routes("/budget/policy", "budget_policy", "budget", "budget"),
    *_document_routes("/kpi/corridors", "kpi_corridors", "kpi", "corridors"),
    *_document_routes("/temperature/corridors", "temperature_corridors", "temperature", "corridors"),
]


# --- firearms licences ---------------------------------------------------------------------------


def _licence_view(stores: PolicyStores, licence: Licence) -> LicenceView:
    return LicenceView(**msgspec.structs.asdict(licence), state=stores.licence_state(licence))


class RevokeIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: str | None = None
    expected_version: int | None = None


class ReviewIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    note: str | None = None
    expected_version: int | None = None


class ActionLicensing(msgspec.Struct, kw_only=True):
    licence_type: str | None
    allowed: bool
    reason: str


class SubjectLicensing(msgspec.Struct, kw_only=True):
    """Which dangerous actions a subject is licensed for (built by the core as a mapping)."""

    subject_type: str
    subject_id: str
    policy_version: int
    licences: list[LicenceView]
    actions: dict[str, ActionLicensing]


class UsageOut(UsageEntry, kw_only=True):
    """A recorded usage entry, and whether it is the replay of the first with this key."""

    replayed: bool


@post(
    "/firearms/licences",
    tags=["firearms"],
    summary="Issue a licence (admin; needs a grant)",
    operation_class=body_schema(LicenceIn),
)
async def issue_licence(ctx: Ctx, engines: Eng, data: JSONBody[dict[str, Any]]) -> LicenceView:
    licence = await engines.policies.issue_licence(ctx, data)
    return _licence_view(engines.policies, licence)


@get(
    "/firearms/licences",
    tags=["firearms"],
    summary="List licences (optionally of one subject)",
    responses=error_responses(410),
)
async def list_licences(
    ctx: Ctx,
    engines: Eng,
    subject_type: Text = None,
    subject_id: Text = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[LicenceView]:
    return await engines.policies.list_licences(
        ctx, subject_type=subject_type, subject_id=subject_id, cursor=cursor, limit=limit
    )


@post(
    "/firearms/licences/{licence_id:str}/revoke",
    tags=["firearms"],
    summary="Revoke a licence",
    status_code=200,
    operation_class=body_schema(RevokeIn, required=False),
    responses=error_responses(404, 409),
)
async def revoke_licence(
    ctx: Ctx, engines: Eng, licence_id: IdPath, data: OptionalBody = None
) -> LicenceView:
    body = _convert("firearms", data or {}, RevokeIn)
    licence = await engines.policies.revoke_licence(
        ctx, licence_id, reason=body.reason, expected_version=body.expected_version
    )
    return _licence_view(engines.policies, licence)


@get(
    "/firearms/licences/check/{subject_type:str}/{subject_id:str}",
    tags=["firearms"],
    summary="Which dangerous actions a subject is licensed for",
    responses=success(200, SubjectLicensing, "The subject's licences and, per action, the verdict"),
)
async def check_licence(
    ctx: Ctx, engines: Eng, subject_type: IdPath, subject_id: IdPath, action_name: Text = None
) -> dict[str, Any]:
    return await engines.policies.check_subject(ctx, subject_type, subject_id, action_name=action_name)


# --- strategy locks ------------------------------------------------------------------------------


def _lock(engines: Any, lock: StrategyLock) -> LockView:
    return lock_view(engines.policies, lock)


@post(
    "/strategy-locks",
    tags=["strategy lock"],
    summary="Request a strategy lock (pending review)",
    operation_class=body_schema(LockIn),
)
async def create_lock(ctx: Ctx, engines: Eng, data: JSONBody[dict[str, Any]]) -> LockView:
    return _lock(engines, await engines.policies.create_lock(ctx, data))


@get("/strategy-locks", tags=["strategy lock"], summary="List strategy locks", responses=error_responses(410))
async def list_locks(ctx: Ctx, engines: Eng, cursor: Cursor = None, limit: Limit = 100) -> Page[LockView]:
    return await engines.policies.list_locks(ctx, cursor=cursor, limit=limit)


@get(
    "/strategy-locks/{lock_id:str}",
    tags=["strategy lock"],
    summary="Read one strategy lock",
    responses=error_responses(404),
)
async def get_lock(ctx: Ctx, engines: Eng, lock_id: IdPath) -> LockView:
    return _lock(engines, await engines.policies.get_lock(ctx, lock_id))


@patch(
    "/strategy-locks/{lock_id:str}",
    tags=["strategy lock"],
    summary="Change a lock (restarts review)",
    operation_class=body_schema(LockPatch),
    responses=error_responses(404, 409),
)
async def patch_lock(
    ctx: Ctx, engines: Eng, lock_id: IdPath, data: JSONBody[dict[str, Any]], if_match: IfMatch = None
) -> LockView:
    body = _expected("strategy_lock", data, if_match)
    return _lock(engines, await engines.policies.patch_lock(ctx, lock_id, body))


def _convert(domain: str, data: dict[str, Any], type_: type[Any]) -> Any:
    try:
        return msgspec.convert(data, type=type_)
    except msgspec.ValidationError as exc:
        raise NorthstarError(
            f"{domain}.invalid_request", f"invalid body: {exc}", 422, details={"reason": str(exc)}
        ) from None


@post(
    "/strategy-locks/{lock_id:str}/approve",
    tags=["strategy lock"],
    summary="Approve (one of three)",
    status_code=200,
    operation_class=body_schema(ReviewIn, required=False),
    responses=error_responses(404, 409),
)
async def approve_lock(ctx: Ctx, engines: Eng, lock_id: IdPath, data: OptionalBody = None) -> LockView:
    body = _convert("strategy_lock", data or {}, ReviewIn)
    lock = await engines.policies.review_lock(
        ctx, lock_id, "approve", note=body.note, expected_version=body.expected_version
    )
    return _lock(engines, lock)


@post(
    "/strategy-locks/{lock_id:str}/reject",
    tags=["strategy lock"],
    summary="Reject",
    status_code=200,
    operation_class=body_schema(ReviewIn, required=False),
    responses=error_responses(404, 409),
)
async def reject_lock(ctx: Ctx, engines: Eng, lock_id: IdPath, data: OptionalBody = None) -> LockView:
    body = _convert("strategy_lock", data or {}, ReviewIn)
    lock = await engines.policies.review_lock(
        ctx, lock_id, "reject", note=body.note, expected_version=body.expected_version
    )
    return _lock(engines, lock)


# --- budget ledger -------------------------------------------------------------------------------


@post(
    "/budget/usage",
    tags=["budget"],
    summary="Record usage on the append-only ledger",
    operation_class=body_schema(UsageIn),
    responses=success(200, UsageOut, "The first entry with this idempotency key (replayed: true)"),
)
async def record_usage(ctx: Ctx, engines: Eng, data: JSONBody[dict[str, Any]]) -> Response[UsageOut]:
    entry, replayed = await engines.budget.record(ctx, data)
    body = UsageOut(**msgspec.structs.asdict(entry), replayed=replayed)
    return Response(body, status_code=200 if replayed else 201)


@get(
    "/budget/usage",
    tags=["budget"],
    summary="A period's usage entries and totals",
    responses=error_responses(410),
)
async def get_usage(
    ctx: Ctx, engines: Eng, period: Text = None, cursor: Cursor = None, limit: Limit = 100
) -> UsagePage:
    return await engines.budget.usage(ctx, period, cursor=cursor, limit=limit)


ROUTES: Final[list[Any]] = [
    *DOCUMENT_ROUTES,
    issue_licence,
    list_licences,
    revoke_licence,
    check_licence,
    create_lock,
    list_locks,
    get_lock,
    patch_lock,
    approve_lock,
    reject_lock,
    record_usage,
    get_usage,
]
