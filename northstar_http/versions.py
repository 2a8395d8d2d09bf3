"""Versioned writes over HTTP: an ``ETag`` on what is read, ``If-Match`` on what is written.

A version travels as the strong ETag ``"<version>"``. A write names the version it replaces in
its body (``expected_version``), in ``If-Match``, or both — then they must agree. Every route
with versioned writes parses ``If-Match`` here, so the accepted forms and the error are the
same everywhere (422 ``<domain>.invalid_request``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from litestar import Response
from litestar.params import HeaderParameter, QueryParameter

from northstar_core.errors import NorthstarError

# A weak or unquoted ETag is accepted too: the value, not the form, is what is compared.
_ETAG: Final = re.compile(r'^\s*(?:W/)?"?(\d{1,18})"?\s*$')

IfMatch = Annotated[
    str | None, HeaderParameter(name="If-Match", required=False, description="ETag of the version replaced")
]
ExpectedVersion = Annotated[int | None, QueryParameter(name="expected_version", required=False)]


def etag(version: int) -> str:
    return f'"{version}"'


def with_etag(content: Any, version: int, status_code: int = 200) -> Response[Any]:
    return Response(content, status_code=status_code, headers={"ETag": etag(version)})


def if_match_version(domain: str, if_match: str | None) -> int | None:
    """The version ``If-Match`` names, ``None`` without the header (422 if malformed)."""
    if if_match is None:
        return None
    match = _ETAG.fullmatch(if_match)
    if match is None:
        raise NorthstarError(
            f"{domain}.invalid_request",
            'If-Match must be the ETag of a version, e.g. "3"',
            422,
            details={"if_match": if_match[:100]},
        )
    return int(match.group(1))


def expected_version(domain: str, body_version: Any, if_match: str | None) -> Any:
    """The expected version from the body and/or ``If-Match`` (422 if malformed or they differ).

    ``body_version`` is passed through as sent when there is no header: the domain checks it.
    """
    header_version = if_match_version(domain, if_match)
    if body_version is not None and header_version is not None and body_version != header_version:
        raise NorthstarError(
            f"{domain}.invalid_request",
            "expected_version and If-Match disagree",
            422,
            details={"expected_version": body_version, "if_match": header_version},
        )
    return body_version if body_version is not None else header_version


__all__ = ["ExpectedVersion", "IfMatch", "etag", "expected_version", "if_match_version", "with_etag"]
