"""The OpenAPI document's configuration: title, security schemes and where it is served."""

from __future__ import annotations

from typing import Final

from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

OPENAPI_PATH: Final = "/schema"


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Northstar durable engines",
        version="0.1.0",
        path=OPENAPI_PATH,
        components=Components(
            security_schemes={
                "BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
            }
        ),
        security=[{"BearerToken": []}],
    )
