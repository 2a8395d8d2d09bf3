"""The gate chain in front of every tool action (SPEC §6 "Gate chain and /actions/execute").

Order, stopping at the first block: ``kill_switch → firearms → strategy_lock → budget → kpi →
temperature``. Every rule comes from the policy stores (:mod:`northstar_core.safety.documents`,
licences, locks, :mod:`northstar_core.safety.budget`), read fresh on every decision — there is
no cache, so a revocation, an expiry, a flipped kill switch or a lowered limit written by any
process applies to the very next check anywhere.

Two phases, so a caller can overlap the reads with its own:

* :meth:`GateChain.prepare` validates the request (422 ``gate.invalid_request``) and reads every
  policy input the chain needs, writing nothing: all policy documents in one round trip (one
  query per backing store, concurrently), then — only what the documents make necessary — the
  subject's licences, the matching strategy locks and the budget totals, concurrently;
* :meth:`GateChain.decide` evaluates the chain on those inputs and records the decision.

Every decision, allow or deny, is recorded on the event spine as a ``safety`` event (the gate,
the reason and the version of every policy document the chain consulted) and published as
``safety_decision`` on the subject's stream (``<subject_type>:<subject_id>``) with the spine
event's id. The id is taken before either write, so the two writes run concurrently: one
round trip. The action runs only if both are durable — else 503 ``gate.decision_unrecorded``
(if only the spine write failed, the stream may still carry the decision: a notification of a
decision whose action did not run, as for any allowed action that later fails). A deny stays a
deny even when the stream is down: it raises a 403 envelope with ``gate`` set and a stable
code ``gate.<gate>.<reason>``.

An action whose own outcome lands on the subject's stream can take the allow decision with
:meth:`GateChain.decide_unpublished` instead: the allow is recorded on the spine only (the
action runs only once it is durable there) and returned with the ``safety_decision`` event,
which the caller publishes in one atomic batch with the action's own event — so readers of
the stream never see an allow without the action it allowed. The canvas does this for
``canvas_command`` (:mod:`northstar_core.canvas.service`): the decision goes on the stream
right before the command's ``op_committed``; a command that loses its commit race (or whose
commit fails) publishes the decision alone, so every decision still reaches the stream. A deny
is recorded and published by the gate itself either way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import Any, Final

import msgspec

from northstar_core.bounds import MAX_AMOUNT
from northstar_core.clock import Clock
from northstar_core.errors import GATES, Gate, NorthstarError, gate_blocked, invalid
from northstar_core.identity import ID_PATTERN, RequestContext
from northstar_core.observe import current as observer
from northstar_core.ports import StreamPublisher
from northstar_core.safety.budget import TOTAL, BudgetLedger
from northstar_core.safety.documents import PolicySet
from northstar_core.safety.licences import Licence, firearms_reason
from northstar_core.safety.locks import StrategyLock, lock_state
from northstar_core.safety.policies import PolicyStores
from northstar_core.scope import subject_stream
from northstar_core.spine import EventSpine
from northstar_core.timeline import PendingEvent

DOMAIN: Final = "gate"

# the human text of each block reason (codes are gate.<gate>.<reason>)
MESSAGES: Final[dict[tuple[str, str], str]] = {
    ("kill_switch", "tenant_blocked"): "a kill switch blocks every action of this tenant",
    ("kill_switch", "provider_blocked"): "a kill switch blocks this provider",
    ("kill_switch", "action_blocked"): "a kill switch blocks this action",
    ("firearms", "licence_required"): "this action is dangerous and the subject holds no licence for it",
    ("firearms", "licence_revoked"): "the subject's licence for this action was revoked",
    ("firearms", "licence_expired"): "the subject's licence for this action has expired",
    ("strategy_lock", "lock_required"): "this action needs an approved strategy lock",
    ("strategy_lock", "pending_review"): "the strategy lock for this action awaits three-wise review",
    ("strategy_lock", "lock_expired"): "the strategy lock for this action has expired",
    ("strategy_lock", "lock_rejected"): "the strategy lock for this action was rejected",
    ("budget", "limit_exceeded"): "the estimated cost would exceed the budget for the period",
    ("kpi", "out_of_corridor"): "a KPI parameter lies outside its configured corridor",
    ("temperature", "out_of_corridor"): "a temperature parameter lies outside its configured corridor",
}
# The policy document(s) each gate consults (their versions go into the decision).
GATE_DOCUMENTS: Final[dict[Gate, str]] = {
    "kill_switch": "kill_switches",
    "firearms": "firearms_policy",
    "strategy_lock": "strategy_lock_policy",
    "budget": "budget_policy",
    "kpi": "kpi_corridors",
    "temperature": "temperature_corridors",
}


class Block(msgspec.Struct, kw_only=True, frozen=True):
    gate: Gate
    reason: str
    details: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PreparedCheck:
    """A validated gate request with every policy input the chain needs, read and not yet
    evaluated (:meth:`GateChain.prepare`). ``licences``, ``locks`` and ``totals`` are ``None``
    when the documents made them unnecessary."""

    ctx: RequestContext
    action_name: str
    subject_type: str
    subject_id: str
    params: dict[str, Any]
    estimated_cost: float
    surface_id: str | None
    app_id: str | None
    policies: PolicySet
    licences: list[Licence] | None
    locks: list[StrategyLock] | None
    totals: tuple[dict[str, float], dict[str, float]] | None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _kill_switch(p: PreparedCheck) -> Block | None:
    doc = p.policies.kill_switches
    extra = {"kill_switch_reason": doc.reason} if doc.reason else {}
    if doc.tenant_blocked:
        details = {"tenant_id": p.ctx.tenant_id, **extra}
        return Block(gate="kill_switch", reason="tenant_blocked", details=details)
    provider = p.params.get("provider")
    if isinstance(provider, str) and provider in doc.providers:
        return Block(gate="kill_switch", reason="provider_blocked", details={"provider": provider, **extra})
    if p.action_name in doc.actions:
        return Block(gate="kill_switch", reason="action_blocked", details=extra)
    return None


def _licence_type(policies: PolicySet, action: str) -> str | None:
    """The licence type ``action`` needs, ``None`` when it is not dangerous."""
    return next((b.licence_type for b in policies.firearms_policy.bindings if b.action_name == action), None)


def _needs_lock(policies: PolicySet, action: str, surface: str | None) -> bool:
    return any(
        r.action_name in (None, action) and (r.surface_id is None or r.surface_id == surface)
        for r in policies.strategy_lock_policy.rules
    )


def _has_limits(policies: PolicySet, surface: str | None) -> bool:
    return any(lim.surface_id in (None, surface) for lim in policies.budget_policy.limits)


def _firearms(p: PreparedCheck, now: float) -> Block | None:
    licence_type = _licence_type(p.policies, p.action_name)
    if licence_type is None:
        return None
    assert p.licences is not None  # read by prepare whenever the action is bound
    reason = firearms_reason(p.licences, licence_type, now)
    if reason is None:
        return None
    return Block(gate="firearms", reason=reason, details={"licence_type": licence_type})


def _strategy_lock(p: PreparedCheck, now: float) -> Block | None:
    action, surface = p.action_name, p.surface_id
    if not _needs_lock(p.policies, action, surface):
        return None
    assert p.locks is not None  # read by prepare whenever a rule applies
    locks = [
        lock
        for lock in p.locks
        if lock.action_name in (None, action) and (lock.surface_id is None or lock.surface_id == surface)
    ]
    states = {lock_state(lock, now): lock for lock in locks}
    details: dict[str, Any] = {"surface_id": surface}
    if "approved" in states:
        return None
    for state, reason in (
        ("pending_review", "pending_review"),
        ("expired", "lock_expired"),
        ("rejected", "lock_rejected"),
    ):
        if state in states:
            return Block(
                gate="strategy_lock", reason=reason, details={**details, "lock_id": states[state].lock_id}
            )
    return Block(gate="strategy_lock", reason="lock_required", details=details)


def _budget(p: PreparedCheck) -> Block | None:
    limits = [lim for lim in p.policies.budget_policy.limits if lim.surface_id in (None, p.surface_id)]
    if not limits:
        return None
    assert p.totals is not None  # read by prepare whenever a limit applies
    month, day = p.totals
    for lim in limits:
        totals = month if lim.period == "month" else day
        spent = totals.get(lim.surface_id or TOTAL, 0.0)
        if spent + p.estimated_cost > lim.limit:
            return Block(
                gate="budget",
                reason="limit_exceeded",
                details={
                    "period": lim.period,
                    "surface_id": lim.surface_id,
                    "limit": lim.limit,
                    "spent": spent,
                    "estimated_cost": p.estimated_cost,
                },
            )
    return None


def _corridors(gate: Gate, p: PreparedCheck) -> Block | None:
    doc = p.policies.kpi_corridors if gate == "kpi" else p.policies.temperature_corridors
    for c in doc.corridors:
        if c.action_name not in (None, p.action_name) or c.surface_id not in (None, p.surface_id):
            continue
        if c.parameter not in p.params:
            continue
        raw = p.params[c.parameter]
        value = _number(raw)
        if value is None or (c.min is not None and value < c.min) or (c.max is not None and value > c.max):
            return Block(
                gate=gate,
                reason="out_of_corridor",
                details={
                    "parameter": c.parameter,
                    "value": raw if value is not None else str(raw)[:100],
                    "min": c.min,
                    "max": c.max,
                },
            )
    return None


def _run_gate(gate: Gate, p: PreparedCheck, now: float) -> Block | None:
    if gate == "kill_switch":
        return _kill_switch(p)
    if gate == "firearms":
        return _firearms(p, now)
    if gate == "strategy_lock":
        return _strategy_lock(p, now)
    if gate == "budget":
        return _budget(p)
    return _corridors(gate, p)


def _unrecorded(gate_label: str, message: str, exc: NorthstarError, **details: Any) -> NorthstarError:
    observer().gate_decision(gate_label, "unrecorded")
    return NorthstarError(
        f"{DOMAIN}.decision_unrecorded",
        message,
        503,
        details={"cause": exc.code, **details},
        headers={"Retry-After": "1", **exc.headers},
    )


class GateChain:
    """Implements :class:`northstar_core.ports.ActionGate` (see module doc)."""

    def __init__(
        self,
        policies: PolicyStores,
        budget: BudgetLedger,
        spine: EventSpine,
        clock: Clock,
        timeline: StreamPublisher | None = None,
    ) -> None:
        self.policies = policies
        self.budget = budget
        self.spine = spine
        self.clock = clock
        self.timeline = timeline

    async def prepare(
        self,
        ctx: RequestContext,
        *,
        action_name: str,
        subject_type: str,
        subject_id: str,
        params: dict[str, Any] | None = None,
        estimated_cost: float = 0.0,
        surface_id: str | None = None,
        app_id: str | None = None,
    ) -> PreparedCheck:
        """Validate the request (422 ``gate.invalid_request``) and read every policy input the
        chain needs: the documents in one round trip, then what they call for in a second one
        (none when the kill switch blocks or nothing applies). Writes nothing."""
        for field, value in (
            ("action_name", action_name),
            ("subject_type", subject_type),
            ("subject_id", subject_id),
        ):
            if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
                raise invalid(DOMAIN, f"'{field}' must match {ID_PATTERN.pattern}", field=field)
        for field, opt in (("surface_id", surface_id), ("app_id", app_id)):
            if opt is not None and not ID_PATTERN.fullmatch(opt):
                raise invalid(DOMAIN, f"'{field}' must match {ID_PATTERN.pattern}", field=field)
        if ":" in subject_type:
            # The subject stream is "<type>:<id>": a colon in the type would let ("a:b", "c")
            # and ("a", "b:c") share one stream.
            raise invalid(DOMAIN, "'subject_type' must not contain ':'", field="subject_type")
        if len(subject_stream(subject_type, subject_id)) > 200:
            raise invalid(DOMAIN, "subject_type and subject_id together are too long", field="subject_id")
        cost = _number(estimated_cost)
        if cost is None or not 0 <= cost <= MAX_AMOUNT:
            raise invalid(
                DOMAIN,
                f"'estimated_cost' must be a finite number from 0 to {MAX_AMOUNT:g}",
                field="estimated_cost",
            )
        surface = surface_id or ctx.surface_id
        policies = await self.policies.read_all(ctx)
        prepared = PreparedCheck(
            ctx=ctx,
            action_name=action_name,
            subject_type=subject_type,
            subject_id=subject_id,
            params=params or {},
            estimated_cost=cost,
            surface_id=surface,
            app_id=app_id or ctx.app_id,
            policies=policies,
            licences=None,
            locks=None,
            totals=None,
        )
        if _kill_switch(prepared) is not None:
            return prepared  # the first gate blocks: nothing after it is consulted

        async def none() -> None:
            return None

        licences, locks, totals = await asyncio.gather(
            self.policies.subject_licences(ctx, subject_type, subject_id)
            if _licence_type(policies, action_name) is not None
            else none(),
            self.policies.locks_matching(ctx, surface, action_name)
            if _needs_lock(policies, action_name, surface)
            else none(),
            self.budget.totals(ctx) if _has_limits(policies, surface) else none(),
        )
        return dataclasses.replace(prepared, licences=licences, locks=locks, totals=totals)

    async def decide(self, prepared: PreparedCheck, *, dry_run: bool = False) -> dict[str, Any]:
        """Evaluate the chain on ``prepared``; return the recorded allow decision or raise the
        403 gate envelope (503 ``gate.decision_unrecorded`` if it could not be recorded).

        ``dry_run`` (``POST /actions/check``): the decision is recorded on the spine marked
        ``dry_run`` and returned, deny included; it is not published on the subject's stream,
        whose readers act on decisions (a UI blocks on a ``safety_decision``).
        """
        decision, _ = await self._decide(prepared, dry_run=dry_run, publish=True)
        return decision

    async def decide_unpublished(
        self, prepared: PreparedCheck
    ) -> tuple[dict[str, Any], PendingEvent | None]:
        """:meth:`decide`, leaving an allow decision unpublished: it is recorded on the spine
        only, and returned with the ``safety_decision`` event the caller must publish on the
        subject's stream with the action it allowed (``None`` without a stream publisher).
        A deny is recorded and published here, as by :meth:`decide`, and raises."""
        return await self._decide(prepared, dry_run=False, publish=False)

    async def _decide(
        self, prepared: PreparedCheck, *, dry_run: bool, publish: bool
    ) -> tuple[dict[str, Any], PendingEvent | None]:
        p = prepared
        ctx = p.ctx
        now = self.clock.now()
        versions: dict[str, int] = {}
        block: Block | None = None
        for gate in GATES:
            name = GATE_DOCUMENTS[gate]
            versions[name] = p.policies.versions[name]
            block = _run_gate(gate, p, now)
            if block is not None:
                break
        decision: dict[str, Any] = {
            "decision": "deny" if block else "allow",
            "gate": block.gate if block else None,
            "code": f"gate.{block.gate}.{block.reason}" if block else None,
            "reason": block.reason if block else "all_gates_passed",
            "action_name": p.action_name,
            "subject_type": p.subject_type,
            "subject_id": p.subject_id,
            "surface_id": p.surface_id,
            "app_id": p.app_id,
            "estimated_cost": p.estimated_cost,
            "policy_versions": versions,
            "details": block.details if block else {},
            "dry_run": dry_run,
        }
        gate_label = block.gate if block else "none"
        event_id = self.spine.new_event_id()
        recorded = self.spine.record(ctx, "safety", decision, source="system", event_id=event_id)
        # The stream event names the spine event by the id taken here; its idempotency key
        # embeds that brand-new id, so whoever publishes it need not look the key up.
        pending = (
            None
            if dry_run or self.timeline is None
            else PendingEvent(
                stream_id=subject_stream(p.subject_type, p.subject_id),
                type="safety_decision",
                data={**decision, "event_id": event_id},
                idempotency_key=f"safety-{event_id}",
            )
        )
        published: Any = None
        if pending is None or (publish is False and block is None):
            try:
                await recorded
            except NorthstarError as exc:
                raise _unrecorded(
                    gate_label,
                    "the gate decision could not be recorded on the event spine; the action did not run",
                    exc,
                ) from exc
        else:
            assert self.timeline is not None
            # Both writes go out together (the stream event already names the spine event).
            outcome = await asyncio.gather(
                recorded,
                self.timeline.publish(
                    ctx,
                    pending.stream_id,
                    pending.type,
                    pending.data,
                    idempotency_key=pending.idempotency_key,
                    key_checked=True,
                ),
                return_exceptions=True,
            )
            for result in outcome:
                if isinstance(result, BaseException) and not isinstance(result, NorthstarError):
                    raise result
            spine_error, published = outcome
            if isinstance(spine_error, NorthstarError):
                raise _unrecorded(
                    gate_label,
                    "the gate decision could not be recorded on the event spine; the action did not run",
                    spine_error,
                ) from spine_error
            if isinstance(published, NorthstarError):
                if block is None:
                    raise _unrecorded(
                        gate_label,
                        "the gate decision could not be published on the subject's stream; "
                        "the action did not run",
                        published,
                        event_id=event_id,
                    ) from published
                published = None  # a deny stays a deny (and is on the spine) even if the stream is down
            pending = None  # published
        decision["event_id"] = event_id
        if dry_run:
            return decision, None  # deny included: a dry run answers, it does not refuse
        if published is not None:
            decision["stream_cursor"] = published
        observer().gate_decision(gate_label, "deny" if block is not None else "allow")
        if block is not None:
            raise gate_blocked(
                block.gate,
                block.reason,
                MESSAGES.get((block.gate, block.reason), "blocked by policy"),
                **block.details,
                action_name=p.action_name,
                subject_type=p.subject_type,
                subject_id=p.subject_id,
                event_id=event_id,
                policy_versions=versions,
            )
        return decision, pending

    async def check(
        self,
        ctx: RequestContext,
        *,
        action_name: str,
        subject_type: str,
        subject_id: str,
        params: dict[str, Any] | None = None,
        estimated_cost: float = 0.0,
        surface_id: str | None = None,
        app_id: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """:meth:`prepare` then :meth:`decide`: the recorded allow decision or the 403 envelope."""
        prepared = await self.prepare(
            ctx,
            action_name=action_name,
            subject_type=subject_type,
            subject_id=subject_id,
            params=params,
            estimated_cost=estimated_cost,
            surface_id=surface_id,
            app_id=app_id,
        )
        return await self.decide(prepared, dry_run=dry_run)


__all__ = ["MESSAGES", "Block", "GateChain", "PreparedCheck"]
