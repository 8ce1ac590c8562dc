// The segment builder: nested AND/OR groups of rules over the field catalog the API describes
// (GET /api/v1/campaigns/segments/fields/), a live count of matching patients (debounced POST preview/),
// saving as a named segment, and static lists uploaded from a CSV with the row error report.

import { api, alertBox, choice, debounce, fmtNumber, h, IS_ZH, pageData, setChildren, showAlert, t } from "./campaigns.js";

const COUNT_DEBOUNCE_MS = 400;
const NO_VALUE_OPS = new Set(["is_set", "is_empty", "is_not_set", "exists", "not_exists", "is_true", "is_false", "any", "none"]);
const MULTI_OPS = new Set(["in", "not_in", "any_of", "all_of", "none_of", "has_any", "has_all", "has_none"]);
const RANGE_OPS = new Set(["between", "not_between"]);

// --- The field catalog ---------------------------------------------------------------------------------

const labelOf = (item, fallback) => (IS_ZH ? item.label_zh || item.label || item.label_en : item.label_en || item.label || item.label_zh) || fallback;

function normalizeChoices(list) {
  return (list || []).map((c) => {
    if (Array.isArray(c)) return { value: c[0], label: String(c[1] ?? c[0]) };
    if (c && typeof c === "object") return { value: c.value ?? c.key ?? c.id, label: labelOf(c, String(c.value ?? c.key ?? c.id)) };
    return { value: c, label: String(c) };
  });
}

function normalizeOperator(op) {
  if (typeof op === "string") return { key: op, label: choice("operator", op), input: null };
  const key = op.key ?? op.value ?? op.op ?? op.operator;
  return { key, label: op.label || op.label_en || op.label_zh ? labelOf(op, key) : choice("operator", key), input: op.kind ?? op.input ?? op.value_type ?? op.value_kind ?? null };
}

export function normalizeCatalog(payload) {
  const list = Array.isArray(payload) ? payload : payload?.fields || [];
  return list.map((f) => ({
    key: f.key ?? f.field ?? f.name,
    label: labelOf(f, choice("field", f.key ?? f.field ?? f.name)),
    group: f.group ? labelOf(typeof f.group === "object" ? f.group : { label: f.group }, "") : "",
    type: f.type ?? f.kind ?? "text",
    operators: (f.operators || []).map(normalizeOperator),
    choices: normalizeChoices(f.choices ?? f.options),
    hint: f.hint ? labelOf(typeof f.hint === "object" ? f.hint : { label: f.hint }, "") : "",
    unit: f.unit ? labelOf(typeof f.unit === "object" ? f.unit : { label: f.unit }, "") : "",
  }));
}

/** What the value of a rule looks like for this field and operator. */
function inputKind(field, operator) {
  if (!field || !operator) return "none";
  if (operator.input) {
    const input = String(operator.input);
    if (["none", "null"].includes(input)) return "none";
    if (["days", "months", "integer", "number"].includes(input)) return "number";
    if (input === "integer_range") return "number_range";
    if (input === "texts" && field.choices.length) return "choices";
    return input;
  }
  const op = operator.key;
  const type = String(field.type);
  if (NO_VALUE_OPS.has(op)) return "none";
  if (RANGE_OPS.has(op)) return type.includes("date") ? "date_range" : "number_range";
  if (MULTI_OPS.has(op)) return field.choices.length ? "choices" : "texts";
  if (type === "boolean" || type === "bool") return "boolean";
  if (field.choices.length) return "choice";
  if (["number", "integer", "decimal", "money", "int", "float", "months", "days"].includes(type)) return "number";
  if (type === "date" || type === "datetime") return "date";
  return "text";
}

function emptyValue(kind) {
  if (kind === "choices" || kind === "texts") return [];
  if (kind === "number_range" || kind === "date_range") return { min: null, max: null };
  if (kind === "boolean") return true;
  return null;
}

function isComplete(rule, catalog) {
  if (rule.rules) return rule.rules.every((r) => isComplete(r, catalog));
  const field = catalog.find((f) => f.key === rule.field);
  if (!field) return false;
  const operator = field.operators.find((o) => o.key === rule.operator);
  if (!operator) return false;
  const kind = inputKind(field, operator);
  const v = rule.value;
  if (kind === "none" || kind === "boolean") return true;
  if (Array.isArray(v)) return v.length > 0 && v.every((x) => x !== null && x !== "");
  if (v && typeof v === "object") return [v.min, v.max].some((x) => x !== null && x !== undefined && x !== "");
  return v !== null && v !== undefined && v !== "";
}

function newLeaf(catalog) {
  const field = catalog[0];
  const operator = field?.operators[0];
  return { field: field?.key ?? "", operator: operator?.key ?? "", value: emptyValue(inputKind(field, operator)) };
}

// --- The rule tree -------------------------------------------------------------------------------------

class RuleTree {
  constructor(root, catalog, onChange) {
    this.root = root;
    this.catalog = catalog;
    this.onChange = onChange;
    this.tree = { op: "and", rules: [] };
  }

  set(tree) {
    this.tree = tree && tree.rules ? tree : { op: "and", rules: [] };
    this.render();
  }

  render() {
    setChildren(this.root, this.#group(this.tree, null, 0));
  }

  changed(structural) {
    if (structural) this.render();
    this.onChange(this.tree);
  }

  #group(group, parent, depth) {
    const opToggle = h(
      "div",
      { class: "seg-op", role: "radiogroup", "aria-label": t("match") },
      ["and", "or"].map((op) =>
        h(
          "button",
          {
            type: "button",
            role: "radio",
            "aria-checked": String(group.op === op),
            class: "seg-op-btn",
            dataset: { testid: `group-op-${op}` },
            onclick: () => {
              group.op = op;
              this.changed(true);
            },
          },
          t(`op_${op}`),
        ),
      ),
    );
    const children = group.rules.map((rule, index) =>
      h(
        "li",
        { class: "seg-item" },
        index > 0 ? h("span", { class: `seg-joiner seg-joiner-${group.op}`, "aria-hidden": "true" }, t(`joiner_${group.op}`)) : null,
        rule.rules ? this.#group(rule, group, depth + 1) : this.#leaf(rule, group),
      ),
    );
    return h(
      "div",
      { class: `seg-group seg-depth-${Math.min(depth, 3)}`, dataset: { testid: depth === 0 ? "rule-root" : "rule-group", op: group.op } },
      h(
        "div",
        { class: "seg-group-head" },
        h("span", { class: "seg-group-label" }, t(depth === 0 ? "patients_matching" : "group_matching")),
        opToggle,
        h("span", { class: "seg-group-label" }, t("of_these")),
        parent
          ? h(
              "button",
              {
                type: "button",
                class: "btn btn-sm btn-ghost seg-remove",
                "aria-label": t("remove_group"),
                dataset: { testid: "remove-group" },
                onclick: () => {
                  parent.rules.splice(parent.rules.indexOf(group), 1);
                  this.changed(true);
                },
              },
              "×",
            )
          : null,
      ),
      group.rules.length ? h("ol", { class: "seg-list" }, children) : h("p", { class: "seg-empty" }, t(depth === 0 ? "no_rules_all" : "no_rules_group")),
      h(
        "div",
        { class: "seg-group-actions" },
        h(
          "button",
          {
            type: "button",
            class: "btn btn-sm",
            dataset: { testid: "add-rule" },
            onclick: () => {
              group.rules.push(newLeaf(this.catalog));
              this.changed(true);
              const selects = this.root.querySelectorAll("[data-testid=rule-field]");
              selects[selects.length - 1]?.focus();
            },
          },
          t("add_rule"),
        ),
        depth < 3
          ? h(
              "button",
              {
                type: "button",
                class: "btn btn-sm btn-ghost",
                dataset: { testid: "add-group" },
                onclick: () => {
                  group.rules.push({ op: group.op === "and" ? "or" : "and", rules: [newLeaf(this.catalog)] });
                  this.changed(true);
                },
              },
              t("add_group"),
            )
          : null,
      ),
    );
  }

  #leaf(rule, parent) {
    const field = this.catalog.find((f) => f.key === rule.field);
    const operator = field?.operators.find((o) => o.key === rule.operator);
    const fieldSelect = h(
      "select",
      {
        class: "field field-sm",
        "aria-label": t("field"),
        dataset: { testid: "rule-field" },
        onchange: () => {
          const next = this.catalog.find((f) => f.key === fieldSelect.value);
          rule.field = next.key;
          rule.operator = next.operators[0]?.key ?? "";
          rule.value = emptyValue(inputKind(next, next.operators[0]));
          this.changed(true);
        },
      },
      field ? null : h("option", { value: "", selected: true }, t("choose")),
      this.#fieldOptions(rule.field),
    );
    const opSelect = h(
      "select",
      {
        class: "field field-sm",
        "aria-label": t("operator"),
        dataset: { testid: "rule-operator" },
        onchange: () => {
          const before = inputKind(field, operator);
          rule.operator = opSelect.value;
          const after = inputKind(field, field.operators.find((o) => o.key === rule.operator));
          if (after !== before) rule.value = emptyValue(after);
          this.changed(true);
        },
      },
      (field?.operators || []).map((o) => h("option", { value: o.key, selected: o.key === rule.operator }, o.label)),
    );
    return h(
      "div",
      { class: "seg-rule", dataset: { testid: "rule", field: rule.field } },
      fieldSelect,
      opSelect,
      h("div", { class: "seg-value" }, this.#valueWidget(rule, field, operator)),
      h(
        "button",
        {
          type: "button",
          class: "btn btn-sm btn-ghost seg-remove",
          "aria-label": t("remove_rule"),
          title: t("remove_rule"),
          dataset: { testid: "remove-rule" },
          onclick: () => {
            parent.rules.splice(parent.rules.indexOf(rule), 1);
            this.changed(true);
          },
        },
        "×",
      ),
      field?.hint ? h("p", { class: "seg-hint" }, field.hint) : null,
    );
  }

  #fieldOptions(selected) {
    const groups = new Map();
    for (const f of this.catalog) {
      if (!groups.has(f.group)) groups.set(f.group, []);
      groups.get(f.group).push(h("option", { value: f.key, selected: f.key === selected }, f.label));
    }
    if (groups.size === 1) return [...groups.values()][0];
    return [...groups.entries()].map(([label, options]) => (label ? h("optgroup", { label }, options) : options));
  }

  #valueWidget(rule, field, operator) {
    const kind = inputKind(field, operator);
    const unitText = field?.unit || { days: t("unit_days"), months: t("unit_months") }[operator?.input] || "";
    const set = (value) => {
      rule.value = value;
      this.changed(false);
    };
    const numberInput = (value, onInput, label) =>
      h("input", { type: "number", class: "field field-sm seg-number", value: value ?? "", "aria-label": label, dataset: { testid: "rule-value" }, oninput: (e) => onInput(e.target.value === "" ? null : Number(e.target.value)) });
    const dateInput = (value, onInput, label) =>
      h("input", { type: "date", class: "field field-sm", value: value ?? "", "aria-label": label, dataset: { testid: "rule-value" }, oninput: (e) => onInput(e.target.value || null) });
    switch (kind) {
      case "none":
        return null;
      case "boolean":
        return h(
          "select",
          { class: "field field-sm", "aria-label": t("value"), dataset: { testid: "rule-value" }, onchange: (e) => set(e.target.value === "true") },
          h("option", { value: "true", selected: rule.value !== false }, t("yes")),
          h("option", { value: "false", selected: rule.value === false }, t("no")),
        );
      case "choice":
        return h(
          "select",
          { class: "field field-sm", "aria-label": t("value"), dataset: { testid: "rule-value" }, onchange: (e) => set(e.target.value) },
          h("option", { value: "", selected: rule.value === null }, t("choose")),
          field.choices.map((c) => h("option", { value: c.value, selected: String(c.value) === String(rule.value) }, c.label)),
        );
      case "choices": {
        const chosen = new Set((Array.isArray(rule.value) ? rule.value : []).map(String));
        return h(
          "div",
          { class: "seg-chips", role: "group", "aria-label": t("value"), dataset: { testid: "rule-value" } },
          field.choices.map((c) =>
            h(
              "label",
              { class: "seg-chip" },
              h("input", {
                type: "checkbox",
                value: c.value,
                checked: chosen.has(String(c.value)),
                dataset: { testid: "rule-choice", value: c.value },
                onchange: (e) => {
                  const values = field.choices.filter((x) => (x.value === c.value ? e.target.checked : chosen.has(String(x.value)))).map((x) => x.value);
                  if (e.target.checked) chosen.add(String(c.value));
                  else chosen.delete(String(c.value));
                  set(values);
                },
              }),
              h("span", null, c.label),
            ),
          ),
        );
      }
      case "texts":
        return h("input", {
          type: "text",
          class: "field field-sm",
          value: (rule.value || []).join(", "),
          placeholder: t("comma_separated"),
          "aria-label": t("value"),
          dataset: { testid: "rule-value" },
          oninput: (e) =>
            set(
              e.target.value
                .split(/[,，]/)
                .map((s) => s.trim())
                .filter(Boolean),
            ),
        });
      case "number":
        return h("span", { class: "seg-with-unit" }, numberInput(rule.value, set, t("value")), unitText ? h("span", { class: "seg-unit" }, unitText) : null);
      case "number_range": {
        // {"min": n|null, "max": n|null}, inclusive; either end may stay open.
        const v = rule.value && typeof rule.value === "object" && !Array.isArray(rule.value) ? { ...rule.value } : { min: null, max: null };
        return h(
          "span",
          { class: "seg-range" },
          numberInput(v.min, (x) => ((v.min = x), set({ ...v })), t("from")),
          h("span", { "aria-hidden": "true" }, "–"),
          numberInput(v.max, (x) => ((v.max = x), set({ ...v })), t("to")),
          unitText ? h("span", { class: "seg-unit" }, unitText) : null,
        );
      }
      case "date":
        return dateInput(rule.value, set, t("value"));
      case "date_range": {
        const v = rule.value && typeof rule.value === "object" && !Array.isArray(rule.value) ? { ...rule.value } : { min: null, max: null };
        return h("span", { class: "seg-range" }, dateInput(v.min, (x) => ((v.min = x), set({ ...v })), t("from")), h("span", { "aria-hidden": "true" }, "–"), dateInput(v.max, (x) => ((v.max = x), set({ ...v })), t("to")));
      }
      default:
        return h("input", { type: "text", class: "field field-sm", value: rule.value ?? "", "aria-label": t("value"), dataset: { testid: "rule-value" }, oninput: (e) => set(e.target.value) });
    }
  }
}

// --- The page ------------------------------------------------------------------------------------------

async function segmentBuilderPage(root) {
  let segmentId = pageData.segment_id || null;
  const error = alertBox();
  const saved = alertBox("info");
  saved.dataset.testid = "segment-saved";

  const nameInput = h("input", { type: "text", id: "seg-name", class: "field", maxlength: "120", required: true, dataset: { testid: "segment-name" } });
  const descInput = h("input", { type: "text", id: "seg-desc", class: "field", maxlength: "300", dataset: { testid: "segment-description" } });
  const treeRoot = h("div", { class: "seg-tree" });
  const count = h("output", { class: "seg-count-number", dataset: { testid: "segment-count", state: "idle" } }, "—");
  const countNote = h("p", { class: "seg-count-note", role: "status" }, t("count_hint"));
  // Of the patients counted, how many marketing may reach under the hospital's consent policy.
  const consentNote = h("p", { class: "seg-count-note", hidden: true, dataset: { testid: "segment-consent" } });
  const showConsent = (result) => {
    const allowed = result && result.marketing_allowed;
    if (allowed === undefined || allowed === null) {
      consentNote.hidden = true;
      return;
    }
    consentNote.hidden = false;
    consentNote.dataset.allowed = String(allowed);
    consentNote.dataset.excluded = String(result.excluded_for_consent ?? 0);
    consentNote.textContent = t("consent_split", { allowed: fmtNumber(allowed), excluded: fmtNumber(result.excluded_for_consent ?? 0) });
  };
  const saveBtn = h("button", { type: "submit", class: "btn btn-primary", dataset: { testid: "save-segment" } }, t("save_segment"));
  const useLink = h("a", { class: "btn", hidden: !segmentId, href: segmentId ? `/campaigns/new/?segment=${segmentId}` : "#", dataset: { testid: "use-segment" } }, t("use_in_campaign"));

  // Static list (CSV) panel. The side panel then counts the list, not the (empty) rules.
  let counting = "rules";
  const showMembers = (n) => {
    counting = "static";
    token++;
    count.textContent = fmtNumber(n);
    count.dataset.count = String(n);
    count.dataset.state = "ready";
    countNote.textContent = t("members_now", { n: fmtNumber(n) });
    showConsent(null);
  };
  const uploadForm = buildUploadPanel(
    () => segmentId,
    (id) => {
      segmentId = id;
      history.replaceState(null, "", `/campaigns/segments/${id}/`);
    },
    showMembers,
  );

  let catalog = [];
  let token = 0;
  const refreshCount = debounce(async (tree) => {
    // The static-list tab counts its list; a rules count still pending must not overwrite it.
    if (counting !== "rules") return;
    const mine = ++token;
    if (!isComplete(tree, catalog)) {
      count.dataset.state = "incomplete";
      countNote.textContent = t("count_incomplete");
      return;
    }
    count.dataset.state = "counting";
    countNote.textContent = t("counting");
    try {
      const result = await api("/segments/preview/", { method: "POST", body: { rules: tree } });
      if (mine !== token || counting !== "rules") return;
      count.textContent = fmtNumber(result.count);
      count.dataset.count = String(result.count);
      count.dataset.state = "ready";
      countNote.textContent = t("count_patients");
      showConsent(result);
      showAlert(error, []);
    } catch (e) {
      if (mine !== token) return;
      count.dataset.state = "error";
      countNote.textContent = "";
      showAlert(error, e.messages);
    }
  }, COUNT_DEBOUNCE_MS);

  const ruleTree = new RuleTree(treeRoot, catalog, (tree) => refreshCount(tree));

  const form = h(
    "form",
    {
      class: "card camp-card seg-form",
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        if (!nameInput.value.trim()) {
          showAlert(error, t("name_required"));
          nameInput.focus();
          return;
        }
        saveBtn.disabled = true;
        const body = { name: nameInput.value.trim(), description: descInput.value.trim(), kind: "rules", rules: ruleTree.tree };
        try {
          const result = segmentId ? await api(`/segments/${segmentId}/`, { method: "PUT", body }) : await api("/segments/", { method: "POST", body });
          segmentId = result.id;
          history.replaceState(null, "", `/campaigns/segments/${segmentId}/`);
          useLink.hidden = false;
          useLink.href = `/campaigns/new/?segment=${segmentId}`;
          showAlert(error, []);
          showAlert(saved, t("segment_saved", { name: result.name }));
        } catch (e) {
          showAlert(saved, []);
          showAlert(error, e.messages);
        } finally {
          saveBtn.disabled = false;
        }
      },
    },
    h(
      "div",
      { class: "camp-grid-2" },
      h("div", { class: "form-row" }, h("label", { for: "seg-name" }, t("segment_name")), nameInput),
      h("div", { class: "form-row" }, h("label", { for: "seg-desc" }, t("description")), descInput),
    ),
    h("h2", { class: "camp-card-title" }, t("rules")),
    treeRoot,
    h("div", { class: "camp-buttons camp-form-foot" }, saveBtn, useLink),
  );

  const tabs = buildTabs(
    [
      { key: "rules", label: t("tab_rules"), panel: form },
      { key: "static", label: t("tab_static"), panel: uploadForm },
    ],
    (key) => {
      counting = key;
      if (key === "rules") refreshCount(ruleTree.tree);
      else if (uploadForm.members !== undefined) showMembers(uploadForm.members);
      else {
        token++;
        count.textContent = "—";
        count.dataset.state = "idle";
        countNote.textContent = t("file_required");
      }
    },
  );

  setChildren(
    root,
    error,
    saved,
    h(
      "div",
      { class: "camp-layout" },
      h("div", { class: "camp-main" }, tabs.bar, tabs.panels),
      h(
        "aside",
        { class: "card camp-side seg-count", "aria-label": t("live_count") },
        h("h2", { class: "camp-side-title" }, t("live_count")),
        count,
        countNote,
        consentNote,
      ),
    ),
  );

  try {
    catalog.push(...normalizeCatalog(await api("/segments/fields/")));
  } catch (e) {
    showAlert(error, t("catalog_failed", { error: e.message }));
    return;
  }
  if (segmentId) {
    try {
      const segment = await api(`/segments/${segmentId}/`);
      nameInput.value = segment.name || "";
      descInput.value = segment.description || "";
      useLink.hidden = false;
      if (segment.kind === "static") {
        tabs.select("static");
        uploadForm.showSegment(segment);
        showConsent(segment);
      } else {
        ruleTree.set(segment.rules);
        refreshCount(ruleTree.tree);
      }
      return;
    } catch (e) {
      showAlert(error, t("load_failed", { error: e.message }));
    }
  }
  ruleTree.set({ op: "and", rules: [] });
  refreshCount(ruleTree.tree);
}

function buildTabs(items, onSelect = () => {}) {
  const bar = h("div", { class: "tabs camp-tabs", role: "tablist" });
  const panels = h("div", { class: "camp-tab-panels" });
  const buttons = {};
  const select = (key, announce = true) => {
    for (const item of items) {
      buttons[item.key].setAttribute("aria-selected", String(item.key === key));
      item.panel.hidden = item.key !== key;
    }
    if (announce) onSelect(key);
  };
  for (const item of items) {
    buttons[item.key] = h("button", { type: "button", class: "tab", role: "tab", dataset: { testid: `tab-${item.key}` }, onclick: () => select(item.key) }, item.label);
    bar.append(buttons[item.key]);
    panels.append(item.panel);
  }
  select(items[0].key, false);
  return { bar, panels, select };
}

/** The static-list upload: a name, a CSV file, and the report of rows kept and rows refused (with why). */
function buildUploadPanel(currentId, onCreated, onMembers) {
  const error = alertBox();
  const nameInput = h("input", { type: "text", id: "static-name", class: "field", maxlength: "120", dataset: { testid: "static-name" } });
  const fileInput = h("input", { type: "file", id: "static-file", accept: ".csv,text/csv", class: "field", dataset: { testid: "static-file" } });
  const report = h("div", { class: "seg-report", dataset: { testid: "upload-report" }, hidden: true });
  const submit = h("button", { type: "submit", class: "btn btn-primary", dataset: { testid: "upload-csv" } }, t("upload"));
  const form = h(
    "form",
    {
      class: "card camp-card",
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        const file = fileInput.files[0];
        if (!nameInput.value.trim() && !currentId()) return showAlert(error, t("name_required"));
        if (!file) return showAlert(error, t("file_required"));
        submit.disabled = true;
        try {
          let id = currentId();
          if (!id) {
            const segment = await api("/segments/", { method: "POST", body: { name: nameInput.value.trim(), kind: "static", rules: {} } });
            id = segment.id;
            onCreated(id);
          }
          const upload = new FormData();
          upload.append("file", file);
          const result = await api(`/segments/${id}/members/`, { method: "POST", body: upload });
          showAlert(error, []);
          showReport(result);
        } catch (e) {
          showAlert(error, e.messages);
        } finally {
          submit.disabled = false;
        }
      },
    },
    error,
    h("p", { class: "camp-muted" }, t("static_hint")),
    h("div", { class: "form-row" }, h("label", { for: "static-name" }, t("segment_name")), nameInput),
    h("div", { class: "form-row" }, h("label", { for: "static-file" }, t("csv_file")), fileInput, h("span", { class: "form-hint" }, t("csv_columns"))),
    h("div", { class: "camp-buttons" }, submit),
    report,
  );

  const useLink = () => {
    const id = currentId();
    return id ? h("a", { class: "btn", href: `/campaigns/new/?segment=${id}`, dataset: { testid: "use-static-list" } }, t("use_in_campaign")) : null;
  };
  const showReport = (result) => {
    const rejected = result.rejected ?? [];
    const added = result.added ?? 0;
    const members = result.member_count;
    if (members !== undefined) {
      form.members = members;
      onMembers(members);
    }
    report.hidden = false;
    setChildren(
      report,
      h(
        "p",
        { class: "seg-report-summary", dataset: { testid: "upload-summary" } },
        t("upload_summary", { rows: fmtNumber(result.rows ?? 0), added: fmtNumber(added), already: fmtNumber(result.already_listed ?? 0), rejected: fmtNumber(rejected.length) }),
        members !== undefined ? ` ${t("members_now", { n: fmtNumber(members) })}` : "",
      ),
      rejected.length
        ? h(
            "table",
            { class: "data seg-report-table" },
            h("thead", null, h("tr", null, h("th", { scope: "col", class: "num" }, t("row")), h("th", { scope: "col" }, t("row_value")), h("th", { scope: "col" }, t("reason")))),
            h(
              "tbody",
              null,
              rejected.map((r) => h("tr", { dataset: { testid: "upload-error" } }, h("td", { class: "num" }, String(r.row ?? "")), h("td", { class: "mono" }, String(r.value ?? "")), h("td", null, String(r.reason ?? "")))),
            ),
          )
        : null,
      members ? h("div", { class: "camp-buttons" }, useLink()) : null,
    );
  };
  form.showSegment = (segment) => {
    nameInput.value = segment.name || "";
    nameInput.disabled = true;
    const members = segment.member_count ?? segment.members;
    if (members !== undefined) {
      form.members = members;
      onMembers(members);
      report.hidden = false;
      setChildren(
        report,
        h("p", { class: "seg-report-summary" }, t("members_now", { n: fmtNumber(members) })),
        members ? h("div", { class: "camp-buttons" }, useLink()) : null,
      );
    }
  };
  return form;
}

const app = document.getElementById("campaigns-app");
if (app && app.dataset.page === "segment") {
  segmentBuilderPage(app).catch((e) => {
    console.error(e);
    app.prepend(h("div", { class: "alert alert-error", role: "alert" }, t("load_failed", { error: e.message })));
  });
}
