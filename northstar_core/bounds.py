"""Range checks for every number a caller hands the core, before anything is written.

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

from northstar_core.errors import NorthstarError
from northstar_core.storage import MAX_EXPIRES_AT, MAX_VERSION

__all__ = [
    "MAX_AMOUNT",
    "MAX_EXPIRES_AT",
    "MAX_MAGNITUDE",
    "MAX_SEQ",
    "MAX_TOTAL",
    "MAX_TTL_SECONDS",
    "MAX_VERSION",
    "check_float",
    "check_int",
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
