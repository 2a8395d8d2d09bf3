"""Hostile values, as raw JSON tokens, and what the service must do with each.

Bodies are assembled from raw bytes (:func:`encode`), so a test can send what no JSON library
would produce: ``NaN``/``Infinity`` tokens, ``1e999``, invalid UTF-8 inside a string, lone
surrogate escapes, duplicate keys, 100 000-deep arrays.

Every value says in which kind of field it *must* be refused (:class:`Extreme.refused_in`);
elsewhere it may be accepted (a large but valid integer inside free-form JSON), and then the
only demands are no 5xx, no write outside the caller's tenant, and a healthy canary. The kind
of a field comes from its name (:func:`field_class`):

``version``  expected_version, base_rev...: an integer in ``[0, 2**53 - 1]`` (the largest
             version every backend stores exactly) — anything else is refused
``number``   amounts, costs, TTLs, limits, corridor bounds: finite, magnitude at most 1e15
``id``       identifiers that end up in keys and partitions: never a newline or a NUL
``json``     anything under a free-form field (``value``, ``payload``, ``props``...)
``text``     any other string or value

``ANYWHERE`` values are refused in every kind of field: they are not JSON (``NaN``), not
representable (``1e999``, invalid UTF-8), or not decodable without exhausting the stack.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import jwt
from hypothesis import strategies as st

# --- field kinds ---------------------------------------------------------------------------------

VERSION: Final = "version"
NUMBER: Final = "number"
ID: Final = "id"
JSON_VALUE: Final = "json"
TEXT: Final = "text"
ANYWHERE: Final = frozenset({VERSION, NUMBER, ID, JSON_VALUE, TEXT})

MAX_VERSION: Final = 2**53 - 1
MAX_MAGNITUDE: Final = 1e15

VERSION_FIELDS: Final = frozenset({"expected_version", "base_rev", "version", "after_seq", "rev"})
NUMBER_FIELDS: Final = frozenset(
    {
        "amount",
        "estimated_cost",
        "cost",
        "ttl_seconds",
        "expires_at",
        "limit",
        "min",
        "max",
        "required_approvals",
    }
)
ID_FIELDS: Final = frozenset(
    {
        "idempotency_key",
        "session_id",
        "key",
        "tenant_id",
        "surface_id",
        "project_id",
        "subject_id",
        "subject_type",
        "action_name",
        "licence_type",
        "correlation_id",
        "actor_id",
        "resource_kind",
        "connection",
        "table",
        "run_id",
        "step_id",
        "parent_event_id",
        "atom_id",
        "event_type",
        "source",
        "app_id",
        "thread_id",
        "canvas_id",
        "stream_id",
        "record_id",
        "note_id",
        "lock_id",
        "licence_id",
        "config_scope",
    }
)
# Below one of these, values are the caller's own data: any JSON.
FREE_FORM_FIELDS: Final = frozenset(
    {
        "value",
        "values",
        "content",
        "json_blob",
        "payload",
        "params",
        "props",
        "patch",
        "data",
        "metadata",
        "properties",
        "causality",
    }
)


def field_class(path: Sequence[str | int]) -> str:
    """The kind of the field at ``path`` in a body (``("limits", 0, "limit")`` → number)."""
    names = [p for p in path if isinstance(p, str)]
    if any(n in FREE_FORM_FIELDS for n in names):
        return JSON_VALUE
    leaf = names[-1] if names else ""
    if leaf in VERSION_FIELDS:
        return VERSION
    if leaf in NUMBER_FIELDS:
        return NUMBER
    if leaf in ID_FIELDS:
        return ID
    return TEXT


# --- raw JSON ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """Bytes put into a JSON document verbatim."""

    data: bytes


@dataclass(frozen=True)
class Pairs:
    """A JSON object written with exactly these members, in order (duplicate keys allowed)."""

    items: tuple[tuple[str, Any], ...]


def encode(value: Any) -> bytes:
    """JSON bytes of ``value``; :class:`Raw` leaves and :class:`Pairs` objects verbatim."""
    if isinstance(value, Raw):
        return value.data
    if isinstance(value, Pairs):
        return b"{" + b",".join(encode(k) + b":" + encode(v) for k, v in value.items) + b"}"
    if isinstance(value, Mapping):
        return b"{" + b",".join(encode(str(k)) + b":" + encode(v) for k, v in value.items()) + b"}"
    if isinstance(value, list | tuple):
        return b"[" + b",".join(encode(v) for v in value) + b"]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode()


def replace_at(document: Any, path: Sequence[str | int], new: Any) -> Any:
    """A copy of ``document`` with the value at ``path`` replaced (or the member added)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(document, Mapping):
        copy = dict(document)
        copy[head] = replace_at(copy.get(head), rest, new) if rest else new  # type: ignore[index]
        return copy
    if isinstance(document, list) and isinstance(head, int):
        copy_list = list(document)
        copy_list[head] = replace_at(copy_list[head], rest, new)
        return copy_list
    raise KeyError(path)


def leaf_paths(document: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every member and element path of ``document``, containers included (depth first)."""
    out: list[tuple[str | int, ...]] = []
    if isinstance(document, Mapping):
        for k, v in document.items():
            out.append((*prefix, k))
            out += leaf_paths(v, (*prefix, k))
    elif isinstance(document, list):
        for i, v in enumerate(document):
            out.append((*prefix, i))
            out += leaf_paths(v, (*prefix, i))
    return out


def nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


# --- the catalogue -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Extreme:
    """A hostile JSON value and the kinds of field that must refuse it (4xx)."""

    name: str
    raw: bytes
    refused_in: frozenset[str] = field(default_factory=frozenset)

    def must_refuse(self, kind: str) -> bool:
        return kind in self.refused_in

    @property
    def value(self) -> Raw:
        return Raw(self.raw)


def integer(n: int, name: str | None = None) -> Extreme:
    """An integer token, refused as a version outside [0, 2**53-1] and as a number beyond 1e15."""
    kinds = set()
    if not 0 <= n <= MAX_VERSION:
        kinds.add(VERSION)
    if abs(n) > MAX_MAGNITUDE:
        kinds.add(NUMBER)
    return Extreme(name or f"int {n}", str(n).encode(), frozenset(kinds))


BOUNDARY_INTEGERS: Final = [
    integer(2**63, "int 2**63"),
    integer(2**63 - 1, "int 2**63-1"),
    integer(2**63 + 1, "int 2**63+1"),
    integer(2**64, "int 2**64"),
    integer(2**64 - 1, "int 2**64-1"),
    integer(2**64 + 1, "int 2**64+1"),
    integer(-(2**63), "int -2**63"),
    integer(-(2**63) - 1, "int -2**63-1"),
    integer(-(2**64), "int -2**64"),
    integer(2**53, "int 2**53"),
    integer(-1, "int -1"),
    integer(10**400, "int 10**400"),
]
FLOATS: Final = [
    Extreme("float 1e308", b"1e308", frozenset({VERSION, NUMBER})),
    Extreme("float -1e308", b"-1e308", frozenset({VERSION, NUMBER})),
    Extreme("float max", b"1.7976931348623157e308", frozenset({VERSION, NUMBER})),
    Extreme("float 0.5", b"0.5", frozenset({VERSION})),
    Extreme("float 1.0", b"1.0", frozenset()),
    Extreme("float -0.0", b"-0.0", frozenset()),
    Extreme("float 5e-324", b"5e-324", frozenset({VERSION})),
]
NON_FINITE: Final = [
    Extreme("token NaN", b"NaN", ANYWHERE),
    Extreme("token Infinity", b"Infinity", ANYWHERE),
    Extreme("token -Infinity", b"-Infinity", ANYWHERE),
    Extreme("float 1e999", b"1e999", ANYWHERE),
    Extreme("float -1e999", b"-1e999", ANYWHERE),
    Extreme("int 2**64 as 1.8e19", b"1.8446744073709552e19", frozenset({VERSION, NUMBER})),
]
# Bytes that are not UTF-8: a stray continuation byte, an overlong '/', an encoded surrogate,
# a code point above U+10FFFF, a truncated sequence.
INVALID_UTF8: Final = [b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"]
STRINGS: Final = [
    *(Extreme(f"invalid utf-8 {b!r}", b'"ok' + b + b'"', ANYWHERE) for b in INVALID_UTF8),
    Extreme("lone surrogate escape", b'"\\ud800"', ANYWHERE),
    Extreme("reversed surrogate pair", b'"\\udc00\\ud800"', ANYWHERE),
    Extreme("trailing newline", b'"id1\\n"', frozenset({ID})),
    Extreme("trailing CRLF", b'"id1\\r\\n"', frozenset({ID})),
    Extreme("NUL inside", b'"id\\u00001"', frozenset({ID})),
    Extreme("trailing NUL", b'"id1\\u0000"', frozenset({ID})),
    Extreme("empty string", b'""', frozenset()),
    Extreme("unicode line separator", b'"id\\u2028"', frozenset()),
    Extreme("64 KiB string", b'"' + b"x" * 65536 + b'"', frozenset()),
    # beyond the 1 MiB body limit: 413 wherever it is
    Extreme("2 MiB string", b'"' + b"x" * (2 * 1024 * 1024) + b'"', ANYWHERE),
]
TYPES: Final = [
    Extreme("true", b"true", frozenset({VERSION, NUMBER})),
    Extreme("false", b"false", frozenset({VERSION, NUMBER})),
    Extreme("null", b"null", frozenset()),
    Extreme("empty array", b"[]", frozenset({VERSION, NUMBER})),
    Extreme("empty object", b"{}", frozenset({VERSION, NUMBER})),
    # lax decoding may read "1" as 1: a type confusion, but a harmless one
    Extreme("numeric string", b'"1"', frozenset()),
    Extreme("array of version", b"[1]", frozenset({VERSION, NUMBER})),
]
NESTING: Final = [
    Extreme("100k-deep arrays", nested_arrays(100_000), ANYWHERE),
    Extreme("100k-deep objects", nested_objects(100_000), ANYWHERE),
    Extreme("200-deep arrays", nested_arrays(200), frozenset({VERSION, NUMBER})),
]
SHAPES: Final = [
    Extreme("invalid utf-8 member name", b'{"\xff\xfe": 1}', ANYWHERE),
    Extreme("duplicate member inside", b'{"a": 1, "a": 2}', frozenset({VERSION, NUMBER})),
    Extreme(
        "50k members",
        b"{" + b",".join(b'"k%d":0' % i for i in range(50_000)) + b"}",
        frozenset({VERSION, NUMBER}),
    ),
    Extreme("100k elements", b"[" + b",".join([b"0"] * 100_000) + b"]", frozenset({VERSION, NUMBER})),
]
CATALOGUE: Final[list[Extreme]] = [
    *BOUNDARY_INTEGERS,
    *FLOATS,
    *NON_FINITE,
    *STRINGS,
    *TYPES,
    *NESTING,
    *SHAPES,
]


def refused_somewhere(kind: str) -> list[Extreme]:
    """The catalogue's values a field of ``kind`` must refuse."""
    return [e for e in CATALOGUE if e.must_refuse(kind)]


# --- hypothesis strategies -----------------------------------------------------------------------

BOUNDARIES: Final = (0, 2**31, 2**32, 2**53, 2**63, 2**64, 10**15)


def integers_near_boundaries() -> st.SearchStrategy[Extreme]:
    """Integers within a few units of the 32/53/63/64-bit edges, either sign."""
    return st.builds(
        lambda base, delta, negative: integer(-(base + delta) if negative else base + delta),
        st.sampled_from(BOUNDARIES),
        st.integers(-2, 2),
        st.booleans(),
    )


def huge_floats() -> st.SearchStrategy[Extreme]:
    """Finite floats of huge magnitude (refused as versions and numbers)."""
    return (
        st.floats(min_value=1e16, max_value=1.7976931348623157e308)
        .flatmap(lambda f: st.sampled_from([f, -f]))
        .map(lambda f: Extreme(f"float {f!r}", repr(f).encode(), frozenset({VERSION, NUMBER})))
    )


def invalid_utf8_strings() -> st.SearchStrategy[Extreme]:
    """An ASCII string with bytes that are not UTF-8 somewhere inside."""
    return st.builds(
        lambda before, bad, after: Extreme(
            f"invalid utf-8 {bad!r}", b'"' + before.encode() + bad + after.encode() + b'"', ANYWHERE
        ),
        st.from_regex(r"\A[a-z0-9]{0,8}\Z"),
        st.sampled_from(INVALID_UTF8),
        st.from_regex(r"\A[a-z0-9]{0,8}\Z"),
    )


def tainted_ids() -> st.SearchStrategy[Extreme]:
    """A valid-looking id with a newline, CR or NUL appended or inside (refused as an id)."""
    return st.builds(
        lambda ident, bad, at_end: Extreme(
            f"id with {bad!r}",
            json.dumps(ident + bad if at_end else ident[:1] + bad + ident[1:]).encode(),
            frozenset({ID}),
        ),
        st.from_regex(r"\A[a-z][a-z0-9_]{0,12}\Z"),
        st.sampled_from(["\n", "\r\n", "\x00", "\r"]),
        st.booleans(),
    )


def deep_nesting() -> st.SearchStrategy[Extreme]:
    """Nesting far beyond any parser's stack (arrays or objects)."""
    return st.builds(
        lambda depth, arrays: Extreme(
            f"{depth}-deep {'arrays' if arrays else 'objects'}",
            nested_arrays(depth) if arrays else nested_objects(depth),
            ANYWHERE,
        ),
        st.integers(50_000, 120_000),
        st.booleans(),
    )


def extremes() -> st.SearchStrategy[Extreme]:
    """Any hostile value: the catalogue, and generated boundary values."""
    return st.one_of(
        st.sampled_from(CATALOGUE),
        integers_near_boundaries(),
        huge_floats(),
        invalid_utf8_strings(),
        tainted_ids(),
        deep_nesting(),
    )


# --- raw bodies ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawBody:
    """A whole request body; ``refused`` says it must get a 4xx on an endpoint that reads one."""

    name: str
    data: bytes
    refused: bool


def raw_bodies(valid: bytes) -> list[RawBody]:
    """Whole-body attacks, some derived from a ``valid`` body of the endpoint."""
    return [
        RawBody("100k-deep arrays", nested_arrays(100_000), True),
        RawBody("100k-deep objects", nested_objects(100_000), True),
        RawBody("NaN", b"NaN", True),
        RawBody("invalid utf-8 document", b'{"\xff": "\xfe"}', True),
        RawBody("truncated", valid[: max(1, len(valid) // 2)], True),
        RawBody("trailing garbage", valid + b" x", True),
        RawBody("two documents", valid + valid, True),
        RawBody("3 MiB of spaces", b" " * (3 * 1024 * 1024) + valid, True),
        RawBody("byte order mark", b"\xef\xbb\xbf" + valid, False),
        RawBody("null", b"null", False),
        RawBody("empty", b"", False),
        RawBody("a number", b"1", False),
    ]


# --- headers -------------------------------------------------------------------------------------

# Identity headers given twice with different values: ambiguous, so refused.
DUPLICATED_IDENTITY: Final = ("X-Tenant-Id", "X-User-Id", "X-Mode")
DUPLICATED_OTHER: Final = ("X-Surface-Id", "X-Project-Id", "X-Run-Id", "Content-Type", "X-Request-Id")

IF_MATCH_REFUSED: Final = [
    '"9223372036854775808"',
    '"18446744073709551616"',
    '"9223372036854775807"',
    '"9007199254740992"',
    '"-1"',
    '"1.5"',
    '"NaN"',
    '"1e999"',
    '"0x1"',
    '"' + "9" * 400 + '"',
    'W/"99999999999999999999"',
    "*, *",
]

# --- query and path values -----------------------------------------------------------------------

QUERY_VERSION_REFUSED: Final = [
    "9223372036854775808",
    "18446744073709551616",
    "9223372036854775807",
    "9007199254740992",
    "-1",
    "1.5",
    "NaN",
    "inf",
    "1e999",
    "0x1",
    "9" * 400,
]
ID_REFUSED: Final = ["x1\n", "x1\r\n", "x\x001", "x1\x00"]
ID_ANY: Final = ["", "..", "x" * 10_000, "\ufffd", "t_canary", "*", "%", "x y", "../t_canary"]

# --- claims --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CraftedClaims:
    """A change to a valid token's claims; ``refused``: the token must not be accepted."""

    name: str
    changes: Mapping[str, Any]
    refused: bool


class _Missing:
    def __repr__(self) -> str:
        return "<absent>"


_MISSING: Final = _Missing()

CLAIMS: Final[list[CraftedClaims]] = [
    *(
        CraftedClaims(f"{claim}={value!r}", {claim: value}, True)
        for claim, values in {
            "sub": [123, ["u_x"], "", "u_x\n", {"id": "u_x"}, True, None, _MISSING],
            "tenant_id": [123, ["t_hostile"], "", "t_hostile\n", {"t": 1}, True, 2**64],
            "system": ["false", "true", "yes", 1, 0, ["true"], {}],
            "roles": [5, [1], [["admin"]], {"admin": True}, [None], ["admin\n"], [""], True],
            "mode": [5, "lab\n", ["lab"], True],
            "agent_id": [5, "a\n", ["a"], True],
            "project_id": [5, "p\n", ["p"], True],
            "exp": ["9999999999", None, [1], "NaN"],
        }.items()
        for value in values
    ),
    CraftedClaims("roles as one string", {"roles": "owner admin member"}, False),
    CraftedClaims("system=false", {"system": False}, False),
    CraftedClaims("exp=2**64", {"exp": 2**64}, False),
    CraftedClaims("unknown claim", {"x-extra": {"deep": [1]}}, False),
]


def sign_claims(secret: str, base: Mapping[str, Any], changes: Mapping[str, Any]) -> str:
    """An HS256 token of ``base`` with ``changes`` applied (``_MISSING`` removes a claim)."""
    payload = {"iat": int(time.time()), "exp": int(time.time()) + 3600, "jti": uuid.uuid4().hex, **base}
    for claim, value in changes.items():
        if value is _MISSING:
            payload.pop(claim, None)
        else:
            payload[claim] = value
    return jwt.encode(payload, secret, algorithm="HS256")


def claims() -> st.SearchStrategy[CraftedClaims]:
    return st.sampled_from(CLAIMS)
