"""Validly signed tokens with hostile claims: every claim is validated, never coerced.

A token's signature only proves who issued it; the claims inside are still input. Each one the
service reads is decoded strictly (a wrong type or a value outside its grammar is 401
``auth.invalid_token`` naming the claim), and a token addressed to some other audience is
refused even by a service configured without one (RFC 7519 §4.1.3).
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from northstar_core.errors import NorthstarError
from northstar_core.identity import Claims, claims_from_payload
from northstar_http.bootstrap import create_app
from northstar_http.tokens import mint_token
from tests.conftest import JWT_SECRET, make_settings

BODY = {"values": {"canvas.gestures_enabled": False}}


def payload(**over: Any) -> dict[str, Any]:
    """A valid payload for the test app (HS256 secret, no audience configured), with overrides;
    an override of ``DROP`` removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "u_alice", "tenant_id": "t_alpha", "mode": "lab", "roles": ["member"],
        "iat": now, "nbf": now - 5, "exp": now + 600,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not DROP}


DROP = object()


def signed(**over: Any) -> str:
    # Signed as raw JWS: pyjwt's encoder would refuse some of the hostile payloads (iss=5).
    return jwt.api_jws.encode(json.dumps(payload(**over)).encode(), JWT_SECRET, algorithm="HS256")


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def refused(resp: Any, claim: str, reason: str | None = "invalid_claim") -> None:
    """A 401 naming ``claim``; ``reason=None`` allows either claim reason (a null ``sub`` is
    "missing" to pyjwt, a null ``tenant_id`` "invalid" to the strict decoder)."""
    assert resp.status_code == 401, resp.text
    err = resp.json()["error"]
    assert err["code"] == "auth.invalid_token", err
    assert err["details"]["claim"] == claim, err
    reasons = {"invalid_claim", "missing_claim"} if reason is None else {reason}
    assert err["details"]["reason"] in reasons, err


# --- the reported cases, end to end ---------------------------------------------------------


async def test_a_string_system_flag_is_refused_not_read_as_true(client) -> None:
    viewer = {"roles": ["viewer"]}
    resp = await client.put("/config/system", json=BODY, headers=bearer(signed(**viewer, system="false")))
    refused(resp, "system")
    # the control: the same write with a real boolean works, so the refusal is the string's
    resp = await client.put("/config/system", json=BODY, headers=bearer(signed(**viewer, system=True)))
    assert resp.status_code == 201, resp.text
    resp = await client.put("/config/system", json=BODY, headers=bearer(signed(**viewer, system=False)))
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "auth.system_required"


async def test_roles_as_an_object_do_not_count_as_its_keys(client) -> None:
    resp = await client.put(
        "/config/tenant", json=BODY, headers=bearer(signed(roles={"admin": False, "member": True}))
    )
    refused(resp, "roles")
    resp = await client.put("/config/tenant", json=BODY, headers=bearer(signed(roles=["admin"])))
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize("roles", [5, 5.5, True, None, "admin", "admin member", [5], [["admin"]], [None]])
async def test_roles_of_the_wrong_type_are_401_not_500(client, roles: Any) -> None:
    refused(await client.get("/chat/threads", headers=bearer(signed(roles=roles))), "roles")


async def test_an_empty_subject_is_refused(client) -> None:
    refused(await client.get("/chat/threads", headers=bearer(signed(sub=""))), "sub")


# --- every claim, every kind of bad value ---------------------------------------------------

BAD_VALUES: list[tuple[str, Any]] = [
    ("sub", ""), ("sub", " "), ("sub", "u_alice\n"), ("sub", "a b"), ("sub", "x" * 256),
    ("sub", "ü"), ("sub", 5), ("sub", ["u_alice"]), ("sub", {"id": "u"}), ("sub", 1e400),
    ("tenant_id", ""), ("tenant_id", "t_alpha\n"), ("tenant_id", "alpha"), ("tenant_id", "t_"),
    ("tenant_id", "t_a|b"), ("tenant_id", "t_" + "a" * 121), ("tenant_id", 7), ("tenant_id", None),
    ("tenant_id", ["t_alpha"]),
    ("mode", ""), ("mode", "prod"), ("mode", "lab\n"), ("mode", "LAB"), ("mode", 1), ("mode", None),
    ("roles", [""]), ("roles", ["admin\n"]), ("roles", ["a b"]), ("roles", ["x" * 101]),
    ("roles", ["member"] * 65), ("roles", {}),
    ("system", "true"), ("system", "false"), ("system", 1), ("system", 0), ("system", None),
    ("system", []), ("system", {}),
    ("agent_id", ""), ("agent_id", "a|b"), ("agent_id", "a\n"), ("agent_id", 3), ("agent_id", None),
    ("agent_id", "x" * 201),
    ("project_id", ""), ("project_id", "p 1"), ("project_id", "p1\n"), ("project_id", False),
    ("exp", "9999999999"), ("exp", [1]), ("exp", 1e400), ("nbf", None),
    ("nbf", "0"), ("iat", "0"), ("iat", [0]), ("jti", 5), ("iss", 5), ("iss", None),
]


@pytest.mark.parametrize(("claim", "value"), BAD_VALUES, ids=[f"{c}={v!r:.20}" for c, v in BAD_VALUES])
async def test_a_bad_claim_value_is_401_naming_the_claim(client, claim: str, value: Any) -> None:
    refused(await client.get("/chat/threads", headers=bearer(signed(**{claim: value}))), claim)


@pytest.mark.parametrize("claim", ["sub", "tenant_id", "mode", "exp"])
async def test_a_missing_identity_claim_is_401_naming_it(client, claim: str) -> None:
    resp = await client.get("/chat/threads", headers=bearer(signed(**{claim: DROP})))
    refused(resp, claim, "missing_claim")
    if claim == "sub":  # pyjwt counts a null subject as absent
        resp = await client.get("/chat/threads", headers=bearer(signed(sub=None)))
        refused(resp, claim, "missing_claim")


async def test_registered_and_unknown_claims_are_accepted(client) -> None:
    token = signed(
        jti="j-1", iss="https://issuer.example", email="a@example.com", scope="read write",
        azp="web", auth_time=int(time.time()), system=True, agent_id="agent.1", project_id="p1",
        roles=["owner", "Task.Write", "read:messages", "default-roles-realm"],
    )
    resp = await client.get("/chat/threads", headers=bearer(token))
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("sub", ["auth0|5f2b", "ada@example.com", "google-oauth2|1234", "~x", "a" * 255])
async def test_identity_provider_subjects_are_accepted(client, sub: str) -> None:
    resp = await client.post(
        "/chat/threads/th1/messages",
        json={"role": "user", "content": "hi", "idempotency_key": "k1"},
        headers=bearer(signed(sub=sub)),
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["user_id"] == sub


# --- property: the strict decoder, against an independent oracle ---------------------------

VISIBLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))
ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
ROLE_CHARS = ID_CHARS + "/"
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.text(max_size=300), st.text(alphabet=VISIBLE_ASCII, max_size=300),
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=6,
)


def _ok_text(value: Any, chars: str, lo: int, hi: int) -> bool:
    return isinstance(value, str) and lo <= len(value) <= hi and all(c in chars for c in value)


def oracle(claim: str, value: Any) -> bool:
    """Whether ``value`` is acceptable for ``claim``, written without the service's regexes."""
    if claim == "sub":
        return _ok_text(value, VISIBLE_ASCII, 1, 255)
    if claim == "tenant_id":
        return isinstance(value, str) and value.startswith("t_") and _ok_text(
            value[2:], ID_CHARS.replace(".", "").replace(":", ""), 1, 120
        )
    if claim == "mode":
        return value in ("saas", "enterprise", "system", "lab") and isinstance(value, str)
    if claim == "roles":
        return (
            isinstance(value, list)
            and len(value) <= 64
            and all(_ok_text(r, ROLE_CHARS, 1, 100) for r in value)
        )
    if claim == "system":
        return isinstance(value, bool)
    return _ok_text(value, ID_CHARS, 1, 200)  # agent_id, project_id


CLAIMS = ["sub", "tenant_id", "mode", "roles", "system", "agent_id", "project_id"]
near_valid = {
    "sub": st.text(alphabet=VISIBLE_ASCII + " \n\t\x00é", min_size=0, max_size=260),
    "tenant_id": st.builds(lambda s: "t_" + s, st.text(alphabet=ID_CHARS + "|\n ", max_size=125)),
    "mode": st.sampled_from(["saas", "enterprise", "system", "lab", "Lab", "lab\n", "", "prod"]),
    "roles": st.lists(st.text(alphabet=ROLE_CHARS + " \n|", max_size=105), max_size=66),
    "system": st.sampled_from([True, False, "true", "false", 1, 0, None]),
    "agent_id": st.text(alphabet=ID_CHARS + "|/\n ~", max_size=205),
    "project_id": st.text(alphabet=ID_CHARS + "|/\n ~", max_size=205),
}


@settings(max_examples=400, deadline=None)
@given(data=st.data(), claim=st.sampled_from(CLAIMS))
def test_the_decoder_accepts_exactly_what_the_grammar_allows(data: st.DataObject, claim: str) -> None:
    value = data.draw(st.one_of(near_valid[claim], json_values), label=claim)
    body = payload(**{claim: value})
    try:
        claims = claims_from_payload(body)
    except NorthstarError as err:
        assert not oracle(claim, value), f"{claim}={value!r} was refused: {err.message}"
        assert (err.code, err.http_status) == ("auth.invalid_token", 401)
        assert err.details == {"reason": "invalid_claim", "claim": claim}
        assert len(err.message) < 400  # never echoes a huge value
    else:
        assert oracle(claim, value), f"{claim}={value!r} was accepted"
        field = "sub" if claim == "sub" else claim
        got = getattr(claims, field)
        assert got == (tuple(value) if claim == "roles" else value)


def test_a_valid_payload_becomes_exactly_its_claims() -> None:
    claims = claims_from_payload(payload(roles=["admin"], system=True, agent_id="a1", project_id="p1"))
    assert claims == Claims(
        sub="u_alice", tenant_id="t_alpha", mode="lab", roles=("admin",), system=True,
        agent_id="a1", project_id="p1",
    )
    assert claims_from_payload(payload(roles=DROP)).roles == ()
    assert claims_from_payload(payload()).system is False


# --- audience --------------------------------------------------------------------------------


@pytest.mark.parametrize("aud", ["some-other-service", ["some-other-service"], [], ""])
async def test_without_a_configured_audience_a_token_naming_one_is_refused(client, aud: Any) -> None:
    refused(await client.get("/chat/threads", headers=bearer(signed(aud=aud))), "aud", "unexpected_audience")


async def test_without_a_configured_audience_a_token_naming_none_is_accepted(client) -> None:
    assert (await client.get("/chat/threads", headers=bearer(signed()))).status_code == 200


@pytest.fixture
async def aud_client(tmp_path):
    settings = make_settings(tmp_path, jwt={"hs256_secret": JWT_SECRET, "audience": "northstar"})
    async with AsyncTestClient(app=create_app(settings)) as c:
        yield c


@pytest.mark.parametrize(
    ("aud", "status", "reason"),
    [
        ("northstar", 200, None),
        (["other", "northstar"], 200, None),
        ("some-other-service", 401, "bad_audience"),
        (["other"], 401, "bad_audience"),
        (DROP, 401, "missing_claim"),
    ],
    ids=["exact", "in-list", "other", "other-list", "absent"],
)
async def test_with_a_configured_audience_the_token_must_name_it(
    aud_client, aud: Any, status: int, reason: str | None
) -> None:
    resp = await aud_client.get("/chat/threads", headers=bearer(signed(aud=aud)))
    assert resp.status_code == status, resp.text
    if reason is not None:
        refused(resp, "aud", reason)


async def test_mint_token_sets_the_audience(aud_client) -> None:
    minted = mint_token(JWT_SECRET, tenant_id="t_alpha", audience="northstar")
    assert jwt.decode(minted, options={"verify_signature": False})["aud"] == "northstar"
    assert (await aud_client.get("/chat/threads", headers=bearer(minted))).status_code == 200
    refused(
        await aud_client.get("/chat/threads", headers=bearer(mint_token(JWT_SECRET, tenant_id="t_alpha"))),
        "aud",
        "missing_claim",
    )


def test_mint_token_writes_system_only_when_set() -> None:
    decode = lambda t: jwt.decode(t, options={"verify_signature": False})  # noqa: E731
    assert "system" not in decode(mint_token(JWT_SECRET))
    assert decode(mint_token(JWT_SECRET, system=True))["system"] is True


# --- hypothesis over HTTP: no crafted claim ever gets past authentication --------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claim=st.sampled_from(CLAIMS), value=json_values)
async def test_no_crafted_claim_is_a_500_or_a_silent_coercion(client, claim: str, value: Any) -> None:
    resp = await client.get("/chat/threads", headers=bearer(signed(**{claim: value})))
    if oracle(claim, value):
        assert resp.status_code in (200, 403), resp.text  # 403: a mode other than the lab's
    else:
        refused(resp, claim, None)
