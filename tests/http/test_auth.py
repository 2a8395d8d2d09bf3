"""JWT verification: every forged, stale or misdirected token is a 401 envelope."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from litestar.testing import AsyncTestClient

from northstar_http.bootstrap import create_app
from tests.conftest import JWT_SECRET, make_settings

AUD, ISS = "northstar-test", "https://issuer.test"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(public_key: Any, kid: str, alg: str) -> dict[str, Any]:
    algo = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    data = json.loads(algo.to_jwk(public_key))
    data.update(kid=kid, alg=alg, use="sig")
    return data


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "u_alice", "tenant_id": "t_alpha", "mode": "lab", "roles": ["member"],
        "iat": now, "nbf": now - 5, "exp": now + 600, "aud": AUD, "iss": ISS,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
async def jwks_client(tmp_path):
    jwks = {"keys": [_jwk(RSA_KEY.public_key(), "rsa1", "RS256"), _jwk(EC_KEY.public_key(), "ec1", "ES256")]}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    settings = make_settings(
        tmp_path, jwt={"hs256_secret": JWT_SECRET, "jwks_file": str(path), "audience": AUD, "issuer": ISS}
    )
    async with AsyncTestClient(app=create_app(settings)) as c:
        yield c


async def call(client, token: str) -> Any:
    return await client.get("/chat/threads", headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize(
    "token_factory",
    [
        lambda: jwt.encode(claims(), JWT_SECRET, algorithm="HS256"),
        lambda: jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa1"}),
        lambda: jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "ec1"}),
    ],
    ids=["hs256", "rs256", "es256"],
)
async def test_valid_tokens_are_accepted(jwks_client, token_factory) -> None:
    r = await call(jwks_client, token_factory())
    assert r.status_code == 200, r.text


def _alg_none() -> str:
    return f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims()).encode())}."


def _hs_signed_with_public_key() -> str:
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': 'rsa1'}).encode())}." + b64(
        json.dumps(claims()).encode()
    )
    sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def _rs_token_claiming_ec_key() -> str:
    return jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "ec1"})


def hs(**over: Any) -> str:
    return jwt.encode(claims(**over), JWT_SECRET, algorithm="HS256")


def _unsupported_alg() -> str:
    return jwt.encode(claims(), JWT_SECRET, algorithm="HS512")


@pytest.mark.parametrize(
    "token_factory, reason",
    [
        (_alg_none, "unsupported_algorithm"),
        (_hs_signed_with_public_key, "bad_signature"),
        (_rs_token_claiming_ec_key, "unknown_key"),
        (_unsupported_alg, "unsupported_algorithm"),
        (lambda: hs(exp=int(time.time()) - 60), "expired"),
        (lambda: hs(nbf=int(time.time()) + 600), "not_yet_valid"),
        (lambda: hs(aud="someone-else"), "bad_audience"),
        (lambda: hs(iss="https://evil.test"), "bad_issuer"),
        (lambda: hs(aud=None), "missing_claim"),
        (lambda: hs(exp=None), "missing_claim"),
        (lambda: hs(tenant_id=None), "missing_claim"),
        (lambda: jwt.encode(claims(), "another-secret-of-good-length!!", algorithm="HS256"), "bad_signature"),
        (lambda: jwt.encode(claims(), OTHER_RSA, algorithm="RS256", headers={"kid": "rsa1"}),
         "bad_signature"),
        (lambda: jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "nope"}), "unknown_key"),
        (lambda: "not.a.jwt", "malformed"),
        (lambda: "garbage", "malformed"),
    ],
    ids=[
        "alg-none", "hs-rs-confusion", "rs-with-ec-kid", "hs512", "expired", "nbf-future", "wrong-aud",
        "wrong-iss", "no-aud", "no-exp", "no-tenant", "bad-hs-signature", "bad-rs-signature",
        "unknown-kid", "malformed", "garbage",
    ],
)
async def test_bad_tokens_are_401_envelopes(jwks_client, token_factory, reason: str) -> None:
    r = await call(jwks_client, token_factory())
    assert r.status_code == 401, r.text
    err = r.json()["error"]
    assert err["code"] == "auth.invalid_token" and err["details"]["reason"] == reason
    assert err["request_id"] == r.headers["x-request-id"]


def _crafted_header(header: dict[str, Any]) -> str:
    """A token whose header is whatever JSON a sender chooses (its signature is not checked
    before the header is read)."""
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}.{b64(b'sig')}"


@pytest.mark.parametrize(
    "header, reason",
    [
        ({"alg": ["HS256"], "typ": "JWT"}, "unsupported_algorithm"),
        ({"alg": {"RS256": 1}}, "unsupported_algorithm"),
        ({"alg": ["RS256", "HS256"]}, "unsupported_algorithm"),
        ({"alg": None}, "unsupported_algorithm"),
        ({"alg": 256}, "unsupported_algorithm"),
        ({"alg": "RS256", "kid": ["rsa1"]}, "malformed"),
        ({"alg": "RS256", "kid": {"rsa1": 1}}, "malformed"),
    ],
    ids=["alg-list", "alg-object", "alg-two", "alg-null", "alg-number", "kid-list", "kid-object"],
)
async def test_a_header_of_the_wrong_json_type_is_a_401_envelope(jwks_client, header, reason) -> None:
    for path in ("/chat/threads", "/users/me/data", "/system/migrations"):
        r = await jwks_client.get(path, headers={"Authorization": f"Bearer {_crafted_header(header)}"})
        assert r.status_code == 401, (path, r.text)
        err = r.json()["error"]
        assert err["code"] == "auth.invalid_token" and err["details"]["reason"] == reason, err
    # the same crafted header as a stream ticket
    r = await jwks_client.get(f"/sse/chat/th_1?ticket={_crafted_header(header)}")
    assert r.status_code == 401 and r.json()["error"]["code"] == "auth.invalid_ticket", r.text

@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer   ", "token"])
async def test_missing_or_non_bearer_authorization_is_401(client, header: str) -> None:
    r = await client.get("/chat/threads", headers={"Authorization": header})
    assert r.status_code == 401 and r.json()["error"]["code"] == "auth.missing_token"


async def test_public_endpoints_need_no_token(client) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    assert (await client.get("/schema/openapi.json")).status_code == 200
    assert (await client.get("/schema")).status_code == 200


async def test_lab_deployment_refuses_tokens_of_another_mode(client, auth) -> None:
    r = await client.get("/chat/threads", headers=auth(mode="saas"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "auth.identity_mismatch"


async def test_header_contradicting_token_is_403_and_audited(client, auth, engines) -> None:
    r = await client.get("/chat/threads", headers=auth(headers={"X-Tenant-Id": "t_beta"}))
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["code"] == "auth.identity_mismatch" and err["details"]["field"] == "tenant_id"
    assert err["details"]["audited"] is True
    from northstar_core.identity import RequestContext

    alpha = RequestContext(tenant_id="t_alpha", mode="lab", user_id="u_alice", roles=("member",))
    page = await engines.spine.list(alpha, event_type="audit")
    assert any(e.payload.get("action") == "identity_mismatch" for e in page.items)


async def test_matching_identity_headers_are_accepted(client, auth) -> None:
    headers = auth(headers={"X-Tenant-Id": "t_alpha", "X-Mode": "lab", "X-User-Id": "u_alice"})
    assert (await client.get("/chat/threads", headers=headers)).status_code == 200


async def test_malformed_identity_header_is_400(client, auth) -> None:
    r = await client.get("/chat/threads", headers=auth(headers={"X-Project-Id": "bad|id"}))
    assert r.status_code == 400 and r.json()["error"]["code"] == "auth.invalid_identity"


@pytest.fixture
def jwks_http_server():
    import http.server
    import threading

    body = json.dumps({"keys": [_jwk(RSA_KEY.public_key(), "rsa1", "RS256")]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()
    server.server_close()


async def test_jwks_url_keys_verify_rs256_tokens(tmp_path, jwks_http_server) -> None:
    settings = make_settings(tmp_path, jwt={"jwks_url": jwks_http_server, "audience": AUD, "issuer": ISS})
    async with AsyncTestClient(app=create_app(settings)) as c:
        good = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa1"})
        assert (await call(c, good)).status_code == 200
        hs = jwt.encode(claims(), JWT_SECRET, algorithm="HS256")  # no HS secret configured
        r = await call(c, hs)
        assert r.status_code == 401 and r.json()["error"]["details"]["reason"] == "unsupported_algorithm"


async def test_unreachable_jwks_url_is_503(tmp_path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(tmp_path, jwt={"jwks_url": f"http://127.0.0.1:{port}/jwks.json"})
    async with AsyncTestClient(app=create_app(settings)) as c:
        token = jwt.encode(claims(aud=None, iss=None), RSA_KEY, algorithm="RS256", headers={"kid": "rsa1"})
        r = await call(c, token)
    assert r.status_code == 503 and r.json()["error"]["code"] == "auth.jwks_unavailable"
    assert r.headers["retry-after"]


@pytest.mark.parametrize(
    "token_factory, reason, claim",
    [
        (lambda: hs(aud="someone-else"), "bad_audience", "aud"),
        (lambda: hs(aud=None), "missing_claim", "aud"),
        (lambda: hs(iss="https://evil.test"), "bad_issuer", "iss"),
        (lambda: hs(exp=None), "missing_claim", "exp"),
        (lambda: hs(tenant_id=None), "missing_claim", "tenant_id"),
        (lambda: hs(tenant_id="t_alpha\n"), "invalid_claim", "tenant_id"),
        (lambda: hs(system="false"), "invalid_claim", "system"),
        (lambda: hs(roles=5), "invalid_claim", "roles"),
        (lambda: hs(sub=""), "invalid_claim", "sub"),
        (lambda: jwt.encode(claims(system="true"), RSA_KEY, algorithm="RS256", headers={"kid": "rsa1"}),
         "invalid_claim", "system"),
    ],
    ids=["wrong-aud", "no-aud", "wrong-iss", "no-exp", "no-tenant", "tenant-newline", "system-string",
         "roles-int", "empty-sub", "rs256-system-string"],
)
async def test_claim_errors_name_the_claim(jwks_client, token_factory, reason: str, claim: str) -> None:
    r = await call(jwks_client, token_factory())
    assert r.status_code == 401, r.text
    details = r.json()["error"]["details"]
    assert (details["reason"], details["claim"]) == (reason, claim)


async def test_a_refused_claim_is_refused_again_not_cached(jwks_client) -> None:
    token = hs(roles={"admin": True})
    for _ in range(2):
        r = await call(jwks_client, token)
        assert r.status_code == 401 and r.json()["error"]["details"]["claim"] == "roles"


def test_public_paths_are_matched_whole() -> None:
    import re

    from northstar_http.auth import PUBLIC_PATHS

    public = re.compile("|".join(PUBLIC_PATHS))
    assert public.search("/healthz") and public.search("/readyz") and public.search("/schema/openapi.json")
    assert not public.search("/healthz\n") and not public.search("/readyz\n")
