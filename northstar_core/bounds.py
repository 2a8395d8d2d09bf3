"""Range checks for every number a caller hands the core, before anything is written.

Besides numbers: a page's ``limit`` (:func:`check_limit`), a write's ``expected_version``
(:func:`check_expected_version`) and a caller's JSON value (:func:`json_bytes`) are checked
here once for every domain.

JSON decoding accepts integers of any size (``2**64`` decodes into a Python ``int``) and floats up
to ``1.8e308``, but no backend stores all of them: SQLite and Firestore integers are signed
64-bit, Cosmos DB numbers are doubles (exact up to ``2**53``), sums of large floats overflow to
infinity, which JSON cannot even represent. A number a store cannot hold must be refused here as
the caller's mistake — a 422 naming the field — never discovered inside an adapter, where it
surfaces as a 503 (which clients retry) or a 500.

Every service calls :func:`check_int` / :func:`check_float` on the numbers it is given; the
storage port (:func:`northstar_core.storage.validate_ops`) refuses unrepresentable versions and
expiry times again, so a bug in a service still cannot reach a backend with one.
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec

from northstar_core.errors import NorthstarError, invalid
from northstar_core.storage import MAX_EXPIRES_AT, MAX_VERSION

__all__ = [
    "MAX_AMOUNT",
    "MAX_EXPIRES_AT",
    "MAX_MAGNITUDE",
    "MAX_PAGE",
    "MAX_SEQ",
    "MAX_TOTAL",
    "MAX_TTL_SECONDS",
    "MAX_VERSION",
    "check_expected_version",
    "check_float",
    "check_int",
    "check_limit",
    "json_bytes",
    "out_of_range",
]

# Record versions and stream sequence numbers (revisions, heads, positions).
MAX_SEQ: Final = MAX_VERSION
# Time to live of anything that expires: ten years.
MAX_TTL_SECONDS: Final = 10 * 365 * 24 * 3600
# One budget amount (a usage entry, an estimated or reported cost).
MAX_AMOUNT: Final = 1e12
# A running total or a budget limit. Below 2**53, so sums of amounts stay exact to a cent-ish
# and can never overflow to infinity.
MAX_TOTAL: Final = 1e15
# Any other number compared by the core (KPI/temperature corridor bounds).
MAX_MAGNITUDE: Final = 1e15
# The most items one page of a record listing holds.
MAX_PAGE: Final = 200


def _shown(value: Any) -> Any:
    """``value`` as it can be echoed in an envelope (huge or non-finite numbers as text)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and abs(value) <= MAX_VERSION:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return str(value)[:64]


def _text(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def out_of_range(
    domain: str, field: str, value: Any, lo: float, hi: float, *, code: str | None = None
) -> NorthstarError:
    """422 ``<domain>.invalid_request`` (or ``code``) naming ``field`` and the allowed range."""
    return NorthstarError(
        code or f"{domain}.invalid_request",
        f"'{field}' must be a number between {_text(lo)} and {_text(hi)}",
        422,
        details={"field": field, "value": _shown(value), "min": lo, "max": hi},
    )


def check_int(domain: str, field: str, value: Any, *, lo: int, hi: int, code: str | None = None) -> int:
    """``value`` if it is an integer (not a bool) in ``[lo, hi]``, else :func:`out_of_range`."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise out_of_range(domain, field, value, lo, hi, code=code)
    return value


def check_float(
    domain: str, field: str, value: Any, *, lo: float, hi: float, code: str | None = None
) -> float:
    """``value`` as a float if it is a finite number (not a bool) in ``[lo, hi]``.

    NaN and infinities fail the comparison; an integer too large for a float is out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise out_of_range(domain, field, value, lo, hi, code=code)
    try:
        number = float(value)
    except OverflowError:
        raise out_of_range(domain, field, value, lo, hi, code=code) from None
    if not lo <= number <= hi:  # False for NaN
        raise out_of_range(domain, field, value, lo, hi, code=code)
    return number


def check_limit(domain: str, limit: Any) -> int:
    """A page's ``limit`` if it is an integer in ``[1, MAX_PAGE]`` (422 naming it if not)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise invalid(domain, f"limit must be between 1 and {MAX_PAGE}", field="limit", limit=limit)
    return limit


def check_expected_version(domain: str, expected_version: int | None, *, delete: bool = False) -> int | None:
    """``expected_version`` if absent or within range (422 naming it if not).

    A write's must be a version a record can have: it is followed by ``expected_version + 1``,
    which must stay storable. A delete's only has to be representable: one below 1 never
    matches a record and answers as stale (409), as any other mismatch does.
    """
    if expected_version is not None:
        if delete:
            check_int(domain, "expected_version", expected_version, lo=-MAX_VERSION, hi=MAX_VERSION)
        else:
            check_int(domain, "expected_version", expected_version, lo=1, hi=MAX_VERSION - 1)
    return expected_version


def json_bytes(domain: str, value: Any) -> bytes:
    """``value`` as JSON, or 422 ``<domain>.invalid_request`` if it is not JSON-encodable
    (only a Python caller can hand over such a value: a decoded request body always is)."""
    try:
        return msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise invalid(domain, f"the value is not JSON-encodable: {exc}") from None
