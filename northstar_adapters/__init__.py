"""Backend adapters: one package per backend, each implementing the core's ItemStore port.

``AdapterFactory`` is what the composition root hands to the routing registry. Each backend
declares its connection params as a strict Struct (:mod:`northstar_adapters.params`, checkable
without the SDK); ``open`` imports a backend's package only when a route names it, so a library
user installs only the SDKs of the backends they route to (``pip install northstar[dynamodb]``).

Every backend package is a :class:`Backend`: it opens stores, and it either provisions what
they need (a :class:`Provisioner`) or declares that there is nothing to provision.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from northstar_core.routing import Target
from northstar_core.storage import ItemStore

_MODULES = {
    "memory": "northstar_adapters.memory",
    "sqlite": "northstar_adapters.sqlite",
    "dynamodb": "northstar_adapters.dynamodb",
    "firestore": "northstar_adapters.firestore",
    "cosmos": "northstar_adapters.cosmos",
}


class Provisioner(Protocol):
    """Creates what a backend's stores need for ``target`` — a table, a container, a file, TTL
    settings, an index file — idempotently. Returns what was done (with ``dry_run``: what would
    be, changing nothing), one line each."""

    async def __call__(self, target: Target, *, dry_run: bool) -> list[str]: ...


class Backend(Protocol):
    """What every backend package declares at module level."""

    def open_store(self, target: Target) -> ItemStore:
        """A store for ``target``; ``ValueError`` naming the field for params it may not have."""
        ...

    @property
    def provision(self) -> Provisioner | None:
        """How to provision the backend, or ``None``: it has nothing to create (memory)."""
        ...


class AdapterFactory:
    """Opens stores for routes; shares one connection per backend configuration."""

    def backend(self, name: str) -> Backend:
        """The package of backend ``name``, imported on demand (``ImportError``: its SDK is not
        installed; ``ValueError``: no such backend)."""
        try:
            path = _MODULES[name]
        except KeyError:
            raise ValueError(f"unknown backend {name!r}") from None
        module: Backend = importlib.import_module(path)
        return module

    def open(self, target: Target) -> ItemStore:
        return self.backend(target.backend).open_store(target)

    async def provision(self, target: Target, *, dry_run: bool) -> list[str] | None:
        """Provision ``target`` with its backend's :class:`Provisioner`; ``None`` when the
        backend has nothing to provision."""
        provisioner = self.backend(target.backend).provision
        if provisioner is None:
            return None
        return await provisioner(target, dry_run=dry_run)
