// Tiny DOM helpers. Everything that can carry user data goes through textContent / text nodes,
// never innerHTML.

const PROPS = new Set(["value", "checked", "selected", "disabled", "hidden", "indeterminate"]);

/**
 * h("div", {class: "x", text: "hi", dataset: {id: 1}, onclick: fn}, child, "text", [more])
 * Strings given as children become text nodes.
 */
export function h(tag, props = null, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = String(value);
      else if (key === "dataset") {
        for (const [k, v] of Object.entries(value)) if (v !== null && v !== undefined) el.dataset[k] = String(v);
      } else if (key === "style" && typeof value === "object") {
        for (const [k, v] of Object.entries(value)) el.style.setProperty(k, v);
      } else if (key.startsWith("on") && typeof value === "function") {
        el.addEventListener(key.slice(2), value);
      } else if (PROPS.has(key)) {
        el[key] = value;
      } else {
        el.setAttribute(key, value === true ? "" : String(value));
      }
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function setChildren(el, ...children) {
  clear(el);
  return append(el, children);
}

/** A label colour from the API, or a neutral grey if it is not a plain hex colour. */
export function safeColor(value) {
  return /^#[0-9a-f]{3,8}$/i.test(value || "") ? value : "#6b7280";
}

export function initials(name) {
  const text = (name || "").trim();
  if (!text) return "#";
  // Chinese names: the surname (first character) reads best; Latin names: first letters of two words.
  if (/[\u3400-\u9fff]/.test(text[0])) return text[0];
  const words = text.split(/\s+/).filter(Boolean);
  return ((words[0]?.[0] || "") + (words[1]?.[0] || "")).toUpperCase() || "#";
}

/** Close a popover when the user clicks elsewhere or presses Escape. Returns a function that stops listening. */
export function dismissOnOutside(popover, trigger, onClose) {
  const onDown = (event) => {
    if (popover.contains(event.target) || trigger?.contains(event.target)) return;
    onClose();
  };
  const onKey = (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      onClose();
      trigger?.focus();
    }
  };
  document.addEventListener("mousedown", onDown, true);
  document.addEventListener("keydown", onKey);
  return () => {
    document.removeEventListener("mousedown", onDown, true);
    document.removeEventListener("keydown", onKey);
  };
}

const SVG_NS = "http://www.w3.org/2000/svg";
const ICONS = {
  clock: ["M12 7v5l3 2", "M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18z"],
  check: ["M5 12.5l4.5 4.5L19 7.5"],
  checks: ["M2.5 12.5l4.5 4.5L16.5 7.5", "M11 16l1 1L21.5 7.5"],
  alert: ["M12 4l9 16H3z", "M12 10v4", "M12 17.5v.5"],
  lock: ["M6 11h12v9H6z", "M8.5 11V8a3.5 3.5 0 0 1 7 0v3"],
  chat: ["M4 5h16v11H9l-5 4z"],
  chevron: ["M7 10l5 5 5-5"],
  snippet: ["M8 6l-5 6 5 6", "M16 6l5 6-5 6"],
  user: ["M12 12a4 4 0 1 0 0-8a4 4 0 1 0 0 8z", "M4 21a8 8 0 0 1 16 0"],
  send: ["M4 12l16-8-6 16-2.5-6.5z"],
};

/** A small stroke icon from a fixed set (no user data involved). */
export function icon(name, cls = "icon") {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", cls);
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  for (const d of ICONS[name] || []) {
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}
