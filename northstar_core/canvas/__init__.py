"""The canvas: a revisioned command log with snapshots, published on the canvas's stream.

* :mod:`~northstar_core.canvas.model` — the pure model: ops, :class:`CanvasState`,
  :func:`rebase`, :func:`parse_ops`, the limits and the wire structs (what a client needs;
  no store, no service);
* :mod:`~northstar_core.canvas.service` — :class:`CanvasService`: commands, snapshots,
  replay, live follow, and the ``op_committed`` publication;
* :mod:`~northstar_core.canvas.gestures` — gestures on the canvas stream;
* :mod:`~northstar_core.canvas.records` — artifacts and audits.
"""

from northstar_core.canvas.model import (
    Atom,
    CanvasLimits,
    CanvasOp,
    CanvasRecord,
    CanvasState,
    CommandIn,
    CommandRecord,
    CommitResult,
    CreateOp,
    DeleteOp,
    MoveOp,
    RecordIn,
    RecordType,
    Snapshot,
    UpdateOp,
    merge_patch,
    parse_ops,
    rebase,
)
from northstar_core.canvas.service import CanvasService

__all__ = [
    "Atom",
    "CanvasLimits",
    "CanvasOp",
    "CanvasRecord",
    "CanvasService",
    "CanvasState",
    "CommandIn",
    "CommandRecord",
    "CommitResult",
    "CreateOp",
    "DeleteOp",
    "MoveOp",
    "RecordIn",
    "RecordType",
    "Snapshot",
    "UpdateOp",
    "merge_patch",
    "parse_ops",
    "rebase",
]
