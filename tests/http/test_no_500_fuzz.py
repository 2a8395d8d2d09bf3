"""No request, however malformed, gets a 500 (SPEC §8): every documented operation is fuzzed with
random path ids, query values and JSON bodies; every answer below 500 or an honest 503, and
every error is the envelope."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from northstar_http.cli import openapi_document

DOC = json.loads(openapi_document())
OPERATIONS = [
    (method.upper(), path, op)
    for path, item in sorted(DOC["paths"].items())
    for method, op in sorted(item.items())
    if method in {"get", "post", "put", "patch", "delete"} and not path.startswith("/sse/")
]

ids = st.one_of(
    st.from_regex(r"\A[a-z][a-z0-9_]{0,12}\Z"),
    st.text(min_size=1, max_size=30).filter(lambda s: "/" not in s and s not in {".", ".."}),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(
        scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=12,
)


def _body_for(op: dict[str, Any]) -> st.SearchStrategy[Any]:
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    ref = schema.get("$ref", "")
    props: dict[str, Any] = {}
    if ref:
        props = DOC["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {}).get("properties", {})
    if props:
        # objects with the documented field names but arbitrary values, plus arbitrary JSON
        shaped = st.fixed_dictionaries({}, optional={name: json_values for name in props})
        return st.one_of(shaped, json_values)
    return json_values


@pytest.mark.parametrize("method, path, op", OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_operation_never_answers_500(
    client_factory, method: str, path: str, op: dict[str, Any]
) -> None:
    params = [p for p in op.get("parameters", []) if p.get("in") in ("path", "query")]
    path_names = [p["name"] for p in params if p["in"] == "path"]
    query_names = [p["name"] for p in params if p["in"] == "query"]

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        path_values=st.fixed_dictionaries({n: ids for n in path_names}),
        query=st.fixed_dictionaries(
            {}, optional={n: st.one_of(ids, st.integers().map(str)) for n in query_names}
        ),
        body=_body_for(op) if method in {"POST", "PUT", "PATCH"} else st.none(),
    )
    def run(path_values: dict[str, str], query: dict[str, str], body: Any) -> None:
        url = path
        for name, value in path_values.items():
            url = url.replace("{" + name + "}", quote(value, safe=""))
        response = client_factory.request(method, url, params=query, content=json.dumps(body).encode())
        assert response.status_code < 500 or response.status_code == 503, (
            f"{method} {url} {query} {body!r} -> {response.status_code} {response.text[:300]}"
        )
        if response.status_code >= 400 and response.content:
            err = response.json()["error"]
            assert err["http_status"] == response.status_code

    run()


@pytest.fixture
def client_factory(app, token):
    from litestar.testing import TestClient

    headers = {
        "Authorization": f"Bearer {token(roles=('owner', 'admin'), system=True)}",
        "Content-Type": "application/json",
    }
    with TestClient(app=app) as c:
        c.headers.update(headers)
        yield c
