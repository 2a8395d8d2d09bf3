"""The ``northstar`` CLI commands, run in-process on a temporary lab data dir."""

from __future__ import annotations

import json
import os

import jwt
import pytest

from northstar_http.cli import main


@pytest.fixture
def lab_dir(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("NORTHSTAR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_token_is_signed_with_the_persisted_lab_secret(lab_dir, capsys) -> None:
    args = ["token", "--tenant", "t_acme", "--user", "u_bob", "--roles", "admin,member", "--system"]
    assert main(args) == 0
    token = capsys.readouterr().out.strip()
    secret = json.loads((lab_dir / ".northstar/data/secrets.json").read_text())["jwt_hs256_secret"]
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert claims["tenant_id"] == "t_acme" and claims["sub"] == "u_bob" and claims["mode"] == "lab"
    assert claims["roles"] == ["admin", "member"] and claims["system"] is True


def test_routes_set_then_show(lab_dir, capsys) -> None:
    options = json.dumps({"max_value_bytes": 1024})
    args = ["--connection", "lab", "--table", "chats", "--options", options]
    assert main(["routes", "set", "--kind", "chat_store", *args]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1
    assert main(["routes", "show"]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["resource_kind"] for r in shown] == ["chat_store"] and shown[0]["label"] == "sqlite (lab)"
    assert (shown[0]["connection"], shown[0]["table"]) == ("lab", "chats")
    assert shown[0]["options"] == {"max_value_bytes": 1024}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--connection", "oracle"], "routing.unknown_connection"),
        (["--connection", "lab", "--table", "../x"], "routing.invalid_params"),
        (["--connection", "lab", "--options", '{"max_value_bytes": "big"}'], "invalid route"),
    ],
)
def test_routes_set_refuses_what_the_registry_refuses(
    lab_dir, capsys, args: list[str], fragment: str
) -> None:
    assert main(["routes", "set", "--kind", "chat_store", *args]) == 2
    assert fragment in capsys.readouterr().err
    assert not (lab_dir / "x").exists()


def test_provision_dry_run_prints_the_plan_and_creates_nothing(lab_dir, capsys) -> None:
    assert main(["provision", "--dry-run", "--kind", "chat_store"]) == 0
    out = capsys.readouterr().out
    assert "chat_store: would ensure sqlite" in out


def test_openapi_check_detects_a_stale_file(lab_dir, capsys) -> None:
    target = lab_dir / "openapi.json"
    assert main(["openapi", "--output", str(target)]) == 0
    assert main(["openapi", "--output", str(target), "--check"]) == 0
    target.write_text("{}")
    assert main(["openapi", "--output", str(target), "--check"]) == 1


def test_bad_configuration_exits_non_zero_with_a_message(lab_dir, capsys, monkeypatch) -> None:
    monkeypatch.setenv("NORTHSTAR_MODE", "production")
    assert main(["token"]) == 2
    assert "mode must be one of" in capsys.readouterr().err
