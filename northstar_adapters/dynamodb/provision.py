"""Provisioning: the table (pk S HASH, sk S RANGE, on-demand) and its native TTL on ``ttl``.

Idempotent: an existing table with the expected key schema and TTL already enabled on ``ttl``
are fine; a table with a different key schema, or TTL on another attribute, is an error (it
would silently break the adapter). ``dry_run`` returns the plan and calls nothing.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from northstar_adapters.dynamodb.errors import TRANSPORT_ERRORS, describe, error_code
from northstar_adapters.dynamodb.store import TTL_ATTRIBUTE, DynamoConfig, _Client
from northstar_core.routing import Target
from northstar_core.storage import BackendUnavailable

KEY_SCHEMA = [
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
]
ATTRIBUTES = [
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
]


class ProvisionError(RuntimeError):
    """The backend holds something incompatible with what the adapter needs."""


def plan(target: Target) -> list[str]:
    table = DynamoConfig.from_target(target).table
    return [
        f"dynamodb: ensure table {table} (pk S HASH, sk S RANGE, PAY_PER_REQUEST)",
        f"dynamodb: ensure TTL enabled on attribute '{TTL_ATTRIBUTE}' of {table}",
    ]


async def provision(target: Target, *, dry_run: bool) -> list[str]:
    """Create the target's table and enable TTL if needed; returns what was (or would be) done."""
    if dry_run:
        return plan(target)
    config = DynamoConfig.from_target(target)
    holder = _Client(config)
    try:
        client = await holder.open()
        try:
            return [
                await _ensure_table(client, config.table),
                await _ensure_ttl(client, config.table),
            ]
        finally:
            await holder.close()
    except TRANSPORT_ERRORS as exc:
        raise BackendUnavailable(f"dynamodb provision of {config.table}: {describe(exc)}") from exc


async def _ensure_table(client: Any, table: str) -> str:
    try:
        await client.create_table(
            TableName=table,
            KeySchema=KEY_SCHEMA,
            AttributeDefinitions=ATTRIBUTES,
            BillingMode="PAY_PER_REQUEST",
        )
        done = f"dynamodb: created table {table}"
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
        described = await client.describe_table(TableName=table)
        schema = described["Table"]["KeySchema"]
        if sorted(map(str, schema)) != sorted(map(str, KEY_SCHEMA)):
            raise ProvisionError(
                f"table {table} exists with key schema {schema}, need {KEY_SCHEMA}"
            ) from None
        done = f"dynamodb: table {table} exists"
    waiter = client.get_waiter("table_exists")
    await waiter.wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return done


async def _ensure_ttl(client: Any, table: str) -> str:
    described = await client.describe_time_to_live(TableName=table)
    ttl = described.get("TimeToLiveDescription", {})
    status = ttl.get("TimeToLiveStatus", "DISABLED")
    if status in ("ENABLED", "ENABLING"):
        if ttl.get("AttributeName") != TTL_ATTRIBUTE:
            raise ProvisionError(
                f"table {table} has TTL on '{ttl.get('AttributeName')}', need '{TTL_ATTRIBUTE}'"
            )
        return f"dynamodb: TTL on '{TTL_ATTRIBUTE}' of {table} already enabled"
    await client.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )
    return f"dynamodb: enabled TTL on '{TTL_ATTRIBUTE}' of {table}"


async def drop(target: Target) -> None:
    """Delete the target's table if it exists (tests and teardown only)."""
    config = DynamoConfig.from_target(target)
    holder = _Client(config)
    client = await holder.open()
    try:
        await client.delete_table(TableName=config.table)
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
    finally:
        await holder.close()
