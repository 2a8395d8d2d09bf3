"""Deployable actions: handlers declared in configuration (``[[actions]]`` / NORTHSTAR_ACTIONS)
are loaded by the composition root, so a plain ``northstar serve`` — and an embedding agent's
``open_engines`` — serves them; a handler that cannot be loaded refuses the start."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from northstar_adapters.compose import action_handlers, open_engines
from northstar_adapters.config import ConfigError, load_settings
from northstar_adapters.webhooks import WebhookHandler
from northstar_core.identity import RequestContext
from northstar_core.safety.actions import ActionOutcome, ActionRequest
from northstar_http.bootstrap import create_app
from northstar_http.cli import main
from northstar_http.client import NorthstarClient
from tests.conftest import LiveServer, make_settings

MODULE = __name__  # the handlers below are what the configurations import
Auth = Callable[..., dict[str, str]]


async def note_handler(ctx: RequestContext, request: ActionRequest) -> ActionOutcome:
    return ActionOutcome(result={"noted": request.params.get("text"), "by": ctx.user_id}, cost=0.5)


class AsyncCallable:
    async def __call__(self, ctx: RequestContext, request: ActionRequest) -> Any:
        return "instance"


INSTANCE = AsyncCallable()


def sync_handler(ctx: RequestContext, request: ActionRequest) -> Any:
    return None


async def one_argument(ctx: RequestContext) -> Any:
    return None


NOT_CALLABLE = 3


def settings_with(actions: list[dict[str, Any]]) -> Any:
    return load_settings(environ={}, overrides={"actions": actions}, config_file=None)


def problems_of(actions: list[dict[str, Any]], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        action_handlers(settings_with(actions), environ=environ or {})
    return str(info.value)


def test_import_strings_resolve_to_the_async_functions_they_name() -> None:
    handlers = action_handlers(
        settings_with(
            [
                {"name": "note", "handler": f"{MODULE}:note_handler"},
                {"name": "inst", "handler": f"{MODULE}:INSTANCE"},
            ]
        ),
        environ={},
    )
    assert handlers["note"] is note_handler and handlers["inst"] is INSTANCE
    # an unbound method still wants its instance: not a handler
    assert "two positional arguments" in problems_of(
        [{"name": "m", "handler": f"{MODULE}:AsyncCallable.__call__"}]
    )


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ({"name": "a", "handler": "no_such_module_xyz:f"}, "cannot import module 'no_such_module_xyz'"),
        ({"name": "a", "handler": f"{MODULE}:missing"}, "has no attribute 'missing'"),
        ({"name": "a", "handler": f"{MODULE}:NOT_CALLABLE"}, "is not callable"),
        ({"name": "a", "handler": f"{MODULE}:sync_handler"}, "must be an async function"),
        ({"name": "a", "handler": f"{MODULE}:AsyncCallable"}, "must be an async function"),
        ({"name": "a", "handler": f"{MODULE}:one_argument"}, "two positional arguments"),
        ({"name": "a", "handler": "just_a_module"}, "must be 'package.module:function'"),
        ({"name": "a"}, "exactly one of handler or webhook"),
        (
            {"name": "a", "handler": f"{MODULE}:note_handler", "webhook": "https://h.example/x"},
            "exactly one of handler or webhook",
        ),
        ({"name": "has space", "handler": f"{MODULE}:note_handler"}, "name must match"),
        ({"name": "a", "webhook": "https://h.example/x"}, "needs secret_env"),
        ({"name": "a", "webhook": "https://h.example/x", "secret_env": "UNSET_SECRET"}, "UNSET_SECRET"),
        ({"name": "a", "webhook": "https://h.example/x", "secret_env": "SHORT_SECRET"}, "at least 16 bytes"),
        ({"name": "a", "webhook": "ftp://h.example/x", "secret_env": "GOOD_SECRET"}, "http:// or https://"),
        ({"name": "a", "webhook": "https://u:p@h.example/x", "secret_env": "GOOD_SECRET"}, "credentials"),
        (
            {"name": "a", "webhook": "https://h.example/x", "secret_env": "NORTHSTAR_HOOK"},
            "must not start with NORTHSTAR_",
        ),
        ({"name": "a", "handler": f"{MODULE}:note_handler", "secret_env": "GOOD_SECRET"}, "webhooks only"),
    ],
)
def test_an_action_that_cannot_be_loaded_is_a_configuration_error(
    action: dict[str, Any], message: str
) -> None:
    environ = {"SHORT_SECRET": "short", "GOOD_SECRET": "g" * 32}
    problem = problems_of([action], environ)
    assert "actions[0]" in problem and message in problem


def test_every_problem_is_named_at_once_and_duplicates_are_refused() -> None:
    problem = problems_of(
        [
            {"name": "a", "handler": f"{MODULE}:note_handler"},
            {"name": "a", "handler": f"{MODULE}:note_handler"},
            {"name": "b", "handler": f"{MODULE}:sync_handler"},
        ]
    )
    assert "actions[1] ('a'): the action is configured twice" in problem
    assert "actions[2] ('b')" in problem


@pytest.mark.parametrize(
    "bad", [{"timeout_seconds": 0}, {"timeout_seconds": 301}, {"max_response_bytes": 0}, {"surprise": 1}]
)
def test_webhook_settings_are_range_checked_when_read(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        settings_with([{"name": "a", "webhook": "https://h.example/x", "secret_env": "S", **bad}])


def test_actions_come_from_the_toml_file_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "northstar.toml"
    config.write_text(
        "[[actions]]\n"
        'name = "note"\n'
        f'handler = "{MODULE}:note_handler"\n'
        "\n[[actions]]\n"
        'name = "hook"\n'
        'webhook = "https://hooks.example/northstar"\n'
        'secret_env = "HOOK_SECRET"\n'
        "timeout_seconds = 3\n"
    )
    environ = {"HOOK_SECRET": "s" * 32}
    handlers = action_handlers(load_settings(config, environ=environ), environ=environ)
    assert handlers["note"] is note_handler
    hook = handlers["hook"]
    assert isinstance(hook, WebhookHandler) and hook.timeout_seconds == 3
    assert "s" * 32 not in repr(hook)
    from_env = load_settings(
        None, environ={"NORTHSTAR_ACTIONS": json.dumps([{"name": "n2", "handler": f"{MODULE}:note_handler"}])}
    )
    assert [a.name for a in from_env.actions] == ["n2"]
    with pytest.raises(ConfigError, match="NORTHSTAR_ACTIONS must be JSON"):
        load_settings(None, environ={"NORTHSTAR_ACTIONS": "[{"})


async def test_an_embedding_agent_gets_the_configured_actions_from_open_engines(tmp_path: Path) -> None:
    engines = await open_engines(
        data_dir=tmp_path / "data",
        environ={},
        overrides={"actions": [{"name": "note", "handler": f"{MODULE}:note_handler"}]},
    )
    try:
        assert engines.actions.handlers.names() == ["note"]
        ctx = RequestContext(tenant_id="t_acme", mode="lab", user_id="u_bob", roles=("member",))
        out = await engines.actions.execute(
            ctx, {"action_name": "note", "subject_type": "run", "subject_id": "r1", "params": {"text": "hi"}}
        )
        assert out["result"] == {"noted": "hi", "by": "u_bob"} and out["usage"]["amount"] == 0.5
    finally:
        await engines.close()


async def test_a_plain_deployment_serves_its_configured_actions(tmp_path: Path, auth: Auth) -> None:
    app = create_app(make_settings(tmp_path, actions=[{"name": "note", "handler": f"{MODULE}:note_handler"}]))
    async with AsyncTestClient(app=app) as client:
        request = {
            "action_name": "note",
            "subject_type": "run",
            "subject_id": "r1",
            "params": {"text": "hello"},
            "idempotency_key": "first",
        }
        r = await client.post("/actions/execute", json=request, headers=auth())
        assert r.status_code == 200, r.text
        assert r.json()["result"] == {"noted": "hello", "by": "u_alice"}
        again = await client.post("/actions/execute", json=request, headers=auth())
        assert (again.status_code, again.json()["replayed"]) == (200, True)
        other = await client.post("/actions/execute", json={**request, "params": {}}, headers=auth())
        assert (other.status_code, other.json()["error"]["code"]) == (422, "actions.idempotency_mismatch")
        unknown = await client.post(
            "/actions/execute", json={**request, "action_name": "nope"}, headers=auth()
        )
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "actions.unknown_action")


def test_serve_refuses_to_start_when_an_action_cannot_be_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "bad.toml"
    config.write_text(f'[[actions]]\nname = "bad"\nhandler = "{MODULE}:sync_handler"\n')
    code = main(["--config", str(config), "serve", "--data-dir", str(tmp_path / "data"), "--port", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "actions[0] ('bad')" in err and "must be an async function" in err


async def test_the_python_client_checks_and_executes(tmp_path: Path, token: Callable[..., str]) -> None:
    app = create_app(make_settings(tmp_path, actions=[{"name": "note", "handler": f"{MODULE}:note_handler"}]))
    server = LiveServer(app)
    await server.start()
    try:
        async with NorthstarClient(server.url, token()) as ns:
            body = ActionRequest(
                action_name="note", subject_type="run", subject_id="r1", params={"text": "t"}
            )
            check = await ns.actions.check(body)
            assert (check["allowed"], check["dry_run"], check["registered"]) == (True, True, True)
            keyed = msgspec.structs.replace(body, idempotency_key="c1")
            out = await ns.actions.execute(keyed)
            again = await ns.actions.execute(msgspec.to_builtins(keyed))
            assert (out["replayed"], again["replayed"], again["result"]) == (False, True, out["result"])
    finally:
        await server.stop()
