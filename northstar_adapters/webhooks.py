"""Webhook action handlers: an operator-configured URL POSTed once the gate chain allows.

Only configuration creates a webhook (``[[actions]] webhook = "https://…"``); no request or
tenant can name a URL. The request::

    POST <webhook>
    Content-Type: application/json
    Idempotency-Key: <the action's idempotency key>
    X-Northstar-Action: <action name>
    X-Northstar-Timestamp: <Unix seconds>
    X-Northstar-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

    {"action_name", "subject_type", "subject_id", "surface_id", "app_id", "params",
     "estimated_cost", "idempotency_key",
     "context": {"tenant_id", "mode", "user_id", "agent_id", "project_id", "run_id", "step_id",
                 "trace_id", "request_id"}}

A receiver verifies it with :func:`verify_signature` (or the same steps in any language):
recompute the HMAC over the timestamp, a dot and the body bytes exactly as received, compare in
constant time, refuse a timestamp more than ``REPLAY_WINDOW_SECONDS`` (300) from its own clock,
and treat a repeated ``Idempotency-Key`` as the same action (a retry after a timeout or a lost
answer carries the same key; Northstar itself never calls again once it has an answer).

The answer: any 2xx with a JSON object ``{"result": <any JSON>, "cost": <number, optional>}``
(``cost`` is what the budget ledger records instead of the estimate), or an empty body (result
null). Everything else is a failure — answered 502 ``actions.handler_failed`` with
``details.reason``: ``timeout`` (the whole exchange exceeded ``timeout_seconds``),
``bad_status`` (non-2xx; redirects are not followed), ``response_too_large`` (more than
``max_response_bytes``, decoded), ``invalid_response`` (not a JSON object), ``unreachable``
(connection errors) — and nothing is charged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Final

import httpx
import msgspec

from northstar_core.identity import RequestContext
from northstar_core.safety.actions import ActionOutcome, ActionRequest, HandlerFailed

SIGNATURE_HEADER: Final = "X-Northstar-Signature"
TIMESTAMP_HEADER: Final = "X-Northstar-Timestamp"
ACTION_HEADER: Final = "X-Northstar-Action"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
SIGNATURE_VERSION: Final = "v1"
REPLAY_WINDOW_SECONDS: Final = 300
MIN_SECRET_BYTES: Final = 16
USER_AGENT: Final = "northstar-actions/1"


def signature(secret: bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Northstar-Signature`` value: ``v1=`` + hex HMAC-SHA256 of ``"<ts>." + body``."""
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify_signature(
    secret: bytes,
    timestamp: str | None,
    signature_header: str | None,
    body: bytes,
    *,
    now: float | None = None,
    window: float = REPLAY_WINDOW_SECONDS,
) -> bool:
    """What a receiver checks: a well-formed, fresh timestamp and a matching signature."""
    if not timestamp or not signature_header or not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > window:
        return False
    expected = signature(secret, timestamp, body)
    return hmac.compare_digest(expected.encode(), signature_header.strip().encode())


class WebhookHandler:
    """An :class:`~northstar_core.safety.actions.ActionHandler` that POSTs to one configured URL."""

    kind: Final = "webhook"

    def __init__(
        self,
        name: str,
        url: str,
        secret: bytes,
        *,
        timeout_seconds: float = 10.0,
        max_response_bytes: int = 65_536,
    ) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"a webhook secret needs at least {MIN_SECRET_BYTES} bytes")
        self.name = name
        self.url = url
        self._secret = secret
        self.timeout_seconds = timeout_seconds
        self.max_response_bytes = max_response_bytes
        # One client (and connection pool) per webhook, opened on first use so that it binds to
        # the event loop serving requests. Redirects are not followed (a 3xx could send the
        # signed body elsewhere); proxies from the environment are not used, the URL is exact.
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:  # never the secret
        return f"WebhookHandler({self.name!r}, {self.url!r})"

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_seconds),
                follow_redirects=False,
                trust_env=False,
                headers={"User-Agent": USER_AGENT},
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @staticmethod
    def body(ctx: RequestContext, request: ActionRequest) -> bytes:
        return msgspec.json.encode(
            {
                **request.resolved(ctx),
                "idempotency_key": request.idempotency_key,
                "context": {
                    "tenant_id": ctx.tenant_id,
                    "mode": ctx.mode,
                    "user_id": ctx.user_id,
                    "agent_id": ctx.agent_id,
                    "project_id": ctx.project_id,
                    "run_id": ctx.run_id,
                    "step_id": ctx.step_id,
                    "trace_id": ctx.trace_id,
                    "request_id": ctx.request_id or None,
                },
            }
        )

    def headers(self, body: bytes, idempotency_key: str, timestamp: int) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: idempotency_key,
            ACTION_HEADER: self.name,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(self._secret, timestamp, body),
        }

    async def __call__(self, ctx: RequestContext, request: ActionRequest) -> ActionOutcome:
        body = self.body(ctx, request)
        # the service always passes a key (the caller's, else one derived from the decision)
        key = request.idempotency_key or ""
        headers = self.headers(body, key, int(time.time()))
        try:
            async with asyncio.timeout(self.timeout_seconds):
                status, raw = await self._exchange(body, headers)
        except TimeoutError:
            raise HandlerFailed(
                "timeout",
                f"the webhook did not answer within {self.timeout_seconds:g} s",
                timeout_seconds=self.timeout_seconds,
            ) from None
        except httpx.TimeoutException:
            raise HandlerFailed(
                "timeout",
                f"the webhook did not answer within {self.timeout_seconds:g} s",
                timeout_seconds=self.timeout_seconds,
            ) from None
        except httpx.HTTPError as exc:
            raise HandlerFailed(
                "unreachable", "the webhook could not be reached", error=type(exc).__name__
            ) from None
        if not 200 <= status < 300:
            raise HandlerFailed("bad_status", f"the webhook answered HTTP {status}", status=status)
        return self._outcome(raw)

    async def _exchange(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        limit = self.max_response_bytes
        async with self._http().stream("POST", self.url, content=body, headers=headers) as response:
            if not 200 <= response.status_code < 300:
                return response.status_code, b""
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise HandlerFailed(
                    "response_too_large",
                    f"the webhook's answer is larger than {limit} bytes",
                    limit=limit,
                )
            chunks: list[bytes] = []
            size = 0
            # decoded bytes are counted, so a compressed answer cannot expand past the limit
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise HandlerFailed(
                        "response_too_large",
                        f"the webhook's answer is larger than {limit} bytes",
                        limit=limit,
                    )
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)

    @staticmethod
    def _outcome(raw: bytes) -> ActionOutcome:
        if not raw.strip():
            return ActionOutcome(result=None)
        try:
            answer = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise HandlerFailed("invalid_response", "the webhook's answer is not JSON") from None
        if not isinstance(answer, dict):
            raise HandlerFailed(
                "invalid_response", "the webhook's answer must be a JSON object {result, cost?}"
            )
        cost = answer.get("cost")
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int | float)):
            raise HandlerFailed("invalid_response", "the webhook's 'cost' must be a number")
        return ActionOutcome(result=answer.get("result"), cost=cost)


__all__ = [
    "ACTION_HEADER",
    "IDEMPOTENCY_HEADER",
    "REPLAY_WINDOW_SECONDS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookHandler",
    "signature",
    "verify_signature",
]
