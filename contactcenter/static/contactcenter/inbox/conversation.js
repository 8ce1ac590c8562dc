// Middle pane: one conversation. Header actions, a live timeline of messages and private notes,
// the typing indicator, and the composer (composer.js).

import { api } from "./api.js";
import { Composer } from "./composer.js";
import { h, setChildren, clear, dismissOnOutside, safeColor, icon } from "./dom.js";
import { t, choice, choices, timeOnly, fullTime, dayKey, dayHeading, zonedParts, zonedWallTime } from "./i18n.js";
import { patientName, vipBadge, labelChip } from "./list.js";

const TYPING_TIMEOUT_MS = 6000;

function byTime(a, b) {
  const ta = Date.parse(a.at);
  const tb = Date.parse(b.at);
  if (ta !== tb) return ta - tb;
  if (a.kind !== b.kind) return a.kind === "m" ? -1 : 1;
  return a.id - b.id;
}

export class ConversationView {
  constructor(root, { store, socket, onConversation, onPatient }) {
    this.root = root;
    this.store = store;
    this.socket = socket;
    this.onConversation = onConversation; // (conversation) => void, after our own changes
    this.onPatient = onPatient; // (patientId, conversationId) => void
    this.conversation = null;
    this.items = []; // sorted [{key, kind, id, at, el}]
    this.itemKeys = new Map();
    this.openToken = 0;
    this.typers = new Map(); // user/name -> timeout
    this.readTimer = null;
    this.#build();
    this.showEmpty();
  }

  get currentId() {
    return this.conversation?.id ?? null;
  }

  // --- Layout ---------------------------------------------------------------------------------

  #build() {
    // Header
    this.title = h("h2", { class: "conv-title", id: "conversation-title" });
    this.subtitle = h("div", { class: "conv-subtitle" });
    this.statusBadge = h("span", { class: "badge", dataset: { testid: "conversation-status" } });

    this.assignSelect = h("select", { class: "field field-sm", id: "assign-select", dataset: { testid: "assign-select" } });
    this.assignSelect.addEventListener("change", () => this.#assign());
    this.prioritySelect = h("select", { class: "field field-sm", id: "priority-select", dataset: { testid: "priority-select" } },
      ...choices("priority").map(([value, label]) => h("option", { value }, label)),
    );
    this.prioritySelect.addEventListener("change", () => this.#act("priority", { priority: Number(this.prioritySelect.value) }));

    this.resolveButton = h("button", { type: "button", class: "btn btn-sm btn-success", dataset: { testid: "resolve-button" }, onclick: () => this.#resolveOrReopen() });
    this.pendingButton = h("button", { type: "button", class: "btn btn-sm", dataset: { testid: "pending-button" }, onclick: () => this.#pendingOrOpen() });
    this.snoozeButton = h("button", {
      type: "button",
      class: "btn btn-sm",
      "aria-haspopup": "menu",
      "aria-expanded": "false",
      dataset: { testid: "snooze-button" },
      onclick: () => this.#toggleSnooze(),
    }, t("snooze"), icon("chevron", "icon icon-sm"));
    this.snoozeMenu = h("div", { class: "popover menu", role: "menu", hidden: true, dataset: { testid: "snooze-menu" } });

    this.labelsRow = h("div", { class: "labels-row", dataset: { testid: "conversation-labels" } });
    this.labelsButton = h("button", {
      type: "button",
      class: "btn btn-sm btn-ghost",
      "aria-haspopup": "dialog",
      "aria-expanded": "false",
      dataset: { testid: "labels-button" },
      onclick: () => this.#toggleLabels(),
    }, t("edit_labels"));
    this.labelsPopover = h("div", { class: "popover labels-popover", role: "dialog", "aria-label": t("labels"), hidden: true });

    this.error = h("div", { class: "inline-error", role: "alert", hidden: true, dataset: { testid: "conversation-error" } });

    this.header = h(
      "header",
      { class: "conv-header" },
      h(
        "div",
        { class: "conv-header-top" },
        h("div", { class: "conv-heading" }, h("div", { class: "conv-title-row" }, this.title, this.statusBadge), this.subtitle),
        h(
          "div",
          { class: "conv-actions" },
          h("label", { class: "inline-field" }, h("span", { class: "filter-label" }, t("assignee")), this.assignSelect),
          h("label", { class: "inline-field" }, h("span", { class: "filter-label" }, t("priority")), this.prioritySelect),
        ),
      ),
      h(
        "div",
        { class: "conv-header-bottom" },
        h("div", { class: "labels-wrap" }, this.labelsRow, h("div", { class: "popover-anchor" }, this.labelsButton, this.labelsPopover)),
        h("div", { class: "status-actions" }, this.pendingButton, h("div", { class: "popover-anchor" }, this.snoozeButton, this.snoozeMenu), this.resolveButton),
      ),
      this.error,
    );

    // Timeline
    this.timeline = h("div", {
      class: "timeline",
      role: "log",
      "aria-live": "polite",
      "aria-relevant": "additions",
      "aria-label": t("timeline"),
      tabindex: "0",
      dataset: { testid: "timeline" },
    });
    this.timeline.addEventListener("scroll", () => {
      if (this.#nearBottom()) this.newPill.hidden = true;
    });
    this.newPill = h("button", { type: "button", class: "new-pill", hidden: true, onclick: () => this.#scrollToBottom(true) }, t("new_messages"), " ↓");
    this.typing = h("div", { class: "typing", "aria-live": "polite", dataset: { testid: "typing-indicator" } });

    this.composer = new Composer({
      store: this.store,
      socket: this.socket,
      onSent: (item, kind) => (kind === "note" ? this.addNote(item) : this.addMessage(item)),
      conversationId: () => this.currentId,
    });

    this.body = h(
      "section",
      { class: "conv-view", "aria-labelledby": "conversation-title" },
      this.header,
      h("div", { class: "timeline-wrap" }, this.timeline, this.newPill),
      this.typing,
      this.composer.el,
    );
    this.placeholder = h("div", { class: "conv-placeholder" });
  }

  showEmpty(message) {
    this.conversation = null;
    this.#stopTypingDisplay();
    setChildren(
      this.placeholder,
      h("div", { class: "placeholder-icon" }, icon("chat", "icon icon-xl")),
      h("h2", null, message || t("select_conversation")),
      h("p", null, t("select_conversation_hint")),
    );
    setChildren(this.root, this.placeholder);
  }

  // --- Opening --------------------------------------------------------------------------------

  async open(id) {
    const token = ++this.openToken;
    this.composer.leave();
    this.#closePopovers();
    this.#stopTypingDisplay();
    this.root.classList.add("is-loading");
    try {
      const [conversation, messages, notes] = await Promise.all([
        api(`/conversations/${id}/`),
        api(`/conversations/${id}/messages/`),
        api(`/conversations/${id}/notes/`),
      ]);
      if (token !== this.openToken) return;
      this.conversation = conversation;
      setChildren(this.root, this.body);
      this.error.hidden = true;
      this.#renderHeader();
      this.#renderTimeline(messages, notes);
      this.composer.enter(conversation);
      this.socket.send({ op: "watch", conversation_id: id });
      this.onPatient(conversation.patient.id, conversation.id);
      this.#loadAssignable(token);
      this.markRead();
    } catch (error) {
      if (token !== this.openToken) return;
      this.showEmpty(error.status === 404 ? t("conversation_not_found") : t("conversation_failed", { error: error.message }));
    } finally {
      if (token === this.openToken) this.root.classList.remove("is-loading");
    }
  }

  close() {
    this.openToken++;
    this.composer.leave();
    this.socket.send({ op: "watch", conversation_id: null });
    this.showEmpty();
  }

  /** After a reconnect the server has forgotten what we watched. */
  rewatch() {
    if (this.currentId) this.socket.send({ op: "watch", conversation_id: this.currentId });
  }

  async markRead() {
    const id = this.currentId;
    if (!id) return;
    try {
      const fresh = await api(`/conversations/${id}/read/`, { method: "POST" });
      if (fresh) this.onConversation(fresh);
    } catch {
      /* not worth interrupting anyone for */
    }
  }

  #scheduleRead() {
    clearTimeout(this.readTimer);
    if (document.visibilityState !== "visible") return;
    this.readTimer = setTimeout(() => this.markRead(), 800);
  }

  // --- Header ---------------------------------------------------------------------------------

  #renderHeader() {
    const c = this.conversation;
    setChildren(this.title, patientName(c.patient));
    this.title.append(" ");
    const vip = vipBadge(c.patient.vip_tier);
    if (vip) this.title.append(vip);
    setChildren(this.subtitle, c.inbox.name, " · ", choice("channel", c.inbox.channel_type), " · ", t("conversation_number", { id: c.id }));
    this.statusBadge.className = `badge badge-status-${c.status}`;
    this.statusBadge.textContent = choice("status", c.status);
    if (c.status === "snoozed" && c.snoozed_until) {
      this.statusBadge.textContent = t("snoozed_until", { time: fullTime(c.snoozed_until) });
    }
    this.prioritySelect.value = String(c.priority);
    this.#renderAssignOptions();

    const resolved = c.status === "resolved";
    this.resolveButton.textContent = resolved ? t("reopen") : t("resolve");
    this.resolveButton.dataset.action = resolved ? "reopen" : "resolve";
    this.resolveButton.className = `btn btn-sm ${resolved ? "" : "btn-success"}`;
    this.pendingButton.hidden = resolved;
    this.pendingButton.textContent = c.status === "open" ? t("mark_pending") : t("mark_open");
    this.pendingButton.dataset.action = c.status === "open" ? "pending" : "reopen";
    this.snoozeButton.hidden = resolved;

    setChildren(
      this.labelsRow,
      (c.labels || []).length ? c.labels.map((l) => labelChip(l)) : h("span", { class: "muted" }, t("no_labels")),
    );
  }

  async #loadAssignable(token) {
    try {
      const people = await api(`/conversations/${this.currentId}/assignable/`);
      if (token !== this.openToken) return;
      this.assignable = people;
      this.#renderAssignOptions();
    } catch (error) {
      if (token === this.openToken) this.#showError(error);
    }
  }

  #renderAssignOptions() {
    const c = this.conversation;
    const people = [...(this.assignable || [])];
    if (c.assignee && !people.some((p) => p.id === c.assignee.id)) {
      people.unshift({ id: c.assignee.id, name: c.assignee.name, availability: "" });
    }
    const me = this.store.me.id;
    setChildren(
      this.assignSelect,
      h("option", { value: "" }, c.assignee ? t("unassign") : t("unassigned")),
      ...people.map((p) =>
        h(
          "option",
          { value: String(p.id) },
          p.id === me ? t("name_you", { name: p.name }) : p.name,
          p.availability ? ` · ${choice("availability", p.availability)}` : "",
        ),
      ),
    );
    this.assignSelect.value = c.assignee ? String(c.assignee.id) : "";
  }

  async #assign() {
    const value = this.assignSelect.value;
    await this.#act("assign", { assignee_id: value ? Number(value) : null });
  }

  async #resolveOrReopen() {
    await this.#act(this.conversation.status === "resolved" ? "reopen" : "resolve");
  }

  async #pendingOrOpen() {
    await this.#act(this.conversation.status === "open" ? "pending" : "reopen");
  }

  async #act(action, body) {
    const id = this.currentId;
    if (!id) return;
    this.error.hidden = true;
    this.header.classList.add("is-busy");
    try {
      const fresh = await api(`/conversations/${id}/${action}/`, { method: "POST", body: body ?? {} });
      if (fresh && fresh.id === this.currentId) {
        this.updateConversation(fresh);
        this.onConversation(fresh);
      }
      return fresh;
    } catch (error) {
      this.#showError(error);
      // Put the controls back to what the server has.
      if (this.conversation?.id === id) this.#renderHeader();
      return null;
    } finally {
      this.header.classList.remove("is-busy");
    }
  }

  #showError(error) {
    setChildren(this.error, ...(error.messages || [error.message]).map((m) => h("div", null, m)));
    this.error.hidden = false;
  }

  /** A newer copy of the open conversation (our action, or a conversation.update event). */
  updateConversation(c) {
    if (!this.conversation || c.id !== this.conversation.id) return;
    this.conversation = c;
    this.#renderHeader();
    this.composer.updateConversation(c);
  }

  // --- Snooze ---------------------------------------------------------------------------------

  #snoozeOptions() {
    const now = new Date();
    const p = zonedParts(now);
    const daysToMonday = ((8 - p.weekday) % 7) || 7;
    return [
      { key: "snooze_1h", until: new Date(now.getTime() + 3600 * 1000) },
      { key: "snooze_tomorrow", until: zonedWallTime(p.year, p.month, p.day + 1, 9, 0) },
      { key: "snooze_next_week", until: zonedWallTime(p.year, p.month, p.day + daysToMonday, 9, 0) },
    ];
  }

  #toggleSnooze() {
    if (!this.snoozeMenu.hidden) return this.#closePopovers();
    this.#closePopovers();
    setChildren(
      this.snoozeMenu,
      ...this.#snoozeOptions().map((option) =>
        h(
          "button",
          {
            type: "button",
            role: "menuitem",
            class: "menu-item",
            dataset: { testid: option.key.replace("_", "-") },
            onclick: async () => {
              this.#closePopovers();
              await this.#act("snooze", { until: option.until.toISOString() });
            },
          },
          h("span", null, t(option.key)),
          h("span", { class: "menu-hint" }, fullTime(option.until.toISOString())),
        ),
      ),
    );
    this.snoozeMenu.hidden = false;
    this.snoozeButton.setAttribute("aria-expanded", "true");
    this.snoozeMenu.addEventListener("keydown", this.#menuKeys);
    this.snoozeMenu.querySelector("button")?.focus();
    this.stopDismiss = dismissOnOutside(this.snoozeMenu, this.snoozeButton, () => this.#closePopovers());
  }

  #menuKeys = (event) => {
    const items = [...this.snoozeMenu.querySelectorAll('[role="menuitem"]')];
    const index = items.indexOf(document.activeElement);
    if (event.key === "ArrowDown") {
      event.preventDefault();
      items[(index + 1) % items.length]?.focus();
    } else if (event.key === "ArrowUp") {
      event.preventDefault();
      items[(index - 1 + items.length) % items.length]?.focus();
    }
  };

  #closePopovers() {
    this.stopDismiss?.();
    this.stopDismiss = null;
    this.snoozeMenu.hidden = true;
    this.labelsPopover.hidden = true;
    this.snoozeButton.setAttribute("aria-expanded", "false");
    this.labelsButton.setAttribute("aria-expanded", "false");
  }

  // --- Labels ---------------------------------------------------------------------------------

  #toggleLabels() {
    if (!this.labelsPopover.hidden) return this.#closePopovers();
    this.#closePopovers();
    this.#renderLabelsEditor();
    this.labelsPopover.hidden = false;
    this.labelsButton.setAttribute("aria-expanded", "true");
    this.labelsPopover.querySelector("input")?.focus();
    this.stopDismiss = dismissOnOutside(this.labelsPopover, this.labelsButton, () => this.#closePopovers());
  }

  #renderLabelsEditor() {
    const current = new Set((this.conversation.labels || []).map((l) => l.name));
    const known = [...this.store.labels];
    for (const l of this.conversation.labels || []) if (!known.some((k) => k.name === l.name)) known.push(l);
    const save = async (names) => {
      const fresh = await this.#act("labels", { labels: names });
      if (fresh) {
        for (const l of fresh.labels) if (!this.store.labels.some((k) => k.name === l.name)) this.store.addLabel(l);
        if (!this.labelsPopover.hidden) {
          const focused = document.activeElement?.dataset?.label;
          this.#renderLabelsEditor();
          const again = focused && [...this.labelsPopover.querySelectorAll("input[data-label]")].find((i) => i.dataset.label === focused);
          (again || this.labelsPopover.querySelector("input[type=text]"))?.focus();
        }
      }
    };
    const input = h("input", { class: "field field-sm", type: "text", maxlength: "60", placeholder: t("new_label"), "aria-label": t("new_label") });
    const add = (event) => {
      event.preventDefault();
      const name = input.value.trim();
      if (!name) return;
      current.add(name);
      save([...current]);
    };
    setChildren(
      this.labelsPopover,
      h("div", { class: "popover-title" }, t("labels")),
      h(
        "div",
        { class: "label-options" },
        known.map((label) =>
          h(
            "label",
            { class: "label-option" },
            h("input", {
              type: "checkbox",
              dataset: { label: label.name },
              checked: current.has(label.name),
              onchange: (event) => {
                if (event.target.checked) current.add(label.name);
                else current.delete(label.name);
                save([...current]);
              },
            }),
            h("span", { class: "label-dot", style: { "--label-color": safeColor(label.color) }, "aria-hidden": "true" }),
            label.name,
          ),
        ),
      ),
      h("form", { class: "label-new", onsubmit: add }, input, h("button", { type: "submit", class: "btn btn-sm" }, t("add"))),
    );
  }

  // --- Timeline -------------------------------------------------------------------------------

  #renderTimeline(messages, notes) {
    clear(this.timeline);
    this.items = [];
    this.itemKeys.clear();
    this.newPill.hidden = true;
    const all = [
      ...messages.map((m) => ({ kind: "m", id: m.id, at: m.created_at, data: m })),
      ...notes.map((n) => ({ kind: "n", id: n.id, at: n.created_at, data: n })),
    ].sort(byTime);
    if (!all.length) {
      this.timeline.append(h("div", { class: "empty timeline-empty" }, t("no_messages_yet")));
    }
    let lastDay = null;
    for (const item of all) {
      const day = dayKey(new Date(item.at));
      if (day !== lastDay) {
        this.timeline.append(this.#daySeparator(item.at, day));
        lastDay = day;
      }
      item.el = item.kind === "m" ? this.#messageEl(item.data) : this.#noteEl(item.data);
      this.timeline.append(item.el);
      this.items.push(item);
      this.itemKeys.set(`${item.kind}:${item.id}`, item);
    }
    this.#scrollToBottom(false);
  }

  #daySeparator(iso, day) {
    return h("div", { class: "day-sep", dataset: { day }, role: "separator" }, h("span", null, dayHeading(iso)));
  }

  #insert(kind, data) {
    const key = `${kind}:${data.id}`;
    const existing = this.itemKeys.get(key);
    if (existing && kind === "m" && statusRank(existing.data.status) > statusRank(data.status)) {
      // The POST answer can arrive after the socket already told us about delivery: keep the newer status.
      data = { ...data, status: existing.data.status, error_code: existing.data.error_code, error_message: existing.data.error_message };
    }
    const el = kind === "m" ? this.#messageEl(data) : this.#noteEl(data);
    if (existing) {
      existing.el.replaceWith(el);
      existing.el = el;
      existing.data = data;
      return;
    }
    this.timeline.querySelector(".timeline-empty")?.remove();
    const stick = this.#nearBottom();
    const item = { kind, id: data.id, at: data.created_at, data, el };
    // Find the position: almost always the end.
    let index = this.items.length;
    while (index > 0 && byTime(this.items[index - 1], item) > 0) index--;
    const day = dayKey(new Date(item.at));
    const before = this.items[index]; // insert before this item (or at the end)
    const prev = this.items[index - 1];
    if (before) {
      before.el.before(el);
      if (!prev || dayKey(new Date(prev.at)) !== day) {
        // New day boundary in the middle: rare; a full re-render keeps separators right.
        const msgs = this.items.filter((i) => i.kind === "m").map((i) => i.data);
        const nts = this.items.filter((i) => i.kind === "n").map((i) => i.data);
        (kind === "m" ? msgs : nts).push(data);
        this.#renderTimeline(msgs, nts);
        return;
      }
    } else {
      if (!prev || dayKey(new Date(prev.at)) !== day) this.timeline.append(this.#daySeparator(item.at, day));
      this.timeline.append(el);
    }
    this.items.splice(index, 0, item);
    this.itemKeys.set(key, item);
    el.classList.add("is-new");
    if (stick || (kind === "m" && data.direction === "out") || kind === "n") this.#scrollToBottom(true);
    else this.newPill.hidden = false;
  }

  addMessage(message) {
    if (message.conversation_id !== this.currentId) return;
    this.#insert("m", message);
    if (message.direction === "in") {
      this.#clearTyper("patient");
      this.#scheduleRead();
    }
  }

  addNote(note) {
    if (note.conversation_id !== this.currentId) return;
    this.#insert("n", note);
  }

  updateMessageStatus(event) {
    if (event.conversation_id !== this.currentId) return;
    const item = this.itemKeys.get(`m:${event.message_id}`);
    if (!item) return;
    const data = { ...item.data, status: event.status, error_code: event.error_code, error_message: event.error_message };
    const el = this.#messageEl(data);
    item.el.replaceWith(el);
    item.el = el;
    item.data = data;
  }

  #senderLabel(m) {
    if (m.direction === "in") return patientName(this.conversation.patient);
    if (m.author) return m.author.name;
    return choice("sender", m.sender_kind);
  }

  #messageEl(m) {
    const outbound = m.direction === "out";
    const failed = m.status === "failed" || m.status === "undelivered";
    const meta = h(
      "div",
      { class: "msg-meta" },
      h("span", { class: "msg-author" }, this.#senderLabel(m)),
      outbound && m.sender_kind !== "agent" ? h("span", { class: "badge" }, choice("sender", m.sender_kind)) : null,
      h("time", { datetime: m.created_at, title: fullTime(m.created_at) }, timeOnly(m.created_at)),
      outbound
        ? h("span", { class: `msg-status status-${m.status}`, dataset: { testid: "message-status" } }, statusIcon(m.status), choice("message_status", m.status))
        : null,
    );
    const bubble = h("div", { class: "bubble" }, h("div", { class: "msg-text" }, m.body));
    if (m.attachments && m.attachments.length) {
      // Images on this platform (a web chat visitor's upload) as thumbnails from their staff-only URL;
      // anything else (e.g. an MMS on the provider's servers) is only counted.
      const images = m.attachments.filter((a) => a && a.kind === "image" && typeof a.url === "string" && /^\/(?!\/)/.test(a.url));
      for (const a of images) {
        bubble.append(
          h(
            "a",
            { class: "msg-image", href: a.url, target: "_blank", rel: "noopener", dataset: { testid: "message-image" } },
            h("img", { src: a.url, alt: t("image_attachment"), loading: "lazy", width: a.width || null, height: a.height || null }),
          ),
        );
      }
      const others = m.attachments.length - images.length;
      if (others) bubble.append(h("div", { class: "msg-attachments" }, t("n_attachments", { n: others })));
    }
    const error = failed
      ? h("div", { class: "msg-error", role: "note" }, t("not_delivered"), m.error_message ? `: ${m.error_message}` : "", m.error_code ? ` (${m.error_code})` : "")
      : null;
    const flags = (m.flags || []).map((flag) =>
      h(
        "div",
        { class: "msg-flag", dataset: { testid: "message-flag", flag } },
        icon(flag.startsWith("sent_by_") || flag === "webchat_reply" ? "check" : "alert", "icon icon-sm"),
        h("span", null, flagText(flag)),
        flag === "likely_opt_out" && m.direction === "in"
          ? h("button", { type: "button", class: "btn btn-sm", dataset: { testid: "record-opt-out" }, onclick: (event) => this.#recordOptOut(m, event.currentTarget) }, t("record_opt_out"))
          : null,
      ),
    );
    return h(
      "article",
      {
        class: `msg ${outbound ? "msg-out" : "msg-in"}${failed ? " is-failed" : ""}`,
        dataset: { testid: "message", messageId: m.id, status: m.status, direction: m.direction },
        "aria-label": `${this.#senderLabel(m)}, ${fullTime(m.created_at)}`,
      },
      bubble,
      meta,
      error,
      flags,
    );
  }

  async #recordOptOut(message, button) {
    const c = this.conversation;
    if (!c) return;
    button.disabled = true;
    this.error.hidden = true;
    try {
      const patient = await api(`/patients/${c.patient.id}/consent/`, {
        method: "POST",
        body: { purpose: "marketing", status: "opted_out", channel: c.inbox.channel_type, message_id: message.id },
      });
      button.replaceWith(h("span", { class: "msg-flag-done" }, t("opt_out_recorded")));
      this.onPatientData?.(patient);
    } catch (error) {
      button.disabled = false;
      this.#showError(error);
    }
  }

  #noteEl(n) {
    return h(
      "article",
      { class: "note", dataset: { testid: "note", noteId: n.id }, "aria-label": t("private_note_by", { name: n.author?.name || "" }) },
      h(
        "div",
        { class: "note-head" },
        h("span", { class: "note-tag" }, icon("lock", "icon icon-sm"), t("private_note")),
        h("span", { class: "note-author" }, n.author?.name || ""),
        h("time", { datetime: n.created_at, title: fullTime(n.created_at) }, timeOnly(n.created_at)),
      ),
      h("div", { class: "note-body" }, n.body),
    );
  }

  #nearBottom() {
    const el = this.timeline;
    return el.scrollHeight - el.scrollTop - el.clientHeight < 80;
  }

  #scrollToBottom(smooth) {
    this.newPill.hidden = true;
    requestAnimationFrame(() => {
      this.timeline.scrollTo({ top: this.timeline.scrollHeight, behavior: smooth ? "smooth" : "auto" });
    });
  }

  // --- Typing ---------------------------------------------------------------------------------

  onTyping(frame) {
    if (frame.conversation_id !== this.currentId) return;
    const who = frame.who === "patient" ? "patient" : `u${frame.user_id}`;
    if (frame.user_id === this.store.me.id && frame.who !== "patient") return;
    if (frame.state === "stop") {
      this.#clearTyper(who);
      return;
    }
    const name = frame.who === "patient" ? patientName(this.conversation.patient) : frame.name || t("someone");
    const existing = this.typers.get(who);
    if (existing) clearTimeout(existing.timer);
    this.typers.set(who, { name, timer: setTimeout(() => this.#clearTyper(who), TYPING_TIMEOUT_MS) });
    this.#renderTyping();
  }

  #clearTyper(who) {
    const existing = this.typers.get(who);
    if (!existing) return;
    clearTimeout(existing.timer);
    this.typers.delete(who);
    this.#renderTyping();
  }

  #stopTypingDisplay() {
    for (const { timer } of this.typers.values()) clearTimeout(timer);
    this.typers.clear();
    this.#renderTyping();
  }

  #renderTyping() {
    const names = [...this.typers.values()].map((v) => v.name);
    this.typing.classList.toggle("is-active", names.length > 0);
    if (!names.length) {
      this.typing.textContent = "";
      return;
    }
    setChildren(
      this.typing,
      h("span", { class: "typing-dots", "aria-hidden": "true" }, h("i"), h("i"), h("i")),
      names.length === 1 ? t("is_typing", { name: names[0] }) : t("are_typing", { names: names.join(", ") }),
    );
  }

  /** Time-stamps and relative headings age; redraw them now and then. */
  refreshTimes() {
    for (const sep of this.timeline.querySelectorAll(".day-sep")) {
      const item = this.items.find((i) => dayKey(new Date(i.at)) === sep.dataset.day);
      if (item) setChildren(sep, h("span", null, dayHeading(item.at)));
    }
  }
}

const STATUS_RANK = { received: 0, queued: 0, sending: 1, sent: 2, delivered: 3, undelivered: 3, failed: 3, read: 4 };
function statusRank(status) {
  return STATUS_RANK[status] ?? -1;
}

function flagText(flag) {
  if (flag === "likely_opt_out") return t("flag_likely_opt_out");
  // The widget was closed when the agent replied, so the reply went to the contact the visitor gave.
  if (flag === "sent_by_sms") return t("flag_sent_by_sms");
  if (flag === "sent_by_email") return t("flag_sent_by_email");
  // This SMS or email is that reply, sent on here; the chat shows its status too.
  if (flag === "webchat_reply") return t("flag_webchat_reply");
  return flag;
}

function statusIcon(status) {
  const name = {
    queued: "clock",
    sending: "clock",
    sent: "check",
    delivered: "checks",
    read: "checks",
    failed: "alert",
    undelivered: "alert",
  }[status];
  return name ? icon(name, "icon icon-sm") : null;
}
