// The REST API at /api/v1/: session cookie + CSRF header, JSON in and out.

import { t } from "./i18n.js";

const BASE = "/api/v1";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && meta.content) return meta.content;
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export class ApiError extends Error {
  constructor(status, data) {
    super(messagesOf(status, data).join(" "));
    this.status = status;
    this.data = data;
    this.messages = messagesOf(status, data);
    this.fields = data && typeof data === "object" && !Array.isArray(data) ? data : {};
  }
}

function flatten(value) {
  if (value === null || value === undefined) return [];
  if (Array.isArray(value)) return value.flatMap(flatten);
  if (typeof value === "object") return Object.values(value).flatMap(flatten);
  return [String(value)];
}

function messagesOf(status, data) {
  if (status === 0) return [t("network_error")];
  if (data && typeof data === "object") {
    if (typeof data.detail === "string") return [data.detail];
    const messages = flatten(data);
    if (messages.length) return messages;
  }
  if (status === 403) return [t("forbidden")];
  if (status === 404) return [t("not_found")];
  return [t("server_error", { status })];
}

export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["X-CSRFToken"] = csrfToken();
    headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(BASE + path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, null);
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export function qs(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
