"""The operator console: one static page (HTML, a script, a style sheet) served from the
package (``northstar_http/console/``), no build chain and nothing from a CDN.

The page is public and holds no data: the operator enters a bearer token (kept in the tab's
``sessionStorage``), and every panel — routes and diagnostics, the spine tail, recent gate
decisions, the tenant kill switch — is read and written through the API with that token.
A strict Content-Security-Policy allows only this origin's script, style and API calls, and
no framing (the kill switch must not be clickable through someone else's page).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, Final

from litestar import Response, get

ASSETS: Final = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _asset(name: str) -> bytes:
    return resources.files("northstar_http").joinpath("console", name).read_bytes()


def _serve(name: str) -> Response[bytes]:
    return Response(_asset(name), media_type=ASSETS[name], headers=dict(SECURITY_HEADERS))


@get("/console", include_in_schema=False, exclude_from_auth=True, sync_to_thread=False)
def console_page() -> Response[bytes]:
    return _serve("index.html")


@get("/console/console.js", include_in_schema=False, exclude_from_auth=True, sync_to_thread=False)
def console_script() -> Response[bytes]:
    return _serve("console.js")


@get("/console/console.css", include_in_schema=False, exclude_from_auth=True, sync_to_thread=False)
def console_style() -> Response[bytes]:
    return _serve("console.css")


ROUTES: Final[list[Any]] = [console_page, console_script, console_style]
