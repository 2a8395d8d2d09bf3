"""Identity precedence: server binding > verified claims > headers; contradictions are refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from northstar_core.errors import NorthstarError
from northstar_core.identity import Claims, IdentityMismatch, RequestContext, ServerBinding, resolve_context

CLAIMS = Claims(sub="u_1", tenant_id="t_alpha", mode="saas", roles=("member",), project_id="p1")


def test_claims_supply_tenant_mode_user_and_roles() -> None:
    ctx = resolve_context(CLAIMS, {})
    assert (ctx.tenant_id, ctx.mode, ctx.user_id, ctx.roles, ctx.project_id) == (
        "t_alpha",
        "saas",
        "u_1",
        ("member",),
        "p1",
    )


def test_headers_that_agree_with_the_claims_are_accepted() -> None:
    ctx = resolve_context(CLAIMS, {"tenant_id": "t_alpha", "mode": "saas", "user_id": "u_1"})
    assert ctx.tenant_id == "t_alpha"


def test_a_header_tenant_contradicting_the_claims_is_a_mismatch() -> None:
    with pytest.raises(IdentityMismatch) as info:
        resolve_context(CLAIMS, {"tenant_id": "t_beta"})
    err = info.value
    assert (err.code, err.http_status, err.field) == ("auth.identity_mismatch", 403, "tenant_id")
    assert err.details == {"field": "tenant_id", "authenticated": "t_alpha", "presented": "t_beta"}


@pytest.mark.parametrize(("field", "value"), [("mode", "lab"), ("user_id", "u_2"), ("project_id", "p2")])
def test_any_header_contradicting_the_claims_is_a_mismatch(field: str, value: str) -> None:
    with pytest.raises(IdentityMismatch):
        resolve_context(CLAIMS, {field: value})


def test_the_server_binding_fills_and_beats_everything() -> None:
    binding = ServerBinding(tenant_id="t_alpha", mode="enterprise")
    claims = Claims(sub="u_1", tenant_id="t_alpha", mode="enterprise")
    assert resolve_context(claims, {}, binding=binding).mode == "enterprise"
    with pytest.raises(IdentityMismatch):
        resolve_context(claims, {"mode": "saas"}, binding=binding)


def test_claims_contradicting_the_server_binding_are_a_mismatch() -> None:
    with pytest.raises(IdentityMismatch) as info:
        resolve_context(CLAIMS, {}, binding=ServerBinding(tenant_id="t_bound"))
    assert info.value.details["authenticated"] == "t_bound"
    with pytest.raises(IdentityMismatch):
        resolve_context(CLAIMS, {}, binding=ServerBinding(mode="enterprise"))


def test_headers_fill_only_fields_the_token_leaves_open() -> None:
    ctx = resolve_context(
        CLAIMS, {"surface_id": "s1", "run_id": "r1", "step_id": "st1", "trace_id": "tr", "app_id": "a1"}
    )
    assert (ctx.surface_id, ctx.run_id, ctx.step_id, ctx.trace_id, ctx.app_id) == (
        "s1",
        "r1",
        "st1",
        "tr",
        "a1",
    )
    assert ctx.project_id == "p1"


def test_empty_header_values_are_ignored() -> None:
    ctx = resolve_context(CLAIMS, {"tenant_id": "", "surface_id": ""})
    assert ctx.tenant_id == "t_alpha" and ctx.surface_id is None


@pytest.mark.parametrize("tenant", ["alpha", "t_", "T_alpha", "t_al pha", "t_a/b", "t_" + "x" * 200])
def test_a_tenant_outside_the_pattern_is_refused(tenant: str) -> None:
    claims = Claims(sub="u_1", tenant_id=tenant, mode="saas")
    with pytest.raises(NorthstarError) as info:
        resolve_context(claims, {})
    assert (info.value.code, info.value.http_status) == ("auth.invalid_identity", 400)
    assert info.value.details["field"] == "tenant_id"


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(NorthstarError) as info:
        resolve_context(Claims(sub="u", tenant_id="t_a", mode="prod"), {})
    assert info.value.details["field"] == "mode"


def test_a_malformed_optional_id_is_refused() -> None:
    with pytest.raises(NorthstarError) as info:
        resolve_context(CLAIMS, {"run_id": "bad id with spaces"})
    assert info.value.details["field"] == "run_id"


def test_a_request_id_is_generated_when_absent_and_kept_when_given() -> None:
    assert resolve_context(CLAIMS, {}).request_id
    assert resolve_context(CLAIMS, {}, request_id="req-1").request_id == "req-1"


def test_roles_rank_and_system_flag() -> None:
    ctx = RequestContext(tenant_id="t_a", mode="saas", user_id="u", roles=("viewer",))
    with pytest.raises(NorthstarError) as info:
        ctx.require_role("member")
    assert (info.value.code, info.value.http_status) == ("auth.forbidden_role", 403)
    RequestContext(tenant_id="t_a", mode="saas", user_id="u", roles=("owner",)).require_role("admin")
    with pytest.raises(NorthstarError):
        ctx.require_system()
    RequestContext(tenant_id="t_a", mode="saas", user_id="u", is_system=True).require_system()


tenants = st.from_regex(r"t_[a-z0-9]{1,8}", fullmatch=True)


@given(token_tenant=tenants, header_tenant=tenants)
def test_the_resolved_tenant_is_always_the_tokens(token_tenant: str, header_tenant: str) -> None:
    claims = Claims(sub="u", tenant_id=token_tenant, mode="lab")
    try:
        ctx = resolve_context(claims, {"tenant_id": header_tenant})
    except IdentityMismatch:
        assert header_tenant != token_tenant
    else:
        assert ctx.tenant_id == token_tenant == header_tenant
