"""Backend adapters: one package per backend, each implementing the core's ItemStore port.

``AdapterFactory`` is what the composition root hands to the routing registry. Each backend
declares its connection params as a strict Struct (:mod:`northstar_adapters.params`, checkable
without the SDK); ``open`` imports a backend's package only when a route names it, so a library
user installs only the SDKs of the backends they route to (``pip install northstar[dynamodb]``).
"""

from __future__ import annotations

import importlib
from typing import Any

from northstar_core.routing import Target
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

    def open(self, target: Target) -> ItemStore:
        try:
            module = importlib.import_module(_MODULES[target.backend])
        except KeyError:
            raise ValueError(f"unknown backend {target.backend!r}") from None
        store: ItemStore = module.open_store(target)
        return store

    def module(self, backend: str) -> Any:
        """The backend's package (for ``provision``), imported on demand."""
        try:
            return importlib.import_module(_MODULES[backend])
        except KeyError:
            raise ValueError(f"unknown backend {backend!r}") from None
