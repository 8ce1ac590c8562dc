// The reply box: reply or private note, canned responses ("/" + short code or the picker),
// Ctrl/Cmd+Enter to send, typing signals to colleagues watching the same conversation.

import { api, ApiError, qs } from "./api.js";
import { h, setChildren, dismissOnOutside, icon } from "./dom.js";
import { t } from "./i18n.js";

const TYPING_REPEAT_MS = 3000;
const TYPING_IDLE_MS = 4000;
const SEGMENTS_DEBOUNCE_MS = 250;
const SLASH = /(^|\s)\/([\w-]*)$/;
const IS_MAC = /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent);

export class Composer {
  constructor({ store, socket, onSent, conversationId }) {
    this.store = store;
    this.socket = socket;
    this.onSent = onSent;
    this.conversationId = conversationId;
    this.drafts = new Map();
    // The last message sent without a sure answer: {id, body, key}; sending the same text again reuses the key.
    this.pendingSend = null;
    this.typingSentAt = 0;
    this.typingIdle = null;
    this.canned = { open: false, items: [], active: 0, mode: null, token: 0 };
    this.sending = false;
    this.sms = false; // the open conversation is on an SMS inbox: show the segment counter
    this.segments = { timer: null, token: 0, controller: null };
    this.#build();
  }

  #build() {
    this.input = h("textarea", {
      class: "composer-input",
      id: "composer-input",
      rows: "3",
      placeholder: t("reply_placeholder"),
      "aria-label": t("reply"),
      "aria-describedby": "composer-hint sms-segments",
      "aria-autocomplete": "list",
      "aria-controls": "canned-list",
      dataset: { testid: "composer-input" },
    });
    this.input.addEventListener("keydown", (event) => this.#keys(event));
    this.input.addEventListener("input", () => this.#onInput());
    this.input.addEventListener("blur", () => this.#typingStop());

    this.noteToggle = h("input", {
      type: "checkbox",
      class: "switch",
      id: "note-toggle",
      role: "switch",
      dataset: { testid: "note-toggle" },
    });
    this.noteToggle.addEventListener("change", () => this.#applyMode());

    this.cannedButton = h(
      "button",
      {
        type: "button",
        class: "btn btn-sm btn-ghost",
        "aria-haspopup": "listbox",
        "aria-expanded": "false",
        dataset: { testid: "canned-button" },
        onclick: () => (this.canned.open ? this.#closeCanned() : this.#openPicker()),
      },
      icon("snippet", "icon icon-sm"),
      t("canned_responses"),
    );
    this.cannedSearch = h("input", {
      type: "search",
      class: "field field-sm",
      placeholder: t("search_canned"),
      "aria-label": t("search_canned"),
      "aria-controls": "canned-list",
    });
    this.cannedSearch.addEventListener("input", () => this.#fetchCanned(this.cannedSearch.value));
    this.cannedSearch.addEventListener("keydown", (event) => this.#cannedKeys(event));
    this.cannedList = h("ul", { class: "canned-list", id: "canned-list", role: "listbox", "aria-label": t("canned_responses") });
    this.cannedEmpty = h("div", { class: "canned-empty", hidden: true }, t("no_canned"));
    this.cannedPopover = h(
      "div",
      { class: "popover canned-popover", hidden: true, dataset: { testid: "canned-popover" } },
      h("div", { class: "canned-search" }, this.cannedSearch),
      this.cannedList,
      this.cannedEmpty,
    );

    this.sendButton = h("button", { type: "submit", class: "btn btn-primary", dataset: { testid: "send-button" } }, icon("send", "icon icon-sm"), h("span", { class: "send-label" }, t("send")));
    this.error = h("div", { class: "inline-error composer-error", role: "alert", hidden: true, dataset: { testid: "composer-error" } });
    this.modeNote = h("span", { class: "mode-note", hidden: true }, icon("lock", "icon icon-sm"), t("note_visibility"));
    // "12 characters · 1 segment · GSM-7": what an SMS reply costs, from POST /api/v1/sms/segments/.
    this.segmentCounter = h("span", { class: "sms-segments", id: "sms-segments", hidden: true, dataset: { testid: "sms-segments" } });

    this.el = h(
      "form",
      { class: "composer", "aria-label": t("reply"), onsubmit: (event) => (event.preventDefault(), this.send()) },
      this.cannedPopover,
      h(
        "div",
        { class: "composer-top" },
        h("label", { class: "switch-label", for: "note-toggle" }, this.noteToggle, h("span", null, t("private_note"))),
        this.modeNote,
      ),
      this.input,
      this.error,
      h(
        "div",
        { class: "composer-bar" },
        this.cannedButton,
        this.segmentCounter,
        h("span", { class: "composer-hint", id: "composer-hint" }, t("send_hint", { key: IS_MAC ? "⌘" : "Ctrl" })),
        this.sendButton,
      ),
    );
  }

  // --- Conversation switching -----------------------------------------------------------------

  enter(conversation) {
    this.current = conversation.id;
    this.sms = conversation.inbox?.channel_type === "sms";
    const draft = this.drafts.get(conversation.id) || { text: "", note: false };
    this.input.value = draft.text;
    this.noteToggle.checked = draft.note;
    this.error.hidden = true;
    this.#applyMode();
    this.#closeCanned();
  }

  leave() {
    if (this.current) {
      this.drafts.set(this.current, { text: this.input.value, note: this.noteToggle.checked });
      this.#typingStop();
    }
    this.current = null;
    this.sms = false;
    this.#resetSegments();
    this.#closeCanned();
  }

  updateConversation(conversation) {
    const sms = conversation.inbox?.channel_type === "sms";
    if (sms === this.sms) return;
    this.sms = sms;
    this.#scheduleSegments(0);
  }

  #applyMode() {
    const note = this.noteToggle.checked;
    this.el.classList.toggle("is-note", note);
    this.modeNote.hidden = !note;
    this.input.placeholder = note ? t("note_placeholder") : t("reply_placeholder");
    this.sendButton.querySelector(".send-label").textContent = note ? t("add_note") : t("send");
    if (note) this.#typingStop();
    this.#scheduleSegments(0);
  }

  // --- SMS segment counter --------------------------------------------------------------------

  #resetSegments() {
    clearTimeout(this.segments.timer);
    this.segments.controller?.abort();
    this.segments.controller = null;
    this.segments.token++;
    this.segmentCounter.hidden = true;
    this.segmentCounter.textContent = "";
    this.segmentCounter.removeAttribute("title");
    delete this.segmentCounter.dataset.encoding;
    delete this.segmentCounter.dataset.segments;
    delete this.segmentCounter.dataset.characters;
  }

  /** Recount after the agent pauses typing; replies only (notes never leave the hospital). */
  #scheduleSegments(delay = SEGMENTS_DEBOUNCE_MS) {
    const text = this.input.value;
    if (!this.sms || this.noteToggle.checked || !text.trim()) {
      this.#resetSegments();
      return;
    }
    clearTimeout(this.segments.timer);
    this.segments.timer = setTimeout(() => this.#countSegments(text), delay);
  }

  async #countSegments(text) {
    const token = ++this.segments.token;
    this.segments.controller?.abort();
    const controller = new AbortController();
    this.segments.controller = controller;
    let count;
    try {
      count = await api("/sms/segments/", { method: "POST", body: { text }, signal: controller.signal });
    } catch {
      // An estimate that cannot be fetched is left out rather than shown stale.
      if (token === this.segments.token) this.segmentCounter.hidden = true;
      return;
    }
    if (token !== this.segments.token) return;
    this.segments.controller = null;
    this.#showSegments(count);
  }

  #showSegments(count) {
    const el = this.segmentCounter;
    const characters = count.characters === 1 ? t("sms_one_character") : t("sms_n_characters", { n: count.characters });
    const segments = count.segments === 1 ? t("sms_one_segment") : t("sms_n_segments", { n: count.segments });
    el.textContent = t("sms_counter", { characters, segments, encoding: count.encoding });
    el.dataset.encoding = count.encoding;
    el.dataset.segments = String(count.segments);
    el.dataset.characters = String(count.characters);
    el.classList.toggle("is-ucs2", count.encoding === "UCS-2");
    el.classList.toggle("is-multi", count.segments > 1);
    const hints = [t("sms_remaining", { n: count.remaining, per: count.per_segment })];
    if (count.non_gsm?.length) hints.push(t("sms_non_gsm", { chars: count.non_gsm.join(" ") }));
    el.title = hints.join("\n");
    el.hidden = false;
  }

  // --- Sending --------------------------------------------------------------------------------

  async send() {
    const id = this.conversationId();
    const body = this.input.value.trim();
    if (!id || this.sending) return;
    if (!body) {
      this.#showError([t("empty_body")]);
      this.input.focus();
      return;
    }
    const note = this.noteToggle.checked;
    this.sending = true;
    this.sendButton.disabled = true;
    this.error.hidden = true;
    this.#typingStop();
    // One key per message the agent means to send: a retry of the same text to the same conversation (after an
    // answer that never came, or a 503) carries it again, and the server hands back the message it already
    // wrote instead of texting the patient twice.
    const pending = this.pendingSend;
    const key = !note && pending && pending.id === id && pending.body === body ? pending.key : newClientKey();
    if (!note) this.pendingSend = { id, body, key };
    try {
      const path = `/conversations/${id}/${note ? "notes" : "messages"}/`;
      const created = note
        ? await api(path, { method: "POST", body: { body } })
        : await sendWithRetries(path, { body, client_key: key });
      this.pendingSend = null;
      if (this.conversationId() === id) {
        this.input.value = "";
        this.drafts.delete(id);
        this.#resetSegments();
      }
      this.onSent(created, note ? "note" : "message");
    } catch (error) {
      // A refusal (4xx) will not change on a retry: the next send is a new attempt with a new key.
      if (!isTransient(error)) this.pendingSend = null;
      if (this.conversationId() === id) this.#showError(error.messages || [error.message]);
    } finally {
      this.sending = false;
      this.sendButton.disabled = false;
      if (this.conversationId() === id) this.input.focus();
    }
  }

  #showError(messages) {
    setChildren(this.error, ...messages.map((m) => h("div", null, m)));
    this.error.hidden = false;
  }

  #keys(event) {
    if (this.canned.open && this.canned.mode === "slash" && this.#cannedKeys(event)) return;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      this.send();
    }
  }

  // --- Typing signals -------------------------------------------------------------------------

  #onInput() {
    if (!this.error.hidden && this.input.value.trim()) this.error.hidden = true;
    this.#scheduleSegments();
    this.#slashCheck();
    const id = this.conversationId();
    if (!id || this.noteToggle.checked) return;
    if (!this.input.value.trim()) {
      this.#typingStop();
      return;
    }
    const now = Date.now();
    if (now - this.typingSentAt > TYPING_REPEAT_MS) {
      this.typingSentAt = now;
      this.typingFor = id;
      this.socket.send({ op: "typing", conversation_id: id, state: "start" });
    }
    clearTimeout(this.typingIdle);
    this.typingIdle = setTimeout(() => this.#typingStop(), TYPING_IDLE_MS);
  }

  #typingStop() {
    clearTimeout(this.typingIdle);
    if (this.typingSentAt && this.typingFor) {
      this.socket.send({ op: "typing", conversation_id: this.typingFor, state: "stop" });
    }
    this.typingSentAt = 0;
    this.typingFor = null;
  }

  // --- Canned responses -----------------------------------------------------------------------

  #slashCheck() {
    const before = this.input.value.slice(0, this.input.selectionStart);
    const match = SLASH.exec(before);
    if (match) {
      this.canned.mode = "slash";
      this.canned.slashStart = before.length - match[2].length - 1;
      this.#showCanned();
      this.#fetchCanned(match[2]);
    } else if (this.canned.mode === "slash") {
      this.#closeCanned();
    }
  }

  #openPicker() {
    this.canned.mode = "picker";
    this.cannedSearch.value = "";
    this.#showCanned();
    this.cannedSearch.focus();
    this.#fetchCanned("");
  }

  #showCanned() {
    if (this.canned.open) return;
    this.canned.open = true;
    this.cannedPopover.hidden = false;
    this.cannedPopover.classList.toggle("is-slash", this.canned.mode === "slash");
    this.cannedSearch.parentElement.hidden = this.canned.mode === "slash";
    this.cannedButton.setAttribute("aria-expanded", "true");
    this.input.setAttribute("aria-expanded", "true");
    this.stopDismiss = dismissOnOutside(this.cannedPopover, this.canned.mode === "slash" ? this.input : this.cannedButton, () => this.#closeCanned());
  }

  #closeCanned() {
    this.canned.open = false;
    this.canned.mode = null;
    this.canned.token++;
    this.cannedPopover.hidden = true;
    this.cannedButton.setAttribute("aria-expanded", "false");
    this.input.setAttribute("aria-expanded", "false");
    this.input.removeAttribute("aria-activedescendant");
    this.stopDismiss?.();
    this.stopDismiss = null;
  }

  async #fetchCanned(query) {
    const token = ++this.canned.token;
    clearTimeout(this.cannedTimer);
    await new Promise((resolve) => (this.cannedTimer = setTimeout(resolve, 120)));
    if (token !== this.canned.token) return;
    try {
      const items = await api(`/canned-responses/${qs({ q: query })}`);
      if (token !== this.canned.token || !this.canned.open) return;
      this.canned.items = items;
      this.canned.active = 0;
      this.#renderCanned();
    } catch (error) {
      if (token !== this.canned.token) return;
      this.canned.items = [];
      setChildren(this.cannedList);
      this.cannedEmpty.textContent = error.message;
      this.cannedEmpty.hidden = false;
    }
  }

  #renderCanned() {
    const { items, active } = this.canned;
    setChildren(
      this.cannedList,
      ...items.map((item, index) =>
        h(
          "li",
          {
            id: `canned-${item.id}`,
            role: "option",
            class: "canned-item",
            "aria-selected": String(index === active),
            dataset: { testid: "canned-item", code: item.short_code },
            onmousedown: (event) => event.preventDefault(),
            onclick: () => this.#useCanned(item),
          },
          h("span", { class: "canned-code" }, `/${item.short_code}`),
          h("span", { class: "canned-content" }, item.content),
        ),
      ),
    );
    this.cannedEmpty.textContent = t("no_canned");
    this.cannedEmpty.hidden = items.length > 0;
    const activeItem = items[active];
    if (activeItem) {
      this.input.setAttribute("aria-activedescendant", `canned-${activeItem.id}`);
      this.cannedList.children[active]?.scrollIntoView({ block: "nearest" });
    }
  }

  /** Arrow keys, Enter/Tab and Escape while the list is open. Returns true when the key was used. */
  #cannedKeys(event) {
    const { items } = this.canned;
    if (event.key === "Escape") {
      event.preventDefault();
      const mode = this.canned.mode;
      this.#closeCanned();
      (mode === "picker" ? this.cannedButton : this.input).focus();
      return true;
    }
    if (!items.length) return false;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      this.canned.active = (this.canned.active + step + items.length) % items.length;
      this.#renderCanned();
      return true;
    }
    if ((event.key === "Enter" && !event.ctrlKey && !event.metaKey) || event.key === "Tab") {
      event.preventDefault();
      this.#useCanned(items[this.canned.active]);
      return true;
    }
    return false;
  }

  #useCanned(item) {
    if (!item) return;
    const value = this.input.value;
    let start;
    let end;
    if (this.canned.mode === "slash") {
      start = this.canned.slashStart;
      end = this.input.selectionStart;
    } else {
      start = this.input.selectionStart ?? value.length;
      end = this.input.selectionEnd ?? value.length;
    }
    this.input.value = value.slice(0, start) + item.content + value.slice(end);
    const caret = start + item.content.length;
    this.#closeCanned();
    this.input.focus();
    this.input.setSelectionRange(caret, caret);
    this.#onInput();
  }
}

// --- Sending safely twice ------------------------------------------------------------------------

function newClientKey() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
}

/** No answer, or the server said "try again" (502/503/504): the message may or may not have been written. */
function isTransient(error) {
  return error instanceof ApiError && (error.status === 0 || error.status === 502 || error.status === 503 || error.status === 504);
}

const RETRY_DELAYS_MS = [1000, 2000, 4000];

/** POST a message, retrying a transient failure with the same client key: the server writes it once. */
async function sendWithRetries(path, body) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await api(path, { method: "POST", body });
    } catch (error) {
      if (!isTransient(error) || attempt >= RETRY_DELAYS_MS.length) throw error;
      await new Promise((resolve) => setTimeout(resolve, RETRY_DELAYS_MS[attempt]));
    }
  }
}
