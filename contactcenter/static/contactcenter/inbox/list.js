// Left pane: the conversation list with Mine / Unassigned / All tabs and filters, kept live from
// conversation.add / conversation.update events.

import { api, qs } from "./api.js";
import { h, setChildren, clear, safeColor, initials } from "./dom.js";
import { t, choice, choices, shortTime, fullTime } from "./i18n.js";

const PAGE = 50;
const VIEWS = ["mine", "unassigned", "all"];

export function patientName(patient) {
  if (!patient) return "";
  return patient.name || t("patient_number", { id: patient.id });
}

export function labelChip(label, extra = null) {
  return h(
    "span",
    { class: "label-chip", style: { "--label-color": safeColor(label.color) } },
    h("span", { class: "label-dot", "aria-hidden": "true" }),
    label.name,
    extra,
  );
}

export function vipBadge(tier) {
  if (!tier || tier === "none") return null;
  return h("span", { class: `badge badge-vip-${tier}`, title: t("vip_tier_title", { tier: choice("vip", tier) }) }, "VIP · ", choice("vip", tier));
}

export function priorityBadge(priority) {
  if (!priority) return null;
  return h("span", { class: `badge badge-prio-${priority}` }, choice("priority", priority));
}

export class ConversationList {
  constructor(root, { store, onOpen }) {
    this.root = root;
    this.store = store;
    this.onOpen = onOpen;
    this.rows = new Map(); // id -> {conversation, el}
    this.total = 0;
    this.offset = 0;
    this.hasMore = false;
    this.loading = false;
    this.loadToken = 0;
    this.buffered = null; // events that arrive while a load is in flight
    this.activeId = null;
    this.filters = this.#savedFilters();
    this.#build();
  }

  // --- Filters --------------------------------------------------------------------------------

  #storageKey() {
    return `inbox.filters.${this.store.me.id}`;
  }

  #savedFilters() {
    const role = this.store.me.role;
    const defaults = { view: role === "agent" || role === "nurse" ? "mine" : "all", status: "open", inbox: "", label: "" };
    try {
      const saved = JSON.parse(localStorage.getItem(this.#storageKey()) || "{}");
      const merged = { ...defaults, ...saved };
      if (!VIEWS.includes(merged.view)) merged.view = defaults.view;
      return merged;
    } catch {
      return defaults;
    }
  }

  #saveFilters() {
    try {
      localStorage.setItem(this.#storageKey(), JSON.stringify(this.filters));
    } catch {
      /* private mode: filters just do not persist */
    }
  }

  matches(c) {
    const f = this.filters;
    if (f.view === "mine" && c.assignee?.id !== this.store.me.id) return false;
    if (f.view === "unassigned" && c.assignee) return false;
    if (f.status !== "any" && c.status !== f.status) return false;
    if (f.inbox && String(c.inbox?.id) !== String(f.inbox)) return false;
    if (f.label && !(c.labels || []).some((l) => l.name === f.label)) return false;
    return true;
  }

  // --- Layout ---------------------------------------------------------------------------------

  #build() {
    this.tabs = {};
    const tablist = h("div", { class: "tabs", role: "tablist", "aria-label": t("conversation_views") });
    for (const view of VIEWS) {
      const tab = h("button", {
        type: "button",
        class: "tab",
        role: "tab",
        id: `tab-${view}`,
        "aria-controls": "conversation-list",
        dataset: { view, testid: `tab-${view}` },
        onclick: () => this.setFilter("view", view),
        onkeydown: (event) => this.#tabKeys(event, view),
      }, t(`view_${view}`));
      this.tabs[view] = tab;
      tablist.append(tab);
    }

    const status = h("select", { class: "field field-sm", id: "filter-status", dataset: { testid: "filter-status" } },
      ...choices("status").map(([value, label]) => h("option", { value }, label)),
      h("option", { value: "any" }, t("any_status")),
    );
    const inbox = h("select", { class: "field field-sm", id: "filter-inbox", dataset: { testid: "filter-inbox" } },
      h("option", { value: "" }, t("all_inboxes")),
      ...this.store.me.inboxes.map((i) => h("option", { value: String(i.id) }, i.name)),
    );
    this.labelSelect = h("select", { class: "field field-sm", id: "filter-label", dataset: { testid: "filter-label" } });
    this.renderLabelOptions();
    status.value = this.filters.status;
    inbox.value = this.filters.inbox;
    if (inbox.value !== String(this.filters.inbox)) this.filters.inbox = "";
    status.addEventListener("change", () => this.setFilter("status", status.value));
    inbox.addEventListener("change", () => this.setFilter("inbox", inbox.value));
    this.labelSelect.addEventListener("change", () => this.setFilter("label", this.labelSelect.value));
    this.selects = { status, inbox, label: this.labelSelect };

    const filters = h("div", { class: "filters" },
      h("label", { class: "filter" }, h("span", { class: "filter-label" }, t("status")), status),
      h("label", { class: "filter" }, h("span", { class: "filter-label" }, t("label")), this.labelSelect),
      h("label", { class: "filter filter-inbox" }, h("span", { class: "filter-label" }, t("inbox")), inbox),
    );

    this.summary = h("div", { class: "list-summary", "aria-live": "polite" });
    this.error = h("div", { class: "inline-error", role: "alert", hidden: true });
    this.list = h("ul", {
      class: "conv-list",
      id: "conversation-list",
      role: "list",
      "aria-label": t("conversations"),
      dataset: { testid: "conversation-list" },
    });
    this.empty = h("div", { class: "empty", hidden: true });
    this.more = h("button", { type: "button", class: "btn btn-sm load-more", hidden: true, onclick: () => this.load({ append: true }) }, t("load_more"));

    setChildren(
      this.root,
      h("div", { class: "pane-head list-head" }, h("h2", { class: "pane-title" }, t("conversations")), tablist, filters, this.summary),
      this.error,
      h("div", { class: "list-scroll" }, this.list, this.empty, this.more),
    );
    this.#syncTabs();
  }

  renderLabelOptions() {
    const current = this.filters.label;
    setChildren(
      this.labelSelect,
      h("option", { value: "" }, t("any_label")),
      ...this.store.labels.map((l) => h("option", { value: l.name }, l.name)),
    );
    if (current && !this.store.labels.some((l) => l.name === current)) {
      this.labelSelect.append(h("option", { value: current }, current));
    }
    this.labelSelect.value = current;
  }

  #tabKeys(event, view) {
    const index = VIEWS.indexOf(view);
    let next = null;
    if (event.key === "ArrowRight") next = VIEWS[(index + 1) % VIEWS.length];
    if (event.key === "ArrowLeft") next = VIEWS[(index + VIEWS.length - 1) % VIEWS.length];
    if (next) {
      event.preventDefault();
      this.setFilter("view", next);
      this.tabs[next].focus();
    }
  }

  #syncTabs() {
    for (const [view, tab] of Object.entries(this.tabs)) {
      const selected = view === this.filters.view;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
    }
    this.list.setAttribute("aria-labelledby", `tab-${this.filters.view}`);
  }

  setFilter(key, value) {
    if (this.filters[key] === value) return;
    this.filters[key] = value;
    this.#saveFilters();
    this.#syncTabs();
    this.load();
  }

  // --- Loading --------------------------------------------------------------------------------

  async load({ append = false } = {}) {
    const token = ++this.loadToken;
    const offset = append ? this.offset : 0;
    this.loading = true;
    this.buffered = [];
    this.more.disabled = true;
    if (!append) this.root.classList.add("is-loading");
    const f = this.filters;
    try {
      const page = await api(`/conversations/${qs({ view: f.view, status: f.status, inbox: f.inbox, label: f.label, limit: PAGE, offset })}`);
      if (token !== this.loadToken) return;
      this.error.hidden = true;
      if (!append) {
        this.rows.clear();
        clear(this.list);
      }
      for (const c of page.results) this.#place(c, "end");
      this.total = page.count;
      this.offset = offset + page.results.length;
      this.hasMore = Boolean(page.next);
      // Anything that changed while we were loading is applied on top of the fresh page.
      const pending = this.buffered || [];
      this.buffered = null;
      for (const [c, moveToTop] of pending) this.upsert(c, { moveToTop });
    } catch (error) {
      if (token !== this.loadToken) return;
      this.buffered = null;
      this.error.textContent = t("list_failed", { error: error.message });
      this.error.hidden = false;
    } finally {
      if (token === this.loadToken) {
        this.loading = false;
        this.more.disabled = false;
        this.root.classList.remove("is-loading");
        this.#refreshMeta();
      }
    }
  }

  #refreshMeta() {
    const shown = this.rows.size;
    this.summary.textContent = this.total === 1 ? t("one_conversation") : t("n_conversations", { n: this.total });
    this.more.hidden = !this.hasMore;
    this.empty.hidden = shown > 0 || this.loading;
    this.empty.textContent = t(this.filters.view === "mine" ? "empty_mine" : "empty_list");
  }

  // --- Live updates ---------------------------------------------------------------------------

  /** Called for conversation.add / conversation.update: replace, insert at the top, or drop the row. */
  upsert(c, { moveToTop = false } = {}) {
    if (this.buffered) {
      this.buffered.push([c, moveToTop]);
      return;
    }
    const existing = this.rows.get(c.id);
    if (!this.matches(c)) {
      if (existing) {
        existing.el.remove();
        this.rows.delete(c.id);
        this.total = Math.max(0, this.total - 1);
        this.#refreshMeta();
      }
      return;
    }
    if (existing) {
      const el = this.#row(c);
      existing.el.replaceWith(el);
      this.rows.set(c.id, { conversation: c, el });
      if (moveToTop) {
        if (this.list.firstChild !== el) this.list.prepend(el);
        el.classList.add("flash");
      }
    } else {
      this.#place(c, "start");
      this.total += 1;
      this.rows.get(c.id).el.classList.add("flash");
    }
    this.#refreshMeta();
  }

  /** Called for conversation.remove: the conversation left what this agent may see. */
  remove(id) {
    if (this.buffered) this.buffered = this.buffered.filter(([c]) => c.id !== id);
    const existing = this.rows.get(id);
    if (!existing) return;
    existing.el.remove();
    this.rows.delete(id);
    this.total = Math.max(0, this.total - 1);
    this.#refreshMeta();
  }

  get(id) {
    return this.rows.get(id)?.conversation || null;
  }

  setActive(id) {
    this.activeId = id;
    for (const [rowId, row] of this.rows) {
      const link = row.el.querySelector(".conv-link");
      if (rowId === id) link.setAttribute("aria-current", "true");
      else link.removeAttribute("aria-current");
      row.el.classList.toggle("is-active", rowId === id);
    }
  }

  /** Re-render every row (relative times age, presence names change). */
  refreshAll() {
    for (const [id, row] of this.rows) {
      const el = this.#row(row.conversation);
      row.el.replaceWith(el);
      this.rows.set(id, { conversation: row.conversation, el });
    }
  }

  #place(c, where) {
    const el = this.#row(c);
    this.rows.set(c.id, { conversation: c, el });
    if (where === "start") this.list.prepend(el);
    else this.list.append(el);
  }

  #row(c) {
    const name = patientName(c.patient);
    const unread = c.unread_count > 0;
    const link = h(
      "a",
      {
        class: "conv-link",
        href: `?conversation=${c.id}`,
        onclick: (event) => {
          if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
          event.preventDefault();
          this.onOpen(c.id);
        },
      },
      h("span", { class: "avatar", "aria-hidden": "true" }, initials(c.patient?.name)),
      h(
        "span",
        { class: "conv-body" },
        h(
          "span",
          { class: "conv-line conv-line-top" },
          h("span", { class: "conv-name", dataset: { testid: "conversation-name" } }, name),
          vipBadge(c.patient?.vip_tier),
          h("span", { class: "conv-time", title: fullTime(c.last_message_at) }, h("time", { datetime: c.last_message_at || "" }, shortTime(c.last_message_at))),
        ),
        h(
          "span",
          { class: "conv-line conv-meta" },
          h("span", { class: "conv-inbox" }, c.inbox?.name || "", " · ", choice("channel", c.inbox?.channel_type)),
        ),
        h(
          "span",
          { class: "conv-line" },
          h("span", { class: "conv-preview" }, c.last_message_preview || t("no_messages")),
          unread
            ? h("span", { class: "unread", dataset: { testid: "unread-badge" }, "aria-label": t("n_unread", { n: c.unread_count }) }, c.unread_count > 99 ? "99+" : String(c.unread_count))
            : null,
        ),
        h(
          "span",
          { class: "conv-line conv-tags" },
          h("span", { class: `conv-assignee${c.assignee ? "" : " is-unassigned"}` }, c.assignee ? c.assignee.name : t("unassigned")),
          c.status !== "open" || this.filters.status === "any" ? h("span", { class: `badge badge-status-${c.status}` }, choice("status", c.status)) : null,
          priorityBadge(c.priority),
          ...(c.labels || []).map((l) => labelChip(l)),
        ),
      ),
    );
    if (c.id === this.activeId) link.setAttribute("aria-current", "true");
    return h(
      "li",
      {
        class: `conv-row${unread ? " is-unread" : ""}${c.id === this.activeId ? " is-active" : ""}`,
        dataset: { testid: "conversation-row", conversationId: c.id, status: c.status },
      },
      link,
    );
  }
}
