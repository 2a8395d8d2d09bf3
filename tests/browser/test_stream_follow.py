"""A real browser follows a chat thread with ``EventSource`` across two ``kill -9`` restarts.

The page (served from another loopback origin) mints a stream ticket with a bearer token and
opens the ticket URL with ``EventSource`` on an *empty* thread. Then:

(b) the server is killed before the first event arrives and restarted on its data; messages
    1 and 2 are posted before the browser has reconnected, 3 after. The browser's reconnect
    carries no event id of a message — only the position the stream's opening frame gave it —
    so this needs the opening frame's ``id:`` (SPEC §6: no gaps);
(a) messages 4 and 5 arrive live, the server is killed and restarted again, 6 and 7 are
    posted before the reconnect, 8 after.

At the end the page holds messages 1 to 8 exactly once, in order, and the browser did all of it
with the one ticket it minted (its reconnects used the ticket's resume window).
"""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.browser.cdp import Page
from tests.browser.conftest import StaticSite
from tests.e2e.reliability_support import ServeProcess

THREAD = "th_browser"


async def post(server: ServeProcess, token: str, n: int) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        r = await http.post(
            f"/chat/threads/{THREAD}/messages",
            json={"role": "user", "content": f"message {n}", "idempotency_key": f"k{n}"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text


async def received(page: Page) -> list[int]:
    seqs: list[int] = await page.evaluate("window.follower.received.map((m) => m.seq)")
    return seqs


async def wait_received(page: Page, seq: int) -> None:
    await page.wait_for(f"window.follower.received.some((m) => m.seq === {seq})", what=f"message {seq}")


async def offline(page: Page, value: bool) -> None:
    """Cut (or restore) the page's network: while the server restarts and messages are
    posted, the browser's reconnects fail, so they come strictly after those posts."""
    await page.send("Network.enable")
    await page.send(
        "Network.emulateNetworkConditions",
        {"offline": value, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )


async def restart(server: ServeProcess, page: Page, opens_before: int) -> None:
    await asyncio.sleep(0.5)  # the stream's opening frame has reached the browser
    server.kill9()
    # the browser sees the stream end and starts retrying against a dead port
    await page.wait_for(
        "window.follower.errors > 0 && window.follower.source.readyState !== 1", what="the stream's error"
    )
    await offline(page, True)
    await asyncio.to_thread(server.start)
    assert await page.evaluate("window.follower.opens") == opens_before


async def test_eventsource_survives_kill9_restarts_with_every_message_once(
    site: StaticSite, server: ServeProcess, page: Page
) -> None:
    token = server.cli("token", "--tenant", "t_web", "--user", "u_web")
    await page.navigate(f"{site.origin}/stream.html")
    stream = await page.evaluate(
        f"follow({json.dumps(server.url)}, 'chat', {json.dumps(THREAD)}, {json.dumps(token)})"
    )
    assert stream == f"/sse/chat/{THREAD}"
    await page.wait_for("window.follower.opens === 1", what="the stream to open")

    # (b) the restart before the first event
    await restart(server, page, opens_before=1)
    await post(server, token, 1)
    await post(server, token, 2)
    await offline(page, False)
    await page.wait_for("window.follower.opens === 2", what="the reconnect after the first restart")
    await post(server, token, 3)
    await wait_received(page, 3)
    assert await received(page) == [1, 2, 3], (
        "messages posted between the restart and the browser's reconnect are missing: the SSE "
        "stream's opening frame must carry an `id:` with its start position (page log: "
        + "; ".join(page.log[-10:]) + ")"
    )

    # (a) the restart after some events
    await post(server, token, 4)
    await post(server, token, 5)
    await wait_received(page, 5)
    await restart(server, page, opens_before=2)
    await post(server, token, 6)
    await post(server, token, 7)
    await offline(page, False)
    await page.wait_for("window.follower.opens === 3", what="the reconnect after the second restart")
    await post(server, token, 8)
    await wait_received(page, 8)
    await asyncio.sleep(1)  # anything duplicated would arrive now

    assert await received(page) == [1, 2, 3, 4, 5, 6, 7, 8]
    contents = await page.evaluate(
        "Array.from(document.querySelectorAll('#messages li'), (li) => li.textContent)"
    )
    assert contents == [f"{n}: message {n}" for n in range(1, 9)]
    assert await page.evaluate("window.follower.tickets") == 1, "the browser had to mint another ticket"
