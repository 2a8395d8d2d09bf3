"""The canvas service (resource kind ``canvas_command_store``): a revisioned command log with
snapshots, published on the canvas's event stream.

A canvas changes only by *commands* ``{base_rev, ops[], idempotency_key}`` (the ops and the
state they change are :mod:`northstar_core.canvas.model`); the command log IS a
:class:`~northstar_core.kernel.streams.SequencedStream` (one per canvas and tenant), so a
command's revision is its sequence number and every rule comes from there:

* **atomic commit at head+1** — ``append(expected_head=base_rev)``: of N writers on one
  ``base_rev`` exactly one commits; the others get 409 ``canvas.rev_conflict`` with the
  commands they missed (``recovery_ops``);
* **idempotency** — the key's record commits in the same batch as the command, so a retried
  command (lost response, server restart) returns the original result marked ``replayed`` and
  never creates a second revision; a different payload under the key is 422;
* **bounded snapshots** — every ``checkpoint_every`` revisions the full state at that revision
  is written *in the same atomic batch* as the command
  (:mod:`~northstar_core.kernel.checkpoints`), so a snapshot reads the latest checkpoint plus
  fewer than ``checkpoint_every`` commands, whatever the length of the history;
* **no SSE gap** — after a commit the command is published as ``op_committed`` on the canvas's
  event stream (``canvas:<id>``, kind ``event_stream``, possibly another backend), the
  numbered series ``op_committed`` of :mod:`~northstar_core.kernel.publication` (each
  revision once, strictly in order). A crash between the two writes leaves revisions
  unpublished; the next command, snapshot, replay or subscription publishes them first, so a
  subscriber never sees a gap or a duplicate;
* **the decision with its commit** — the gate's allow decision (``safety_decision``, see
  :mod:`~northstar_core.safety.gates`) is recorded on the spine before the commit, but goes
  on the canvas stream in the same atomic batch as the revision's ``op_committed``, right
  before it. The command record keeps it (``CommandRecord.decision``, stored only), so a
  catch-up publishes both, once and in order, and a reader of the stream never sees an allow
  without the commit it allowed. A recorded allow has no commit only when the command lost its
  commit race (409 ``rev_conflict``, or the same key committed concurrently): the decision is
  then published alone, as a decision whose action did not run. A commit that fails on the
  store is treated alike (its decision published alone; if only its response was lost and it
  did commit, the catch-up publishes its ``op_committed`` after that decision without
  repeating it), and a crash between the decision and the commit leaves the decision on the
  spine only. A deny is recorded and published by the gate, and nothing commits;
* **limits notices** — a command accepted under limits other than those last announced on the
  canvas stream (a route's ``canvas_limits`` changed) is preceded there by a ``system`` event
  ``limits_changed`` (see :meth:`CanvasService._limits_notice`).

A command at steady state (this process has seen the canvas at the command's ``base_rev``)
costs four sequential store round trips and, with the default policies, eight calls:

1. at once: the idempotency key's record and the gate's policy inputs
   (:meth:`~northstar_core.ports.ActionGate.prepare`); the state is the one this process
   holds at ``base_rev`` — no log read: the commit's conditional append is the authority on
   the head (a client that was behind gets its 409 from the real head). With another
   ``base_rev``, or nothing cached, the log after the cached state is read here too;
2. the gate's decision, recorded on the spine;
3. the commit (one atomic batch; the key was looked up in step 1);
4. the decision and ``op_committed``, with the record in hand (one write).

On a backend without atomic checks (an append there needs a head read from the store, never a
remembered one) step 1 also reads the command log's head and the canvas stream's head — the
command stays at four round trips, at ten calls. A log head read there past the revision this
process holds fails the commit at once (409, as its conditions would), without a read of its own.

The actor is the token's user: a body ``actor_id`` that differs is refused with 403
``canvas.actor_mismatch`` (and audited), like every other identity contradiction (SPEC §2.6).

Gates: a command that can commit passes the gate chain as ``canvas_command`` right before the
atomic append (a deny is 403 and writes nothing); input errors, idempotent replays and
revision conflicts are answered without a decision — the policy inputs are read concurrently
with the command's own reads, but decided only once the command is known to be committable —
so they record nothing and charge no budget. The exception is a conflict only the commit can
see (another writer committed after the revision this process holds): its decision is
recorded, then the commit loses the race (above). Gestures (:mod:`~northstar_core.canvas.gestures`)
and artifacts/audits (:mod:`~northstar_core.canvas.records`) are served through this service
too. The gate is a constructor dependency (:class:`ActionGate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, Coroutine
from typing import Any, Final

import msgspec

from northstar_core.bounds import MAX_SEQ, check_int
from northstar_core.canvas.gestures import CanvasGestures, ToggleSource
from northstar_core.canvas.model import (
    DOMAIN,
    KIND,
    UNLIMITED,
    Atom,
    CanvasLimits,
    CanvasRecord,
    CanvasState,
    CommandIn,
    CommandRecord,
    CommitResult,
    DecisionEvent,
    RecordIn,
    RecordType,
    Snapshot,
    parse_ops,
    resolve_limits,
    size_of,
)
from northstar_core.canvas.records import CanvasRecords
from northstar_core.clock import Clock
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.kernel.checkpoints import Checkpoints, checkpoint_ops
from northstar_core.kernel.idempotency import fingerprint
from northstar_core.kernel.paging import Page
from northstar_core.kernel.publication import SeriesBehind
from northstar_core.kernel.records import Item
from northstar_core.kernel.streams import HeadMoved, SequencedStream, operation_heads, seq_of
from northstar_core.ports import ActionGate, AuditSink
from northstar_core.routing import KindStore, RoutingRegistry
from northstar_core.scope import check_id, partition, subject_stream
from northstar_core.timeline import PendingEvent, StreamEvent, Timeline

SERIES: Final = "op_committed"
# ``system`` notices on the canvas stream; each kind of notice is a numbered series.
SYSTEM_EVENT: Final = "system"
LIMITS_SERIES: Final = "system.limits"
_ANNOUNCED_SIZE: Final = 4096
_CACHE_SIZE: Final = 256
_CATCH_UP_PAGE: Final = 100

log = logging.getLogger(__name__)


class _Checkpoint(msgspec.Struct, frozen=True):
    rev: int
    atoms: dict[str, Atom]
    order: list[str]


class _Notice(msgspec.Struct, frozen=True):
    """A ``limits_changed`` notice to publish before the command commits."""

    position: int
    data: dict[str, Any]


def _origin(ctx: RequestContext, record: CommandRecord) -> RequestContext:
    """The context a command was committed in, as its ``op_committed`` event names it (the
    same whoever publishes it: the committing request or a later catch-up)."""
    return msgspec.structs.replace(
        ctx,
        user_id=record.actor_id,
        request_id=record.request_id or "",
        run_id=record.run_id,
        step_id=record.step_id,
        trace_id=record.trace_id,
    )


async def _nothing() -> None:
    return None


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Done-callback of a task whose outcome may go unused: retrieve its exception."""
    if not task.cancelled():
        task.exception()


class CanvasService:
    """Canvas use-cases (see module doc). Every dependency is explicit, so wiring is one line."""

    def __init__(
        self,
        registry: RoutingRegistry,
        cursors: CursorCodec,
        clock: Clock,
        *,
        timeline: Timeline,
        gate: ActionGate,
        audit: AuditSink,
        toggles: ToggleSource,
        limits: CanvasLimits | None = None,
    ) -> None:
        self.registry = registry
        self.cursors = cursors
        self.clock = clock
        self.timeline = timeline
        self.gate = gate
        self.audit = audit
        self.toggles = toggles
        self.limits = limits or CanvasLimits()
        self.gestures = CanvasGestures(
            registry, timeline=timeline, gate=gate, toggles=toggles, limits=self.limits
        )
        self.records = CanvasRecords(registry, cursors, clock, audit=audit, limits=self.limits)
        # States at recent revisions, per backing store and canvas partition: a command reads
        # only the log after the cached revision. Keyed by the store object itself, so a
        # tenant re-routed elsewhere, or a store reopened empty (memory), never sees a state
        # cached from another store.
        self._cache: weakref.WeakKeyDictionary[object, OrderedDict[str, CanvasState]] = (
            weakref.WeakKeyDictionary()
        )
        # (tenant, mode, canvas) -> fingerprint of the limits known to be announced on its stream
        self._announced: OrderedDict[tuple[str, str, str], str] = OrderedDict()

    # --- plumbing --------------------------------------------------------------------------

    async def store(self, ctx: RequestContext) -> KindStore:
        """The store serving canvases for ``ctx``'s tenant."""
        return await self.registry.store_for(KIND, ctx.tenant_id)

    async def _log(self, ctx: RequestContext, canvas_id: str) -> SequencedStream:
        check_id(DOMAIN, "canvas_id", canvas_id)
        return self._log_in(await self.store(ctx), ctx, canvas_id)

    @staticmethod
    def _log_in(store: KindStore, ctx: RequestContext, canvas_id: str) -> SequencedStream:
        return SequencedStream(store, partition(ctx, "canvas", canvas_id), DOMAIN)

    def limits_for(self, store: KindStore) -> CanvasLimits:
        """The limits in force on ``store``'s route: the defaults with its ``canvas_limits``."""
        return resolve_limits(self.limits, store.options.canvas_limits)

    @staticmethod
    def stream_id(canvas_id: str) -> str:
        """The canvas's event stream (SSE, replay, gestures, safety decisions)."""
        return subject_stream("canvas", canvas_id)

    def _cached(self, log_: SequencedStream) -> CanvasState | None:
        states = self._cache.get(log_.store.backing)
        return states.get(log_.partition) if states is not None else None

    def _remember(self, log_: SequencedStream, state: CanvasState) -> None:
        states = self._cache.get(log_.store.backing)
        if states is None:
            states = self._cache[log_.store.backing] = OrderedDict()
        current = states.get(log_.partition)
        if current is None or current.rev <= state.rev:
            states[log_.partition] = state
        states.move_to_end(log_.partition)
        while len(states) > _CACHE_SIZE:
            states.popitem(last=False)

    def _checkpoint_ops(self, state: CanvasState) -> list[Any]:
        """The operations that store ``state`` as the checkpoint at its revision."""
        raw = msgspec.json.encode(_Checkpoint(state.rev, state.atoms, state.order))
        return checkpoint_ops(state.rev, raw)

    async def _state(self, log_: SequencedStream, limits: CanvasLimits | None = None) -> CanvasState:
        """The state at the current head: cached or checkpoint state + the commands after it
        (one store read when this process has seen the canvas). ``limits`` (the route's)
        size the reads: a checkpoint is followed by fewer than ``checkpoint_every`` commands."""
        page = max((limits or self.limits).checkpoint_every, 16)
        state = self._cached(log_)
        if state is None:
            # Not seen by this process: the latest checkpoint and the last commands, read
            # together. A checkpoint is written every ``checkpoint_every`` revisions, so those
            # commands normally reach back to it and the state is complete in one round trip.
            checkpoint, tail = await asyncio.gather(Checkpoints(log_).latest(), log_.read_last(page))
            if checkpoint is None:
                state = CanvasState(0, {}, [])
            else:
                saved = msgspec.json.decode(checkpoint.data, type=_Checkpoint)
                state = CanvasState(saved.rev, dict(saved.atoms), list(saved.order))
            if not tail or seq_of(tail[0].key) <= state.rev + 1:
                self._apply(state, [item for item in tail if seq_of(item.key) > state.rev])
                self._remember(log_, state)
                return state
        copied = False
        while True:
            items = await log_.read(state.rev, page)
            if items and not copied:
                state, copied = state.copy(), True
            self._apply(state, items)
            if len(items) < page:
                break
        self._remember(log_, state)
        return state

    async def _base_state(self, log_: SequencedStream, limits: CanvasLimits, base_rev: int) -> CanvasState:
        """The state a command on ``base_rev`` applies to. When this process holds the state
        at exactly ``base_rev`` it is taken as the head without a read: the commit appends at
        ``expected_head=base_rev`` under conditions that fail if any revision followed it, so a
        client that was behind still gets its 409 (from the real head). Otherwise the log is
        read as for a snapshot (the head decides between 409, 422 and a commit)."""
        cached = self._cached(log_)
        if cached is not None and cached.rev == base_rev:
            return cached
        return await self._state(log_, limits)

    @staticmethod
    def _apply(state: CanvasState, items: list[Item]) -> None:
        """Apply committed commands (they passed every limit when they committed)."""
        for item in items:
            record = msgspec.json.decode(item.value, type=CommandRecord)
            state.apply(record.ops, UNLIMITED)
            state.rev = record.rev

    async def _conflict(
        self, log_: SequencedStream, limits: CanvasLimits, base_rev: int, head: int
    ) -> NorthstarError:
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

    # --- publication on the canvas stream -----------------------------------------------------

    async def _publish(self, ctx: RequestContext, canvas_id: str, record: CommandRecord) -> str:
        """Publish ``record`` (in hand) as its revision's ``op_committed``, right after the
        gate's allow decision it carries, in one batch; the cursor of the ``op_committed``."""
        sid = self.stream_id(canvas_id)
        decision = record.decision
        return await self.timeline.publish_ordered(
            _origin(ctx, record),
            sid,
            SERIES,
            record.summary(),
            series=SERIES,
            position=record.rev,
            preceded_by=()
            if decision is None
            else (
                PendingEvent(
                    stream_id=sid,
                    type=decision.type,
                    data=decision.data,
                    idempotency_key=decision.idempotency_key,
                ),
            ),
        )

    async def _publish_decision(self, ctx: RequestContext, canvas_id: str, event: PendingEvent) -> None:
        """Publish the allow decision of a command that did not commit (it lost its race),
        alone, as the gate would have; the 409 or replay answered stands without it."""
        try:
            await self.timeline.publish(
                ctx, event.stream_id, event.type, event.data,
                idempotency_key=event.idempotency_key, key_checked=True,
            )
        except NorthstarError as exc:
            log.warning("canvas %s: safety_decision not published: %s", canvas_id, exc.code)

    async def _publish_missing(
        self, ctx: RequestContext, log_: SequencedStream, canvas_id: str, published: int, upto: int
    ) -> str | None:
        """Publish revisions ``published + 1`` … ``upto`` from the log, in order; the cursor of
        the last one published (``None`` if the log ended first)."""
        cursor: str | None = None
        while published < upto:
            items: list[Item] = await log_.read(
                published, min(upto - published, _CATCH_UP_PAGE), before_seq=upto + 1
            )
            if not items:
                break
            for item in items:
                record = msgspec.json.decode(item.value, type=CommandRecord)
                cursor = await self._publish(ctx, canvas_id, record)
                published = record.rev
        return cursor

    async def _publish_committed(
        self, ctx: RequestContext, log_: SequencedStream, canvas_id: str, record: CommandRecord
    ) -> str | None:
        """Publish a command just committed; the log is read only when the stream is behind
        (revisions before it still unpublished). The commit stands even if the stream is down:
        the next command, snapshot, replay or subscription publishes what is missing."""
        try:
            try:
                return await self._publish(ctx, canvas_id, record)
            except SeriesBehind as behind:
                await self._publish_missing(ctx, log_, canvas_id, behind.published, record.rev - 1)
                return await self._publish(ctx, canvas_id, record)
        except (NorthstarError, SeriesBehind) as exc:
            log.warning("canvas %s: op_committed publish deferred: %r", canvas_id, exc)
            return None

    async def catch_up(self, ctx: RequestContext, canvas_id: str, head: int) -> str:
        """Publish every committed revision up to ``head`` not yet on the canvas stream (in
        order, each once) and return the cursor of revision ``head``'s ``op_committed``."""
        sid = self.stream_id(canvas_id)
        cursor = await self.timeline.ordered_cursor(ctx, sid, SERIES, head)
        if cursor is not None:  # published, so is every revision before it
            return cursor
        published = await self.timeline.published(ctx, sid, SERIES)
        if published < head:
            log_ = await self._log(ctx, canvas_id)
            cursor = await self._publish_missing(ctx, log_, canvas_id, published, head)
        if cursor is None:  # published concurrently meanwhile: its record names it
            cursor = await self.timeline.ordered_cursor(ctx, sid, SERIES, head)
        if cursor is None:
            raise NorthstarError(
                f"{DOMAIN}.publish_pending", "the canvas stream is catching up; retry", 503,
                headers={"Retry-After": "1"},
            )
        return cursor

    async def _catch_up_quietly(self, ctx: RequestContext, canvas_id: str, head: int) -> str | None:
        """:meth:`catch_up` for an answer that stands without the cursor (a replayed commit)."""
        try:
            return await self.catch_up(ctx, canvas_id, head)
        except NorthstarError as exc:
            log.warning("canvas %s: op_committed publish deferred: %s", canvas_id, exc.code)
            return None

    # --- commands --------------------------------------------------------------------------

    async def commit(self, ctx: RequestContext, canvas_id: str, command: CommandIn) -> CommitResult:
        """Commit ``command`` atomically at ``head_rev + 1`` (see module doc for every outcome)."""
        # Heads read in round trip 1 serve the appends after it (see _warm_stream).
        with operation_heads():
            return await self._commit(ctx, canvas_id, command)

    async def _commit(self, ctx: RequestContext, canvas_id: str, command: CommandIn) -> CommitResult:
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
        store = await self.store(ctx)
        log_ = self._log_in(store, ctx, canvas_id)
        limits = self.limits_for(store)
        ops = parse_ops(command.ops, limits)
        size = size_of(ops)
        if size > limits.max_command_bytes:
            raise NorthstarError(
                f"{DOMAIN}.command_too_large",
                f"a command may hold at most {limits.max_command_bytes} bytes of ops",
                413,
                details={"limit": limits.max_command_bytes, "size": size},
            )
        await self._check_actor(ctx, canvas_id, command.actor_id)
        fp = fingerprint({"base_rev": command.base_rev, "ops": ops, "actor_id": ctx.user_id})
        # Round trip 1: the gate's policy inputs (and, once per process and canvas, what limits
        # were announced) are read while the command's own reads run (the key; the log only
        # when this process does not hold the state at base_rev). Neither writes anything, so
        # a command answered without committing leaves no trace of them.
        prepared = asyncio.ensure_future(
            self.gate.prepare(
                ctx,
                action_name="canvas_command",
                subject_type="canvas",
                subject_id=canvas_id,
                params={"base_rev": command.base_rev, "op_count": len(ops)},
            )
        )
        prepared.add_done_callback(_retrieve)
        noticing = self._limits_notice(ctx, canvas_id, limits)
        notice = None if noticing is None else asyncio.ensure_future(noticing)
        warming: asyncio.Future[int] | None = None
        try:
            warming = await self._warm_stream(ctx, canvas_id)
            (prior, read_head), state = await asyncio.gather(
                log_.look_up(key, fp), self._base_state(log_, limits, command.base_rev)
            )
            if prior is not None:
                return await self._replayed(ctx, canvas_id, prior.result)
            head = state.rev
            if command.base_rev > head:
                raise NorthstarError(
                    f"{DOMAIN}.rev_invalid",
                    f"base_rev {command.base_rev} is ahead of the head revision {head}",
                    422,
                    details={"base_rev": command.base_rev, "head_rev": head},
                )
            if command.base_rev < head:
                raise await self._conflict(log_, limits, command.base_rev, head)
            new_state = state.copy()
            new_state.apply(ops, limits)
            rev = head + 1
            new_state.rev = rev
            # Round trip 2: the command can commit; only now is the gate's decision taken
            # (and recorded on the spine; it is published with the commit's op_committed).
            if warming is not None:  # done before a deny appends on the stream
                with contextlib.suppress(NorthstarError):  # only a guess of the head was lost
                    await warming
            _, event = await self.gate.decide_unpublished(await prepared)
            pending = None if notice is None else await notice
        finally:
            for task in (prepared, notice, warming):
                if task is not None and not task.done():
                    task.cancel()
        # The allow decision is published on the canvas stream with the op_committed of the
        # revision it allowed (the gate publishes on the subject's stream: this one).
        assert event is None or event.stream_id == self.stream_id(canvas_id)
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
            decision=None
            if event is None
            else DecisionEvent(type=event.type, data=event.data, idempotency_key=event.idempotency_key),
        )
        raw = msgspec.json.encode(record)
        checkpoint = self._checkpoint_ops(new_state) if rev % limits.checkpoint_every == 0 else []
        # Round trip 3: the commit (the key was looked up above), beside a limits notice that
        # must reach the stream before this command's op_committed.
        appending = log_.append(
            lambda _first: [raw],
            now=record.committed_at,
            expected_head=head,
            idempotency_key=key,
            payload_fingerprint=fp,
            key_checked=True,
            known_head=read_head,
            result=lambda first, _last: {"rev": first, "applied_ops": len(ops)},
            extra_ops=lambda _first, _last: checkpoint,
        )
        announced: object = None
        try:
            if pending is None:
                done = await appending
            else:
                # Both run to the end (nothing of this request is left running after it);
                # the commit's outcome is the answer.
                appended, announced = await asyncio.gather(
                    appending, self._announce(ctx, canvas_id, limits, pending, head), return_exceptions=True
                )
                if isinstance(appended, BaseException):
                    raise appended
                done = appended
        except HeadMoved as moved:
            # Lost the race: the decision was recorded for a command that did not commit; it
            # goes on the stream alone, as a decision whose action did not run.
            conflict, _ = await asyncio.gather(
                self._conflict(log_, limits, command.base_rev, moved.head),
                self._publish_decision(ctx, canvas_id, event) if event is not None else _nothing(),
            )
            raise conflict from None
        except Exception:
            # The commit failed, perhaps only its response was lost: the decision goes on the
            # stream alone, as for a lost race. Had the commit landed, its op_committed is
            # published later by a catch-up, which finds the decision there and does not
            # repeat it.
            if event is not None:
                await self._publish_decision(ctx, canvas_id, event)
            raise
        if isinstance(announced, BaseException):
            raise announced
        if done.replayed:  # the same key committed concurrently (with its own decision)
            if event is not None:
                await self._publish_decision(ctx, canvas_id, event)
            return await self._replayed(ctx, canvas_id, done.result)
        self._remember(log_, new_state)
        # Round trip 4: the decision and op_committed in one batch, with the record in hand.
        cursor = await self._publish_committed(ctx, log_, canvas_id, record)
        return CommitResult(canvas_id=canvas_id, head_rev=rev, applied_ops=len(ops), cursor=cursor)

    async def _warm_stream(self, ctx: RequestContext, canvas_id: str) -> asyncio.Future[int] | None:
        """The canvas stream's head read, started now, when the publication after the commit
        would otherwise read it: on a backend with atomic checks when this process knows
        nothing of the stream (a canvas it has not served yet), on one without them always
        (a head hint never serves there). Read inside the command's
        :func:`~northstar_core.kernel.streams.operation_heads` scope, the head is handed to
        the first append on the stream (the decision and ``op_committed``, or a decision
        published alone), which goes straight to its write. ``None`` when the head is known
        (no store call)."""
        try:
            stream = await self.timeline.stream(ctx, self.stream_id(canvas_id))
        except NorthstarError:  # the publications will say so (the commit does not need them)
            return None
        if not stream.reads_head_to_append and stream.hints.get(stream.partition) is not None:
            return None
        warming = asyncio.ensure_future(stream.head())
        warming.add_done_callback(_retrieve)
        return warming

    def _limits_notice(
        self, ctx: RequestContext, canvas_id: str, limits: CanvasLimits
    ) -> Coroutine[Any, Any, _Notice | None] | None:
        """The look-up of what a command under ``limits`` must announce first; ``None`` when
        this process knows those limits are the ones announced (no store call at all).

        A ``system`` event ``limits_changed`` goes on the canvas stream when the limits a
        command was checked against differ from the last ones announced there (or, before any
        announcement, from the service's defaults), so clients that validate locally learn
        the new limits before the first ``op_committed`` accepted under them. Announcements
        are the numbered series ``system.limits`` (each position once, in order, whoever
        publishes it). The commit never depends on them: a failure is logged, and the next
        command tries again.
        """
        wanted = fingerprint(msgspec.to_builtins(limits))
        memo = (ctx.tenant_id, ctx.mode, canvas_id)
        if self._announced.get(memo) == wanted:
            self._announced.move_to_end(memo)
            return None
        return self._read_notice(ctx, canvas_id, limits, wanted)

    async def _read_notice(
        self, ctx: RequestContext, canvas_id: str, limits: CanvasLimits, wanted: str
    ) -> _Notice | None:
        sid = self.stream_id(canvas_id)
        try:
            last = await self.timeline.published(ctx, sid, LIMITS_SERIES)
            previous: dict[str, Any] = msgspec.to_builtins(self.limits)
            if last > 0:
                cursor = await self.timeline.ordered_cursor(ctx, sid, LIMITS_SERIES, last)
                event = None
                if cursor is not None:
                    event = await self.timeline.get_event(ctx, sid, self.timeline.decode(ctx, sid, cursor))
                if event is None:  # announced by a concurrent publisher between our reads
                    return None
                previous = dict(event.data.get("limits") or {})
        except NorthstarError as exc:
            log.warning("canvas %s: limits announcement deferred: %r", canvas_id, exc)
            return None
        if fingerprint(previous) == wanted:
            self._memo_announced(ctx, canvas_id, wanted)
            return None
        data = {"reason": "limits_changed", "limits": msgspec.to_builtins(limits), "previous": previous}
        return _Notice(last + 1, data)

    async def _announce(
        self, ctx: RequestContext, canvas_id: str, limits: CanvasLimits, notice: _Notice, head: int
    ) -> None:
        try:
            await self.timeline.publish_ordered(
                ctx,
                self.stream_id(canvas_id),
                SYSTEM_EVENT,
                {**notice.data, "head_rev": head},
                series=LIMITS_SERIES,
                position=notice.position,
            )
        except (NorthstarError, SeriesBehind) as exc:
            log.warning("canvas %s: limits announcement deferred: %r", canvas_id, exc)
            return
        self._memo_announced(ctx, canvas_id, fingerprint(msgspec.to_builtins(limits)))

    def _memo_announced(self, ctx: RequestContext, canvas_id: str, wanted: str) -> None:
        memo = (ctx.tenant_id, ctx.mode, canvas_id)
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
        check_id(DOMAIN, "canvas_id", canvas_id)
        store = await self.store(ctx)
        state = await self._state(self._log_in(store, ctx, canvas_id), self.limits_for(store))
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
        return await self.timeline.list(
            ctx, self.stream_id(canvas_id), cursor, limit, error_domain=DOMAIN, types=types
        )

    async def subscribe_position(self, ctx: RequestContext, canvas_id: str, cursor: str | None) -> int:
        """Where an SSE subscription starts: after ``cursor`` (410 ``canvas.cursor_invalid`` if
        it is not this canvas's), or at the head without one. Publishes pending revisions first."""
        await self.catch_up(ctx, canvas_id, await self.head(ctx, canvas_id))
        sid = self.stream_id(canvas_id)
        if cursor is None:
            return await (await self.timeline.stream(ctx, sid)).head()
        return await self.timeline.check_cursor(ctx, sid, cursor, error_domain=DOMAIN)

    async def head_cursor(self, ctx: RequestContext, canvas_id: str) -> str:
        """The cursor of the last event of the canvas stream (readers starting there see only
        new events); pending revisions are published first."""
        await self.catch_up(ctx, canvas_id, await self.head(ctx, canvas_id))
        return await self.timeline.head_cursor(ctx, self.stream_id(canvas_id))

    async def follow(
        self, ctx: RequestContext, canvas_id: str, cursor: str | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Events of the canvas stream after ``cursor`` (from the head without one), then live
        ones, each once and in order, until the consumer stops iterating. A bad cursor raises
        410 at the first iteration; :meth:`subscribe_position` checks one up front (the SSE
        route does, then follows ``events.follow`` from the position it returns)."""
        after = await self.subscribe_position(ctx, canvas_id, cursor)
        events = self.timeline.follow(ctx, self.stream_id(canvas_id), after)
        async with contextlib.aclosing(events):
            async for event in events:
                if event is not None:
                    yield event

    # --- gestures, artifacts and audits ------------------------------------------------------

    async def gesture(
        self,
        ctx: RequestContext,
        canvas_id: str,
        gesture: str,
        data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> StreamEvent:
        """Publish a gesture on the canvas stream (:meth:`CanvasGestures.publish`)."""
        return await self.gestures.publish(ctx, canvas_id, gesture, data, idempotency_key=idempotency_key)

    async def add_record(
        self, ctx: RequestContext, canvas_id: str, record_type: RecordType, record: RecordIn
    ) -> tuple[CanvasRecord, bool]:
        """Store an artifact or audit record (:meth:`CanvasRecords.add`)."""
        return await self.records.add(ctx, canvas_id, record_type, record)

    async def list_records(
        self,
        ctx: RequestContext,
        canvas_id: str,
        record_type: RecordType,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[CanvasRecord]:
        """Artifact or audit records in creation order (:meth:`CanvasRecords.list`)."""
        return await self.records.list(ctx, canvas_id, record_type, cursor, limit)


__all__ = ["LIMITS_SERIES", "SERIES", "SYSTEM_EVENT", "CanvasService"]
