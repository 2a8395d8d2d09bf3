"""Who is calling: the request context and the identity precedence rule.

Identity is server-derived (SPEC §2.6, §3): a server binding beats verified JWT claims, which
beat headers and query parameters. A header that contradicts a stronger source is not
"overridden": the request is refused and the caller records an audit event.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any, Final, Literal, TypedDict, Unpack, get_args

import msgspec
from msgspec import UNSET, UnsetType

from northstar_core.errors import NorthstarError

Mode = Literal["saas", "enterprise", "system", "lab"]
MODES: Final[tuple[str, ...]] = get_args(Mode)
Role = Literal["owner", "admin", "member", "viewer"]
ROLE_RANK: Final[dict[str, int]] = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}
# Validate with ``fullmatch``: ``match`` lets ``$`` stop before a trailing newline, so "t_a\n"
# would pass as a tenant distinct from "t_a".
TENANT_PATTERN: Final = re.compile(r"^t_[A-Za-z0-9_\-]{1,120}$")
ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
# Token subjects come from identity providers and are wider than ids ("auth0|123", e-mail
# addresses): any visible ASCII. Whatever a subject holds, it reaches a partition name only
# through ``scope.subject_segment``.
SUBJECT_PATTERN: Final = re.compile(r"[!-~]{1,255}")
# Role names the service ranks are in ROLE_RANK; other names an identity provider adds are kept
# (they rank below every known role) but must still be plain names.
ROLE_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:/\-]{1,100}")
MAX_ROLES: Final = 64


class Claims(msgspec.Struct, frozen=True, kw_only=True):
    """The identity-bearing claims of a verified token."""

    sub: str
    tenant_id: str
    mode: str
    roles: tuple[str, ...] = ()
    system: bool = False
    agent_id: str | None = None
    project_id: str | None = None


class TokenPayload(msgspec.Struct, frozen=True, kw_only=True):
    """A verified token's payload as the service reads it, decoded strictly.

    No coercion: ``"system": "false"`` is refused rather than read as a truthy string, and
    ``"roles": {"admin": false}`` is refused rather than read as its keys. The registered
    claims (RFC 7519 §4.1) are typed so that a wrongly typed one is refused too; claims the
    service does not read (``email``, ``scope``, ``azp``…) are ignored, since identity
    providers add their own.
    """

    sub: str
    tenant_id: str
    mode: Mode
    roles: tuple[str, ...] = ()
    system: bool = False
    agent_id: str | UnsetType = UNSET
    project_id: str | UnsetType = UNSET
    exp: int | float
    nbf: int | float | UnsetType = UNSET
    iat: int | float | UnsetType = UNSET
    iss: str | UnsetType = UNSET
    aud: str | list[str] | UnsetType = UNSET
    jti: str | UnsetType = UNSET


def invalid_token(reason: str, message: str, *, claim: str | None = None) -> NorthstarError:
    """401 ``auth.invalid_token``; ``details.claim`` names the offending claim, if one."""
    details: dict[str, Any] = {"reason": reason}
    if claim is not None:
        details["claim"] = claim
    return NorthstarError("auth.invalid_token", message, 401, details=details)


_MISSING_FIELD: Final = re.compile(r"missing required field `([^`]*)`")
_AT_PATH: Final = re.compile(r" - at `\$\.([A-Za-z0-9_]+)")


def _claim_error(exc: msgspec.ValidationError) -> NorthstarError:
    text = str(exc)
    missing = _MISSING_FIELD.search(text)
    if missing:
        claim = missing.group(1)
        return invalid_token("missing_claim", f"the bearer token lacks the '{claim}' claim", claim=claim)
    at = _AT_PATH.search(text)
    claim = at.group(1) if at else "payload"
    problem = text.split(" - at ", 1)[0][:120]
    return invalid_token(
        "invalid_claim", f"the bearer token's '{claim}' claim is not valid: {problem}", claim=claim
    )


def _bad_claim(claim: str, rule: str) -> NorthstarError:
    return invalid_token("invalid_claim", f"the bearer token's '{claim}' claim {rule}", claim=claim)


def claims_from_payload(payload: Any) -> Claims:
    """The :class:`Claims` of a verified token's payload, or 401 ``auth.invalid_token``
    (``details.reason`` ``missing_claim`` / ``invalid_claim``, ``details.claim`` the claim)."""
    try:
        token = msgspec.convert(payload, TokenPayload, strict=True)
    except msgspec.ValidationError as exc:
        raise _claim_error(exc) from None
    if not SUBJECT_PATTERN.fullmatch(token.sub):
        raise _bad_claim("sub", "must be 1 to 255 visible ASCII characters")
    if not TENANT_PATTERN.fullmatch(token.tenant_id):
        raise _bad_claim("tenant_id", f"must match {TENANT_PATTERN.pattern}")
    for name in ("agent_id", "project_id"):
        value = getattr(token, name)
        if value is not UNSET and not ID_PATTERN.fullmatch(value):
            raise _bad_claim(name, f"must match {ID_PATTERN.pattern}")
    if len(token.roles) > MAX_ROLES:
        raise _bad_claim("roles", f"holds more than {MAX_ROLES} roles")
    if not all(ROLE_PATTERN.fullmatch(role) for role in token.roles):
        raise _bad_claim("roles", f"must be a list of names matching {ROLE_PATTERN.pattern}")
    return Claims(
        sub=token.sub,
        tenant_id=token.tenant_id,
        mode=token.mode,
        roles=token.roles,
        system=token.system,
        agent_id=None if token.agent_id is UNSET else token.agent_id,
        project_id=None if token.project_id is UNSET else token.project_id,
    )


class ServerBinding(msgspec.Struct, frozen=True, kw_only=True):
    """Identity fixed by the deployment itself (e.g. a single-tenant enterprise install)."""

    tenant_id: str | None = None
    mode: str | None = None


class ScopeFields(TypedDict, total=False):
    """The optional scope of a :class:`RequestContext` built with its named constructors."""

    agent_id: str | None
    project_id: str | None
    surface_id: str | None
    app_id: str | None
    run_id: str | None
    step_id: str | None
    trace_id: str | None
    request_id: str


class RequestContext(msgspec.Struct, frozen=True, kw_only=True):
    """The identity scope of one request; every store call is made within one.

    The server builds it from a verified token. Code embedding the library builds it with a
    named constructor, which makes the caller's roles explicit (the plain constructor defaults
    to no roles, and every write then answers 403 ``auth.forbidden_role``) and validates the
    identity as the server would::

        ctx = RequestContext.member("t_acme", "u_bob", mode="lab")
        ctx = RequestContext.for_user("t_acme", "u_bob", mode="saas", roles=("member", "admin"))

    ``mode`` is required: it is part of every partition name, so it must be the deployment's.
    """

    tenant_id: str
    mode: str
    user_id: str
    roles: tuple[str, ...] = ()
    is_system: bool = False
    agent_id: str | None = None
    project_id: str | None = None
    surface_id: str | None = None
    app_id: str | None = None
    run_id: str | None = None
    step_id: str | None = None
    trace_id: str | None = None
    request_id: str = ""

    @classmethod
    def for_user(
        cls,
        tenant_id: str,
        user_id: str,
        *,
        mode: Mode,
        roles: Sequence[str],
        **scope: Unpack[ScopeFields],
    ) -> RequestContext:
        """A context for ``user_id`` of ``tenant_id`` holding exactly ``roles``; 400
        ``auth.invalid_identity`` for a value a verified token could not carry either."""
        if isinstance(roles, str):
            roles = (roles,)
        if not TENANT_PATTERN.fullmatch(tenant_id):
            raise _bad("tenant_id", tenant_id)
        if mode not in MODES:
            raise _bad("mode", str(mode))
        if not SUBJECT_PATTERN.fullmatch(user_id):
            raise _bad("user_id", user_id)
        if len(roles) > MAX_ROLES or not all(ROLE_PATTERN.fullmatch(role) for role in roles):
            raise _bad("roles", ",".join(roles))
        for field in ("agent_id", "project_id", "surface_id", "app_id", "run_id", "step_id", "trace_id"):
            value = scope.get(field)
            if value is not None and not ID_PATTERN.fullmatch(str(value)):
                raise _bad(field, str(value))
        return cls(
            tenant_id=tenant_id,
            mode=mode,
            user_id=user_id,
            roles=tuple(roles),
            agent_id=scope.get("agent_id"),
            project_id=scope.get("project_id"),
            surface_id=scope.get("surface_id"),
            app_id=scope.get("app_id"),
            run_id=scope.get("run_id"),
            step_id=scope.get("step_id"),
            trace_id=scope.get("trace_id"),
            request_id=scope.get("request_id") or str(uuid.uuid4()),
        )

    @classmethod
    def viewer(
        cls, tenant_id: str, user_id: str, *, mode: Mode, **scope: Unpack[ScopeFields]
    ) -> RequestContext:
        """A context that may read the tenant's data."""
        return cls.for_user(tenant_id, user_id, mode=mode, roles=("viewer",), **scope)

    @classmethod
    def member(
        cls, tenant_id: str, user_id: str, *, mode: Mode, **scope: Unpack[ScopeFields]
    ) -> RequestContext:
        """A context that may read and write the tenant's data (what an agent usually is)."""
        return cls.for_user(tenant_id, user_id, mode=mode, roles=("member",), **scope)

    @classmethod
    def admin(
        cls, tenant_id: str, user_id: str, *, mode: Mode, **scope: Unpack[ScopeFields]
    ) -> RequestContext:
        """A tenant admin: a member that also governs the tenant's policies and config."""
        return cls.for_user(tenant_id, user_id, mode=mode, roles=("admin",), **scope)

    @classmethod
    def owner(
        cls, tenant_id: str, user_id: str, *, mode: Mode, **scope: Unpack[ScopeFields]
    ) -> RequestContext:
        """The tenant's owner (every tenant role)."""
        return cls.for_user(tenant_id, user_id, mode=mode, roles=("owner",), **scope)

    @property
    def is_agent(self) -> bool:
        return self.agent_id is not None

    @property
    def role_rank(self) -> int:
        return max((ROLE_RANK.get(r, -1) for r in self.roles), default=-1)

    def require_role(self, minimum: Role) -> None:
        """Raise 403 ``auth.forbidden_role`` unless the caller holds ``minimum`` or above."""
        if self.role_rank < ROLE_RANK[minimum]:
            raise NorthstarError(
                "auth.forbidden_role",
                f"this operation needs the '{minimum}' role or above",
                403,
                details={"required_role": minimum, "roles": list(self.roles)},
            )

    def require_system(self) -> None:
        if not self.is_system:
            raise NorthstarError(
                "auth.system_required", "this operation needs the system flag", 403
            )

    def scope(self) -> dict[str, Any]:
        """The identity fields stored on every record."""
        return {
            "tenant_id": self.tenant_id,
            "mode": self.mode,
            "user_id": self.user_id,
            "project_id": self.project_id,
            "surface_id": self.surface_id,
            "run_id": self.run_id,
        }


class IdentityMismatch(NorthstarError):
    """A header or query value contradicted the token or server binding (audit-worthy)."""

    def __init__(
        self,
        field: str,
        claimed: str,
        presented: str,
        *,
        message: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            "auth.identity_mismatch",
            message or f"the '{field}' presented does not match the authenticated identity",
            403,
            details=details or {"field": field, "authenticated": claimed, "presented": presented},
        )
        self.field = field

    @classmethod
    def conflicting(cls, field: str, first: str, other: str) -> IdentityMismatch:
        """One identity field presented twice with different values. Which copy a proxy, a
        framework or a log honours differs, so neither is trusted."""
        return cls(
            field,
            "",
            other,
            message=f"the '{field}' was presented more than once with different values",
            details={"field": field, "reason": "conflicting_values", "presented": [first, other]},
        )


# header name -> context field, for the fields headers may supply
HEADER_FIELDS: Final[dict[str, str]] = {
    "x-tenant-id": "tenant_id",
    "x-mode": "mode",
    "x-user-id": "user_id",
    "x-project-id": "project_id",
    "x-surface-id": "surface_id",
    "x-app-id": "app_id",
    "x-run-id": "run_id",
    "x-step-id": "step_id",
    "x-trace-id": "trace_id",
}


def _bad(field: str, value: str) -> NorthstarError:
    return NorthstarError(
        "auth.invalid_identity",
        f"'{field}' has an invalid value",
        400,
        details={"field": field, "value": value[:200]},
    )


def resolve_context(
    claims: Claims,
    presented: dict[str, str],
    *,
    binding: ServerBinding | None = None,
    request_id: str | None = None,
) -> RequestContext:
    """Apply the precedence rule: binding > claims > presented headers/query.

    ``presented`` maps context field names (``tenant_id``, ``mode``, ``project_id``…) to what
    the caller sent. A presented value that contradicts a stronger source raises
    :class:`IdentityMismatch`; otherwise weaker sources only fill fields stronger ones leave open.
    """
    binding = binding or ServerBinding()
    strong: dict[str, str | None] = {
        "tenant_id": claims.tenant_id,
        "mode": claims.mode,
        "user_id": claims.sub,
        "project_id": claims.project_id,
    }
    for field, bound in (("tenant_id", binding.tenant_id), ("mode", binding.mode)):
        if bound is not None:
            if strong[field] is not None and strong[field] != bound:
                raise IdentityMismatch(field, bound, str(strong[field]))
            strong[field] = bound
    for field, shown in presented.items():
        if shown == "":
            continue
        authoritative = strong.get(field)
        if authoritative is not None and shown != authoritative:
            raise IdentityMismatch(field, authoritative, shown)
    tenant_id = str(strong["tenant_id"])
    mode = str(strong["mode"])
    if not TENANT_PATTERN.fullmatch(tenant_id):
        raise _bad("tenant_id", tenant_id)
    if mode not in MODES:
        raise _bad("mode", mode)
    optional: dict[str, str | None] = {}
    for field in ("project_id", "surface_id", "app_id", "run_id", "step_id", "trace_id"):
        value: str | None = strong.get(field) or presented.get(field) or None
        if value is not None and not ID_PATTERN.fullmatch(value):
            raise _bad(field, value)
        optional[field] = value
    return RequestContext(
        tenant_id=tenant_id,
        mode=mode,
        user_id=claims.sub,
        roles=tuple(claims.roles),
        is_system=claims.system,
        agent_id=claims.agent_id,
        request_id=request_id or str(uuid.uuid4()),
        **optional,
    )
