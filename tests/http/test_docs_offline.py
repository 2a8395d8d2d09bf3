"""The docs page works on a host without internet: everything it loads is served by the app."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

from northstar_http.docs import ASSET_DIR
from northstar_http.openapi import OPENAPI_PATH

DOCS_PAGES = [OPENAPI_PATH, f"{OPENAPI_PATH}/swagger"]
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)""")
CSS_IMPORT = re.compile(r"""@import\s+(?:url\()?\s*['"]?([^'");\s]+)""")


class _References(HTMLParser):
    """Every URL the page makes the browser load or link to: attributes and inline CSS."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in {"src", "href", "srcset", "poster", "data", "action", "formaction"} and value:
                self.urls.append(value.split()[0])

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.urls += _css_references(data)


def _css_references(css: str) -> list[str]:
    return CSS_URL.findall(css) + CSS_IMPORT.findall(css)


def _external(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.netloc) or parts.scheme not in {"", "data"}


@pytest.mark.parametrize("page", DOCS_PAGES)
async def test_the_docs_page_loads_nothing_from_outside_and_every_asset_is_served(
    client: Any, page: str
) -> None:
    response = await client.get(page)  # public: no token
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "SwaggerUIBundle(" in html, "the docs page is not Swagger UI"
    parser = _References()
    parser.feed(html)
    external = [url for url in parser.urls if _external(url)]
    assert not external, f"{page} loads from outside the app: {external}"
    local = [url for url in parser.urls if not url.startswith("data:")]
    assert local, f"{page} references no asset at all"
    for url in local:
        asset = await client.get(urljoin(page, url))
        assert asset.status_code == 200, f"{page} references {url}, which answers {asset.status_code}"
        assert asset.content, url
        if url.endswith(".css"):
            # a stylesheet must not pull fonts or images from a CDN either
            css_refs = [ref for ref in _css_references(asset.text) if not ref.startswith("data:")]
            assert not [ref for ref in css_refs if _external(ref)], f"{url} loads from outside: {css_refs}"
            for ref in css_refs:
                assert (await client.get(urljoin(url, ref))).status_code == 200, f"{url} references {ref}"


async def test_the_swagger_ui_assets_have_their_media_types_and_are_cacheable(client: Any) -> None:
    expected = {
        "swagger-ui-bundle.js": "text/javascript",
        "swagger-ui-standalone-preset.js": "text/javascript",
        "swagger-ui.css": "text/css",
        "favicon-32x32.png": "image/png",
    }
    for name, media_type in expected.items():
        response = await client.get(f"{OPENAPI_PATH}/{ASSET_DIR}/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].split(";")[0] == media_type, name
        assert "max-age" in response.headers["cache-control"], name


@pytest.mark.parametrize(
    "name",
    [
        "swagger-editor-bundle.js",  # shipped by the package, but not part of the page
        "LICENSE",
        "nope.js",
        "..%2f..%2fdocs.py",
    ],
)
async def test_only_the_pages_assets_are_served(client: Any, name: str) -> None:
    response = await client.get(f"{OPENAPI_PATH}/{ASSET_DIR}/{name}")
    assert response.status_code == 404, (name, response.status_code)
