"""The embedded library API: one object holding every domain service.

An agent embeds Northstar by building an :class:`Engines` (from a routing registry, a cursor
codec and a clock) and calling its services directly — ``await engines.chat.post(ctx, ...)``.
The HTTP shell is a thin translation onto exactly this object and talks to nothing else.

Each domain adds its service here as one attribute (``chat``, ``canvas``, ``spine``,
``gates``, ``memory``…). Services resolve their resource kind through ``registry`` on every
call, so routes changed at run time and per-tenant overrides take effect without rebuilding.
"""

from __future__ import annotations

import msgspec

from northstar_core.analytics import AnalyticsService
from northstar_core.blackboard import Blackboard
from northstar_core.canvas import CanvasService
from northstar_core.chat import ChatService
from northstar_core.clock import Clock, SystemClock
from northstar_core.config import ConfigService
from northstar_core.cursors import CursorCodec
from northstar_core.kernel.archive import Archives
from northstar_core.kernel.migration import Migrations
from northstar_core.kernel.sealing import Cipher, DataKeys
from northstar_core.kernel.tail import DEFAULT_POLL_INTERVAL, TailHub
from northstar_core.memory import SessionMemory
from northstar_core.notes import NotesService
from northstar_core.ports import AuditSink
from northstar_core.routing import RoutingRegistry
from northstar_core.safety.actions import ActionService
from northstar_core.safety.budget import BudgetLedger
from northstar_core.safety.gates import GateChain
from northstar_core.safety.policies import PolicyStores
from northstar_core.spine import EventSpine, spine_retention
from northstar_core.tabular import TabularStore
from northstar_core.timeline import Timeline
from northstar_core.user_data import UserData


class EngineSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Tunables of the embedded engines (the shell fills them from configuration)."""

    tail_poll_interval: float = DEFAULT_POLL_INTERVAL
    # Days the spine keeps an event, by event type (exact type, "<type>.*" family or "*"; see
    # northstar_core.kernel.retention); empty keeps every event forever. The analytics view
    # keeps its events as long as the spine keeps their ``analytics`` events.
    spine_retention_days: dict[str, int] = {}
    # How often a user may export their own data (``GET /users/me/data``): an export scans the
    # tenant's spine and analytics, so it is rationed per user.
    user_export_interval_seconds: int = 3600


class Engines:
    """Every domain service of one deployment, sharing one registry, codec, clock and tail hub."""

    def __init__(
        self,
        registry: RoutingRegistry,
        cursors: CursorCodec,
        clock: Clock | None = None,
        settings: EngineSettings | None = None,
        *,
        cipher: Cipher | None = None,
    ) -> None:
        self.registry = registry
        # Personal content sealed under data keys when the operator configured a cipher
        # (northstar_core.kernel.sealing): erasing a user is deleting their key.
        self.data_keys = DataKeys(registry, cipher) if cipher is not None else None
        self.cursors = cursors
        self.clock: Clock = clock or SystemClock()
        self.settings = settings or EngineSettings()
        # One live-tail hub per process: every SSE stream follows its store through it.
        self.tails = TailHub(self.settings.tail_poll_interval)
        # The one append-only event spine; it is also the audit sink.
        self.spine = EventSpine(
            registry,
            cursors,
            clock=self.clock,
            retention=spine_retention(self.settings.spine_retention_days),
            keys=self.data_keys,
        )
        self.audit: AuditSink = self.spine
        # The timeline: replayable per-subject event streams (canvas SSE, safety decisions,
        # client timelines).
        self.timeline = Timeline(registry, cursors, self.clock, tails=self.tails)
        # Safety: policy stores, budget ledger, the gate chain (ActionGate) and /actions/execute.
        self.policies = PolicyStores(registry, self.clock, self.spine)
        self.budget = BudgetLedger(registry, cursors, self.clock, self.spine)
        self.gate = GateChain(self.policies, self.budget, self.spine, self.clock, self.timeline)
        self.actions = ActionService(self.gate, self.budget, self.spine)
        self.chat = ChatService(registry, cursors, self.clock, self.tails)
        self.memory = SessionMemory(registry, self.clock)
        self.blackboard = Blackboard(registry, cursors, self.clock)
        self.config = ConfigService(registry, self.clock)
        self.notes = NotesService(registry, cursors, self.clock)
        self.tabular = TabularStore(registry, cursors, self.clock, spine=self.spine)
        self.analytics = AnalyticsService(registry, cursors, self.clock, self.spine)
        # every execution is reported as an analytics event (outcome, latency, cost)
        self.actions.analytics = self.analytics
        # One user's data (system callers): exported for them, or erased.
        self.user_data = UserData(
            registry, self.data_keys, self.spine, self.analytics, clock=self.clock,
            export_interval_seconds=self.settings.user_export_interval_seconds,
        )
        self.canvas = CanvasService(
            registry, cursors, self.clock,
            timeline=self.timeline, gate=self.gate, audit=self.spine, toggles=self.config,
        )
        # Whole-tenant export and import (system callers), item by item below every domain.
        self.archives = Archives(registry, cursors, self.clock)
        self.migrations = Migrations(registry, self.clock)

    async def close(self) -> None:
        await self.actions.close()
        await self.tails.close()
        await self.registry.close()
