"""``engines.policies``: the policy documents, firearms licences and strategy locks as one
service over one registry, clock and spine (each part lives in its own module)."""

from __future__ import annotations

from northstar_core.safety.licences import Licences
from northstar_core.safety.locks import StrategyLocks


class PolicyStores(Licences, StrategyLocks):
    """Versioned policy documents (:mod:`~northstar_core.safety.documents`), firearms licences
    (:mod:`~northstar_core.safety.licences`) and strategy locks
    (:mod:`~northstar_core.safety.locks`)."""


__all__ = ["PolicyStores"]
