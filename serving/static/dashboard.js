// dashboard.html's script (a file, not inline: the pages' CSP allows scripts from 'self' only)
"use strict";
let SNAP = null;
const fmtPct = (v) => v.toFixed(2);

function renderSegments() {
  const ev = SNAP.evaluation, field = document.getElementById("segfield").value;
  const models = Object.keys(ev.segments).filter((m) => ["two-tower", "itemknn", "ease", "popular"].includes(m));
  const values = [...new Set(models.flatMap((m) => Object.keys((ev.segments[m] || {})[field] || {})))].sort();
  const groups = values.map((v) => ({ label: v, bars: models.filter((m) => ((ev.segments[m][field] || {})[v] || {})["recall@20"]).map((m) => {
    const [value, lo, hi] = ev.segments[m][field][v]["recall@20"]; return { name: m, value, lo, hi }; }) }));
  document.getElementById("segments").replaceChildren(barChart(groups, { width: 540 }));
}

function renderEngagement() {
  const field = document.getElementById("engfield").value, metric = document.getElementById("engmetric").value;
  const series = {};
  for (const r of SNAP.engagement) {
    if (!r.segment.startsWith(field + "=") || r[metric] == null) continue;
    if (metric !== "churn7" && metric !== "churn14" && r.impressions < 20) continue;
    (series[r.segment.split("=")[1]] = series[r.segment.split("=")[1]] || []).push([r.date, r[metric]]);
  }
  const node = Object.keys(series).length ? lineChart(series, { width: 1100, height: 260, xFmt: (d) => d.slice(5) }) : el("p", { class: "muted" }, "no data yet");
  document.getElementById("engagement").replaceChildren(node);
}

async function renderLatency() {
  const text = await (await fetch("/metrics")).text();
  const hist = histogramFromMetrics(text, "tastemaker_request_seconds");
  const groups = [];
  for (const [key, buckets] of Object.entries(hist)) {
    if (!key.includes("recommendations")) continue;
    let prev = 0;
    buckets.forEach(([le, cum]) => { groups.push({ label: le === "+Inf" ? ">2.5s" : `≤${(Number(le) * 1000).toFixed(1)}ms`, bars: [{ name: key, value: cum - prev }] }); prev = cum; });
  }
  document.getElementById("latency").replaceChildren(groups.length ? barChart(groups, { width: 1100, height: 220, yFmt: (v) => v.toFixed(v < 10 ? 1 : 0) }) : el("p", { class: "muted" }, "no recommendation requests served yet"));
}

async function main() {
  const data = await getJSON("/ui/api/dashboard");
  const s = data.serving;
  document.getElementById("serving").replaceChildren(...[["system", s.system], ["bundle", s.bundle_version], ["run", s.run_id], ["created", s.bundle_created_at], ["online store", s.store_healthy ? "answering" : "degraded"], ["streaming", s.streaming ? `lag ${s.streaming.lag_s} s, ${s.streaming.events} events applied, last ${s.streaming.applied_at}` : "off (batch rows only)"]].map(([k, v]) => el("div", {}, el("b", {}, k), v ?? "-")));
  SNAP = data.snapshot;
  if (!SNAP) { document.getElementById("snapshot").textContent = "No snapshot yet: run `tastemaker demo`, `tastemaker daily` or `tastemaker dashboard`."; return renderLatency(); }
  document.getElementById("snapshot").textContent = `snapshot of ${SNAP.generated_at}`;
  const ev = SNAP.evaluation;
  if (ev) {
    document.getElementById("curves").replaceChildren(lineChart(ev.recall_curves, { xFmt: (k) => `@${k}` }));
    const fields = Object.keys(Object.values(ev.segments)[0] || {});
    document.getElementById("segfield").replaceChildren(...fields.map((f) => el("option", {}, f)));
    if (fields.includes("age_group")) document.getElementById("segfield").value = "age_group";
    document.getElementById("segfield").addEventListener("change", renderSegments);
    if (fields.length) renderSegments();
    document.getElementById("gap").replaceChildren(el("table", {}, el("tr", {}, el("th", {}, "model"), el("th", {}, "train"), el("th", {}, "test"), el("th", {}, "flagged")),
      Object.entries(ev.gap).map(([m, g]) => el("tr", {}, el("td", {}, m), el("td", {}, g.train == null ? "-" : g.train.toFixed(3)), el("td", {}, g.test == null ? "-" : g.test.toFixed(3)), el("td", {}, g.flagged ? "yes" : "no")))));
  }
  document.getElementById("registry").replaceChildren(SNAP.registry.length ? el("table", {}, el("tr", {}, el("th", {}, "day"), el("th", {}, "run"), el("th", {}, "model"), el("th", {}, "status"), el("th", {}, "Recall@20"), el("th", {}, "why")),
    SNAP.registry.slice().reverse().map((r) => el("tr", {}, el("td", {}, r.day || "-"), el("td", {}, r.run_id.slice(0, 16)), el("td", {}, r.model), el("td", { class: `status-${r.status}` }, r.status), el("td", {}, r["recall@20"] == null ? "-" : r["recall@20"].toFixed(3)), el("td", { class: "muted" }, (r.reasons || []).join("; "))))) : el("p", { class: "muted" }, "no registered runs"));
  for (const id of ["engfield", "engmetric"]) document.getElementById(id).addEventListener("change", renderEngagement);
  renderEngagement();
  await renderLatency();
}
headerStatus();
main().then(timePage).catch((e) => { document.getElementById("snapshot").textContent = e.message; timePage(); });
