// Campaign analytics charts: a funnel, sent/delivered/replied over time and rates by campaign, drawn as
// small inline SVG from the page's JSON block. The same approach as callbacks/reports.js (which draws on
// import, so its helpers cannot be imported): no chart library and no network, because hospitals run
// this without internet; every label is set with textContent, because campaign names are typed by staff.

const SVG_NS = "http://www.w3.org/2000/svg";
// Wide charts fill a card across the page; narrow ones sit in a half-width card, where a smaller
// drawing keeps the text at a readable size once the SVG is scaled to fit.
const WIDTH = 760;
const NARROW = 560;
const LABEL_W = 150;
const RIGHT_PAD = 140;
const ROW_H = 24;

function readJson(id, fallback) {
  const node = document.getElementById(id);
  return node ? JSON.parse(node.textContent) : fallback;
}

const data = readJson("analytics-data", {});
const i18n = readJson("analytics-i18n", { strings: {}, config: {} });
const LOCALE = (i18n.config.lang || "en").startsWith("zh") ? "zh-CN" : "en-GB";
const num = new Intl.NumberFormat(LOCALE, { maximumFractionDigits: 1 });

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

function canvas(height, width = WIDTH) {
  return el("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", class: "an-svg" });
}

function rowLabel(svg, y, label) {
  const shown = label.length > 20 ? `${label.slice(0, 19)}…` : label;
  svg.appendChild(
    titled(el("text", { x: LABEL_W - 8, y, class: "an-label", "text-anchor": "end", "dominant-baseline": "middle" }, shown), label),
  );
}

function legend(container, items) {
  const list = document.createElement("ul");
  list.className = "an-legend";
  for (const item of items) {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `an-swatch ${item.className}`;
    li.append(swatch, document.createTextNode(item.label));
    list.appendChild(li);
  }
  container.appendChild(list);
}

function empty(container) {
  const p = document.createElement("p");
  p.className = "an-empty";
  p.textContent = t("no_data");
  container.appendChild(p);
}

const pct = (value) => (value == null ? "—" : num.format(value));

/** The funnel: one bar per step, its length a share of the recipients. */
function funnel(container, steps) {
  const first = steps.length ? steps[0].count : 0;
  if (!first) return empty(container);
  const plotW = NARROW - LABEL_W - RIGHT_PAD;
  const height = steps.length * (ROW_H + 8) + 4;
  const svg = canvas(height, NARROW);
  steps.forEach((step, i) => {
    const y = 2 + i * (ROW_H + 8);
    const w = (plotW * step.count) / first;
    rowLabel(svg, y + ROW_H / 2, step.label);
    const bar = el("rect", { x: LABEL_W, y, width: Math.max(w, 1), height: ROW_H, rx: 2, class: `an-step an-step-${i}` });
    svg.appendChild(
      titled(
        bar,
        t(step.of_previous == null ? "step_title_short" : "step_title", {
          label: step.label,
          n: step.count,
          pct: pct(step.of_recipients),
          prev: pct(step.of_previous),
        }),
      ),
    );
    svg.appendChild(
      el(
        "text",
        { x: LABEL_W + w + 6, y: y + ROW_H / 2, class: "an-value", "dominant-baseline": "middle" },
        `${step.count} · ${t("of_recipients", { pct: pct(step.of_recipients) })}`,
      ),
    );
  });
  container.appendChild(svg);
}

const SERIES = [
  { key: "sent", className: "an-sent" },
  { key: "delivered", className: "an-delivered" },
  { key: "replied", className: "an-replied" },
];

/** Sent, delivered and replied per bucket as three lines on one count axis. */
function series(container, block) {
  const points = (block && block.points) || [];
  const most = Math.max(0, ...points.flatMap((p) => SERIES.map((s) => p[s.key])));
  if (!points.length || !most) return empty(container);
  const height = 230;
  const left = 48;
  const bottom = 40;
  const plotW = NARROW - left - 16;
  const plotH = height - bottom - 12;
  const svg = canvas(height, NARROW);
  const top = niceCeiling(most);
  const yOf = (v) => 12 + plotH - (v / top) * plotH;
  const inset = 12;
  const step = points.length > 1 ? (plotW - 2 * inset) / (points.length - 1) : 0;
  const xOf = (i) => left + inset + (points.length > 1 ? i * step : (plotW - 2 * inset) / 2);
  for (const tick of [0, top / 2, top]) {
    svg.appendChild(el("line", { x1: left, x2: left + plotW, y1: yOf(tick), y2: yOf(tick), class: tick === 0 ? "an-axis" : "an-gridline" }));
    svg.appendChild(el("text", { x: left - 6, y: yOf(tick), class: "an-tick", "text-anchor": "end", "dominant-baseline": "middle" }, num.format(tick)));
  }
  // Label every bucket when they fit, else every n-th (the last too when it has room), so labels do not
  // overlap; the year is left out when every bucket shares it.
  const every = Math.max(1, Math.ceil(points.length / 6));
  const oneYear = points.every((p) => p.label.slice(0, 4) === points[0].label.slice(0, 4));
  const last = points.length - 1;
  points.forEach((p, i) => {
    const labelled = i % every === 0 || (i === last && last % every >= every / 2);
    if (labelled) {
      const text = oneYear ? p.label.slice(5) : p.label;
      svg.appendChild(el("text", { x: xOf(i), y: height - 14, class: "an-tick", "text-anchor": "middle" }, text));
    }
  });
  const lines = SERIES.map((s) => ({ ...s, label: t(s.key) }));
  for (const s of lines) {
    const d = points.map((p, i) => `${i ? "L" : "M"}${xOf(i).toFixed(1)},${yOf(p[s.key]).toFixed(1)}`).join(" ");
    svg.appendChild(el("path", { d, class: `an-line ${s.className}` }));
    points.forEach((p, i) => {
      if (!p[s.key] && points.length > 40) return;
      const dot = el("circle", { cx: xOf(i), cy: yOf(p[s.key]), r: points.length > 40 ? 2.5 : 3.5, class: `an-dot ${s.className}` });
      svg.appendChild(titled(dot, t("point_title", { label: p.label, n: p[s.key], series: s.label })));
    });
  }
  container.appendChild(svg);
  legend(container, lines);
}

function niceCeiling(value) {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const factor of [1, 2, 5, 10]) {
    if (value <= factor * magnitude) return factor * magnitude;
  }
  return 10 * magnitude;
}

/** Reply and conversion rate per campaign: grouped bars on a 0–max % axis. */
function campaignRates(container, rows) {
  const shown = rows.filter((row) => row.totals.sent > 0);
  if (!shown.length) return empty(container);
  const bars = [
    { key: "reply", label: t("reply_rate"), className: "an-replied" },
    { key: "conversion", label: t("conversion_rate"), className: "an-converted" },
  ];
  const most = Math.max(1, ...shown.flatMap((row) => bars.map((b) => row.rates[b.key] || 0)));
  const top = Math.min(100, niceCeiling(most));
  const groupH = bars.length * (ROW_H - 6) + 12;
  const height = shown.length * groupH + 8;
  const plotW = WIDTH - LABEL_W - RIGHT_PAD;
  const svg = canvas(height);
  shown.forEach((row, i) => {
    const y0 = 4 + i * groupH;
    rowLabel(svg, y0 + (bars.length * (ROW_H - 6)) / 2, row.campaign.name);
    bars.forEach((b, j) => {
      const value = row.rates[b.key];
      const y = y0 + j * (ROW_H - 6);
      const w = value == null ? 0 : (plotW * value) / top;
      const rect = el("rect", { x: LABEL_W, y: y + 1, width: Math.max(w, 0), height: ROW_H - 8, rx: 2, class: b.className });
      svg.appendChild(titled(rect, t("rate_title", { label: row.campaign.name, series: b.label, value: pct(value) })));
      svg.appendChild(el("text", { x: LABEL_W + w + 4, y: y + (ROW_H - 6) / 2, class: "an-value", "dominant-baseline": "middle" }, `${pct(value)}%`));
    });
  });
  container.appendChild(svg);
  legend(container, bars);
}

const charts = {
  funnel: (node) => funnel(node, data.funnel || []),
  series: (node) => series(node, data.series),
  campaign_rates: (node) => campaignRates(node, data.campaigns || []),
};

for (const node of document.querySelectorAll("[data-chart]")) {
  const draw = charts[node.dataset.chart];
  if (draw) draw(node);
}

// Choosing hours or days redraws at once; the Apply button stays for keyboards and without scripts.
const bucket = document.getElementById("an-bucket");
if (bucket && bucket.form) bucket.addEventListener("change", () => bucket.form.requestSubmit());
