"""The ``northstar`` command: serve, token, routes, provision, doctor, openapi.

    northstar serve [--workers N]   # lab: SQLite under .northstar/data, every kind routed there
    northstar token --tenant t_acme --roles admin
    northstar routes show | northstar routes set --kind chat_store --connection main [--table chat]
    northstar provision --dry-run   # tables/containers/indexes for every routed cloud backend
    northstar doctor                # configuration, secrets, routes, backends, clock: what to fix
    northstar openapi               # write contracts/openapi.json

Every command reads the same configuration (``--config`` file, else ``$NORTHSTAR_CONFIG``, else
``./northstar.toml``, plus ``NORTHSTAR_*`` environment variables; see the README) and accepts
``--config`` and ``--data-dir`` before or after its name. Only ``serve``, ``provision`` (without
``--dry-run``) and ``routes set`` create anything (the lab data dir, its secrets, tables).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import msgspec

from northstar_adapters.compose import REGISTRY_KIND
from northstar_adapters.config import (
    CONFIG_FILE_ENV,
    ConfigError,
    Settings,
    connections,
    finalize,
    lab_secrets_file,
    load_settings,
)
from northstar_core.errors import NorthstarError
from northstar_core.identity import MODES, ROLE_RANK
from northstar_core.kernel.migration import DEFAULT_FENCE_SECONDS, DEFAULT_SETTLE_SECONDS
from northstar_core.routing import RESOURCE_KINDS, Route, RoutingError, RoutingRegistry, Target

OPENAPI_FILE = Path(__file__).resolve().parents[1] / "contracts" / "openapi.json"
# The app factory `serve --workers` hands to each worker process (northstar_http/asgi.py).
APP_FACTORY: Final = "northstar_http.asgi:create_app"
LOG_LEVELS: Final = ("critical", "error", "warning", "info", "debug", "trace")
# Exit status of a command whose output pipe was closed (`northstar routes | head`): what a
# shell reports for a command killed by SIGPIPE.
EXIT_BROKEN_PIPE: Final = 141


def _settings(args: argparse.Namespace, *, create: bool, **overrides: Any) -> Settings:
    over = {k: v for k, v in overrides.items() if v is not None}
    data_dir = getattr(args, "data_dir", None)
    if data_dir:
        over["data_dir"] = data_dir
    return finalize(load_settings(getattr(args, "config", None), overrides=over or None), create=create)


def _fail(message: str, code: int = 2) -> int:
    print(f"northstar: {message}", file=sys.stderr)
    return code


def _registry_file_missing(settings: Settings) -> Path | None:
    """The routing registry's SQLite file if it does not exist yet (nothing served there):
    read-only commands must not create it by opening it."""
    from northstar_adapters.compose import registry_target

    target = registry_target(settings)
    path = target.params.get("path")
    if target.backend == "sqlite" and isinstance(path, str) and not Path(path).exists():
        return Path(path)
    return None


async def open_registry(settings: Settings) -> RoutingRegistry:
    """The durable routing table, loaded (nothing seeded, nothing checked)."""
    from northstar_adapters import AdapterFactory
    from northstar_adapters.compose import registry_target

    assert settings.registry is not None
    factory = AdapterFactory()
    registry = RoutingRegistry(
        factory.open(registry_target(settings)),
        factory,
        connections=connections(settings),
        deployment_mode=settings.mode,
        refresh_seconds=settings.registry.refresh_seconds,
        max_view_seconds=settings.registry.max_view_seconds,
    )
    await registry.load()
    return registry


# --- serve -----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from northstar_adapters.compose import action_handlers, build_registry, data_key_cipher
    from northstar_http.tokens import mint_token

    if args.workers < 1:
        return _fail("--workers must be at least 1")
    http_over: dict[str, Any] = {}
    if args.host:
        http_over["host"] = args.host
    if args.port is not None:
        http_over["port"] = args.port
    settings = _settings(args, create=True, mode=args.mode, http=http_over or None)

    async def preflight() -> list[str]:
        action_handlers(settings)  # ConfigError (exit 2) if a configured action cannot be loaded
        data_key_cipher(settings)  # ConfigError if [data_keys] names a key that is not there
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
        data_dir = shlex.quote(str(Path(settings.data_dir).resolve()))
        print(f"  more tokens: northstar token --data-dir {data_dir} --tenant t_acme --roles admin")
    print(f"  docs: {base}/schema  (OpenAPI JSON: {base}/schema/openapi.json)")
    print(f"  operator console: {base}/console  (paste a token)")
    sys.stdout.flush()
    # Open SSE streams are ended as shutdown begins (northstar_http/sse.py); the grace period
    # bounds what is left (slow requests). run_server/run_workers bound the time to send a
    # request head; the app bounds the body (northstar_http/server.py, timeouts.py).
    options: dict[str, Any] = {
        "host": host, "port": port, "log_level": args.log_level, "timeout_graceful_shutdown": 5,
    }
    if args.workers > 1:
        from northstar_http.server import run_workers

        _export_for_workers(args, settings)
        return run_workers(APP_FACTORY, settings, workers=args.workers, **options)
    from northstar_http.bootstrap import create_app
    from northstar_http.server import run_server

    return run_server(create_app(settings), settings, **options)


def _export_for_workers(args: argparse.Namespace, settings: Settings) -> None:
    """Worker processes build their app from the environment (the factory takes no
    arguments): what the command line chose goes there, as exact, absolute values."""
    config = getattr(args, "config", None)
    if config:
        os.environ[CONFIG_FILE_ENV] = str(Path(config).resolve())
    os.environ["NORTHSTAR_DATA_DIR"] = str(Path(settings.data_dir).resolve())
    os.environ["NORTHSTAR_MODE"] = settings.mode
    os.environ["NORTHSTAR_HTTP_HOST"] = settings.http.host
    os.environ["NORTHSTAR_HTTP_PORT"] = str(settings.http.port)


# --- token -----------------------------------------------------------------------------------


def _roles(value: str) -> list[str]:
    roles = [r.strip() for r in value.split(",") if r.strip()]
    unknown = [r for r in roles if r not in ROLE_RANK]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown role {', '.join(unknown)} (choose from {', '.join(ROLE_RANK)})"
        )
    return roles


def cmd_token(args: argparse.Namespace) -> int:
    from northstar_http.tokens import mint_token

    settings = _settings(args, create=False)
    if not settings.jwt.hs256_secret:
        if settings.is_lab and not (settings.jwt.jwks_file or settings.jwt.jwks_url):
            # Minting with a fresh secret here would give a token no server accepts (401).
            return _fail(
                f"no lab secrets in {lab_secrets_file(settings).resolve()}: a token must be signed "
                "with the secret of the server it is for. Pass that server's --data-dir (and "
                "--config), or start `northstar serve` there first."
            )
        return _fail("tokens can be minted only with an HS256 secret (jwt.hs256_secret)")
    token = mint_token(
        settings.jwt.hs256_secret,
        tenant_id=args.tenant,
        sub=args.user,
        mode=args.mode or settings.mode,
        roles=args.roles,
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


def cmd_routes(args: argparse.Namespace) -> int:
    if args.action == "set" and not (args.kind and args.connection):
        return _fail("routes set needs --kind and --connection")
    settings = _settings(args, create=args.action == "set")
    if args.action == "show":
        missing = _registry_file_missing(settings)
        if missing is not None:
            kinds = sorted({r.resource_kind for r in settings.routes})
            print(f"# no routing registry at {missing} yet (nothing was served there)", file=sys.stderr)
            if kinds:
                seeded = ", ".join(kinds)
                print(f"# configured, seeded at the next `northstar serve`: {seeded}", file=sys.stderr)
            return 0

    async def run() -> int:
        registry = await open_registry(settings)
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
                version = await registry.set_route(route, args.expected_version, force=args.force)
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


# --- archives --------------------------------------------------------------------------------

_OPERATOR = "northstar-cli"


def _operator(tenant_id: str, mode: str) -> Any:
    from northstar_core.identity import RequestContext

    # The operator's own command, run with the deployment's configuration and credentials.
    return RequestContext(tenant_id=tenant_id, mode=mode, user_id=_OPERATOR, roles=("owner",), is_system=True)


def _resume_point(path: Path) -> tuple[str | None, int] | None:
    """Where an archive file stands: ``None`` if complete, else the cursor of its last mark
    (``None``: from the start) and the byte length up to and including that mark."""
    from northstar_core.kernel.archive import ArchiveEnd, ArchiveHeader, ArchiveMark, Line

    decoder = msgspec.json.Decoder(Line)
    cursor: str | None = None
    keep = 0
    offset = 0
    with path.open("rb") as f:
        for raw in f:
            offset += len(raw)
            if not raw.endswith(b"\n"):
                break  # a line cut in the middle: dropped
            try:
                line = decoder.decode(raw)
            except msgspec.DecodeError:
                break
            if isinstance(line, ArchiveEnd):
                return None
            if isinstance(line, ArchiveHeader | ArchiveMark):
                cursor = line.cursor if isinstance(line, ArchiveMark) else None
                keep = offset
    return cursor, keep


def cmd_export(args: argparse.Namespace) -> int:
    settings = _settings(args, create=False)
    out = Path(args.out) if args.out else None
    operator = _operator(args.tenant, settings.mode)
    if args.user is not None:
        # one user's data is not resumable: written whole, or no file is left
        return _write_lines(
            settings, lambda engines: engines.user_data.export(operator, args.tenant, args.user), out,
            keep_partial=False,
        )
    cursor: str | None = None
    append = False
    if out is not None and out.exists() and out.stat().st_size > 0:
        point = _resume_point(out)
        if point is None:
            print(f"# {out} is a complete archive already", file=sys.stderr)
            return 0
        cursor, keep = point
        if keep == 0:
            out.unlink()  # not even a whole header: start again
        else:
            with out.open("r+b") as f:
                f.truncate(keep)
            append = True
            print(f"# resuming {out} after its last mark", file=sys.stderr)
    return _write_lines(
        settings, lambda engines: engines.archives.export(operator, args.tenant, cursor), out, append=append
    )


def _write_lines(
    settings: Settings,
    lines_of: Callable[[Any], Awaitable[AsyncIterator[bytes]]],
    out: Path | None,
    *,
    append: bool = False,
    keep_partial: bool = True,
) -> int:
    """Write the lines ``lines_of(engines)`` produces to ``out`` (standard output if ``None``),
    each chunk on disk before the next is read; exit 1 on an error envelope or ``error`` line."""
    from northstar_adapters.compose import build_engines

    async def run(sink: Any) -> int:
        engines = await build_engines(settings)
        try:
            failed = None
            async for chunk in await lines_of(engines):
                sink.write(chunk)
                sink.flush()
                if chunk.startswith(b'{"t":"error"'):
                    failed = chunk.decode().strip()
            if failed is not None:
                return _fail(f"the export stopped: {failed}; run the same command again to resume", 1)
            return 0
        except NorthstarError as exc:
            return _fail(f"{exc.code}: {exc.message}", 1)
        finally:
            await engines.close()

    if out is None:
        return asyncio.run(run(sys.stdout.buffer))
    with out.open("ab" if append else "wb") as sink:
        code = asyncio.run(run(sink))
        os.fsync(sink.fileno())
    if code != 0 and not keep_partial:
        out.unlink()
    return code


def cmd_import(args: argparse.Namespace) -> int:
    from northstar_adapters.compose import build_engines

    settings = _settings(args, create=True)
    source = Path(args.input)
    if not source.is_file():
        return _fail(f"no archive at {source}")

    async def lines(f: Any) -> Any:
        while batch := await asyncio.to_thread(f.readlines, 1 << 20):
            for raw in batch:
                yield raw

    async def run(f: Any) -> int:
        engines = await build_engines(settings)
        try:
            report = await engines.archives.import_(
                _operator(args.tenant, settings.mode), args.tenant, lines(f), resume=args.resume
            )
            print(json.dumps(msgspec.to_builtins(report)))
            return 0
        except NorthstarError as exc:
            details = f" {json.dumps(exc.details)}" if exc.details else ""
            return _fail(f"{exc.code}: {exc.message}{details}", 1)
        finally:
            await engines.close()

    with source.open("rb") as f:
        return asyncio.run(run(f))


def cmd_erase(args: argparse.Namespace) -> int:
    from northstar_adapters.compose import build_engines

    settings = _settings(args, create=False)

    async def run() -> int:
        engines = await build_engines(settings)
        try:
            if args.user is not None:
                user_report = await engines.user_data.erase(
                    _operator(args.tenant, settings.mode), args.tenant, args.user, confirm=args.confirm
                )
                print(json.dumps(msgspec.to_builtins(user_report)))
                return 0
            print(f"# retiring {args.tenant}, then deleting its data", file=sys.stderr)
            report = await engines.archives.erase(
                _operator(args.tenant, settings.mode),
                args.tenant,
                confirm=args.confirm,
                # every server re-reads the routing table (and so the retirement) this often
                settle_seconds=settings.registry.refresh_seconds + 1.0,
            )
            print(json.dumps(msgspec.to_builtins(report)))
            return 0
        except NorthstarError as exc:
            return _fail(f"{exc.code}: {exc.message}", 1)
        finally:
            await engines.close()

    return asyncio.run(run())


# --- migrate ---------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    from northstar_adapters import AdapterFactory
    from northstar_core.clock import SystemClock
    from northstar_core.kernel.migration import Migrations, MigrationStatus, Progress, migration_id

    if args.action != "status" and not args.kind:
        return _fail(f"migrate {args.action} needs --kind (each kind of the table, repeated)")
    if args.action == "run" and not args.to:
        return _fail("migrate needs --to CONNECTION (a connection named in the configuration)")
    settings = _settings(args, create=False)

    def report(progress: Progress) -> None:
        step = progress.steps[-1][0] if progress.steps else ""
        print(
            f"# {progress.id} {progress.phase}: {progress.copied_items} items copied, "
            f"{progress.drained_partitions} journaled partitions drained, "
            f"{progress.verified_partitions} partitions verified, {progress.mismatched} copied "
            f"again{f' — {step}' if step else ''}",
            file=sys.stderr,
            flush=True,
        )

    async def run() -> int:
        registry = await open_registry(settings)
        migrations = Migrations(registry, SystemClock())
        try:
            if args.action == "status":
                for entry in await migrations.status():
                    print(msgspec.json.encode(entry).decode())
                return 0
            ident = migration_id(args.kind, args.tenant)
            if args.action != "run":
                # any one kind of the table names its migration (the newest, if it ended)
                for entry in sorted(await migrations.status(), key=lambda e: e.started_at, reverse=True):
                    if entry.tenant_id == args.tenant and set(args.kind) <= set(entry.kinds):
                        ident = entry.id
                        break
            if args.action == "rollback":
                done = await migrations.rollback(ident, report)
            elif args.action == "release":
                done = await migrations.release(ident, report)
            else:
                connection = registry.connections.get(args.to)
                if connection is None:
                    return _fail(f"no connection named {args.to!r} in the configuration")
                # the target table is created like `northstar provision` would (idempotent):
                # no route names it before the cutover, so provision does not know of it
                factory = AdapterFactory()
                for kind in args.kind:
                    await factory.provision(connection.target(kind, args.table or sorted(args.kind)[0]),
                                            dry_run=False)
                migration = await migrations.start(
                    args.kind,
                    args.to,
                    args.table,
                    args.tenant,
                    fence_seconds=args.fence_seconds,
                    settle_seconds=args.settle_seconds,
                    report=report,
                )
                await migrations.run(migration.id, report)
                print(
                    f"# switched: {migration.target.connection}/{migration.target.table} serves; "
                    f"`northstar migrate release --kind {migration.kinds[0]}"
                    f"{f' --tenant {args.tenant}' if args.tenant else ''}` deletes the old copy, "
                    "`migrate rollback` moves back",
                    file=sys.stderr,
                )
                found = await migrations.progress(migration.id)
                assert found is not None
                done = found
            active = registry.migration(done.id)
            status = MigrationStatus.of(done, active[0] if active is not None else None)
            print(msgspec.json.encode(status).decode())
            return 0
        except NorthstarError as exc:
            return _fail(f"{exc.code}: {exc.message}", 1)
        finally:
            await registry.close()

    return asyncio.run(run())


# --- provision -------------------------------------------------------------------------------


def cmd_provision(args: argparse.Namespace) -> int:
    from northstar_adapters import AdapterFactory
    from northstar_adapters.compose import registry_target

    # A dry run changes nothing: no data dir, no secrets, no database file.
    settings = _settings(args, create=not args.dry_run)
    known = connections(settings)
    factory = AdapterFactory()

    async def provision_target(target: Target) -> bool:
        try:
            lines = await factory.provision(target, dry_run=args.dry_run)
        except ImportError as exc:
            print(f"{target.resource_kind}: FAILED the {target.backend} SDK is not installed ({exc}); "
                  f"install northstar[{target.backend}]", file=sys.stderr)
            return False
        except Exception as exc:  # report every route, then fail
            print(f"{target.resource_kind}: FAILED {exc}", file=sys.stderr)
            return False
        if lines is None:
            print(f"{target.resource_kind}: {target.backend} needs no provisioning")
        for line in lines or ():
            print(f"{target.resource_kind}: {line}")
        return True

    async def provision_route(route: Route) -> bool:
        connection = known.get(route.connection)
        if connection is None:
            print(f"{route.resource_kind}: FAILED connection {route.connection!r} is not configured",
                  file=sys.stderr)
            return False
        return await provision_target(connection.target(route.resource_kind, route.table_name))

    async def run() -> int:
        # The registry's own store first: on a fresh deployment it does not exist yet, and the
        # durable routes it holds can be read only once it does.
        first = registry_target(settings)
        done = {msgspec.json.encode((settings.registry.connection if settings.registry else "", first.table))}
        ok = True if args.kind and first.resource_kind != args.kind else await provision_target(first)
        registry: RoutingRegistry | None = None
        stored: list[Route] = []
        missing = _registry_file_missing(settings) if args.dry_run else None
        if missing is not None:
            print(f"# no routing registry at {missing} yet: configured routes only", file=sys.stderr)
        else:
            try:
                registry = await open_registry(settings)
            except NorthstarError as exc:
                note = f"# routing registry not readable ({exc.code}): configured routes only"
                print(note, file=sys.stderr)
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


# --- doctor ----------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    from northstar_http.doctor import diagnose

    overrides = {"data_dir": args.data_dir} if getattr(args, "data_dir", None) else None
    config = getattr(args, "config", None)
    report = asyncio.run(diagnose(config, overrides=overrides, check_seconds=args.timeout))
    print(report.render())
    return 1 if report.failed else 0


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


# --- entry point -----------------------------------------------------------------------------


def _version() -> str:
    try:
        return metadata.version("northstar")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _common_options() -> argparse.ArgumentParser:
    """``--config`` and ``--data-dir``, accepted before the command and after it: SUPPRESS as
    the default, so a subcommand that does not repeat an option keeps what came before it."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("configuration (before or after the command)")
    group.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS,
        help="TOML configuration file (default: $NORTHSTAR_CONFIG, else ./northstar.toml if present)",
    )
    group.add_argument(
        "--data-dir", metavar="DIR", default=argparse.SUPPRESS,
        help="lab data directory: the SQLite file and secrets.json (default: data_dir of the "
        "configuration, .northstar/data); use the one the server was started with",
    )
    return common


def parser() -> argparse.ArgumentParser:
    common = _common_options()
    p = argparse.ArgumentParser(
        prog="northstar",
        description="Northstar durable engines: run the service and operate a deployment.",
        epilog="`northstar COMMAND --help` shows a command's options. Configuration: README, "
        "section Configuration.",
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"northstar {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    s = command("serve", "run the HTTP service (lab default: SQLite under .northstar/data)")
    s.add_argument("--host", help="interface to listen on (default: http.host, 127.0.0.1)")
    s.add_argument("--port", type=int, help="TCP port (default: http.port, 8787)")
    s.add_argument("--mode", choices=MODES, help="deployment mode (default: mode, lab)")
    s.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes sharing the port (default: 1)")
    s.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                   help="uvicorn's log level (default: info)")
    s.set_defaults(func=cmd_serve)

    t = command("token", "mint an HS256 JWT with the configured secret (lab: the data dir's)")
    t.add_argument("--tenant", default="t_lab", help="tenant_id claim (default: t_lab)")
    t.add_argument("--user", default="u_lab", help="sub claim, the user id (default: u_lab)")
    t.add_argument("--roles", type=_roles, default=["member"], metavar="ROLE[,ROLE]",
                   help=f"comma-separated, from {', '.join(ROLE_RANK)} (default: member)")
    t.add_argument("--system", action="store_true", help="add the system claim (operator scope)")
    t.add_argument("--agent", metavar="ID", help="agent_id claim (default: none)")
    t.add_argument("--project", metavar="ID", help="project_id claim (default: none)")
    t.add_argument("--mode", choices=MODES, help="mode claim (default: the configured mode)")
    t.add_argument("--ttl", type=int, default=30 * 24 * 3600, metavar="SECONDS",
                   help="lifetime in seconds (default: 2592000, 30 days)")
    t.set_defaults(func=cmd_token)

    r = command("routes", "show or set routes in the durable registry")
    r.add_argument("action", choices=["show", "set"], nargs="?", default="show",
                   help="show (default) or set")
    r.add_argument("--kind", choices=RESOURCE_KINDS, metavar="KIND",
                   help=f"resource kind to set, one of: {', '.join(RESOURCE_KINDS)}")
    r.add_argument("--connection", help="a connection named in the configuration")
    r.add_argument("--table", help="table / container / collection name in it (default: the kind)")
    r.add_argument("--options", metavar="JSON",
                   help="JSON object: max_value_bytes, default_ttl_seconds, canvas_limits (default: {})")
    r.add_argument("--tenant", metavar="TENANT_ID", help="a per-tenant override (default: deployment-wide)")
    r.add_argument("--expected-version", type=int, metavar="N",
                   help="the version this replaces (default: set unconditionally)")
    r.add_argument(
        "--force",
        action="store_true",
        help="store the route even though the table serving the kind now holds its data (left behind)",
    )
    r.set_defaults(func=cmd_routes)

    kinds = (*RESOURCE_KINDS, REGISTRY_KIND)
    v = command("provision", "create tables/containers/indexes/TTL settings for routed backends")
    v.add_argument("--dry-run", action="store_true", help="print the plan; create and change nothing")
    v.add_argument("--kind", choices=kinds, metavar="KIND",
                   help=f"only this kind (default: all), one of: {', '.join(kinds)}")
    v.set_defaults(func=cmd_provision)

    d = command("doctor", "check configuration, secrets, routes, backends and clock; say what to fix")
    d.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="time allowed for each backend or endpoint check (default: 5)")
    d.set_defaults(func=cmd_doctor)

    x = command("export", "write a tenant's archive (every item of every kind), or one user's data")
    x.add_argument("--tenant", required=True, metavar="TENANT_ID", help="the tenant to export")
    x.add_argument("--out", metavar="FILE",
                   help="the archive file; an unfinished one is resumed after its last mark "
                   "(default: standard output, not resumable)")
    x.add_argument(
        "--user",
        metavar="USER_ID",
        help="only this user's data (their notes, memory, chat messages, events…), as JSON lines",
    )
    x.set_defaults(func=cmd_export)

    i = command("import", "write a tenant's archive into this deployment (the tenant must hold nothing)")
    i.add_argument("--tenant", required=True, metavar="TENANT_ID", help="the tenant of the archive")
    i.add_argument("--in", dest="input", required=True, metavar="FILE", help="the archive file")
    i.add_argument("--resume", action="store_true",
                   help="continue an import that stopped: items already written must be identical")
    i.set_defaults(func=cmd_import)

    e = command("erase", "delete a tenant's data for good (the tenant is retired), or one user's (--user)")
    e.add_argument("--tenant", required=True, metavar="TENANT_ID", help="the tenant to erase")
    e.add_argument("--user", metavar="USER_ID",
                   help="erase this user of the tenant only (needs [data_keys]); --confirm repeats it")
    e.add_argument(
        "--confirm", required=True, metavar="ID", help="the tenant id again (the user id with --user)"
    )
    e.set_defaults(func=cmd_erase)

    g = command(
        "migrate",
        "move kinds' data to a table on another connection while they are served; then release "
        "(delete the old copy) or roll back",
    )
    g.add_argument("action", choices=["run", "status", "rollback", "release"], nargs="?", default="run",
                   help="run (default: start or resume, until the new table serves), status, "
                   "rollback, release")
    g.add_argument("--kind", action="append", choices=RESOURCE_KINDS, metavar="KIND",
                   help="a kind to move; repeat it for every kind routed to the same table")
    g.add_argument("--to", metavar="CONNECTION", help="the connection to move to (from the configuration)")
    g.add_argument("--table", help="the table / container / collection there (default: the first kind)")
    g.add_argument("--tenant", metavar="TENANT_ID", help="move this tenant only (default: every tenant "
                   "without an override of its own)")
    g.add_argument("--fence-seconds", type=float, default=DEFAULT_FENCE_SECONDS, metavar="S",
                   help="how often serving processes re-read the routes during the migration "
                   f"(default: {DEFAULT_FENCE_SECONDS:g})")
    g.add_argument("--settle-seconds", type=float, default=DEFAULT_SETTLE_SECONDS, metavar="S",
                   help="the longest a write may take during the migration "
                   f"(default: {DEFAULT_SETTLE_SECONDS:g})")
    g.set_defaults(func=cmd_migrate)

    o = command("openapi", "write the OpenAPI schema to contracts/openapi.json")
    o.add_argument("--output", default=str(OPENAPI_FILE), metavar="FILE",
                   help="where to write it (default: contracts/openapi.json of the checkout)")
    o.add_argument("--check", action="store_true", help="fail if the file is out of date")
    o.set_defaults(func=cmd_openapi)
    return p


def _quiet_stdout() -> None:
    # Python flushes stdout again at exit, which would raise (and print) once more.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (captured, replaced): nothing to flush
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        return _fail(f"configuration: {exc}")
    except ModuleNotFoundError as exc:
        # A lab-only install (./scripts/serve) has no cloud SDK: say which extra brings it.
        return _fail(f"{exc}: a backend's SDK is not installed; install its extra, e.g. "
                     "pip install 'northstar[dynamodb]' (or [firestore], [cosmos]; ./scripts/test "
                     "installs all)")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`northstar routes | head`): not an error of ours
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    return result


if __name__ == "__main__":
    raise SystemExit(main())
