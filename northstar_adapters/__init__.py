"""Backend adapters: one package per backend, each implementing the core's ItemStore port.

``open_store(route)`` is the factory the composition root hands to the routing registry. It
imports a backend's package only when a route names it, so a library user installs only the
SDKs of the backends they route to (``pip install northstar[dynamodb]`` …).
"""

from __future__ import annotations

import importlib

from northstar_core.routing import Route
from northstar_core.storage import ItemStore

_MODULES = {
    "memory": "northstar_adapters.memory",
    "sqlite": "northstar_adapters.sqlite",
    "dynamodb": "northstar_adapters.dynamodb",
    "firestore": "northstar_adapters.firestore",
    "cosmos": "northstar_adapters.cosmos",
}


class AdapterFactory:
    """Opens stores for routes; shares one connection per backend configuration."""

    def open(self, route: Route) -> ItemStore:
        try:
            module = importlib.import_module(_MODULES[route.backend])
        except KeyError:
            raise ValueError(f"unknown backend {route.backend!r}") from None
        store: ItemStore = module.open_store(route)
        return store
