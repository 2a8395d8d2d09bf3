"""Partition names: every partition begins with the tenant and mode it belongs to.

Because the identity scope is part of every partition name, a read made within one tenant's
context physically cannot address another tenant's items (SPEC §2.5).
"""

from __future__ import annotations

import hashlib

from northstar_core.errors import NorthstarError
from northstar_core.identity import ID_PATTERN, RequestContext


def check_id(domain: str, field: str, value: str) -> str:
    """Validate a path/body identifier (422 ``<domain>.invalid_id`` if malformed)."""
    if not ID_PATTERN.fullmatch(value):
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


def project_segment(ctx: RequestContext) -> str:
    """The partition-name segment for the caller's project: its id, or ``~`` for none (``~`` is
    not a valid id, so "no project" never collides with a real one)."""
    return ctx.project_id or "~"


def subject_segment(user_id: str) -> str:
    """The partition-name segment for a token subject; the one encoding used everywhere.

    A plain id is its own segment. Anything else (``auth0|123``, an e-mail address) becomes
    ``~`` + its full SHA-256: ``~`` is outside the id grammar, so no plain id can equal a
    hashed segment, and two subjects share a segment only through a SHA-256 collision. (A
    hashed form that is itself a valid id would let one subject pick a name that lands in
    another's partition.)
    """
    if ID_PATTERN.fullmatch(user_id):
        return user_id
    return "~" + hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()


def subject_stream(subject_type: str, subject_id: str) -> str:
    """The stream id of a subject's server-written stream, e.g. ``canvas:c1``.

    The gate chain publishes ``safety_decision`` events for subject ``(type, id)`` here, and
    the canvas publishes ``op_committed``/``gesture`` on ``subject_stream("canvas", id)``.
    """
    return f"{subject_type}:{subject_id}"


def is_subject_stream(stream_id: str) -> bool:
    """Whether ``stream_id`` is reserved for server-written events (contains ``:``)."""
    return ":" in stream_id
