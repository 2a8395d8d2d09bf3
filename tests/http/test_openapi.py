"""The published OpenAPI document (contracts/openapi.json) matches the app's routes."""

from __future__ import annotations

import json

from northstar_http.cli import OPENAPI_FILE, openapi_document


def test_published_openapi_is_up_to_date() -> None:
    assert OPENAPI_FILE.is_file(), "run `northstar openapi` to publish contracts/openapi.json"
    assert OPENAPI_FILE.read_text() == openapi_document(), (
        "contracts/openapi.json is stale: run `northstar openapi` and commit it"
    )


def test_openapi_documents_bearer_auth_and_the_chat_rail() -> None:
    doc = json.loads(openapi_document())
    assert doc["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
    for path in ("/chat/threads/{thread_id}/messages", "/sse/chat/{thread_id}", "/routing/routes", "/readyz"):
        assert path in doc["paths"], path
