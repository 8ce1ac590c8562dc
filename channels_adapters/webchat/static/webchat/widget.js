// The hospital web chat widget. One tag on any page:
//   <script src="https://contact.example-hospital.cn/static/webchat/widget.js" data-inbox="PUBLIC_TOKEN" async></script>
// A hospital portal may add data-user-id and data-user-hash (HMAC-SHA256 of the id with the inbox secret,
// computed on the portal's server) so the chat joins the signed-in patient's record.
//
// Everything lives in a shadow root, so the page's styles cannot reach in and ours cannot leak out; no
// globals except window.hccWebchat (for tests). Text is only ever set with textContent.
// Protocol: channels_adapters/webchat/consumer.py.
(function () {
  "use strict";

  const script = document.currentScript;
  if (!script || !script.dataset.inbox) return;
  const TOKEN = script.dataset.inbox;
  const ORIGIN = new URL(script.src, location.href).origin;
  const STORE_KEY = "hcc-webchat:" + TOKEN;
  const LANG = (document.documentElement.lang || navigator.language || "en").toLowerCase();
  const ZH = LANG.startsWith("zh");
  const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
  const PING_EVERY_MS = 25000;
  const TYPING_REPEAT_MS = 2500;
  const TYPING_IDLE_MS = 3000;
  const TYPING_SHOWN_MS = 6000;
  const IMAGE_TYPES = ["image/jpeg", "image/png", "image/webp", "image/gif"];
  let maxImageBytes = 5 * 1024 * 1024; // the server says its own limit in the welcome frame

  const STRINGS = {
    en: {
      launcher: "Chat with us",
      title: "Patient service",
      close: "Close chat",
      online: "We're online",
      offline_status: "Offline",
      offline_notice: "We are offline right now. Leave a message and we will reply by SMS or email.",
      intro: "Tell us who you are so we can answer you.",
      name: "Your name",
      phone: "Mobile phone",
      email: "Email",
      phone_or_email: "A phone number or an email address is needed.",
      consent_default: "I agree that the hospital may use these details to answer me and to contact me about this enquiry.",
      start: "Start chat",
      placeholder: "Type your message…",
      send: "Send",
      sending: "Sending…",
      sent: "Sent",
      delivered: "Delivered",
      read: "Read",
      seen: "Seen",
      failed: "Not sent",
      typing: "{name} is typing…",
      staff: "Hospital",
      you: "You",
      connecting: "Connecting…",
      reconnecting: "Reconnecting…",
      identity_refused: "We could not confirm your portal sign-in. Please sign in again.",
      rate_limited: "You are sending messages too quickly. Please wait a minute.",
      too_long: "This message is too long.",
      error: "Something went wrong. Please try again.",
      unavailable: "Chat is not available on this page.",
      attach: "Attach an image",
      image: "Image",
      image_unavailable: "Image not available",
      not_an_image: "Only JPEG, PNG, WebP or GIF images can be sent.",
      image_too_large: "This image is too large (at most {mb} MB).",
      image_failed: "The image could not be sent. Please try again.",
    },
    zh: {
      launcher: "在线咨询",
      title: "患者服务",
      close: "关闭",
      online: "客服在线",
      offline_status: "离线",
      offline_notice: "客服暂时不在线。请留言，我们会通过短信或电子邮件回复您。",
      intro: "请留下您的信息，方便我们回复您。",
      name: "您的姓名",
      phone: "手机号码",
      email: "电子邮箱",
      phone_or_email: "请填写手机号码或电子邮箱。",
      consent_default: "我同意医院使用以上信息回复我，并就本次咨询与我联系。",
      start: "开始咨询",
      placeholder: "请输入消息…",
      send: "发送",
      sending: "发送中…",
      sent: "已发送",
      delivered: "已送达",
      read: "已读",
      seen: "已读",
      failed: "发送失败",
      typing: "{name} 正在输入…",
      staff: "医院客服",
      you: "我",
      connecting: "正在连接…",
      reconnecting: "正在重新连接…",
      identity_refused: "无法确认您的门户登录身份，请重新登录。",
      rate_limited: "发送太频繁，请稍候一分钟。",
      too_long: "消息太长。",
      error: "出错了，请重试。",
      unavailable: "此页面无法使用在线咨询。",
      attach: "发送图片",
      image: "图片",
      image_unavailable: "图片无法显示",
      not_an_image: "只能发送 JPEG、PNG、WebP 或 GIF 格式的图片。",
      image_too_large: "图片太大（最大 {mb} MB）。",
      image_failed: "图片发送失败，请重试。",
    },
  };
  const S = ZH ? STRINGS.zh : STRINGS.en;
  function t(key, vars) {
    let text = S[key] || key;
    if (vars) text = text.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
    return text;
  }
  function pick(map) {
    if (!map || typeof map !== "object") return "";
    return (ZH ? map["zh-hans"] || map.zh : map.en) || map.en || "";
  }

  // --- storage ----------------------------------------------------------------------------------

  function load() {
    try {
      return JSON.parse(localStorage.getItem(STORE_KEY) || "{}") || {};
    } catch {
      return {};
    }
  }
  const stored = load();
  const state = {
    visitorToken: typeof stored.visitorToken === "string" ? stored.visitorToken : null,
    outbox: Array.isArray(stored.outbox) ? stored.outbox : [],
    lastEventId: null,
  };
  function save() {
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify({ visitorToken: state.visitorToken, outbox: state.outbox }));
    } catch {
      /* private mode: the chat still works for this page */
    }
  }

  // --- DOM --------------------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) el.append(c);
    return el;
  }

  const host = h("div", { id: "hcc-webchat-host" });
  // Reset inherited properties at the boundary; inside, only our stylesheet applies.
  host.style.cssText = "all: initial; position: fixed; z-index: 2147483000; right: 0; bottom: 0;";
  const root = host.attachShadow({ mode: "open" });
  root.append(h("link", { rel: "stylesheet", href: ORIGIN + "/static/webchat/widget.css" }));

  const badge = h("span", { class: "badge", hidden: true, "data-testid": "unread-badge" });
  const launcher = h(
    "button",
    { class: "launcher", type: "button", "aria-expanded": "false", "data-testid": "launcher", onclick: () => toggle() },
    h("span", { class: "launcher-icon", "aria-hidden": "true" }),
    h("span", { text: t("launcher") }),
    badge,
  );
  const statusText = h("span", { class: "status", "data-testid": "status" });
  const titleText = h("strong", { text: t("title") });
  const header = h(
    "div",
    { class: "header" },
    h("div", null, titleText, h("br"), statusText),
    h("button", { class: "close", type: "button", "aria-label": t("close"), onclick: () => toggle(false), text: "×" }),
  );
  const notice = h("div", { class: "notice", hidden: true, "data-testid": "offline-notice", text: t("offline_notice") });
  const errorLine = h("div", { class: "error", hidden: true, role: "alert", "data-testid": "widget-error" });
  const list = h("div", { class: "messages", "aria-live": "polite", "data-testid": "messages" });
  const typingLine = h("div", { class: "typing", "data-testid": "agent-typing" });
  const input = h("textarea", { rows: "2", placeholder: t("placeholder"), "aria-label": t("placeholder"), "data-testid": "composer" });
  const sendButton = h("button", { type: "submit", class: "send", text: t("send") });
  const imageInput = h("input", { type: "file", accept: IMAGE_TYPES.join(","), hidden: true, "data-testid": "image-input" });
  const attachButton = h(
    "button",
    { type: "button", class: "attach", "aria-label": t("attach"), title: t("attach"), "data-testid": "attach", onclick: () => imageInput.click() },
    h("span", { class: "attach-icon", "aria-hidden": "true" }),
  );
  const composer = h("form", { class: "composer", hidden: true }, attachButton, imageInput, input, sendButton);

  const nameInput = h("input", { name: "name", autocomplete: "name", required: true, maxlength: "200" });
  const phoneInput = h("input", { name: "phone", type: "tel", autocomplete: "tel", maxlength: "40" });
  const emailInput = h("input", { name: "email", type: "email", autocomplete: "email", maxlength: "254" });
  const consentBox = h("input", { name: "consent", type: "checkbox", required: true });
  const consentText = h("span", { text: t("consent_default") });
  const field = (label, control) => h("label", { class: "field" }, h("span", { text: label }), control);
  const form = h(
    "form",
    { class: "prechat", hidden: true, "data-testid": "prechat" },
    h("p", { text: t("intro") }),
    field(t("name"), nameInput),
    field(t("phone"), phoneInput),
    field(t("email"), emailInput),
    h("label", { class: "consent" }, consentBox, consentText),
    h("button", { type: "submit", class: "send", text: t("start") }),
  );
  const panel = h(
    "div",
    { class: "panel", hidden: true, role: "dialog", "aria-label": t("title"), "data-testid": "panel" },
    header,
    notice,
    errorLine,
    form,
    list,
    typingLine,
    composer,
  );
  root.append(panel, launcher);

  function showError(text) {
    errorLine.textContent = text || "";
    errorLine.hidden = !text;
  }

  // --- messages ---------------------------------------------------------------------------------

  const messages = new Map(); // id -> {data, el}
  const pending = new Map(); // client_id -> el
  let unread = 0;
  let readSentUpTo = 0;
  let seenUpTo = 0;

  function statusLabel(status) {
    return { queued: t("sending"), sending: t("sending"), sent: t("sent"), delivered: t("delivered"), read: t("read"), failed: t("failed"), undelivered: t("failed") }[status] || "";
  }
  function timeOf(iso) {
    const d = iso ? new Date(iso) : new Date();
    return d.toLocaleTimeString(ZH ? "zh-CN" : "en-GB", { hour: "2-digit", minute: "2-digit" });
  }

  function bubble(mine, body, meta) {
    const el = h("div", { class: "msg " + (mine ? "mine" : "theirs"), "data-testid": mine ? "visitor-message" : "staff-message" });
    el.append(h("div", { class: "body", text: body }));
    el.append(h("div", { class: "meta", text: meta }));
    return el;
  }

  function metaFor(m) {
    if (m.from === "patient") {
      const seen = m.id <= seenUpTo ? t("seen") : "";
      return [timeOf(m.created_at), seen].filter(Boolean).join(" · ");
    }
    return [m.author || t("staff"), timeOf(m.created_at)].join(" · ");
  }

  function upsert(m, clientId) {
    if (typeof m.id !== "number") return;
    const existing = messages.get(m.id);
    if (existing) {
      existing.data = Object.assign(existing.data, m);
      existing.el.querySelector(".meta").textContent = metaFor(existing.data);
      return;
    }
    const key = clientId || m.client_id;
    let el = key ? pending.get(key) : null;
    if (el) {
      pending.delete(key);
      el.classList.remove("pending");
      el.querySelector(".meta").textContent = metaFor(m);
    } else {
      el = bubble(m.from === "patient", m.body, metaFor(m));
      for (const image of m.images || []) {
        if (!image || typeof image !== "object") continue;
        if (typeof image.file === "string") el.querySelector(".body").append(uploadedImage(image));
        else if (typeof image.url === "string" && /^https?:\/\//.test(image.url)) {
          el.querySelector(".body").append(h("img", { src: image.url, alt: t("image") }));
        }
      }
      insertInOrder(el, m.id);
    }
    el.dataset.id = String(m.id);
    messages.set(m.id, { data: m, el });
    if (m.from !== "patient") {
      typingLine.textContent = "";
      if (!isOpen()) {
        unread += 1;
        badge.textContent = String(unread);
        badge.hidden = false;
      }
    }
    scrollDown();
  }

  // A visitor's upload is fetched with the visitor token (never a public URL) and shown from a blob.
  function uploadedImage(image) {
    const img = h("img", { alt: t("image"), "data-testid": "message-image", onload: scrollDown });
    if (image.width && image.height) img.style.aspectRatio = image.width + " / " + image.height;
    fetch(ORIGIN + "/webchat/" + encodeURIComponent(TOKEN) + "/files/" + encodeURIComponent(image.file), {
      headers: { "X-Visitor-Token": state.visitorToken || "" },
      credentials: "omit",
    })
      .then((response) => (response.ok ? response.blob() : Promise.reject(new Error(String(response.status)))))
      .then((blob) => {
        img.src = URL.createObjectURL(blob);
      })
      .catch(() => {
        img.replaceWith(h("span", { class: "image-missing", text: t("image_unavailable") }));
      });
    return img;
  }

  function insertInOrder(el, id) {
    for (const child of list.children) {
      const other = Number(child.dataset.id);
      if (other && other > id) {
        list.insertBefore(el, child);
        return;
      }
    }
    const firstPending = list.querySelector(".pending");
    if (firstPending) list.insertBefore(el, firstPending);
    else list.append(el);
  }

  function markSeen() {
    for (const { data } of messages.values()) {
      if (data.from === "patient" && data.id > seenUpTo) seenUpTo = data.id;
    }
    for (const { data, el } of messages.values()) {
      if (data.from === "patient") el.querySelector(".meta").textContent = metaFor(data);
    }
  }

  function scrollDown() {
    requestAnimationFrame(() => {
      list.scrollTop = list.scrollHeight;
    });
  }

  function sendRead() {
    if (!isOpen() || document.visibilityState !== "visible") return;
    let max = 0;
    for (const { data } of messages.values()) if (data.from !== "patient" && data.id > max) max = data.id;
    if (max > readSentUpTo && socketSend({ op: "read", message_id: max })) readSentUpTo = max;
  }

  // --- socket -----------------------------------------------------------------------------------

  let ws = null;
  let attempt = 0;
  let retryTimer = null;
  let sessionReady = false;
  let everReady = false;
  let stopped = false;

  function socketSend(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  function connect() {
    if (stopped || (ws && ws.readyState <= WebSocket.OPEN)) return;
    clearTimeout(retryTimer);
    statusText.textContent = everReady ? t("reconnecting") : t("connecting");
    const scheme = ORIGIN.startsWith("https:") ? "wss:" : "ws:";
    const socket = new WebSocket(scheme + ORIGIN.slice(ORIGIN.indexOf(":") + 1) + "/ws/webchat/" + encodeURIComponent(TOKEN) + "/");
    ws = socket;
    sessionReady = false;
    socket.addEventListener("message", (event) => {
      if (socket !== ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      onFrame(frame);
    });
    socket.addEventListener("close", (event) => {
      if (socket !== ws) return;
      ws = null;
      sessionReady = false;
      if (event.code === 4403 || event.code === 4404) {
        stopped = true;
        statusText.textContent = "";
        showError(t("unavailable"));
        return;
      }
      const delay = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
      attempt += 1;
      statusText.textContent = t("reconnecting");
      retryTimer = setTimeout(connect, delay + Math.random() * delay * 0.3);
    });
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "welcome":
        attempt = 0;
        if (typeof frame.max_image_bytes === "number") maxImageBytes = frame.max_image_bytes;
        applyStaffed(frame.staffed, frame.offline_text);
        if (frame.title && pick(frame.title)) titleText.textContent = pick(frame.title);
        if (pick(frame.consent_text)) consentText.textContent = pick(frame.consent_text);
        if (state.visitorToken) {
          socketSend({ op: "resume", visitor_token: state.visitorToken, last_event_id: state.lastEventId });
        } else {
          showForm();
        }
        break;
      case "session":
        state.visitorToken = frame.visitor_token;
        save();
        break;
      case "ready":
        sessionReady = true;
        everReady = true;
        applyStaffed(frame.staffed);
        showChat();
        if (Array.isArray(frame.history)) for (const m of frame.history) upsert(m);
        state.lastEventId = frame.last_event_id;
        flushOutbox();
        sendRead();
        break;
      case "events":
        for (const e of frame.events || []) applyEvent(e);
        if (typeof frame.last_event_id === "number") state.lastEventId = frame.last_event_id;
        sendRead();
        break;
      case "ack": {
        const item = state.outbox.find((o) => o.client_id === frame.client_id);
        state.outbox = state.outbox.filter((o) => o.client_id !== frame.client_id);
        save();
        if (item && !messages.has(frame.message_id)) {
          upsert({ id: frame.message_id, from: "patient", body: item.body, created_at: new Date().toISOString() }, frame.client_id);
        } else {
          const el = pending.get(frame.client_id);
          if (el) {
            el.remove();
            pending.delete(frame.client_id);
          }
        }
        break;
      }
      case "typing":
        showTyping(frame);
        break;
      case "error":
        onError(frame);
        break;
      default:
        break;
    }
  }

  function applyEvent(e) {
    if (e.kind === "message") upsert(e.message);
    else if (e.kind === "status") {
      const m = messages.get(e.message_id);
      if (m) m.data.status = e.status;
    } else if (e.kind === "seen") markSeen();
  }

  function onError(frame) {
    if (frame.code === "unknown_visitor") {
      state.visitorToken = null;
      save();
      showForm();
      return;
    }
    if (frame.client_id) {
      state.outbox = state.outbox.filter((o) => o.client_id !== frame.client_id);
      save();
      const el = pending.get(frame.client_id);
      if (el) {
        el.classList.add("failed");
        el.querySelector(".meta").textContent = t("failed");
        pending.delete(frame.client_id);
      }
    }
    const known = { identity_refused: 1, rate_limited: 1, too_long: 1 };
    showError(known[frame.code] ? t(frame.code) : frame.fields && Object.keys(frame.fields).length ? Object.values(frame.fields).flat().join(" ") : t("error"));
  }

  function applyStaffed(staffed, offlineText) {
    statusText.textContent = staffed ? t("online") : t("offline_status");
    statusText.classList.toggle("is-online", !!staffed);
    if (offlineText && pick(offlineText)) notice.textContent = pick(offlineText);
    notice.hidden = !!staffed;
  }

  function showForm() {
    form.hidden = false;
    list.hidden = true;
    typingLine.hidden = true;
    composer.hidden = true;
  }
  function showChat() {
    form.hidden = true;
    list.hidden = false;
    typingLine.hidden = false;
    composer.hidden = false;
    showError("");
  }

  let typingTimer = null;
  function showTyping(frame) {
    clearTimeout(typingTimer);
    if (frame.state !== "start") {
      typingLine.textContent = "";
      return;
    }
    typingLine.textContent = t("typing", { name: frame.name || t("staff") });
    typingTimer = setTimeout(() => (typingLine.textContent = ""), TYPING_SHOWN_MS);
  }

  // --- sending ----------------------------------------------------------------------------------

  function newClientId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function addPending(item) {
    const el = bubble(true, item.body, t("sending"));
    el.classList.add("pending");
    list.append(el);
    pending.set(item.client_id, el);
    scrollDown();
  }

  function flushOutbox() {
    for (const item of state.outbox) {
      if (!pending.has(item.client_id)) addPending(item);
      socketSend({ op: "message", body: item.body, client_id: item.client_id });
    }
  }

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = input.value.trim();
    if (!body) return;
    const item = { client_id: newClientId(), body };
    state.outbox.push(item);
    save();
    addPending(item);
    input.value = "";
    typingStop();
    showError("");
    if (sessionReady) socketSend({ op: "message", body, client_id: item.client_id });
    else connect();
  });
  // --- images -----------------------------------------------------------------------------------

  function imageError(code) {
    if (code === "image_too_large") return t("image_too_large", { mb: Math.round((maxImageBytes / 1048576) * 10) / 10 });
    if (code === "not_an_image" || code === "rate_limited") return t(code);
    return t("image_failed");
  }

  imageInput.addEventListener("change", () => {
    const file = imageInput.files && imageInput.files[0];
    imageInput.value = "";
    if (!file) return;
    if (!IMAGE_TYPES.includes(file.type)) return showError(imageError("not_an_image"));
    if (file.size > maxImageBytes) return showError(imageError("image_too_large"));
    if (!sessionReady || !state.visitorToken) return showError(t("image_failed"));
    showError("");
    sendImage(file);
  });

  function sendImage(file) {
    const clientId = newClientId();
    const el = bubble(true, "", t("sending"));
    const preview = URL.createObjectURL(file);
    el.querySelector(".body").append(h("img", { src: preview, alt: t("image"), "data-testid": "message-image", onload: scrollDown }));
    el.classList.add("pending");
    list.append(el);
    pending.set(clientId, el);
    scrollDown();
    const body = new FormData();
    body.append("client_id", clientId);
    body.append("image", file, file.name || "image");
    fetch(ORIGIN + "/webchat/" + encodeURIComponent(TOKEN) + "/upload/", {
      method: "POST",
      headers: { "X-Visitor-Token": state.visitorToken },
      body,
      credentials: "omit",
    })
      .then((response) => response.json().catch(() => ({})).then((data) => ({ ok: response.ok, data })))
      .then(({ ok, data }) => {
        if (!ok || typeof data.message_id !== "number") throw data;
        if (!messages.has(data.message_id)) {
          upsert({ id: data.message_id, from: "patient", body: "", created_at: new Date().toISOString() }, clientId);
        } else if (pending.get(clientId) === el) {
          el.remove();
          pending.delete(clientId);
        }
        // The upload may have opened a new thread: the socket follows it and catches up.
        socketSend({ op: "sync" });
      })
      .catch((data) => {
        pending.delete(clientId);
        el.classList.remove("pending");
        el.classList.add("failed");
        el.querySelector(".meta").textContent = t("failed");
        showError(imageError(data && data.code));
      });
  }

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });

  let typingSentAt = 0;
  let typingIdle = null;
  input.addEventListener("input", () => {
    if (!sessionReady) return;
    if (!input.value.trim()) return typingStop();
    const now = Date.now();
    if (now - typingSentAt > TYPING_REPEAT_MS) {
      typingSentAt = now;
      socketSend({ op: "typing", state: "start" });
    }
    clearTimeout(typingIdle);
    typingIdle = setTimeout(typingStop, TYPING_IDLE_MS);
  });
  function typingStop() {
    clearTimeout(typingIdle);
    if (typingSentAt) socketSend({ op: "typing", state: "stop" });
    typingSentAt = 0;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!phoneInput.value.trim() && !emailInput.value.trim()) {
      showError(t("phone_or_email"));
      return;
    }
    showError("");
    const frame = {
      op: "start",
      form: {
        name: nameInput.value,
        phone: phoneInput.value,
        email: emailInput.value,
        consent: consentBox.checked,
        language: ZH ? "zh-hans" : "en",
      },
    };
    if (script.dataset.userId) frame.identity = { id: script.dataset.userId, hash: script.dataset.userHash || "" };
    socketSend(frame);
  });

  // --- open / close -----------------------------------------------------------------------------

  function isOpen() {
    return !panel.hidden;
  }
  function toggle(open) {
    const show = open === undefined ? panel.hidden : open;
    panel.hidden = !show;
    launcher.setAttribute("aria-expanded", String(show));
    if (show) {
      unread = 0;
      badge.hidden = true;
      connect();
      sendRead();
      (form.hidden ? input : nameInput).focus();
    }
  }

  setInterval(() => socketSend({ op: "ping" }), PING_EVERY_MS);
  document.addEventListener("visibilitychange", sendRead);
  window.addEventListener("online", () => {
    attempt = 0;
    connect();
  });

  function mount() {
    document.body.append(host);
    // A returning visitor reconnects at once, so replies reach them in the page, not by SMS.
    if (state.visitorToken) connect();
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);

  // For tests and support: cut the connection (it reconnects and resyncs by itself).
  window.hccWebchat = {
    dropConnection() {
      if (ws) ws.close();
    },
  };
})();
