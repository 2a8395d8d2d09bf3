"""Authentication: verified JWTs in, a :class:`RequestContext` out.

* ``Authorization: Bearer <JWT>`` is required on every route except ``/healthz``, ``/readyz``,
  the OpenAPI docs (``/schema``) and the operator console's static page (``/console``, which
  holds no data: every call it makes carries the operator's token).
* The one other credential is a stream ticket (``?ticket=``, :mod:`northstar_http.tickets`),
  accepted only on the GET of the one SSE path it was minted for — what a browser's
  ``EventSource``, which cannot send headers, uses instead of a bearer token.
* HS256 tokens are verified with the configured secret; RS256/ES256 tokens with a key from a
  JWKS (file or URL) chosen by ``kid``. The algorithms are pinned per key type (HS256 only
  with the secret, RS256 only with RSA keys, ES256 only with EC keys; ``oct`` keys in a JWKS
  are ignored), so ``alg: none`` and HS/RS confusion are refused before any signature check.
* ``exp`` and ``sub`` are required; ``nbf``, ``aud`` and ``iss`` are checked (audience and
  issuer are required when configured). Without a configured audience a token that names one
  is refused: it was issued for some other service (RFC 7519 §4.1.3).
* The payload is decoded strictly (:func:`northstar_core.identity.claims_from_payload`): a
  claim of the wrong type or outside its grammar is a 401, never coerced.
* Identity headers (SPEC §3) are resolved against the claims by the core's precedence rule; a
  contradiction, or one identity header repeated with different values, is 403
  ``auth.identity_mismatch`` and an ``audit`` event on the spine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Final

import jwt
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult

from northstar_core.engines import Engines
from northstar_core.errors import NorthstarError
from northstar_core.identity import (
    HEADER_FIELDS,
    Claims,
    IdentityMismatch,
    RequestContext,
    ServerBinding,
    claims_from_payload,
    invalid_token,
    resolve_context,
)
from northstar_http.errors import request_id
from northstar_http.observability import note_tenant, trace_id_of
from northstar_http.tickets import StreamTicket, StreamTickets, invalid_ticket, ticket_from_query

log = logging.getLogger("northstar.auth")

PUBLIC_PATHS: Final = [r"^/healthz\Z", r"^/readyz\Z", r"^/schema", r"^/console(?:/[a-z0-9_.-]*)?\Z"]
_ALG_KEY_TYPE: Final = {"RS256": "RSA", "ES256": "EC"}
# Verified-token cache (see TokenVerifier.verify): entries, and the longest an entry is trusted.
VERIFIED_CACHE_SIZE: Final = 4096
CACHE_SECONDS: Final = 60.0
# Claim-type errors pyjwt raises itself, before the strict decode sees the payload (the
# sub/jti checks exist from pyjwt 2.10 on).
_PYJWT_CLAIM_ERRORS: Final[dict[type[Exception], str]] = {
    getattr(jwt.exceptions, name): claim
    for name, claim in (
        ("InvalidSubjectError", "sub"),
        ("InvalidJTIError", "jti"),
        ("InvalidIssuedAtError", "iat"),
    )
    if hasattr(jwt.exceptions, name)
}
_TIME_CLAIM: Final = re.compile(r"\((exp|nbf)\) must be")


def _invalid(
    reason: str, message: str = "the bearer token is not valid", *, claim: str | None = None
) -> NorthstarError:
    return invalid_token(reason, message, claim=claim)


def _bad_claim(claim: str) -> NorthstarError:
    return _invalid("invalid_claim", f"the bearer token's '{claim}' claim is not valid", claim=claim)


class TokenVerifier:
    """Verifies bearer tokens against the configured keys (see module doc)."""

    def __init__(
        self,
        *,
        hs256_secret: str | None = None,
        jwks: dict[str, Any] | None = None,
        jwks_url: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0,
    ) -> None:
        if not (hs256_secret or jwks or jwks_url):
            raise ValueError("token verification needs an HS256 secret, a JWKS file or a JWKS URL")
        self._secret = hs256_secret
        self._jwks = jwt.PyJWKSet.from_dict(jwks) if jwks else None
        self._jwks_client = jwt.PyJWKClient(jwks_url, cache_keys=True) if jwks_url else None
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        # token -> (claims, valid_until, not_before): a client sends the same token on every
        # request, and decoding + checking the signature is a large share of a cheap request
        # (benchmark P1). Only fully verified tokens are cached; time claims are re-checked on
        # every hit and an entry lives at most CACHE_SECONDS (a rotated JWKS key takes effect).
        self._verified: OrderedDict[str, tuple[Claims, float, float]] = OrderedDict()

    @classmethod
    def from_jwks_file(cls, path: str | Path, **kwargs: Any) -> TokenVerifier:
        return cls(jwks=json.loads(Path(path).read_text()), **kwargs)

    async def _asymmetric_key(self, kid: str | None, alg: str) -> Any:
        want = _ALG_KEY_TYPE[alg]
        candidates: list[jwt.PyJWK] = []
        if self._jwks is not None:
            candidates = [k for k in self._jwks.keys if kid is None or k.key_id == kid]
        elif self._jwks_client is not None:
            client = self._jwks_client
            try:
                keys = await asyncio.to_thread(client.get_signing_keys)
            except jwt.PyJWKClientConnectionError as exc:
                raise NorthstarError(
                    "auth.jwks_unavailable",
                    "the key set for verifying tokens could not be fetched",
                    503,
                    headers={"Retry-After": "5"},
                ) from exc
            except jwt.PyJWKClientError:
                keys = []
            candidates = [k for k in keys if kid is None or k.key_id == kid]
        for key in candidates:
            declared = getattr(key, "algorithm_name", None)
            if key.key_type == want and (declared in (None, alg)):
                return key.key
        raise _invalid("unknown_key", "no key in the key set matches this token")

    async def verify(self, token: str) -> Claims:
        """The claims of a valid token, or 401 ``auth.invalid_token`` with ``details.reason``."""
        cached = self._verified.get(token)
        if cached is not None:
            claims, valid_until, not_before = cached
            if not_before <= time.time() < valid_until:
                return claims
            self._verified.pop(token, None)  # verify again: the right error, or a fresh entry
        claims, valid_until, not_before = await self._verify(token)
        self._verified[token] = (claims, valid_until, not_before)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    async def _verify(self, token: str) -> tuple[Claims, float, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _invalid("malformed") from None
        alg = header.get("alg")
        # The header is the sender's JSON (pyjwt checks only 'kid' is a string): an 'alg' that
        # is a list or an object is refused before it meets a set lookup.
        if not isinstance(alg, str):
            raise _invalid("unsupported_algorithm", "the token's 'alg' header must be a string")
        if alg == "HS256" and self._secret:
            key: Any = self._secret
        elif alg in _ALG_KEY_TYPE and (self._jwks is not None or self._jwks_client is not None):
            key = await self._asymmetric_key(header.get("kid"), alg)
        else:
            raise _invalid("unsupported_algorithm", f"tokens signed with {alg[:20]!r} are not accepted")
        required = ["exp", "sub"]
        if self.audience:
            required.append("aud")
        if self.issuer:
            required.append("iss")
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": required, "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("expired", "the bearer token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _invalid("not_yet_valid", "the bearer token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise _invalid("bad_audience", claim="aud") from None
        except jwt.InvalidIssuerError:
            raise _invalid("bad_issuer", claim="iss") from None
        except jwt.InvalidSignatureError:
            raise _invalid("bad_signature") from None
        except tuple(_PYJWT_CLAIM_ERRORS) as exc:
            raise _bad_claim(_PYJWT_CLAIM_ERRORS[type(exc)]) from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(
                "missing_claim", f"the bearer token lacks the '{exc.claim}' claim", claim=exc.claim
            ) from None
        except jwt.DecodeError as exc:
            # pyjwt reports a non-numeric exp/nbf as a decode error naming the claim
            time_claim = _TIME_CLAIM.search(str(exc))
            if time_claim is None:
                raise _invalid("malformed") from None
            claim = time_claim.group(1)
            raise _bad_claim(claim) from None
        except jwt.InvalidTokenError:
            raise _invalid("malformed") from None
        if self.audience is None and "aud" in payload:
            # RFC 7519 §4.1.3: a recipient that does not identify itself with a value in "aud"
            # must refuse the token; a service with no audience of its own matches none.
            raise _invalid(
                "unexpected_audience",
                "the bearer token is addressed to an audience this service does not serve",
                claim="aud",
            )
        claims = claims_from_payload(payload)  # exp/nbf are numbers from here on
        now = time.time()
        valid_until = min(float(payload["exp"]) + self.leeway, now + CACHE_SECONDS)
        nbf = payload.get("nbf")
        not_before = float(nbf) - self.leeway if nbf is not None else 0.0
        return claims, valid_until, not_before


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Puts the verified :class:`Claims` on ``request.user`` (401 envelope otherwise)."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        scope = connection.scope
        raw = raw_header(scope, b"authorization")
        ticket = ticket_from_query(scope.get("query_string", b""))
        if ticket is not None:
            if raw is not None:
                raise invalid_ticket("ambiguous", "send a bearer token or a stream ticket, not both")
            tickets: StreamTickets = connection.app.state.tickets
            claims, verified = tickets.verify(
                ticket,
                method=str(scope.get("method", "")),
                path=scope["path"],
                resuming=raw_header(scope, b"last-event-id") is not None,
            )
            note_tenant(scope, claims.tenant_id)
            return AuthenticationResult(user=claims, auth=verified)
        header = raw or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NorthstarError(
                "auth.missing_token", "an 'Authorization: Bearer' token is required", 401
            )
        verifier: TokenVerifier = connection.app.state.verifier
        claims = await verifier.verify(token.strip())
        note_tenant(connection.scope, claims.tenant_id)  # verified: the request's log lines carry it
        return AuthenticationResult(user=claims, auth=token)


def raw_header(scope: Any, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), read from the ASGI scope directly:
    building Litestar's header multidict costs time on every request and memory for the whole
    life of a long-lived (SSE) request (benchmarks P1, P5)."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


_IDENTITY_HEADERS: Final = {name.encode(): field for name, field in HEADER_FIELDS.items()}


def presented_identity(request: Request[Any, Any, Any]) -> dict[str, str]:
    """Identity values the caller presented in headers (field name -> value).

    A header repeated with the same value counts once; repeated with different values it is
    an :class:`IdentityMismatch`: comparing only the first copy would let a second one reach
    whatever reads headers differently (a proxy, a log, another framework). A proxy may fold
    repeated headers into one comma-separated line (RFC 9110 §5.3); no identity value may hold
    a comma, so each element of such a line counts as one copy.
    """
    found: dict[str, str] = {}
    for key, value in request.scope["headers"]:
        field = _IDENTITY_HEADERS.get(key.lower())
        if field is None:
            continue
        for element in value.decode("latin-1").split(","):
            shown = element.strip(" \t")
            first = found.setdefault(field, shown)
            if first != shown:
                raise IdentityMismatch.conflicting(field, first, shown)
    return found


async def provide_ctx(request: Request[Any, Any, Any], state: State) -> RequestContext:
    """Dependency ``ctx``: the request's identity, resolved by the core's precedence rule."""
    claims: Claims = request.user
    binding: ServerBinding = state.binding
    rid = request_id(request.scope)
    try:
        presented = presented_identity(request)
        if isinstance(request.auth, StreamTicket):
            # The scope the caller presented when minting the ticket (an EventSource cannot
            # send those headers); a header sent now must agree with it.
            for field, value in request.auth.scope.items():
                shown = presented.setdefault(field, value)
                if shown != value:
                    raise IdentityMismatch(field, value, shown)
        trace_id = trace_id_of(request.scope)
        if trace_id and not presented.get("trace_id"):
            # The W3C trace (traceparent, or this request's own span) becomes the context's
            # trace id, so spine events join the trace; an explicit X-Trace-Id still wins.
            presented["trace_id"] = trace_id
        ctx = resolve_context(claims, presented, binding=binding, request_id=rid)
    except IdentityMismatch as exc:
        await _audit_mismatch(state.engines, claims, binding, rid, exc, trace_id_of(request.scope))
        raise
    note_tenant(request.scope, ctx.tenant_id)
    return ctx


async def _audit_mismatch(
    engines: Engines,
    claims: Claims,
    binding: ServerBinding,
    rid: str,
    exc: IdentityMismatch,
    trace_id: str | None = None,
) -> None:
    # The audit event is written in the *authenticated* identity (server binding and token),
    # never in the one the headers claimed.
    actor = RequestContext(
        tenant_id=binding.tenant_id or claims.tenant_id,
        mode=binding.mode or claims.mode,
        user_id=claims.sub,
        roles=tuple(claims.roles),
        is_system=claims.system,
        agent_id=claims.agent_id,
        trace_id=trace_id,
        request_id=rid,
    )
    payload: dict[str, Any] = {"field": exc.field, "presented": str(exc.details.get("presented"))[:200]}
    if "reason" in exc.details:
        payload["reason"] = exc.details["reason"]
    try:
        await engines.audit.audit(actor, "identity_mismatch", payload)
        exc.details["audited"] = True
    except Exception:  # the refusal stands even if the audit record could not be written
        log.exception("could not record identity_mismatch audit event (request %s)", rid)
        exc.details["audited"] = False
