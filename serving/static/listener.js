// listener.html's script (a file, not inline: the pages' CSP allows scripts from 'self' only)
"use strict";
const LABELS = { age_group: "age group", country: "country", tenure_bucket: "tenure", activity_level: "activity" };
function artistList(rows) {
  if (!rows.length) return el("p", { class: "muted" }, "none");
  return el("ul", {}, rows.map((a) => el("li", {}, a.name, " ", chips(a.tags))));
}
document.getElementById("find").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const account = document.getElementById("account").value.trim();
  const error = document.getElementById("error");
  error.textContent = "";
  try {
    const data = await getJSON(`/ui/api/listener?account=${encodeURIComponent(account)}&k=10`);
    document.getElementById("segment").replaceChildren(...Object.entries(data.segment).map(([k, v]) => el("div", {}, el("b", {}, LABELS[k] || k), v ?? "unknown")));
    document.getElementById("known").textContent = data.known ? "" : "No listening history for this account: the slate is what is trending.";
    renderSlate(document.getElementById("slate"), data, account);
    document.getElementById("recent").replaceChildren(artistList(data.recent));
    document.getElementById("follows").replaceChildren(artistList(data.follows));
    document.getElementById("result").hidden = false;
  } catch (e) {
    error.textContent = e.message;
  }
});
headerStatus().then(timePage);
