"""Firestore backend: the core's ItemStore port on google-cloud-firestore's async client.

Connection params (:class:`northstar_adapters.params.FirestoreParams`, operator configuration):

* ``project`` — GCP project (default: the SDK's inference from the environment);
* ``database`` — database id, default ``(default)``;
* ``collection_prefix`` — default ``northstar_``; a route's table ``T`` (default: its resource
  kind) lives in collection ``<prefix>T``;
* ``emulator_host`` — optional ``host:port`` of an emulator for this client only (otherwise the
  SDK's standard ``FIRESTORE_EMULATOR_HOST`` environment variable selects the emulator);
* ``timeout_seconds`` (10), ``max_attempts`` (5) — per-call timeout and bounded retries;
* ``index_file`` — where :func:`provision` writes ``firestore.indexes.json``.

Credentials come from the SDK's default chain only (ADC, workload identity, metadata server).
See :mod:`.store` for the atomicity and retry design and :mod:`.layout` for the data layout.
"""

from __future__ import annotations

from northstar_adapters.firestore.provision import index_document, provision
from northstar_adapters.firestore.store import CAPABILITIES, FirestoreItemStore, store_from_params
from northstar_core.routing import Target

__all__ = ["CAPABILITIES", "FirestoreItemStore", "index_document", "open_store", "provision"]


def open_store(target: Target) -> FirestoreItemStore:
    """A store for ``target``. Its ``AsyncClient`` (one gRPC channel) is created lazily on first
    use and shared with every other store on the same project/database/emulator in the same
    event loop; the last of them to close closes the channel."""
    return store_from_params(target.table_name, target.params)
