// The Northstar operator console: plain DOM, no framework, no build step, nothing from a CDN.
// The page itself is public and holds no data; every call below carries the operator's bearer
// token, kept in this tab's sessionStorage only. Everything the API returns is rendered with
// textContent (never innerHTML), so no stored value can become markup or script.
"use strict";

(() => {
  const TOKEN_KEY = "northstar.console.token";
  const POLL_MS = 1000;
  const TAIL_ROWS = 50;
  const GATE_ROWS = 20;
  // the tail starts this far back (a spine list cursor belongs to one `since` value, kept fixed)
  const TAIL_WINDOW_MS = 15 * 60 * 1000;

  const $ = (id) => document.getElementById(id);
  let timers = [];
  let stops = []; // functions that end the pollers of the current session
  let killSwitch = null; // the last document read: {version, policy}

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function setStatus(text, isError) {
    const status = $("status");
    status.textContent = text;
    status.className = isError ? "error" : "muted";
  }

  function claimsOf(jwt) {
    // For display only (who am I logged in as): the server verifies the token on every call.
    try {
      const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
      return JSON.parse(atob(padded));
    } catch (e) {
      return {};
    }
  }

  async function api(method, path, body, headers) {
    const init = { method, headers: Object.assign({ Authorization: "Bearer " + token() }, headers || {}) };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      const error = data && data.error ? data.error : { code: "http." + response.status, message: response.statusText };
      const failure = new Error(error.code + ": " + error.message);
      failure.status = response.status;
      failure.code = error.code;
      throw failure;
    }
    return { data, etag: response.headers.get("ETag") };
  }

  function cell(row, value) {
    const td = document.createElement("td");
    td.textContent = value === null || value === undefined ? "" : String(value);
    row.appendChild(td);
    return td;
  }

  function fillTable(table, rows) {
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const values of rows) {
      const tr = document.createElement("tr");
      for (const value of values) cell(tr, value);
      body.appendChild(tr);
    }
  }

  function prependRows(table, rows, keep) {
    const body = table.tBodies[0];
    for (const values of rows) {
      const tr = document.createElement("tr");
      for (const value of values) cell(tr, value);
      body.insertBefore(tr, body.firstChild);
    }
    while (body.rows.length > keep) body.deleteRow(body.rows.length - 1);
  }

  function short(value, n) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }

  // --- routes and diagnostics ---------------------------------------------------------------

  async function loadRoutes() {
    try {
      const { data } = await api("GET", "/routing/routes");
      $("routes-mode").textContent = "deployment mode: " + data.deployment_mode;
      fillTable(
        $("routes"),
        data.routes.map((r) => [r.resource_kind, r.tenant_id || "(all)", r.connection, r.table || r.resource_kind, r.label, r.version]),
      );
    } catch (e) {
      $("routes-mode").textContent = "routes: " + e.message;
    }
    try {
      const { data } = await api("GET", "/routing/diagnostics");
      $("diagnostics").textContent = JSON.stringify(data, null, 2);
    } catch (e) {
      $("diagnostics").textContent = "diagnostics: " + e.message;
    }
  }

  // --- spine tail and gate decisions --------------------------------------------------------

  // One poller per list: pages through to the end, then asks again after POLL_MS with the
  // last cursor, so each event is shown once.
  function poller(params, onEvents) {
    const since = new Date(Date.now() - TAIL_WINDOW_MS).toISOString();
    let cursor = null;
    let stopped = false;
    async function tick() {
      if (stopped) return;
      try {
        let more = true;
        while (more && !stopped) {
          const query = new URLSearchParams(Object.assign({ since, limit: "100" }, params));
          if (cursor) query.set("cursor", cursor);
          const { data } = await api("GET", "/events/list?" + query.toString());
          if (data.items.length) onEvents(data.items);
          cursor = data.next_cursor || cursor;
          more = data.has_more;
        }
        $("tail-state").textContent = "(live, polled every " + POLL_MS / 1000 + " s)";
      } catch (e) {
        $("tail-state").textContent = "(" + e.message + "; retrying)";
      }
      if (!stopped) timers.push(setTimeout(tick, POLL_MS));
    }
    tick();
    return () => {
      stopped = true;
    };
  }

  function showSpine(events) {
    prependRows(
      $("spine"),
      events.map((e) => [e.timestamp, e.event_type, e.source, e.run_id, e.event_id, short(e.payload, 120)]),
      TAIL_ROWS,
    );
  }

  function showGates(events) {
    prependRows(
      $("gates"),
      events.map((e) => {
        const p = e.payload || {};
        return [e.timestamp, (p.decision || "") + (p.dry_run ? " (dry run)" : ""), p.gate || "", p.code || p.reason, p.action_name, (p.subject_type || "") + "/" + (p.subject_id || "")];
      }),
      GATE_ROWS,
    );
  }

  // --- kill switch --------------------------------------------------------------------------

  async function loadKillSwitch() {
    try {
      const { data } = await api("GET", "/kill-switches");
      killSwitch = data;
      const policy = data.policy || {};
      const blocked = policy.tenant_blocked === true;
      $("ks-state").textContent = blocked ? "YES" : "no";
      $("ks-version").textContent = String(data.version);
      const parts = [];
      if ((policy.providers || []).length) parts.push("providers blocked: " + policy.providers.join(", "));
      if ((policy.actions || []).length) parts.push("actions blocked: " + policy.actions.join(", "));
      if (policy.reason) parts.push("reason: " + policy.reason);
      if (data.updated_by) parts.push("last set by " + data.updated_by + " at " + data.updated_at);
      $("ks-detail").textContent = parts.join(" · ");
      $("ks-toggle").textContent = blocked ? "Unblock tenant…" : "Block tenant…";
      $("ks-toggle").disabled = false;
    } catch (e) {
      $("ks-state").textContent = "?";
      $("ks-detail").textContent = "kill switch: " + e.message;
      $("ks-toggle").disabled = true;
    }
  }

  function askKillSwitch() {
    if (!killSwitch) return;
    const tenant = claimsOf(token()).tenant_id || "";
    const blocking = !(killSwitch.policy && killSwitch.policy.tenant_blocked === true);
    $("ks-question").textContent = blocking
      ? "Block every action of tenant " + tenant + "? Gate checks will deny all its actions until unblocked."
      : "Unblock tenant " + tenant + "? Its actions will pass the kill-switch gate again.";
    $("ks-confirm-input").value = "";
    $("ks-confirm").disabled = true;
    $("ks-confirm").textContent = blocking ? "Block tenant" : "Unblock tenant";
    const dialog = $("ks-dialog");
    dialog.returnValue = "";
    dialog.onclose = () => {
      if (dialog.returnValue === "confirm") writeKillSwitch(blocking);
    };
    dialog.showModal();
  }

  async function writeKillSwitch(blocking) {
    const current = killSwitch;
    const policy = Object.assign({ providers: [], actions: [] }, current.policy || {});
    policy.tenant_blocked = blocking;
    const reason = $("ks-reason").value.trim();
    if (reason) policy.reason = reason;
    else delete policy.reason;
    try {
      // If-Match: the version read; a concurrent change is a 409, never overwritten
      await api("PUT", "/kill-switches", policy, { "If-Match": '"' + current.version + '"' });
      $("ks-result").textContent = blocking ? "Tenant blocked." : "Tenant unblocked.";
      $("ks-result").className = "";
    } catch (e) {
      $("ks-result").textContent = e.message + (e.status === 409 ? " (changed meanwhile: reloaded, try again)" : "");
      $("ks-result").className = "error";
    }
    await loadKillSwitch();
  }

  // --- session ------------------------------------------------------------------------------

  function stopAll() {
    for (const t of timers) clearTimeout(t);
    timers = [];
    for (const stop of stops) stop();
    stops = [];
  }

  async function start() {
    stopAll();
    if (!token()) {
      $("panels").hidden = true;
      $("identity").textContent = "No token: enter one below. It is kept in this tab's session storage only.";
      return;
    }
    const claims = claimsOf(token());
    $("identity").textContent =
      "Tenant " + (claims.tenant_id || "?") + " · user " + (claims.sub || "?") + " · roles " + (claims.roles || []).join(", ") +
      (claims.system === true ? " · system" : "");
    try {
      await api("GET", "/kill-switches");
    } catch (e) {
      setStatus("The token was not accepted: " + e.message, true);
      $("panels").hidden = true;
      return;
    }
    setStatus("Connected.", false);
    $("panels").hidden = false;
    fillTable($("spine"), []);
    fillTable($("gates"), []);
    await Promise.all([loadRoutes(), loadKillSwitch()]);
    stops.push(poller({}, showSpine));
    stops.push(poller({ event_type: "safety" }, showGates));
    const refresh = () => {
      loadKillSwitch();
      timers.push(setTimeout(refresh, 5 * POLL_MS));
    };
    timers.push(setTimeout(refresh, 5 * POLL_MS));
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      $("token-input").value = "";
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      start();
    });
    $("token-forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      setStatus("Token forgotten.", false);
      start();
    });
    $("ks-toggle").addEventListener("click", askKillSwitch);
    $("ks-confirm-input").addEventListener("input", () => {
      const tenant = claimsOf(token()).tenant_id || "";
      $("ks-confirm").disabled = $("ks-confirm-input").value !== tenant;
    });
    start();
  });
})();
