"""``northstar doctor``: can this deployment run, and if not, what to fix.

Each check prints one line — ``ok``, ``note`` (nothing wrong, worth knowing), ``warn`` or
``FAIL`` — and the last two a ``fix:`` line. The command exits 1 when any check failed.

1. **configuration** — the file and the ``NORTHSTAR_*`` variables load, and are complete for
   the mode: exactly the rules ``northstar serve`` applies before it listens.
2. **secrets** — lab: ``secrets.json`` present and private; the cursor secret at least 16
   bytes, an HS256 secret at least 32 (RFC 7518 §3.2); a JWKS file that parses; a token minted
   now with this configuration verifies with it (signature, audience, issuer, and its
   ``iat``/``nbf``/``exp`` against this machine's clock).
3. **routes** — the routing registry is readable; every required kind is routed (durable or
   configured); every route names a configured connection; no lab-only backend outside lab.
4. **backends** — for each connection and table the routes use: reachable, provisioned
   (DynamoDB table and key schema, Cosmos container, SQLite file), and the TTL settings where
   the backend tells (DynamoDB TTL on ``ttl``, Cosmos default TTL, the Firestore TTL policy
   on a real project; the emulators enforce none), plus the Firestore index file.
5. **clock** — this machine's clock against the ``Date`` header of each remote endpoint that
   is configured (the backends' endpoints, the JWKS URL), which has one-second resolution:
   tokens' ``exp``/``nbf`` are checked with this clock, within ``jwt.leeway_seconds``. With no
   remote endpoint (lab on SQLite) there is nothing to compare with, and the doctor says so:
   then only check 2 (a freshly minted token verifies) speaks for the clock.

The doctor creates nothing: no data dir, secret, file or table. It reads; a SQLite registry is
opened only if its file exists.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from northstar_adapters.config import (
    CONFIG_FILE_ENV,
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    ConfigError,
    Settings,
    connections,
    finalize,
    lab_secrets_file,
    load_settings,
)
from northstar_core.errors import NorthstarError
from northstar_core.routing import LAB_ONLY_BACKENDS, RESOURCE_KINDS, Connection, Route, Target

MIN_CURSOR_SECRET_BYTES: Final = 16
MIN_HS256_SECRET_BYTES: Final = 32
# A `Date` header has one-second resolution: differences this small are not measurable.
CLOCK_RESOLUTION: Final = 1.0
PROVISION_FIX: Final = "northstar provision --kind {kind}"


@dataclass
class Finding:
    level: str  # ok | note | warn | FAIL
    topic: str
    message: str
    fix: str | None = None


@dataclass
class Report:
    header: str = "northstar doctor"
    findings: list[Finding] = field(default_factory=list)

    def add(self, level: str, topic: str, message: str, fix: str | None = None) -> None:
        self.findings.append(Finding(level, topic, message, fix))

    @property
    def failed(self) -> bool:
        return any(f.level == "FAIL" for f in self.findings)

    def render(self) -> str:
        width = max((len(f.topic) for f in self.findings), default=0)
        lines = [self.header]
        for f in self.findings:
            lines.append(f"  {f.level:<4}  {f.topic:<{width}}  {f.message}")
            if f.fix:
                lines.append(f"  {'':<4}  {'':<{width}}  fix: {f.fix}")
        problems = sum(f.level == "FAIL" for f in self.findings)
        warnings = sum(f.level == "warn" for f in self.findings)
        if problems:
            lines.append(f"{problems} problem(s), {warnings} warning(s): fix the FAIL lines above")
        elif warnings:
            lines.append(f"no problems, {warnings} warning(s)")
        else:
            lines.append("no problems found")
        return "\n".join(lines)


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _config_source(config_file: str | None, environ: Mapping[str, str]) -> str:
    chosen = config_file or environ.get(CONFIG_FILE_ENV)
    if chosen:
        return str(Path(chosen).resolve())
    default = Path(DEFAULT_CONFIG_FILE)
    return str(default.resolve()) if default.is_file() else "none (built-in defaults)"


async def diagnose(
    config_file: str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    check_seconds: float = 5.0,
) -> Report:
    """Run every check (see the module doc); never raises for what it finds. Each backend
    or endpoint gets ``check_seconds`` to answer."""
    environ = os.environ if environ is None else environ
    report = Report()
    # 1. configuration
    try:
        raw = load_settings(config_file, environ=environ, overrides=overrides)
        settings = finalize(raw, create=False)
    except ConfigError as exc:
        report.add("FAIL", "configuration", str(exc),
                   "correct what the message names (README: Configuration)")
        return report
    source = _config_source(config_file, environ)
    names = sorted(n for n in environ if n.startswith(ENV_PREFIX))
    report.header = f"northstar doctor: mode {settings.mode}, configuration file {source}"
    report.add("ok", "configuration",
               f"loads and is complete for mode {settings.mode}; environment: {', '.join(names) or 'none'}")
    _check_actions(settings, report)
    # 2. secrets
    _check_secrets(raw, settings, report)
    await _check_token(settings, report)
    # 3. routes
    routes = await _check_routes(settings, report, check_seconds)
    # 4. backends
    await _check_backends(settings, routes, report, check_seconds)
    # 5. clock (and the JWKS URL, fetched on the way)
    await _check_clock(settings, routes, report, check_seconds)
    return report


def _check_actions(settings: Settings, report: Report) -> None:
    try:
        from northstar_adapters.compose import action_handlers
    except ImportError:
        return
    if not getattr(settings, "actions", None):
        return
    try:
        action_handlers(settings)
    except ConfigError as exc:
        report.add("FAIL", "actions", str(exc), "correct the [[actions]] entries named above")
    else:
        report.add("ok", "actions", f"{len(settings.actions)} configured action handler(s) load")


# --- secrets ----------------------------------------------------------------------------------


def _check_secrets(raw: Settings, settings: Settings, report: Report) -> None:
    if settings.is_lab:
        path = lab_secrets_file(settings).resolve()
        uses_file = raw.cursor_secret is None or not (
            raw.jwt.hs256_secret or raw.jwt.jwks_file or raw.jwt.jwks_url
        )
        if path.is_file():
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                report.add("warn", "secrets", f"{path} is readable by other users (mode {mode:o})",
                           f"chmod 600 {path}")
            else:
                report.add("ok", "secrets", f"lab secrets in {path} (mode {mode:o})")
        elif uses_file:
            report.add("note", "secrets",
                       f"{path} does not exist yet: `northstar serve` generates the lab secrets there "
                       "on its first start (tokens minted before that would not verify)")
    cursor = settings.cursor_secret
    if cursor is not None and len(cursor.encode()) < MIN_CURSOR_SECRET_BYTES:
        report.add("FAIL", "cursor secret",
                   f"cursor_secret is {len(cursor.encode())} bytes; cursors need at least "
                   f"{MIN_CURSOR_SECRET_BYTES}", _NEW_SECRET_FIX.format(name="NORTHSTAR_CURSOR_SECRET"))
    secret = settings.jwt.hs256_secret
    if secret is not None and len(secret.encode()) < MIN_HS256_SECRET_BYTES:
        report.add("warn" if settings.is_lab else "FAIL", "jwt",
                   f"jwt.hs256_secret is {len(secret.encode())} bytes; HS256 needs at least "
                   f"{MIN_HS256_SECRET_BYTES} (RFC 7518 §3.2)",
                   _NEW_SECRET_FIX.format(name="NORTHSTAR_JWT_HS256_SECRET"))
    if settings.jwt.jwks_file:
        from northstar_http.auth import TokenVerifier

        try:
            TokenVerifier.from_jwks_file(settings.jwt.jwks_file)
        except Exception as exc:
            report.add("FAIL", "jwt", f"jwt.jwks_file {settings.jwt.jwks_file} is unusable: {_describe(exc)}",
                       "point jwt.jwks_file at a readable JWKS (JSON with RSA or EC keys)")
        else:
            report.add("ok", "jwt", f"jwt.jwks_file {settings.jwt.jwks_file} parses")


_NEW_SECRET_FIX: Final = (
    "set {name} to a new random value, e.g. "
    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
)


async def _check_token(settings: Settings, report: Report) -> None:
    if not settings.jwt.hs256_secret:
        if settings.jwt.jwks_file or settings.jwt.jwks_url:
            report.add("note", "tokens", "signed by the identity provider (JWKS): none minted here")
        return
    from northstar_http.bootstrap import build_verifier
    from northstar_http.tokens import mint_token

    ttl = 300
    token = mint_token(settings.jwt.hs256_secret, tenant_id="t_doctor", sub="u_doctor", mode=settings.mode,
                       ttl_seconds=ttl, audience=settings.jwt.audience, issuer=settings.jwt.issuer)
    try:
        await build_verifier(settings).verify(token)
    except NorthstarError as exc:
        report.add("FAIL", "tokens", f"a token minted now does not verify: {exc.code} {exc.details}",
                   "check jwt.audience, jwt.issuer and jwt.leeway_seconds")
    except Exception as exc:
        report.add("FAIL", "tokens", f"a token minted now does not verify: {_describe(exc)}",
                   "check the [jwt] section")
    else:
        report.add("ok", "tokens",
                   f"a token minted now (iat = nbf = now, exp = now + {ttl} s) verifies with this "
                   f"configuration (leeway {settings.jwt.leeway_seconds:g} s)")


# --- routes -----------------------------------------------------------------------------------


def _missing_file(path: Any) -> bool:
    return isinstance(path, str) and not Path(path).exists()


async def _check_routes(settings: Settings, report: Report, check_seconds: float) -> list[Route]:
    """The effective routes: durable ones, plus configured ones the next serve would seed."""
    from northstar_adapters.compose import registry_target
    from northstar_http.cli import open_registry

    target = registry_target(settings)
    where = f"connection {settings.registry.connection!r}" if settings.registry else "?"
    path = target.params.get("path")
    stored: list[Route] = []
    if target.backend == "sqlite" and _missing_file(path):
        report.add("note" if settings.is_lab else "FAIL", "registry",
                   f"{path} does not exist yet (nothing was served there): `northstar serve` creates it")
    else:
        try:
            registry = await asyncio.wait_for(open_registry(settings), check_seconds)
        except ImportError as exc:
            report.add("FAIL", "registry", f"the {target.backend} SDK is not installed ({exc})",
                       f"pip install 'northstar[{target.backend}]'")
        except Exception as exc:
            report.add("FAIL", "registry",
                       f"the routing registry ({where}) is not readable: {_describe(exc)}",
                       f"check {where}; `northstar provision --kind routing_registry` creates its table")
        else:
            stored = [r for r, _ in registry.routes()]
            await registry.close()
            report.add("ok", "registry",
                       f"readable ({where}, table {target.table}): {len(stored)} durable route(s)")
    keys = {(r.resource_kind, r.tenant_id) for r in stored}
    seeded = [r for r in settings.routes if (r.resource_kind, r.tenant_id) not in keys]
    routes = [*stored, *seeded]
    known = connections(settings)
    deployment = {r.resource_kind for r in routes if r.tenant_id is None}
    unrouted = [k for k in RESOURCE_KINDS if k not in deployment]
    if unrouted:
        report.add("warn" if settings.is_lab else "FAIL", "routes", f"unrouted: {', '.join(unrouted)}",
                   'add [[routes]] for them, or default_connection = "<connection>" to route every '
                   "unrouted kind there, or `northstar routes set --kind K --connection C`")
    problems = 0
    for route in routes:
        who = route.resource_kind + (f" (tenant {route.tenant_id})" if route.tenant_id else "")
        connection = known.get(route.connection)
        if connection is None:
            problems += 1
            report.add("FAIL", "routes",
                       f"{who} names connection {route.connection!r}, which is not configured",
                       f"add [connections.{route.connection}], or `northstar routes set --kind "
                       f"{route.resource_kind} --connection <configured>`")
        elif connection.backend in LAB_ONLY_BACKENDS and not settings.is_lab:
            problems += 1
            report.add("FAIL", "routes",
                       f"{who} is routed to lab-only backend {connection.backend!r} in mode {settings.mode}",
                       f"route {route.resource_kind} to a dynamodb, firestore or cosmos connection")
    if not problems and not unrouted:
        pending = f"; {len(seeded)} configured, seeded at the next serve" if seeded and stored else ""
        overrides = sum(r.tenant_id is not None for r in routes)
        report.add("ok", "routes", f"all {len(RESOURCE_KINDS)} kinds routed{pending}"
                   + (f"; {overrides} tenant override(s)" if overrides else ""))
    return routes


# --- backends ---------------------------------------------------------------------------------


def _targets(settings: Settings, routes: list[Route]) -> dict[tuple[str, ...], tuple[Target, list[str]]]:
    """One probe per physical store: (connection, table), or the connection for SQLite and
    memory (one file / one process for every table)."""
    from northstar_adapters.compose import registry_target

    known = connections(settings)
    out: dict[tuple[str, ...], tuple[Target, list[str]]] = {}
    entries: list[tuple[str, str, Target]] = []
    registry = registry_target(settings)
    if settings.registry is not None:
        entries.append((settings.registry.connection, "routing_registry", registry))
    for route in routes:
        connection = known.get(route.connection)
        if connection is None:
            continue
        target = connection.target(route.resource_kind, route.table_name)
        entries.append((route.connection, route.resource_kind, target))
    for name, kind, target in entries:
        key = (name,) if target.backend in LAB_ONLY_BACKENDS else (name, target.table_name)
        if key not in out:
            out[key] = (target, [])
        if kind not in out[key][1]:
            out[key][1].append(kind)
    return out


async def _check_backends(
    settings: Settings, routes: list[Route], report: Report, check_seconds: float
) -> None:
    targets = _targets(settings, routes)

    async def one(key: tuple[str, ...], target: Target, kinds: list[str]) -> list[Finding]:
        topic = "/".join(key)
        try:
            return await asyncio.wait_for(_probe(topic, target, kinds, settings), check_seconds)
        except TimeoutError:
            return [Finding("FAIL", topic, f"{target.backend}: no answer within {check_seconds:g} s",
                            "check the endpoint, the network and the credentials of this connection")]
        except ImportError as exc:
            return [Finding("FAIL", topic, f"the {target.backend} SDK is not installed ({exc})",
                            f"pip install 'northstar[{target.backend}]'")]
        except Exception as exc:
            return [Finding("FAIL", topic, f"{target.backend}: {_describe(exc)}",
                            "check this connection's settings and credentials")]

    results = await asyncio.gather(*(one(key, t, kinds) for key, (t, kinds) in targets.items()))
    for findings in results:
        report.findings.extend(findings)


def _kinds_text(kinds: list[str]) -> str:
    shown = ", ".join(kinds[:4]) + (f" and {len(kinds) - 4} more" if len(kinds) > 4 else "")
    return f"for {shown}"


def _provision_fix(target: Target, kinds: list[str]) -> str:
    """What creates the missing table/container/setting of ``target``: ``northstar provision``
    when its backend declares a provisioner (``AdapterFactory.provision``)."""
    from northstar_adapters import AdapterFactory

    if AdapterFactory().backend(target.backend).provision is None:
        return f"{target.backend} has nothing to provision: check this connection's settings"
    kind = next((k for k in kinds if k != "routing_registry"), kinds[0])
    return f"northstar provision (or --kind {kind})" if len(kinds) > 1 else PROVISION_FIX.format(kind=kind)


async def _probe(topic: str, target: Target, kinds: list[str], settings: Settings) -> list[Finding]:
    probe = {
        "memory": _probe_memory,
        "sqlite": _probe_sqlite,
        "dynamodb": _probe_dynamodb,
        "firestore": _probe_firestore,
        "cosmos": _probe_cosmos,
    }[target.backend]
    return await probe(topic, target, kinds, settings)


async def _probe_memory(topic: str, target: Target, kinds: list[str], settings: Settings) -> list[Finding]:
    return [Finding("note", topic, f"memory: per process, nothing persists ({_kinds_text(kinds)})")]


async def _probe_sqlite(topic: str, target: Target, kinds: list[str], settings: Settings) -> list[Finding]:
    return _sqlite_findings(topic, Path(str(target.params["path"])), kinds)


def _sqlite_findings(topic: str, path: Path, kinds: list[str]) -> list[Finding]:
    what = f"sqlite {path} ({_kinds_text(kinds)})"
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            return [Finding("FAIL", topic, f"{what}: not readable and writable by this user",
                            f"fix the owner or mode of {path}")]
        return [Finding("ok", topic, f"{what}: exists, writable")]
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is None or not os.access(parent, os.W_OK):
        return [Finding("FAIL", topic, f"{what}: does not exist and {parent} is not writable",
                        f"create {path.parent} writable by this user")]
    return [Finding("note", topic, f"{what}: does not exist yet; `northstar serve` creates it")]


async def _probe_dynamodb(topic: str, target: Target, kinds: list[str], settings: Settings) -> list[Finding]:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

    from northstar_adapters.dynamodb.provision import KEY_SCHEMA
    from northstar_adapters.dynamodb.store import TTL_ATTRIBUTE, DynamoConfig, _Client

    config = DynamoConfig.from_target(target)
    what = f"dynamodb table {config.table} ({_kinds_text(kinds)})"
    holder = _Client(config)
    try:
        client = await holder.open()
        try:
            table = (await client.describe_table(TableName=config.table))["Table"]
            described = await client.describe_time_to_live(TableName=config.table)
            ttl = described.get("TimeToLiveDescription", {})
        finally:
            await holder.close()
    except NoRegionError:
        return [Finding("FAIL", topic, f"{what}: no AWS region",
                        f"set region in [connections.{topic.split('/')[0]}], or AWS_REGION")]
    except NoCredentialsError:
        return [Finding("FAIL", topic, f"{what}: no AWS credentials",
                        "provide credentials through the SDK chain (environment, profile, role)")]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            return [Finding("FAIL", topic, f"{what}: the table does not exist",
                            _provision_fix(target, kinds))]
        return [Finding("FAIL", topic, f"{what}: {code or _describe(exc)}",
                        "check the IAM permissions (DescribeTable, DescribeTimeToLive and the data calls)")]
    except (BotoCoreError, OSError) as exc:
        return [Finding("FAIL", topic, f"{what}: unreachable ({_describe(exc)})",
                        "check endpoint_url / region and the network")]
    findings = []
    if sorted(map(str, table.get("KeySchema", []))) != sorted(map(str, KEY_SCHEMA)):
        schema = table.get("KeySchema")
        findings.append(Finding("FAIL", topic, f"{what}: key schema {schema}, need {KEY_SCHEMA}",
                                "route these kinds to another table; this one was not made by provision"))
    status = table.get("TableStatus")
    state = ttl.get("TimeToLiveStatus", "DISABLED")
    attribute = ttl.get("AttributeName", TTL_ATTRIBUTE)
    if state not in ("ENABLED", "ENABLING") or attribute != TTL_ATTRIBUTE:
        findings.append(Finding("FAIL", topic,
                                f"{what}: TTL is {state.lower()} on '{attribute}' (need it enabled on "
                                f"'{TTL_ATTRIBUTE}': expired items are hidden but never deleted)",
                                _provision_fix(target, kinds)))
    if status != "ACTIVE":
        findings.append(Finding("warn", topic, f"{what}: status {status}", "wait for it to become ACTIVE"))
    if not findings:
        findings.append(Finding("ok", topic, f"{what}: reachable, ACTIVE, TTL on '{TTL_ATTRIBUTE}' enabled"))
    return findings


async def _probe_firestore(topic: str, target: Target, kinds: list[str], settings: Settings) -> list[Finding]:
    from northstar_adapters import AdapterFactory
    from northstar_adapters.firestore.provision import (
        DEFAULT_INDEX_FILE,
        _ttl_state,
        _uses_emulator,
        write_index_file,
    )
    from northstar_adapters.params import FirestoreParams, parse

    params = parse(FirestoreParams, target.params)
    what = f"firestore {params.collection_prefix}{target.table_name} ({_kinds_text(kinds)})"
    store = AdapterFactory().open(target)
    try:
        await store.ping()
    except NorthstarError as exc:
        return [Finding("FAIL", topic, f"{what}: {exc.code}: {exc.message}",
                        "check project / emulator_host and the credentials (ADC)")]
    finally:
        await store.close()
    findings = [Finding("ok", topic, f"{what}: reachable")]
    index = write_index_file(Path(params.index_file or DEFAULT_INDEX_FILE), dry_run=True)
    if not index.endswith("up to date"):
        findings.append(Finding("FAIL", topic, f"{index}", "northstar provision, then deploy the index file"))
    if _uses_emulator(params):
        findings.append(Finding("note", topic, "emulator: TTL policy and indexes are not enforced there"))
        return findings
    project = params.project or os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not project:
        findings.append(Finding("warn", topic, "no project configured: the TTL policy cannot be checked",
                                "set project in the connection"))
        return findings
    try:
        _, _, state = await _ttl_state(str(project), params.database)
    except Exception as exc:
        findings.append(Finding("warn", topic, f"TTL policy not readable: {_describe(exc)}",
                                "grant datastore.indexes.get, or check it with gcloud"))
    else:
        if state not in ("ACTIVE", "CREATING"):
            findings.append(Finding("FAIL", topic, f"TTL policy on items.expires_at is {state}",
                                    _provision_fix(target, kinds)))
    return findings


async def _probe_cosmos(topic: str, target: Target, kinds: list[str], settings: Settings) -> list[Finding]:
    from azure.core.exceptions import AzureError
    from azure.cosmos import exceptions as cosmos_exc

    from northstar_adapters import AdapterFactory

    store: Any = AdapterFactory().open(target)
    what = f"cosmos container {store.config.database}/{store.config.container} ({_kinds_text(kinds)})"
    try:
        properties = await store.container.read()
    except cosmos_exc.CosmosResourceNotFoundError:
        return [Finding("FAIL", topic, f"{what}: does not exist", _provision_fix(target, kinds))]
    except (AzureError, OSError, NorthstarError) as exc:
        return [Finding("FAIL", topic, f"{what}: unreachable ({_describe(exc)})",
                        "check url, key_env (or Entra ID) and the network")]
    finally:
        await store.close()
    ttl = properties.get("defaultTtl")
    if ttl is None:
        return [Finding("FAIL", topic, f"{what}: TTL is off (no defaultTtl): expired items are never deleted",
                        f"az cosmosdb sql container update --ttl -1 … --name {store.config.container}")]
    return [Finding("ok", topic, f"{what}: reachable, default TTL {ttl}")]


# --- clock ------------------------------------------------------------------------------------


def _references(settings: Settings, routes: list[Route]) -> list[tuple[str, str]]:
    """(what, URL) of the remote endpoints this deployment talks to."""
    known = connections(settings)
    used = {r.connection for r in routes}
    if settings.registry is not None:
        used.add(settings.registry.connection)
    refs: list[tuple[str, str]] = []
    for name in sorted(used):
        connection = known.get(name)
        if connection is not None:
            url = _endpoint(connection)
            if url:
                refs.append((f"connection {name}", url))
    if settings.jwt.jwks_url:
        refs.append(("jwt.jwks_url", settings.jwt.jwks_url))
    return refs


def _endpoint(connection: Connection) -> str | None:
    params = connection.params
    if connection.backend == "dynamodb":
        if params.get("endpoint_url"):
            return str(params["endpoint_url"])
        region = params.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return f"https://dynamodb.{region}.amazonaws.com" if region else None
    if connection.backend == "cosmos":
        return str(params["url"]) if params.get("url") else None
    if connection.backend == "firestore":
        host = params.get("emulator_host") or os.environ.get("FIRESTORE_EMULATOR_HOST")
        return f"http://{host}" if host else "https://firestore.googleapis.com"
    return None


async def _check_clock(settings: Settings, routes: list[Route], report: Report, check_seconds: float) -> None:
    import httpx

    refs = _references(settings, routes)
    if not refs:
        report.add("note", "clock",
                   "not compared: no remote endpoint is configured to compare with (lab on SQLite); "
                   "the token check above shows only that exp/nbf agree with this clock. Keep it "
                   "synchronised (NTP) before accepting tokens from an identity provider")
        return
    leeway = settings.jwt.leeway_seconds
    async with httpx.AsyncClient(timeout=check_seconds, follow_redirects=False) as http:

        async def measure(what: str, url: str) -> None:
            before = time.time()
            try:
                response = await http.get(url)
            except httpx.HTTPError as exc:
                if what == "jwt.jwks_url":
                    report.add("FAIL", "jwt", f"jwt.jwks_url {url} unreachable: {_describe(exc)}",
                               "tokens cannot be verified (503 auth.jwks_unavailable): fix URL or network")
                else:
                    report.add("note", "clock", f"{what} ({url}) did not answer: not compared")
                return
            after = time.time()
            if what == "jwt.jwks_url":
                _check_jwks(url, response, report)
            date = response.headers.get("date")
            parsed = email.utils.parsedate_to_datetime(date) if date else None
            if parsed is None:
                report.add("note", "clock", f"{what} ({url}) sent no Date header: not compared")
                return
            # The server's clock was within [Date, Date + 1 s) when it answered, somewhere
            # between our `before` and `after`.
            skew = (before + after) / 2 - (parsed.timestamp() + CLOCK_RESOLUTION / 2)
            uncertainty = (after - before) / 2 + CLOCK_RESOLUTION / 2
            beyond = abs(skew) - uncertainty
            text = f"{skew:+.1f} s (± {uncertainty:.1f}) against {what} ({url})"
            if beyond <= CLOCK_RESOLUTION:
                report.add("ok", "clock", f"this clock is {text}")
            elif beyond <= leeway:
                report.add("warn", "clock", f"this clock is {text}: within jwt.leeway_seconds ({leeway:g})",
                           "synchronise the clock (NTP: chrony, systemd-timesyncd)")
            else:
                report.add("FAIL", "clock",
                           f"this clock is {text}: tokens' exp/nbf are judged wrongly by this much "
                           f"(jwt.leeway_seconds {leeway:g})",
                           "synchronise the clock (NTP: chrony, systemd-timesyncd)")

        tasks: list[Awaitable[None]] = [measure(what, url) for what, url in refs]
        await asyncio.gather(*tasks)


def _check_jwks(url: str, response: Any, report: Report) -> None:
    try:
        keys = response.json().get("keys") if response.status_code == 200 else None
    except ValueError:
        keys = None
    if not isinstance(keys, list) or not keys:
        report.add("FAIL", "jwt", f"jwt.jwks_url {url} answered {response.status_code} without a key set",
                   "point jwt.jwks_url at the identity provider's JWKS")
    else:
        report.add("ok", "jwt", f"jwt.jwks_url {url} serves {len(keys)} key(s)")
