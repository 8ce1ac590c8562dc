// Right pane: the patient 360 — demographics, identities, tags, visits and every past conversation.

import { api } from "./api.js";
import { h, setChildren, initials, icon } from "./dom.js";
import { t, choice, dayKey, shortTime, fullTime, formatMoney, IS_ZH } from "./i18n.js";
import { patientName, vipBadge } from "./list.js";

export class PatientPanel {
  constructor(root, { onOpen }) {
    this.root = root;
    this.onOpen = onOpen;
    this.patient = null;
    this.patientId = null;
    this.conversationId = null;
    this.token = 0;
    this.root.dataset.testid = "patient-panel";
    this.showEmpty();
  }

  showEmpty() {
    this.patient = null;
    this.patientId = null;
    setChildren(this.root, h("div", { class: "pane-head" }, h("h2", { class: "pane-title" }, t("patient"))), h("div", { class: "empty" }, t("patient_empty")));
  }

  async load(patientId, conversationId) {
    this.conversationId = conversationId;
    if (patientId === this.patientId && this.patient) {
      this.#render();
      return;
    }
    const token = ++this.token;
    this.patientId = patientId;
    this.root.classList.add("is-loading");
    try {
      const patient = await api(`/patients/${patientId}/`);
      if (token !== this.token) return;
      this.patient = patient;
      this.#render();
    } catch (error) {
      if (token !== this.token) return;
      this.patient = null;
      setChildren(
        this.root,
        h("div", { class: "pane-head" }, h("h2", { class: "pane-title" }, t("patient"))),
        h("div", { class: "inline-error", role: "alert" }, t("patient_failed", { error: error.message })),
      );
    } finally {
      if (token === this.token) this.root.classList.remove("is-loading");
    }
  }

  /** A fresh patient 360 from an action (e.g. recording consent). */
  setPatient(patient) {
    if (!patient || patient.id !== this.patientId) return;
    this.patient = patient;
    this.#render();
  }

  /** patient.update: reload if it is ours; follow a merge to the surviving record. */
  onPatientUpdated(event) {
    if (!this.patientId || event.patient_id !== this.patientId) return;
    const next = event.merged_into || event.patient_id;
    this.patientId = null;
    this.load(next, this.conversationId);
  }

  /** conversation.add / update: keep the patient's conversation history current. */
  onConversation(c) {
    if (!this.patient || c.patient?.id !== this.patient.id) return;
    const list = this.patient.conversations || [];
    const index = list.findIndex((x) => x.id === c.id);
    if (index >= 0) list[index] = c;
    else list.unshift(c);
    list.sort((a, b) => Date.parse(b.last_message_at) - Date.parse(a.last_message_at));
    // Names and VIP tier travel with each conversation; keep the header in step.
    this.patient.name = c.patient.name;
    this.patient.vip_tier = c.patient.vip_tier;
    this.#render();
  }

  setActiveConversation(id) {
    this.conversationId = id;
    if (this.patient) this.#render();
  }

  #render() {
    const p = this.patient;
    const scrollTop = this.root.querySelector(".patient-scroll")?.scrollTop || 0;
    const phones = p.identities.filter((i) => i.kind === "phone");
    const location = [p.region, p.city].filter(Boolean).join(" · ");
    const age = p.age === null || p.age === undefined ? t("unknown") : `${t("age_years", { n: p.age })} (${p.age_band})`;

    const header = h(
      "div",
      { class: "patient-head" },
      h("span", { class: "avatar avatar-lg", "aria-hidden": "true" }, initials(p.name)),
      h(
        "div",
        { class: "patient-id" },
        h("h2", { class: "patient-name", dataset: { testid: "patient-name" } }, patientName(p)),
        h("div", { class: "patient-sub" }, t("patient_number", { id: p.id }), phones[0] ? ` · ${phones[0].value}` : ""),
        h("div", { class: "patient-badges" }, vipBadge(p.vip_tier)),
      ),
    );

    const facts = h(
      "dl",
      { class: "facts" },
      fact(t("vip_tier"), p.vip_tier && p.vip_tier !== "none" ? choice("vip", p.vip_tier) : t("not_vip")),
      fact(t("gender"), choice("gender", p.gender)),
      fact(t("age"), age),
      fact(t("birth_date"), p.birth_date || "—"),
      fact(t("region_city"), location || "—"),
      fact(t("language"), choice("language", p.language)),
    );

    const identities = h(
      "ul",
      { class: "identity-list" },
      p.identities.length
        ? p.identities.map((i) =>
            h("li", null, h("span", { class: "identity-kind" }, choice("identity", i.kind)), h("span", { class: "identity-value" }, i.value)),
          )
        : h("li", { class: "muted" }, "—"),
    );

    const tags = h(
      "div",
      { class: "tag-list" },
      p.tags.length ? p.tags.map((tag) => h("span", { class: "tag" }, tag)) : h("span", { class: "muted" }, t("no_tags")),
    );

    const visits = p.visits.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "visits", dataset: { testid: "visits-table" } },
            h("caption", { class: "visually-hidden" }, t("visits")),
            h("colgroup", null, h("col", { class: "col-date" }), h("col"), h("col", { class: "col-amount" })),
            h(
              "thead",
              null,
              h(
                "tr",
                null,
                h("th", { scope: "col" }, t("date"), h("span", { class: "th-sub" }, t("visit_kind"))),
                h("th", { scope: "col" }, t("department"), h("span", { class: "th-sub" }, t("doctor"), " · ", t("package"))),
                h("th", { scope: "col", class: "num" }, t("amount")),
              ),
            ),
            h(
              "tbody",
              null,
              p.visits.map((v) =>
                h(
                  "tr",
                  { title: v.visit_number, dataset: { testid: "visit-row" } },
                  h(
                    "td",
                    null,
                    h("time", { class: "nowrap", datetime: v.admitted_at }, dayKey(new Date(v.admitted_at))),
                    h("div", { class: "cell-sub" }, choice("visit_kind", v.kind)),
                  ),
                  h(
                    "td",
                    null,
                    h("div", { class: "cell-main" }, deptName(v.department)),
                    h("div", { class: "cell-sub" }, v.doctor || "—"),
                    v.package ? h("div", { class: "cell-sub cell-package" }, v.package) : null,
                  ),
                  h("td", { class: "num" }, formatMoney(v.amount)),
                ),
              ),
            ),
          ),
        )
      : h("div", { class: "muted" }, t("no_visits"));

    const conversations = h(
      "ul",
      { class: "history", dataset: { testid: "patient-conversations" } },
      (p.conversations || []).map((c) => {
        const current = c.id === this.conversationId;
        return h(
          "li",
          null,
          h(
            "a",
            {
              href: `?conversation=${c.id}`,
              class: `history-item${current ? " is-current" : ""}`,
              "aria-current": current ? "true" : null,
              dataset: { testid: "patient-conversation", conversationId: c.id },
              onclick: (event) => {
                if (event.metaKey || event.ctrlKey || event.shiftKey) return;
                event.preventDefault();
                this.onOpen(c.id);
              },
            },
            h(
              "span",
              { class: "history-top" },
              h("span", { class: "history-channel" }, choice("channel", c.inbox.channel_type), " · ", c.inbox.name),
              h("time", { datetime: c.last_message_at, title: fullTime(c.last_message_at) }, shortTime(c.last_message_at)),
            ),
            h("span", { class: "history-preview" }, c.last_message_preview || t("no_messages")),
            h(
              "span",
              { class: "history-meta" },
              h("span", { class: `badge badge-status-${c.status}` }, choice("status", c.status)),
              c.assignee
                ? h("span", { class: "history-assignee", title: t("assignee") }, icon("user", "icon icon-sm"), c.assignee.name)
                : null,
              current ? h("span", { class: "history-current" }, t("viewing")) : null,
            ),
          ),
        );
      }),
    );

    setChildren(
      this.root,
      h("div", { class: "pane-head" }, h("h2", { class: "pane-title" }, t("patient"))),
      h(
        "div",
        { class: "patient-scroll" },
        header,
        section(t("profile"), facts),
        p.consent ? section(t("consent"), consentBlock(p.consent)) : null,
        section(t("identities"), identities),
        section(t("tags"), tags),
        section(t("visits_n", { n: p.visits.length }), visits),
        section(t("conversations_all_channels", { n: (p.conversations || []).length }), conversations),
      ),
    );
    const scroller = this.root.querySelector(".patient-scroll");
    if (scroller) scroller.scrollTop = scrollTop;
  }
}

function consentBlock(consent) {
  const row = (purpose) => {
    const status = consent[purpose] || "opted_in";
    return h(
      "div",
      { class: "consent-row", dataset: { testid: `consent-${purpose}`, status } },
      h("span", { class: "consent-purpose" }, choice("consent_purpose", purpose)),
      h("span", { class: `badge ${status === "opted_out" ? "badge-consent-out" : "badge-consent-in"}` }, choice("consent_status", status)),
    );
  };
  const history = (consent.history || []).slice(0, 3).map((c) =>
    h(
      "li",
      null,
      h("time", { datetime: c.at, title: fullTime(c.at) }, shortTime(c.at)),
      " · ",
      choice("consent_purpose", c.purpose),
      ": ",
      choice("consent_status", c.status),
      " · ",
      choice("consent_source", c.source),
      c.keyword ? ` “${c.keyword}”` : "",
      c.by ? ` · ${c.by}` : "",
    ),
  );
  return h("div", { class: "consent" }, row("marketing"), row("service"), history.length ? h("ul", { class: "consent-history" }, history) : null);
}

function fact(label, value) {
  return h("div", { class: "fact" }, h("dt", null, label), h("dd", null, value));
}

function section(title, body) {
  return h("section", { class: "panel-section" }, h("h3", null, title), body);
}

function deptName(department) {
  if (!department) return "—";
  return (IS_ZH && department.name_zh) || department.name;
}
