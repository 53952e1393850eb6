// new.html's script (a file, not inline: the pages' CSP allows scripts from 'self' only)
"use strict";
const picked = [];
async function refresh() {
  document.getElementById("picked").replaceChildren(...picked.map((a) => el("span", {}, a.name)));
  if (!picked.length) return;
  const history = picked.map((a) => a.artist_id).reverse(); // most recent pick first
  const slate = await getJSON("/v1/recommendations", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ history, k: 10 }) });
  const meta = await getJSON(`/ui/api/artists?ids=${encodeURIComponent(slate.items.map((i) => i.artist_id).join(","))}`);
  const tags = Object.fromEntries(meta.map((m) => [m.artist_id, m.tags]));
  slate.items.forEach((i) => { i.tags = tags[i.artist_id] || []; });
  renderSlate(document.getElementById("slate"), slate, null);
}
document.getElementById("search").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const error = document.getElementById("error");
  error.textContent = "";
  try {
    const hits = await getJSON(`/ui/api/artists?q=${encodeURIComponent(document.getElementById("q").value)}&limit=12`);
    document.getElementById("hits").replaceChildren(...(hits.length ? hits.map((a) => el("button", { class: "ghost", type: "button", "data-artist-id": a.artist_id, style: "margin:4px", onclick: () => { if (!picked.some((p) => p.artist_id === a.artist_id)) picked.push(a); refresh().catch((e) => { error.textContent = e.message; }); } }, a.name)) : [el("p", { class: "muted" }, "no artist by that name")]));
  } catch (e) {
    error.textContent = e.message;
  }
});
document.getElementById("clear").addEventListener("click", () => { picked.length = 0; refresh(); document.getElementById("slate").replaceChildren(el("p", { class: "muted" }, "pick an artist to start")); });
headerStatus().then(timePage);
