"""The operator console in a real browser: the page the app serves at ``/console``, an admin
token typed in, routes and diagnostics shown, the spine tail and the gate decisions following
live, and the tenant kill switch flipped through its confirmation dialog — checked through the
API afterwards. A screenshot is kept as a test artefact (its path is printed)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.browser.cdp import Page
from tests.browser.conftest import ARTIFACTS
from tests.e2e.reliability_support import ServeProcess

TENANT = "t_ops"


async def api(server: ServeProcess, token: str, method: str, path: str, body: Any = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        return await http.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})


def rows(table: str) -> str:
    return f"document.querySelectorAll('#{table} tbody tr').length"


def text_of(selector: str) -> str:
    return f"(document.querySelector({json.dumps(selector)}).textContent || '')"


async def test_operator_console_shows_the_service_and_flips_the_kill_switch(
    server: ServeProcess, page: Page
) -> None:
    token = server.cli("token", "--tenant", TENANT, "--user", "u_ops", "--roles", "admin")
    check = {"action_name": "summarise", "subject_type": "user", "subject_id": "u_subject", "params": {}}
    r = await api(server, token, "POST", "/actions/check", check)
    assert r.status_code == 200 and r.json()["allowed"] is True, r.text
    marker = {"event_type": "analytics", "source": "ui", "run_id": "run_console", "step_id": "s1",
              "payload": {"note": "<img src=x onerror=alert(1)>"}}
    assert (await api(server, token, "POST", "/events/append", marker)).status_code == 201

    await page.navigate(f"{server.url}/console")
    assert await page.evaluate("document.getElementById('panels').hidden") is True  # no token, no data
    await page.type("#token-input", token)
    await page.click("#token-use")
    await page.wait_for(f"{text_of('#status')}.includes('Connected')", what="the console to accept the token")
    assert await page.evaluate("sessionStorage.getItem('northstar.console.token')") == token
    assert await page.evaluate("localStorage.length") == 0
    assert TENANT in await page.evaluate(text_of("#identity"))

    # routes and diagnostics
    await page.wait_for(f"{rows('routes')} > 0", what="the routing table")
    kinds = await page.evaluate("Array.from(document.querySelectorAll('#routes tbody tr td:first-child'), "
                                "(td) => td.textContent)")
    assert "chat_store" in kinds and "event_spine" in kinds
    diagnostics = await page.wait_for(text_of("#diagnostics"), what="the diagnostics")
    assert "unrouted" in diagnostics or "{" in diagnostics

    # the spine tail and the gate decisions, live; stored data is shown as text, never markup
    await page.wait_for(f"{text_of('#spine')}.includes('run_console')", what="the appended event in the tail")
    assert await page.evaluate("document.querySelectorAll('#spine img').length") == 0
    assert "<img src=x" in await page.evaluate(text_of("#spine"))
    await page.wait_for(f"{text_of('#gates')}.includes('summarise')", what="the gate decision")
    assert await page.evaluate(text_of("#ks-state")) == "no"
    later = {"event_type": "analytics", "source": "ui", "run_id": "run_later", "step_id": "s1", "payload": {}}
    assert (await api(server, token, "POST", "/events/append", later)).status_code == 201
    await page.wait_for(f"{text_of('#spine')}.includes('run_later')", what="an event appended after loading")

    # the kill switch: cancelling the confirmation changes nothing
    await page.click("#ks-toggle")
    await page.wait_for("document.getElementById('ks-dialog').open", what="the confirmation dialog")
    assert await page.evaluate("document.getElementById('ks-confirm').disabled") is True
    await page.click("#ks-cancel")
    await page.wait_for("!document.getElementById('ks-dialog').open", what="the dialog to close")
    assert (await api(server, token, "GET", "/kill-switches")).json()["version"] == 0

    # confirming (the tenant id typed) blocks the tenant
    await page.type("#ks-reason", "browser test")
    await page.click("#ks-toggle")
    await page.wait_for("document.getElementById('ks-dialog').open", what="the confirmation dialog")
    await page.type("#ks-confirm-input", TENANT)
    await page.wait_for("!document.getElementById('ks-confirm').disabled", what="the confirm button")
    await page.click("#ks-confirm")
    await page.wait_for(f"{text_of('#ks-result')} === 'Tenant blocked.'", what="the kill switch write")
    await page.wait_for(f"{text_of('#ks-state')} === 'YES'", what="the kill switch state")

    document = (await api(server, token, "GET", "/kill-switches")).json()
    assert document["policy"]["tenant_blocked"] is True and document["policy"]["reason"] == "browser test"
    assert document["version"] == 1 and document["updated_by"] == "u_ops"
    # and the gate now denies, which the console shows as a decision of the kill_switch gate
    r = await api(server, token, "POST", "/actions/check", check)
    assert r.json()["allowed"] is False and r.json()["decision"]["gate"] == "kill_switch", r.text
    await page.wait_for(f"{text_of('#gates')}.includes('kill_switch')", what="the deny in the gate decisions")

    shot = await page.screenshot(ARTIFACTS / "console.png")
    print(f"console screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    errors = [line for line in page.log if line.startswith(("exception", "error", "console.error"))]
    assert not errors, errors
