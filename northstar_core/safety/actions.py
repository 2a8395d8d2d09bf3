"""``/actions/execute`` and ``/actions/check``: the tool choke point — handlers behind the gate chain.

A handler runs one action name. It is an async callable ``handler(ctx, request) -> result``
(:class:`ActionHandler`) registered by the composition root from configuration (``[[actions]]``:
an import string or an operator's webhook) or by an embedding application
(``engines.actions.register("send_email", handler)``). It may return an :class:`ActionOutcome`
to report its actual cost, and raises :class:`HandlerFailed` when it could not produce a result.

:meth:`ActionService.execute`:

1. validates the request (422 ``actions.invalid_request``, nothing written);
2. answers 404 ``actions.unknown_action`` for an action nobody registered;
3. with an ``idempotency_key``: a request that already completed is answered from its
   completion record (``replayed: true``; nothing runs, nothing is charged again); while another
   request with the key is running it is 409 ``actions.in_progress``; the key with another
   payload is 422 ``actions.idempotency_mismatch``; otherwise the request claims the key;
4. runs the gate chain (every decision recorded on the spine and the subject's stream; a block
   is the gate's 403 envelope and the handler never runs);
5. on allow runs the handler; a failure is 502 ``actions.handler_failed`` (audited, nothing
   charged, the key released so that a retry runs the action again);
6. records the usage on the budget ledger — once, keyed by the decision — and an ``analytics``
   event (outcome, latency, cost), and returns the result.

:meth:`ActionService.check` runs the gate chain only: the decision is recorded on the spine
marked ``dry_run``, nothing runs and nothing is charged; a block is an answer, not an error.

Completion records (versioned records named by the key in ``budget_store``, one partition per
tenant, mode and user, so one caller's keys never collide with another's) move ``pending`` →
``ran`` → ``done``; every move names the version it replaces. ``ran``
is written as soon as the handler returns, before the ledger: a retry that finds it finishes the
accounting with the same ledger key instead of running the handler again, so neither a webhook
call nor a cost is ever doubled by a retry. A ``pending`` claim holds a lease (the handler's
timeout plus a margin); a claim whose run died with its process is taken over after it. The
claim and the gate chain's policy reads (:meth:`GateChain.prepare`) run concurrently: neither
writes anything the other reads.

The registry knows only *names*; what is dangerous is decided by the policy stores alone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal, Protocol

import msgspec

from northstar_core.bounds import MAX_AMOUNT, check_float
from northstar_core.clock import Clock
from northstar_core.errors import NorthstarError, idempotency_mismatch, invalid
from northstar_core.identity import ID_PATTERN, RequestContext
from northstar_core.kernel.idempotency import fingerprint
from northstar_core.kernel.records import MAX_RECORD_BYTES, VersionedRecords
from northstar_core.routing import RoutingRegistry
from northstar_core.safety.budget import KIND as BUDGET_KIND
from northstar_core.safety.budget import BudgetLedger, UsageEntry, UsageIn
from northstar_core.safety.gates import GateChain, PreparedCheck
from northstar_core.scope import partition, subject_segment
from northstar_core.spine import EventSpine

DOMAIN: Final = "actions"
_USAGE_ATTEMPTS: Final = 4
_CLAIM_ATTEMPTS: Final = 8
# A pending claim outlives the handler's own timeout by this much before a retry may take over.
LEASE_MARGIN_SECONDS: Final = 30.0
# The lease of a handler that declares no timeout (an in-process function).
DEFAULT_LEASE_SECONDS: Final = 120.0
# A completion record must fit one item with room to spare; a larger result is not kept for
# replays (``result_omitted``), the live answer still carries it.
_RECORD_LIMIT: Final = MAX_RECORD_BYTES - 16_384
ANALYTICS_NAME: Final = "action.executed"

log = logging.getLogger(__name__)


class ActionRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    action_name: str
    subject_type: str
    subject_id: str
    surface_id: str | None = None
    app_id: str | None = None
    params: dict[str, Any] = {}
    estimated_cost: float = 0.0
    # A retry with the same key never runs the handler twice once it has run (see module doc).
    # Handlers always see a key: the caller's, else ``decision-<the gate decision's event id>``.
    idempotency_key: str | None = None

    def resolved(self, ctx: RequestContext) -> dict[str, Any]:
        """The action as it runs: the surface and app the caller's context supplies when the
        request names none. Its digest is the key's payload fingerprint, and a webhook handler
        receives it."""
        return {
            "action_name": self.action_name,
            "subject_type": self.subject_type,
            "subject_id": self.subject_id,
            "surface_id": self.surface_id or ctx.surface_id,
            "app_id": self.app_id or ctx.app_id,
            "params": self.params,
            "estimated_cost": self.estimated_cost,
        }


class ActionOutcome(msgspec.Struct, kw_only=True):
    """What a handler may return to report the actual cost (else the estimate is recorded)."""

    result: Any = None
    cost: float | None = None


class HandlerFailed(Exception):
    """A handler could not produce a result (a webhook's timeout, non-2xx answer, oversized or
    invalid response...). Answered 502 ``actions.handler_failed`` with ``reason`` and
    ``details``; nothing is charged."""

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.details = details


class ActionHandler(Protocol):
    """The handler protocol: ``await handler(ctx, request)`` returns a JSON-able result or an
    :class:`ActionOutcome`. Optional attributes: ``kind`` (reported in analytics, default
    ``"python"``), ``timeout_seconds`` (sizes the idempotency lease), ``aclose()`` (called when
    the engines close)."""

    def __call__(self, ctx: RequestContext, request: ActionRequest) -> Awaitable[Any]: ...


Handler = Callable[[RequestContext, ActionRequest], Awaitable[Any]]


class AnalyticsSink(Protocol):
    """Where action executions are reported (``AnalyticsService`` satisfies it)."""

    async def record(self, ctx: RequestContext, event: Mapping[str, Any]) -> Any: ...


class ActionRegistry:
    """Action name → async handler."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, name: str, handler: Handler) -> None:
        if not ID_PATTERN.fullmatch(name):
            raise ValueError(f"action name must match {ID_PATTERN.pattern}")
        self._handlers[name] = handler

    def unregister(self, name: str) -> None:
        self._handlers.pop(name, None)

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def all(self) -> list[Handler]:
        return list(self._handlers.values())

    def __contains__(self, name: object) -> bool:
        return name in self._handlers


def decode_request(body: Any) -> ActionRequest:
    try:
        if isinstance(body, bytes | bytearray):
            request = msgspec.json.decode(bytes(body), type=ActionRequest)
        else:
            request = msgspec.convert(body, type=ActionRequest)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise invalid(DOMAIN, f"invalid action request: {exc}", reason=str(exc)) from None
    for field in ("action_name", "subject_type", "subject_id", "surface_id", "app_id", "idempotency_key"):
        value = getattr(request, field)
        if value is not None and not ID_PATTERN.fullmatch(value):
            message = f"'{field}' must match {ID_PATTERN.pattern}"
            raise invalid(DOMAIN, message, field=field, value=value[:200])
    # The cost reaches the budget gate and the ledger: bounded like any usage amount.
    cost = check_float(DOMAIN, "estimated_cost", request.estimated_cost, lo=0.0, hi=MAX_AMOUNT)
    return msgspec.structs.replace(request, estimated_cost=cost)


def _reported_cost(cost: Any) -> float | None:
    """A handler's reported cost if it is a finite number, zero or more (else the estimate)."""
    if cost is None or isinstance(cost, bool):
        return None
    try:
        number = float(cost)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def handler_kind(handler: Any) -> str:
    kind = getattr(handler, "kind", None)
    return kind if isinstance(kind, str) else "python"


def handler_lease(handler: Any) -> float:
    timeout = getattr(handler, "timeout_seconds", None)
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and math.isfinite(timeout):
        return max(float(timeout), 0.0) + LEASE_MARGIN_SECONDS
    return DEFAULT_LEASE_SECONDS


# --- completion records ------------------------------------------------------------------------


class _Completion(msgspec.Struct, kw_only=True):
    state: Literal["pending", "ran", "done"]
    fingerprint: str
    lease_until: float = 0.0
    decision: dict[str, Any] | None = None
    result: Any = None
    result_omitted: bool = False
    cost: float = 0.0
    latency_ms: float = 0.0
    handler: str = "python"
    # the 502 a run ended with after its handler returned (a result that is not JSON)
    error: dict[str, Any] | None = None
    response: dict[str, Any] | None = None


def _encode_record(record: _Completion) -> bytes:
    data = msgspec.json.encode(record)
    if len(data) <= _RECORD_LIMIT:
        return data
    response = dict(record.response) if record.response is not None else None
    if response is not None:
        response["result"] = None
        response["result_omitted"] = True
    slim = msgspec.structs.replace(record, result=None, result_omitted=True, response=response)
    return msgspec.json.encode(slim)


class _Claim:
    """This request's hold on an idempotency key (the record's version it last wrote)."""

    def __init__(self, records: VersionedRecords, key: str, version: int) -> None:
        self.records = records
        self.key = key
        self.version = version

    async def save(self, record: _Completion) -> bool:
        """Move the record on; False if another request holds the key now."""
        try:
            self.version = await self.records.put(
                self.key, _encode_record(record), expected_version=self.version
            )
        except NorthstarError as exc:
            if exc.http_status != 409:
                raise
            return False
        return True

    async def release(self) -> None:
        """Give the key back after a run that charged nothing, so that a retry runs again.

        Best effort: if the store cannot be reached, the lease expires instead."""
        try:
            released = await self.records.discard(self.key, self.version)
        except NorthstarError as exc:
            log.warning("action idempotency key %s not released: %r", self.key, exc)
            return
        if not released:
            log.warning("action idempotency key %s not released: it changed hands", self.key)


def _in_progress(key: str, remaining: float) -> NorthstarError:
    retry = max(1, math.ceil(remaining)) if math.isfinite(remaining) else 1
    return NorthstarError(
        f"{DOMAIN}.in_progress",
        "a request with this idempotency key is still running; retry later",
        409,
        details={"idempotency_key": key, "retry_after_seconds": retry},
        headers={"Retry-After": str(retry)},
    )


# --- the service -------------------------------------------------------------------------------


class ActionService:
    """Gate, run, account (see module doc). ``engines.actions`` is this object."""

    def __init__(
        self,
        gate: GateChain,
        budget: BudgetLedger,
        spine: EventSpine,
        *,
        analytics: AnalyticsSink | None = None,
        registry: RoutingRegistry | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.gate = gate
        self.budget = budget
        self.spine = spine
        self.analytics = analytics
        # Completion records live in the ledger's store: they are what keeps it from counting
        # an action twice, and a tenant admin can re-route neither.
        self.registry = registry or budget.registry
        self.clock = clock or gate.clock
        self.handlers = ActionRegistry()

    def register(self, name: str, handler: Handler) -> None:
        """Register the handler that runs ``name`` once the gate chain allows it."""
        self.handlers.register(name, handler)

    async def close(self) -> None:
        """Release what handlers hold (a webhook's HTTP client)."""
        for handler in self.handlers.all():
            aclose = getattr(handler, "aclose", None)
            if callable(aclose):
                try:
                    await aclose()
                except Exception as exc:  # closing one must not keep the others open
                    log.warning("closing an action handler failed: %r", exc)

    # --- requests ------------------------------------------------------------------------------

    @staticmethod
    def _check_surface(ctx: RequestContext, request: ActionRequest) -> None:
        if request.surface_id and ctx.surface_id and request.surface_id != ctx.surface_id:
            raise invalid(
                DOMAIN, "'surface_id' contradicts the request's surface (X-Surface-Id)", field="surface_id"
            )

    async def _prepare(self, ctx: RequestContext, request: ActionRequest) -> PreparedCheck:
        return await self.gate.prepare(
            ctx,
            action_name=request.action_name,
            subject_type=request.subject_type,
            subject_id=request.subject_id,
            params=request.params,
            estimated_cost=request.estimated_cost,
            surface_id=request.surface_id,
            app_id=request.app_id,
        )

    async def check(self, ctx: RequestContext, body: Any) -> dict[str, Any]:
        """The gate chain's decision without running anything (a recorded dry run).

        Answers allow and deny alike: ``{action_name, allowed, dry_run, registered, decision}``.
        """
        ctx.require_role("member")
        request = decode_request(body)
        self._check_surface(ctx, request)
        decision = await self.gate.decide(await self._prepare(ctx, request), dry_run=True)
        return {
            "action_name": request.action_name,
            "allowed": decision["decision"] == "allow",
            "dry_run": True,
            "registered": request.action_name in self.handlers,
            "decision": decision,
        }

    async def execute(self, ctx: RequestContext, body: Any) -> dict[str, Any]:
        ctx.require_role("member")
        request = decode_request(body)
        self._check_surface(ctx, request)
        handler = self.handlers.get(request.action_name)
        if handler is None:
            raise NorthstarError(
                f"{DOMAIN}.unknown_action",
                f"no handler is registered for action '{request.action_name}'",
                404,
                details={"action_name": request.action_name},
            )
        key = request.idempotency_key
        if key is None:
            return await self._run(ctx, request, handler, None, "", await self._prepare(ctx, request))
        fp = fingerprint(request.resolved(ctx))
        claimed, prepared = await asyncio.gather(
            self._claim(ctx, key, fp, handler_lease(handler)),
            self._prepare(ctx, request),
            return_exceptions=True,
        )
        for outcome in (claimed, prepared):
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome  # cancelled: nothing to decide
        if isinstance(claimed, BaseException):
            raise claimed  # the key's answer (in progress, mismatch…) comes before the gate's
        record, claim = claimed
        if record.state == "done":
            return self._replay(request, record)
        if record.state == "ran":
            # The handler ran but the accounting did not finish: finish it, never run again.
            return await self._finish(ctx, request, record, claim, replayed=True)
        if isinstance(prepared, BaseException):
            await claim.release()
            raise prepared
        return await self._run(ctx, request, handler, claim, fp, prepared)

    async def _claim(
        self, ctx: RequestContext, key: str, fp: str, lease: float
    ) -> tuple[_Completion, _Claim]:
        store = await self.registry.store_for(BUDGET_KIND, ctx.tenant_id)
        records = VersionedRecords(store, partition(ctx, DOMAIN, subject_segment(ctx.user_id)), DOMAIN)
        for _ in range(_CLAIM_ATTEMPTS):
            item = await records.get(key)
            now = self.clock.now()
            fresh = _Completion(state="pending", fingerprint=fp, lease_until=now + lease)
            if item is None:
                if not await self._claimed(records, key, fresh, None):
                    continue  # a concurrent request claimed it first: look again
                return fresh, _Claim(records, key, 1)
            record = msgspec.json.decode(item.value, type=_Completion)
            if record.fingerprint != fp:
                raise idempotency_mismatch(DOMAIN, key)
            if record.state != "pending":
                return record, _Claim(records, key, item.version)
            if record.lease_until > now:
                raise _in_progress(key, record.lease_until - now)
            # The run that held the key stopped before its handler returned (its process died):
            # take the key over. A webhook receiver sees the same Idempotency-Key again.
            if not await self._claimed(records, key, fresh, item.version):
                continue
            return fresh, _Claim(records, key, item.version + 1)
        raise _in_progress(key, 1.0)

    @staticmethod
    async def _claimed(
        records: VersionedRecords, key: str, fresh: _Completion, expected_version: int | None
    ) -> bool:
        """Write a fresh claim over ``expected_version`` (``None``: the key is unused); False
        when a concurrent request moved the key first."""
        try:
            await records.put(key, _encode_record(fresh), expected_version=expected_version)
        except NorthstarError as exc:
            if exc.http_status != 409:
                raise
            return False
        return True

    @staticmethod
    def _replay(request: ActionRequest, record: _Completion) -> dict[str, Any]:
        if record.error is not None:
            raise NorthstarError(
                f"{DOMAIN}.handler_failed",
                str(record.error.get("message", f"the handler for '{request.action_name}' failed")),
                502,
                details={**record.error.get("details", {}), "replayed": True},
            )
        assert record.response is not None  # a done record without an error holds the answer
        return {**record.response, "replayed": True}

    async def _run(
        self,
        ctx: RequestContext,
        request: ActionRequest,
        handler: Handler,
        claim: _Claim | None,
        fp: str,
        prepared: PreparedCheck,
    ) -> dict[str, Any]:
        try:
            decision = await self.gate.decide(prepared)
        except Exception:
            if claim is not None:
                await claim.release()
            raise
        invoked = msgspec.structs.replace(
            request, idempotency_key=request.idempotency_key or f"decision-{decision['event_id']}"
        )
        kind = handler_kind(handler)
        started = time.perf_counter()
        try:
            returned = await handler(ctx, invoked)
        except NorthstarError as exc:
            await self._failed(ctx, request, decision, claim, kind, started, exc.code, None)
            raise
        except HandlerFailed as exc:
            await self._failed(ctx, request, decision, claim, kind, started, exc.reason, exc.message)
            raise NorthstarError(
                f"{DOMAIN}.handler_failed",
                f"the handler for '{request.action_name}' failed: {exc.message}",
                502,
                details={
                    **exc.details,
                    "action_name": request.action_name,
                    "error": type(exc).__name__,
                    "reason": exc.reason,
                },
            ) from exc
        except Exception as exc:  # a handler's bug must not become a 500 or vanish
            await self._failed(ctx, request, decision, claim, kind, started, "exception", repr(exc)[:500])
            raise NorthstarError(
                f"{DOMAIN}.handler_failed",
                f"the handler for '{request.action_name}' failed",
                502,
                details={"action_name": request.action_name, "error": type(exc).__name__},
            ) from exc
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        cost = request.estimated_cost
        result = returned
        if isinstance(returned, ActionOutcome):
            result = returned.result
            reported = _reported_cost(returned.cost)
            if reported is not None:
                # The handler already ran: its cost must reach the ledger, at most one amount.
                cost = min(reported, MAX_AMOUNT)
        error: dict[str, Any] | None = None
        try:
            result = msgspec.json.decode(msgspec.json.encode(result))
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            result = None
            error = {
                "message": f"the handler for '{request.action_name}' returned a result that is not JSON",
                "details": {
                    "action_name": request.action_name,
                    "error": type(exc).__name__,
                    "reason": "non_json_result",
                },
            }
        record = _Completion(
            state="ran",
            fingerprint=fp,
            decision=decision,
            result=result,
            cost=cost,
            latency_ms=latency_ms,
            handler=kind,
            error=error,
        )
        if claim is not None and not await claim.save(record):
            log.warning("action %s: idempotency key %s was taken over", request.action_name, claim.key)
            claim = None
        return await self._finish(ctx, request, record, claim, replayed=False)

    async def _failed(
        self,
        ctx: RequestContext,
        request: ActionRequest,
        decision: dict[str, Any],
        claim: _Claim | None,
        kind: str,
        started: float,
        reason: str,
        error: str | None,
    ) -> None:
        """A run whose handler produced nothing: release the key, audit, report; charge nothing."""
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        if claim is not None:
            await claim.release()
        if error is not None:
            await self.spine.record(
                ctx,
                "audit",
                {
                    "action": "action_failed",
                    "action_name": request.action_name,
                    "reason": reason,
                    "error": error[:500],
                },
                parent_event_id=decision["event_id"],
            )
        await self._report(ctx, request, decision, "failed", latency_ms, 0.0, kind, reason)

    async def _finish(
        self,
        ctx: RequestContext,
        request: ActionRequest,
        record: _Completion,
        claim: _Claim | None,
        *,
        replayed: bool,
    ) -> dict[str, Any]:
        """The accounting after the handler ran: ledger, analytics, then the done record."""
        decision = record.decision or {}
        entry = await self._record_usage(ctx, request, record.cost, f"action-{decision['event_id']}")
        failed = record.error is not None
        if failed:
            # keyed by the decision: a retry finishing this run does not audit it twice
            await self.spine.record(
                ctx,
                "audit",
                {
                    "action": "action_failed",
                    "action_name": request.action_name,
                    "reason": "non_json_result",
                    "error": "non-JSON result",
                },
                parent_event_id=decision["event_id"],
                idempotency_key=f"action-failed-{decision['event_id']}",
                request_fingerprint=str(decision["event_id"]),
            )
        await self._report(
            ctx,
            request,
            decision,
            "failed" if failed else "ok",
            record.latency_ms,
            entry.amount,
            record.handler,
            "non_json_result" if failed else None,
        )
        response: dict[str, Any] | None = None
        if not failed:
            response = {
                "action_name": request.action_name,
                "result": record.result,
                "decision": decision,
                "usage": {"amount": entry.amount, "shard": entry.shard, "seq": entry.seq},
                "idempotency_key": request.idempotency_key,
                "replayed": replayed,
            }
            if record.result_omitted:
                response["result_omitted"] = True
        if claim is not None:
            done = msgspec.structs.replace(record, state="done", response=response)
            if not await claim.save(done):
                log.warning("action %s: completion of key %s not saved", request.action_name, claim.key)
        if record.error is not None:
            details = dict(record.error.get("details", {}))
            if replayed:
                details["replayed"] = True
            message = str(record.error["message"])
            raise NorthstarError(f"{DOMAIN}.handler_failed", message, 502, details=details)
        assert response is not None
        return response

    async def _record_usage(
        self, ctx: RequestContext, request: ActionRequest, cost: float, key: str
    ) -> UsageEntry:
        usage = UsageIn(
            amount=cost,
            surface_id=request.surface_id or ctx.surface_id,
            action_name=request.action_name,
            idempotency_key=key,
        )
        # The handler has run: its cost must reach the ledger. The key is unique to the gate
        # decision, so retrying (here after contention, or a later request finishing this run)
        # can never count the cost twice.
        for attempt in range(_USAGE_ATTEMPTS):
            try:
                entry, _ = await self.budget.record(ctx, usage)
                return entry
            except NorthstarError as exc:
                if exc.code != "budget.contention" or attempt == _USAGE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _report(
        self,
        ctx: RequestContext,
        request: ActionRequest,
        decision: dict[str, Any],
        outcome: str,
        latency_ms: float,
        cost: float,
        kind: str,
        reason: str | None,
    ) -> None:
        """One ``analytics`` event per execution (spine + analytics store), keyed by the decision.

        Telemetry, not accounting: the decision, the usage and any failure are already on the
        spine, so a failure to report is logged and does not turn a completed action into an
        error (a retry with the same idempotency key reports it again, once).
        """
        if self.analytics is None:
            return
        properties: dict[str, Any] = {
            "action_name": request.action_name,
            "subject_type": request.subject_type,
            "subject_id": request.subject_id,
            "outcome": outcome,
            "latency_ms": latency_ms,
            "cost": cost,
            "handler": kind,
            "decision_event_id": decision.get("event_id"),
        }
        if reason is not None:
            properties["reason"] = reason
        event = {
            "kind": "custom",
            "name": ANALYTICS_NAME,
            "properties": properties,
            "idempotency_key": f"action-{decision.get('event_id')}",
        }
        try:
            await self.analytics.record(ctx, event)
        except NorthstarError as exc:
            log.warning("action %s: analytics event not recorded: %s", request.action_name, exc.code)
