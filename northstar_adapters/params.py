"""Each backend's connection settings, declared as strict msgspec Structs.

Connection params come only from the operator's configuration (``[connections.<name>]``); a
route names a connection and a table, nothing else. Every adapter converts its params with
:func:`parse` before opening anything, so an unknown or ill-typed setting is refused with the
field named (``ValueError``), and a credential can never be smuggled in as a param: the Structs
have no field for one. This module imports no SDK, so configuration can be checked without the
backends' packages installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec

# Prefixes become part of physical names (tables, containers, collections).
Prefix = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,40}$(?!\n)|^$(?!\n)", max_length=41)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=600)]
Attempts = Annotated[int, msgspec.Meta(ge=1, le=20)]
Delay = Annotated[float, msgspec.Meta(ge=0, le=60)]
# Host names / URLs are operator-supplied; they are still bounded and single-line.
Url = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$(?!\n)", max_length=2048)]
HostPort = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$(?!\n)", max_length=300)]
Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-()]{1,100}$(?!\n)")]
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Z_][A-Z0-9_]{0,100}$(?!\n)")]


class MemoryParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name = "default"  # stores are per process; connections with one name share data


class SqliteParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    busy_timeout_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] = 5000
    inline_reads: bool = True


class DynamoParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    endpoint_url: Url | None = None  # moto / DynamoDB Local only
    # None: AWS_REGION, then AWS_DEFAULT_REGION, then the profile's region
    region: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$(?!\n)")] | None = None
    table_prefix: Prefix = "northstar_"
    max_attempts: Attempts = 5
    base_delay: Delay = 0.05
    max_delay: Delay = 1.0
    connect_timeout: Seconds = 3.0
    read_timeout: Seconds = 10.0
    # No new attempt starts once this many seconds have passed since the first: a caller gets
    # its 503 within about retry_budget + read_timeout, however slow the failures are.
    retry_budget: Seconds = 20.0


class FirestoreParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    project: Name | None = None  # None: the SDK infers it (environment, ADC)
    database: Name = "(default)"
    collection_prefix: Prefix = "northstar_"
    emulator_host: HostPort | None = None
    timeout_seconds: Seconds = 10.0
    max_attempts: Attempts = 5
    index_file: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None


class CosmosParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: Url
    database: Name = "northstar"
    container_prefix: Prefix = "northstar_"
    key_env: EnvName = "COSMOS_KEY"  # the environment variable holding the account key


PARAMS: Final[dict[str, type[msgspec.Struct]]] = {
    "memory": MemoryParams,
    "sqlite": SqliteParams,
    "dynamodb": DynamoParams,
    "firestore": FirestoreParams,
    "cosmos": CosmosParams,
}

P = TypeVar("P", bound=msgspec.Struct)


def parse(kind: type[P], params: Mapping[str, Any]) -> P:
    """``params`` as ``kind``, strictly (no coercion); ``ValueError`` naming the field."""
    try:
        return msgspec.convert(dict(params), type=kind, strict=True)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None


def check(backend: str, params: Mapping[str, Any]) -> None:
    """Validate a connection's params for ``backend``; ``ValueError`` if unknown or invalid."""
    kind = PARAMS.get(backend)
    if kind is None:
        raise ValueError(f"unknown backend {backend!r} (known: {', '.join(sorted(PARAMS))})")
    parse(kind, params)
