"""Personal content sealed under data keys (envelope encryption), so that erasing a person is
deleting one key.

A *data key* is a random key per tenant (``t#``) and per user of a tenant (``u#<subject
segment>``). It is stored only wrapped — encrypted under the operator's key-encryption key,
which the :class:`Cipher` holds and no store ever sees — in the tenant's ``<tenant>|keys``
partition of the ``config_store`` kind (the segment after the tenant is never a mode, so no
other partition shares the name). Content is sealed with AEAD under a data key, bound to where
it belongs (the caller's ``context``: an event id…), so a sealed value moved elsewhere does not
open. Deleting a data key (:meth:`DataKeys.shred`) makes everything sealed under it unreadable
for good, in every copy of the data — items, archives, backups — whatever the backend.

A process keeps the data keys it used for :data:`KEY_CACHE_SECONDS`: after a key is shredded,
another process may still open (or seal) with it for that long; what it seals then can never be
opened again.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

import msgspec

from northstar_core.errors import NorthstarError
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import subject_segment
from northstar_core.storage import Absent, ConditionFailed, Delete, Put

KIND: Final = "config_store"
KEY_CACHE_SECONDS: Final = 30.0
TENANT_KEY: Final = "t#"
_CREATE_ATTEMPTS: Final = 4


class SealBroken(Exception):
    """Sealed content or a wrapped key failed authentication (altered, or another key's)."""


class Cipher(Protocol):
    """The operator's key-encryption key and an AEAD (the adapters provide AES-256-GCM)."""

    def new_key(self) -> bytes:
        """A fresh random data key."""
        ...

    def wrap(self, key: bytes, context: bytes) -> bytes:
        """``key`` encrypted under the key-encryption key, bound to ``context``."""
        ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """The data key :meth:`wrap` sealed; :class:`SealBroken` if it does not open."""
        ...

    def seal(self, key: bytes, plaintext: bytes, context: bytes) -> bytes:
        """``plaintext`` encrypted and authenticated under data key ``key``, bound to ``context``."""
        ...

    def open(self, key: bytes, sealed: bytes, context: bytes) -> bytes:
        """What :meth:`seal` sealed; :class:`SealBroken` if it does not open."""
        ...


def key_name(user_id: str | None) -> str:
    """The data key content of ``user_id`` (``None``: the tenant's own) is sealed under."""
    return TENANT_KEY if not user_id else "u#" + subject_segment(user_id)


class Sealed(msgspec.Struct, frozen=True, array_like=True):
    """Sealed content as stored beside its (emptied) plaintext fields."""

    key: str  # the data key's name (:func:`key_name`)
    data: str  # base64 of the cipher's sealed bytes


class DataKeys:
    """The tenants' data keys in their ``config_store`` partitions (see module doc)."""

    def __init__(
        self, registry: RoutingRegistry, cipher: Cipher, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.registry = registry
        self.cipher = cipher
        self._monotonic = monotonic
        self._cache: dict[tuple[str, str], tuple[float, bytes | None]] = {}

    @staticmethod
    def partition(tenant_id: str) -> str:
        return f"{tenant_id}|keys"

    @staticmethod
    def _context(tenant_id: str, name: str) -> bytes:
        return msgspec.json.encode(["northstar.data_key", tenant_id, name])

    async def key(self, tenant_id: str, name: str, *, create: bool) -> bytes | None:
        """Data key ``name`` of ``tenant_id``: made (once, whoever is first) if ``create`` and
        there is none; ``None`` if there is none (never made, or shredded)."""
        cached = self._cache.get((tenant_id, name))
        if cached is not None and cached[0] > self._monotonic() and (cached[1] is not None or not create):
            return cached[1]
        store = await self.registry.store_for(KIND, tenant_id)
        part = self.partition(tenant_id)
        item = await store.get(part, name)
        key: bytes | None = None
        for _ in range(_CREATE_ATTEMPTS if create else 0):
            if item is not None:
                break
            fresh = self.cipher.new_key()
            wrapped = self.cipher.wrap(fresh, self._context(tenant_id, name))
            try:
                await store.write(part, [Put(name, wrapped, condition=Absent())])
                key = fresh
                break
            except ConditionFailed:  # made meanwhile by another writer: theirs is the key
                item = await store.get(part, name)  # (None again if shredded meanwhile)
        else:
            if create and item is None:
                # never unsealed content where sealing is configured
                raise NorthstarError(
                    "data_keys.contention",
                    "could not make a data key; retry",
                    503,
                    headers={"Retry-After": "1"},
                )
        if item is not None:
            try:
                key = self.cipher.unwrap(item.value, self._context(tenant_id, name))
            except SealBroken:
                # the operator's key-encryption key is not the one the key was wrapped under
                raise NorthstarError(
                    "data_keys.unreadable",
                    "a stored data key does not open with the configured key-encryption key",
                    503,
                    headers={"Retry-After": "60"},
                ) from None
        self._cache[(tenant_id, name)] = (self._monotonic() + KEY_CACHE_SECONDS, key)
        return key

    async def shred(self, tenant_id: str, name: str) -> bool:
        """Delete data key ``name`` of ``tenant_id`` (whether it existed)."""
        store = await self.registry.store_for(KIND, tenant_id, retired_ok=True)
        part = self.partition(tenant_id)
        existed = await store.get(part, name) is not None
        await store.write(part, [Delete(name)])
        self._cache.pop((tenant_id, name), None)
        return existed

    def seal(self, key: bytes, name: str, value: Any, context: str) -> Sealed:
        """``value`` (JSON) sealed under data key ``key`` (named ``name``) for ``context``."""
        sealed = self.cipher.seal(key, msgspec.json.encode(value), context.encode())
        return Sealed(key=name, data=base64.b64encode(sealed).decode())

    async def open(self, tenant_id: str, sealed: Sealed, context: str) -> Any | None:
        """What :meth:`seal` sealed, or ``None`` once its data key is shredded."""
        key = await self.key(tenant_id, sealed.key, create=False)
        if key is None:
            return None
        try:
            plaintext = self.cipher.open(key, base64.b64decode(sealed.data), context.encode())
        except (SealBroken, ValueError):
            return None  # not sealed for here: as unreadable as a shredded key's
        return msgspec.json.decode(plaintext)
