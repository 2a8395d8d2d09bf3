"""JSON bodies are decoded strictly: ``"true"`` is not a boolean and ``"60"`` is not a number.

Litestar converts every handler argument in msgspec's lax mode, which query strings need (they
only have strings) but a JSON body does not: there, a string where the document says integer or
boolean is a client's mistake, and taking it silently would let ``{"force": "true"}`` or
``{"ttl_seconds": "60"}`` through as if they had been sent typed. This hook runs before the
arguments are converted and decodes the body against the handler's declared body type with
``strict=True`` (a number with no fractional part counts as an integer, as JSON Schema has it);
a mismatch is the usual 422 ``request.validation_failed`` envelope naming the field, and
nothing is called. A body that is not JSON at all is left to Litestar (400
``request.malformed_json``), as is an absent one.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler

_NO_BODY: Final = object()
# up to this magnitude an integral float is exactly the integer it shows; beyond, it may be a
# rounded one, and is left a float (an integer field then refuses it)
_EXACT: Final = 2**53
# msgspec names the failing place as ``$.field`` / ``$.list[3].field``
_PATH: Final = re.compile(r"at `\$\.?([^`]*)`")
_body_types: dict[HTTPRouteHandler, Any] = {}


def _body_type(handler: HTTPRouteHandler) -> Any:
    found = _body_types.get(handler)
    if found is None:
        data = handler.parsed_fn_signature.parameters.get("data")
        found = _body_types[handler] = data.annotation if data is not None else _NO_BODY
    return found


async def strict_json_body(request: Request[Any, Any, Any]) -> None:
    """Refuse a JSON body that only lax conversion would make fit (see module doc)."""
    handler = request.route_handler
    if not isinstance(handler, HTTPRouteHandler):
        return
    body_type = _body_type(handler)
    if body_type is _NO_BODY:
        return
    raw = await request.body()
    if not raw.strip():
        return
    try:
        msgspec.json.decode(raw, type=body_type, strict=True)
        return
    except msgspec.ValidationError:
        pass
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return  # not JSON (or nested too deep): Litestar answers it as it does any malformed body
    # JSON has one kind of number: 453.0 is the integer 453 by the document's schema. Integral
    # numbers are taken as integers, then the body is checked strictly again.
    try:
        msgspec.convert(_integral(msgspec.json.decode(raw)), type=body_type, strict=True)
    except msgspec.ValidationError as exc:  # (a DecodeError too: caught first)
        text = str(exc)
        where = _PATH.search(text)
        raise ValidationException(
            detail="the request does not match the expected shape",
            extra=[{"key": (where.group(1) if where else "") or "data", "source": "body", "message": text}],
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return


def _integral(value: Any) -> Any:
    """``value`` with every float that holds an integer exactly (``453.0``) as that integer."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= _EXACT else value
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value
