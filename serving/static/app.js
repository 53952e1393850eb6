// Shared page helpers: fetch JSON, render a slate, post a click. No framework, no CDN.
"use strict";

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || body);
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function chips(tags) {
  return el("span", { class: "chips" }, (tags || []).map((t) => el("span", {}, t)));
}

async function headerStatus() {
  const status = document.getElementById("status");
  try {
    const h = await getJSON("/healthz");
    status.textContent = `bundle ${h.bundle_version} · ${h.artists} artists · store ${h.online_store ? "ok" : "degraded"}`;
  } catch (e) {
    status.textContent = `health: ${e.message}`;
  }
}

// A recorded click travels like the app's: POST /v1/events with the slate's request_id.
async function sendClick(userId, slate, item, li) {
  if (!userId) {
    li.querySelector(".done").textContent = "a new listener has no account: clicks are not recorded";
    return null;
  }
  const now = new Date();
  const event = {
    event_id: (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2)),
    event_type: "click", user_id: userId, artist_id: item.artist_id,
    request_id: slate.request_id, position: item.rank,
    client_ts: now.toISOString(), server_ts: now.getTime(),
  };
  // the listener's own short-lived token (the listener API hands it out in demo mode only)
  const headers = { "content-type": "application/json" };
  if (slate.token) headers.authorization = `Bearer ${slate.token}`;
  const reply = await getJSON("/v1/events", { method: "POST", headers, body: JSON.stringify({ events: [event] }) });
  li.classList.add("clicked");
  li.querySelector(".done").textContent = reply.accepted ? `click recorded (${reply.sink})` : "click refused";
  return reply;
}

function renderSlate(target, slate, userId) {
  target.replaceChildren();
  const list = el("ol", { class: "recs", "data-request-id": slate.request_id });
  for (const item of slate.items) {
    const li = el("li", { "data-artist-id": item.artist_id },
      el("span", { class: "rank" }, item.rank),
      el("div", {},
        el("a", { href: "#", class: "name", onclick: (ev) => { ev.preventDefault(); sendClick(userId, slate, item, li).catch((e) => { li.querySelector(".done").textContent = e.message; }); } }, item.name),
        " ", chips(item.tags),
        el("div", { class: "muted" }, item.reason, item.score == null ? "" : ` · score ${item.score.toFixed(3)}`),
        el("div", { class: "done" })),
      el("span", { class: `src ${item.source}` }, item.source));
    list.append(li);
  }
  target.append(el("div", { class: "muted" }, `request ${slate.request_id} · bundle ${slate.bundle_version} · ${slate.items.length} artists`), list);
}

function timePage() {
  // render time of the page, read by the browser test (performance API, navigation to idle)
  window.__rendered = performance.now();
}
