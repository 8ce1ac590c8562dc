// The patient's phone for the demo: poll the thread, send as the patient. Text only via textContent.

const POLL_MS = 1500;
const strings = JSON.parse(document.getElementById("sim-i18n").textContent);
const $ = (id) => document.getElementById(id);

const inboxSelect = $("sim-inbox");
const phoneInput = $("sim-phone");
const nameInput = $("sim-name");
const phoneError = $("sim-phone-error");
const thread = $("sim-thread");
const numberLine = $("sim-number");
const contact = $("sim-contact");
const compose = $("sim-compose");
const body = $("sim-body");
const sendButton = $("sim-send");
const sendError = $("sim-error");

const locale = (strings.lang || "en").startsWith("zh") ? "zh-CN" : "en-GB";
const timeFormat = new Intl.DateTimeFormat(locale, {
  timeZone: strings.timeZone || undefined,
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});

let lastRendered = "";
let currentPhone = ""; // the normalized number whose thread is shown
let pollTimer = null;
let pollToken = 0;

function csrfToken() {
  return document.querySelector("#sim-settings [name=csrfmiddlewaretoken]")?.value || "";
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// --- Remember the demo settings between visits -------------------------------------------------

function restore() {
  try {
    const saved = JSON.parse(localStorage.getItem("simulator.phone") || "{}");
    if (saved.phone) phoneInput.value = saved.phone;
    if (saved.name) nameInput.value = saved.name;
    if (saved.inbox && inboxSelect && [...inboxSelect.options].some((o) => o.value === saved.inbox)) inboxSelect.value = saved.inbox;
  } catch {
    /* ignore */
  }
}

function remember() {
  try {
    localStorage.setItem(
      "simulator.phone",
      JSON.stringify({ phone: phoneInput.value, name: nameInput.value, inbox: inboxSelect?.value || "" }),
    );
  } catch {
    /* ignore */
  }
}

// --- Thread ------------------------------------------------------------------------------------

function showEmpty(text) {
  lastRendered = "";
  thread.replaceChildren(el("p", "phone-empty", text));
}

function render(messages) {
  const key = JSON.stringify(messages);
  if (key === lastRendered) return;
  const stick = thread.scrollHeight - thread.scrollTop - thread.clientHeight < 60 || !lastRendered;
  lastRendered = key;
  if (!messages.length) {
    thread.replaceChildren(el("p", "phone-empty", strings.empty_thread));
    return;
  }
  const nodes = messages.map((m) => {
    const mine = m.from === "patient";
    const row = el("div", `sim-msg ${mine ? "sim-msg-out" : "sim-msg-in"}`);
    row.dataset.testid = "sim-message";
    row.dataset.from = m.from;
    if (m.status) row.dataset.status = m.status;
    row.append(el("div", "sim-bubble", m.body));
    const meta = el("div", "sim-meta");
    meta.append(el("span", null, mine ? strings.you : strings.hospital));
    meta.append(el("time", null, timeFormat.format(new Date(m.at))));
    if (!mine && m.status) {
      meta.append(el("span", `sim-status sim-status-${m.status}`, strings.status[m.status] || m.status));
    }
    row.append(meta);
    return row;
  });
  thread.replaceChildren(...nodes);
  if (stick) thread.scrollTop = thread.scrollHeight;
}

// The top of the screen names the hospital; the number under it is this phone's own.
function showNumber(phone) {
  currentPhone = phone;
  numberLine.textContent = phone ? strings.this_phone.replace("{phone}", phone) : "";
}

async function poll() {
  clearTimeout(pollTimer);
  const phone = phoneInput.value.trim();
  const token = ++pollToken;
  if (!phone) {
    showNumber("");
    phoneError.hidden = true;
    showEmpty(strings.empty_phone);
    return;
  }
  try {
    const response = await fetch(`/simulator/threads/?phone=${encodeURIComponent(phone)}`, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({}));
    if (token !== pollToken) return;
    if (!response.ok) {
      phoneError.textContent = data.error || `HTTP ${response.status}`;
      phoneError.hidden = false;
      phoneInput.setAttribute("aria-invalid", "true");
      showNumber("");
      showEmpty(strings.empty_phone);
    } else {
      phoneError.hidden = true;
      phoneInput.removeAttribute("aria-invalid");
      showNumber(data.phone);
      render(data.messages || []);
    }
  } catch {
    /* the server restarting: keep the last view and try again */
  } finally {
    if (token === pollToken) pollTimer = setTimeout(poll, POLL_MS);
  }
}

// --- Recent phones (numbers the hospital has texted) ---------------------------------------------

const recent = $("sim-recent");
const recentList = $("sim-recent-list");

async function loadRecent() {
  try {
    const response = await fetch("/simulator/phones/", { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) return;
    const data = await response.json();
    const phones = (data.phones || []).slice(0, 8);
    recent.hidden = phones.length === 0;
    recentList.replaceChildren(
      ...phones.map((item) => {
        const button = el("button", "sim-recent-item", item.phone);
        button.type = "button";
        button.setAttribute("aria-label", strings.use_phone.replace("{phone}", item.phone));
        button.setAttribute("aria-pressed", String(item.phone === currentPhone));
        button.addEventListener("click", () => {
          phoneInput.value = item.phone;
          remember();
          lastRendered = "";
          poll().then(loadRecent);
        });
        const li = el("li");
        li.append(button);
        return li;
      }),
    );
  } catch {
    /* optional */
  }
}

// --- Sending -----------------------------------------------------------------------------------

function showSendError(text) {
  sendError.textContent = text;
  sendError.hidden = false;
}

async function send(event) {
  event.preventDefault();
  sendError.hidden = true;
  const text = body.value.trim();
  if (!phoneInput.value.trim()) {
    showSendError(strings.need_phone);
    phoneInput.focus();
    return;
  }
  if (!text) {
    showSendError(strings.need_body);
    body.focus();
    return;
  }
  const form = new FormData();
  form.set("inbox", inboxSelect?.value || "");
  form.set("from", phoneInput.value.trim());
  form.set("name", nameInput.value.trim());
  form.set("body", text);
  sendButton.disabled = true;
  try {
    const response = await fetch("/simulator/send/", {
      method: "POST",
      body: form,
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      showSendError(strings.send_failed.replace("{error}", data.error || `HTTP ${response.status}`));
      return;
    }
    body.value = "";
    autosize();
    remember();
    poll();
    setTimeout(loadRecent, 1500);
  } catch {
    showSendError(strings.network_error);
  } finally {
    sendButton.disabled = false;
    body.focus();
  }
}

function autosize() {
  body.style.height = "auto";
  body.style.height = `${Math.min(body.scrollHeight, 120)}px`;
}

// --- Wiring ------------------------------------------------------------------------------------

restore();
if (inboxSelect) contact.textContent = inboxSelect.selectedOptions[0]?.textContent || strings.hospital;
inboxSelect?.addEventListener("change", () => {
  contact.textContent = inboxSelect.selectedOptions[0]?.textContent || strings.hospital;
  remember();
});
let phoneTimer = null;
phoneInput.addEventListener("input", () => {
  clearTimeout(phoneTimer);
  phoneTimer = setTimeout(() => {
    remember();
    lastRendered = "";
    poll();
  }, 400);
});
nameInput.addEventListener("change", remember);
compose.addEventListener("submit", send);
body.addEventListener("input", autosize);
body.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    compose.requestSubmit();
  }
});
document.getElementById("sim-settings").addEventListener("submit", (event) => event.preventDefault());
poll().then(loadRecent);
setInterval(loadRecent, 10000);
