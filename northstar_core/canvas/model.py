"""The canvas model: ops, the state they change, the wire structs and the limits — pure.

Nothing here reads or writes a store, so the HTTP client (and any embedding agent) applies,
rebases and validates commands with exactly the code the server runs
(:class:`CanvasState`, :func:`rebase`, :func:`parse_ops`).

A canvas is a set of *atoms* (``atom_id`` -> ``{kind, props}``) and their z-``order``. Ops:
``create {atom_id, kind, props}``, ``update {atom_id, patch}`` (RFC 7386 JSON merge patch on
props), ``delete {atom_id}``, ``move {atom_id, index}`` (final z-order position). An op on a
missing atom, a create of an existing one, or a move out of range is 422 ``canvas.op_invalid``
with ``details.op_index``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

import msgspec

from northstar_core.clock import iso
from northstar_core.errors import NorthstarError
from northstar_core.identity import ID_PATTERN

KIND: Final = "canvas_command_store"
DOMAIN: Final = "canvas"
KIND_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.:\-/]{1,100}$")

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


class DecisionEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The gate's allow decision of a command, as published on the canvas stream right
    before its ``op_committed`` (kept with the command so a catch-up publishes both)."""

    type: str
    data: dict[str, Any]
    idempotency_key: str


class CommandRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One committed command (the durable log entry ``s#<rev>``). ``decision`` is stored, never
    part of the wire form (:meth:`summary`)."""

    rev: int
    ops: list[CanvasOp]
    actor_id: str
    committed_at: float
    idempotency_key: str
    request_id: str | None = None
    run_id: str | None = None
    step_id: str | None = None
    trace_id: str | None = None
    decision: DecisionEvent | None = None

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


def size_of(value: Any) -> int:
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
            atom_id: size_of(atom.props) + len(atom_id) + len(atom.kind) for atom_id, atom in atoms.items()
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
                size = size_of(op.props)
                self._set(op.atom_id, Atom(op.kind, op.props), size + len(op.atom_id) + len(op.kind))
                self.order.append(op.atom_id)
                continue
            if current is None:
                raise op_invalid(index, "atom does not exist", atom_id=op.atom_id)
            if isinstance(op, UpdateOp):
                props = merge_patch(current.props, op.patch)
                size = size_of(props)
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
        trial.apply([op], UNLIMITED)
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
            if not KIND_PATTERN.fullmatch(op.kind):
                raise op_invalid(index, f"kind must match {KIND_PATTERN.pattern}")
            size = size_of(op.props)
            if size > limits.max_props_bytes:
                raise _props_too_large(index, size, limits)
        elif isinstance(op, UpdateOp):
            size = size_of(op.patch)
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


# Replaying committed commands never re-checks limits (they held when the command committed).
UNLIMITED: Final = CanvasLimits(
    max_ops_per_command=2**62,
    max_props_bytes=2**62,
    max_command_bytes=2**62,
    max_canvas_bytes=2**62,
    max_atoms=2**62,
)


def resolve_limits(defaults: CanvasLimits, overrides: dict[str, Any] | None) -> CanvasLimits:
    """``defaults`` with a route's ``canvas_limits`` ``overrides`` (503
    ``canvas.route_misconfigured`` if they are unusable)."""
    if overrides is None:
        return defaults
    try:
        return msgspec.convert({**msgspec.structs.asdict(defaults), **overrides}, CanvasLimits)
    except (msgspec.ValidationError, TypeError) as exc:
        raise NorthstarError(
            f"{DOMAIN}.route_misconfigured",
            f"the route of '{KIND}' has an unusable 'canvas_limits' parameter: {exc}",
            503,
            details={"resource_kind": KIND, "param": "canvas_limits"},
            headers={"Retry-After": "30"},
        ) from None


__all__ = [
    "DOMAIN",
    "KIND",
    "KIND_PATTERN",
    "UNLIMITED",
    "Atom",
    "CanvasLimits",
    "CanvasOp",
    "CanvasRecord",
    "CanvasState",
    "CommandIn",
    "CommandRecord",
    "CommitResult",
    "CreateOp",
    "DecisionEvent",
    "DeleteOp",
    "MoveOp",
    "RecordIn",
    "RecordType",
    "Snapshot",
    "UpdateOp",
    "merge_patch",
    "op_invalid",
    "parse_ops",
    "rebase",
    "resolve_limits",
    "size_of",
]
