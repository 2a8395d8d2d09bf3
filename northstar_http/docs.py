"""The API docs page: Swagger UI, with every asset it needs served by the app itself.

Litestar's render plugins load their scripts, styles and favicon from public CDNs, so on a host
without internet the docs page is blank. This plugin serves the Swagger UI build that the pinned
``swagger-ui-py`` package ships (the ``http`` extra) under ``<openapi path>/swagger-ui/`` and
points the page at those files only; the OpenAPI document itself is inlined in the page.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from litestar import Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import OpenAPIRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.params import FromPath

ASSET_DIR: Final = "swagger-ui"
# The files the page loads (and nothing else of the package, which also ships Swagger Editor);
# Litestar adds the charset to text/* media types.
ASSETS: Final[dict[str, str]] = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
# The files change only with the swagger-ui-py pin (constraints.txt), so browsers may keep them a day.
ASSET_CACHE_CONTROL: Final = "public, max-age=86400"


def swagger_ui_static_dir() -> Path:
    """Where ``swagger-ui-py`` keeps the Swagger UI build (found without importing the package,
    whose ``__init__`` loads its framework adapters)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "swagger-ui-py is not installed: it comes with the http extra (pip install northstar[http])"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@functools.cache
def _asset_bytes(name: str) -> bytes:
    return (swagger_ui_static_dir() / name).read_bytes()


@get(f"/{ASSET_DIR}/{{name:str}}", sync_to_thread=True, include_in_schema=False)
def swagger_ui_asset(name: FromPath[str]) -> Response[bytes]:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFoundException(f"no docs asset {name!r}")
    return Response(_asset_bytes(name), media_type=media_type, headers={"Cache-Control": ASSET_CACHE_CONTROL})


class OfflineSwaggerRenderPlugin(SwaggerRenderPlugin):
    """Swagger UI at ``paths`` of the OpenAPI router mounted at ``openapi_path``, its assets
    served next to it."""

    def __init__(self, openapi_path: str, paths: Sequence[str] = ("/", "/swagger")) -> None:
        assets = f"{openapi_path.rstrip('/')}/{ASSET_DIR}"
        super().__init__(
            js_url=f"{assets}/swagger-ui-bundle.js",
            css_url=f"{assets}/swagger-ui.css",
            standalone_preset_js_url=f"{assets}/swagger-ui-standalone-preset.js",
            path=list(paths),
            favicon=f"<link rel='icon' type='image/png' href='{assets}/favicon-32x32.png'>",
        )

    def receive_router(self, router: Router) -> None:
        super().receive_router(router)  # Swagger UI's oauth2-redirect.html
        router.register(swagger_ui_asset)


def docs_render_plugins(openapi_path: str) -> list[OpenAPIRenderPlugin]:
    """The pages under the OpenAPI path: Swagger UI at its root and ``/swagger``, the document
    as YAML (``/openapi.yaml``); ``/openapi.json`` is always served. Litestar's other pages
    (Redoc, RapiDoc, Elements) need a CDN and are left out."""
    return [OfflineSwaggerRenderPlugin(openapi_path), YamlRenderPlugin()]
