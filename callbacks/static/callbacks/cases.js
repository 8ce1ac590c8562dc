// Service recovery (服务补救): the case list and one case's detail, talking to /api/v1/followup/cases/.
// Plain ES module, no build step. Everything that can carry user data is rendered through textContent.

import { api as inboxApi, qs } from "../contactcenter/inbox/api.js";
import { h, clear, setChildren } from "../contactcenter/inbox/dom.js";

// --- Strings and formatting ------------------------------------------------------------------------

const source = document.getElementById("cases-i18n");
const data = source ? JSON.parse(source.textContent) : { strings: {}, choices: {}, config: {} };
const config = data.config || {};
const LANG = (config.lang || document.documentElement.lang || "en").toLowerCase();
const IS_ZH = LANG.startsWith("zh");
const LOCALE = IS_ZH ? "zh-CN" : "en-GB";
const TIME_ZONE = config.timeZone || undefined;
const MANAGER = Boolean(config.manager);

function t(key, vars) {
  let text = data.strings[key];
  if (text === undefined) {
    console.warn("cases: missing string", key);
    text = key;
  }
  if (vars) text = text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  return text;
}

function choice(group, value) {
  const labels = data.choices[group] || {};
  return value in labels ? labels[value] : String(value ?? "");
}

function choices(group) {
  return Object.entries(data.choices[group] || {});
}

const fmtFull = new Intl.DateTimeFormat(LOCALE, {
  timeZone: TIME_ZONE,
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});
const fullTime = (iso) => (iso ? fmtFull.format(new Date(iso)) : "");

/** "5 h", "2 d 3 h", "40 min": how long, rounded to what a person reads at a glance. */
function duration(ms) {
  const minutes = Math.max(1, Math.round(Math.abs(ms) / 60000));
  if (minutes < 60) return t("duration_minutes", { n: minutes });
  const hours = Math.floor(minutes / 60);
  if (hours < 24) {
    const m = minutes % 60;
    return hours < 6 && m ? t("duration_hours_minutes", { h: hours, m }) : t("duration_hours", { n: hours });
  }
  const days = Math.floor(hours / 24);
  const h_ = hours % 24;
  return h_ ? t("duration_days_hours", { d: days, h: h_ }) : t("duration_days", { n: days });
}

function teamName(team) {
  if (!team) return "";
  return IS_ZH && team.name_zh ? team.name_zh : team.name;
}

// --- API --------------------------------------------------------------------------------------------

/** The inbox's API client (session, CSRF, field errors), rooted at the cases endpoints. */
function api(path, options) {
  return inboxApi(`/followup/cases/${path}`, options);
}

// --- State ------------------------------------------------------------------------------------------

const TABS = ["open", "received", "verified", "improved", "closed", "escalated", "all"];
const STEPS = ["received", "verified", "improved", "closed"];

const state = {
  tab: "open",
  category: "",
  department: "",
  overdue: false,
  cases: [],
  count: 0,
  next: null,
  counts: {},
  selectedId: null,
  detail: null,
  listError: "",
};

const listPane = document.getElementById("cases-list");
const detailPane = document.getElementById("case-detail");

function filterParams() {
  const params = { category: state.category, department: state.department };
  if (state.tab === "escalated") params.escalated = "true";
  else if (state.tab !== "all") params.status = state.tab;
  if (state.overdue) params.overdue = "true";
  return params;
}

async function loadList({ append = false } = {}) {
  try {
    const offset = append ? state.cases.length : 0;
    const [page, counts] = await Promise.all([
      api(qs({ ...filterParams(), limit: 50, offset })),
      append ? Promise.resolve(state.counts) : api("counts/"),
    ]);
    state.cases = append ? state.cases.concat(page.results) : page.results;
    state.count = page.count;
    state.next = page.next;
    state.counts = counts;
    state.listError = "";
  } catch (error) {
    state.listError = t("list_failed", { error: error.message });
  }
  renderList();
}

async function openCase(id, { push = true } = {}) {
  state.selectedId = id;
  if (push) {
    const url = new URL(window.location.href);
    url.searchParams.set("case", String(id));
    window.history.replaceState(null, "", url);
  }
  renderList();
  try {
    state.detail = await api(`${id}/`);
    renderDetail();
  } catch (error) {
    state.detail = null;
    const message = error.status === 404 ? t("case_not_found") : t("case_failed", { error: error.message });
    setChildren(detailPane, h("div", { class: "case-placeholder" }, h("p", { class: "alert alert-error", text: message })));
  }
}

function replaceCase(detail) {
  state.detail = detail;
  state.selectedId = detail.id;
  const index = state.cases.findIndex((c) => c.id === detail.id);
  if (index >= 0) state.cases[index] = detail;
  renderDetail();
  renderList();
  // Counts and tab membership change with the status: refresh quietly.
  loadList();
}

// --- SLA --------------------------------------------------------------------------------------------

/** {text, level} for a case's first-contact clock: level is ok, soon, breached, done or closed. */
function sla(item) {
  if (item.closed_at) return { text: t("closed_at", { time: fullTime(item.closed_at) }), level: "closed" };
  if (item.first_contacted_at) {
    return { text: t("contacted_at", { time: fullTime(item.first_contacted_at) }), level: "done" };
  }
  const left = new Date(item.first_contact_due_at).getTime() - Date.now();
  if (left <= 0) return { text: t("overdue_by", { time: duration(left) }), level: "breached" };
  return { text: t("due_in", { time: duration(left) }), level: left < 4 * 3600000 ? "soon" : "ok" };
}

function slaBadges(item) {
  const badges = [];
  if (item.escalated_at && !item.closed_at) {
    badges.push(h("span", { class: "badge case-badge-escalated", dataset: { testid: "escalated-badge" }, text: t("escalated") }));
  } else if (item.overdue) {
    badges.push(h("span", { class: "badge case-badge-overdue", text: t("overdue") }));
  }
  return badges;
}

function statusBadge(status) {
  return h("span", { class: `badge case-status case-status-${status}`, text: choice("status", status) });
}

// --- List -------------------------------------------------------------------------------------------

function tabLabel(tab) {
  const n = state.counts[tab];
  const label = t(`tab_${tab}`);
  return n === undefined ? label : `${label} ${n}`;
}

function renderList() {
  const tabs = h(
    "div",
    { class: "case-tabs", role: "tablist", "aria-label": t("case_views") },
    TABS.map((tab) =>
      h("button", {
        type: "button",
        role: "tab",
        class: `case-tab${tab === "escalated" && state.counts.escalated ? " has-alert" : ""}`,
        "aria-selected": tab === state.tab ? "true" : "false",
        dataset: { tab },
        text: tabLabel(tab),
        onclick: () => {
          state.tab = tab;
          loadList();
        },
      }),
    ),
  );

  const categorySelect = h(
    "select",
    { class: "field field-sm", id: "case-filter-category", onchange: (e) => ((state.category = e.target.value), loadList()) },
    h("option", { value: "", text: t("any_category") }),
    choices("category").map(([value, label]) => h("option", { value, text: label, selected: value === state.category })),
  );
  const departmentSelect = h(
    "select",
    { class: "field field-sm", id: "case-filter-department", onchange: (e) => ((state.department = e.target.value), loadList()) },
    h("option", { value: "", text: t("any_department") }),
    (config.departments || []).map((d) => h("option", { value: String(d.id), text: d.name, selected: String(d.id) === state.department })),
  );
  const overdueBox = h("label", { class: "case-check" },
    h("input", { type: "checkbox", checked: state.overdue, dataset: { testid: "overdue-filter" }, onchange: (e) => ((state.overdue = e.target.checked), loadList()) }),
    t("overdue_only"),
  );

  const head = h(
    "div",
    { class: "cases-head" },
    h("div", { class: "cases-title-row" },
      h("h2", { class: "cases-title", text: t("cases") }),
      h("button", { type: "button", class: "btn btn-sm btn-ghost", text: t("refresh"), onclick: () => loadList() }),
      h("button", { type: "button", class: "btn btn-sm", text: t("new_case"), dataset: { testid: "new-case" }, onclick: renderNewCase }),
    ),
    tabs,
    h("div", { class: "case-filters" },
      h("label", { class: "case-filter" }, h("span", { class: "case-filter-label", text: t("category") }), categorySelect),
      h("label", { class: "case-filter" }, h("span", { class: "case-filter-label", text: t("department") }), departmentSelect),
      overdueBox,
    ),
    h("div", { class: "case-list-summary", text: state.count === 1 ? t("one_case") : t("n_cases", { n: state.count }) }),
  );

  const body = h("div", { class: "case-list-scroll" });
  if (state.listError) body.append(h("p", { class: "inline-error", role: "alert", text: state.listError }));
  else if (!state.cases.length) body.append(h("p", { class: "case-empty", text: t("empty_list") }));
  else {
    body.append(h("ul", { class: "case-rows" }, state.cases.map(renderRow)));
    if (state.next) {
      body.append(h("div", { class: "case-more" }, h("button", { type: "button", class: "btn btn-sm", text: t("load_more"), onclick: () => loadList({ append: true }) })));
    }
  }
  setChildren(listPane, head, body);
}

function renderRow(item) {
  const clock = sla(item);
  return h(
    "li",
    { class: `case-row${item.id === state.selectedId ? " is-active" : ""}`, dataset: { caseId: item.id, testid: "case-row" } },
    h(
      "button",
      { type: "button", class: "case-link", onclick: () => openCase(item.id) },
      h("div", { class: "case-row-top" },
        h("span", { class: "case-row-name", text: item.patient.name || t("patient_number", { id: item.patient.id }) }),
        statusBadge(item.status),
      ),
      h("div", { class: "case-row-meta" },
        h("span", { text: t("case_number", { id: item.id }) }),
        h("span", { text: choice("category", item.category) }),
        item.department ? h("span", { text: teamName(item.department) }) : null,
      ),
      h("div", { class: "case-row-summary", text: item.summary }),
      h("div", { class: `case-sla case-sla-${clock.level}` }, ...slaBadges(item), h("span", { class: "case-sla-text", text: clock.text })),
    ),
  );
}

// --- Detail -----------------------------------------------------------------------------------------

function renderPlaceholder() {
  setChildren(
    detailPane,
    h("div", { class: "case-placeholder" }, h("h2", { text: t("select_case") }), h("p", { class: "muted", text: t("select_case_hint") })),
  );
}

function stepper(status) {
  const current = STEPS.indexOf(status);
  return h(
    "ol",
    { class: "case-steps", "aria-label": t("steps_label") },
    STEPS.map((step, i) =>
      h("li", {
        class: `case-step${i < current ? " is-done" : ""}${i === current ? " is-current" : ""}`,
        "aria-current": i === current ? "step" : null,
        text: choice("status", step),
      }),
    ),
  );
}

function dl(rows) {
  return h(
    "dl",
    { class: "case-facts" },
    rows.filter(([, value]) => value !== "" && value !== null && value !== undefined).map(([label, value]) => [h("dt", { text: label }), h("dd", { text: value })]),
  );
}

function card(title, ...children) {
  return h("section", { class: "case-card" }, h("h3", { class: "case-card-title", text: title }), ...children);
}

function renderTrigger(detail) {
  const trigger = detail.trigger;
  if (!trigger) return card(t("trigger"), h("p", { class: "muted", text: t("no_trigger") }));
  const survey = IS_ZH && trigger.survey_zh ? trigger.survey_zh : trigger.survey;
  return card(
    t("trigger"),
    h("p", { class: "muted case-survey-name", text: t("survey_named", { name: survey }) }),
    h(
      "ul",
      { class: "case-answers", dataset: { testid: "trigger-answers" } },
      trigger.answers.map((a) =>
        h(
          "li",
          { class: `case-answer${a.flagged ? " is-flagged" : ""}` },
          h("div", { class: "case-answer-prompt", text: IS_ZH ? a.prompt_zh || a.prompt_en : a.prompt_en || a.prompt_zh }),
          h("div", { class: "case-answer-row" },
            a.value !== null ? h("span", { class: "case-answer-value", text: t("answer_value", { value: a.value }) }) : null,
            a.flagged ? h("span", { class: "badge case-badge-overdue", text: t("answer_flagged") }) : null,
            h("code", { class: "case-answer-key", text: a.question_key }),
          ),
          a.raw_text ? h("div", { class: "case-answer-raw", text: t("answer_raw", { text: a.raw_text }) }) : null,
        ),
      ),
    ),
  );
}

function renderDischarge(detail) {
  const d = detail.discharge;
  if (!d) return card(t("discharge"), h("p", { class: "muted", text: t("no_discharge") }));
  return card(
    t("discharge"),
    dl([
      [t("department"), teamName(d.department)],
      [t("ward"), d.ward],
      [t("doctor"), d.attending_doctor],
      [t("primary_nurse"), d.primary_nurse],
      [t("discharged_at"), fullTime(d.discharged_at)],
      [t("disposition"), choice("disposition", d.disposition)],
      [t("visit_number"), d.visit_number],
    ]),
  );
}

/** A small form that posts to one step endpoint and shows field errors beside their fields. */
function stepForm({ title, hint, fields, submitLabel, path, testid, primary = true }) {
  const inputs = {};
  const errors = {};
  const alert = h("p", { class: "inline-error case-form-error", role: "alert", hidden: true });
  const rows = fields.map((f) => {
    const id = `case-${testid}-${f.name}`;
    let input;
    if (f.type === "select") {
      input = h(
        "select",
        { class: "field", id, name: f.name, required: f.required },
        f.placeholder ? h("option", { value: "", text: f.placeholder }) : null,
        f.options.map(([value, label]) => h("option", { value, text: label })),
      );
    } else if (f.type === "textarea") {
      input = h("textarea", { class: "field", id, name: f.name, rows: 3, maxlength: f.max || 4000, placeholder: f.placeholder || null, required: f.required });
    } else {
      input = h("input", { class: "field", id, name: f.name, maxlength: f.max || 120, placeholder: f.placeholder || null });
    }
    inputs[f.name] = input;
    errors[f.name] = h("div", { class: "field-error", hidden: true });
    return h("div", { class: "form-row" }, h("label", { for: id, text: f.label }), input, errors[f.name]);
  });
  const button = h("button", { type: "submit", class: `btn ${primary ? "btn-primary" : ""}`, text: submitLabel });
  const form = h(
    "form",
    {
      class: "case-step-form",
      dataset: { testid },
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        alert.hidden = true;
        for (const el of Object.values(errors)) el.hidden = true;
        const body = {};
        let missing = false;
        for (const f of fields) {
          let value = inputs[f.name].value;
          if (f.type !== "select") value = value.trim();
          if (f.required && !value) {
            errors[f.name].textContent = t("empty_field");
            errors[f.name].hidden = false;
            missing = true;
          }
          body[f.apiName || f.name] = f.numeric ? (value ? Number(value) : null) : value;
        }
        if (missing) return;
        button.disabled = true;
        try {
          replaceCase(await api(path, { method: "POST", body }));
        } catch (error) {
          button.disabled = false;
          const leftovers = [];
          for (const [key, messages] of Object.entries(error.fields || {})) {
            const field = fields.find((f) => (f.apiName || f.name) === key);
            if (field) {
              errors[field.name].textContent = flatten(messages).join(" ");
              errors[field.name].hidden = false;
            } else leftovers.push(...flatten(messages));
          }
          if (leftovers.length || !Object.keys(error.fields || {}).length) {
            alert.textContent = leftovers.length ? leftovers.join(" ") : error.message;
            alert.hidden = false;
          }
        }
      },
    },
    h("h3", { class: "case-card-title", text: title }),
    hint ? h("p", { class: "form-hint case-form-hint", text: hint }) : null,
    rows,
    alert,
    h("div", { class: "case-form-actions" }, button),
  );
  return form;
}

function departmentOptions() {
  return (config.departments || []).map((d) => [String(d.id), d.name]);
}

function renderStep(detail) {
  const a = detail.allowed;
  const id = detail.id;
  const parts = [];
  if (a.verify) {
    parts.push(
      stepForm({
        title: t("step_verify"),
        hint: t("step_verify_hint"),
        testid: "verify-form",
        path: `${id}/verify/`,
        submitLabel: t("verify_button"),
        fields: [
          { name: "cause", label: t("cause"), type: "textarea", required: true },
          {
            name: "category",
            label: t("category"),
            type: "select",
            required: true,
            placeholder: t("choose"),
            options: choices("category").filter(([value]) => value !== "unclassified"),
          },
          {
            name: "accountable_department",
            apiName: "accountable_department_id",
            numeric: true,
            label: t("accountable_department"),
            type: "select",
            placeholder: t("none_selected"),
            options: departmentOptions(),
          },
          { name: "accountable_staff", label: t("accountable_staff"), placeholder: t("accountable_staff_placeholder"), max: 120 },
        ],
      }),
    );
  }
  if (a.improve) {
    parts.push(
      stepForm({
        title: t("step_improve"),
        hint: t("step_improve_hint"),
        testid: "improve-form",
        path: `${id}/improve/`,
        submitLabel: t("improve_button"),
        fields: [{ name: "action_taken", label: t("action_taken"), type: "textarea", required: true }],
      }),
    );
  }
  if (a.close) {
    parts.push(
      stepForm({
        title: t("step_close"),
        hint: t("step_close_hint"),
        testid: "close-form",
        path: `${id}/close/`,
        submitLabel: t("close_button"),
        fields: [
          { name: "accountability", label: t("accountability"), type: "select", required: true, placeholder: t("choose"), options: choices("accountability") },
          { name: "note", label: t("close_note"), type: "textarea" },
        ],
      }),
    );
  }
  if (a.reopen) {
    parts.push(
      stepForm({
        title: t("closed_case"),
        testid: "reopen-form",
        path: `${id}/reopen/`,
        submitLabel: t("reopen"),
        primary: false,
        fields: [{ name: "note", label: t("reopen_reason"), type: "textarea", required: true }],
      }),
    );
  }
  if (!MANAGER && detail.status !== "closed") parts.push(h("p", { class: "alert alert-info", text: t("nurse_only_hint") }));
  if (!parts.length && detail.status === "closed") parts.push(h("p", { class: "muted", text: t("closed_case") }));
  return parts.length ? h("section", { class: "case-card case-card-step" }, parts) : null;
}

function renderContact(detail) {
  if (!detail.allowed.contact) return null;
  return h(
    "section",
    { class: "case-card case-card-contact" },
    stepForm({
      title: t("record_first_contact"),
      hint: t("first_contact_hint"),
      testid: "contact-form",
      path: `${detail.id}/contact/`,
      submitLabel: t("record_first_contact"),
      fields: [{ name: "note", label: t("first_contact_note"), type: "textarea" }],
    }),
  );
}

function renderOutcome(detail) {
  const rows = [
    [t("cause"), detail.cause],
    [t("accountable_department"), teamName(detail.accountable_department)],
    [t("accountable_staff"), detail.accountable_staff],
    [t("action_taken"), detail.action_taken],
    [t("accountability"), detail.accountability ? choice("accountability", detail.accountability) : ""],
  ];
  if (!rows.some(([, v]) => v)) return null;
  return card(t("outcome"), dl(rows));
}

function eventText(e) {
  switch (e.kind) {
    case "opened":
      return t("ev_opened");
    case "status":
      if (e.from_status === "closed") return t("ev_reopened");
      return t("ev_status", { from: choice("status", e.from_status), to: choice("status", e.to_status) });
    case "contacted":
      return t("ev_contacted");
    case "note":
      return t("ev_note");
    case "escalated":
      return t("ev_escalated");
    case "assigned":
      return e.note ? t("ev_assigned", { name: e.note }) : t("ev_unassigned");
    default:
      return e.kind;
  }
}

function renderHistory(detail) {
  const noteBox = h("textarea", { class: "field", rows: 2, maxlength: 4000, placeholder: t("note_placeholder"), "aria-label": t("add_note"), dataset: { testid: "note-input" } });
  const noteError = h("p", { class: "inline-error", role: "alert", hidden: true });
  const noteButton = h("button", { type: "submit", class: "btn btn-sm", text: t("add_note") });
  const noteForm = detail.allowed.note
    ? h(
        "form",
        {
          class: "case-note-form",
          onsubmit: async (event) => {
            event.preventDefault();
            noteError.hidden = true;
            const note = noteBox.value.trim();
            if (!note) {
              noteError.textContent = t("empty_field");
              noteError.hidden = false;
              return;
            }
            noteButton.disabled = true;
            try {
              replaceCase(await api(`${detail.id}/notes/`, { method: "POST", body: { note } }));
            } catch (error) {
              noteButton.disabled = false;
              noteError.textContent = error.message;
              noteError.hidden = false;
            }
          },
        },
        noteBox,
        noteError,
        h("div", { class: "case-form-actions" }, noteButton),
      )
    : null;
  const items = detail.history
    .slice()
    .reverse()
    .map((e) =>
      h(
        "li",
        { class: `case-event case-event-${e.kind}` },
        h("div", { class: "case-event-head" },
          h("span", { class: "case-event-what", text: eventText(e) }),
          h("span", { class: "case-event-who", text: e.actor ? e.actor.name : t("system") }),
          h("time", { class: "case-event-when", datetime: e.at, text: fullTime(e.at) }),
        ),
        e.note && e.kind !== "assigned" ? h("div", { class: "case-event-body", text: e.note }) : null,
      ),
    );
  return card(
    t("history"),
    noteForm,
    items.length ? h("ol", { class: "case-timeline", dataset: { testid: "case-history" } }, items) : h("p", { class: "muted", text: t("no_history") }),
  );
}

function renderAssign(detail) {
  const current = detail.assignee ? detail.assignee.name : t("unassigned");
  if (!detail.allowed.assign || !(config.staff || []).length) {
    return h("span", { class: "case-assignee" }, h("span", { class: "muted", text: `${t("assignee")}: ` }), current);
  }
  const select = h(
    "select",
    {
      class: "field field-sm",
      "aria-label": t("assignee"),
      dataset: { testid: "assignee-select" },
      onchange: async (event) => {
        const value = event.target.value;
        select.disabled = true;
        try {
          replaceCase(await api(`${detail.id}/assign/`, { method: "POST", body: { assignee_id: value ? Number(value) : null } }));
        } catch (error) {
          select.disabled = false;
          window.alert(error.message);
        }
      },
    },
    h("option", { value: "", text: t("unassigned"), selected: !detail.assignee }),
    config.staff.map((s) => h("option", { value: String(s.id), text: s.name, selected: detail.assignee?.id === s.id })),
  );
  return h("label", { class: "case-assignee" }, h("span", { class: "muted", text: t("assignee") }), select);
}

function renderDetail() {
  const d = state.detail;
  if (!d) return renderPlaceholder();
  const clock = sla(d);
  const header = h(
    "header",
    { class: "case-header" },
    h("div", { class: "case-header-main" },
      h("h2", { class: "case-title" },
        h("span", { text: d.patient.name || t("patient_number", { id: d.patient.id }) }),
        h("span", { class: "case-title-id", text: t("case_number", { id: d.id }) }),
      ),
      h("div", { class: "case-header-badges" },
        statusBadge(d.status),
        ...slaBadges(d),
        h("span", { class: `case-sla case-sla-${clock.level}`, dataset: { testid: "case-sla" }, text: clock.text }),
      ),
    ),
    renderAssign(d),
  );
  const facts = dl([
    [t("summary"), d.summary],
    [t("source"), choice("source", d.source)],
    [t("category"), choice("category", d.category)],
    [t("department"), teamName(d.department)],
    [t("opened"), fullTime(d.created_at)],
    [t("escalated"), d.escalated_at ? fullTime(d.escalated_at) : ""],
  ]);
  setChildren(
    detailPane,
    h(
      "div",
      { class: "case-detail-scroll" },
      header,
      stepper(d.status),
      h("div", { class: "case-grid" },
        h("div", { class: "case-col" }, card(t("summary"), facts), renderTrigger(d), renderDischarge(d)),
        h("div", { class: "case-col" }, renderContact(d), renderStep(d), renderOutcome(d), renderHistory(d)),
      ),
    ),
  );
}

// --- New case ---------------------------------------------------------------------------------------

function renderNewCase() {
  const allowed = new Set(config.newCaseDepartments || []);
  const departments = (config.departments || []).filter((d) => allowed.has(d.id)).map((d) => [String(d.id), d.name]);
  const form = stepForm({
    title: t("new_case_title"),
    testid: "new-case-form",
    path: "",
    submitLabel: t("create"),
    fields: [
      { name: "patient_id", label: t("patient_id"), numeric: true, required: true, max: 19 },
      { name: "department_id", label: t("department"), type: "select", numeric: true, required: !MANAGER, placeholder: MANAGER ? t("none_selected") : t("choose"), options: departments },
      { name: "category", label: t("category"), type: "select", required: true, placeholder: t("choose"), options: choices("category").filter(([v]) => v !== "unclassified") },
      { name: "summary", label: t("summary"), type: "textarea", required: true, max: 2000 },
    ],
  });
  state.selectedId = null;
  state.detail = null;
  renderList();
  setChildren(
    detailPane,
    h("div", { class: "case-detail-scroll" },
      h("section", { class: "case-card case-card-new" }, form,
        h("button", { type: "button", class: "btn btn-ghost", text: t("cancel"), onclick: renderPlaceholder }),
      ),
    ),
  );
}

// --- Start ------------------------------------------------------------------------------------------

async function start() {
  const requested = Number(new URL(window.location.href).searchParams.get("case"));
  await loadList();
  if (requested > 0) await openCase(requested, { push: false });
  else renderPlaceholder();
  // The SLA countdown is relative to now: redraw it every minute, and pick up new cases while here.
  window.setInterval(() => {
    renderList();
    const sla_ = detailPane.querySelector('[data-testid="case-sla"]');
    if (sla_ && state.detail) {
      const clock = sla(state.detail);
      sla_.textContent = clock.text;
      sla_.className = `case-sla case-sla-${clock.level}`;
    }
  }, 60000);
  window.setInterval(() => loadList(), 120000);
}

start().catch((error) => {
  console.error("cases page failed to start", error);
  clear(detailPane).append(h("p", { class: "alert alert-error", text: t("load_failed") }));
});
