// The filter state and its URL form. The URL is the source of truth: a view can be shared and survives reload.
// URL keys are the API's parameter names, plus `range` (1h|24h|7d|30d) for a rolling period.

import { toRfc3339 } from "./format.js";

export const RANGES = {
  "1h": { ms: 3600e3, label: "Last hour" },
  "24h": { ms: 24 * 3600e3, label: "Last 24 hours" },
  "7d": { ms: 7 * 24 * 3600e3, label: "Last 7 days" },
  "30d": { ms: 30 * 24 * 3600e3, label: "Last 30 days" },
};
export const DEFAULT_RANGE = "7d";

/** Exact-match filters of the API, in chip order, with their chip labels. */
export const TEXT_FILTERS = [
  ["actor_email", "User"],
  ["actor_id", "User ID"],
  ["ip", "IP address"],
  ["workspace_id", "Workspace"],
  ["target", "Target"],
];

export function emptyState() {
  return {
    range: DEFAULT_RANGE,
    start: null,
    end: null,
    q: "",
    scope: "",
    category: "",
    action: [],
    status: "",
    actor_email: "",
    actor_id: "",
    ip: "",
    workspace_id: "",
    target: "",
  };
}

function parseDate(s) {
  if (!s) return null;
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** State from a query string ("?scope=billing&range=24h"). Unknown keys are ignored. */
export function fromSearch(search) {
  const p = new URLSearchParams(search);
  const s = emptyState();
  s.start = parseDate(p.get("start"));
  s.end = parseDate(p.get("end"));
  const range = p.get("range");
  s.range = s.start || s.end ? "" : range && RANGES[range] ? range : DEFAULT_RANGE;
  for (const k of ["q", "scope", "category", "status", ...TEXT_FILTERS.map(([key]) => key)]) {
    s[k] = (p.get(k) || "").trim();
  }
  s.action = p.getAll("action").filter(Boolean);
  if (s.status && s.status !== "SUCCESS" && s.status !== "FAILED") s.status = "";
  if (!s.scope) s.category = "";
  return s;
}

/** [key, value] of every set filter except the period, in URL order (`action` repeats: OR of actions). */
function filterEntries(s) {
  const out = [];
  for (const k of ["q", "scope", "category"]) if (s[k]) out.push([k, s[k]]);
  for (const a of s.action) out.push(["action", a]);
  if (s.status) out.push(["status", s.status]);
  for (const [k] of TEXT_FILTERS) if (s[k]) out.push([k, s[k]]);
  return out;
}

/** Query string (without "?") for a state; defaults are left out to keep links short. */
export function toSearch(s) {
  const p = new URLSearchParams();
  if (s.range) {
    if (s.range !== DEFAULT_RANGE) p.set("range", s.range);
  } else {
    if (s.start) p.set("start", toRfc3339(s.start));
    if (s.end) p.set("end", toRfc3339(s.end));
  }
  for (const [k, v] of filterEntries(s)) p.append(k, v);
  return p.toString();
}

/** The concrete time window of a state at `now`: a rolling range ends now; a custom one keeps its bounds. */
export function resolveWindow(s, now = new Date()) {
  if (s.range) return { start: new Date(now.getTime() - RANGES[s.range].ms), end: now };
  const end = s.end || now;
  const start = s.start || new Date(end.getTime() - RANGES[DEFAULT_RANGE].ms);
  return { start, end };
}

/** The API parameters (GET /v1/events, /export, /stats) of a state over a resolved window. */
export function apiParams(s, win) {
  const out = { start: toRfc3339(win.start), end: toRfc3339(win.end) };
  for (const [k, v] of filterEntries(s)) if (k !== "action") out[k] = v;
  if (s.action.length) out.action = [...s.action];
  return out;
}

/** True when the view differs from the default one (last 7 days, no filter). */
export function hasFilters(s) {
  return s.range !== DEFAULT_RANGE || filterEntries(s).length > 0;
}
