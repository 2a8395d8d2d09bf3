"""Configuration: TOML file + NORTHSTAR_* env overrides, lab defaults and persisted secrets."""

from __future__ import annotations

import json

import pytest

from northstar_core.routing import RESOURCE_KINDS
from northstar_http.config import ConfigError, finalize, load_settings


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
        "NORTHSTAR_REGISTRY_BACKEND": "dynamodb",
        "NORTHSTAR_REGISTRY_PARAMS": '{"table": "reg"}',
        "NORTHSTAR_ROUTES": json.dumps(
            [{"resource_kind": "chat_store", "backend": "dynamodb", "params": {"table": "c"}}]
        ),
    }
    settings = load_settings(environ=env, config_file=None)
    assert settings.registry is not None and settings.registry.params == {"table": "reg"}
    assert settings.routes[0].resource_kind == "chat_store"


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"NORTHSTAR_MODE": "production"}, "mode must be one of"),
        ({"NORTHSTAR_HTTP_PORT": "eighty"}, "invalid configuration"),
        ({"NORTHSTAR_ROUTES": "not json"}, "must be JSON"),
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
    assert first.registry is not None and first.registry.backend == "sqlite"
    assert first.registry.params["path"].endswith("northstar.db")
    assert {r.resource_kind for r in first.routes} == set(RESOURCE_KINDS)
    assert all(r.backend == "sqlite" for r in first.routes)
    secrets = json.loads((tmp_path / "d" / "secrets.json").read_text())
    assert (tmp_path / "d" / "secrets.json").stat().st_mode & 0o077 == 0
    again = finalize(load_settings(environ=env, config_file=None))
    assert again.jwt.hs256_secret == first.jwt.hs256_secret == secrets["jwt_hs256_secret"]
    assert again.cursor_secret == first.cursor_secret
