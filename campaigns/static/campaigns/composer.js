// The campaign composer: audience, sending inbox, the message template with its placeholders, fallbacks
// and opt-out tail, a live clinical-detail lint (POST lint/), a live estimate of recipients, SMS segments
// and cost (GET <id>/estimate/ on the saved draft), a rendered sample (POST <id>/preview/), sending
// limits, and send now or at a time on the hospital's clock. The draft saves itself as it is edited.

import {
  api,
  alertBox,
  choice,
  config,
  debounce,
  fmtNumber,
  h,
  hospitalLocalToIso,
  isoToHospitalLocal,
  LOCALE,
  pageData,
  rowsOf,
  setChildren,
  showAlert,
  t,
} from "./campaigns.js";

const LINT_DEBOUNCE_MS = 350;
const SAVE_DEBOUNCE_MS = 700;
const PLACEHOLDERS = ["first_name", "name", "department", "last_visit_date", "vip_tier", "hospital"];
// The hospital's name always exists; every other value can be missing for some patient.
const MAY_BE_MISSING = new Set(PLACEHOLDERS.filter((p) => p !== "hospital"));
const PLACEHOLDER_RE = /\{\{[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*\}\}/g;

const money = (amount, currency) => {
  if (amount === null || amount === undefined || amount === "") return "—";
  try {
    return new Intl.NumberFormat(LOCALE, { style: "currency", currency: currency || "CNY" }).format(Number(amount));
  } catch {
    return `${amount} ${currency || ""}`.trim();
  }
};

function usedPlaceholders(body) {
  const names = [];
  for (const m of body.matchAll(PLACEHOLDER_RE)) if (!names.includes(m[1])) names.push(m[1]);
  return names;
}

function problemsOf(payload) {
  if (Array.isArray(payload)) return payload;
  if (!payload) return [];
  if (Array.isArray(payload.problems)) return payload.problems;
  // {problems: {body: [...], signature: [...]}} or {body: [...]}: flatten, naming the part.
  const source = payload.problems && typeof payload.problems === "object" ? payload.problems : payload;
  return Object.entries(source).flatMap(([part, list]) => (Array.isArray(list) ? list.map((p) => ({ ...(typeof p === "object" ? p : { message: p }), part })) : []));
}

function field(id, label, input, hint) {
  return h("div", { class: "form-row" }, h("label", { for: id }, label), input, hint ? h("span", { class: "form-hint" }, hint) : null);
}

async function composerPage(root) {
  let campaignId = pageData.campaign_id || null;
  let status = "draft";
  let segments = [];
  const error = alertBox();
  const saveState = h("span", { class: "camp-save-state", role: "status", dataset: { testid: "save-state" } }, "");

  // --- Inputs -----------------------------------------------------------------------------------------
  const nameInput = h("input", { type: "text", id: "c-name", class: "field", maxlength: "120", dataset: { testid: "campaign-name-input" } });
  const segmentSelect = h("select", { id: "c-segment", class: "field", dataset: { testid: "segment-picker" } }, h("option", { value: "" }, t("choose_segment")));
  const segmentCount = h("output", { class: "camp-inline-count", dataset: { testid: "segment-picker-count" } }, "");
  const inboxSelect = h(
    "select",
    { id: "c-inbox", class: "field", dataset: { testid: "inbox-picker" } },
    h("option", { value: "" }, t("choose_inbox")),
    (pageData.inboxes || []).map((i) => h("option", { value: i.id }, i.name)),
  );
  if ((pageData.inboxes || []).length === 1) inboxSelect.value = String(pageData.inboxes[0].id);
  const bodyInput = h("textarea", { id: "c-body", class: "field camp-body", rows: "6", maxlength: "1000", dataset: { testid: "message-body" } });
  const placeholderBar = h(
    "div",
    { class: "camp-placeholders", role: "toolbar", "aria-label": t("insert_placeholder") },
    PLACEHOLDERS.map((p) =>
      h(
        "button",
        {
          type: "button",
          class: "btn btn-sm camp-ph",
          title: choice("placeholder", p),
          dataset: { testid: `placeholder-${p}` },
          onclick: () => insertAtCursor(bodyInput, `{{ ${p} }}`),
        },
        `{{ ${p} }}`,
      ),
    ),
  );
  const fallbackBox = h("div", { class: "camp-fallbacks", dataset: { testid: "fallbacks" } });
  const fallbackInputs = {};
  const missingRadios = ["fallback", "skip"].map((v) => h("input", { type: "radio", name: "missing", value: v, id: `c-missing-${v}`, checked: v === "fallback", dataset: { testid: `missing-${v}` } }));
  const signatureInput = h("input", { type: "text", id: "c-signature", class: "field", maxlength: "30", placeholder: t("signature_placeholder"), dataset: { testid: "signature" } });
  const tailInput = h("input", { type: "text", id: "c-tail", class: "field", maxlength: "60", placeholder: t("tail_placeholder"), dataset: { testid: "opt-out-tail" } });
  const quietStart = h("input", { type: "time", id: "c-quiet-start", class: "field", value: "21:00", dataset: { testid: "quiet-start" } });
  const quietEnd = h("input", { type: "time", id: "c-quiet-end", class: "field", value: "08:00", dataset: { testid: "quiet-end" } });
  const mpsInput = h("input", { type: "number", id: "c-mps", class: "field", min: "1", max: "1000", value: "10", dataset: { testid: "messages-per-second" } });
  const whenRadios = ["now", "later"].map((v) => h("input", { type: "radio", name: "when", value: v, id: `c-when-${v}`, checked: v === "now", dataset: { testid: `when-${v}` } }));
  const atInput = h("input", { type: "datetime-local", id: "c-at", class: "field", disabled: true, dataset: { testid: "schedule-at" } });
  const sendBtn = h("button", { type: "submit", class: "btn btn-primary camp-send", dataset: { testid: "send-button" } }, t("send_now"));
  const saveBtn = h("button", { type: "button", class: "btn", dataset: { testid: "save-draft" }, onclick: () => save(true) }, t("save_draft"));

  // --- Side panel: lint, estimate, preview ----------------------------------------------------------
  const lintBox = h("div", { class: "camp-lint", dataset: { testid: "lint", state: "idle" } });
  const estimateBox = h("dl", { class: "camp-estimate", dataset: { testid: "estimate", state: "idle" } });
  const estimateNote = h("p", { class: "camp-muted camp-estimate-note" }, t("estimate_hint"));
  const previewBox = h("div", { class: "camp-preview", dataset: { testid: "preview" } }, h("p", { class: "camp-muted" }, t("preview_hint")));

  const missingValue = () => missingRadios.find((r) => r.checked)?.value || "fallback";
  const when = () => whenRadios.find((r) => r.checked)?.value || "now";

  const payload = () => {
    const fallbacks = {};
    for (const [name, input] of Object.entries(fallbackInputs)) if (input.value.trim()) fallbacks[name] = input.value.trim();
    return {
      name: nameInput.value.trim(),
      segment_id: segmentSelect.value ? Number(segmentSelect.value) : null,
      inbox_id: inboxSelect.value ? Number(inboxSelect.value) : null,
      body: bodyInput.value,
      fallbacks,
      missing_value_rule: missingValue(),
      signature: signatureInput.value.trim(),
      opt_out_tail: tailInput.value.trim(),
      quiet_hours_start: quietStart.value || "21:00",
      quiet_hours_end: quietEnd.value || "08:00",
      messages_per_second: Number(mpsInput.value) || 1,
    };
  };
  const ready = (p) => p.name && p.segment_id && p.inbox_id && p.body.trim();

  // --- Fallback inputs follow the placeholders the body uses ----------------------------------------
  const renderFallbacks = (initial = {}) => {
    const used = usedPlaceholders(bodyInput.value).filter((p) => MAY_BE_MISSING.has(p));
    for (const name of Object.keys(fallbackInputs)) if (!used.includes(name)) delete fallbackInputs[name];
    for (const name of used) {
      if (!fallbackInputs[name]) {
        fallbackInputs[name] = h("input", {
          type: "text",
          id: `c-fb-${name}`,
          class: "field field-sm",
          maxlength: "60",
          value: initial[name] ?? "",
          placeholder: t("fallback_placeholder"),
          dataset: { testid: `fallback-${name}` },
          oninput: () => changed(),
        });
      }
    }
    setChildren(
      fallbackBox,
      used.length
        ? used.map((name) => h("div", { class: "camp-fallback" }, h("label", { for: `c-fb-${name}` }, h("code", null, `{{ ${name} }}`)), fallbackInputs[name]))
        : h("p", { class: "camp-muted" }, t("no_fallbacks")),
    );
  };

  // --- Live lint ----------------------------------------------------------------------------------------
  let lintToken = 0;
  let lintProblems = [];
  let templateErrors = [];
  const lint = debounce(async () => {
    const mine = ++lintToken;
    const texts = { body: bodyInput.value, signature: signatureInput.value, opt_out_tail: tailInput.value };
    if (!texts.body.trim()) {
      lintProblems = [];
      lintBox.dataset.state = "idle";
      setChildren(lintBox);
      updateSend();
      return;
    }
    lintBox.dataset.state = "checking";
    try {
      const result = await api("/lint/", { method: "POST", body: { body: texts.body, fallbacks: payload().fallbacks, signature: texts.signature, opt_out_tail: texts.opt_out_tail } });
      if (mine !== lintToken) return;
      lintProblems = problemsOf(result);
      templateErrors = result?.template_errors || [];
      renderLint();
    } catch (e) {
      if (mine !== lintToken) return;
      lintBox.dataset.state = "error";
      setChildren(lintBox, h("p", { class: "error-text" }, t("lint_failed", { error: e.message })));
    }
    updateSend();
  }, LINT_DEBOUNCE_MS);

  const renderLint = () => {
    lintBox.dataset.state = lintProblems.length ? "problems" : templateErrors.length ? "template-errors" : "clean";
    lintBox.dataset.count = String(lintProblems.length);
    const errors = templateErrors.length
      ? h("ul", { class: "camp-lint-list camp-template-errors", dataset: { testid: "template-errors" } }, templateErrors.map((m) => h("li", null, m)))
      : null;
    if (!lintProblems.length) {
      setChildren(lintBox, templateErrors.length ? errors : h("p", { class: "camp-lint-ok", dataset: { testid: "lint-ok" } }, t("lint_ok")));
      return;
    }
    setChildren(
      lintBox,
      errors,
      h("p", { class: "camp-lint-title" }, t("lint_refused")),
      h(
        "ul",
        { class: "camp-lint-list" },
        lintProblems.map((p) =>
          h(
            "li",
            { dataset: { testid: "lint-problem", category: p.category || "" } },
            p.term ? h("mark", { class: "camp-term" }, p.term) : null,
            p.term ? " " : null,
            p.message || choice("lint_category", p.category),
            p.part && p.part !== "body" ? h("span", { class: "camp-muted" }, ` (${choice("part", p.part)})`) : null,
          ),
        ),
      ),
    );
  };

  // --- Autosave, estimate, preview ------------------------------------------------------------------------
  let saving = null;
  let dirty = false;
  const save = async (explicit = false) => {
    const body = payload();
    if (!ready(body)) {
      if (explicit) showAlert(error, t("fill_required"));
      return false;
    }
    if (saving) {
      dirty = true;
      await saving;
      if (!dirty) return true;
    }
    dirty = false;
    saveState.textContent = t("saving");
    saving = (async () => {
      try {
        const result = campaignId ? await api(`/${campaignId}/`, { method: "PUT", body }) : await api("/", { method: "POST", body });
        if (!campaignId) {
          campaignId = result.id;
          history.replaceState(null, "", `/campaigns/${campaignId}/edit/`);
        }
        status = result.status || status;
        saveState.textContent = t("draft_saved");
        showAlert(error, []);
        refreshEstimate();
        refreshPreview();
        return true;
      } catch (e) {
        saveState.textContent = t("not_saved");
        showAlert(error, e.messages);
        return false;
      } finally {
        saving = null;
      }
    })();
    return saving;
  };
  const autosave = debounce(() => save(false), SAVE_DEBOUNCE_MS);

  let estimateToken = 0;
  const refreshEstimate = async () => {
    if (!campaignId) return;
    const mine = ++estimateToken;
    estimateBox.dataset.state = "loading";
    try {
      const e = await api(`/${campaignId}/estimate/`);
      if (mine !== estimateToken) return;
      const currency = e.currency || config.currency;
      const rows = [
        ["recipients", t("est_recipients"), fmtNumber(e.recipients ?? e.recipient_count)],
        ["excluded-consent", t("est_excluded_consent"), fmtNumber((e.skipped_opted_out ?? 0) + (e.skipped_no_consent ?? 0))],
        ["segments", t("est_segments"), fmtNumber(e.segments_per_message ?? e.segments)],
        ["encoding", t("est_encoding"), e.encoding ? String(e.encoding).toUpperCase().replace("GSM7", "GSM-7").replace("UCS2", "UCS-2") : "—"],
        ["characters", t("est_characters"), fmtNumber(e.characters ?? e.length)],
        ["total-segments", t("est_total_segments"), fmtNumber(e.total_segments)],
        ["cost", t("est_cost"), money(e.total_cost ?? e.cost, currency)],
      ].filter(([, , v]) => v !== "—" || true);
      setChildren(
        estimateBox,
        rows.map(([key, label, value]) => h("div", { class: "camp-est-row", dataset: { testid: `estimate-${key}` } }, h("dt", null, label), h("dd", null, value))),
      );
      estimateBox.dataset.state = "ready";
      estimateBox.dataset.recipients = String(e.recipients ?? e.recipient_count ?? "");
      const notes = [];
      if (e.skipped_opted_out) notes.push(t("est_opted_out", { n: fmtNumber(e.skipped_opted_out) }));
      if (e.skipped_no_consent) notes.push(t("est_no_consent", { n: fmtNumber(e.skipped_no_consent) }));
      if (e.skipped_invalid) notes.push(t("est_invalid", { n: fmtNumber(e.skipped_invalid) }));
      if (e.skipped_missing) notes.push(t("est_missing", { n: fmtNumber(e.skipped_missing) }));
      if (e.price_per_segment ?? e.cost_per_segment) notes.push(t("est_price", { price: money(e.price_per_segment ?? e.cost_per_segment, currency) }));
      estimateNote.textContent = notes.join(" ") || t("estimate_note");
    } catch (err) {
      if (mine !== estimateToken) return;
      estimateBox.dataset.state = "error";
      estimateNote.textContent = t("estimate_failed", { error: err.message });
    }
  };

  let previewToken = 0;
  const refreshPreview = async () => {
    if (!campaignId) return;
    const mine = ++previewToken;
    try {
      const result = await api(`/${campaignId}/preview/`, { method: "POST", body: {} });
      if (mine !== previewToken) return;
      const samples = Array.isArray(result) ? result : result.samples || result.results || [result];
      setChildren(
        previewBox,
        samples.slice(0, 3).map((s) => {
          const text = s.text ?? s.body ?? s.preview ?? null;
          return h(
            "div",
            { class: "camp-bubble-wrap" },
            text === null
              ? h("p", { class: "camp-muted", dataset: { testid: "preview-skipped" } }, t("preview_skipped"))
              : h("div", { class: "camp-bubble", dataset: { testid: "preview-text" } }, text),
            s.language ? h("span", { class: "camp-muted camp-bubble-meta" }, choice("language", s.language)) : null,
          );
        }),
      );
    } catch (e) {
      if (mine !== previewToken) return;
      setChildren(previewBox, h("p", { class: "camp-muted" }, t("preview_failed", { error: e.message })));
    }
  };

  const updateSend = () => {
    sendBtn.textContent = when() === "now" ? t("send_now") : t("schedule");
    sendBtn.disabled = lintProblems.length > 0 || !["draft", "scheduled", "paused"].includes(status);
    sendBtn.title = lintProblems.length ? t("fix_lint_first") : "";
  };

  const changed = () => {
    saveState.textContent = "";
    autosave();
  };

  // --- Segment picker with its count ----------------------------------------------------------------
  let countToken = 0;
  const refreshSegmentCount = async () => {
    const mine = ++countToken;
    const segment = segments.find((s) => String(s.id) === segmentSelect.value);
    segmentCount.textContent = "";
    delete segmentCount.dataset.count;
    if (!segment) return;
    try {
      // Static lists carry their size; a rules segment is counted as it stands now.
      const count = segment.kind === "static" ? segment.member_count : (await api(`/segments/${segment.id}/`)).count;
      if (mine !== countToken) return;
      segmentCount.dataset.count = String(count);
      segmentCount.textContent = t("n_patients", { n: fmtNumber(count) });
    } catch {
      if (mine === countToken) segmentCount.textContent = "";
    }
  };

  // --- Wiring ----------------------------------------------------------------------------------------
  for (const input of [nameInput, signatureInput, tailInput, quietStart, quietEnd, mpsInput]) input.addEventListener("input", changed);
  for (const input of [signatureInput, tailInput]) input.addEventListener("input", () => lint());
  inboxSelect.addEventListener("change", changed);
  segmentSelect.addEventListener("change", () => {
    refreshSegmentCount();
    changed();
  });
  bodyInput.addEventListener("input", () => {
    renderFallbacks();
    lint();
    changed();
  });
  for (const r of missingRadios) r.addEventListener("change", changed);
  for (const r of whenRadios)
    r.addEventListener("change", () => {
      atInput.disabled = when() !== "later";
      if (!atInput.disabled) atInput.focus();
      updateSend();
    });

  const form = h(
    "form",
    {
      class: "camp-composer",
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        let body;
        if (when() === "later") {
          const at = hospitalLocalToIso(atInput.value);
          if (!at) {
            showAlert(error, t("choose_time"));
            atInput.focus();
            return;
          }
          body = { at };
        } else body = { now: true };
        sendBtn.disabled = true;
        try {
          autosave.cancel();
          if (!(await save(true))) return;
          await api(`/${campaignId}/schedule/`, { method: "POST", body });
          location.assign(`/campaigns/${campaignId}/?${body.at ? "scheduled" : "launched"}=1`);
        } catch (e) {
          showAlert(error, e.messages);
        } finally {
          updateSend();
        }
      },
    },
    h(
      "section",
      { class: "card camp-card" },
      h("h2", { class: "camp-card-title" }, t("audience")),
      field("c-name", t("campaign_name"), nameInput),
      h(
        "div",
        { class: "camp-grid-2" },
        h("div", { class: "form-row" }, h("label", { for: "c-segment" }, t("segment")), h("div", { class: "camp-with-count" }, segmentSelect, segmentCount), h("a", { class: "form-hint", href: "/campaigns/segments/new/" }, t("build_segment"))),
        field("c-inbox", t("sending_inbox"), inboxSelect, t("inbox_hint")),
      ),
    ),
    h(
      "section",
      { class: "card camp-card" },
      h("h2", { class: "camp-card-title" }, t("message")),
      h("div", { class: "form-row" }, h("label", { for: "c-body" }, t("template")), placeholderBar, bodyInput, h("span", { class: "form-hint" }, t("template_hint"))),
      h("fieldset", { class: "camp-fieldset" }, h("legend", null, t("missing_values")), h("div", { class: "camp-radios" }, missingRadios.map((r) => h("label", { for: r.id, class: "camp-radio" }, r, choice("missing_value_rule", r.value)))), fallbackBox),
      h("div", { class: "camp-grid-2" }, field("c-signature", t("signature"), signatureInput, t("signature_hint")), field("c-tail", t("opt_out_tail"), tailInput, t("tail_hint"))),
    ),
    h(
      "section",
      { class: "card camp-card" },
      h("h2", { class: "camp-card-title" }, t("sending")),
      h("div", { class: "camp-grid-3" }, field("c-quiet-start", t("quiet_from"), quietStart), field("c-quiet-end", t("quiet_until"), quietEnd), field("c-mps", t("messages_per_second"), mpsInput)),
      h("p", { class: "form-hint" }, t("quiet_hint")),
      h(
        "fieldset",
        { class: "camp-fieldset" },
        h("legend", null, t("when_to_send")),
        h("div", { class: "camp-radios" }, h("label", { for: "c-when-now", class: "camp-radio" }, whenRadios[0], t("now")), h("label", { for: "c-when-later", class: "camp-radio" }, whenRadios[1], t("at_time"))),
        h("div", { class: "camp-at" }, atInput, h("span", { class: "form-hint" }, t("time_zone_hint", { zone: config.timeZone || "" }))),
      ),
      h("div", { class: "camp-buttons camp-form-foot" }, sendBtn, saveBtn, saveState),
    ),
  );

  setChildren(
    root,
    error,
    h(
      "div",
      { class: "camp-layout" },
      h("div", { class: "camp-main" }, form),
      h(
        "aside",
        { class: "camp-side-stack" },
        h("section", { class: "card camp-side", "aria-labelledby": "h-lint" }, h("h2", { id: "h-lint", class: "camp-side-title" }, t("lint_title")), lintBox),
        h("section", { class: "card camp-side", "aria-labelledby": "h-est" }, h("h2", { id: "h-est", class: "camp-side-title" }, t("estimate")), estimateBox, estimateNote),
        h("section", { class: "card camp-side", "aria-labelledby": "h-preview" }, h("h2", { id: "h-preview", class: "camp-side-title" }, t("preview")), previewBox),
      ),
    ),
  );

  // --- Load ---------------------------------------------------------------------------------------------
  try {
    segments = rowsOf(await api("/segments/"));
  } catch (e) {
    showAlert(error, t("load_failed", { error: e.message }));
  }
  for (const s of segments) segmentSelect.append(h("option", { value: s.id }, s.name));
  if (pageData.initial_segment) segmentSelect.value = String(pageData.initial_segment);

  if (campaignId) {
    try {
      const c = await api(`/${campaignId}/`);
      status = c.status;
      nameInput.value = c.name || "";
      segmentSelect.value = String(c.segment?.id ?? c.segment ?? "");
      inboxSelect.value = String(c.inbox?.id ?? c.inbox ?? "");
      bodyInput.value = c.body || "";
      for (const r of missingRadios) r.checked = r.value === c.missing_value_rule;
      signatureInput.value = c.signature || "";
      tailInput.value = c.opt_out_tail || "";
      quietStart.value = (c.quiet_hours_start || "21:00").slice(0, 5);
      quietEnd.value = (c.quiet_hours_end || "08:00").slice(0, 5);
      mpsInput.value = String(c.messages_per_second ?? 10);
      if (c.scheduled_at) {
        whenRadios[1].checked = true;
        atInput.disabled = false;
        atInput.value = isoToHospitalLocal(c.scheduled_at);
      }
      renderFallbacks(c.fallbacks || {});
      if (!["draft", "scheduled", "paused"].includes(status)) showAlert(error, t("not_editable", { status: choice("status", status) }));
      lint();
      refreshEstimate();
      refreshPreview();
    } catch (e) {
      showAlert(error, t("load_failed", { error: e.message }));
    }
  } else renderFallbacks();
  refreshSegmentCount();
  updateSend();
}

function insertAtCursor(textarea, text) {
  const start = textarea.selectionStart ?? textarea.value.length;
  const end = textarea.selectionEnd ?? textarea.value.length;
  textarea.setRangeText(text, start, end, "end");
  textarea.focus();
  textarea.dispatchEvent(new Event("input", { bubbles: true }));
}

const app = document.getElementById("campaigns-app");
if (app && app.dataset.page === "composer") {
  composerPage(app).catch((e) => {
    console.error(e);
    app.prepend(h("div", { class: "alert alert-error", role: "alert" }, t("load_failed", { error: e.message })));
  });
}
