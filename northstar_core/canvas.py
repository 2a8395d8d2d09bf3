"""The canvas (resource kind ``canvas_command_store``): a revisioned command log with snapshots.

A canvas is a set of *atoms* (``atom_id`` -> ``{kind, props}``) and their z-``order``. It
changes only by *commands* ``{base_rev, ops[], idempotency_key}``; the command log IS a
:class:`~northstar_core.kernel.streams.SequencedStream` (one per canvas and tenant), so a command's
revision is its sequence number and every rule comes from there:

* **atomic commit at head+1** — ``append(expected_head=base_rev)`` writes ``s#<rev>`` under an
  ``Absent`` condition: of N writers on one ``base_rev`` exactly one commits; the others get
  409 ``canvas.rev_conflict`` with the commands they missed (``recovery_ops``);
* **idempotency** — the key's record commits in the same batch as the command, so a retried
  command (lost response, server restart) returns the original result marked ``replayed`` and
  never creates a second revision; a different payload under the key is 422;
* **bounded snapshots** — every ``checkpoint_every`` revisions the full state at that revision
  is written *in the same atomic batch* as the command (``c#<rev>#<chunk>``), so a snapshot
  reads the latest checkpoint plus fewer than ``checkpoint_every`` commands, whatever the
  length of the history;
* **no SSE gap** — after a commit the command is published as ``op_committed`` on the canvas's
  event stream (``canvas:<id>``, kind ``event_stream``, possibly another backend) with
  :meth:`EventStreamService.publish_ordered`, keyed by revision and strictly in order. A crash
  between the two writes leaves revisions unpublished; the next command, snapshot, replay or
  subscription publishes them first, so a subscriber never sees a gap or a duplicate;
* **limits notices** — a command accepted under limits other than those last announced on the
  canvas stream (a route's ``canvas_limits`` changed) is preceded there by a ``system`` event
  ``limits_changed`` (see :meth:`CanvasService._announce_limits`).

Ops: ``create {atom_id, kind, props}``, ``update {atom_id, patch}`` (RFC 7386 JSON merge patch
on props), ``delete {atom_id}``, ``move {atom_id, index}`` (final z-order position). An op on a
missing atom, a create of an existing one, or a move out of range is 422 ``canvas.op_invalid``
with ``details.op_index``; nothing is written.

The actor is the token's user: a body ``actor_id`` that differs is refused with 403
``canvas.actor_mismatch`` (and audited), like every other identity contradiction (SPEC §2.6).

Gates: a command that can commit passes the gate chain as ``canvas_command`` right before the
atomic append (a deny is 403 and writes nothing); input errors, idempotent replays and
revision conflicts are answered before the gate, so they record no decision and charge no
budget. Gestures pass the ``canvas.gestures_enabled`` toggle, then the gate as
``canvas_gesture``. The gate is a constructor dependency (:class:`ActionGate`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncGenerator
from typing import Annotated, Any, Final, Literal, Protocol

import msgspec

from northstar_core.bounds import MAX_SEQ, check_int
from northstar_core.clock import Clock, iso
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError, cursor_invalid
from northstar_core.identity import ID_PATTERN, RequestContext
from northstar_core.kernel.idempotency import fingerprint
from northstar_core.kernel.paging import Page
from northstar_core.kernel.streams import HeadMoved, SequencedStream, seq_of
from northstar_core.ports import ActionGate, AuditSink
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import check_id, partition
from northstar_core.storage import Absent, Item, ItemStore, Op, Put
from northstar_core.timeline import EventStreamService, StreamEvent, subject_stream

KIND: Final = "canvas_command_store"
DOMAIN: Final = "canvas"
SERIES: Final = "op_committed"
# ``system`` notices on the canvas stream; each kind of notice is a numbered series.
SYSTEM_EVENT: Final = "system"
LIMITS_SERIES: Final = "system.limits"
_ANNOUNCED_SIZE: Final = 4096
CHECKPOINT_PREFIX: Final = "c#"
CHUNK_BYTES: Final = 250_000
MAX_PAGE: Final = 500
_CACHE_SIZE: Final = 256
_KIND_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.:\-/]{1,100}$")
_HASH_PATTERN: Final = re.compile(r"^sha256:[0-9a-f]{64}$")

log = logging.getLogger(__name__)


class ToggleSource(Protocol):
    """Where feature toggles are read (``ConfigService`` satisfies it)."""

    async def toggle(self, ctx: RequestContext, key: str, default: Any = None) -> Any: ...


Positive = Annotated[int, msgspec.Meta(ge=1)]


class CanvasLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Configurable limits; each has its own error code (see ``contracts/error_codes.json``).

    The service's defaults come from its constructor; a deployment overrides any of them per
    route (so per tenant too) with the ``canvas_limits`` object in the options of the
    ``canvas_command_store`` route. An unusable override is 503 ``canvas.route_misconfigured``.
    """

    max_ops_per_command: Positive = 200  # canvas.too_many_ops (422)
    max_props_bytes: Positive = 32_000  # canvas.props_too_large (413), per atom
    # canvas.command_too_large (413); capped so a command and its op_committed event fit one item
    max_command_bytes: Annotated[int, msgspec.Meta(ge=1, le=300_000)] = 200_000
    max_canvas_bytes: Positive = 1_000_000  # canvas.canvas_too_large (413); checkpoints fit one batch
    max_atoms: Positive = 10_000  # canvas.canvas_too_large (413)
    checkpoint_every: Positive = 64  # K: a snapshot reads < K commands after a checkpoint
    recovery_cap: Positive = 100  # recovery_ops beyond this: snapshot_required
    max_recovery_bytes: Positive = 1_000_000  # ... or beyond this much JSON: snapshot_required
    max_gesture_bytes: Positive = 8_000  # canvas.gesture_too_large (413)
    max_inline_bytes: Positive = 64_000  # canvas.body_too_large (413), artifacts/audits
    max_metadata_bytes: Positive = 16_000  # canvas.metadata_too_large (413)


# --- ops ---------------------------------------------------------------------------------------


class CreateOp(msgspec.Struct, frozen=True, tag="create", tag_field="op", forbid_unknown_fields=True):
    atom_id: str
    kind: str
    props: dict[str, Any] = {}


class UpdateOp(msgspec.Struct, frozen=True, tag="update", tag_field="op", forbid_unknown_fields=True):
    atom_id: str
    patch: dict[str, Any]


class DeleteOp(msgspec.Struct, frozen=True, tag="delete", tag_field="op", forbid_unknown_fields=True):
    atom_id: str


class MoveOp(msgspec.Struct, frozen=True, tag="move", tag_field="op", forbid_unknown_fields=True):
    atom_id: str
    index: int


CanvasOp = CreateOp | UpdateOp | DeleteOp | MoveOp


class CommandIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A command as sent; ``ops`` are checked one by one so an error can name its index."""

    base_rev: int
    ops: list[Any]
    idempotency_key: str | None = None
    correlation_id: str | None = None
    actor_id: str | None = None


class CommandRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One committed command (the durable log entry ``s#<rev>``)."""

    rev: int
    ops: list[CanvasOp]
    actor_id: str
    committed_at: float
    idempotency_key: str
    request_id: str | None = None
    run_id: str | None = None
    step_id: str | None = None
    trace_id: str | None = None

    def summary(self) -> dict[str, Any]:
        """The wire form used in ``recovery_ops`` and ``op_committed`` events."""
        return {
            "rev": self.rev,
            "ops": msgspec.to_builtins(self.ops),
            "actor_id": self.actor_id,
            "committed_at": iso(self.committed_at),
            "idempotency_key": self.idempotency_key,
        }


class Atom(msgspec.Struct, frozen=True):
    kind: str
    props: dict[str, Any]


class _Checkpoint(msgspec.Struct, frozen=True):
    rev: int
    atoms: dict[str, Atom]
    order: list[str]


class CommitResult(msgspec.Struct, frozen=True, kw_only=True):
    canvas_id: str
    head_rev: int
    applied_ops: int
    cursor: str | None
    replayed: bool = False


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    canvas_id: str
    head_rev: int
    atoms: dict[str, Atom]
    order: list[str]
    cursor: str


def _size(value: Any) -> int:
    return len(msgspec.json.encode(value))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: ``null`` removes a member, objects merge, others replace."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def op_invalid(index: int, reason: str, **details: Any) -> NorthstarError:
    return NorthstarError(
        f"{DOMAIN}.op_invalid",
        f"op {index} is invalid: {reason}",
        422,
        details={"op_index": index, "reason": reason, **details},
    )


class CanvasState:
    """The canvas at one revision; ``apply`` mutates, so callers copy shared states first."""

    __slots__ = ("atoms", "order", "rev", "sizes", "total")

    def __init__(self, rev: int, atoms: dict[str, Atom], order: list[str]) -> None:
        self.rev = rev
        self.atoms = atoms
        self.order = order
        self.sizes = {
            atom_id: _size(atom.props) + len(atom_id) + len(atom.kind) for atom_id, atom in atoms.items()
        }
        self.total = sum(self.sizes.values())

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot | dict[str, Any]) -> CanvasState:
        """A state from a snapshot (or its JSON form), e.g. a client's local copy."""
        snap = msgspec.convert(snapshot, Snapshot) if isinstance(snapshot, dict) else snapshot
        return cls(snap.head_rev, dict(snap.atoms), list(snap.order))

    def to_wire(self) -> dict[str, Any]:
        """``{head_rev, atoms, order}`` as JSON-able data (comparable with a snapshot)."""
        return {"head_rev": self.rev, "atoms": msgspec.to_builtins(self.atoms), "order": list(self.order)}

    def copy(self) -> CanvasState:
        clone = CanvasState.__new__(CanvasState)
        clone.rev, clone.atoms, clone.order = self.rev, dict(self.atoms), list(self.order)
        clone.sizes, clone.total = dict(self.sizes), self.total
        return clone

    def _set(self, atom_id: str, atom: Atom, size: int) -> None:
        self.total += size - self.sizes.get(atom_id, 0)
        self.atoms[atom_id] = atom
        self.sizes[atom_id] = size

    def apply(self, ops: list[CanvasOp], limits: CanvasLimits) -> None:
        """Apply ``ops`` in order or raise ``canvas.op_invalid`` naming the failing op."""
        for index, op in enumerate(ops):
            current = self.atoms.get(op.atom_id)
            if isinstance(op, CreateOp):
                if current is not None:
                    raise op_invalid(index, "atom already exists", atom_id=op.atom_id)
                size = _size(op.props)
                self._set(op.atom_id, Atom(op.kind, op.props), size + len(op.atom_id) + len(op.kind))
                self.order.append(op.atom_id)
                continue
            if current is None:
                raise op_invalid(index, "atom does not exist", atom_id=op.atom_id)
            if isinstance(op, UpdateOp):
                props = merge_patch(current.props, op.patch)
                size = _size(props)
                if size > limits.max_props_bytes:
                    raise _props_too_large(index, size, limits)
                self._set(op.atom_id, Atom(current.kind, props), size + len(op.atom_id) + len(current.kind))
            elif isinstance(op, DeleteOp):
                del self.atoms[op.atom_id]
                self.total -= self.sizes.pop(op.atom_id)
                self.order.remove(op.atom_id)
            else:
                if not 0 <= op.index < len(self.order):
                    raise op_invalid(
                        index, "index out of range", atom_id=op.atom_id, max_index=len(self.order) - 1
                    )
                self.order.remove(op.atom_id)
                self.order.insert(op.index, op.atom_id)
        if len(self.atoms) > limits.max_atoms or self.total > limits.max_canvas_bytes:
            raise NorthstarError(
                f"{DOMAIN}.canvas_too_large",
                "the command would make the canvas larger than allowed",
                413,
                details={
                    "max_atoms": limits.max_atoms,
                    "atoms": len(self.atoms),
                    "max_canvas_bytes": limits.max_canvas_bytes,
                    "canvas_bytes": self.total,
                },
            )


def _props_too_large(index: int, size: int, limits: CanvasLimits) -> NorthstarError:
    return NorthstarError(
        f"{DOMAIN}.props_too_large",
        f"op {index}: an atom's props may hold at most {limits.max_props_bytes} bytes",
        413,
        details={"op_index": index, "limit": limits.max_props_bytes, "size": size},
    )


def rebase(state: CanvasState, pending: list[CanvasOp]) -> list[CanvasOp]:
    """Rebase a client's ``pending`` ops onto ``state`` (the head after applying recovery ops).

    Ops whose target vanished (update/delete/move of a deleted atom) or that are now moot (a
    create of an atom someone else created) are dropped; a move index is clamped to the new
    order. Every kept op applies cleanly to ``state`` in order. ``state`` is not modified.
    """
    trial = state.copy()
    kept: list[CanvasOp] = []
    for op in pending:
        exists = op.atom_id in trial.atoms
        if isinstance(op, CreateOp) == exists:
            continue
        if isinstance(op, MoveOp):
            op = MoveOp(op.atom_id, min(max(op.index, 0), len(trial.order) - 1))
        trial.apply([op], _UNLIMITED)
        kept.append(op)
    return kept


def parse_ops(raw_ops: list[Any], limits: CanvasLimits) -> list[CanvasOp]:
    """Validate the shape of every op (422 ``canvas.op_invalid`` with its index) and limits."""
    if not raw_ops:
        raise NorthstarError(
            f"{DOMAIN}.invalid_request", "a command needs at least one op", 422, details={"field": "ops"}
        )
    if len(raw_ops) > limits.max_ops_per_command:
        raise NorthstarError(
            f"{DOMAIN}.too_many_ops",
            f"a command may hold at most {limits.max_ops_per_command} ops",
            422,
            details={"limit": limits.max_ops_per_command, "count": len(raw_ops)},
        )
    ops: list[CanvasOp] = []
    for index, raw in enumerate(raw_ops):
        try:
            op = msgspec.convert(raw, CanvasOp, strict=True)
        except msgspec.ValidationError as exc:
            raise op_invalid(index, str(exc)) from None
        if not ID_PATTERN.fullmatch(op.atom_id):
            raise op_invalid(index, f"atom_id must match {ID_PATTERN.pattern}")
        if isinstance(op, CreateOp):
            if not _KIND_PATTERN.fullmatch(op.kind):
                raise op_invalid(index, f"kind must match {_KIND_PATTERN.pattern}")
            size = _size(op.props)
            if size > limits.max_props_bytes:
                raise _props_too_large(index, size, limits)
        elif isinstance(op, UpdateOp):
            size = _size(op.patch)
            if size > limits.max_props_bytes:
                raise _props_too_large(index, size, limits)
        ops.append(op)
    return ops


# --- records (artifacts, audits) -----------------------------------------------------------


RecordType = Literal["artifact", "audit"]


class RecordIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An artifact or audit as sent: a URI, or a small inline body (``utf-8`` or ``base64``)."""

    kind: str
    uri: str | None = None
    body: str | None = None
    body_encoding: Literal["utf-8", "base64"] = "utf-8"
    media_type: str | None = None
    content_hash: str | None = None
    metadata: dict[str, Any] = {}
    idempotency_key: str | None = None


class CanvasRecord(msgspec.Struct, frozen=True, kw_only=True):
    record_id: str
    record_type: str
    canvas_id: str
    kind: str
    uri: str | None
    body: str | None
    body_encoding: str
    media_type: str | None
    content_hash: str | None
    size: int | None
    metadata: dict[str, Any]
    actor_id: str
    created_at: str
    tenant_id: str
    mode: str
    project_id: str | None = None
    surface_id: str | None = None
    run_id: str | None = None


# --- the service -------------------------------------------------------------------------------


class CanvasService:
    """Canvas use-cases (see module doc). Every dependency is explicit, so wiring is one line."""

    def __init__(
        self,
        registry: RoutingRegistry,
        cursors: CursorCodec,
        clock: Clock,
        *,
        events: EventStreamService,
        gate: ActionGate,
        audit: AuditSink,
        toggles: ToggleSource,
        limits: CanvasLimits | None = None,
    ) -> None:
        self.registry = registry
        self.cursors = cursors
        self.clock = clock
        self.events = events
        self.gate = gate
        self.audit = audit
        self.toggles = toggles
        self.limits = limits or CanvasLimits()
        self._cache: OrderedDict[tuple[str, str, int], CanvasState] = OrderedDict()
        # (tenant, mode, canvas) -> fingerprint of the limits known to be announced on its stream
        self._announced: OrderedDict[tuple[str, str, str], str] = OrderedDict()

    # --- plumbing --------------------------------------------------------------------------

    async def _log(self, ctx: RequestContext, canvas_id: str) -> SequencedStream:
        check_id(DOMAIN, "canvas_id", canvas_id)
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        return SequencedStream(store, partition(ctx, "canvas", canvas_id), DOMAIN)

    def limits_for(self, store: ItemStore) -> CanvasLimits:
        """The limits in force on ``store``'s route: the defaults with its ``canvas_limits``."""
        route = getattr(store, "route", None)
        raw = route.options.canvas_limits if route is not None else None
        if raw is None:
            return self.limits
        try:
            return msgspec.convert({**msgspec.structs.asdict(self.limits), **raw}, CanvasLimits)
        except (msgspec.ValidationError, TypeError) as exc:
            raise NorthstarError(
                f"{DOMAIN}.route_misconfigured",
                f"the route of '{KIND}' has an unusable 'canvas_limits' parameter: {exc}",
                503,
                details={"resource_kind": KIND, "param": "canvas_limits"},
                headers={"Retry-After": "30"},
            ) from None

    @staticmethod
    def stream_id(canvas_id: str) -> str:
        """The canvas's event stream (SSE, replay, gestures, safety decisions)."""
        return subject_stream("canvas", canvas_id)

    def _cache_key(self, log_: SequencedStream) -> tuple[str, str, int]:
        # The route and the store object are part of the key: a tenant re-routed elsewhere, or
        # a store reopened empty (memory), never sees a state cached from another store.
        route = getattr(log_.store, "route", None)
        inner = getattr(log_.store, "inner", log_.store)
        return (log_.partition, msgspec.json.encode(route).decode() if route is not None else "", id(inner))

    async def _read_checkpoint(self, log_: SequencedStream) -> CanvasState:
        last = await log_.store.query(log_.partition, CHECKPOINT_PREFIX, descending=True, limit=1)
        if not last:
            return CanvasState(0, {}, [])
        _, rev_text, chunk_text = last[0].key.split("#")
        chunks = [last[0]]
        if int(chunk_text) > 0:
            chunks = await log_.store.query(
                log_.partition, f"{CHECKPOINT_PREFIX}{rev_text}#", limit=int(chunk_text) + 1
            )
        checkpoint = msgspec.json.decode(b"".join(c.value for c in chunks), type=_Checkpoint)
        return CanvasState(checkpoint.rev, dict(checkpoint.atoms), list(checkpoint.order))

    def _checkpoint_ops(self, state: CanvasState) -> list[Op]:
        raw = msgspec.json.encode(_Checkpoint(state.rev, state.atoms, state.order))
        pieces = [raw[i : i + CHUNK_BYTES] for i in range(0, len(raw), CHUNK_BYTES)] or [b""]
        return [
            Put(f"{CHECKPOINT_PREFIX}{state.rev:016d}#{i:04d}", piece, condition=Absent())
            for i, piece in enumerate(pieces)
        ]

    async def _state(self, log_: SequencedStream) -> CanvasState:
        """The state at the current head: cached or checkpoint state + the commands after it."""
        key = self._cache_key(log_)
        state = self._cache.get(key)
        if state is None:
            state = await self._read_checkpoint(log_)
        page = max(self.limits_for(log_.store).checkpoint_every, 16)
        copied = False
        while True:
            items = await log_.read(state.rev, page)
            if items and not copied:
                state, copied = state.copy(), True
            for item in items:
                record = msgspec.json.decode(item.value, type=CommandRecord)
                state.apply(record.ops, _UNLIMITED)
                state.rev = record.rev
            if len(items) < page:
                break
        self._remember(key, state)
        return state

    def _remember(self, key: tuple[str, str, int], state: CanvasState) -> None:
        current = self._cache.get(key)
        if current is None or current.rev <= state.rev:
            self._cache[key] = state
        self._cache.move_to_end(key)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    async def _conflict(self, log_: SequencedStream, base_rev: int, head: int) -> NorthstarError:
        limits = self.limits_for(log_.store)
        items = await log_.read(base_rev, limits.recovery_cap)
        missed: list[dict[str, Any]] = []
        budget = limits.max_recovery_bytes
        for item in items:
            budget -= len(item.value)
            if budget < 0 and missed:  # a 409 body stays small; the client reloads instead
                break
            missed.append(msgspec.json.decode(item.value, type=CommandRecord).summary())
        return NorthstarError(
            f"{DOMAIN}.rev_conflict",
            f"base_rev {base_rev} is behind the head revision {head}; rebase on recovery_ops",
            409,
            details={
                "expected_rev": head,
                "base_rev": base_rev,
                "recovery_ops": missed,
                "snapshot_required": head - base_rev > len(missed),
            },
        )

    async def catch_up(self, ctx: RequestContext, canvas_id: str, head: int) -> str:
        """Publish every committed revision up to ``head`` not yet on the canvas stream (in
        order, each once) and return the cursor of revision ``head``'s ``op_committed``."""
        sid = self.stream_id(canvas_id)
        published = await self.events.published(ctx, sid, SERIES)
        if published < head:
            log_ = await self._log(ctx, canvas_id)
            while published < head:
                items = await log_.read(published, min(head - published, 100))
                if not items:
                    break
                for item in items:
                    record = msgspec.json.decode(item.value, type=CommandRecord)
                    origin = msgspec.structs.replace(
                        ctx,
                        user_id=record.actor_id,
                        request_id=record.request_id or "",
                        run_id=record.run_id,
                        step_id=record.step_id,
                        trace_id=record.trace_id,
                    )
                    await self.events.publish_ordered(
                        origin, sid, SERIES, record.summary(), series=SERIES, position=record.rev
                    )
                    published = record.rev
        cursor = await self.events.ordered_cursor(ctx, sid, SERIES, head)
        if cursor is None:  # published by a concurrent catch-up between our reads
            raise NorthstarError(
                f"{DOMAIN}.publish_pending", "the canvas stream is catching up; retry", 503,
                headers={"Retry-After": "1"},
            )
        return cursor

    async def _catch_up_quietly(self, ctx: RequestContext, canvas_id: str, head: int) -> str | None:
        """:meth:`catch_up` after a commit: the commit stands even if the stream is down (the
        next command, snapshot, replay or subscription publishes what is missing)."""
        try:
            return await self.catch_up(ctx, canvas_id, head)
        except NorthstarError as exc:
            log.warning("canvas %s: op_committed publish deferred: %s", canvas_id, exc.code)
            return None

    # --- commands --------------------------------------------------------------------------

    async def commit(self, ctx: RequestContext, canvas_id: str, command: CommandIn) -> CommitResult:
        """Commit ``command`` atomically at ``head_rev + 1`` (see module doc for every outcome)."""
        check_id(DOMAIN, "canvas_id", canvas_id)
        ctx.require_role("member")
        key = command.idempotency_key or command.correlation_id
        if key is None:
            raise NorthstarError(
                f"{DOMAIN}.invalid_request",
                "a command needs an idempotency_key (or correlation_id)",
                422,
                details={"field": "idempotency_key"},
            )
        if command.idempotency_key and command.correlation_id not in (None, command.idempotency_key):
            raise NorthstarError(
                f"{DOMAIN}.invalid_request",
                "idempotency_key and correlation_id differ",
                422,
                details={"field": "correlation_id"},
            )
        check_id(DOMAIN, "idempotency_key", key)
        if command.base_rev < 0:
            raise NorthstarError(
                f"{DOMAIN}.rev_invalid", "base_rev must be 0 or more", 422,
                details={"base_rev": command.base_rev},
            )
        # A revision beyond what a store can number never existed (and base_rev + 1 is written).
        check_int(DOMAIN, "base_rev", command.base_rev, lo=0, hi=MAX_SEQ - 1, code=f"{DOMAIN}.rev_invalid")
        log_ = await self._log(ctx, canvas_id)
        limits = self.limits_for(log_.store)
        ops = parse_ops(command.ops, limits)
        size = _size(ops)
        if size > limits.max_command_bytes:
            raise NorthstarError(
                f"{DOMAIN}.command_too_large",
                f"a command may hold at most {limits.max_command_bytes} bytes of ops",
                413,
                details={"limit": limits.max_command_bytes, "size": size},
            )
        await self._check_actor(ctx, canvas_id, command.actor_id)
        fp = fingerprint({"base_rev": command.base_rev, "ops": ops, "actor_id": ctx.user_id})
        prior = await log_.idempotent_result(key, fp)
        if prior is not None:
            return await self._replayed(ctx, canvas_id, prior.result)
        state = await self._state(log_)
        head = state.rev
        if command.base_rev > head:
            raise NorthstarError(
                f"{DOMAIN}.rev_invalid",
                f"base_rev {command.base_rev} is ahead of the head revision {head}",
                422,
                details={"base_rev": command.base_rev, "head_rev": head},
            )
        if command.base_rev < head:
            raise await self._conflict(log_, command.base_rev, head)
        new_state = state.copy()
        new_state.apply(ops, limits)
        rev = head + 1
        new_state.rev = rev
        # The gate decides whether a command that *can* commit may run: input errors, replays
        # and conflicts are answered without a gate decision (nothing recorded, nothing charged).
        await self.gate.check(
            ctx,
            action_name="canvas_command",
            subject_type="canvas",
            subject_id=canvas_id,
            params={"base_rev": command.base_rev, "op_count": len(ops)},
        )
        await self._announce_limits(ctx, canvas_id, limits, head)
        record = CommandRecord(
            rev=rev,
            ops=ops,
            actor_id=ctx.user_id,
            committed_at=self.clock.now(),
            idempotency_key=key,
            request_id=ctx.request_id or None,
            run_id=ctx.run_id,
            step_id=ctx.step_id,
            trace_id=ctx.trace_id,
        )
        raw = msgspec.json.encode(record)
        checkpoint = self._checkpoint_ops(new_state) if rev % limits.checkpoint_every == 0 else []
        try:
            done = await log_.append(
                lambda _first: [raw],
                now=record.committed_at,
                expected_head=head,
                idempotency_key=key,
                payload_fingerprint=fp,
                result=lambda first, _last: {"rev": first, "applied_ops": len(ops)},
                extra_ops=lambda _first, _last: checkpoint,
            )
        except HeadMoved as moved:
            raise await self._conflict(log_, command.base_rev, moved.head) from None
        if done.replayed:  # the same key committed concurrently
            return await self._replayed(ctx, canvas_id, done.result)
        self._remember(self._cache_key(log_), new_state)
        cursor = await self._catch_up_quietly(ctx, canvas_id, rev)
        return CommitResult(canvas_id=canvas_id, head_rev=rev, applied_ops=len(ops), cursor=cursor)

    async def _announce_limits(
        self, ctx: RequestContext, canvas_id: str, limits: CanvasLimits, head: int
    ) -> None:
        """Publish a ``system`` event ``limits_changed`` on the canvas stream when the limits
        this command was checked against differ from the last ones announced there (or, before
        any announcement, from the service's defaults), so clients that validate locally learn
        the new limits before the first ``op_committed`` accepted under them.

        Announcements are the numbered series ``system.limits`` (each position once, in order,
        whoever publishes it). This process remembers what it found announced, so a canvas
        costs extra reads once per process and limits value. The commit never depends on it:
        a failure is logged, and the next command tries again.
        """
        wanted = fingerprint(msgspec.to_builtins(limits))
        memo = (ctx.tenant_id, ctx.mode, canvas_id)
        if self._announced.get(memo) == wanted:
            self._announced.move_to_end(memo)
            return
        sid = self.stream_id(canvas_id)
        try:
            last = await self.events.published(ctx, sid, LIMITS_SERIES)
            previous: dict[str, Any] = msgspec.to_builtins(self.limits)
            if last > 0:
                cursor = await self.events.ordered_cursor(ctx, sid, LIMITS_SERIES, last)
                event = None
                if cursor is not None:
                    event = await self.events.get_event(ctx, sid, self.events.decode(ctx, sid, cursor))
                if event is None:  # announced by a concurrent publisher between our reads
                    return
                previous = dict(event.data.get("limits") or {})
            if fingerprint(previous) != wanted:
                await self.events.publish_ordered(
                    ctx,
                    sid,
                    SYSTEM_EVENT,
                    {
                        "reason": "limits_changed",
                        "limits": msgspec.to_builtins(limits),
                        "previous": previous,
                        "head_rev": head,
                    },
                    series=LIMITS_SERIES,
                    position=last + 1,
                )
        except (NorthstarError, ValueError) as exc:
            log.warning("canvas %s: limits announcement deferred: %r", canvas_id, exc)
            return
        self._announced[memo] = wanted
        self._announced.move_to_end(memo)
        while len(self._announced) > _ANNOUNCED_SIZE:
            self._announced.popitem(last=False)

    async def _replayed(self, ctx: RequestContext, canvas_id: str, result: bytes) -> CommitResult:
        meta = msgspec.json.decode(result, type=dict[str, Any])
        rev = int(meta["rev"])
        cursor = await self._catch_up_quietly(ctx, canvas_id, rev)
        return CommitResult(
            canvas_id=canvas_id,
            head_rev=rev,
            applied_ops=int(meta["applied_ops"]),
            cursor=cursor,
            replayed=True,
        )

    async def _check_actor(self, ctx: RequestContext, canvas_id: str, actor_id: str | None) -> None:
        if actor_id is None or actor_id == ctx.user_id:
            return
        await self.audit.audit(
            ctx,
            "canvas.actor_mismatch",
            {"canvas_id": canvas_id, "authenticated": ctx.user_id, "presented": actor_id[:200]},
        )
        raise NorthstarError(
            f"{DOMAIN}.actor_mismatch",
            "actor_id must be the authenticated user (or omitted)",
            403,
            details={"field": "actor_id", "authenticated": ctx.user_id, "presented": actor_id[:200]},
        )

    # --- reads -----------------------------------------------------------------------------

    async def snapshot(self, ctx: RequestContext, canvas_id: str) -> Snapshot:
        """The state at the head, rebuilt from the latest checkpoint and the commands after it;
        ``cursor`` is the canvas-stream position of the head revision's ``op_committed``."""
        log_ = await self._log(ctx, canvas_id)
        state = await self._state(log_)
        cursor = await self.catch_up(ctx, canvas_id, state.rev)
        return Snapshot(
            canvas_id=canvas_id,
            head_rev=state.rev,
            atoms=dict(state.atoms),
            order=list(state.order),
            cursor=cursor,
        )

    async def head(self, ctx: RequestContext, canvas_id: str) -> int:
        return await (await self._log(ctx, canvas_id)).head()

    async def replay(
        self,
        ctx: RequestContext,
        canvas_id: str,
        cursor: str | None,
        limit: int = 100,
        *,
        types: frozenset[str] | None = None,
    ) -> Page[StreamEvent]:
        """Events of the canvas stream after ``cursor`` (from the start without one), paged;
        every committed revision is on the stream before the page is read."""
        await self.catch_up(ctx, canvas_id, await self.head(ctx, canvas_id))
        return await self.events.list(
            ctx, self.stream_id(canvas_id), cursor, limit, error_domain=DOMAIN, types=types
        )

    async def subscribe_position(self, ctx: RequestContext, canvas_id: str, cursor: str | None) -> int:
        """Where an SSE subscription starts: after ``cursor`` (410 ``canvas.cursor_invalid`` if
        it is not this canvas's), or at the head without one. Publishes pending revisions first."""
        await self.catch_up(ctx, canvas_id, await self.head(ctx, canvas_id))
        sid = self.stream_id(canvas_id)
        if cursor is None:
            return await (await self.events.stream(ctx, sid)).head()
        return await self.events.check_cursor(ctx, sid, cursor, error_domain=DOMAIN)

    async def head_cursor(self, ctx: RequestContext, canvas_id: str) -> str:
        """The cursor of the last event of the canvas stream (readers starting there see only
        new events); pending revisions are published first."""
        await self.catch_up(ctx, canvas_id, await self.head(ctx, canvas_id))
        return await self.events.head_cursor(ctx, self.stream_id(canvas_id))

    async def follow(
        self, ctx: RequestContext, canvas_id: str, cursor: str | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Events of the canvas stream after ``cursor`` (from the head without one), then live
        ones, each once and in order, until the consumer stops iterating. A bad cursor raises
        410 at the first iteration; :meth:`subscribe_position` checks one up front (the SSE
        route does, then follows ``events.follow`` from the position it returns)."""
        after = await self.subscribe_position(ctx, canvas_id, cursor)
        events = self.events.follow(ctx, self.stream_id(canvas_id), after)
        async with contextlib.aclosing(events):
            async for event in events:
                if event is not None:
                    yield event

    # --- gestures --------------------------------------------------------------------------

    async def gesture(
        self,
        ctx: RequestContext,
        canvas_id: str,
        gesture: str,
        data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> StreamEvent:
        """Publish a gesture on the canvas stream (never the command log).

        Refused with 403 ``canvas.gestures_disabled`` when the ``canvas.gestures_enabled``
        toggle is off; passes the gate chain as ``canvas_gesture``.
        """
        check_id(DOMAIN, "canvas_id", canvas_id)
        ctx.require_role("member")
        if idempotency_key is not None:
            check_id(DOMAIN, "idempotency_key", idempotency_key)
        if not _KIND_PATTERN.fullmatch(gesture):
            raise NorthstarError(
                f"{DOMAIN}.invalid_request", f"gesture must match {_KIND_PATTERN.pattern}", 422,
                details={"field": "gesture"},
            )
        limits = self.limits_for(await self.registry.store_for(KIND, ctx.tenant_id))
        size = _size(data)
        if size > limits.max_gesture_bytes:
            raise NorthstarError(
                f"{DOMAIN}.gesture_too_large",
                f"a gesture may hold at most {limits.max_gesture_bytes} bytes",
                413,
                details={"limit": limits.max_gesture_bytes, "size": size},
            )
        if await self.toggles.toggle(ctx, "canvas.gestures_enabled", default=True) is not True:
            raise NorthstarError(
                f"{DOMAIN}.gestures_disabled",
                "gestures are switched off (toggle canvas.gestures_enabled)",
                403,
                details={"toggle": "canvas.gestures_enabled"},
            )
        await self.gate.check(
            ctx,
            action_name="canvas_gesture",
            subject_type="canvas",
            subject_id=canvas_id,
            params={"gesture": gesture},
        )
        sid = self.stream_id(canvas_id)
        cursor = await self.events.publish(
            ctx,
            sid,
            "gesture",
            {"gesture": gesture, "data": data, "actor_id": ctx.user_id},
            idempotency_key=None if idempotency_key is None else f"gesture.{idempotency_key}",
        )
        seq = self.events.decode(ctx, sid, cursor)
        event = await self.events.get_event(ctx, sid, seq)
        assert event is not None  # just written (or replayed) on this stream
        return event

    # --- artifacts and audits --------------------------------------------------------------

    async def _records(self, ctx: RequestContext, canvas_id: str, record_type: RecordType) -> SequencedStream:
        check_id(DOMAIN, "canvas_id", canvas_id)
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        return SequencedStream(store, partition(ctx, "canvas", canvas_id, f"{record_type}s"), DOMAIN)

    def _record_cursor(self, ctx: RequestContext, canvas_id: str, record_type: str, seq: int) -> str:
        return self.cursors.encode(DOMAIN, ctx.tenant_id, ctx.mode, f"{canvas_id}/{record_type}s", str(seq))

    async def add_record(
        self, ctx: RequestContext, canvas_id: str, record_type: RecordType, record: RecordIn
    ) -> tuple[CanvasRecord, bool]:
        """Store an artifact or audit record durably (idempotent by key); the content hash of an
        inline body is computed here. Emits a ``canvas.<type>_recorded`` audit on the spine
        (again on a replay, so an audit lost to a spine outage is recorded by the retry).
        Returns the record and whether it is a replay."""
        ctx.require_role("member")
        stream = await self._records(ctx, canvas_id, record_type)
        body_bytes = self._validate_record(record, self.limits_for(stream.store))
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

        def build(first: int) -> list[bytes]:
            return [
                msgspec.json.encode(
                    CanvasRecord(
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
                )
            ]

        payload = msgspec.to_builtins(record)
        payload.pop("idempotency_key", None)
        payload["actor_id"] = ctx.user_id
        done = await stream.append(
            build,
            now=now,
            idempotency_key=record.idempotency_key,
            payload_fingerprint=fingerprint(payload),
        )
        item = await stream.store.get(stream.partition, f"s#{done.first_seq:016d}")
        assert item is not None  # just written (or replayed) in this partition
        stored = msgspec.json.decode(item.value, type=CanvasRecord)
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

    def _validate_record(self, record: RecordIn, limits: CanvasLimits) -> bytes | None:
        def bad(message: str, field: str) -> NorthstarError:
            return NorthstarError(f"{DOMAIN}.invalid_request", message, 422, details={"field": field})

        if not _KIND_PATTERN.fullmatch(record.kind):
            raise bad(f"kind must match {_KIND_PATTERN.pattern}", "kind")
        if (record.uri is None) == (record.body is None):
            raise bad("give exactly one of uri or body", "uri")
        if record.uri is not None and not 1 <= len(record.uri) <= 2048:
            raise bad("uri must be 1 to 2048 characters", "uri")
        if record.idempotency_key is not None:
            check_id(DOMAIN, "idempotency_key", record.idempotency_key)
        if record.media_type is not None and len(record.media_type) > 200:
            raise bad("media_type is too long", "media_type")
        if record.content_hash is not None and not _HASH_PATTERN.fullmatch(record.content_hash):
            raise bad("content_hash must be sha256:<64 hex>", "content_hash")
        meta_size = _size(record.metadata)
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

    async def list_records(
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
        stream = await self._records(ctx, canvas_id, record_type)
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
        items: list[Item] = await stream.read(after, limit + 1)
        has_more = len(items) > limit
        items = items[:limit]
        last = seq_of(items[-1].key) if items else after
        return Page(
            items=[msgspec.json.decode(i.value, type=CanvasRecord) for i in items],
            next_cursor=self._record_cursor(ctx, canvas_id, record_type, last),
            has_more=has_more,
        )


# Replaying committed commands never re-checks limits (they held when the command committed).
_UNLIMITED: Final = CanvasLimits(
    max_ops_per_command=2**62,
    max_props_bytes=2**62,
    max_command_bytes=2**62,
    max_canvas_bytes=2**62,
    max_atoms=2**62,
)
