"""Provisioning for the Firestore adapter: the index file and the TTL policy.

Firestore needs no tables; what it needs is configuration the emulator never checks:

* **Indexes.** The adapter issues one query shape on a partition (see
  ``FirestoreItemStore.build_query``): collection ``items``, range filters on ``sk`` only,
  ``order_by("sk")`` ascending or descending, ``limit``; and, for ``scan`` only, a
  collection-group query on ``items`` bounded and ordered by document name alone
  (``build_scan_query``), which the built-in name index serves. Single-field indexes serve
  the first, so no composite index is needed; the index file keeps ``sk`` indexed both ways
  explicitly and exempts every other field from indexing (``v`` holds values up to 350 KB;
  ``expires_at`` is a TTL timestamp, and indexing it would only add write cost).
  ``tests/adapters/test_firestore.py`` checks every query the adapter issues against this file,
  since the emulator cannot.
* **TTL.** A TTL policy on collection group ``items``, field ``expires_at``.

``provision(target, dry_run=...)`` writes the deployable index file (``index_file`` connection param,
default ``contracts/firestore.indexes.json`` relative to the working directory, the copy
committed in this repository), deployable with ``firebase deploy --only firestore:indexes``.
Against a real project it also enables the TTL policy through the Firestore Admin API that
ships inside google-cloud-firestore (no extra dependency); it is the API call behind::

    gcloud firestore fields ttls update expires_at --collection-group=items --enable-ttl \
        --project=PROJECT --database=DATABASE

Every step reads the current state first and does nothing when it already holds (idempotent).
With the emulator, TTL and indexes are not enforced and are skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

from northstar_adapters.firestore.layout import (
    F_EXPIRES,
    F_KEY,
    F_TTL,
    F_VALUE,
    F_VERSION,
    F_WRITE,
    ITEMS,
)
from northstar_adapters.params import FirestoreParams, parse
from northstar_core.routing import Target

DEFAULT_INDEX_FILE: Final = Path("contracts/firestore.indexes.json")

_BOTH_WAYS: Final = [
    {"order": "ASCENDING", "queryScope": "COLLECTION"},
    {"order": "DESCENDING", "queryScope": "COLLECTION"},
]


def index_document() -> dict[str, Any]:
    """The content of ``firestore.indexes.json`` for every collection this adapter writes."""
    overrides: list[dict[str, Any]] = [
        {"collectionGroup": ITEMS, "fieldPath": F_KEY, "indexes": _BOTH_WAYS},
        {"collectionGroup": ITEMS, "fieldPath": F_TTL, "ttl": True, "indexes": []},
    ]
    for field in (F_VALUE, F_VERSION, F_EXPIRES, F_WRITE):
        overrides.append({"collectionGroup": ITEMS, "fieldPath": field, "indexes": []})
    overrides.sort(key=lambda o: o["fieldPath"])
    return {"indexes": [], "fieldOverrides": overrides}


def render_index_file() -> str:
    return json.dumps(index_document(), indent=2) + "\n"


def write_index_file(path: Path, *, dry_run: bool) -> str:
    """Bring ``path`` up to date (unless ``dry_run``); returns the plan line."""
    content = render_index_file()
    current = path.read_text() if path.exists() else None
    if current == content:
        return f"index file {path}: up to date"
    if not dry_run:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return f"index file {path}: {'create' if current is None else 'update'}"


def _uses_emulator(params: FirestoreParams) -> bool:
    return bool(params.emulator_host or os.environ.get("FIRESTORE_EMULATOR_HOST"))


async def _ttl_state(project: str, database: str) -> tuple[Any, str, str]:
    """The admin client, the TTL field's resource name and its current TTL state."""
    from google.cloud.firestore_admin_v1 import FirestoreAdminAsyncClient

    admin = FirestoreAdminAsyncClient()
    name = f"projects/{project}/databases/{database}/collectionGroups/{ITEMS}/fields/{F_TTL}"
    field = await admin.get_field(name=name)
    state = field.ttl_config.state.name if field.ttl_config else "STATE_UNSPECIFIED"
    return admin, name, state


async def provision(target: Target, *, dry_run: bool) -> list[str]:
    """Write the index file and (real projects) enable the TTL policy; returns the plan.

    With ``dry_run`` nothing is written or called (beyond reading the current TTL state) and
    every plan line starts with ``[dry-run]``.
    """
    params = parse(FirestoreParams, target.params)
    prefix = params.collection_prefix
    database = params.database
    project = params.project or os.environ.get("GOOGLE_CLOUD_PROJECT")
    path = Path(params.index_file or DEFAULT_INDEX_FILE)
    plan: list[str] = [
        f"firestore {target.resource_kind}: collection {prefix}{target.table_name}/*/{ITEMS} "
        f"(project {project or '<default>'}, database {database})"
    ]

    plan.append(write_index_file(path, dry_run=dry_run))
    plan.append(f"deploy indexes with: firebase deploy --only firestore:indexes (file {path})")

    ttl_cmd = (
        f"gcloud firestore fields ttls update {F_TTL} --collection-group={ITEMS} --enable-ttl "
        f"--project={project or 'PROJECT'} --database={database}"
    )
    if _uses_emulator(params):
        plan.append(f"TTL policy: skipped (the emulator enforces neither TTL nor indexes); in GCP: {ttl_cmd}")
    elif not project:
        plan.append(f"TTL policy: no project configured; run: {ttl_cmd}")
    else:
        try:
            admin, name, state = await _ttl_state(str(project), database)
        except Exception as exc:  # no credentials / no permission: say what to run instead
            plan.append(f"TTL policy: cannot read ({type(exc).__name__}: {exc}); run: {ttl_cmd}")
        else:
            if state in ("ACTIVE", "CREATING"):
                plan.append(f"TTL policy on {ITEMS}.{F_TTL}: already {state.lower()}")
            else:
                plan.append(f"TTL policy on {ITEMS}.{F_TTL}: enable (same as: {ttl_cmd})")
                if not dry_run:
                    from google.cloud.firestore_admin_v1 import Field
                    from google.protobuf import field_mask_pb2

                    await admin.update_field(
                        field=Field(name=name, ttl_config=Field.TtlConfig()),
                        update_mask=field_mask_pb2.FieldMask(paths=["ttl_config"]),
                    )
    if dry_run:  # the caller (``northstar provision --dry-run``) prints the plan
        return [f"[dry-run] {line}" for line in plan]
    return plan


def _filters(node: dict[str, Any]) -> list[tuple[str, str]]:
    if "field_filter" in node:
        ff = node["field_filter"]
        return [(ff["field"]["field_path"], ff["op"])]
    if "unary_filter" in node:
        return [(node["unary_filter"]["field"]["field_path"], node["unary_filter"]["op"])]
    if "composite_filter" in node:
        return [f for sub in node["composite_filter"].get("filters", []) for f in _filters(sub)]
    return []


def query_is_covered(query: dict[str, Any], document: dict[str, Any]) -> bool:
    """Would Firestore serve ``query`` (a ``StructuredQuery`` as a dict with enum names) from
    the indexes ``document`` (a ``firestore.indexes.json``) declares, plus the automatic
    single-field indexes it does not override?

    A deliberately small model of Firestore's index selection: queries touching one field need
    that field's single-field index in each requested direction and scope; queries touching
    more need a composite index listing the equality fields first, then the ordered fields in
    order and direction. Exact for the shapes this adapter issues; conservative otherwise.
    """
    source = query["from_"][0]
    group = source["collection_id"]
    scope = "COLLECTION_GROUP" if source.get("all_descendants") else "COLLECTION"
    filters = _filters(query.get("where") or {})
    orders = [(o["field"]["field_path"], o.get("direction", "ASCENDING")) for o in query.get("order_by", [])]
    orders = [(f, d) for f, d in orders if f != "__name__"]
    equality = {f for f, op in filters if op == "EQUAL"}
    ranged = [f for f, op in filters if op != "EQUAL"]
    for field in ranged:  # an inequality field is implicitly ordered (ascending) if not ordered
        if field not in {f for f, _ in orders}:
            orders.append((field, "ASCENDING"))
    fields = equality | {f for f, _ in orders}
    if not fields:
        return True
    if len(fields) == 1:
        (field,) = fields
        directions = {d for _, d in orders} or {"ASCENDING"}
        override = next(
            (
                o
                for o in document.get("fieldOverrides", [])
                if o["collectionGroup"] == group and o["fieldPath"] == field
            ),
            None,
        )
        if override is None:  # automatic indexes: both directions, collection scope only
            return scope == "COLLECTION"
        available = {(i.get("order"), i.get("queryScope", "COLLECTION")) for i in override.get("indexes", [])}
        return all((d, scope) in available for d in directions)
    ordered = [(f, d) for f, d in orders if f not in equality]
    for index in document.get("indexes", []):
        if index["collectionGroup"] != group or index.get("queryScope", "COLLECTION") != scope:
            continue
        declared = [(f["fieldPath"], f.get("order")) for f in index["fields"]]
        head, tail = declared[: len(equality)], declared[len(equality) :]
        if {f for f, _ in head} == equality and tail == ordered:
            return True
    return False
