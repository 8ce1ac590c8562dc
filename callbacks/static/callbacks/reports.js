// Follow-up report charts: small SVG bar, stacked-bar and line charts drawn from the page's JSON block.
// No chart library and no network: the platform runs in hospitals without internet. Every label is set
// with textContent, never parsed as markup, because department and staff names come from the HIS.

const SVG_NS = "http://www.w3.org/2000/svg";
const WIDTH = 760;
const LABEL_W = 170;
const RIGHT_PAD = 56;
const ROW_H = 22;

function readJson(id, fallback) {
  const node = document.getElementById(id);
  return node ? JSON.parse(node.textContent) : fallback;
}

const data = readJson("reports-data", {});
const i18n = readJson("reports-i18n", { strings: {}, config: {} });
const LOCALE = (i18n.config.lang || "en").startsWith("zh") ? "zh-CN" : "en-GB";
const num = new Intl.NumberFormat(LOCALE, { maximumFractionDigits: 2 });

function t(key, vars) {
  let text = i18n.strings[key] ?? key;
  if (vars) text = text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  return text;
}

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function titled(node, title) {
  node.appendChild(el("title", {}, title));
  return node;
}

function canvas(height) {
  return el("svg", { viewBox: `0 0 ${WIDTH} ${height}`, width: "100%", class: "report-svg" });
}

/** A label that fits its column: long names are cut with an ellipsis and shown whole on hover. */
function rowLabel(svg, x, y, label) {
  const shown = label.length > 18 ? `${label.slice(0, 17)}…` : label;
  svg.appendChild(titled(el("text", { x, y, class: "chart-label", "text-anchor": "end", "dominant-baseline": "middle" }, shown), label));
}

function legend(container, items) {
  const list = document.createElement("ul");
  list.className = "chart-legend";
  for (const item of items) {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch ${item.className}`;
    li.append(swatch, document.createTextNode(item.label));
    list.appendChild(li);
  }
  container.appendChild(list);
}

function empty(container) {
  const p = document.createElement("p");
  p.className = "chart-empty";
  p.textContent = t("no_data");
  container.appendChild(p);
}

/** Grouped horizontal bars on a 0–100 % axis, one group per row. */
function percentBars(container, rows, series) {
  if (!rows.length) return empty(container);
  const groupH = series.length * ROW_H + 12;
  const height = rows.length * groupH + 24;
  const plotW = WIDTH - LABEL_W - RIGHT_PAD;
  const svg = canvas(height);
  for (const tick of [0, 25, 50, 75, 100]) {
    const x = LABEL_W + (plotW * tick) / 100;
    svg.appendChild(el("line", { x1: x, x2: x, y1: 0, y2: height - 20, class: "chart-grid" }));
    svg.appendChild(el("text", { x, y: height - 6, class: "chart-tick", "text-anchor": "middle" }, `${tick}%`));
  }
  rows.forEach((row, i) => {
    const top = i * groupH + 4;
    rowLabel(svg, LABEL_W - 8, top + (series.length * ROW_H) / 2, row.label);
    series.forEach((s, j) => {
      const value = row[s.key];
      const y = top + j * ROW_H;
      const w = value == null ? 0 : (plotW * value) / 100;
      const bar = el("rect", { x: LABEL_W, y: y + 2, width: Math.max(w, 0), height: ROW_H - 4, rx: 2, class: s.className });
      svg.appendChild(titled(bar, t("rate_title", { label: row.label, series: s.label, value: value ?? "—", n: row.due })));
      svg.appendChild(
        el("text", { x: LABEL_W + w + 4, y: y + ROW_H / 2, class: "chart-value", "dominant-baseline": "middle" }, value == null ? "—" : `${num.format(value)}%`),
      );
    });
  });
  container.appendChild(svg);
  legend(container, series);
}

/** One horizontal bar per row split into segments; normalized bars show shares, others counts. */
function stackedBars(container, rows, segments, { normalize, note }) {
  if (!rows.length) return empty(container);
  const height = rows.length * (ROW_H + 8) + 8;
  const plotW = WIDTH - LABEL_W - RIGHT_PAD - (note ? 40 : 0);
  const most = Math.max(1, ...rows.map((row) => row.values.reduce((a, b) => a + b, 0)));
  const svg = canvas(height);
  rows.forEach((row, i) => {
    const y = 4 + i * (ROW_H + 8);
    const total = row.values.reduce((a, b) => a + b, 0);
    const scale = normalize ? (total ? plotW / total : 0) : plotW / most;
    rowLabel(svg, LABEL_W - 8, y + ROW_H / 2, row.label);
    let x = LABEL_W;
    row.values.forEach((n, j) => {
      if (!n) return;
      const w = n * scale;
      const rect = el("rect", { x, y, width: w, height: ROW_H, class: segments[j].className });
      svg.appendChild(titled(rect, t("count_title", { label: row.label, n, series: segments[j].label })));
      if (w > 22) {
        svg.appendChild(el("text", { x: x + w / 2, y: y + ROW_H / 2, class: "chart-inbar", "text-anchor": "middle", "dominant-baseline": "middle" }, String(n)));
      }
      x += w;
    });
    const after = note ? note(row) : String(total);
    svg.appendChild(el("text", { x: x + 6, y: y + ROW_H / 2, class: "chart-value", "dominant-baseline": "middle" }, after));
  });
  container.appendChild(svg);
  legend(container, segments);
}

/** A line over time buckets with points; gaps where a bucket has no answers. */
function lineChart(container, points, { min, max, ticks, className }) {
  const known = points.filter((p) => p.value != null);
  if (!known.length) return empty(container);
  const height = 220;
  const left = 48;
  const bottom = 36;
  const plotW = WIDTH - left - 24;
  const plotH = height - bottom - 12;
  const svg = canvas(height);
  const yOf = (v) => 12 + plotH - ((v - min) / (max - min)) * plotH;
  // Inset the first and last points so their value labels clear the axis labels.
  const inset = 20;
  const step = points.length > 1 ? (plotW - 2 * inset) / (points.length - 1) : 0;
  const xOf = (i) => left + inset + (points.length > 1 ? i * step : (plotW - 2 * inset) / 2);
  for (const tick of ticks) {
    svg.appendChild(el("line", { x1: left, x2: left + plotW, y1: yOf(tick), y2: yOf(tick), class: tick === 0 ? "chart-axis" : "chart-grid" }));
    svg.appendChild(el("text", { x: left - 6, y: yOf(tick), class: "chart-tick", "text-anchor": "end", "dominant-baseline": "middle" }, num.format(tick)));
  }
  // Label every bucket when they fit, else every n-th, so week labels do not overlap.
  const every = Math.max(1, Math.ceil(points.length / 12));
  points.forEach((p, i) => {
    if (i % every === 0 || i === points.length - 1) {
      svg.appendChild(el("text", { x: xOf(i), y: height - 12, class: "chart-tick", "text-anchor": "middle" }, p.label));
    }
  });
  let path = "";
  let pen = false;
  points.forEach((p, i) => {
    if (p.value == null) {
      pen = false;
      return;
    }
    path += `${pen ? "L" : "M"}${xOf(i).toFixed(1)},${yOf(p.value).toFixed(1)} `;
    pen = true;
  });
  svg.appendChild(el("path", { d: path.trim(), class: `chart-line ${className}` }));
  points.forEach((p, i) => {
    if (p.value == null) return;
    const dot = el("circle", { cx: xOf(i), cy: yOf(p.value), r: 4, class: `chart-dot ${className}` });
    svg.appendChild(titled(dot, t("point_title", { label: p.label, value: num.format(p.value), n: p.n })));
    svg.appendChild(el("text", { x: xOf(i), y: yOf(p.value) - 9, class: "chart-value", "text-anchor": "middle" }, num.format(p.value)));
  });
  container.appendChild(svg);
}

const SCORE_SEGMENTS = [1, 2, 3, 4, 5].map((score) => ({ className: `seg-score-${score}`, label: t("score", { score }) }));

const charts = {
  completion: (node) =>
    percentBars(node, data.completion || [], [
      { key: "rate", label: t("completion_rate"), className: "bar-rate" },
      { key: "within_rate", label: t("within_rate"), className: "bar-within" },
    ]),
  satisfaction: (node) =>
    stackedBars(node, data.satisfaction || [], SCORE_SEGMENTS, {
      normalize: true,
      note: (row) => (row.mean == null ? "" : t("mean_label", { mean: num.format(row.mean) })),
    }),
  satisfaction_trend: (node) =>
    lineChart(node, data.satisfaction_trend || [], { min: 1, max: 5, ticks: [1, 2, 3, 4, 5], className: "line-mean" }),
  nps_trend: (node) =>
    lineChart(node, data.nps_trend || [], { min: -100, max: 100, ticks: [-100, -50, 0, 50, 100], className: "line-nps" }),
  cases: (node) =>
    stackedBars(
      node,
      data.cases || [],
      (data.case_statuses || []).map((label, i) => ({ label, className: `seg-status-${i}` })),
      { normalize: false },
    ),
};

for (const node of document.querySelectorAll("[data-chart]")) {
  const draw = charts[node.dataset.chart];
  if (draw) draw(node);
}
