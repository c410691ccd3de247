// The read API client (API.md). Every call carries the bearer token; errors become ApiError with the
// server's {"error": {"code", "message", "field"}} when present.

import { getToken } from "./auth.js";

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || null;
  }
}

let onUnauthorized = () => {};

/** Called with the ApiError whenever the API answers 401 (the page brings back the sign-in prompt). */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/** URLSearchParams from an object; arrays repeat the key; empty values are dropped. */
export function toQuery(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (Array.isArray(v)) v.filter((x) => x !== "" && x != null).forEach((x) => q.append(k, x));
    else if (v !== "" && v !== null && v !== undefined) q.append(k, String(v));
  }
  return q;
}

async function errorFrom(resp) {
  let code = `http_${resp.status}`;
  let message = `${resp.status} ${resp.statusText || "error"}`;
  let field = null;
  try {
    const body = await resp.json();
    const e = body && (body.error || body);
    if (e && typeof e === "object") {
      if (e.code) code = String(e.code);
      if (e.message) message = String(e.message);
      else if (typeof e.detail === "string") message = e.detail;
      if (e.field) field = String(e.field);
    }
  } catch {
    /* not JSON */
  }
  return new ApiError(resp.status, code, message, field);
}

/** GET path?params with the token; returns the Response (ok) or throws ApiError. A 429 or 503 that says when
 * to come back (Retry-After, at most 5 s) is retried once: reads are idempotent, and a refused read was not
 * recorded. */
export async function request(path, params, { signal } = {}, retried = false) {
  const q = toQuery(params).toString();
  let resp;
  try {
    resp = await fetch(q ? `${path}?${q}` : path, {
      headers: { Authorization: `Bearer ${getToken()}`, Accept: "application/json" },
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "network_error", "Cannot reach the audit-log API. Check your connection and try again.");
  }
  if (!resp.ok) {
    const after = Number(resp.headers.get("Retry-After") ?? "1");
    if (!retried && (resp.status === 429 || resp.status === 503) && Number.isFinite(after) && after <= 5) {
      await new Promise((resolve) => setTimeout(resolve, Math.max(after, 0.5) * 1000));
      return request(path, params, { signal }, true);
    }
    const err = await errorFrom(resp);
    if (resp.status === 401) onUnauthorized(err);
    throw err;
  }
  return resp;
}

/** GET path?params as Server-Sent Events with the token and `headers` (Last-Event-ID); returns the Response or
 * throws ApiError, with `retryAfter` (seconds or null) for a 429 / 503. No retry here: the live tail has its own. */
export async function openStream(path, params, { signal, headers } = {}) {
  let resp;
  try {
    resp = await fetch(`${path}?${toQuery(params)}`, {
      headers: { ...headers, Authorization: `Bearer ${getToken()}`, Accept: "text/event-stream" },
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "network_error", "Cannot reach the audit-log API.");
  }
  if (resp.ok && !/^text\/event-stream\b/i.test(resp.headers.get("Content-Type") || "")) {
    if (resp.body) resp.body.cancel().catch(() => {});
    throw new ApiError(resp.status, "not_a_stream", `The server answered ${resp.headers.get("Content-Type") || "no content type"}, not an event stream.`);
  }
  if (resp.ok) return resp;
  const err = await errorFrom(resp);
  const after = resp.headers.get("Retry-After");
  err.retryAfter = after !== null && /^\d+(\.\d+)?$/.test(after.trim()) ? Number(after) : null;
  if (resp.status === 401) onUnauthorized(err);
  throw err;
}

/** A change (POST / PATCH / DELETE with a JSON body): never retried (a change is recorded before it is made).
 * Returns the parsed JSON answer (null for 204) or throws ApiError. */
export async function send(method, path, body) {
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${getToken()}`, Accept: "application/json", ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "network_error", "Cannot reach the audit-log API. Check your connection and try again.");
  }
  if (!resp.ok) {
    const err = await errorFrom(resp);
    if (resp.status === 401) onUnauthorized(err);
    throw err;
  }
  return resp.status === 204 ? null : resp.json();
}

export async function getJson(path, params, opts) {
  const resp = await request(path, params, opts);
  return resp.json();
}

export const api = {
  catalog: () => getJson("/v1/catalog"),
  events: (params, opts) => getJson("/v1/events", params, opts),
  event: (id) => getJson(`/v1/events/${encodeURIComponent(id)}`),
  actors: (prefix, opts) => getJson("/v1/actors", { prefix }, opts),
  stats: (params, opts) => getJson("/v1/stats", params, opts),
  integrity: () => getJson("/v1/integrity"),
  /** Log streams (STREAMS.md): org owners with audit:stream. */
  streams: {
    list: () => getJson("/v1/streams"),
    create: (body) => send("POST", "/v1/streams", body),
    update: (id, body) => send("PATCH", `/v1/streams/${encodeURIComponent(id)}`, body),
    remove: (id) => send("DELETE", `/v1/streams/${encodeURIComponent(id)}`),
    test: (id) => send("POST", `/v1/streams/${encodeURIComponent(id)}/test`),
  },
  /** The live tail (API.md "Live tail"): a Response whose body is the event stream. */
  stream: (params, opts) => openStream("/v1/events/stream", params, opts),
  /** The export as {blob, filename}; the bearer header is why this is a fetch and not a link. */
  async export(params, format) {
    const resp = await request("/v1/events/export", { ...params, format });
    const cd = resp.headers.get("Content-Disposition") || "";
    const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
    const filename = m ? decodeURIComponent(m[1]) : `audit-log.${format === "ndjson" ? "ndjson" : "csv"}`;
    return { blob: await resp.blob(), filename };
  },
};

/** Which permission a 403 is about, for a message a person can act on. */
export function missingPermission(err, fallback = "audit:read") {
  const m = /audit:[a-z_]+/.exec(err && err.message ? err.message : "");
  return m ? m[0] : fallback;
}
