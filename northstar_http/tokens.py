"""Minting lab tokens (``northstar token``, the serve banner, tests)."""

from __future__ import annotations

import time
from typing import Any

import jwt


def mint_token(
    secret: str,
    *,
    tenant_id: str = "t_lab",
    sub: str = "u_lab",
    mode: str = "lab",
    roles: tuple[str, ...] | list[str] = ("member",),
    system: bool = False,
    agent_id: str | None = None,
    project_id: str | None = None,
    ttl_seconds: int = 30 * 24 * 3600,
    audience: str | list[str] | None = None,
    issuer: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """An HS256 token carrying the identity claims the service reads.

    ``audience`` (``aud``) must name the service's configured ``jwt.audience``; a service
    configured without one refuses tokens that carry an ``aud``. ``system`` is written only
    when set (the claim is either JSON ``true`` or absent).
    """
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "tenant_id": tenant_id,
        "mode": mode,
        "roles": list(roles),
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
    }
    if system:
        claims["system"] = True
    optional = {"agent_id": agent_id, "project_id": project_id, "aud": audience, "iss": issuer}
    for name, value in optional.items():
        if value is not None:
            claims[name] = value
    claims.update(extra or {})
    return jwt.encode(claims, secret, algorithm="HS256")
