// The audit-log page: sign-in, filter bar (state in the URL), table with expandable rows, histogram,
// refresh / auto-refresh, export and paging. Talks only to this app's HTTP API (API.md).

import { api, ApiError, missingPermission, setUnauthorizedHandler } from "./api.js";
import { clearToken, decodeClaims, describeCaller, getToken, isExpired, normaliseToken, setToken } from "./auth.js";
import { attachAutocomplete } from "./autocomplete.js";
import { $, $$, debounce, h, setChildren, toast } from "./dom.js";
import { formatCount, formatTs, fromInputValue, getTzMode, setTzMode, toInputValue, tzLabel } from "./format.js";
import { intervalFor, normaliseStats, renderHistogram } from "./histogram.js";
import { icon } from "./icons.js";
import { apiParams, DEFAULT_RANGE, emptyState, fromSearch, hasFilters, RANGES, resolveWindow, TEXT_FILTERS, toSearch } from "./state.js";
import { detailRow, eventRow, skeletonRows } from "./table.js";

const PAGE_SIZE = 50;
const AUTO_REFRESH_MS = 10_000;
const AUTO_KEY = "auditlog.autorefresh";
const TOP_N = 5;
const SCOPE_LOOKBACK_DAYS = 400; // how far back a workspace admin's scopes with events are looked for
const SCOPE_TOP = 100; // the API's maximum of groups

const el = (id) => document.getElementById(id);
const E = {
  main: el("main"),
  topbar: $(".topbar"),
  q: el("f-q"),
  start: el("f-start"),
  end: el("f-end"),
  scope: el("f-scope"),
  category: el("f-category"),
  categoryHint: el("category-hint"),
  action: el("f-action"),
  actionOr: el("action-or"),
  status: el("f-status"),
  email: el("f-email"),
  emailList: el("f-email-list"),
  wsSelect: el("f-workspace"),
  wsText: el("f-workspace-text"),
  chipsRow: el("chips-row"),
  chips: el("chips"),
  rows: el("rows"),
  state: el("state"),
  progress: el("progress"),
  resultsMeta: el("results-meta"),
  foot: el("results-foot"),
  footMeta: el("foot-meta"),
  loadMore: el("load-more"),
  refresh: el("refresh"),
  auto: el("auto-refresh"),
  exportWrap: el("export-wrap"),
  exportBtn: el("export-btn"),
  exportMenu: el("export-menu"),
  hist: el("histogram"),
  histMeta: el("hist-meta"),
  histCard: $(".hist-card"),
  topIps: el("top-ips"),
  topUsers: el("top-users"),
  signin: el("signin"),
  signinForm: el("signin-form"),
  signinReason: el("signin-reason"),
  tokenInput: el("token-input"),
};

const app = {
  caller: null,
  catalog: null,
  visibleScopes: null, // workspace admin: Set of the scope codes with events in its view; null: every catalog scope
  filters: fromSearch(location.search),
  tz: getTzMode(),
  win: null,
  params: null,
  rows: [],
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
};

// ----- catalog lookups ----------------------------------------------------------------------------------
const scopeOf = (code) => (app.catalog ? app.catalog.scopes.find((s) => s.code === code) : null);
const categoryOf = (scope, code) => {
  const s = scopeOf(scope);
  return s ? s.categories.find((c) => c.code === code) : null;
};
function actionLabel(code) {
  for (const s of app.catalog ? app.catalog.scopes : []) {
    if (app.filters.scope && s.code !== app.filters.scope) continue;
    for (const c of s.categories) for (const a of c.actions) if (a.code === code) return a.label;
  }
  return code;
}
/** Actions offered by the Action select for the current scope / category, as [groupLabel, actions[]]. */
function actionGroups() {
  const out = [];
  const seen = new Set();
  for (const s of app.catalog ? app.catalog.scopes : []) {
    if (app.filters.scope && s.code !== app.filters.scope) continue;
    if (!app.filters.scope && app.visibleScopes && !app.visibleScopes.has(s.code)) continue; // admin: only scopes it can see
    for (const c of s.categories) {
      if (app.filters.category && c.code !== app.filters.category) continue;
      const acts = c.actions.filter((a) => !seen.has(a.code) && seen.add(a.code));
      if (acts.length) out.push([app.filters.scope ? c.label : `${s.label} · ${c.label}`, acts]);
    }
  }
  return out;
}

// ----- sign-in ---------------------------------------------------------------------------------------------
function showSignIn(reason) {
  stopAuto();
  if (app.ctrl) app.ctrl.abort();
  E.signinReason.hidden = !reason;
  E.signinReason.textContent = reason || "";
  E.signin.hidden = false;
  el("whoami").hidden = true;
  E.main.inert = true;
  E.topbar.inert = true;
  E.tokenInput.value = "";
  E.tokenInput.focus();
}

function hideSignIn() {
  E.signin.hidden = true;
  E.main.inert = false;
  E.topbar.inert = false;
}

E.signinForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const token = normaliseToken(E.tokenInput.value);
  if (!token) return showSignIn("Paste a token to sign in.");
  if (!decodeClaims(token)) return showSignIn("That does not look like a JWT (three base64url parts separated by dots).");
  setToken(token);
  hideSignIn();
  start();
});

E.tokenInput.addEventListener("keydown", (e) => {
  // a pasted token is one line: Enter signs in (Shift+Enter still inserts a newline)
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    E.signinForm.requestSubmit();
  }
});

el("sign-out").addEventListener("click", () => {
  clearToken();
  app.rows = [];
  app.details.clear();
  app.expanded.clear();
  render();
  showSignIn("You are signed out.");
});

setUnauthorizedHandler((err) => {
  clearToken();
  showSignIn(`The API did not accept your token (${err.message}). Paste a valid token to continue.`);
});

// ----- role ------------------------------------------------------------------------------------------------
function applyCaller() {
  const c = app.caller;
  el("whoami").hidden = false;
  el("who-email").textContent = c.email || c.sub || "Signed in";
  el("who-role").textContent = c.org ? `${c.roleLabel} · ${c.org}` : c.roleLabel;
  el("who-avatar").textContent = (c.email || c.sub || "?").slice(0, 1).toUpperCase();
  el("crumb-org").textContent = c.org ? `Organization: ${c.org}` : "Organization";
  document.title = c.org ? `Audit Logs · ${c.org}` : "Audit Logs";
  const note = el("scope-note");
  if (c.role === "workspace_admin") {
    const ws = c.workspaces.length ? c.workspaces.join(", ") : "none";
    note.textContent = `You are a Workspace Admin: only events of your workspaces (${ws}) are shown. Logs are read-only.`;
  } else {
    note.textContent = `All user and system actions across ${c.org ? `organization ${c.org}` : "your organization"}. Logs are read-only.`;
  }
  // The integrity check covers the whole organization: offered to org owners only (the server enforces it).
  el("verify").hidden = c.role !== "org_owner";
  el("integrity-note").hidden = true;
  // Export is only offered with audit:export; the server enforces it either way.
  E.exportWrap.hidden = !c.canExport;
  // Workspace filter: a workspace admin picks among its own workspaces; an owner may type any id.
  const admin = c.role === "workspace_admin";
  E.wsSelect.hidden = !admin;
  E.wsText.hidden = admin;
  el("ws-field").querySelector("label").htmlFor = admin ? "f-workspace" : "f-workspace-text";
  if (admin) {
    setChildren(E.wsSelect, h("option", { value: "" }, "All my workspaces"), c.workspaces.map((w) => h("option", { value: w }, w)));
  }
}

/**
 * For a workspace admin, the scopes that have events in its view (GET /v1/stats group_by=scope over the last
 * SCOPE_LOOKBACK_DAYS days): organization-level scopes carry no workspace and are always empty for it. null
 * (offer every catalog scope) when the call fails or the answer may be cut at the API's group limit.
 */
async function scopesWithEvents() {
  const end = new Date();
  const start = new Date(end.getTime() - SCOPE_LOOKBACK_DAYS * 86_400_000);
  try {
    const body = await api.stats({ interval: "day", start: start.toISOString(), end: end.toISOString(), group_by: "scope", top: SCOPE_TOP });
    const top = body && Array.isArray(body.top) ? body.top : null;
    return top && top.length < SCOPE_TOP ? new Set(top.map((t) => t.key)) : null;
  } catch {
    return null;
  }
}

/** The Scope select's options: catalog scopes, for a workspace admin only those with events (labels from the catalog). */
function scopeOptions(current) {
  const all = app.catalog ? app.catalog.scopes : [];
  const seen = app.visibleScopes;
  if (!seen) return all;
  // a shared link may name a scope without events for this admin: keep it, marked, so the filter shown is the one applied
  return all
    .filter((s) => seen.has(s.code) || s.code === current)
    .map((s) => (seen.has(s.code) ? s : { code: s.code, label: `${s.label} (no events in your workspaces)` }));
}

// ----- controls <-> state ----------------------------------------------------------------------------------
function fillSelect(select, blank, groups) {
  const opts = [h("option", { value: "" }, blank)];
  for (const g of groups) {
    if (Array.isArray(g)) opts.push(h("optgroup", { label: g[0] }, g[1].map((a) => h("option", { value: a.code }, a.label))));
    else opts.push(h("option", { value: g.code }, g.label));
  }
  setChildren(select, opts);
}

function syncControls() {
  const f = app.filters;
  if (document.activeElement !== E.q) E.q.value = f.q;
  for (const b of $$("#quick-ranges button")) b.setAttribute("aria-pressed", String(b.dataset.range === f.range));
  const win = resolveWindow(f);
  E.start.value = toInputValue(win.start, app.tz);
  E.end.value = toInputValue(win.end, app.tz);
  E.start.removeAttribute("aria-invalid");
  E.end.removeAttribute("aria-invalid");
  el("period-tz").textContent = tzLabel(app.tz);
  if (app.catalog) {
    fillSelect(E.scope, "All scopes", scopeOptions(f.scope));
    E.scope.value = f.scope;
    const s = scopeOf(f.scope);
    fillSelect(E.category, s ? "All categories" : "Select a scope first", s ? s.categories : []);
    E.category.disabled = !s;
    E.category.value = f.category;
    E.categoryHint.hidden = Boolean(s);
    fillSelect(E.action, "All actions", actionGroups());
    // several actions (OR), or adding one more: a disabled placeholder option says so
    const placeholder = app.addingAction ? "Add another action…" : f.action.length > 1 ? `${f.action.length} actions selected` : "";
    if (placeholder) E.action.options[0].after(h("option", { value: "__placeholder", disabled: true }, placeholder));
    E.action.value = placeholder ? "__placeholder" : f.action.length === 1 ? f.action[0] : "";
    E.actionOr.hidden = app.addingAction || f.action.length === 0;
  }
  E.status.value = f.status;
  if (document.activeElement !== E.email) E.email.value = f.actor_email;
  if (f.workspace_id && E.wsSelect.hidden === false && ![...E.wsSelect.options].some((o) => o.value === f.workspace_id)) {
    // a shared link may name a workspace this admin cannot see: show it (the API answers 403 and the page says so)
    E.wsSelect.append(h("option", { value: f.workspace_id }, `${f.workspace_id} (no access)`));
  }
  E.wsSelect.value = f.workspace_id;
  if (document.activeElement !== E.wsText) E.wsText.value = f.workspace_id;
  for (const b of $$("#tz-switch button")) b.setAttribute("aria-pressed", String(b.dataset.tz === app.tz));
  el("th-tz").textContent = `(${tzLabel(app.tz)})`;
  renderChips();
}

function chipList() {
  const f = app.filters;
  const chips = [];
  if (f.range !== DEFAULT_RANGE) {
    const text = f.range
      ? RANGES[f.range].label
      : (() => {
          const w = resolveWindow(f);
          return `${formatTs(w.start, app.tz).slice(0, 16)} → ${formatTs(w.end, app.tz).slice(0, 16)}`;
        })();
    chips.push(["Period", text, { range: DEFAULT_RANGE, start: null, end: null }]);
  }
  if (f.q) chips.push(["Search", f.q, { q: "" }]);
  if (f.scope) chips.push(["Scope", (scopeOf(f.scope) || {}).label || f.scope, { scope: "", category: "" }]);
  if (f.category) chips.push(["Category", (categoryOf(f.scope, f.category) || {}).label || f.category, { category: "" }]);
  for (const a of f.action) chips.push(["Action", actionLabel(a), { action: f.action.filter((x) => x !== a) }]);
  if (f.status) chips.push(["Status", f.status, { status: "" }]);
  for (const [k, label] of TEXT_FILTERS) if (f[k]) chips.push([label, f[k], { [k]: "" }]);
  return chips;
}

function renderChips() {
  const chips = chipList();
  E.chipsRow.hidden = chips.length === 0;
  setChildren(
    E.chips,
    chips.map(([name, value, patch]) =>
      h(
        "li.chip",
        h("span.chip-name", `${name}:`),
        h("span.chip-value", value),
        h(
          "button.chip-x",
          { type: "button", "aria-label": `Remove filter ${name}: ${value}`, title: "Remove filter", onclick: () => setFilters(patch) },
          icon("x", 12),
        ),
      ),
    ),
  );
}

/** Change filters: keeps category/action consistent with scope, updates the URL and reloads. */
function setFilters(patch, { push = true } = {}) {
  const f = Object.assign(app.filters, patch);
  if (!f.scope) f.category = "";
  if (app.catalog && f.scope && f.category && !categoryOf(f.scope, f.category)) f.category = "";
  if (app.catalog && (f.scope || f.category)) {
    const allowed = new Set(actionGroups().flatMap(([, acts]) => acts.map((a) => a.code)));
    f.action = f.action.filter((a) => allowed.has(a));
  }
  const search = toSearch(f);
  const url = `${location.pathname}${search ? `?${search}` : ""}`;
  if (url !== `${location.pathname}${location.search}`) history[push ? "pushState" : "replaceState"](null, "", url);
  syncControls();
  load();
}

window.addEventListener("popstate", () => {
  app.filters = fromSearch(location.search);
  syncControls();
  load();
});

// filter bar events
const searchNow = () => setFilters({ q: E.q.value.trim() }, { push: false });
const searchLater = debounce(searchNow, 350);
E.q.addEventListener("input", searchLater);
E.q.addEventListener("keydown", (e) => {
  if (e.key === "Enter") {
    e.preventDefault();
    searchLater.cancel();
    searchNow();
  }
});
E.q.addEventListener("search", () => {
  // the native clear (×) of a search input
  if (!E.q.value) {
    searchLater.cancel();
    searchNow();
  }
});
el("filters").addEventListener("submit", (e) => e.preventDefault());
for (const b of $$("#quick-ranges button")) {
  b.addEventListener("click", () => setFilters({ range: b.dataset.range, start: null, end: null }));
}
function onPeriodInput() {
  const win = resolveWindow(app.filters);
  const start = fromInputValue(E.start.value, app.tz) || win.start;
  const end = fromInputValue(E.end.value, app.tz) || win.end;
  if (start >= end) {
    E.start.setAttribute("aria-invalid", "true");
    E.end.setAttribute("aria-invalid", "true");
    toast("The start of the period must be before its end.", "error");
    return;
  }
  setFilters({ range: "", start, end });
}
E.start.addEventListener("change", onPeriodInput);
E.end.addEventListener("change", onPeriodInput);
E.scope.addEventListener("change", () => setFilters({ scope: E.scope.value, category: "" }));
E.category.addEventListener("change", () => setFilters({ category: E.category.value }));
E.action.addEventListener("change", () => {
  const v = E.action.value;
  const adding = app.addingAction;
  app.addingAction = false;
  if (!v) setFilters({ action: [] });
  else setFilters({ action: adding ? [...new Set([...app.filters.action, v])] : [v] });
});
E.actionOr.addEventListener("click", () => {
  // "Password failure OR OTP failure": the next choice adds to the selected actions
  app.addingAction = true;
  syncControls();
  E.action.focus();
});
E.action.addEventListener("blur", () => {
  if (app.addingAction) {
    app.addingAction = false;
    syncControls();
  }
});
E.status.addEventListener("change", () => setFilters({ status: E.status.value }));
E.wsSelect.addEventListener("change", () => setFilters({ workspace_id: E.wsSelect.value }));
E.wsText.addEventListener("change", () => setFilters({ workspace_id: E.wsText.value.trim() }));
E.wsText.addEventListener("keydown", (e) => {
  if (e.key === "Enter") {
    e.preventDefault();
    setFilters({ workspace_id: E.wsText.value.trim() });
  }
});
attachAutocomplete(E.email, E.emailList, {
  minChars: 2,
  fetch: async (prefix, signal) => normaliseActors(await api.actors(prefix, { signal })),
  onPick: (value) => setFilters({ actor_email: value }),
});
E.email.addEventListener("change", () => {
  // leaving the field with a cleared value removes the filter
  if (!E.email.value.trim() && app.filters.actor_email) setFilters({ actor_email: "" });
});
el("clear-all").addEventListener("click", () => {
  const keep = { range: DEFAULT_RANGE };
  app.filters = Object.assign(emptyState(), keep);
  E.q.value = "";
  E.email.value = "";
  setFilters({});
});

/** The actors response as a list of e-mails, whatever its exact shape. */
function normaliseActors(body) {
  const list = Array.isArray(body) ? body : (body && (body.data || body.actors || body.emails)) || [];
  return list.map((x) => (typeof x === "string" ? x : x && (x.email || x.actor_email))).filter(Boolean);
}

// time-zone switch
for (const b of $$("#tz-switch button")) {
  b.addEventListener("click", () => {
    app.tz = b.dataset.tz;
    setTzMode(app.tz);
    syncControls();
    render();
    if (app.lastStats) drawHistogram(app.lastStats);
  });
}

// ----- loading -----------------------------------------------------------------------------------------------
function setLoading(on) {
  app.loading = on;
  E.progress.hidden = !on;
  E.main.setAttribute("aria-busy", String(on));
  E.refresh.disabled = on;
  E.refresh.classList.toggle("is-spinning", on);
}

/**
 * Load the first page (or the next one with append). A rolling period is re-resolved to "now", so Refresh
 * brings new events; `markNew` highlights rows that were not on screen before.
 */
async function load({ append = false, markNew = false } = {}) {
  if (!app.started) return;
  if (app.ctrl) app.ctrl.abort();
  const ctrl = new AbortController();
  app.ctrl = ctrl;
  const seq = ++app.seq;
  if (!append) {
    app.win = resolveWindow(app.filters);
    app.params = apiParams(app.filters, app.win);
    app.error = null;
    if (!markNew) {
      app.rows = [];
      app.total = null;
    }
    loadStats(app.params);
  }
  setLoading(true);
  if (!app.rows.length && !append) setChildren(E.rows, skeletonRows());
  E.state.hidden = true;
  try {
    const body = await api.events({ ...app.params, limit: PAGE_SIZE, cursor: append ? app.cursor : undefined }, { signal: ctrl.signal });
    if (seq !== app.seq) return;
    const data = Array.isArray(body.data) ? body.data : [];
    if (append) {
      app.rows = app.rows.concat(data);
      app.newIds = new Set();
    } else {
      const before = new Set(app.rows.map((r) => r.event_id));
      app.newIds = markNew && before.size ? new Set(data.filter((r) => !before.has(r.event_id)).map((r) => r.event_id)) : new Set();
      app.rows = data;
      if (markNew && app.newIds.size) toast(`${app.newIds.size} new event${app.newIds.size === 1 ? "" : "s"}`);
    }
    app.cursor = body.next_cursor || null;
    app.error = null;
  } catch (err) {
    if (err && err.name === "AbortError") return;
    if (seq !== app.seq) return;
    app.error = err;
    if (!append) app.rows = [];
  } finally {
    if (seq === app.seq) setLoading(false);
  }
  render();
  if (append && !app.error) toast(`Loaded ${app.rows.length} events`);
}

/**
 * Histogram and top lists of the view `params`. A reply is dropped once another view is loading (new
 * `app.params`), but not because of "Load more", which pages the same view.
 */
async function loadStats(params) {
  const interval = intervalFor(app.win);
  E.histCard.classList.add("is-loading");
  try {
    // one call draws the histogram and the top IPs; a second (coarse buckets) gives the top users
    const [body, users] = await Promise.all([
      api.stats({ ...params, interval, group_by: "ip", top: TOP_N }),
      api.stats({ ...params, interval: "day", group_by: "actor_email", top: TOP_N }).catch(() => null),
    ]);
    if (params !== app.params) return;
    app.lastStats = { buckets: normaliseStats(body), interval: body.interval || interval };
    drawHistogram(app.lastStats);
    drawTops(E.topIps, body.top, "ip");
    drawTops(E.topUsers, users ? users.top : [], "actor_email");
  } catch (err) {
    if (params !== app.params) return;
    app.lastStats = null;
    app.total = null;
    E.histMeta.textContent = "";
    if (err instanceof ApiError && err.status === 401) return;
    setChildren(E.hist, h("p.hist-error", `No histogram for this view: ${err.message}`));
    drawTops(E.topIps, [], "ip");
    drawTops(E.topUsers, [], "actor_email");
  } finally {
    if (params === app.params) E.histCard.classList.remove("is-loading");
  }
}

/** The most frequent users / IPs of the view; a click filters on one (spotting repeated failures from one IP). */
function drawTops(list, top, key) {
  const items = Array.isArray(top) ? top : [];
  const max = Math.max(1, ...items.map((t) => t.total || 0));
  setChildren(
    list,
    items.length
      ? items.map((t) =>
          h(
            "li",
            h(
              "button.top-item",
              {
                type: "button",
                title: `Show only events with ${key === "ip" ? "IP address" : "user"} ${t.key}`,
                onclick: () => setFilters({ [key]: t.key }),
                "aria-pressed": String(app.filters[key] === t.key),
              },
              h("span.top-bar", { style: { width: `${((t.total || 0) / max) * 100}%` }, "aria-hidden": "true" }),
              h("span.top-key", key === "ip" ? { class: "mono" } : null, t.key),
              h(
                "span.top-count",
                t.failed && t.failed === t.total
                  ? h("span.top-failed", `${formatCount(t.failed)} failed`)
                  : [formatCount(t.total || 0), t.failed ? h("span.top-failed", ` · ${formatCount(t.failed)} failed`) : null],
              ),
            ),
          ),
        )
      : h("li.top-none", "—"),
  );
}

function drawHistogram({ buckets, interval }) {
  const { total, failed } = renderHistogram(E.hist, buckets, {
    tz: app.tz,
    interval,
    onPick: (start, end) => setFilters({ range: "", start, end: end > new Date() ? new Date() : end }),
  });
  app.total = total;
  if (!total) setChildren(E.hist, h("p.hist-empty", "No events in this period."));
  setChildren(
    E.histMeta,
    `${formatCount(total)} event${total === 1 ? "" : "s"} · ${interval === "day" ? "daily" : "hourly"}`,
    h("span.legend-dot.ok", { "aria-hidden": "true" }),
    "succeeded",
    h("span.legend-dot.failed", { "aria-hidden": "true" }),
    `${formatCount(failed)} failed`,
  );
  renderMeta();
}

// ----- rendering -------------------------------------------------------------------------------------------
function renderMeta() {
  const n = app.rows.length;
  if (app.error || (!n && !app.loading)) {
    E.resultsMeta.textContent = "";
  } else if (n) {
    const of = app.total !== null && app.total >= n ? ` of ${formatCount(app.total)}` : "";
    E.resultsMeta.textContent = `Showing ${formatCount(n)}${of} event${n === 1 && !of ? "" : "s"}, newest first`;
  }
  E.foot.hidden = !n;
  E.loadMore.hidden = !app.cursor;
  E.footMeta.textContent = app.cursor ? "" : n ? "End of results for this period." : "";
}

function render() {
  // keep keyboard focus on the same event across re-renders (refresh, auto-refresh, time-zone switch)
  const focused = document.activeElement && document.activeElement.closest ? document.activeElement.closest("tr.event-row") : null;
  const focusId = focused && E.rows.contains(focused) ? focused.dataset.id : null;
  const frag = [];
  for (const ev of app.rows) {
    const expanded = app.expanded.has(ev.event_id);
    frag.push(eventRow(ev, { tz: app.tz, expanded, isNew: app.newIds.has(ev.event_id) }));
    if (expanded) frag.push(detailRow(ev, app.details.get(ev.event_id) || null, detailOpts));
  }
  setChildren(E.rows, frag);
  if (focusId) {
    const again = E.rows.querySelector(`tr.event-row[data-id="${CSS.escape(focusId)}"]`);
    if (again) again.focus({ preventScroll: true });
  }
  renderState();
  renderMeta();
}

function renderState() {
  if (app.error) {
    E.state.hidden = false;
    setChildren(E.state, errorState(app.error));
    return;
  }
  if (!app.rows.length && !app.loading) {
    E.state.hidden = false;
    const filtered = hasFilters(app.filters);
    setChildren(
      E.state,
      h(
        "div.empty",
        h("div.state-icon", icon("inbox", 28)),
        h("h3", filtered ? "No events match these filters" : "No events in the last 7 days"),
        h("p", filtered ? "Try a wider period, another keyword, or remove a filter." : "Events appear here a moment after they are published."),
        filtered ? h("button.btn", { type: "button", onclick: () => el("clear-all").click() }, "Clear all filters") : null,
      ),
    );
    return;
  }
  E.state.hidden = true;
}

function errorState(err) {
  const status = err instanceof ApiError ? err.status : 0;
  let title = "Could not load audit events";
  let body = err.message || String(err);
  let extra = null;
  if (status === 403) {
    const perm = missingPermission(err);
    title = "Permission required";
    extra = h(
      "p",
      "Your token does not allow this view. ",
      /permission/i.test(body) || !app.caller || app.caller.canRead
        ? null
        : ["Reading audit logs needs the ", h("code", perm), " permission (User.UserAudit.READ). "],
      "Ask an organization owner for access.",
    );
  } else if (status === 422 || status === 400) {
    title = "This filter is not valid";
    if (err.field) extra = h("p", "Field: ", h("code", err.field));
  }
  return h(
    "div.error-state",
    { role: "alert" },
    h("div.state-icon.state-icon-error", icon(status === 403 ? "lock" : "alert", 28)),
    h("h3", title),
    h("p.error-message", body),
    extra,
    h(
      "div.state-actions",
      h("button.btn", { type: "button", onclick: () => load() }, icon("refresh", 14), "Retry"),
      status === 422 || status === 400 || status === 403 ? h("button.btn.btn-ghost", { type: "button", onclick: () => el("clear-all").click() }, "Reset filters") : null,
    ),
  );
}

// ----- rows: expand, detail, copy --------------------------------------------------------------------------
const detailOpts = {
  get tz() {
    return app.tz;
  },
  onFilter: (key, value) => setFilters({ [key]: value }),
  onCopy: copyText,
};

async function copyText(text, button) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    const ta = h("textarea", { style: { position: "fixed", opacity: "0" } });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    ta.remove();
  }
  if (button) {
    const label = button.lastChild;
    button.classList.toggle("is-done", ok);
    label.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => {
      button.classList.remove("is-done");
      label.textContent = "Copy JSON";
    }, 1500);
  }
  toast(ok ? "Event JSON copied to the clipboard" : "Could not copy: select the JSON and copy it by hand", ok ? "info" : "error");
}

function replaceDetail(id) {
  const tr = E.rows.querySelector(`tr.event-row[data-id="${CSS.escape(id)}"]`);
  if (!tr) return;
  const next = tr.nextElementSibling;
  if (next && next.classList.contains("detail-row")) next.remove();
  if (!app.expanded.has(id)) return;
  const ev = app.rows.find((r) => r.event_id === id);
  tr.after(detailRow(ev, app.details.get(id) || null, detailOpts));
}

async function toggleRow(tr) {
  const id = tr.dataset.id;
  const open = !app.expanded.has(id);
  if (open) app.expanded.add(id);
  else app.expanded.delete(id);
  tr.setAttribute("aria-expanded", String(open));
  replaceDetail(id);
  const ev = app.rows.find((r) => r.event_id === id);
  if (open && ev && "detail" in ev && !ev.detail_omitted && !app.details.has(id)) {
    // the list already carries the full event (detail included): no second request; a row whose large detail
    // the list left out (detail_omitted) is fetched whole from GET /v1/events/{id} below, "Loading…" meanwhile
    app.details.set(id, ev);
    replaceDetail(id);
    return;
  }
  if (open && !(app.details.get(id) && !(app.details.get(id) instanceof Error))) {
    if (app.details.delete(id)) replaceDetail(id); // a retry after an error shows "Loading…" again
    try {
      app.details.set(id, await api.event(id));
    } catch (err) {
      app.details.set(id, err instanceof Error ? err : new Error(String(err)));
    }
    replaceDetail(id);
  }
}

E.rows.addEventListener("click", (e) => {
  const tr = e.target.closest("tr.event-row");
  if (!tr || e.target.closest("a,button")) return;
  if (String(window.getSelection() || "").length) return; // selecting text is not a click
  toggleRow(tr);
});
E.rows.addEventListener("keydown", (e) => {
  const tr = e.target.closest("tr.event-row");
  if (!tr || e.target !== tr) return;
  if (e.key === "Enter" || e.key === " ") {
    e.preventDefault();
    toggleRow(tr);
  } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    e.preventDefault();
    const rows = $$("tr.event-row", E.rows);
    const i = rows.indexOf(tr) + (e.key === "ArrowDown" ? 1 : -1);
    if (rows[i]) rows[i].focus();
  }
});
E.loadMore.addEventListener("click", () => load({ append: true }));

// ----- refresh ---------------------------------------------------------------------------------------------
E.refresh.addEventListener("click", () => load({ markNew: true }));

// ----- integrity -------------------------------------------------------------------------------------------
const FINDING_LABELS = { altered: "altered", deleted: "deleted", unrecorded: "stored without a recorded hash", conflicting: "recorded with conflicting content" };

async function verifyIntegrity() {
  const btn = el("verify");
  const note = el("integrity-note");
  btn.disabled = true;
  btn.classList.add("is-busy");
  note.hidden = false;
  note.className = "integrity-note";
  note.textContent = "Verifying every stored event against its recorded content hash…";
  try {
    const r = await api.integrity();
    const when = formatTs(r.checked_at, app.tz);
    if (r.clean) {
      note.classList.add("is-clean");
      note.textContent = `Integrity verified ${when}: all ${formatCount(r.counts.verified || 0)} events match the content hash recorded when they were stored.`;
    } else {
      note.classList.add("is-tampered");
      const parts = Object.entries(r.findings).map(([k, ids]) => `${formatCount(r.counts[k] || ids.length)} ${FINDING_LABELS[k] || k} (${ids.slice(0, 5).join(", ")}${ids.length > 5 ? ", …" : ""})`);
      note.textContent = `Tampering detected ${when}: ${parts.join("; ")}. ${formatCount(r.counts.verified || 0)} events verified.`;
    }
  } catch (err) {
    note.hidden = true;
    if (!(err instanceof ApiError && err.status === 401)) toast(`Integrity check failed: ${err.message}`, "error");
  } finally {
    btn.disabled = false;
    btn.classList.remove("is-busy");
  }
}
el("verify").addEventListener("click", verifyIntegrity);

function stopAuto() {
  clearInterval(app.timer);
  app.timer = null;
}
function applyAuto() {
  stopAuto();
  if (E.auto.checked) {
    app.timer = setInterval(() => {
      // keep the user's place: no auto-refresh while paging deeper or reading a failed load
      if (document.visibilityState === "visible" && !app.loading && app.rows.length <= PAGE_SIZE && !app.error) load({ markNew: true });
    }, AUTO_REFRESH_MS);
  }
}
E.auto.addEventListener("change", () => {
  try {
    localStorage.setItem(AUTO_KEY, E.auto.checked ? "1" : "0");
  } catch {
    /* ignore */
  }
  applyAuto();
  toast(E.auto.checked ? "Auto-refresh every 10 seconds is on" : "Auto-refresh is off");
});

// ----- export ------------------------------------------------------------------------------------------------
function setMenu(open) {
  E.exportMenu.hidden = !open;
  E.exportBtn.setAttribute("aria-expanded", String(open));
  if (open) E.exportMenu.querySelector("button").focus();
}
E.exportBtn.addEventListener("click", () => setMenu(E.exportMenu.hidden));
E.exportMenu.addEventListener("keydown", (e) => {
  const items = $$("button", E.exportMenu);
  const i = items.indexOf(document.activeElement);
  if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    e.preventDefault();
    items[(i + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length].focus();
  } else if (e.key === "Escape") {
    setMenu(false);
    E.exportBtn.focus();
  }
});
document.addEventListener("click", (e) => {
  if (!E.exportWrap.contains(e.target)) setMenu(false);
});
for (const item of $$("button", E.exportMenu)) {
  item.addEventListener("click", () => {
    setMenu(false);
    exportView(item.dataset.format);
  });
}

/** Download exactly the current view (same filters and the same resolved period as the table). */
async function exportView(format) {
  if (!app.params) return;
  E.exportBtn.disabled = true;
  E.exportBtn.classList.add("is-busy");
  try {
    const { blob, filename } = await api.export(app.params, format);
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: filename, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    toast(`Downloaded ${filename}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) {
      toast(`Export needs the ${missingPermission(err, "audit:export")} permission. Ask an organization owner.`, "error");
    } else if (!(err instanceof ApiError && err.status === 401)) {
      toast(`Export failed: ${err.message}`, "error");
    }
  } finally {
    E.exportBtn.disabled = false;
    E.exportBtn.classList.remove("is-busy");
  }
}

// ----- start -------------------------------------------------------------------------------------------------
async function start() {
  const claims = decodeClaims(getToken());
  app.caller = describeCaller(claims);
  if (!claims) {
    clearToken();
    return showSignIn("The stored token is not readable. Paste it again.");
  }
  if (isExpired(app.caller)) {
    clearToken();
    return showSignIn(`Your token expired at ${formatTs(app.caller.expiresAt, app.tz)} ${tzLabel(app.tz)}. Paste a new one.`);
  }
  applyCaller();
  app.started = true;
  setLoading(true);
  setChildren(E.rows, skeletonRows());
  app.visibleScopes = null;
  try {
    const [catalog, scopes] = await Promise.all([api.catalog(), app.caller.role === "workspace_admin" ? scopesWithEvents() : null]);
    app.catalog = catalog;
    app.visibleScopes = scopes;
    if (!app.catalog || !Array.isArray(app.catalog.scopes)) app.catalog = { scopes: [] };
  } catch (err) {
    setLoading(false);
    if (err instanceof ApiError && err.status === 401) return;
    app.catalog = { scopes: [] };
    app.error = err;
    render();
    return;
  }
  syncControls();
  applyAuto();
  load();
}

function boot() {
  // decorate static buttons with their icons
  for (const span of $$("[data-icon]")) span.replaceWith(icon(span.dataset.icon, 16));
  app.tz = getTzMode();
  try {
    E.auto.checked = localStorage.getItem(AUTO_KEY) === "1";
  } catch {
    E.auto.checked = false;
  }
  syncControls();
  if (getToken()) start();
  else showSignIn("");
}

boot();
