// Wires the inbox together: load who I am, the three panes, and the live socket.

import { api } from "./api.js";
import { ConversationView } from "./conversation.js";
import { h, setChildren } from "./dom.js";
import { t, choice } from "./i18n.js";
import { ConversationList } from "./list.js";
import { PatientPanel } from "./patient.js";
import { InboxSocket } from "./socket.js";

function conversationFromUrl() {
  const id = Number(new URLSearchParams(location.search).get("conversation"));
  return Number.isInteger(id) && id > 0 ? id : null;
}

export async function start() {
  const listRoot = document.getElementById("pane-list");
  const convRoot = document.getElementById("pane-conversation");
  const patientRoot = document.getElementById("pane-patient");
  const connection = document.querySelector('[data-testid="connection-status"]');
  const presenceSelect = document.querySelector('[data-testid="presence-select"]');
  const presenceDot = document.getElementById("presence-dot");
  const presenceError = document.getElementById("presence-error");

  let me;
  let labels;
  try {
    [me, labels] = await Promise.all([api("/me/"), api("/labels/")]);
  } catch (error) {
    setChildren(convRoot, h("div", { class: "conv-placeholder" }, h("h2", null, t("load_failed")), h("p", null, error.message)));
    return;
  }

  const store = {
    me,
    labels,
    addLabel(label) {
      this.labels = [...this.labels, label].sort((a, b) => a.name.localeCompare(b.name));
      list.renderLabelOptions();
    },
  };

  // --- Presence -------------------------------------------------------------------------------
  let wantedPresence = null;
  function showPresence(value) {
    presenceSelect.value = value;
    presenceDot.className = `dot dot-${value}`;
    presenceSelect.dataset.availability = value;
  }
  showPresence(me.availability);
  presenceSelect.disabled = false;
  presenceSelect.addEventListener("change", () => {
    wantedPresence = presenceSelect.value;
    presenceError.hidden = true;
    presenceDot.className = `dot dot-${wantedPresence}`;
    if (socket.send({ op: "presence", availability: wantedPresence })) {
      me.availability = wantedPresence;
      wantedPresence = null;
    }
  });

  // --- Connection indicator -------------------------------------------------------------------
  function showConnection(state) {
    connection.dataset.state = state;
    const label = connection.querySelector(".conn-label");
    label.textContent = t(`conn_${state}`);
    connection.title = t(`conn_${state}_title`);
  }

  // --- Panes ----------------------------------------------------------------------------------
  let currentId = null;

  function open(id, { push = true } = {}) {
    if (!id) return;
    currentId = id;
    list.setActive(id);
    patient.setActiveConversation(id);
    if (push && conversationFromUrl() !== id) history.pushState({ conversation: id }, "", `?conversation=${id}`);
    view.open(id);
  }

  function conversationChanged(c, { moveToTop = false } = {}) {
    list.upsert(c, { moveToTop });
    view.updateConversation(c);
    patient.onConversation(c);
  }

  // --- The session or its access ended ---------------------------------------------------------
  // The socket closed because this session signed out (or expired, or its password changed), the role lost
  // the inbox, or the teams changed. What the page shows may no longer be this person's to see, so it goes:
  // a reload asks the server again, which answers with the sign-in page, the refusal, or the inbox as it is
  // now. A reload that comes straight back here (within RELOAD_GUARD_MS) stops instead of looping.
  const RELOAD_GUARD_KEY = "inbox.accessReloadAt";
  const RELOAD_GUARD_MS = 30000;
  function onAccessEnded(code) {
    for (const root of [listRoot, convRoot, patientRoot]) setChildren(root);
    let last = 0;
    try {
      last = Number(sessionStorage.getItem(RELOAD_GUARD_KEY)) || 0;
      sessionStorage.setItem(RELOAD_GUARD_KEY, String(Date.now()));
    } catch {
      // Storage refused (private mode): reload anyway; the server decides what comes back.
    }
    if (Date.now() - last < RELOAD_GUARD_MS) {
      if (code === 4401) location.assign(`/login/?next=${encodeURIComponent(location.pathname + location.search)}`);
      else setChildren(convRoot, h("div", { class: "conv-placeholder" }, h("h2", null, t("access_ended"))));
      return;
    }
    location.reload();
  }

  const socket = new InboxSocket({
    lastEventId: me.last_event_id,
    onState: showConnection,
    onAccessEnded,
    onAccessWidened: () => list.load(),
    onReady: () => {
      view.rewatch();
      if (wantedPresence) {
        socket.send({ op: "presence", availability: wantedPresence });
        me.availability = wantedPresence;
        wantedPresence = null;
      }
    },
    onTyping: (frame) => view.onTyping(frame),
    onError: (frame) => {
      if (frame.code === "bad_presence") {
        presenceError.textContent = frame.message;
        presenceError.hidden = false;
        showPresence(me.availability);
      } else {
        console.warn("inbox socket:", frame.code, frame.message);
      }
    },
    onEvents: (events) => {
      for (const event of events) {
        try {
          handleEvent(event);
        } catch (error) {
          console.error("inbox: could not apply event", event, error);
        }
      }
    },
  });

  function handleEvent(event) {
    switch (`${event.type}.${event.op}`) {
      case "conversation.add":
        conversationChanged(event.conversation, { moveToTop: true });
        break;
      case "conversation.update":
        conversationChanged(event.conversation, { moveToTop: (event.changed || []).includes("last_message_at") });
        break;
      case "conversation.remove":
        // A conversation this agent held left what they may see (transferred, or their teams changed).
        list.remove(event.conversation_id);
        if (currentId === event.conversation_id) {
          currentId = null;
          history.replaceState({}, "", location.pathname);
          view.close();
          patient.showEmpty();
        }
        break;
      case "message.add":
        view.addMessage(event.message);
        break;
      case "message.update_status":
        view.updateMessageStatus(event);
        break;
      case "note.add":
        view.addNote(event.note);
        break;
      case "presence.update":
        if (event.user_id === me.id) {
          me.availability = event.availability;
          if (!wantedPresence) showPresence(event.availability);
        }
        break;
      case "patient.update":
        patient.onPatientUpdated(event);
        break;
      default:
        break;
    }
  }

  const list = new ConversationList(listRoot, { store, onOpen: (id) => open(id) });
  const view = new ConversationView(convRoot, {
    store,
    socket,
    onConversation: (c) => conversationChanged(c),
    onPatient: (patientId, conversationId) => patient.load(patientId, conversationId),
  });
  const patient = new PatientPanel(patientRoot, { onOpen: (id) => open(id) });
  view.onPatientData = (data) => patient.setPatient(data);

  window.addEventListener("popstate", () => {
    const id = conversationFromUrl();
    if (id) open(id, { push: false });
    else {
      currentId = null;
      list.setActive(null);
      view.close();
      patient.showEmpty();
    }
  });

  // Relative times ("14:05", "Yesterday") age; refresh them every minute.
  setInterval(() => {
    list.refreshAll();
    view.refreshTimes();
  }, 60000);

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && currentId && list.get(currentId)?.unread_count) view.markRead();
  });

  await list.load();
  socket.connect();
  const initial = conversationFromUrl();
  if (initial) open(initial, { push: false });

  // For tests and debugging.
  window.inbox = { store, list, view, patient, socket, choice };
}
