"""Tenant isolation matrix: a token for tenant A never reads tenant B's chat data — whatever
headers, thread ids or cursors it presents — through messages, snapshot, thread list or SSE."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import pytest

SECRET_WORD = "beta-secret"
HEADER_VARIANTS: dict[str, dict[str, str]] = {
    "no-headers": {},
    "tenant-header-B": {"X-Tenant-Id": "t_beta"},
    "tenant-header-A": {"X-Tenant-Id": "t_alpha"},
    "user-header-B": {"X-User-Id": "u_bob"},
    "mode-header-saas": {"X-Mode": "saas"},
}
READS = ["messages", "messages-with-B-cursor", "snapshot", "threads", "threads-with-B-cursor"]
SSE_READS = ["sse-head", "sse-B-last-event-id", "sse-B-cursor-query"]


@pytest.fixture
async def world(live_server, auth) -> dict[str, Any]:
    """Tenant B has a thread (same id A will ask for) with messages; returns B's cursors."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        b = auth("t_beta", "u_bob")
        posted = []
        for i in range(3):
            r = await http.post(
                "/chat/threads/th_shared/messages",
                json={"role": "user", "content": f"{SECRET_WORD}-{i}"},
                headers=b,
            )
            assert r.status_code == 201
            posted.append(r.json())
        threads = (await http.get("/chat/threads", params={"limit": 1}, headers=b)).json()
        return {"cursor": posted[0]["cursor"], "threads_cursor": threads["next_cursor"]}


def no_leak(r: httpx.Response) -> None:
    assert SECRET_WORD not in r.text
    assert r.status_code in (200, 403, 404, 410), r.text
    if r.status_code >= 400:
        assert r.json()["error"]["http_status"] == r.status_code


@pytest.mark.parametrize("read, variant", list(itertools.product(READS, HEADER_VARIANTS)))
async def test_tenant_a_never_reads_tenant_b(live_server, auth, world, read: str, variant: str) -> None:
    headers = auth("t_alpha", "u_alice", headers=HEADER_VARIANTS[variant])
    path, params = {
        "messages": ("/chat/threads/th_shared/messages", {}),
        "messages-with-B-cursor": ("/chat/threads/th_shared/messages", {"cursor": world["cursor"]}),
        "snapshot": ("/chat/threads/th_shared/snapshot", {}),
        "threads": ("/chat/threads", {}),
        "threads-with-B-cursor": ("/chat/threads", {"cursor": world["threads_cursor"]}),
    }[read]
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        r = await http.get(path, params=params, headers=headers)
    no_leak(r)
    if variant in ("tenant-header-B", "user-header-B", "mode-header-saas"):
        assert r.status_code == 403
    if "B-cursor" in read and r.status_code != 403:
        assert r.status_code == 410


@pytest.mark.parametrize("read, variant", list(itertools.product(SSE_READS, HEADER_VARIANTS)))
async def test_tenant_a_sse_never_streams_tenant_b(
    live_server, auth, world, read: str, variant: str
) -> None:
    headers = auth("t_alpha", "u_alice", headers=HEADER_VARIANTS[variant])
    params: dict[str, str] = {}
    if read == "sse-B-last-event-id":
        headers["Last-Event-ID"] = world["cursor"]
    elif read == "sse-B-cursor-query":
        params["cursor"] = world["cursor"]
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        async with http.stream("GET", "/sse/chat/th_shared", params=params, headers=headers) as r:
            if r.status_code != 200:
                await r.aread()
                no_leak(r)
                assert r.status_code in (403, 410)
                return
            assert read == "sse-head" and variant in ("no-headers", "tenant-header-A")
            # B writes to the same thread id, then A does: the first event A sees must be A's.
            await http.post(
                "/chat/threads/th_shared/messages",
                json={"role": "user", "content": f"{SECRET_WORD}-live"},
                headers=auth("t_beta", "u_bob"),
            )
            await http.post(
                "/chat/threads/th_shared/messages",
                json={"role": "user", "content": "alpha-live"},
                headers=auth("t_alpha", "u_alice"),
            )
            seen = ""

            async def first_event() -> None:
                nonlocal seen
                async for line in r.aiter_lines():
                    if line.startswith("data:") and line.strip() != "data:":
                        seen = line
                        return

            await asyncio.wait_for(first_event(), 10)
    assert "alpha-live" in seen and SECRET_WORD not in seen
