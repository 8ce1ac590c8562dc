// Translated strings and formatting. The strings come from a JSON block the template renders with
// {% translate %}, so the server's gettext catalog is the one source of translations.

const source = document.getElementById("inbox-i18n");
const data = source ? JSON.parse(source.textContent) : { strings: {}, choices: {}, config: {} };

export const config = data.config || {};
export const LANG = (config.lang || document.documentElement.lang || "en").toLowerCase();
export const IS_ZH = LANG.startsWith("zh");
export const TIME_ZONE = config.timeZone || undefined;
const LOCALE = IS_ZH ? "zh-CN" : "en-GB";

/** t("typing", {name: "Li Na"}) — "{name}" placeholders are filled in. */
export function t(key, vars) {
  let text = data.strings[key];
  if (text === undefined) {
    console.warn("inbox: missing string", key);
    text = key;
  }
  if (vars) text = text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  return text;
}

/** The display label of a model choice, e.g. choice("status", "open"). */
export function choice(group, value) {
  const labels = data.choices[group] || {};
  const key = String(value);
  return key in labels ? labels[key] : key;
}

export function choices(group) {
  return Object.entries(data.choices[group] || {});
}

// --- Dates and times, shown in the hospital's time zone ------------------------------------------

const partsFormat = new Intl.DateTimeFormat("en-US", {
  timeZone: TIME_ZONE,
  hourCycle: "h23",
  year: "numeric",
  month: "numeric",
  day: "numeric",
  hour: "numeric",
  minute: "numeric",
  second: "numeric",
  weekday: "short",
});
const WEEKDAYS = { Sun: 0, Mon: 1, Tue: 2, Wed: 3, Thu: 4, Fri: 5, Sat: 6 };

/** Wall-clock parts of a date in the hospital's time zone. */
export function zonedParts(date) {
  const parts = {};
  for (const p of partsFormat.formatToParts(date)) parts[p.type] = p.value;
  return {
    year: Number(parts.year),
    month: Number(parts.month),
    day: Number(parts.day),
    hour: Number(parts.hour) % 24,
    minute: Number(parts.minute),
    second: Number(parts.second),
    weekday: WEEKDAYS[parts.weekday] ?? 0,
  };
}

function offsetMs(date) {
  const p = zonedParts(date);
  const asUtc = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
  return asUtc - Math.floor(date.getTime() / 1000) * 1000;
}

/** The instant at which the hospital's clocks show the given wall time (month is 1-based; overflow is fine). */
export function zonedWallTime(year, month, day, hour = 0, minute = 0) {
  const guess = Date.UTC(year, month - 1, day, hour, minute);
  let instant = guess - offsetMs(new Date(guess));
  instant = guess - offsetMs(new Date(instant));
  return new Date(instant);
}

const fmtTime = new Intl.DateTimeFormat(LOCALE, { timeZone: TIME_ZONE, hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const fmtWeekday = new Intl.DateTimeFormat(LOCALE, { timeZone: TIME_ZONE, weekday: "short" });
const fmtDayMonth = new Intl.DateTimeFormat(LOCALE, { timeZone: TIME_ZONE, month: "short", day: "numeric" });
const fmtDate = new Intl.DateTimeFormat(LOCALE, { timeZone: TIME_ZONE, year: "numeric", month: "short", day: "numeric" });
const fmtDateNumeric = new Intl.DateTimeFormat(LOCALE, { timeZone: TIME_ZONE, year: "numeric", month: "2-digit", day: "2-digit" });
const fmtFull = new Intl.DateTimeFormat(LOCALE, {
  timeZone: TIME_ZONE,
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});
const fmtDayLong = new Intl.DateTimeFormat(LOCALE, {
  timeZone: TIME_ZONE,
  weekday: "long",
  year: "numeric",
  month: "long",
  day: "numeric",
});

export function dayKey(date) {
  const p = zonedParts(date);
  return `${p.year}-${String(p.month).padStart(2, "0")}-${String(p.day).padStart(2, "0")}`;
}

function daysBetween(a, b) {
  const [ay, am, ad] = dayKey(a).split("-").map(Number);
  const [by, bm, bd] = dayKey(b).split("-").map(Number);
  return Math.round((Date.UTC(by, bm - 1, bd) - Date.UTC(ay, am - 1, ad)) / 86400000);
}

/** Compact time for lists: 14:05, Yesterday, Mon, 3 Nov, 3 Nov 2024. */
export function shortTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const now = new Date();
  const days = daysBetween(date, now);
  if (days <= 0) return fmtTime.format(date);
  if (days === 1) return t("yesterday");
  if (days < 7) return fmtWeekday.format(date);
  if (zonedParts(date).year === zonedParts(now).year) return fmtDayMonth.format(date);
  return fmtDate.format(date);
}

export function timeOnly(iso) {
  return iso ? fmtTime.format(new Date(iso)) : "";
}

export function fullTime(iso) {
  return iso ? fmtFull.format(new Date(iso)) : "";
}

export function dateOnly(iso) {
  return iso ? fmtDateNumeric.format(new Date(iso)) : "";
}

export function dayHeading(iso) {
  const date = new Date(iso);
  const days = daysBetween(date, new Date());
  if (days === 0) return t("today");
  if (days === 1) return t("yesterday");
  return fmtDayLong.format(date);
}

const money = new Intl.NumberFormat(LOCALE, { style: "currency", currency: "CNY", currencyDisplay: "narrowSymbol" });
export function formatMoney(value) {
  const number = Number(value);
  return Number.isFinite(number) ? money.format(number) : String(value ?? "");
}
