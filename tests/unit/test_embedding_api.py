"""What an embedding agent touches first: named RequestContext constructors with explicit roles,
errors whose text names their code, and one page type for every list."""

from __future__ import annotations

import pytest

from northstar_core import NorthstarError, Page, RequestContext
from northstar_core.blackboard import BlackboardEntry
from northstar_core.chat import ChatEntry
from northstar_core.errors import not_found


def test_named_constructors_hold_exactly_their_role() -> None:
    for make, role in (
        (RequestContext.viewer, "viewer"),
        (RequestContext.member, "member"),
        (RequestContext.admin, "admin"),
        (RequestContext.owner, "owner"),
    ):
        ctx = make("t_acme", "u_bob", mode="lab")
        assert (ctx.tenant_id, ctx.user_id, ctx.mode, ctx.roles) == ("t_acme", "u_bob", "lab", (role,))
        assert not ctx.is_system and ctx.request_id
    member = RequestContext.member(
        "t_acme", "u_bob", mode="saas", run_id="r1", agent_id="ag_1", trace_id="tr"
    )
    assert (member.run_id, member.agent_id, member.trace_id, member.is_agent) == ("r1", "ag_1", "tr", True)
    member.require_role("member")
    with pytest.raises(NorthstarError) as err:
        RequestContext.viewer("t_acme", "u_bob", mode="lab").require_role("member")
    assert err.value.code == "auth.forbidden_role"


def test_for_user_takes_the_roles_it_is_given_and_the_old_constructor_still_works() -> None:
    ctx = RequestContext.for_user("t_acme", "u_bob", mode="lab", roles=("member", "admin"), request_id="rq")
    assert (ctx.roles, ctx.request_id) == (("member", "admin"), "rq")
    assert RequestContext.for_user("t_acme", "u_bob", mode="lab", roles=()).roles == ()
    plain = RequestContext(tenant_id="t_acme", mode="lab", user_id="u_bob")
    assert plain.roles == () and plain.request_id == ""


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("tenant_id", {"tenant_id": "acme"}),
        ("tenant_id", {"tenant_id": "t_acme\n"}),
        ("mode", {"mode": "prod"}),
        ("user_id", {"user_id": ""}),
        ("roles", {"roles": ("member", "bad role")}),
        ("run_id", {"run_id": "has space"}),
    ],
)
def test_named_constructors_refuse_what_a_token_could_not_carry(
    field: str, kwargs: dict[str, object]
) -> None:
    args: dict[str, object] = {"tenant_id": "t_acme", "user_id": "u_bob", "mode": "lab", "roles": ("member",)}
    args.update(kwargs)
    with pytest.raises(NorthstarError) as err:
        RequestContext.for_user(**args)  # type: ignore[arg-type]
    assert (err.value.code, err.value.http_status, err.value.details["field"]) == (
        "auth.invalid_identity",
        400,
        field,
    )


def test_an_error_names_its_code_and_status() -> None:
    err = not_found("chat", "thread 'th_9'", thread_id="th_9")
    assert str(err) == "chat.not_found (404): thread 'th_9' not found"
    assert err.message == "thread 'th_9' not found"
    assert "chat.not_found" in repr(err)


def test_one_page_type_for_every_list() -> None:
    """Every paged read of every service answers ``Page[...]`` (the budget ledger's usage adds
    the period's totals to its page and keeps its own type)."""
    import inspect

    import northstar_core.engines as engines_module

    services = {
        name: getattr(engines_module, name)
        for name in ("ChatService", "EventSpine", "EventStreamService", "CanvasService", "Blackboard",
                     "NotesService", "TabularStore", "AnalyticsService", "PolicyStores")
    }
    paged = 0
    for name, cls in services.items():
        for method_name, method in inspect.getmembers(cls, inspect.isfunction):
            returns = str(inspect.signature(method).return_annotation)
            lists = method_name.startswith(("list", "replay", "versions"))
            if lists or "next_cursor" in (method.__doc__ or ""):
                assert returns.startswith("Page["), f"{name}.{method_name} -> {returns}"
                paged += 1
            assert "Page" not in returns or returns.startswith("Page["), f"{name}.{method_name}"
    assert paged >= 13
    assert Page[ChatEntry].__origin__ is Page is Page[BlackboardEntry].__origin__  # type: ignore[attr-defined]
