// Small SVG charts for the dashboard (no library, works offline): lines, grouped bars with
// interval whiskers, and a histogram.
"use strict";

const PALETTE = ["#1f7a5c", "#2e90fa", "#f79009", "#9e77ed", "#f04438", "#667085", "#0ba5ec", "#dd2590"];
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function frame(width, height) {
  return { width, height, left: 44, right: 24, top: 10, bottom: 34 };
}

function axes(root, f, y0, y1, xLabels, yFmt) {
  const h = f.height - f.top - f.bottom;
  for (let i = 0; i <= 4; i++) {
    const v = y0 + ((y1 - y0) * i) / 4;
    const y = f.top + h - (h * i) / 4;
    root.append(svg("line", { x1: f.left, x2: f.width - f.right, y1: y, y2: y, stroke: "#eaecf0" }));
    root.append(svg("text", { x: f.left - 6, y: y + 4, "text-anchor": "end" }, yFmt(v)));
  }
  xLabels.forEach(([x, label]) => root.append(svg("text", { x, y: f.height - f.bottom + 14, "text-anchor": "middle" }, label)));
}

function legend(names) {
  return el("div", { class: "legend" }, names.map((n, i) => el("span", {}, el("i", { style: `background:${PALETTE[i % PALETTE.length]}` }), n)));
}

// series: {name: [[x, y], ...]} with numeric or categorical x (labels shown as given)
function lineChart(series, opts = {}) {
  const f = frame(opts.width || 540, opts.height || 240);
  const root = svg("svg", { width: f.width, height: f.height, role: "img" });
  const names = Object.keys(series);
  const xs = [...new Set(names.flatMap((n) => series[n].map((p) => p[0])))];
  if (opts.sortX !== false) xs.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const ys = names.flatMap((n) => series[n].map((p) => p[1])).filter((v) => v != null);
  const y1 = Math.max(...ys, 1e-9) * 1.08, y0 = opts.zero === false ? Math.min(...ys) * 0.95 : 0;
  const w = f.width - f.left - f.right, h = f.height - f.top - f.bottom;
  const xAt = (x) => f.left + (xs.length < 2 ? w / 2 : (w * xs.indexOf(x)) / (xs.length - 1));
  const yAt = (y) => f.top + h - (h * (y - y0)) / (y1 - y0 || 1);
  const step = Math.max(1, Math.ceil(xs.length / 8));
  axes(root, f, y0, y1, xs.filter((_, i) => i % step === 0).map((x) => [xAt(x), opts.xFmt ? opts.xFmt(x) : x]), opts.yFmt || ((v) => v.toFixed(2)));
  names.forEach((n, i) => {
    const pts = series[n].filter((p) => p[1] != null).map((p) => `${xAt(p[0])},${yAt(p[1])}`);
    if (pts.length) root.append(svg("polyline", { points: pts.join(" "), fill: "none", stroke: PALETTE[i % PALETTE.length], "stroke-width": 2 }));
  });
  return el("div", {}, root, legend(names));
}

// groups: [{label, bars: [{name, value, lo, hi}]}]
function barChart(groups, opts = {}) {
  const f = frame(opts.width || 540, opts.height || 240);
  const root = svg("svg", { width: f.width, height: f.height, role: "img" });
  const names = [...new Set(groups.flatMap((g) => g.bars.map((b) => b.name)))];
  const top = Math.max(...groups.flatMap((g) => g.bars.map((b) => b.hi ?? b.value)), 1e-9) * 1.1;
  const w = f.width - f.left - f.right, h = f.height - f.top - f.bottom;
  const gw = w / Math.max(groups.length, 1), bw = (gw * 0.8) / Math.max(names.length, 1);
  const yAt = (y) => f.top + h - (h * y) / top;
  axes(root, f, 0, top, groups.map((g, i) => [f.left + gw * (i + 0.5), g.label]), opts.yFmt || ((v) => v.toFixed(2)));
  groups.forEach((g, i) => g.bars.forEach((b) => {
    const j = names.indexOf(b.name), x = f.left + gw * i + gw * 0.1 + bw * j;
    root.append(svg("rect", { x, y: yAt(b.value), width: bw - 2, height: Math.max(0, yAt(0) - yAt(b.value)), fill: PALETTE[j % PALETTE.length] },
      svg("title", {}, `${b.name} ${g.label}: ${b.value.toFixed(3)}${b.lo != null ? ` [${b.lo.toFixed(3)}, ${b.hi.toFixed(3)}]` : ""}`)));
    if (b.lo != null) root.append(svg("line", { x1: x + bw / 2 - 1, x2: x + bw / 2 - 1, y1: yAt(b.lo), y2: yAt(b.hi), stroke: "#101828" }));
  }));
  return el("div", {}, root, legend(names));
}

// Prometheus text -> {route: [[le, count], ...]} for a histogram's cumulative buckets
function histogramFromMetrics(text, metric) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${metric}_bucket{`)) continue;
    const labels = Object.fromEntries([...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    const key = `${labels.route} ${labels.status}`;
    (out[key] = out[key] || []).push([labels.le, Number(line.split(" ").pop())]);
  }
  return out;
}
