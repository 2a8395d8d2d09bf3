"""Partition names: every partition begins with the tenant and mode it belongs to.

Because the identity scope is part of every partition name, a read made within one tenant's
context physically cannot address another tenant's items (SPEC §2.5).
"""

from __future__ import annotations

from northstar_core.errors import NorthstarError
from northstar_core.identity import ID_PATTERN, RequestContext


def check_id(domain: str, field: str, value: str) -> str:
    """Validate a path/body identifier (422 ``<domain>.invalid_id`` if malformed)."""
    if not ID_PATTERN.match(value):
        raise NorthstarError(
            f"{domain}.invalid_id",
            f"'{field}' must match {ID_PATTERN.pattern}",
            422,
            details={"field": field, "value": value[:200]},
        )
    return value


def partition(ctx: RequestContext, *parts: str) -> str:
    """``<tenant>|<mode>|<part>|…`` — parts must already be validated ids."""
    return "|".join((ctx.tenant_id, ctx.mode, *parts))
