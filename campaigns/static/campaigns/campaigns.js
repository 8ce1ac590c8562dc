// Marketer pages (市场活动): shared helpers, the campaign list, the segment list and the campaign detail page
// with its live progress bar. The segment builder and the composer import the helpers from here. Plain ES
// modules, no build step; every value that can carry data is set with textContent (dom.js), never innerHTML.

import { h, setChildren } from "../contactcenter/inbox/dom.js";

export { h, setChildren };

// --- Strings and formatting ------------------------------------------------------------------------

function readJson(id, fallback) {
  const node = document.getElementById(id);
  return node ? JSON.parse(node.textContent) : fallback;
}

const data = readJson("campaigns-i18n", { strings: {}, choices: {}, config: {} });
export const config = data.config || {};
export const pageData = readJson("campaigns-page", {});
const LANG = (config.lang || document.documentElement.lang || "en").toLowerCase();
export const IS_ZH = LANG.startsWith("zh");
export const LOCALE = IS_ZH ? "zh-CN" : "en-GB";
export const TIME_ZONE = config.timeZone || undefined;

/** t("n_recipients", {n: 3}) — "{name}" placeholders are filled in. */
export function t(key, vars) {
  let text = data.strings[key];
  if (text === undefined) {
    console.warn("campaigns: missing string", key);
    text = key;
  }
  if (vars) text = text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  return text;
}

/** The display label of a model choice, e.g. choice("status", "running"). */
export function choice(group, value) {
  const labels = data.choices[group] || {};
  const key = String(value ?? "");
  return key in labels ? labels[key] : key;
}

const number = new Intl.NumberFormat(LOCALE);
export const fmtNumber = (n) => (n === null || n === undefined || n === "" ? "—" : number.format(Number(n)));

const fmtFull = new Intl.DateTimeFormat(LOCALE, {
  timeZone: TIME_ZONE,
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});
export const fullTime = (iso) => (iso ? fmtFull.format(new Date(iso)) : "—");

const partsFormat = new Intl.DateTimeFormat("en-US", {
  timeZone: TIME_ZONE,
  hourCycle: "h23",
  year: "numeric",
  month: "numeric",
  day: "numeric",
  hour: "numeric",
  minute: "numeric",
  second: "numeric",
});

function zoneOffsetMs(date) {
  const p = {};
  for (const part of partsFormat.formatToParts(date)) p[part.type] = Number(part.value);
  const asUtc = Date.UTC(p.year, p.month - 1, p.day, p.hour % 24, p.minute, p.second);
  return asUtc - (date.getTime() - date.getMilliseconds());
}

/** "2025-06-10T09:00" read as a wall-clock time in the hospital's zone → an ISO instant (UTC). */
export function hospitalLocalToIso(value) {
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(value || "");
  if (!match) return null;
  const [, y, mo, d, hh, mm] = match.map(Number);
  const wall = Date.UTC(y, mo - 1, d, hh, mm);
  // Two passes settle the offset across a daylight-saving change.
  let guess = wall - zoneOffsetMs(new Date(wall));
  guess = wall - zoneOffsetMs(new Date(guess));
  return new Date(guess).toISOString();
}

/** An ISO instant → "YYYY-MM-DDTHH:MM" on the hospital's wall clock, for a datetime-local input. */
export function isoToHospitalLocal(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const p = {};
  for (const part of partsFormat.formatToParts(date)) p[part.type] = part.value.padStart(2, "0");
  return `${p.year}-${p.month}-${p.day}T${String(Number(p.hour) % 24).padStart(2, "0")}:${p.minute}`;
}

export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

// --- The REST API under /api/v1/campaigns/ -----------------------------------------------------------

const BASE = "/api/v1/campaigns";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && meta.content) return meta.content;
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

function flatten(value) {
  if (value === null || value === undefined) return [];
  if (Array.isArray(value)) return value.flatMap(flatten);
  if (typeof value === "object") return Object.values(value).flatMap(flatten);
  return [String(value)];
}

export class ApiError extends Error {
  constructor(status, payload) {
    const messages = ApiError.messagesOf(status, payload);
    super(messages.join(" "));
    this.status = status;
    this.data = payload;
    this.messages = messages;
    this.fields = payload && typeof payload === "object" && !Array.isArray(payload) ? payload : {};
  }

  static messagesOf(status, payload) {
    if (status === 0) return [t("network_error")];
    if (payload && typeof payload === "object") {
      if (typeof payload.detail === "string") return [payload.detail];
      const messages = flatten(payload);
      if (messages.length) return messages;
    }
    if (status === 403) return [t("forbidden")];
    if (status === 404) return [t("not_found")];
    return [t("server_error", { status })];
  }
}

/** api("/segments/preview/", {method: "POST", body: {...}}); a FormData body is sent as multipart. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  let payload;
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(BASE + path, { method, headers, credentials: "same-origin", body: payload, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, null);
  }
  let result = null;
  const text = await response.text();
  if (text) {
    try {
      result = JSON.parse(text);
    } catch {
      result = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, result);
  return result;
}

/** A list endpoint may answer a plain array or a page {count, results}. */
export const rowsOf = (payload) => (Array.isArray(payload) ? payload : payload?.results || []);
export const idOf = (value) => (value && typeof value === "object" ? value.id : value);

export function statusBadge(status) {
  return h("span", { class: `badge camp-status camp-status-${status}`, dataset: { testid: "campaign-status", status } }, choice("status", status));
}

export function alertBox(kind = "error") {
  return h("div", { class: `alert alert-${kind}`, role: kind === "error" ? "alert" : "status", hidden: true });
}

export function showAlert(box, messages) {
  const list = (Array.isArray(messages) ? messages : [messages]).filter(Boolean);
  box.hidden = list.length === 0;
  setChildren(box, list.length === 1 ? list[0] : h("ul", { class: "camp-messages" }, list.map((m) => h("li", null, m))));
}

/** Sum of recipient counts per state, whatever the payload calls them. */
export function progressOf(payload) {
  const counts = payload?.counts || {};
  const total = Number(payload?.total ?? Object.values(counts).reduce((a, b) => a + Number(b || 0), 0));
  // Cancelled recipients were never sent to: a campaign cancelled at 3 of 20 shows 3 of 20, not a full bar.
  const open = Number(counts.pending || 0) + Number(counts.deferred || 0) + Number(counts.cancelled || 0);
  let done = Object.values(counts).reduce((a, b) => a + Number(b || 0), 0) - open;
  if (payload?.status === "completed" && total > 0) done = Math.max(done, total);
  const percent = total > 0 ? Math.min(100, Math.round((done * 100) / total)) : payload?.status === "completed" ? 100 : 0;
  return { counts, total, done, percent, status: payload?.status };
}

export function progressBar(extraClass = "") {
  const fill = h("div", { class: "camp-progress-fill" });
  const bar = h(
    "div",
    { class: `camp-progress ${extraClass}`, role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0", dataset: { testid: "progress-bar" } },
    fill,
  );
  bar.update = (percent, label) => {
    fill.style.width = `${percent}%`;
    bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-valuetext", label);
    bar.dataset.percent = String(percent);
  };
  return bar;
}

// --- Campaign list ------------------------------------------------------------------------------------

const LIST_POLL_MS = 15000;

async function campaignListPage(root) {
  const error = alertBox();
  const body = h("tbody", { dataset: { testid: "campaign-rows" } });
  const table = h(
    "table",
    { class: "data camp-table" },
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        h("th", { scope: "col" }, t("name")),
        h("th", { scope: "col" }, t("status")),
        h("th", { scope: "col" }, t("segment")),
        h("th", { scope: "col" }, t("when")),
        h("th", { scope: "col", class: "num" }, t("progress")),
        h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, t("actions"))),
      ),
    ),
    body,
  );
  setChildren(root, error, h("div", { class: "card table-wrap" }, table));

  const render = (rows) => {
    if (!rows.length) {
      setChildren(body, h("tr", null, h("td", { colspan: "6", class: "empty", dataset: { testid: "no-campaigns" } }, t("no_campaigns"))));
      return;
    }
    setChildren(
      body,
      rows.map((c) => {
        const progress = progressOf({ counts: c.counts || {}, total: c.total ?? c.recipient_count, status: c.status });
        const sent = c.sent ?? progress.done;
        const total = c.total ?? c.recipient_count ?? progress.total;
        const when = c.launched_at
          ? t("launched_at", { time: fullTime(c.launched_at) })
          : c.scheduled_at
            ? t("scheduled_for", { time: fullTime(c.scheduled_at) })
            : "—";
        const segmentName = c.segment_name ?? c.segment?.name ?? "";
        const bar = progressBar("camp-progress-sm");
        bar.update(total ? Math.min(100, Math.round((sent * 100) / total)) : 0, `${sent}/${total}`);
        return h(
          "tr",
          { dataset: { testid: "campaign-row", campaignId: c.id } },
          h("td", null, h("a", { href: `/campaigns/${c.id}/`, class: "camp-name", dataset: { testid: "campaign-name" } }, c.name)),
          h("td", null, statusBadge(c.status)),
          h("td", { dataset: { testid: "campaign-segment" } }, segmentName || "—"),
          h("td", { class: "camp-when" }, when),
          h(
            "td",
            { class: "num" },
            c.status === "draft" ? "—" : h("div", { class: "camp-progress-wrap" }, bar, h("span", { class: "camp-progress-text", dataset: { testid: "campaign-progress" } }, `${fmtNumber(sent)}/${fmtNumber(total)}`)),
          ),
          h(
            "td",
            { class: "camp-actions" },
            c.status === "draft" || c.status === "scheduled" ? h("a", { class: "btn btn-sm", href: `/campaigns/${c.id}/edit/` }, t("edit")) : null,
            c.status === "draft" ? null : h("a", { class: "btn btn-sm btn-ghost", href: `/campaigns/analytics/${c.id}/` }, t("analytics")),
          ),
        );
      }),
    );
  };

  const load = async () => {
    try {
      render(rowsOf(await api("/")));
      showAlert(error, []);
    } catch (e) {
      showAlert(error, t("list_failed", { error: e.message }));
    }
  };
  await load();
  setInterval(() => {
    if (!document.hidden) load();
  }, LIST_POLL_MS);
}

// --- Segment list -------------------------------------------------------------------------------------

async function segmentListPage(root) {
  const error = alertBox();
  const body = h("tbody", { dataset: { testid: "segment-rows" } });
  setChildren(
    root,
    error,
    h(
      "div",
      { class: "card table-wrap" },
      h(
        "table",
        { class: "data camp-table" },
        h("thead", null, h("tr", null, h("th", { scope: "col" }, t("name")), h("th", { scope: "col" }, t("kind")), h("th", { scope: "col" }, t("description")), h("th", { scope: "col" }, t("updated")), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, t("actions"))))),
        body,
      ),
    ),
  );
  try {
    const rows = rowsOf(await api("/segments/"));
    if (!rows.length) {
      setChildren(body, h("tr", null, h("td", { colspan: "5", class: "empty" }, t("no_segments"))));
      return;
    }
    setChildren(
      body,
      rows.map((s) =>
        h(
          "tr",
          { dataset: { testid: "segment-row", segmentId: s.id } },
          h("td", null, h("a", { href: `/campaigns/segments/${s.id}/`, class: "camp-name" }, s.name)),
          h("td", null, h("span", { class: "badge" }, choice("segment_kind", s.kind))),
          h("td", { class: "camp-muted" }, s.description || ""),
          h("td", { class: "camp-when" }, fullTime(s.updated_at || s.created_at)),
          h("td", { class: "camp-actions" }, h("a", { class: "btn btn-sm", href: `/campaigns/new/?segment=${s.id}` }, t("new_campaign_from_segment"))),
        ),
      ),
    );
  } catch (e) {
    showAlert(error, t("list_failed", { error: e.message }));
  }
}

// --- Campaign detail: live progress -------------------------------------------------------------------

const STATES = ["pending", "deferred", "sent", "delivered", "failed", "skipped_opted_out", "skipped_no_consent", "skipped_invalid", "skipped_missing", "cancelled"];
const POLL_MS = 3000;
const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000];
const FINAL = new Set(["completed", "cancelled"]);

class ProgressFeed {
  /** The websocket is a hint: while it is down the page polls GET progress/ so nothing is missed. */
  constructor(campaignId, onProgress, onState) {
    this.id = campaignId;
    this.onProgress = onProgress;
    this.onState = onState;
    this.attempt = 0;
    this.ws = null;
    this.pollTimer = null;
    this.stopped = false;
  }

  start() {
    this.poll();
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.pollTimer);
    if (this.ws) this.ws.close();
  }

  connect() {
    if (this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}/ws/campaigns/${this.id}/`);
    } catch {
      this.#retry();
      return;
    }
    this.ws = ws;
    // Exposed so the browser test (and curious humans) can cut it: window.campaignSocket.close().
    window.campaignSocket = ws;
    ws.addEventListener("open", () => {
      this.attempt = 0;
      this.onState("live");
      // Catch up on anything that happened before the socket joined.
      this.poll();
    });
    ws.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === "progress") this.onProgress(frame);
    });
    ws.addEventListener("close", (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      // 4403 not allowed, 4404 no such campaign: reconnecting cannot help.
      if (event.code === 4403 || event.code === 4404) {
        this.stopped = true;
        this.onState("offline");
        return;
      }
      this.onState("polling");
      this.poll();
      this.#retry();
    });
  }

  get live() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  #retry() {
    if (this.stopped) return;
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    setTimeout(() => this.connect(), delay);
  }

  async poll() {
    clearTimeout(this.pollTimer);
    try {
      this.onProgress(await api(`/${this.id}/progress/`));
    } catch (e) {
      console.warn("campaigns: progress poll failed", e);
    }
    // Poll on while the socket is down; with a live socket one read after (re)connecting is enough.
    if (!this.stopped && !this.live) this.pollTimer = setTimeout(() => this.poll(), POLL_MS);
  }
}

async function campaignDetailPage(root) {
  const id = pageData.campaign_id;
  const error = alertBox();
  const notice = alertBox("info");
  notice.dataset.testid = "campaign-notice";
  const title = h("h2", { class: "camp-card-title", dataset: { testid: "campaign-title" } }, "");
  const badgeSlot = h("span", { class: "camp-badge-slot" });
  const meta = h("dl", { class: "camp-meta" });
  const bar = progressBar();
  const percentText = h("span", { class: "camp-percent", dataset: { testid: "progress-percent" } }, "0%");
  const doneText = h("span", { class: "camp-muted", dataset: { testid: "progress-count" } }, "");
  const conn = h("span", { class: "camp-conn", dataset: { testid: "progress-connection", state: "connecting" } }, t("conn_connecting"));
  const countsList = h("dl", { class: "camp-counts", dataset: { testid: "progress-counts" } });
  const buttons = h("div", { class: "camp-buttons" });
  let campaign = null;
  let lastStatus = null;

  setChildren(
    root,
    error,
    notice,
    h(
      "section",
      { class: "card camp-card" },
      h("div", { class: "camp-card-head" }, h("div", { class: "camp-title-line" }, title, badgeSlot), buttons),
      meta,
    ),
    h(
      "section",
      { class: "card camp-card", "aria-labelledby": "h-progress" },
      h("div", { class: "camp-card-head" }, h("h2", { id: "h-progress", class: "camp-card-title" }, t("progress")), conn),
      h("div", { class: "camp-progress-line" }, bar, percentText),
      doneText,
      countsList,
    ),
  );

  const renderButtons = (status) => {
    const act = (op, label, cls, testid) =>
      h(
        "button",
        {
          type: "button",
          class: `btn ${cls}`,
          dataset: { testid },
          onclick: async (event) => {
            const button = event.currentTarget;
            button.disabled = true;
            try {
              const result = await api(`/${id}/${op}/`, { method: "POST", body: {} });
              if (result && result.status) {
                campaign = { ...campaign, ...result };
                renderHead();
              }
              feed.poll();
            } catch (e) {
              showAlert(error, e.messages);
            } finally {
              button.disabled = false;
            }
          },
        },
        label,
      );
    const list = [];
    // A scheduled campaign has nothing to pause yet: it can be cancelled, or left to start.
    if (status === "running") list.push(act("pause", t("pause"), "", "pause-button"));
    if (status === "paused") list.push(act("resume", t("resume"), "btn-primary", "resume-button"));
    if (!FINAL.has(status)) {
      // Cancelling stops every unsent recipient for good: ask twice, inline (no blocking dialog).
      const confirmBtn = act("cancel", t("confirm_cancel"), "btn-danger", "confirm-cancel-button");
      confirmBtn.hidden = true;
      const cancel = h(
        "button",
        {
          type: "button",
          class: "btn btn-ghost",
          dataset: { testid: "cancel-button" },
          onclick: () => {
            cancel.hidden = true;
            confirmBtn.hidden = false;
            confirmBtn.focus();
          },
        },
        t("cancel_campaign"),
      );
      list.push(cancel, confirmBtn);
    }
    if (status === "draft" || status === "scheduled") list.push(h("a", { class: "btn", href: `/campaigns/${id}/edit/` }, t("edit")));
    if (status !== "draft") list.push(h("a", { class: "btn btn-ghost", href: `/campaigns/analytics/${id}/`, dataset: { testid: "analytics-link" } }, t("analytics")));
    setChildren(buttons, list);
  };

  const renderHead = () => {
    title.textContent = campaign.name;
    setChildren(badgeSlot, statusBadge(campaign.status));
    const rows = [
      [t("segment"), campaign.segment_name ?? campaign.segment?.name ?? "—"],
      [t("sending_inbox"), campaign.inbox_name ?? campaign.inbox?.name ?? "—"],
      [t("scheduled"), fullTime(campaign.scheduled_at)],
      [t("launched"), fullTime(campaign.launched_at)],
      [t("completed"), fullTime(campaign.completed_at)],
      [t("messages_per_second"), fmtNumber(campaign.messages_per_second)],
    ];
    setChildren(meta, rows.map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
    if (campaign.status !== lastStatus) {
      lastStatus = campaign.status;
      renderButtons(campaign.status);
    }
  };

  const onProgress = (payload) => {
    const p = progressOf(payload);
    const label = `${p.percent}%`;
    bar.update(p.percent, label);
    bar.classList.toggle("is-done", p.percent >= 100);
    percentText.textContent = label;
    doneText.textContent = t("progress_count", { done: fmtNumber(p.done), total: fmtNumber(p.total) });
    setChildren(
      countsList,
      STATES.filter((s) => s in p.counts || ["pending", "sent", "delivered", "failed"].includes(s)).map((s) =>
        h("div", { class: `camp-count camp-count-${s}`, dataset: { testid: `count-${s}` } }, h("dt", null, choice("recipient_state", s)), h("dd", null, fmtNumber(p.counts[s] || 0))),
      ),
    );
    if (p.status && campaign && p.status !== campaign.status) {
      campaign = { ...campaign, status: p.status };
      renderHead();
      if (FINAL.has(p.status)) api(`/${id}/`).then((c) => ((campaign = c), renderHead())).catch(() => {});
    }
  };

  const feed = new ProgressFeed(id, onProgress, (state) => {
    conn.dataset.state = state;
    conn.textContent = t(`conn_${state}`);
  });

  try {
    campaign = await api(`/${id}/`);
    renderHead();
  } catch (e) {
    showAlert(error, t("load_failed", { error: e.message }));
    return;
  }
  const arrived = new URLSearchParams(location.search);
  if (arrived.get("scheduled") && campaign.scheduled_at) showAlert(notice, t("scheduled_notice", { time: fullTime(campaign.scheduled_at) }));
  else if (arrived.get("launched")) showAlert(notice, t("launched_notice"));
  feed.start();
}

// --- Boot ----------------------------------------------------------------------------------------------

const app = document.getElementById("campaigns-app");
const PAGES = { list: campaignListPage, segments: segmentListPage, detail: campaignDetailPage };
if (app && PAGES[app.dataset.page]) {
  PAGES[app.dataset.page](app).catch((e) => {
    console.error(e);
    app.prepend(h("div", { class: "alert alert-error", role: "alert" }, t("load_failed", { error: e.message })));
  });
}
