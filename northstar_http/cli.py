"""The ``northstar`` command: serve, token, routes, provision, openapi.

    northstar serve                 # lab: SQLite under .northstar/data, every kind routed there
    northstar token --tenant t_acme --roles admin
    northstar routes show | northstar routes set --kind chat_store --connection main [--table chat]
    northstar provision --dry-run   # tables/containers/indexes for every routed cloud backend
    northstar openapi               # write contracts/openapi.json

Every command reads the same configuration (``--config`` file, else ``./northstar.toml``, plus
``NORTHSTAR_*`` environment variables; see the README).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import msgspec

from northstar_adapters.config import ConfigError, Settings, connections, finalize, load_settings
from northstar_core.errors import NorthstarError
from northstar_core.routing import Route, RoutingError, RoutingRegistry, Target

OPENAPI_FILE = Path(__file__).resolve().parents[1] / "contracts" / "openapi.json"


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    over = {k: v for k, v in overrides.items() if v is not None}
    return finalize(load_settings(args.config, overrides=over or None))


def _fail(message: str, code: int = 2) -> int:
    print(f"northstar: {message}", file=sys.stderr)
    return code


# --- serve -----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from northstar_adapters.compose import build_registry
    from northstar_http.bootstrap import create_app
    from northstar_http.server import run_server
    from northstar_http.tokens import mint_token

    http_over: dict[str, Any] = {}
    if args.host:
        http_over["host"] = args.host
    if args.port is not None:
        http_over["port"] = args.port
    settings = _settings(args, data_dir=args.data_dir, mode=args.mode, http=http_over or None)

    async def preflight() -> list[str]:
        registry = await build_registry(settings)
        try:
            return [registry.label_of(r) for r, _ in registry.routes()]
        finally:
            await registry.close()

    try:
        route_labels = asyncio.run(preflight())
    except RoutingError as exc:
        return _fail(str(exc))
    except NorthstarError as exc:
        return _fail(f"{exc.code}: {exc.message}")

    host, port = settings.http.host, settings.http.port
    base = f"http://{host}:{port}"
    labs = sorted({label for label in route_labels if label.endswith("(lab)")})
    if labs:
        print("=" * 78)
        print(f"  NORTHSTAR LAB MODE — data served by {', '.join(labs)}; not for production.")
        print(f"  data dir: {Path(settings.data_dir).resolve()}")
        print("=" * 78)
    if settings.jwt.hs256_secret and settings.is_lab:
        token = mint_token(
            settings.jwt.hs256_secret,
            tenant_id="t_lab",
            sub="u_lab",
            roles=("member", "admin"),
            audience=settings.jwt.audience,
            issuer=settings.jwt.issuer,
        )
        print(f"  lab token (tenant t_lab, user u_lab, 30 days):\n    {token}")
        body = json.dumps({"role": "user", "content": "hello", "idempotency_key": "first"})
        print("  try:")
        print(
            f"    curl -s -X POST {base}/chat/threads/demo/messages -H 'Authorization: Bearer {token}' "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
        )
        print(f"    curl -s {base}/chat/threads/demo/messages -H 'Authorization: Bearer {token}'")
    print(f"  docs: {base}/schema  (OpenAPI JSON: {base}/schema/openapi.json)")
    sys.stdout.flush()
    # Open SSE streams never finish by themselves: give them a few seconds on shutdown.
    # run_server bounds the time to send a request head and body (northstar_http/server.py).
    app = create_app(settings)
    return run_server(
        app, settings, host=host, port=port, log_level=args.log_level, timeout_graceful_shutdown=5
    )


# --- token -----------------------------------------------------------------------------------


def cmd_token(args: argparse.Namespace) -> int:
    from northstar_http.tokens import mint_token

    settings = _settings(args)
    if not settings.jwt.hs256_secret:
        return _fail("tokens can be minted only with an HS256 secret (jwt.hs256_secret)")
    token = mint_token(
        settings.jwt.hs256_secret,
        tenant_id=args.tenant,
        sub=args.user,
        mode=args.mode or settings.mode,
        roles=[r for r in args.roles.split(",") if r],
        system=args.system,
        agent_id=args.agent,
        project_id=args.project,
        ttl_seconds=args.ttl,
        audience=settings.jwt.audience,
        issuer=settings.jwt.issuer,
    )
    print(token)
    return 0


# --- routes ----------------------------------------------------------------------------------


async def _open_registry(settings: Settings) -> RoutingRegistry:
    from northstar_adapters import AdapterFactory
    from northstar_adapters.compose import registry_target

    factory = AdapterFactory()
    registry = RoutingRegistry(
        factory.open(registry_target(settings)),
        factory,
        connections=connections(settings),
        deployment_mode=settings.mode,
    )
    await registry.load()
    return registry


def cmd_routes(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def run() -> int:
        registry = await _open_registry(settings)
        try:
            if args.action == "set":
                try:
                    options = json.loads(args.options) if args.options else {}
                    route = msgspec.convert(
                        {
                            "resource_kind": args.kind,
                            "connection": args.connection,
                            "table": args.table,
                            "tenant_id": args.tenant,
                            "options": options,
                        },
                        type=Route,
                        strict=True,
                    )
                except (json.JSONDecodeError, msgspec.ValidationError) as exc:
                    return _fail(f"invalid route: {exc}")
                version = await registry.set_route(route, args.expected_version)
                print(json.dumps({**msgspec.to_builtins(route), "version": version}))
                return 0
            for route, version in registry.routes():
                out = {**msgspec.to_builtins(route), "version": version, "label": registry.label_of(route)}
                print(json.dumps(out))
            stored = {(r.resource_kind, r.tenant_id) for r, _ in registry.routes()}
            pending = [r for r in settings.routes if (r.resource_kind, r.tenant_id) not in stored]
            if pending:
                kinds = ", ".join(sorted({r.resource_kind for r in pending}))
                print(f"# configured, seeded at the next `northstar serve`: {kinds}", file=sys.stderr)
            configured = {r.resource_kind for r in settings.routes if r.tenant_id is None}
            unrouted = [k for k in registry.required_kinds if (k, None) not in stored and k not in configured]
            if unrouted:
                print(f"# unrouted: {', '.join(unrouted)}", file=sys.stderr)
            return 0
        except NorthstarError as exc:
            return _fail(f"{exc.code}: {exc.message}")
        finally:
            await registry.close()

    return asyncio.run(run())


# --- provision -------------------------------------------------------------------------------


def cmd_provision(args: argparse.Namespace) -> int:
    from northstar_adapters import AdapterFactory
    from northstar_adapters.compose import registry_target

    settings = _settings(args)
    known = connections(settings)
    factory = AdapterFactory()

    async def provision_target(target: Target) -> bool:
        provision = getattr(factory.module(target.backend), "provision", None)
        if provision is None:
            print(f"{target.resource_kind}: {target.backend} needs no provisioning")
            return True
        try:
            for line in await provision(target, dry_run=args.dry_run):
                print(f"{target.resource_kind}: {line}")
        except Exception as exc:  # report every route, then fail
            print(f"{target.resource_kind}: FAILED {exc}", file=sys.stderr)
            return False
        return True

    async def provision_route(route: Route) -> bool:
        connection = known.get(route.connection)
        if connection is None:
            print(f"{route.resource_kind}: FAILED connection {route.connection!r} is not configured",
                  file=sys.stderr)
            return False
        return await provision_target(
            Target(
                resource_kind=route.resource_kind,
                backend=connection.backend,
                params=dict(connection.params),
                table=route.table_name,
            )
        )

    async def run() -> int:
        # The registry's own store first: on a fresh deployment it does not exist yet, and the
        # durable routes it holds can be read only once it does.
        first = registry_target(settings)
        done = {msgspec.json.encode((settings.registry.connection if settings.registry else "", first.table))}
        ok = True if args.kind and first.resource_kind != args.kind else await provision_target(first)
        try:
            registry = await _open_registry(settings)
        except NorthstarError as exc:
            print(f"# routing registry not readable ({exc.code}): configured routes only", file=sys.stderr)
            stored: list[Route] = []
            registry = None
        else:
            stored = [r for r, _ in registry.routes()]
        try:
            for route in [*stored, *settings.routes]:
                key = msgspec.json.encode((route.connection, route.table_name))
                if key in done or (args.kind and route.resource_kind != args.kind):
                    continue
                done.add(key)
                ok = await provision_route(route) and ok
            return 0 if ok else 1
        finally:
            if registry is not None:
                await registry.close()

    return asyncio.run(run())


# --- openapi ---------------------------------------------------------------------------------


def openapi_document() -> str:
    """The service's OpenAPI schema as stable, sorted JSON (no server state needed)."""
    from northstar_http.app import build_app

    app = build_app(state={}, body_limit=1)
    return json.dumps(app.openapi_schema.to_schema(), indent=2, sort_keys=True) + "\n"


def cmd_openapi(args: argparse.Namespace) -> int:
    document = openapi_document()
    target = Path(args.output)
    if args.check:
        if not target.is_file() or target.read_text() != document:
            return _fail(f"{target} is out of date; run `northstar openapi`", 1)
        print(f"{target} is up to date")
        return 0
    target.write_text(document)
    print(f"wrote {target}")
    return 0


# --- bench -----------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark harness (``bench/run.py`` of a source checkout); options pass through."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "run.py").is_file():
        return _fail("the benchmark harness (bench/run.py) ships with the source checkout only")
    sys.path.insert(0, str(root))
    from bench.run import main as bench_main

    result: int = bench_main(args.bench_args)
    return result


# --- entry point -----------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="northstar", description="Northstar durable engines")
    p.add_argument("--config", help="TOML configuration file (default: ./northstar.toml if present)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the HTTP service (lab default: SQLite under .northstar/data)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--data-dir")
    s.add_argument("--mode", choices=["lab", "saas", "enterprise", "system"])
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=cmd_serve)

    t = sub.add_parser("token", help="mint a JWT with the configured HS256 secret (lab)")
    t.add_argument("--tenant", default="t_lab")
    t.add_argument("--user", default="u_lab")
    t.add_argument("--roles", default="member", help="comma-separated: owner,admin,member,viewer")
    t.add_argument("--system", action="store_true")
    t.add_argument("--agent")
    t.add_argument("--project")
    t.add_argument("--mode")
    t.add_argument("--ttl", type=int, default=30 * 24 * 3600, help="seconds")
    t.set_defaults(func=cmd_token)

    r = sub.add_parser("routes", help="show or set routes in the durable registry")
    r.add_argument("action", choices=["show", "set"], nargs="?", default="show")
    r.add_argument("--kind")
    r.add_argument("--connection", help="a connection named in the configuration")
    r.add_argument("--table", help="table / container / collection name in it (default: the kind)")
    r.add_argument("--options", help="JSON object: max_value_bytes, default_ttl_seconds, canvas_limits")
    r.add_argument("--tenant")
    r.add_argument("--expected-version", type=int)
    r.set_defaults(func=cmd_routes)

    v = sub.add_parser("provision", help="create tables/containers/indexes for routed backends")
    v.add_argument("--dry-run", action="store_true")
    v.add_argument("--kind")
    v.set_defaults(func=cmd_provision)

    b = sub.add_parser("bench", help="run the benchmark harness (P1-P5); see `northstar bench --help`")
    b.add_argument("bench_args", nargs=argparse.REMAINDER, help="options for bench/run.py")
    b.set_defaults(func=cmd_bench)

    o = sub.add_parser("openapi", help="write the OpenAPI schema to contracts/openapi.json")
    o.add_argument("--output", default=str(OPENAPI_FILE))
    o.add_argument("--check", action="store_true", help="fail if the file is out of date")
    o.set_defaults(func=cmd_openapi)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # every option after `bench` belongs to the harness
        return cmd_bench(argparse.Namespace(bench_args=argv[1:]))
    args = parser().parse_args(argv)
    if args.command == "routes" and args.action == "set" and not (args.kind and args.connection):
        return _fail("routes set needs --kind and --connection")
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        return _fail(f"configuration: {exc}")
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    raise SystemExit(main())
