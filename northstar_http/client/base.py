"""The Python client's base: httpx, bearer auth, envelopes raised as ``NorthstarError``.

A non-2xx answer is re-raised as the same :class:`NorthstarError` the server raised (same
code, status, gate, details) with ``upstream = {service, status, request_id}``, so code calling
the service over HTTP handles errors exactly like code embedding the library.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec

from northstar_core.errors import NorthstarError


class SseMessage(msgspec.Struct, frozen=True):
    """One Server-Sent Event as received (``data`` is the raw text; use :meth:`json`)."""

    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return msgspec.json.decode(self.data)


class BaseClient:
    """Holds the connection, the token and identity headers; domain clients wrap it."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        service: str = "northstar",
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.service = service
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}", **(headers or {})},
            timeout=timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> BaseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def error_from(self, response: httpx.Response, body: bytes) -> NorthstarError:
        upstream = {
            "service": self.service,
            "status": response.status_code,
            "request_id": response.headers.get("x-request-id"),
        }
        try:
            decoded = msgspec.json.decode(body)
            return NorthstarError.from_envelope(decoded, upstream=upstream)
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            return NorthstarError(
                "upstream.bad_response",
                f"{self.service} answered {response.status_code} without an error envelope",
                502,
                details={"status": response.status_code, "body": body[:200].decode("utf-8", "replace")},
                upstream=upstream,
            )

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send a request; the decoded JSON body, or raise the server's error."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        response = await self._http.request(method, path, json=json, params=query, headers=headers)
        if response.status_code >= 400:
            raise self.error_from(response, response.content)
        return response.json() if response.content else None

    async def sse(
        self, path: str, *, params: dict[str, Any] | None = None, last_event_id: str | None = None
    ) -> AsyncIterator[SseMessage]:
        """Follow an SSE stream; comments (heartbeats) are skipped. Errors before the stream
        starts (e.g. 410 for a bad cursor) are raised as :class:`NorthstarError`."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        async with self._http.stream("GET", path, params=query, headers=headers, timeout=timeout) as response:
            if response.status_code >= 400:
                raise self.error_from(response, await response.aread())
            event, data, event_id = "message", [], None
            async for line in response.aiter_lines():
                if line == "":
                    payload = "\n".join(data)
                    if payload:  # an event with empty data is not dispatched (SSE spec)
                        yield SseMessage(event, payload, event_id)
                    event, data = "message", []
                    continue
                if line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
                elif field == "id":
                    event_id = value
