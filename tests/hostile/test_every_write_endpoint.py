"""Every write endpoint of the OpenAPI document, attacked with hostile values.

For each write operation (POST/PUT/PATCH/DELETE) a *baseline* request that succeeds is built
(after whatever setup it needs: a note to update, a lock to approve...), then one thing in it is
replaced by something hostile (see ``strategies.py``): a body field at any depth, the whole
body, a path id, a query value, ``If-Match``, a duplicated identity header, or the token's
claims. For every attack, the harness (``conftest.py``) demands: no 5xx (503 included), the
error envelope on every 4xx, a 4xx where the value must be refused, no write outside the
attacker's tenant (read from the raw stores), nothing written at all on a refusal except its
audit trail, and a canary tenant that keeps reading and writing.

* ``test_baseline_is_accepted`` — the baselines themselves succeed (else the attacks would
  stop at the first check and prove little);
* ``test_must_refuse_sweep`` — every value that must be refused, in every field where it must
  be, deterministically; reports every failure of an operation at once;
* ``test_random_attacks`` — hypothesis: any attack, including values that may be accepted,
  with a canary round after each.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from northstar_http.cli import openapi_document
from tests import conftest as root
from tests.hostile import strategies as hs
from tests.hostile.conftest import (
    ATTACKER,
    ATTACKER_ROLES,
    ATTACKER_USER,
    CANARY,
    ECHO_ACTION,
    SPARE_CONNECTION,
    Harness,
)

DOC = json.loads(openapi_document())
WRITE_METHODS = {"post", "put", "patch", "delete"}
OPERATIONS = [
    (method.upper(), path, op)
    for path, item in sorted(DOC["paths"].items())
    for method, op in sorted(item.items())
    if method in WRITE_METHODS and not path.startswith("/sse/")
]
IDS = [f"{m} {p}" for m, p, _ in OPERATIONS]
RANDOM_EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "25"))
# In the sweep, the canary runs after every attack that was accepted or wrote anything, and
# after every CANARY_EVERY-th other one (a clean refusal: the raw store showed no write).
CANARY_EVERY = 10


def unique(prefix: str = "h") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# --- requests -----------------------------------------------------------------------------------


@dataclass
class Case:
    """One request to an operation: its path values, query, extra headers, body and token."""

    path_values: dict[str, str] = field(default_factory=dict)
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None  # a JSON document (strategies.Raw leaves allowed); None: no body
    raw_body: bytes | None = None  # sent verbatim instead of ``body``
    token: str | None = None  # None: the attacker's


def send(h: Harness, method: str, path: str, case: Case) -> Any:
    url = path
    for name, value in case.path_values.items():
        url = url.replace("{" + name + "}", quote(value, safe=""))
    content = (
        case.raw_body
        if case.raw_body is not None
        else (hs.encode(case.body) if case.body is not None else None)
    )
    return h.call(method, url, token=case.token, headers=case.headers, params=case.query, content=content)


# --- baselines: a request of each operation that succeeds ---------------------------------------

Baseline = Callable[[Harness], Case]
POLICY_DOCUMENTS: dict[str, dict[str, Any]] = {
    "/kill-switches": {"tenant_blocked": False, "providers": ["p1"], "actions": ["never_run"], "reason": "r"},
    "/firearms/policy": {"bindings": [{"action_name": "fire", "licence_type": "l1"}]},
    "/firearms/grants": {"grants": [{"licence_type": "l1", "subject_type": "agent", "subject_id": "*"}]},
    "/strategy-lock/policy": {
        "rules": [{"action_name": "fire", "surface_id": "s1"}],
        "required_approvals": 3,
    },
    "/budget/policy": {"limits": [{"period": "day", "limit": 10.5, "surface_id": "s1"}]},
    "/kpi/corridors": {
        "corridors": [{"parameter": "ctr", "min": 0, "max": 1, "action_name": "fire", "surface_id": "s1"}]
    },
    "/temperature/corridors": {"corridors": [{"parameter": "temperature", "min": 0.1, "max": 1.5}]},
}


def policy_document(path: str) -> Baseline:
    def build(h: Harness) -> Case:
        version = h.ok("GET", path)["version"]
        return Case(body={**POLICY_DOCUMENTS[path], "expected_version": version})

    return build


def ensure_firearms(h: Harness) -> None:
    for path in ("/firearms/policy", "/firearms/grants"):
        if h.ok("GET", path)["version"] == 0:
            h.ok("PUT", path, json_body={**POLICY_DOCUMENTS[path], "expected_version": 0})


def licence(h: Harness) -> str:
    ensure_firearms(h)
    body = {"licence_type": "l1", "subject_type": "agent", "subject_id": unique("a")}
    return str(h.ok("POST", "/firearms/licences", json_body=body)["licence_id"])


def lock(h: Harness) -> tuple[str, int]:
    # created by someone else: the attacker (an admin) may then review it
    creator = h.token(sub="u_creator", roles=("member",))
    made = h.ok(
        "POST", "/strategy-locks", token=creator, json_body={"action_name": "fire", "ttl_seconds": 600}
    )
    return str(made["lock_id"]), int(made.get("version", 1))


def note(h: Harness) -> tuple[str, int]:
    made = h.ok("POST", "/notes", json_body={"title": "t", "content": "c", "surface_id": "s1"})
    return str(made["note_id"]), int(made.get("version", 1))


def licence_issue(h: Harness) -> Case:
    ensure_firearms(h)
    return Case(
        body={"licence_type": "l1", "subject_type": "agent", "subject_id": unique("a"), "ttl_seconds": 600}
    )


def lock_patch(h: Harness) -> Case:
    lock_id, version = lock(h)
    return Case(
        path_values={"lock_id": lock_id},
        body={"surface_id": "s2", "note": "n", "ttl_seconds": 600, "expected_version": version},
    )


def lock_review(h: Harness) -> Case:
    lock_id, version = lock(h)
    return Case(path_values={"lock_id": lock_id}, body={"note": "ok", "expected_version": version})


def note_update(h: Harness) -> Case:
    note_id, version = note(h)
    body = {
        "title": "t2",
        "content": {"blocks": [1]},
        "tags": ["b"],
        "surface_id": "s1",
        "expected_version": version,
    }
    return Case(path_values={"note_id": note_id}, body=body)


def note_delete(h: Harness) -> Case:
    note_id, version = note(h)
    return Case(path_values={"note_id": note_id}, query=[("expected_version", str(version))])


def blackboard_entry(h: Harness) -> Case:
    key = unique("k")
    made = h.ok("PUT", f"/blackboard/hrun/entries/{key}", json_body={"value": 1})
    return Case(
        path_values={"run_id": "hrun", "key": key}, query=[("expected_version", str(made["version"]))]
    )


def tabular_record(h: Harness) -> Case:
    record = unique("r")
    made = h.ok("PUT", f"/tabular/flows/{record}", json_body={"json_blob": {"a": 1}})
    return Case(
        path_values={"table": "flows", "record_id": record},
        query=[("expected_version", str(made["version"]))],
    )


def memory_value(h: Harness) -> Case:
    key = unique("k")
    h.ok("POST", "/memory", json_body={"session_id": "s1", "key": key, "value": 1})
    return Case(query=[("session_id", "s1"), ("key", key)])


def config_write(h: Harness) -> Case:
    # the surface scope: the only one that reads every parameter (surface_id)
    query = [("surface_id", "s1")]
    version = h.ok("GET", "/config/surface", params=query)["version"]
    body: dict[str, Any] = {"values": {"hostile.flag": True, "hostile.n": 1}}
    if version:
        body["expected_version"] = version
    return Case(path_values={"config_scope": "surface"}, query=query, body=body)


def canvas_command(h: Harness) -> Case:
    head = h.ok("GET", "/canvas/hcanvas/snapshot")["head_rev"]
    op = {"op": "create", "atom_id": unique("a"), "kind": "box", "props": {"x": 1, "label": "l"}}
    key = unique("i")  # the correlation id, when given, must equal the idempotency key
    return Case(
        path_values={"canvas_id": "hcanvas"},
        body={"base_rev": head, "ops": [op], "idempotency_key": key, "correlation_id": key},
    )


def route_write(h: Harness) -> Case:
    props = _properties("POST", "/routing/routes")
    current = [
        r
        for r in h.ok("GET", "/routing/routes")["routes"]
        if r["resource_kind"] == "notes_store" and r.get("tenant_id") == ATTACKER
    ]
    body: dict[str, Any] = {"resource_kind": "notes_store", "tenant_id": ATTACKER}
    if "connection" in props:
        body["connection"] = SPARE_CONNECTION
    else:  # the configuration before named connections
        body.update(backend="memory", params={"name": f"{ATTACKER}-notes"})
    body["expected_version"] = current[0]["version"] if current else 0
    return Case(body=body)


BASELINES: dict[tuple[str, str], Baseline] = {
    ("POST", "/actions/execute"): lambda h: Case(
        body={
            "action_name": ECHO_ACTION,
            "subject_type": "agent",
            "subject_id": "a1",
            "surface_id": "s1",
            "app_id": "app1",
            "params": {"x": 1, "nested": {"y": [1, 2]}},
            "estimated_cost": 0.5,
            "idempotency_key": unique("act"),
        }
    ),
    ("POST", "/actions/check"): lambda h: Case(
        body={
            "action_name": ECHO_ACTION,
            "subject_type": "agent",
            "subject_id": "a1",
            "surface_id": "s1",
            "app_id": "app1",
            "params": {"x": 1, "nested": {"y": [1, 2]}},
            "estimated_cost": 0.5,
        }
    ),
    ("POST", "/analytics/events"): lambda h: Case(
        body={
            "kind": "custom",
            "name": "probe",
            "session_id": "s1",
            "page": "/p",
            "target": "button",
            "properties": {"p": 1},
            "idempotency_key": unique("i"),
        }
    ),
    ("PUT", "/blackboard/{run_id}/entries/{key}"): lambda h: Case(
        path_values={"run_id": "hrun", "key": unique("k")}, body={"value": {"a": [1, "x"], "b": None}}
    ),
    ("DELETE", "/blackboard/{run_id}/entries/{key}"): blackboard_entry,
    **{("PUT", path): policy_document(path) for path in POLICY_DOCUMENTS},
    ("POST", "/budget/usage"): lambda h: Case(
        body={
            "amount": 1.5,
            "surface_id": "s1",
            "action_name": "act",
            "idempotency_key": unique("i"),
            "note": "n",
        }
    ),
    ("POST", "/canvas/{canvas_id}/artifacts"): lambda h: Case(
        path_values={"canvas_id": "hcanvas"},
        body={
            "kind": "image",
            "body": "hello",
            "body_encoding": "utf-8",
            "media_type": "text/plain",
            "metadata": {"m": 1},
            "idempotency_key": unique("i"),
        },
    ),
    ("POST", "/canvas/{canvas_id}/audits"): lambda h: Case(
        path_values={"canvas_id": "hcanvas"},
        body={
            "kind": "review",
            "uri": "s3://bucket/report.json",
            "metadata": {"m": 1},
            "idempotency_key": unique("i"),
        },
    ),
    ("POST", "/canvas/{canvas_id}/commands"): canvas_command,
    ("POST", "/canvas/{canvas_id}/gestures"): lambda h: Case(
        path_values={"canvas_id": "hcanvas"},
        body={"gesture": "pointer", "data": {"x": 1, "y": 2}, "idempotency_key": unique("i")},
    ),
    ("POST", "/chat/threads/{thread_id}/messages"): lambda h: Case(
        path_values={"thread_id": "hthread"},
        body={"role": "user", "content": "hello", "idempotency_key": unique("i")},
    ),
    ("PUT", "/config/{config_scope}"): config_write,
    ("POST", "/events/append"): lambda h: Case(
        body={
            "event_type": "hostile.probe",
            "source": "agent",
            "payload": {"p": 1},
            "run_id": "r1",
            "step_id": "s1",
            "idempotency_key": unique("i"),
        }
    ),
    ("POST", "/firearms/licences"): licence_issue,
    ("POST", "/firearms/licences/{licence_id}/revoke"): lambda h: Case(
        path_values={"licence_id": licence(h)}, body={"reason": "misuse", "expected_version": 1}
    ),
    ("POST", "/strategy-locks"): lambda h: Case(
        body={"action_name": "fire", "surface_id": "s1", "ttl_seconds": 600, "note": "n"}
    ),
    ("PATCH", "/strategy-locks/{lock_id}"): lock_patch,
    ("POST", "/strategy-locks/{lock_id}/approve"): lock_review,
    ("POST", "/strategy-locks/{lock_id}/reject"): lock_review,
    ("DELETE", "/memory"): memory_value,
    ("POST", "/memory"): lambda h: Case(
        body={"session_id": "s1", "key": unique("k"), "value": {"v": [1, 2]}, "ttl_seconds": 600}
    ),
    ("POST", "/notes"): lambda h: Case(
        body={
            "title": "t",
            "content": "c",
            "tags": ["a"],
            "surface_id": "s1",
            "project_id": "p1",
        }
    ),
    ("PUT", "/notes/{note_id}"): note_update,
    ("DELETE", "/notes/{note_id}"): note_delete,
    ("POST", "/realtime/timeline/{stream_id}/append"): lambda h: Case(
        path_values={"stream_id": "hstream"},
        body={"type": "probe", "data": {"d": 1}, "idempotency_key": unique("i")},
    ),
    ("POST", "/routing/routes"): route_write,
    ("PUT", "/tabular/{table}/{record_id}"): lambda h: Case(
        path_values={"table": "flows", "record_id": unique("r")}, body={"json_blob": {"b": [1, {"c": "d"}]}}
    ),
    ("DELETE", "/tabular/{table}/{record_id}"): tabular_record,
}


def _operation(method: str, path: str) -> dict[str, Any]:
    op: dict[str, Any] = DOC["paths"][path][method.lower()]
    return op


def _properties(method: str, path: str) -> dict[str, Any]:
    """The documented body fields of an operation (empty when the body is free-form)."""
    schema = (
        _operation(method, path)
        .get("requestBody", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema", {})
    )
    ref = schema.get("$ref", "")
    if ref:
        schema = DOC["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {})
    props: dict[str, Any] = schema.get("properties", {})
    return props


def generic_baseline(method: str, path: str) -> Baseline:
    """For an operation without a tailored baseline: documented names, plain values."""
    op = _operation(method, path)
    names = [p["name"] for p in op.get("parameters", []) if p.get("in") == "path"]
    typed = {"integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}, "string": "h1"}

    def build(h: Harness) -> Case:
        body = None
        if method != "DELETE":
            body = {}
            for name, prop in _properties(method, path).items():
                kind = prop.get("type") or next(
                    (o.get("type") for o in prop.get("oneOf", []) if o.get("type") != "null"), "string"
                )
                body[name] = typed.get(kind, "h1")
        return Case(path_values={n: unique() for n in names}, body=body)

    return build


def baseline_of(method: str, path: str) -> tuple[Baseline, bool]:
    """The operation's baseline and whether it is tailored (else generic)."""
    tailored = BASELINES.get((method, path))
    return (tailored, True) if tailored else (generic_baseline(method, path), False)


# --- attacks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    name: str
    apply: Callable[[Case, Harness], Case]
    must_refuse: bool


def _path_str(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def body_attack(path: tuple[str | int, ...], extreme: hs.Extreme) -> Attack:
    kind = hs.field_class(path)
    return Attack(
        f"body {_path_str(path)} = {extreme.name}",
        lambda c, h: replace(c, body=hs.replace_at(c.body, path, extreme.value)),
        extreme.must_refuse(kind),
    )


def duplicate_key_attack(name: str, extreme: hs.Extreme, benign: Any) -> Attack:
    # A duplicated member: the last one wins in every parser this service uses, so the
    # request stands or falls with the hostile value sent last.
    def apply(c: Case, h: Harness) -> Case:
        items = [(k, v) for k, v in c.body.items() if k != name]
        return replace(c, body=hs.Pairs((*items, (name, benign), (name, extreme.value))))

    return Attack(
        f"duplicate key {name}: benign, then {extreme.name}",
        apply,
        extreme.must_refuse(hs.field_class((name,))),
    )


def body_paths(method: str, path: str, sample: Case) -> list[tuple[str | int, ...]]:
    """Every path in the sample body, plus documented top-level fields it leaves out."""
    if not isinstance(sample.body, dict):
        return []
    paths = hs.leaf_paths(sample.body)
    paths += [(name,) for name in _properties(method, path) if name not in sample.body]
    return paths


# The values a sweep sends into a field of each kind: every value the kind must refuse, minus
# near-duplicates of the ones kept (the random test covers the rest of the catalogue).
SWEEP_ANYWHERE = [
    "token NaN",
    "token -Infinity",
    "float 1e999",
    "invalid utf-8 b'\\xff'",
    "invalid utf-8 b'\\xed\\xa0\\x80'",
    "lone surrogate escape",
    "100k-deep arrays",
    "100k-deep objects",
    "2 MiB string",
    "invalid utf-8 member name",
]
SWEEP_EXTRA = {
    hs.VERSION: [
        "int 2**63",
        "int 2**63-1",
        "int 2**64",
        "int -1",
        "int 2**53",
        "int -2**63-1",
        "float 1e308",
        "float 0.5",
        "true",
        "empty object",
        "int 10**400",
    ],
    hs.NUMBER: [
        "int 2**63",
        "int 2**64",
        "int -2**64",
        "int 10**400",
        "float 1e308",
        "float -1e308",
        "true",
        "array of version",
    ],
    hs.ID: ["trailing newline", "trailing CRLF", "NUL inside", "trailing NUL"],
    hs.JSON_VALUE: [],
    hs.TEXT: [],
}
_BY_NAME = {e.name: e for e in hs.CATALOGUE}


def sweep_values(kind: str) -> list[hs.Extreme]:
    chosen = [_BY_NAME[n] for n in [*SWEEP_ANYWHERE, *SWEEP_EXTRA[kind]]]
    assert all(e.must_refuse(kind) for e in chosen), kind
    return chosen


def attacks_for(method: str, path: str, sample: Case, *, sweep: bool) -> list[Attack]:
    """Every attack on one operation; ``sweep``: only those that must be refused."""
    op = _operation(method, path)
    params = op.get("parameters", [])
    out: list[Attack] = []

    # body fields, at every depth
    for p in body_paths(method, path, sample):
        kind = hs.field_class(p)
        values = sweep_values(kind) if sweep else hs.CATALOGUE
        out += [body_attack(p, e) for e in values]
    if isinstance(sample.body, dict):
        for name, benign in sample.body.items():
            kind = hs.field_class((name,))
            # the kind's own refusals first (a version's 2**63, an id's newline), then NaN
            extremes = [_BY_NAME[n] for n in [*SWEEP_EXTRA[kind][:2], "token NaN"]]
            if not sweep:
                extremes += [_BY_NAME["int 2**64"], _BY_NAME["trailing newline"]]
            out += [duplicate_key_attack(name, e, benign) for e in extremes]

    # the whole body
    reads_body = sample.body is not None
    valid = hs.encode(sample.body) if reads_body else b"{}"
    for raw in hs.raw_bodies(valid):
        if not sweep or (raw.refused and reads_body):
            out.append(
                Attack(
                    f"raw body {raw.name}",
                    lambda c, h, data=raw.data: replace(c, raw_body=data),
                    raw.refused and reads_body,
                )
            )

    # path ids
    for p in params:
        if p.get("in") != "path":
            continue
        name = p["name"]
        values = [(v, True) for v in hs.ID_REFUSED] + ([] if sweep else [(v, False) for v in hs.ID_ANY])
        for value, refused in values:
            out.append(
                Attack(
                    f"path {name}={value[:20]!r}",
                    lambda c, h, n=name, v=value: replace(c, path_values={**c.path_values, n: v}),
                    refused,
                )
            )

    # query values
    for p in params:
        if p.get("in") != "query":
            continue
        name = p["name"]
        kind = hs.field_class((name,))
        if kind == hs.VERSION:
            refused_values = hs.QUERY_VERSION_REFUSED
        elif kind == hs.ID:
            refused_values = hs.ID_REFUSED
        else:
            refused_values = []
        values = [(v, True) for v in refused_values] + ([] if sweep else [(v, False) for v in hs.ID_ANY[:4]])
        for value, refused in values:
            out.append(
                Attack(
                    f"query {name}={value[:20]!r}",
                    lambda c, h, n=name, v=value: replace(
                        c, query=[(k, x) for k, x in c.query if k != n] + [(n, v)]
                    ),
                    refused,
                )
            )
        if not sweep:
            out.append(
                Attack(
                    f"query {name} twice",
                    lambda c, h, n=name: replace(c, query=[*c.query, (n, "1"), (n, "2")]),
                    False,
                )
            )

    # If-Match
    if any(p.get("in") == "header" and p["name"].lower() == "if-match" for p in params):
        for value in hs.IF_MATCH_REFUSED:
            out.append(
                Attack(
                    f"If-Match {value[:24]}",
                    lambda c, h, v=value: replace(c, headers=[*c.headers, ("If-Match", v)]),
                    True,
                )
            )

    # duplicated headers
    for header in hs.DUPLICATED_IDENTITY:
        values = {
            "X-Tenant-Id": (ATTACKER, CANARY),
            "X-User-Id": (ATTACKER_USER, "u_canary"),
            "X-Mode": ("lab", "saas"),
        }[header]
        out.append(
            Attack(
                f"header {header} twice ({values[0]}, {values[1]})",
                lambda c, h, n=header, v=values: replace(c, headers=[*c.headers, (n, v[0]), (n, v[1])]),
                True,
            )
        )
    if not sweep:
        for header in hs.DUPLICATED_OTHER:
            out.append(
                Attack(
                    f"header {header} twice",
                    lambda c, h, n=header: replace(
                        c, headers=[*c.headers, (n, "application/json"), (n, "text/plain")]
                    ),
                    False,
                )
            )

    # crafted claims
    base = {"sub": ATTACKER_USER, "tenant_id": ATTACKER, "mode": "lab", "roles": list(ATTACKER_ROLES)}
    for claims in hs.CLAIMS:
        if sweep and not claims.refused:
            continue
        out.append(
            Attack(
                f"claims {claims.name}",
                lambda c, h, ch=claims: replace(c, token=hs.sign_claims(root.JWT_SECRET, base, ch.changes)),
                claims.refused,
            )
        )
    return out


def random_attacks(method: str, path: str, sample: Case) -> st.SearchStrategy[Attack]:
    """The catalogue's attacks, plus generated values in random body fields."""
    fixed = attacks_for(method, path, sample, sweep=False)
    paths = body_paths(method, path, sample)
    strategies = [st.sampled_from(fixed)]
    if paths:
        strategies.append(st.builds(body_attack, st.sampled_from(paths), hs.extremes()))
    return st.one_of(*strategies)


# --- running an attack -------------------------------------------------------------------------


@dataclass
class Outcome:
    problems: list[str]
    eventful: bool  # accepted, or wrote something: the canary should look right away


def run_attack(h: Harness, method: str, path: str, baseline: Baseline, attack: Attack) -> Outcome:
    case = attack.apply(baseline(h), h)
    before = h.snapshot()
    response = send(h, method, path, case)
    after = h.snapshot()
    problems = [
        f"{method} {path} | {attack.name} | {p}"
        for p in h.judge(response, before, after, must_refuse=attack.must_refuse)
    ]
    return Outcome(problems, response.status_code < 400 or before != after)


# --- the tests ----------------------------------------------------------------------------------


def test_the_harness_sees_writes_foreign_writes_and_5xx(harness: Harness) -> None:
    # The verdicts below are only as good as the harness: make sure it is not blind.
    before = harness.snapshot()
    harness.canary_round()  # writes in another tenant than the attacker's
    after = harness.snapshot()
    assert harness.changes(before, after)
    refusal = httpx.Response(422, json={"error": {"code": "x.invalid_request", "http_status": 422}})
    problems = harness.judge(refusal, before, after, must_refuse=True)
    assert any("outside the attacker's tenant" in p for p in problems), problems
    assert any("refused (422 x.invalid_request) but wrote" in p for p in problems), problems
    accepted = httpx.Response(201, json={})
    assert any("must be refused" in p for p in harness.judge(accepted, after, after, must_refuse=True))
    for status in (500, 503):
        crashed = httpx.Response(status, json={"error": {"code": "internal.error", "http_status": status}})
        assert harness.judge(crashed, after, after, must_refuse=False) == [f"{status} internal.error"]
    bare = httpx.Response(400, text="Bad Request")
    assert any("no error envelope" in p for p in harness.judge(bare, after, after, must_refuse=True))


def test_every_write_operation_has_a_tailored_baseline() -> None:
    missing = [f"{m} {p}" for m, p, _ in OPERATIONS if (m, p) not in BASELINES]
    assert not missing, f"add a baseline to BASELINES in {__file__}: {missing}"


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS, ids=IDS)
def test_baseline_is_accepted(harness: Harness, method: str, path: str, op: dict[str, Any]) -> None:
    baseline, _ = baseline_of(method, path)
    for _ in range(2):  # twice: a baseline must not depend on being first
        before = harness.snapshot()
        response = send(harness, method, path, baseline(harness))
        after = harness.snapshot()
        assert response.status_code < 300, (
            f"baseline {method} {path}: {response.status_code} {response.text[:300]}"
        )
        assert not [c for c in harness.changes(before, after) if c.owner() != ATTACKER]
    harness.canary_round()


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS, ids=IDS)
def test_must_refuse_sweep(harness: Harness, method: str, path: str, op: dict[str, Any]) -> None:
    baseline, _ = baseline_of(method, path)
    harness.canary_round()
    problems: list[str] = []
    attacks = attacks_for(method, path, baseline(harness), sweep=True)
    for i, attack in enumerate(attacks, 1):
        outcome = run_attack(harness, method, path, baseline, attack)
        problems += outcome.problems
        if outcome.eventful or i % CANARY_EVERY == 0:
            harness.canary_round()
    harness.canary_round()
    assert not problems, f"{len(problems)} of {len(attacks)} attacks failed:\n" + "\n".join(problems)


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS, ids=IDS)
def test_random_attacks(harness: Harness, method: str, path: str, op: dict[str, Any]) -> None:
    baseline, _ = baseline_of(method, path)

    @settings(
        max_examples=RANDOM_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(attack=random_attacks(method, path, baseline(harness)))
    def run(attack: Attack) -> None:
        problems = run_attack(harness, method, path, baseline, attack).problems
        harness.canary_round()
        assert not problems, "\n".join(problems)

    run()
