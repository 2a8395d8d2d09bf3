// How a browser UI follows a chat thread: mint a stream ticket with the bearer token (a
// cross-origin POST, so CORS preflight included), then give EventSource the ticket URL. The
// browser reconnects by itself (same URL, Last-Event-ID) across server restarts; if it gives up
// (a 401 once the ticket's resume window is over), mint a new ticket and open a new
// EventSource at the last id seen.
"use strict";

window.follower = {
  received: [], // {seq, content, id}
  opens: 0,
  errors: 0,
  tickets: 0,
  source: null,
};

async function mintTicket(api, kind, id, token) {
  const response = await fetch(api + "/sse/tickets", {
    method: "POST",
    headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
    body: JSON.stringify({ kind, id }),
  });
  if (response.status !== 201) throw new Error("ticket: HTTP " + response.status + " " + (await response.text()));
  window.follower.tickets += 1;
  return response.json();
}

function render(message) {
  const li = document.createElement("li");
  li.textContent = message.seq + ": " + (typeof message.content === "string" ? message.content : JSON.stringify(message.content));
  document.getElementById("messages").appendChild(li);
}

async function follow(api, kind, id, token) {
  const f = window.follower;
  const ticket = await mintTicket(api, kind, id, token);
  const last = f.received.length ? f.received[f.received.length - 1].id : null;
  const url = api + ticket.url + (last ? "&cursor=" + encodeURIComponent(last) : "");
  const source = new EventSource(url);
  f.source = source;
  source.onopen = () => {
    f.opens += 1;
    document.getElementById("state").textContent = "open (" + f.opens + ")";
  };
  source.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    f.received.push({ seq: message.seq, content: message.content, id: event.lastEventId });
    render(message);
  });
  source.onerror = () => {
    f.errors += 1;
    document.getElementById("state").textContent = "reconnecting (" + f.errors + " errors)";
    if (source.readyState === EventSource.CLOSED) {
      // the browser gave up on this URL (e.g. the ticket expired): a fresh ticket, same position
      setTimeout(() => follow(api, kind, id, token).catch((e) => console.error(String(e))), 500);
    }
  };
  return ticket.stream;
}
