// The follow-up nurse worklist (出院随访): tabs of call tasks by contact deadline, one task's discharge and
// call script, and the patient 360 panel borrowed from the inbox. Plain ES module, no build step; every
// value that can carry data is rendered through textContent (the dom.js helpers), never innerHTML.

import { api, qs } from "../contactcenter/inbox/api.js";
import { h, setChildren, initials } from "../contactcenter/inbox/dom.js";
import { PatientPanel } from "../contactcenter/inbox/patient.js";

// --- Strings and formatting ------------------------------------------------------------------------

const source = document.getElementById("worklist-i18n");
const data = source ? JSON.parse(source.textContent) : { strings: {}, choices: {}, config: {} };
const config = data.config || {};
const LANG = (config.lang || document.documentElement.lang || "en").toLowerCase();
const IS_ZH = LANG.startsWith("zh");
const LOCALE = IS_ZH ? "zh-CN" : "en-GB";
const TIME_ZONE = config.timeZone || undefined;
const VIEWS = ["due", "overdue", "mine", "upcoming", "escalated", "done"];
const OUTCOMES = ["reached", "no_answer", "busy", "wrong_number", "declined", "deceased", "readmitted"];
const POLL_MS = 30000;
const PAGE = 50;

function t(key, vars) {
  let text = data.strings[key];
  if (text === undefined) {
    console.warn("worklist: missing string", key);
    text = key;
  }
  if (vars) text = text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  return text;
}

function choice(group, value) {
  const labels = data.choices[group] || {};
  return value in labels ? labels[value] : String(value ?? "");
}

const fmtDate = new Intl.DateTimeFormat(LOCALE, { timeZone: TIME_ZONE, year: "numeric", month: "2-digit", day: "2-digit" });
const fmtTime = new Intl.DateTimeFormat(LOCALE, { timeZone: TIME_ZONE, hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const fmtFull = new Intl.DateTimeFormat(LOCALE, {
  timeZone: TIME_ZONE,
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});

const dateOnly = (iso) => (iso ? fmtDate.format(new Date(iso)) : "—");
const fullTime = (iso) => (iso ? fmtFull.format(new Date(iso)) : "—");
const deptName = (d) => (d ? (IS_ZH && d.name_zh) || d.name : "—");
const patientName = (p) => p.name || t("patient_number", { id: p.id });
const prompt = (q) => (IS_ZH ? q.prompt_zh || q.prompt_en : q.prompt_en || q.prompt_zh) || q.key;
const choiceLabel = (c) => (IS_ZH ? c.label_zh || c.label_en : c.label_en || c.label_zh) || c.value;

/** "Due in 1 business day", "Due in 3 h", "Overdue by 2 h" — and whether to paint it red. */
function deadlineText(task, now = Date.now()) {
  const deadline = Date.parse(task.deadline_at);
  const hours = Math.abs(deadline - now) / 3600000;
  const days = task.deadline_business_days;
  if (deadline <= now) {
    if (days !== null && days <= -2) return { text: t("overdue_by_days", { n: -days }), overdue: true };
    if (days === -1 && hours >= 24) return { text: t("overdue_by_one_day"), overdue: true };
    return { text: t("overdue_by_hours", { n: Math.max(1, Math.floor(hours)) }), overdue: true };
  }
  if (days === null) return { text: t("deadline_at", { time: fullTime(task.deadline_at) }), overdue: false };
  if (days >= 2) return { text: t("due_in_days", { n: days }), overdue: false };
  if (days === 1) return { text: t("due_in_one_day"), overdue: false };
  if (hours < 1) return { text: t("due_in_minutes", { n: Math.max(1, Math.round(hours * 60)) }), overdue: false };
  return { text: t("due_in_hours", { n: Math.floor(hours) }), overdue: false };
}

function stepText(task) {
  if (!task.step) return t("step_call");
  return t("step_label", { n: task.step.position, day: task.step.offset_days });
}

function badge(text, cls, testid) {
  return h("span", { class: `badge ${cls}`, dataset: { testid } }, text);
}

// --- Worklist (left pane) ----------------------------------------------------------------------------

class TaskList {
  constructor(root, { me, onOpen, onChanged }) {
    this.root = root;
    this.me = me;
    this.onOpen = onOpen;
    this.onChanged = onChanged;
    this.view = VIEWS.includes(new URLSearchParams(location.search).get("view")) ? new URLSearchParams(location.search).get("view") : "due";
    this.department = "";
    this.rows = [];
    this.count = 0;
    this.counts = {};
    this.activeId = null;
    this.token = 0;
    this.#build();
  }

  #build() {
    this.tabs = h("div", { class: "tabs worklist-tabs", role: "tablist", "aria-label": t("worklist_views") });
    this.tabButtons = {};
    for (const view of VIEWS) {
      const count = h("span", { class: "tab-count", dataset: { testid: "tab-count" } }, "");
      const button = h(
        "button",
        {
          type: "button",
          class: "tab",
          role: "tab",
          "aria-selected": String(view === this.view),
          dataset: { testid: `tab-${view}`, view },
          onclick: () => this.setView(view),
        },
        h("span", { class: "tab-label" }, t(`tab_${view}`)),
        count,
      );
      this.tabButtons[view] = { button, count };
      this.tabs.append(button);
    }
    this.departmentSelect = h(
      "select",
      {
        class: "field field-sm",
        "aria-label": t("department"),
        dataset: { testid: "department-filter" },
        onchange: () => {
          this.department = this.departmentSelect.value;
          this.reload();
        },
      },
      h("option", { value: "" }, t("all_departments")),
    );
    this.summary = h("div", { class: "list-summary", role: "status" });
    this.error = h("div", { class: "inline-error", role: "alert", hidden: true });
    this.list = h("ul", { class: "task-list", dataset: { testid: "task-list" } });
    this.more = h("button", { type: "button", class: "btn btn-sm load-more", hidden: true, onclick: () => this.#load(true) }, t("load_more"));
    setChildren(
      this.root,
      h(
        "div",
        { class: "pane-head" },
        h("h2", { class: "pane-title" }, t("follow_up_tasks")),
        this.tabs,
        h("div", { class: "worklist-filters" }, this.departmentSelect, h("button", { type: "button", class: "btn btn-sm btn-ghost", onclick: () => this.reload() }, t("refresh"))),
      ),
      this.error,
      h("div", { class: "list-scroll" }, this.summary, this.list, this.more),
    );
  }

  setDepartments(departments) {
    for (const d of departments) this.departmentSelect.append(h("option", { value: d.id }, deptName(d)));
    if (departments.length < 2) this.departmentSelect.hidden = true;
  }

  setView(view) {
    if (view === this.view) return;
    this.view = view;
    for (const [name, { button }] of Object.entries(this.tabButtons)) button.setAttribute("aria-selected", String(name === view));
    const url = new URL(location.href);
    url.searchParams.set("view", view);
    history.replaceState(null, "", url);
    this.reload();
  }

  setActive(id) {
    this.activeId = id;
    for (const el of this.list.children) el.classList.toggle("is-active", Number(el.dataset.taskId) === id);
  }

  async reload() {
    await Promise.all([this.#load(false), this.#loadCounts()]);
  }

  async #loadCounts() {
    try {
      this.counts = await api(`/followup/tasks/counts/${qs({ department: this.department })}`);
      for (const [view, { count }] of Object.entries(this.tabButtons)) {
        const n = this.counts[view] ?? 0;
        count.textContent = String(n);
        count.classList.toggle("is-alert", n > 0 && (view === "overdue" || view === "escalated"));
      }
    } catch (error) {
      console.warn("worklist: counts failed", error);
    }
  }

  async #load(append) {
    const token = ++this.token;
    const offset = append ? this.rows.length : 0;
    try {
      const page = await api(`/followup/tasks/${qs({ view: this.view, department: this.department, limit: PAGE, offset })}`);
      if (token !== this.token) return;
      this.rows = append ? [...this.rows, ...page.results] : page.results;
      this.count = page.count;
      this.error.hidden = true;
      this.render();
    } catch (error) {
      if (token !== this.token) return;
      this.error.textContent = t("list_failed", { error: error.message });
      this.error.hidden = false;
    }
  }

  render() {
    this.summary.textContent = this.count === 1 ? t("one_task") : t("n_tasks", { n: this.count });
    setChildren(this.list, this.rows.length ? this.rows.map((task) => this.#row(task)) : h("li", { class: "empty", dataset: { testid: "worklist-empty" } }, t(`empty_${this.view}`)));
    this.more.hidden = this.rows.length >= this.count;
    this.setActive(this.activeId);
  }

  #row(task) {
    const deadline = deadlineText(task);
    const mine = task.assignee && task.assignee.id === this.me.id;
    let when;
    if (task.waiting_for_retry) when = h("span", { class: "task-deadline", dataset: { testid: "task-deadline" } }, t("retry_at", { time: fullTime(task.retry_at) }));
    else if (task.status === "scheduled") when = h("span", { class: "task-deadline", dataset: { testid: "task-deadline" } }, t("scheduled_from", { time: fullTime(task.due_at) }));
    else if (["completed", "unreachable", "cancelled", "excluded", "expired"].includes(task.status))
      // An expired task says why (the plan note) on hover; the task itself shows the note in full.
      when = h(
        "span",
        { class: `task-deadline${task.status === "expired" ? " is-expired" : ""}`, title: task.plan_note || null, dataset: { testid: "task-deadline" } },
        task.outcome ? choice("outcome", task.outcome) : choice("status", task.status),
      );
    else
      when = h(
        "time",
        {
          class: `task-deadline${deadline.overdue ? " is-overdue" : ""}`,
          datetime: task.deadline_at,
          title: t("deadline_at", { time: fullTime(task.deadline_at) }),
          dataset: { testid: "task-deadline", overdue: String(deadline.overdue) },
        },
        deadline.text,
      );
    const claimable = task.status === "open" && !task.waiting_for_retry;
    return h(
      "li",
      { class: `task-row${task.overdue ? " is-overdue" : ""}`, dataset: { testid: "task-row", taskId: task.id, status: task.status } },
      h(
        "button",
        { type: "button", class: "task-link", onclick: () => this.onOpen(task.id) },
        h("span", { class: "avatar", "aria-hidden": "true" }, initials(task.patient.name)),
        h(
          "span",
          { class: "task-body" },
          h(
            "span",
            { class: "task-line" },
            h("span", { class: "task-name", dataset: { testid: "task-patient" } }, patientName(task.patient)),
            h("span", { class: "task-phone", dataset: { testid: "task-phone" } }, task.patient.phone_masked),
          ),
          h("span", { class: "task-line task-sub" }, deptName(task.department), " · ", t("discharged_on", { date: dateOnly(task.discharge.discharged_at) }), " · ", stepText(task)),
          h(
            "span",
            { class: "task-line task-meta" },
            when,
            h("span", { class: "task-attempts", dataset: { testid: "task-attempts" } }, t("attempts", { n: task.attempt_count, max: task.max_attempts })),
            task.escalated_at ? badge(t("escalated"), "badge-escalated", "escalated-badge") : null,
            task.phone_needs_review ? badge(t("phone_review"), "badge-phone-review", "phone-review-badge") : null,
            task.assignee && task.status === "in_progress"
              ? h("span", { class: "task-assignee" }, mine ? t("claimed_by_you") : t("claimed_by", { name: task.assignee.name }))
              : null,
          ),
        ),
      ),
      claimable
        ? h("button", { type: "button", class: "btn btn-sm btn-primary task-claim", dataset: { testid: "claim-button" }, onclick: () => this.onChanged(task.id, "claim") }, t("claim"))
        : null,
    );
  }
}

// --- One task (centre pane) --------------------------------------------------------------------------

class TaskView {
  constructor(root, { me, onChanged, onPatient, onLeftList }) {
    this.root = root;
    this.me = me;
    this.onChanged = onChanged;
    this.onPatient = onPatient;
    this.onLeftList = onLeftList;
    this.task = null;
    this.token = 0;
    this.form = null;
    this.showPlaceholder();
  }

  showPlaceholder() {
    this.task = null;
    setChildren(this.root, h("div", { class: "conv-placeholder" }, h("h2", null, t("select_task")), h("p", null, t("select_task_hint"))));
  }

  async open(id) {
    const token = ++this.token;
    this.root.classList.add("is-loading");
    try {
      const task = await api(`/followup/tasks/${id}/`);
      if (token !== this.token) return;
      // A fresh load keeps what the nurse typed only when it is the same task she was filling in.
      const keep = this.task && this.task.id === task.id ? this.form : null;
      this.task = task;
      this.#render(keep);
    } catch (error) {
      if (token !== this.token) return;
      this.task = null;
      const text = error.status === 404 ? t("task_not_found") : t("task_failed", { error: error.message });
      setChildren(this.root, h("div", { class: "conv-placeholder" }, h("p", { class: "inline-error", role: "alert" }, text)));
    } finally {
      if (token === this.token) this.root.classList.remove("is-loading");
    }
  }

  #heldByMe() {
    const task = this.task;
    return task.status === "in_progress" && task.assignee && task.assignee.id === this.me.id;
  }

  #render(keepForm) {
    const task = this.task;
    const p = task.patient;
    const d = task.discharge;
    const deadline = deadlineText(task);
    const active = task.status === "open" || task.status === "in_progress";

    const actions = h("div", { class: "task-actions" });
    if (task.status === "open" && !task.waiting_for_retry) {
      actions.append(h("button", { type: "button", class: "btn btn-primary", dataset: { testid: "detail-claim" }, onclick: () => this.onChanged(task.id, "claim") }, t("claim")));
    }
    if (task.status === "in_progress" && (this.#heldByMe() || this.me.sees_all)) {
      actions.append(h("button", { type: "button", class: "btn", dataset: { testid: "release-button" }, onclick: () => this.onChanged(task.id, "release") }, t("release")));
    }
    if (p.phone) {
      actions.append(h("a", { class: "btn btn-success", href: `tel:${p.phone}`, dataset: { testid: "tel-link" } }, t("call_patient", { phone: p.phone_masked })));
    }

    const header = h(
      "header",
      { class: "task-header" },
      h(
        "div",
        { class: "task-title-row" },
        h("span", { class: "avatar avatar-lg", "aria-hidden": "true" }, initials(p.name)),
        h(
          "div",
          { class: "task-heading" },
          h("h2", { class: "task-title", dataset: { testid: "detail-patient" } }, patientName(p)),
          h(
            "div",
            { class: "task-subtitle" },
            // No readable phone (the HIS's number is flagged for review): no empty slot before the separator.
            p.phone_masked ? `${p.phone_masked} · ` : null,
            [choice("gender", p.gender), p.age !== null && p.age !== undefined ? t("age_years", { n: p.age }) : null].filter(Boolean).join(" · "),
            " · ",
            deptName(task.department),
            " · ",
            stepText(task),
          ),
        ),
        actions,
      ),
      h(
        "div",
        { class: "task-status-row" },
        badge(choice("status", task.status), `badge-task-${task.status}`, "detail-status"),
        task.outcome ? badge(choice("outcome", task.outcome), "badge-outcome", "detail-outcome") : null,
        active
          ? h("span", { class: `task-deadline${deadline.overdue ? " is-overdue" : ""}`, dataset: { testid: "detail-deadline" }, title: t("deadline_at", { time: fullTime(task.deadline_at) }) }, deadline.text)
          : null,
        h("span", { class: "muted" }, t("deadline_at", { time: fullTime(task.deadline_at) })),
        h("span", { class: "task-attempts", dataset: { testid: "detail-attempts" } }, t("attempts", { n: task.attempt_count, max: task.max_attempts })),
        task.escalated_at ? badge(t("escalated"), "badge-escalated", "detail-escalated") : null,
        task.phone_needs_review ? badge(t("phone_review"), "badge-phone-review", "detail-phone-review") : null,
        task.assignee && task.status === "in_progress"
          ? h("span", { class: "task-assignee" }, task.assignee.id === this.me.id ? t("claimed_by_you") : t("claimed_by", { name: task.assignee.name }))
          : null,
      ),
      h("div", { class: "inline-error", role: "alert", hidden: true, dataset: { testid: "task-error" } }),
    );
    this.errorBox = header.querySelector('[data-testid="task-error"]');

    const facts = h(
      "dl",
      { class: "facts task-facts", dataset: { testid: "discharge-facts" } },
      fact(t("department"), deptName(d.department)),
      fact(t("ward"), d.ward || "—"),
      fact(t("doctor"), d.attending_doctor || "—"),
      fact(t("primary_nurse"), d.primary_nurse || "—"),
      fact(t("discharge_date"), dateOnly(d.discharged_at)),
      fact(t("disposition"), choice("disposition", d.disposition)),
      fact(t("visit_number"), d.visit_number),
      d.his_department_code ? fact(t("his_department_code"), d.his_department_code) : null,
      fact(
        t("diagnoses"),
        d.diagnoses_visible
          ? (d.diagnoses || []).map((x) => [x.code, x.text].filter(Boolean).join(" ")).join("; ") || "—"
          : h("span", { class: "muted" }, t("diagnoses_hidden")),
      ),
      task.plan_note ? fact(t("plan_note"), task.plan_note) : null,
    );

    let notice = null;
    if (task.waiting_for_retry) notice = t("waiting_retry", { time: fullTime(task.retry_at) });
    else if (task.status === "scheduled") notice = t("not_due_yet", { time: fullTime(task.due_at) });
    else if (!active) notice = t("task_closed", { status: task.outcome ? choice("outcome", task.outcome) : choice("status", task.status) });
    else if (!this.#heldByMe()) notice = t("claim_first");

    const formSection = this.#heldByMe() ? this.#form(keepForm) : null;
    if (!formSection) this.form = null;

    setChildren(
      this.root,
      header,
      h(
        "div",
        { class: "task-scroll" },
        notice ? h("p", { class: "alert alert-info", dataset: { testid: "task-notice" } }, notice) : null,
        task.phone_needs_review ? this.#phoneReview() : null,
        section(
          t("discharge"),
          facts,
          h("button", { type: "button", class: "btn btn-sm", dataset: { testid: "open-patient-360" }, onclick: () => this.onPatient(p.id) }, t("open_patient_360")),
        ),
        formSection,
        section(t("history"), this.#history()),
        task.cases.length
          ? section(
              t("cases"),
              h("ul", { class: "case-list" }, task.cases.map((c) => h("li", { dataset: { testid: "task-case" } }, t("case_number", { id: c.id }), " · ", choice("case_status", c.status), " · ", fullTime(c.created_at)))),
            )
          : null,
      ),
    );
  }

  #form(keep) {
    const task = this.task;
    const questions = task.call_script ? task.call_script.questions : [];
    const state = keep || { answers: {}, outcome: null, notes: "", openCase: false };
    this.form = state;
    const errors = {};

    const fieldError = (key) => {
      const el = h("div", { class: "error-text", role: "alert", hidden: true, dataset: { testid: `error-${key}` } });
      errors[key] = el;
      return el;
    };

    const pressGroup = (group, value) => {
      for (const b of group.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.value === String(value)));
    };

    const questionEls = questions.map((q) => {
      let input;
      if (q.kind === "rating" || q.kind === "yes_no" || (q.kind === "choice" && q.choices.length <= 5)) {
        const options =
          q.kind === "rating"
            ? [1, 2, 3, 4, 5].map((n) => ({ value: String(n), label: String(n), title: t("rating_of", { n }) }))
            : q.kind === "yes_no"
              ? [
                  { value: "true", label: t("yes") },
                  { value: "false", label: t("no") },
                ]
              : q.choices.map((c) => ({ value: c.value, label: choiceLabel(c) }));
        input = h("div", { class: `answer-buttons answer-${q.kind}`, role: "group", "aria-label": prompt(q) });
        for (const o of options) {
          input.append(
            h(
              "button",
              {
                type: "button",
                class: "btn btn-sm answer-button",
                title: o.title,
                "aria-pressed": "false",
                dataset: { value: o.value, testid: `answer-${q.key}-${o.value}` },
                onclick: () => {
                  const current = state.answers[q.key];
                  const next = q.kind === "rating" ? Number(o.value) : q.kind === "yes_no" ? o.value === "true" : o.value;
                  state.answers[q.key] = current === next ? null : next;
                  pressGroup(input, state.answers[q.key] ?? "");
                },
              },
              o.label,
            ),
          );
        }
        pressGroup(input, state.answers[q.key] ?? "");
      } else if (q.kind === "choice") {
        input = h(
          "select",
          { class: "field", dataset: { testid: `answer-${q.key}` }, onchange: () => (state.answers[q.key] = input.value || null) },
          h("option", { value: "" }, t("choose")),
          q.choices.map((c) => h("option", { value: c.value, selected: state.answers[q.key] === c.value }, choiceLabel(c))),
        );
      } else {
        input = h("textarea", {
          class: "field",
          rows: 2,
          maxlength: 2000,
          value: state.answers[q.key] || "",
          dataset: { testid: `answer-${q.key}` },
          oninput: () => (state.answers[q.key] = input.value),
        });
      }
      return h(
        "div",
        { class: "question", dataset: { testid: "script-question", key: q.key } },
        h("div", { class: "question-prompt" }, prompt(q), q.required ? h("span", { class: "required-mark" }, ` (${t("required")})`) : null),
        input,
        fieldError(`answers.${q.key}`),
      );
    });

    const outcomes = h("div", { class: "answer-buttons outcome-buttons", role: "group", "aria-label": t("outcome") });
    for (const outcome of OUTCOMES) {
      outcomes.append(
        h(
          "button",
          {
            type: "button",
            class: `btn btn-sm outcome-button outcome-${outcome}`,
            "aria-pressed": String(state.outcome === outcome),
            dataset: { value: outcome, testid: `outcome-${outcome}` },
            onclick: () => {
              state.outcome = outcome;
              pressGroup(outcomes, outcome);
            },
          },
          choice("outcome", outcome),
        ),
      );
    }
    const notes = h("textarea", {
      class: "field",
      rows: 3,
      maxlength: 4000,
      placeholder: t("notes_placeholder"),
      value: state.notes,
      dataset: { testid: "attempt-notes" },
      oninput: () => (state.notes = notes.value),
    });
    const openCase = h("input", { type: "checkbox", checked: state.openCase, dataset: { testid: "open-case" }, onchange: () => (state.openCase = openCase.checked) });
    const save = h("button", { type: "submit", class: "btn btn-primary", dataset: { testid: "save-attempt" } }, t("save_attempt"));
    const formError = fieldError("form");

    const form = h(
      "form",
      {
        class: "attempt-form",
        dataset: { testid: "attempt-form" },
        onsubmit: async (event) => {
          event.preventDefault();
          for (const el of Object.values(errors)) el.hidden = true;
          if (!state.outcome) {
            formError.textContent = t("choose_outcome");
            formError.hidden = false;
            return;
          }
          const answers = {};
          for (const [key, value] of Object.entries(state.answers)) if (value !== null && value !== "" && value !== undefined) answers[key] = value;
          save.disabled = true;
          save.textContent = t("saving");
          try {
            await api(`/followup/tasks/${task.id}/attempts/`, {
              method: "POST",
              body: { outcome: state.outcome, answers, notes: state.notes, open_case: state.openCase },
            });
            this.form = null;
            this.task = null; // a fresh form after the reload
            await this.onChanged(task.id, null);
          } catch (error) {
            let shown = false;
            for (const [key, messages] of Object.entries(error.fields || {})) {
              const el = errors[key];
              if (el) {
                el.textContent = [].concat(messages).join(" ");
                el.hidden = false;
                shown = true;
              }
            }
            if (!shown) {
              formError.textContent = error.message;
              formError.hidden = false;
            }
          } finally {
            save.disabled = false;
            save.textContent = t("save_attempt");
          }
        },
      },
      questionEls.length ? h("div", { class: "questions" }, questionEls) : h("p", { class: "muted" }, t("no_script")),
      h("div", { class: "form-row" }, h("div", { class: "question-prompt" }, t("outcome")), outcomes, fieldError("outcome")),
      h("div", { class: "form-row" }, h("label", null, t("notes"), notes), fieldError("notes")),
      h("div", { class: "form-row" }, h("label", { class: "checkbox-row" }, openCase, " ", t("open_case")), h("div", { class: "form-hint" }, t("open_case_hint"))),
      formError,
      h("div", { class: "form-actions" }, save),
    );
    return section(task.call_script ? `${t("call_script")} · ${(IS_ZH && task.call_script.name_zh) || task.call_script.name}` : t("call_script"), form);
  }

  /** The HIS's number could not be read: show it as sent, and take the number to call instead. */
  #phoneReview() {
    const task = this.task;
    const input = h("input", {
      type: "tel",
      class: "field",
      maxlength: 80,
      autocomplete: "off",
      "aria-label": t("phone_correct_label"),
      placeholder: t("phone_placeholder"),
      dataset: { testid: "phone-review-input" },
    });
    const error = h("div", { class: "error-text", role: "alert", hidden: true, dataset: { testid: "phone-review-error" } });
    const save = h("button", { type: "submit", class: "btn btn-primary btn-sm", dataset: { testid: "phone-review-save" } }, t("phone_save"));
    const form = h(
      "form",
      {
        class: "phone-review-form",
        onsubmit: async (event) => {
          event.preventDefault();
          error.hidden = true;
          save.disabled = true;
          try {
            const row = await api(`/followup/tasks/${task.id}/phone/`, { method: "POST", body: { phone: input.value } });
            if (row.kind === "call") {
              await this.onChanged(task.id, null);
            } else {
              // With a readable mobile the step is an SMS survey again: it leaves the nurses' list.
              await this.onLeftList();
              setChildren(this.root, h("div", { class: "conv-placeholder" }, h("p", { class: "alert alert-info", dataset: { testid: "phone-fixed-sms" } }, t("phone_fixed_sms"))));
            }
          } catch (failure) {
            error.textContent = [].concat((failure.fields || {}).phone || failure.message).join(" ");
            error.hidden = false;
          } finally {
            save.disabled = false;
          }
        },
      },
      h("label", null, t("phone_correct_label"), input),
      save,
      error,
    );
    return h(
      "section",
      { class: "panel-section phone-review", dataset: { testid: "phone-review" } },
      h("h3", null, t("phone_review_title")),
      h("p", { class: "alert alert-phone-review" }, t("phone_review_text", { phone: task.discharge.phone_as_sent || "—" })),
      form,
    );
  }

  #history() {
    const attempts = this.task.attempts;
    if (!attempts.length) return h("p", { class: "muted" }, t("no_attempts"));
    const questions = new Map((this.task.call_script?.questions || []).map((q) => [q.key, q]));
    return h(
      "ol",
      { class: "attempt-list", dataset: { testid: "attempt-history" } },
      attempts.map((a) =>
        h(
          "li",
          { class: "attempt", dataset: { testid: "attempt", outcome: a.outcome } },
          h("div", { class: "attempt-head" }, badge(choice("outcome", a.outcome), `badge-outcome outcome-${a.outcome}`, "attempt-outcome"), " ", fullTime(a.attempted_at), " · ", t("by_name", { name: a.nurse.name })),
          Object.keys(a.answers).length
            ? h(
                "dl",
                { class: "attempt-answers" },
                Object.entries(a.answers).map(([key, value]) => {
                  const q = questions.get(key);
                  const label = q ? prompt(q) : key;
                  const shown = value === true ? t("yes") : value === false ? t("no") : q && q.kind === "choice" ? choiceLabel(q.choices.find((c) => c.value === value) || { value }) : String(value);
                  return fact(label, shown);
                }),
              )
            : null,
          a.notes ? h("p", { class: "attempt-notes" }, a.notes) : null,
        ),
      ),
    );
  }

  showError(message) {
    if (!this.errorBox) return;
    this.errorBox.textContent = message;
    this.errorBox.hidden = false;
  }
}

function fact(label, value) {
  return h("div", { class: "fact" }, h("dt", null, label), h("dd", null, value));
}

function section(title, ...body) {
  return h("section", { class: "panel-section" }, h("h3", null, title), body);
}

// --- Wiring --------------------------------------------------------------------------------------------

async function start() {
  const listRoot = document.getElementById("worklist-list");
  const taskRoot = document.getElementById("worklist-task");
  const patientRoot = document.getElementById("pane-patient");

  let me;
  let departments;
  try {
    [me, departments] = await Promise.all([api("/me/"), api("/followup/departments/")]);
  } catch (error) {
    setChildren(taskRoot, h("div", { class: "conv-placeholder" }, h("h2", null, t("load_failed")), h("p", null, error.message)));
    return;
  }
  me.sees_all = me.role === "admin" || me.role === "supervisor";

  let currentId = null;

  async function refresh() {
    await list.reload();
    if (currentId) await view.open(currentId);
  }

  async function act(id, action) {
    try {
      if (action) await api(`/followup/tasks/${id}/${action}/`, { method: "POST" });
    } catch (error) {
      if (currentId !== id) open(id);
      await refresh();
      view.showError(error.message);
      return;
    }
    currentId = id;
    list.setActive(id);
    await refresh();
  }

  function open(id) {
    currentId = id;
    list.setActive(id);
    const url = new URL(location.href);
    url.searchParams.set("task", id);
    history.replaceState(null, "", url);
    document.body.classList.remove("patient-open");
    patient.showEmpty();
    view.open(id);
  }

  const list = new TaskList(listRoot, { me, onOpen: open, onChanged: act });
  list.setDepartments(departments);
  const view = new TaskView(taskRoot, {
    me,
    onChanged: act,
    onLeftList: async () => {
      currentId = null;
      list.setActive(null);
      await list.reload();
    },
    onPatient: (patientId) => {
      document.body.classList.add("patient-open");
      patient.load(patientId, null);
    },
  });
  const patient = new PatientPanel(patientRoot, {
    onOpen: (conversationId) => {
      location.href = `/inbox/?conversation=${encodeURIComponent(conversationId)}`;
    },
  });

  await list.reload();
  const initial = Number(new URLSearchParams(location.search).get("task"));
  if (Number.isInteger(initial) && initial > 0) open(initial);

  // Tasks come due, retries come back and deadlines pass while the page is open.
  setInterval(() => {
    if (document.visibilityState === "visible") list.reload();
  }, POLL_MS);

  window.worklist = { list, view, patient, refresh };
}

start().catch((error) => console.error("worklist failed to start", error));
