"""Configuration: TOML file + NORTHSTAR_* env overrides, lab defaults and persisted secrets."""

from __future__ import annotations

import json

import pytest

from northstar_adapters.config import ConfigError, connections, finalize, load_settings
from northstar_core.routing import RESOURCE_KINDS


def test_file_then_environment_precedence(tmp_path) -> None:
    path = tmp_path / "northstar.toml"
    path.write_text(
        'mode = "lab"\ncursor_secret = "from-file-0123456789"\n[http]\nport = 9000\nbody_limit = 10\n'
        '[jwt]\naudience = "aud-file"\n'
    )
    env = {"NORTHSTAR_HTTP_PORT": "9100", "NORTHSTAR_JWT_AUDIENCE": "aud-env", "UNRELATED": "x"}
    settings = load_settings(path, environ=env)
    assert settings.http.port == 9100 and settings.http.body_limit == 10
    assert settings.jwt.audience == "aud-env" and settings.cursor_secret == "from-file-0123456789"


def test_json_environment_keys(tmp_path) -> None:
    env = {
        "NORTHSTAR_CONNECTIONS": json.dumps({"main": {"backend": "dynamodb", "region": "eu-west-1"}}),
        "NORTHSTAR_REGISTRY_CONNECTION": "main",
        "NORTHSTAR_REGISTRY_TABLE": "reg",
        "NORTHSTAR_ROUTES": json.dumps([{"resource_kind": "chat_store", "connection": "main", "table": "c"}]),
    }
    settings = load_settings(environ=env, config_file=None)
    assert settings.registry is not None and settings.registry.table == "reg"
    assert connections(settings)["main"].params == {"region": "eu-west-1"}
    assert (settings.routes[0].resource_kind, settings.routes[0].table) == ("chat_store", "c")


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"NORTHSTAR_MODE": "production"}, "mode must be one of"),
        ({"NORTHSTAR_HTTP_PORT": "eighty"}, "invalid configuration"),
        ({"NORTHSTAR_ROUTES": "not json"}, "must be JSON"),
        # Connections are checked against the backend's declared params, strictly.
        ({"NORTHSTAR_CONNECTIONS": '{"m": {"backend": "sqlite", "path": 123}}'}, "connections.m"),
        ({"NORTHSTAR_CONNECTIONS": '{"m": {"backend": "sqlite", "path": "x", "synchronous": "bogus"}}'},
         "synchronous"),
        ({"NORTHSTAR_CONNECTIONS": '{"m": {"backend": "dynamodb", "aws_secret_access_key": "k"}}'},
         "aws_secret_access_key"),
        ({"NORTHSTAR_CONNECTIONS": '{"m": {"backend": "cosmos", "url": "https://x/", "key": "k"}}'}, "key"),
        ({"NORTHSTAR_CONNECTIONS": '{"m": {"backend": "postgres"}}'}, "backend must be one of"),
        ({"NORTHSTAR_CONNECTIONS": '{"M/x": {"backend": "memory"}}'}, "connection name"),
    ],
)
def test_bad_configuration_is_a_clear_error(env, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ=env, config_file=None)
    assert fragment in str(err.value)


def test_missing_config_file_is_an_error(tmp_path) -> None:
    with pytest.raises(ConfigError):
        load_settings(tmp_path / "nope.toml", environ={})


def test_lab_defaults_route_every_kind_to_sqlite_and_persist_secrets(tmp_path) -> None:
    env = {"NORTHSTAR_DATA_DIR": str(tmp_path / "d")}
    first = finalize(load_settings(environ=env, config_file=None))
    assert first.registry is not None and first.registry.connection == "lab"
    lab = connections(first)["lab"]
    assert lab.backend == "sqlite" and lab.params["path"] == str((tmp_path / "d" / "northstar.db").resolve())
    assert {r.resource_kind for r in first.routes} == set(RESOURCE_KINDS)
    assert all(r.connection == "lab" for r in first.routes)
    secrets = json.loads((tmp_path / "d" / "secrets.json").read_text())
    assert (tmp_path / "d" / "secrets.json").stat().st_mode & 0o077 == 0
    again = finalize(load_settings(environ=env, config_file=None))
    assert again.jwt.hs256_secret == first.jwt.hs256_secret == secrets["jwt_hs256_secret"]
    assert again.cursor_secret == first.cursor_secret


def test_lab_stores_an_absolute_path_whatever_the_working_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = finalize(load_settings(environ={"NORTHSTAR_DATA_DIR": "rel/data"}, config_file=None))
    path = connections(settings)["lab"].params["path"]
    assert path == str(tmp_path / "rel" / "data" / "northstar.db")


def test_outside_lab_an_audience_and_known_connections_are_required(tmp_path) -> None:
    base = {
        "NORTHSTAR_MODE": "saas",
        "NORTHSTAR_CURSOR_SECRET": "c" * 32,
        "NORTHSTAR_JWT_HS256_SECRET": "s" * 32,
        "NORTHSTAR_CONNECTIONS": json.dumps({"main": {"backend": "dynamodb"}}),
        "NORTHSTAR_REGISTRY_CONNECTION": "main",
    }
    with pytest.raises(ConfigError, match=r"jwt\.audience"):
        finalize(load_settings(environ=base, config_file=None))
    with_aud = {**base, "NORTHSTAR_JWT_AUDIENCE": "northstar"}
    assert finalize(load_settings(environ=with_aud, config_file=None)).jwt.audience == "northstar"
    routes = json.dumps([{"resource_kind": "chat_store", "connection": "x"}])
    unknown = {**with_aud, "NORTHSTAR_ROUTES": routes}
    with pytest.raises(ConfigError, match="connection 'x' is not configured"):
        finalize(load_settings(environ=unknown, config_file=None))
