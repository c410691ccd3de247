// The page's state, in one place: the filter state and its URL form, then the page's one mutable state object
// (`page`) with the only functions that change it. Other modules read `page` and call these functions.
// The URL is the source of truth for the filters: a view can be shared and survives reload.
// URL keys are the API's parameter names, plus `range` (1h|24h|7d|30d, period.js) for a rolling period.

import { actionGroups, categoryOf } from "./catalog.js";
import { getTzMode, setTzMode, toRfc3339 } from "./format.js";
import { FILTERS } from "./filter_table.js";
import { DEFAULT_RANGE, parseDate, RANGES, resolveWindow } from "./period.js";

/** Exact-match text filters of the API, in chip order, with their chip labels (from the filter table). */
export const TEXT_FILTERS = FILTERS.filter(([, , widget]) => widget === "text").map(([name, label]) => [name, label]);
/** The chip label of each filter widget (LABELS.scope is the scope filter's). */
export const LABELS = Object.fromEntries(FILTERS.map(([, label, widget]) => [widget, label]));
/** Filters sent in the URL and to the API, in this order (the period is sent apart). */
const URL_ORDER = ["search", "scope", "category", "action", "status", "text"];
const SENT = URL_ORDER.flatMap((w) => FILTERS.filter(([, , widget]) => widget === w).map(([name, , widget]) => [name, widget]));

export function emptyState() {
  const s = { range: DEFAULT_RANGE };
  for (const [name, , widget] of FILTERS) s[name] = widget === "period" ? null : widget === "action" ? [] : "";
  return s;
}

/** State from a query string ("?scope=billing&range=24h"). Unknown keys are ignored. */
export function fromSearch(search) {
  const p = new URLSearchParams(search);
  const s = emptyState();
  s.start = parseDate(p.get("start"));
  s.end = parseDate(p.get("end"));
  const range = p.get("range");
  s.range = s.start || s.end ? "" : range && RANGES[range] ? range : DEFAULT_RANGE;
  for (const [k, w] of SENT) if (w !== "action") s[k] = (p.get(k) || "").trim();
  s.action = p.getAll("action").filter(Boolean);
  if (s.status && s.status !== "SUCCESS" && s.status !== "FAILED") s.status = "";
  if (!s.scope) s.category = "";
  return s;
}

/** [key, value] of every set filter except the period, in URL order (`action` repeats: OR of actions). */
function filterEntries(s) {
  const out = [];
  for (const [k, w] of SENT) {
    if (w === "action") for (const a of s[k]) out.push([k, a]);
    else if (s[k]) out.push([k, s[k]]);
  }
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

/** The API parameters (GET /v1/events, /export, /stats) of a state over a resolved window. */
export function apiParams(s, win) {
  const out = { start: toRfc3339(win.start), end: toRfc3339(win.end) };
  for (const [k, v] of filterEntries(s)) if (k !== "action") out[k] = v;
  if (s.action.length) out.action = [...s.action];
  return out;
}

/** The live tail's parameters (GET /v1/events/stream): the filters, and only the period bounds the user fixed (a
 * rolling period has none: an `end` would cut off the events yet to come). */
export function streamParams(s) {
  const { start, end, ...out } = apiParams(s, { start: s.start || new Date(0), end: s.end || new Date(0) });
  if (!s.range && s.start) out.start = start;
  if (!s.range && s.end) out.end = end;
  return out;
}

/** True when the view differs from the default one (last 7 days, no filter). */
export function hasFilters(s) {
  return s.range !== DEFAULT_RANGE || filterEntries(s).length > 0;
}

// ----- the page's mutable state ------------------------------------------------------------------------------
export const page = {
  caller: null, // describeCaller() of the token's claims (display only)
  catalog: null,
  visibleScopes: null, // workspace admin: Set of the scope codes with events in its view; null: every catalog scope
  filters: fromSearch(location.search),
  tz: getTzMode(),
  win: null, // the resolved period of the view shown
  params: null, // its API parameters (a new object per view: a stale stats reply is recognised by it)
  rows: [],
  pages: 0, // pages of the list shown (Load more adds one)
  trimmed: false, // the live tail dropped the oldest rows (their cursor went with them)
  cursor: null,
  newIds: new Set(),
  error: null,
  loading: false,
  total: null,
  expanded: new Set(),
  details: new Map(),
  ctrl: null,
  seq: 0,
  timer: null,
  lastStats: null,
  started: false,
  addingAction: false,
  // the live tail (live_tail.js): toggle, connection, status, events waiting for the table
  live: { on: false, ctrl: null, status: "off", why: "", lastId: "", retryMs: 3000, failures: 0, retryTimer: null, flushTimer: null, pending: [] },
};

const listeners = new Map();

/** Call `fn` after every change of `event`: "filters" (the filter set), "tz" (time-zone mode), "view" (a load ended). */
export function on(event, fn) {
  if (!listeners.has(event)) listeners.set(event, []);
  listeners.get(event).push(fn);
}

function emit(event) {
  for (const fn of listeners.get(event) || []) fn();
}

/** Change filters: keeps category/action consistent with scope, updates the URL, then the page reloads ("filters"). */
export function setFilters(patch, { push = true } = {}) {
  const f = Object.assign(page.filters, patch);
  if (!f.scope) f.category = "";
  if (page.catalog && f.scope && f.category && !categoryOf(page.catalog, f.scope, f.category)) f.category = "";
  if (page.catalog && (f.scope || f.category)) {
    const allowed = new Set(actionGroups(page.catalog, f, page.visibleScopes).flatMap(([, acts]) => acts.map((a) => a.code)));
    f.action = f.action.filter((a) => allowed.has(a));
  }
  const search = toSearch(f);
  const url = `${location.pathname}${search ? `?${search}` : ""}`;
  if (url !== `${location.pathname}${location.search}`) history[push ? "pushState" : "replaceState"](null, "", url);
  emit("filters");
}

/** Back / forward: the filters of the URL. */
export function filtersFromUrl() {
  page.filters = fromSearch(location.search);
  emit("filters");
}

/** Every filter off (the default period); the URL and the view follow at the next setFilters(). */
export function resetFilters() {
  page.filters = Object.assign(emptyState(), { range: DEFAULT_RANGE });
}

/** While on, the next choice in the Action select adds to the selected actions (OR). */
export const setAddingAction = (on) => (page.addingAction = on);

export function setTz(mode) {
  page.tz = mode;
  setTzMode(mode);
  emit("tz");
}

export const setCaller = (caller) => (page.caller = caller);

/** Signed in: the view may load (the admin's visible scopes are looked up again). */
export function markStarted() {
  page.started = true;
  page.visibleScopes = null;
}

export function setCatalog(catalog, visibleScopes) {
  page.catalog = catalog && Array.isArray(catalog.scopes) ? catalog : { scopes: [] };
  page.visibleScopes = visibleScopes;
}

export function failCatalog(err) {
  page.catalog = { scopes: [] };
  page.error = err;
}

/** Signed out: nothing of the previous view stays on screen. */
export function clearSession() {
  page.rows = [];
  page.details.clear();
  page.expanded.clear();
}

export const markLoading = (on) => (page.loading = on);

/**
 * Start a request for the view, aborting the one in flight. Without `append` the period is resolved again
 * (a rolling one ends now) and, unless `markNew`, the rows are dropped. Returns its {signal, seq}.
 */
export function beginLoad({ append, markNew }) {
  abortLoad();
  const ctrl = new AbortController();
  page.ctrl = ctrl;
  const seq = ++page.seq;
  if (!append) {
    page.win = resolveWindow(page.filters);
    page.params = apiParams(page.filters, page.win);
    page.error = null;
    if (!markNew) {
      page.rows = [];
      page.total = null;
    }
  }
  return { signal: ctrl.signal, seq };
}

export const isCurrentLoad = (seq) => seq === page.seq;

export function abortLoad() {
  if (page.ctrl) page.ctrl.abort();
}

/** A page of GET /v1/events: appended, or replacing the rows (with `markNew`, ids not shown before are new). */
export function receiveEvents(body, { append, markNew }) {
  const data = Array.isArray(body.data) ? body.data : [];
  if (append) {
    page.rows = page.rows.concat(data);
    page.newIds = new Set();
  } else {
    const before = new Set(page.rows.map((r) => r.event_id));
    page.newIds = markNew && before.size ? new Set(data.filter((r) => !before.has(r.event_id)).map((r) => r.event_id)) : new Set();
    page.rows = data;
  }
  page.pages = append ? page.pages + 1 : 1;
  page.trimmed = false;
  page.cursor = body.next_cursor || null;
  page.error = null;
  emit("view");
}

export function failLoad(err, { append }) {
  page.error = err;
  if (!append) page.rows = [];
  emit("view");
}

/** Change the live tail's state (fields of `page.live`); its events wait in `pending` while a load runs. */
export const setLive = (patch) => Object.assign(page.live, patch);
export const queueLive = (ev) => page.live.pending.push(ev);
export const dropLive = () => page.live.pending.splice(0);

/**
 * The waiting events on top of the rows, newest first and highlighted, skipping those already shown; at most
 * `maxRows` rows stay (the oldest go, and with them the cursor of "Load more"). Returns how many were added.
 */
export function takeLive(maxRows) {
  const seen = new Set(page.rows.map((r) => r.event_id));
  const fresh = dropLive().filter((ev) => ev && ev.event_id && !seen.has(ev.event_id) && seen.add(ev.event_id)).reverse();
  if (!fresh.length) return 0;
  page.rows = fresh.concat(page.rows);
  page.newIds = new Set(fresh.map((r) => r.event_id));
  if (page.total !== null) page.total += fresh.length;
  for (const gone of page.rows.splice(maxRows)) {
    page.expanded.delete(gone.event_id);
    page.details.delete(gone.event_id);
    Object.assign(page, { trimmed: true, cursor: null });
  }
  return fresh.length;
}

export const setStats = (stats) => (page.lastStats = stats);

export const setTotal = (total) => (page.total = total);

export function clearStats() {
  page.lastStats = null;
  page.total = null;
}

/** Open or close the detail of a row; returns true when it is now open. */
export function toggleExpanded(id) {
  const open = !page.expanded.has(id);
  if (open) page.expanded.add(id);
  else page.expanded.delete(id);
  return open;
}

/** The full event of an expanded row, or the Error of loading it. */
export const setDetail = (id, value) => page.details.set(id, value);

/** Forget the detail of a row; true when there was one. */
export const dropDetail = (id) => page.details.delete(id);

export const setTimer = (timer) => (page.timer = timer);
