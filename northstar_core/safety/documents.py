"""Versioned policy documents: every rule the gate chain applies is data kept here.

Nothing outside the safety stores decides what is dangerous, what needs a lock, what a budget
is or where a corridor lies: the gate chain only reads these documents (fresh on every call —
no cache, so a revocation written by one process is seen by the next call of any other).

* kill switches, KPI corridors, temperature corridors — ``config_store``;
* firearms policy (dangerous action → licence type) and grants — ``firearms_policy_store``;
* strategy-lock policy (which actions/surfaces need a lock) — ``strategy_policy_store``;
* budget limits — ``budget_store``.

Each document is a :class:`~northstar_core.kernel.records.VersionedRecords` record ``doc#<name>``
(with history) in the tenant's ``safety_policy`` partition of its kind's store: every write
names the version it replaces (``expected_version``; 0 = the document does not exist yet), a
stale write is 409 ``<domain>.version_conflict`` with the current version. Writes need the
``admin`` role or above and each is recorded on the event spine.

All documents share the ``doc#`` key prefix, so :meth:`PolicyDocuments.read_all` reads every
document with one query per distinct backing store (kinds routed to one table share it), the
queries running concurrently: one round trip for a gate decision's policy documents.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final, Literal, TypeVar

import msgspec

from northstar_core.bounds import MAX_MAGNITUDE, MAX_TOTAL, MAX_VERSION, check_float, check_int
from northstar_core.clock import Clock, iso
from northstar_core.errors import invalid
from northstar_core.identity import RequestContext
from northstar_core.kernel.ids import UUIDv7Generator
from northstar_core.kernel.records import VersionedRecords, record_key
from northstar_core.routing import KindStore, RoutingRegistry
from northstar_core.safety.checks import check_name, convert
from northstar_core.scope import partition
from northstar_core.spine import EventSpine

DOC_PREFIX: Final = "doc#"

# --- document shapes -----------------------------------------------------------------------------


class PolicyDoc(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The base of every policy document and request body shape: unknown fields are refused."""


D = TypeVar("D", bound=PolicyDoc)


class KillSwitches(PolicyDoc):
    """Blocks: the whole tenant, named providers (``params.provider``), named actions."""

    tenant_blocked: bool = False
    providers: list[str] = []
    actions: list[str] = []
    reason: str | None = None


class FirearmsBinding(PolicyDoc):
    action_name: str
    licence_type: str


class FirearmsPolicy(PolicyDoc):
    """Which actions are dangerous and which licence type each needs."""

    bindings: list[FirearmsBinding] = []


class FirearmsGrant(PolicyDoc):
    """Who may be issued a licence type (``subject_id`` ``*`` = every subject of the type)."""

    licence_type: str
    subject_type: str
    subject_id: str = "*"


class FirearmsGrants(PolicyDoc):
    grants: list[FirearmsGrant] = []


class LockRule(PolicyDoc):
    """An action and/or a surface that requires an approved strategy lock."""

    action_name: str | None = None
    surface_id: str | None = None


class StrategyLockPolicy(PolicyDoc):
    rules: list[LockRule] = []
    required_approvals: int = 3


class BudgetLimit(PolicyDoc):
    """Spend allowed per period; ``surface_id`` None = the tenant as a whole."""

    period: Literal["day", "month"]
    limit: float
    surface_id: str | None = None


class BudgetPolicy(PolicyDoc):
    limits: list[BudgetLimit] = []


class Corridor(PolicyDoc):
    """``params[parameter]`` must lie in ``[min, max]`` (for the action/surface, if named)."""

    parameter: str
    min: float | None = None
    max: float | None = None
    action_name: str | None = None
    surface_id: str | None = None


class Corridors(PolicyDoc):
    corridors: list[Corridor] = []


DOC_TYPES: Final[dict[str, tuple[str, type[PolicyDoc], str]]] = {
    # name: (resource kind, type, error domain)
    "kill_switches": ("config_store", KillSwitches, "kill_switch"),
    "kpi_corridors": ("config_store", Corridors, "kpi"),
    "temperature_corridors": ("config_store", Corridors, "temperature"),
    "firearms_policy": ("firearms_policy_store", FirearmsPolicy, "firearms"),
    "firearms_grants": ("firearms_policy_store", FirearmsGrants, "firearms"),
    "strategy_lock_policy": ("strategy_policy_store", StrategyLockPolicy, "strategy_lock"),
    "budget_policy": ("budget_store", BudgetPolicy, "budget"),
}
DOC_KINDS: Final = tuple(sorted({kind for kind, _, _ in DOC_TYPES.values()}))


class PolicyDocument(msgspec.Struct, kw_only=True, frozen=True):
    """A policy document as read: its body, version (0 = never written) and provenance."""

    name: str
    version: int
    policy: dict[str, Any]
    updated_at: str | None = None
    updated_by: str | None = None


class _Stored(msgspec.Struct, kw_only=True):
    policy: dict[str, Any]
    updated_at: str
    updated_by: str


class PolicySet(msgspec.Struct, kw_only=True, frozen=True):
    """Every policy document as read by one :meth:`PolicyDocuments.read_all`, typed, with the
    version of each (0 = never written: the empty default applies)."""

    kill_switches: KillSwitches
    firearms_policy: FirearmsPolicy
    firearms_grants: FirearmsGrants
    strategy_lock_policy: StrategyLockPolicy
    budget_policy: BudgetPolicy
    kpi_corridors: Corridors
    temperature_corridors: Corridors
    versions: dict[str, int]


def _document(name: str, version: int, value: bytes | None) -> PolicyDocument:
    if value is None:
        return PolicyDocument(name=name, version=0, policy=msgspec.to_builtins(DOC_TYPES[name][1]()))
    stored = msgspec.json.decode(value, type=_Stored)
    return PolicyDocument(
        name=name,
        version=version,
        policy=stored.policy,
        updated_at=stored.updated_at,
        updated_by=stored.updated_by,
    )


def _validate_doc(name: str, doc: PolicyDoc) -> None:
    """Semantic checks beyond the shape (ids well formed, corridors ordered…)."""
    domain = DOC_TYPES[name][2]
    if isinstance(doc, KillSwitches):
        for p in doc.providers:
            check_name(domain, "providers[]", p)
        for a in doc.actions:
            check_name(domain, "actions[]", a)
    elif isinstance(doc, FirearmsPolicy):
        seen: set[str] = set()
        for b in doc.bindings:
            check_name(domain, "action_name", b.action_name)
            check_name(domain, "licence_type", b.licence_type)
            if b.action_name in seen:
                raise invalid(domain, f"action '{b.action_name}' is bound twice", action_name=b.action_name)
            seen.add(b.action_name)
    elif isinstance(doc, FirearmsGrants):
        for g in doc.grants:
            check_name(domain, "licence_type", g.licence_type)
            check_name(domain, "subject_type", g.subject_type)
            if g.subject_id != "*":
                check_name(domain, "subject_id", g.subject_id)
    elif isinstance(doc, StrategyLockPolicy):
        if not 1 <= doc.required_approvals <= 10:
            raise invalid(domain, "'required_approvals' must be between 1 and 10")
        for r in doc.rules:
            if r.action_name is None and r.surface_id is None:
                raise invalid(domain, "a rule names an action, a surface or both")
            check_name(domain, "action_name", r.action_name)
            check_name(domain, "surface_id", r.surface_id)
    elif isinstance(doc, BudgetPolicy):
        for i, lim in enumerate(doc.limits):
            # Spend is compared with the limit: both stay within the ledger's total bound.
            check_float(domain, f"limits[{i}].limit", lim.limit, lo=0.0, hi=MAX_TOTAL)
            check_name(domain, "surface_id", lim.surface_id)
    elif isinstance(doc, Corridors):
        for i, c in enumerate(doc.corridors):
            check_name(domain, "parameter", c.parameter)
            check_name(domain, "action_name", c.action_name)
            check_name(domain, "surface_id", c.surface_id)
            for bound in ("min", "max"):
                value = getattr(c, bound)
                if value is not None:
                    check_float(
                        domain, f"corridors[{i}].{bound}", value, lo=-MAX_MAGNITUDE, hi=MAX_MAGNITUDE
                    )
            if c.min is None and c.max is None:
                raise invalid(domain, "a corridor needs 'min', 'max' or both", parameter=c.parameter)
            if c.min is not None and c.max is not None and c.min > c.max:
                raise invalid(domain, "corridor 'min' exceeds 'max'", parameter=c.parameter)


class PolicyDocuments:
    """The versioned policy documents of a tenant (see module doc).

    The base of the licence and lock stores, which keep their records in the same
    ``safety_policy`` partitions and record their changes on the same spine.
    """

    def __init__(self, registry: RoutingRegistry, clock: Clock, spine: EventSpine) -> None:
        self.registry = registry
        self.clock = clock
        self.spine = spine
        self.ids = UUIDv7Generator()

    @staticmethod
    def _records_in(store: KindStore, ctx: RequestContext, domain: str) -> VersionedRecords:
        return VersionedRecords(store, partition(ctx, "safety_policy"), domain, history=True)

    async def records(self, ctx: RequestContext, kind: str, domain: str) -> VersionedRecords:
        """The tenant's safety-policy records in ``kind``'s store (errors named ``domain``)."""
        return self._records_in(await self.registry.store_for(kind, ctx.tenant_id), ctx, domain)

    async def get_document(self, ctx: RequestContext, name: str) -> PolicyDocument:
        kind, _, domain = DOC_TYPES[name]
        item = await (await self.records(ctx, kind, domain)).get(DOC_PREFIX + name)
        return _document(name, item.version, item.value) if item is not None else _document(name, 0, None)

    async def read(self, ctx: RequestContext, name: str, type_: type[D]) -> tuple[D, int]:
        """The typed document and its version (0 and the empty default when never written)."""
        doc = await self.get_document(ctx, name)
        return msgspec.convert(doc.policy, type=type_), doc.version

    async def read_all(self, ctx: RequestContext) -> PolicySet:
        """Every policy document, in one round trip: one query per distinct backing store of
        the documents' kinds, concurrently (documents of kinds sharing a table come back from
        one query; a store only answers for the kinds routed to it)."""
        stores = await asyncio.gather(*(self.registry.store_for(kind, ctx.tenant_id) for kind in DOC_KINDS))
        groups: dict[int, tuple[KindStore, set[str]]] = {}
        for kind, store in zip(DOC_KINDS, stores, strict=True):
            groups.setdefault(id(store.backing), (store, set()))[1].add(kind)

        async def documents(store: KindStore, kinds: set[str]) -> list[PolicyDocument]:
            items = await self._records_in(store, ctx, "safety_policy").list(
                prefix=DOC_PREFIX, limit=len(DOC_TYPES) + 1
            )
            found = []
            for item in items:
                name = record_key(item)[len(DOC_PREFIX) :]
                if name in DOC_TYPES and DOC_TYPES[name][0] in kinds:
                    found.append(_document(name, item.version, item.value))
            return found

        read = await asyncio.gather(*(documents(store, kinds) for store, kinds in groups.values()))
        by_name = {doc.name: doc for docs in read for doc in docs}
        typed: dict[str, Any] = {}
        versions: dict[str, int] = {}
        for name, (_, type_, _) in DOC_TYPES.items():
            doc = by_name.get(name) or _document(name, 0, None)
            typed[name] = msgspec.convert(doc.policy, type=type_)
            versions[name] = doc.version
        return PolicySet(**typed, versions=versions)

    async def put_document(
        self, ctx: RequestContext, name: str, body: Any, *, expected_version: int | None
    ) -> PolicyDocument:
        """Replace document ``name``; admin/owner only; ``expected_version`` is required."""
        kind, type_, domain = DOC_TYPES[name]
        ctx.require_role("admin")
        if isinstance(body, dict) and "expected_version" in body:
            body = dict(body)
            expected_version = body.pop("expected_version") if expected_version is None else expected_version
        if (
            expected_version is None
            or isinstance(expected_version, bool)
            or not isinstance(expected_version, int)
        ):
            raise invalid(
                domain,
                "'expected_version' (an integer, 0 when creating) is required",
                field="expected_version",
            )
        # The write stores expected_version + 1, which must stay a storable version.
        check_int(domain, "expected_version", expected_version, lo=0, hi=MAX_VERSION - 1)
        doc = convert(domain, body, type_)
        _validate_doc(name, doc)
        stored = _Stored(
            policy=msgspec.to_builtins(doc), updated_at=iso(self.clock.now()), updated_by=ctx.user_id
        )
        records = await self.records(ctx, kind, domain)
        version = await records.put(
            DOC_PREFIX + name, msgspec.json.encode(stored), expected_version=expected_version or None
        )
        await self.spine.record(
            ctx, "audit", {"action": "policy.updated", "policy": name, "version": version}
        )
        return _document(name, version, msgspec.json.encode(stored))


__all__ = [
    "DOC_KINDS",
    "DOC_PREFIX",
    "DOC_TYPES",
    "BudgetLimit",
    "BudgetPolicy",
    "Corridor",
    "Corridors",
    "FirearmsBinding",
    "FirearmsGrant",
    "FirearmsGrants",
    "FirearmsPolicy",
    "KillSwitches",
    "LockRule",
    "PolicyDoc",
    "PolicyDocument",
    "PolicyDocuments",
    "PolicySet",
    "StrategyLockPolicy",
]
