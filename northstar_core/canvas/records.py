"""Artifacts and audits of a canvas: durable records beside its command log.

Each canvas has one :class:`~northstar_core.kernel.streams.SequencedStream` of artifacts and
one of audits (partitions ``…|canvas|<canvas_id>|artifacts`` / ``…|audits``). A record holds a
URI or a small inline body (whose ``sha256`` content hash is computed here), is idempotent by
key, and is announced on the spine as ``canvas.<type>_recorded``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Final

import msgspec

from northstar_core.canvas.model import (
    DOMAIN,
    KIND,
    KIND_PATTERN,
    CanvasLimits,
    CanvasRecord,
    RecordIn,
    RecordType,
    resolve_limits,
    size_of,
)
from northstar_core.clock import Clock, iso
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError, cursor_invalid
from northstar_core.identity import RequestContext
from northstar_core.kernel.idempotency import fingerprint
from northstar_core.kernel.paging import Page, page_of
from northstar_core.kernel.streams import SequencedStream, seq_of
from northstar_core.ports import AuditSink
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import check_id, partition

MAX_PAGE: Final = 500
HASH_PATTERN: Final = re.compile(r"^sha256:[0-9a-f]{64}$")


class CanvasRecords:
    """Artifact and audit records of canvases (see module doc)."""

    def __init__(
        self,
        registry: RoutingRegistry,
        cursors: CursorCodec,
        clock: Clock,
        *,
        audit: AuditSink,
        limits: CanvasLimits,
    ) -> None:
        self.registry = registry
        self.cursors = cursors
        self.clock = clock
        self.audit = audit
        self.limits = limits

    async def _stream(
        self, ctx: RequestContext, canvas_id: str, record_type: RecordType
    ) -> tuple[SequencedStream, CanvasLimits]:
        check_id(DOMAIN, "canvas_id", canvas_id)
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        stream = SequencedStream(store, partition(ctx, "canvas", canvas_id, f"{record_type}s"), DOMAIN)
        return stream, resolve_limits(self.limits, store.options.canvas_limits)

    def _cursor(self, ctx: RequestContext, canvas_id: str, record_type: str, seq: int) -> str:
        return self.cursors.encode(DOMAIN, ctx.tenant_id, ctx.mode, f"{canvas_id}/{record_type}s", str(seq))

    async def add(
        self, ctx: RequestContext, canvas_id: str, record_type: RecordType, record: RecordIn
    ) -> tuple[CanvasRecord, bool]:
        """Store an artifact or audit record durably (idempotent by key); the content hash of an
        inline body is computed here. Emits a ``canvas.<type>_recorded`` audit on the spine
        (again on a replay, so an audit lost to a spine outage is recorded by the retry).
        Returns the record and whether it is a replay."""
        ctx.require_role("member")
        stream, limits = await self._stream(ctx, canvas_id, record_type)
        body_bytes = self._validate(record, limits)
        content_hash = record.content_hash
        if body_bytes is not None:
            computed = "sha256:" + hashlib.sha256(body_bytes).hexdigest()
            if content_hash is not None and content_hash != computed:
                raise NorthstarError(
                    f"{DOMAIN}.content_hash_mismatch",
                    "content_hash does not match the body",
                    422,
                    details={"presented": content_hash, "computed": computed},
                )
            content_hash = computed
        now = self.clock.now()
        prefix = "art" if record_type == "artifact" else "aud"

        built: dict[int, CanvasRecord] = {}

        def build(first: int) -> list[bytes]:
            built[first] = CanvasRecord(
                record_id=f"{prefix}_{first}",
                record_type=record_type,
                canvas_id=canvas_id,
                kind=record.kind,
                uri=record.uri,
                body=record.body,
                body_encoding=record.body_encoding,
                media_type=record.media_type,
                content_hash=content_hash,
                size=len(body_bytes) if body_bytes is not None else None,
                metadata=record.metadata,
                actor_id=ctx.user_id,
                created_at=iso(now),
                tenant_id=ctx.tenant_id,
                mode=ctx.mode,
                project_id=ctx.project_id,
                surface_id=ctx.surface_id,
                run_id=ctx.run_id,
            )
            return [msgspec.json.encode(built[first])]

        payload = msgspec.to_builtins(record)
        payload.pop("idempotency_key", None)
        payload["actor_id"] = ctx.user_id
        done = await stream.append(
            build,
            now=now,
            idempotency_key=record.idempotency_key,
            payload_fingerprint=fingerprint(payload),
        )
        if done.replayed:
            items = await stream.read(done.first_seq - 1, 1)
            assert items  # stored by the first request with this key
            stored = msgspec.json.decode(items[0].value, type=CanvasRecord)
        else:
            stored = built[done.first_seq]
        # Emitted on replays too: if the spine was down when the record was written, the
        # client's retry is what gets the audit recorded (at least once, never dropped; a
        # duplicate names the same record_id and says it is a replay).
        await self.audit.audit(
            ctx,
            f"canvas.{record_type}_recorded",
            {
                "canvas_id": canvas_id,
                "record_id": stored.record_id,
                "kind": stored.kind,
                "content_hash": stored.content_hash,
                "uri": stored.uri,
                "replayed": done.replayed,
            },
        )
        return stored, done.replayed

    def _validate(self, record: RecordIn, limits: CanvasLimits) -> bytes | None:
        def bad(message: str, field: str) -> NorthstarError:
            return NorthstarError(f"{DOMAIN}.invalid_request", message, 422, details={"field": field})

        if not KIND_PATTERN.fullmatch(record.kind):
            raise bad(f"kind must match {KIND_PATTERN.pattern}", "kind")
        if (record.uri is None) == (record.body is None):
            raise bad("give exactly one of uri or body", "uri")
        if record.uri is not None and not 1 <= len(record.uri) <= 2048:
            raise bad("uri must be 1 to 2048 characters", "uri")
        if record.idempotency_key is not None:
            check_id(DOMAIN, "idempotency_key", record.idempotency_key)
        if record.media_type is not None and len(record.media_type) > 200:
            raise bad("media_type is too long", "media_type")
        if record.content_hash is not None and not HASH_PATTERN.fullmatch(record.content_hash):
            raise bad("content_hash must be sha256:<64 hex>", "content_hash")
        meta_size = size_of(record.metadata)
        if meta_size > limits.max_metadata_bytes:
            raise NorthstarError(
                f"{DOMAIN}.metadata_too_large",
                f"metadata may hold at most {limits.max_metadata_bytes} bytes",
                413,
                details={"limit": limits.max_metadata_bytes, "size": meta_size},
            )
        if record.body is None:
            return None
        if record.body_encoding == "base64":
            try:
                body = base64.b64decode(record.body, validate=True)
            except (binascii.Error, ValueError):
                raise bad("body is not valid base64", "body") from None
        else:
            body = record.body.encode()
        if len(body) > limits.max_inline_bytes:
            raise NorthstarError(
                f"{DOMAIN}.body_too_large",
                f"an inline body may hold at most {limits.max_inline_bytes} bytes; use a uri",
                413,
                details={"limit": limits.max_inline_bytes, "size": len(body)},
            )
        return body

    async def list(
        self,
        ctx: RequestContext,
        canvas_id: str,
        record_type: RecordType,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[CanvasRecord]:
        """Records in creation order after ``cursor``, paged (410 for a foreign cursor)."""
        if not 1 <= limit <= MAX_PAGE:
            raise NorthstarError(
                f"{DOMAIN}.invalid_request", f"limit must be between 1 and {MAX_PAGE}", 422,
                details={"limit": limit},
            )
        stream, _ = await self._stream(ctx, canvas_id, record_type)
        after = 0
        if cursor is not None:
            position = self.cursors.decode(
                DOMAIN, ctx.tenant_id, ctx.mode, f"{canvas_id}/{record_type}s", cursor
            )
            if not position.isdigit():
                raise cursor_invalid(DOMAIN, cursor, "malformed position")
            after = int(position)
            if after > 0 and after > await stream.head():
                raise cursor_invalid(DOMAIN, cursor, "cursor is ahead of the head")
        return page_of(
            await stream.read(after, limit + 1),
            limit,
            lambda item: self._cursor(ctx, canvas_id, record_type, seq_of(item.key)),
            lambda item: msgspec.json.decode(item.value, type=CanvasRecord),
            resume_from=self._cursor(ctx, canvas_id, record_type, after),
            stream=True,
        )


__all__ = ["CanvasRecords"]
