"""The ``northstar`` CLI commands, run in-process on a temporary lab data dir."""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time

import jwt
import pytest

from northstar_adapters.config import ConfigError, env_names, finalize, load_settings
from northstar_core.routing import RESOURCE_KINDS
from northstar_http.cli import main, parser


@pytest.fixture
def lab_dir(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("NORTHSTAR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_token_is_signed_with_the_persisted_lab_secret(lab_dir, capsys) -> None:
    finalize(load_settings())  # what `northstar serve` does first: the lab secrets exist
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


def test_provision_asks_each_backend_and_memory_declines(lab_dir, capsys) -> None:
    (lab_dir / "northstar.toml").write_text(
        '[connections.mem]\nbackend = "memory"\n\n[[routes]]\nresource_kind = "chat_store"\n'
        'connection = "mem"\n'
    )
    assert main(["provision", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "chat_store: memory needs no provisioning" in out
    assert "routing_registry: would ensure sqlite" in out


def test_the_installed_command_has_no_bench(lab_dir, capsys) -> None:
    """The benchmark harness lives in the source checkout (``./scripts/bench``), never imported
    by the installed CLI."""
    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert "bench" not in commands.choices
    with pytest.raises(SystemExit):
        main(["bench", "--quick"])
    assert "invalid choice: 'bench'" in capsys.readouterr().err
    probe = (
        "import sys, northstar_http.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'bench'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


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


# --- common options, side effects, refusals ------------------------------------------------


def _lab_secret(data_dir) -> str:
    return json.loads((data_dir / "secrets.json").read_text())["jwt_hs256_secret"]


@pytest.mark.parametrize("before", [True, False])
def test_data_dir_before_or_after_the_command_signs_with_that_dirs_secret(lab_dir, capsys, before) -> None:
    served = lab_dir / "served"
    finalize(load_settings(overrides={"data_dir": str(served)}))  # `serve --data-dir served`
    option = ["--data-dir", str(served)]
    assert main([*option, "token"] if before else ["token", *option]) == 0
    token = capsys.readouterr().out.strip()
    assert jwt.decode(token, _lab_secret(served), algorithms=["HS256"])["tenant_id"] == "t_lab"
    assert not (lab_dir / ".northstar").exists()  # nothing created where the command ran


@pytest.mark.parametrize("before", [True, False])
def test_config_before_or_after_the_command(lab_dir, capsys, before) -> None:
    config = lab_dir / "ns.toml"
    config.write_text('data_dir = "from-config"\n')
    finalize(load_settings(config))
    option = ["--config", str(config)]
    assert main([*option, "token"] if before else ["token", *option]) == 0
    token = capsys.readouterr().out.strip()
    assert jwt.decode(token, _lab_secret(lab_dir / "from-config"), algorithms=["HS256"])["sub"] == "u_lab"
    # every command takes both options after its name
    for command in (["serve"], ["routes", "show"], ["provision"], ["doctor"], ["openapi"]):
        args = parser().parse_args([*command, "--config", "c.toml", "--data-dir", "d"])
        assert (args.config, args.data_dir) == ("c.toml", "d")


def test_token_without_lab_secrets_refuses_and_creates_nothing(lab_dir, capsys) -> None:
    assert main(["token"]) == 2
    err = capsys.readouterr().err
    assert "no lab secrets in" in err and str(lab_dir / ".northstar/data/secrets.json") in err
    assert "--data-dir" in err
    assert list(lab_dir.iterdir()) == []


def test_provision_dry_run_has_no_side_effects(lab_dir, capsys) -> None:
    assert main(["provision", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "routing_registry: would ensure sqlite" in out and "chat_store: would ensure" in out
    assert list(lab_dir.iterdir()) == []  # no data dir, no database, no secrets.json
    assert main(["provision"]) == 0  # the real run creates them
    assert (lab_dir / ".northstar/data/northstar.db").is_file()


def test_routes_show_on_a_fresh_dir_creates_nothing(lab_dir, capsys) -> None:
    assert main(["routes", "show"]) == 0
    assert "no routing registry" in capsys.readouterr().err
    assert list(lab_dir.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["provision", "--kind", "nope"],
        ["routes", "set", "--kind", "nope", "--connection", "lab"],
        ["token", "--roles", "admin,wizard"],
        ["token", "--mode", "prod"],
        ["serve", "--log-level", "loud"],
    ],
)
def test_unknown_choices_are_refused_with_the_choices(lab_dir, capsys, argv) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err or "unknown role" in err
    assert "chat_store" in err or "member" in err or "saas" in err or "warning" in err


def test_every_option_has_help_and_defaults_are_stated(capsys) -> None:
    root = parser()
    commands = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            stated = action.default in (None, False, argparse.SUPPRESS) or "default" in action.help
            assert stated, f"{name} {action.dest}: default not stated"
    with pytest.raises(SystemExit):
        main(["provision", "--help"])
    assert "routing_registry" in capsys.readouterr().out


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("northstar ")


def test_serve_refuses_zero_workers(lab_dir, capsys) -> None:
    assert main(["serve", "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(lab_dir) -> None:
    assert main(["provision"]) == 0
    seed = [sys.executable, "-m", "northstar_http.cli", "routes", "set", "--kind", "chat_store",
            "--connection", "lab"]
    subprocess.run(seed, cwd=lab_dir, env=_env(), check=True, capture_output=True)
    # The reader is gone before the command writes (`northstar routes | head -0`).
    proc = subprocess.Popen(
        [sys.executable, "-m", "northstar_http.cli", "routes", "show"],
        cwd=lab_dir, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}
    return {**env, **extra}


def test_unknown_northstar_variable_is_refused_naming_the_known_ones(lab_dir, capsys, monkeypatch) -> None:
    monkeypatch.setenv("NORTHSTAR_PORT", "9000")
    assert main(["token"]) == 2
    err = capsys.readouterr().err
    assert "unknown environment variable NORTHSTAR_PORT (did you mean NORTHSTAR_HTTP_PORT?)" in err
    assert "NORTHSTAR_DATA_DIR" in err and "NORTHSTAR_JWT_AUDIENCE" in err


def test_reserved_and_known_variables_are_accepted() -> None:
    environ = {
        "NORTHSTAR_SMOKE_DYNAMODB_REGION": "eu-west-1",
        "NORTHSTAR_FIRESTORE_EMULATOR_JAR": "/x.jar",
        "NORTHSTAR_HTTP_PORT": "9100",
        "NORTHSTAR_DEFAULT_CONNECTION": "lab",
    }
    settings = load_settings(environ=environ, config_file=None)
    assert settings.http.port == 9100 and settings.default_connection == "lab"
    assert "NORTHSTAR_HTTP_READY_CACHE_SECONDS" in env_names()


def test_config_file_from_the_environment(tmp_path) -> None:
    config = tmp_path / "ns.toml"
    config.write_text("[http]\nport = 9200\n")
    assert load_settings(environ={"NORTHSTAR_CONFIG": str(config)}).http.port == 9200
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={"NORTHSTAR_CONFIG": str(tmp_path / "absent.toml")})


SAAS: dict[str, object] = {
    "mode": "saas",
    "cursor_secret": "c" * 32,
    "jwt": {"hs256_secret": "s" * 32, "audience": "northstar"},
    "connections": {
        "main": {"backend": "dynamodb", "region": "eu-west-1"},
        "audit": {"backend": "dynamodb", "region": "eu-west-1", "table_prefix": "audit_"},
    },
    "registry": {"connection": "main"},
}


def test_default_connection_routes_every_unrouted_kind_there() -> None:
    overrides = {
        **SAAS,
        "default_connection": "main",
        "routes": [{"resource_kind": "event_spine", "connection": "audit"}],
    }
    settings = finalize(load_settings(environ={}, overrides=overrides))
    by_kind = {r.resource_kind: r.connection for r in settings.routes}
    assert sorted(by_kind) == sorted(RESOURCE_KINDS)
    assert by_kind.pop("event_spine") == "audit"  # an explicit route wins
    assert set(by_kind.values()) == {"main"}
    # without it nothing is defaulted outside lab
    assert finalize(load_settings(environ={}, overrides=SAAS)).routes == []


def test_default_connection_must_be_configured() -> None:
    with pytest.raises(ConfigError, match=r"default_connection 'mian' is not a configured connection"):
        finalize(load_settings(environ={}, overrides={**SAAS, "default_connection": "mian"}))


def test_dynamodb_region_falls_back_to_aws_region(monkeypatch, tmp_path) -> None:
    from northstar_adapters.dynamodb.store import DynamoConfig, _Client, resolve_region

    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))  # no profile region either
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert resolve_region(None) == "eu-central-1" and resolve_region("us-east-1") == "us-east-1"

    async def region() -> str:
        holder = _Client(DynamoConfig(table="t"))
        client = await holder.open()  # NoRegionError here before
        try:
            return str(client.meta.region_name)
        finally:
            await holder.close()

    assert asyncio.run(region()) == "eu-central-1"


# --- doctor ----------------------------------------------------------------------------------


def test_doctor_on_a_good_lab_deployment(lab_dir, capsys) -> None:
    assert main(["doctor"]) == 0  # fresh: nothing to complain about, and nothing created
    assert list(lab_dir.iterdir()) == []
    assert "does not exist yet" in capsys.readouterr().out
    assert main(["provision"]) == 0
    capsys.readouterr()
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for line in ("ok    configuration", "ok    secrets", "ok    tokens", "ok    registry", "ok    routes"):
        assert line in out
    assert "exists, writable" in out and "no problems found" in out
    assert "clock" in out and "not compared" in out  # honest: no reference in lab


def test_doctor_names_an_unknown_variable(lab_dir, capsys, monkeypatch) -> None:
    monkeypatch.setenv("NORTHSTAR_PORT", "9000")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  configuration" in out and "NORTHSTAR_PORT (did you mean NORTHSTAR_HTTP_PORT?)" in out


def test_doctor_names_broken_secrets(lab_dir, capsys) -> None:
    data = lab_dir / ".northstar/data"
    data.mkdir(parents=True)
    (data / "secrets.json").write_text('{"cursor_secret": "x"}')
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "secrets.json is incomplete" in out and "fix:" in out


def test_doctor_names_an_unreachable_backend(lab_dir, capsys, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "doctor")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "doctor")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    (lab_dir / "northstar.toml").write_text(
        f'[connections.cloud]\nbackend = "dynamodb"\nendpoint_url = "http://127.0.0.1:{closed}"\n'
        'region = "eu-west-1"\n\n[[routes]]\nresource_kind = "chat_store"\nconnection = "cloud"\n'
    )
    assert main(["provision", "--kind", "routing_registry"]) == 0
    capsys.readouterr()
    assert main(["doctor", "--timeout", "10"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  cloud/chat_store" in out and "northstar_chat_store" in out and "unreachable" in out
    assert "fix: check endpoint_url" in out


class _SkewedJwks(http.server.BaseHTTPRequestHandler):
    skew = -3600.0  # the reference is an hour behind this machine

    def do_GET(self) -> None:
        body = json.dumps({"keys": [{"kty": "RSA", "kid": "k", "n": "AQAB", "e": "AQAB"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def date_time_string(self, timestamp: float | None = None) -> str:
        return email.utils.formatdate(time.time() + self.skew, usegmt=True)

    def log_message(self, *args: object) -> None:
        pass


def test_doctor_compares_the_clock_with_a_configured_endpoint(lab_dir, capsys, monkeypatch) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SkewedJwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("NORTHSTAR_JWT_JWKS_URL", f"http://127.0.0.1:{server.server_address[1]}/jwks")
        assert main(["doctor"]) == 1
    finally:
        server.shutdown()
        server.server_close()
    out = capsys.readouterr().out
    assert "serves 1 key(s)" in out
    clock = next(line for line in out.splitlines() if line.split()[1:2] == ["clock"])
    assert clock.strip().startswith("FAIL") and "jwt.jwks_url" in clock
    skew = float(clock.split("this clock is ")[1].split(" s")[0])
    assert 3598 < skew < 3602  # an hour, within the Date header's one-second resolution


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["migrate"], 2, "needs --kind"),
        (["migrate", "--kind", "chat_store"], 2, "needs --to"),
        (["migrate", "--kind", "chat_store", "--to", "nowhere"], 2, "no connection named 'nowhere'"),
        (["migrate", "--kind", "chat_store", "--to", "lab", "--tenant", "bad tenant"], 1,
         "migration.invalid_request"),
        (["migrate", "release", "--kind", "chat_store"], 1, "migration.not_found"),
        (["migrate", "--kind", "chat_store", "--to", "lab", "--settle-seconds", "0"], 1,
         "settle_seconds must be between"),
    ],
)
def test_migrate_refuses_what_it_cannot_do(
    lab_dir, capsys, args: list[str], code: int, fragment: str
) -> None:
    finalize(load_settings())
    assert main(["routes", "set", "--kind", "chat_store", "--connection", "lab"]) == 0
    capsys.readouterr()
    assert main(args) == code
    assert fragment in capsys.readouterr().err


def test_migrate_moves_a_tenant_within_the_lab_and_reports_it(lab_dir, capsys) -> None:
    (lab_dir / "northstar.toml").write_text(
        '[connections.lab]\nbackend = "sqlite"\npath = ".northstar/data/northstar.db"\n'
        '[connections.other]\nbackend = "sqlite"\npath = ".northstar/data/other.db"\n'
        '[registry]\nconnection = "lab"\nrefresh_seconds = 0.1\nmax_view_seconds = 0.5\n'
    )
    finalize(load_settings())
    assert main(["routes", "set", "--kind", "chat_store", "--connection", "lab"]) == 0
    capsys.readouterr()
    args = ["--kind", "chat_store", "--tenant", "t_one", "--fence-seconds", "0.1", "--settle-seconds", "0.1"]
    assert main(["migrate", "--to", "other", *args]) == 0
    out = capsys.readouterr()
    status = json.loads(out.out)
    assert (status["phase"], status["state"], status["active"]) == ("switched", "switched", True)
    assert "frozen" in out.err and "switched: other/chat_store serves" in out.err
    assert main(["migrate", "status"]) == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed["id"] == "chat_store@t_one"
    assert main(["routes", "show"]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [override] = [r for r in shown if r.get("tenant_id") == "t_one"]
    assert (override["resource_kind"], override["connection"]) == ("chat_store", "other")
    assert main(["migrate", "release", *args[:4]]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "released"
