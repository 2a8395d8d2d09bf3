"""What an embedding agent touches first: engines from the server's configuration file in one
call (no web framework), named RequestContext constructors with explicit roles, errors whose text
names their code, and one page type for every list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from northstar_core import NorthstarError, Page, RequestContext
from northstar_core.blackboard import BlackboardEntry
from northstar_core.chat import ChatEntry
from northstar_core.errors import not_found

EMBED = """
import asyncio, json, sys

from northstar_adapters.compose import open_engines
from northstar_core import RequestContext


async def main() -> list[str]:
    engines = await open_engines(sys.argv[1])  # one call, the file `northstar serve` reads
    try:
        ctx = RequestContext.member("t_acme", "u_bob", mode="lab")
        await engines.chat.post(ctx, "th_1", role="user", content="hello", idempotency_key="k1")
        store = await engines.registry.store_for("chat_store", "t_acme")
        return [store.backend, store.route.connection]
    finally:
        await engines.close()


served_by = asyncio.run(main())
shells = sorted(m for m in sys.modules if m.split(".")[0] in {"litestar", "northstar_http", "uvicorn"})
print(json.dumps({"served_by": served_by, "shells": shells}))
"""


def test_engines_from_the_server_configuration_file_in_one_call_without_a_web_framework(
    tmp_path: Path,
) -> None:
    """Run in a fresh interpreter: nothing imported before the call can hide a web framework."""
    config = tmp_path / "northstar.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[connections.main]\nbackend = "sqlite"\npath = "{tmp_path / "main.db"}"\n'
        '[registry]\nconnection = "main"\n'
        '[[routes]]\nresource_kind = "chat_store"\nconnection = "main"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}
    run = subprocess.run(
        [sys.executable, "-c", EMBED, str(config)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out == {"served_by": ["sqlite", "main"], "shells": []}
    assert (tmp_path / "main.db").is_file()


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
        for name in ("ChatService", "EventSpine", "Timeline", "CanvasService", "Blackboard",
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
