// "Streams" (org owners with audit:stream): the organization's log streams (STREAMS.md). The list with state, lag
// and last error; create one per destination type; test, pause / resume, delete. Every value from the API is set
// as text (h() / textContent), and secrets are only ever sent, never shown (the API masks them).

import { ApiError, api } from "./api.js";
import { actionGroups, scopeOf } from "./catalog.js";
import { h, setChildren, toast } from "./dom.js";
import { formatCount, formatTs, fromInputValue, toInputValue, toRfc3339, tzLabel } from "./format.js";
import { on, page } from "./state.js";

/** Each destination type's fields: [name, label, kind] with kind "secret", "optional" or "" (required). */
const TYPES = {
  webhook: { label: "Webhook (NDJSON, signed)", fields: [["url", "URL", ""], ["secret", "Signing secret", "secret"]] },
  splunk_hec: { label: "Splunk HEC", fields: [["url", "HEC URL", ""], ["token", "HEC token", "secret"], ["index", "Index", "optional"], ["sourcetype", "Source type", "optional"]] },
  datadog: { label: "Datadog", fields: [["url", "Intake URL", ""], ["api_key", "API key", "secret"], ["service", "Service", "optional"]] },
  s3: { label: "S3 / S3-compatible", fields: [["bucket", "Bucket", ""], ["prefix", "Prefix", "optional"], ["region", "Region", ""], ["access_key_id", "Access key id", "secret"], ["secret_access_key", "Secret access key", "secret"], ["endpoint", "Endpoint URL", "optional"]] },
};

/** A stream's filter keys (STREAMS.md), in the order shown; only `action` takes a list. */
const FILTER_KEYS = ["scope", "category", "action", "status", "workspace_id"];
const BACKFILL_DEFAULT_MS = 24 * 3600e3;

const el = (id) => document.getElementById(id);
const E = {
  btn: el("streams-btn"),
  card: el("streams"),
  list: el("streams-list"),
  status: el("streams-status"),
  form: el("stream-form"),
  name: el("stream-name"),
  type: el("stream-type"),
  fields: el("stream-fields"),
  scope: el("stream-scope"),
  category: el("stream-category"),
  action: el("stream-action"),
  actionList: el("stream-action-list"),
  statusFilter: el("stream-status"),
  workspace: el("stream-workspace"),
  backfill: el("stream-start-backfill"),
  since: el("stream-since"),
  sinceTz: el("stream-since-tz"),
};

function say(text, kind = "") {
  E.status.textContent = text;
  E.status.dataset.kind = kind;
}

function lag(s) {
  if (s.state === "paused") return "paused";
  if (!s.lag_seconds) return "caught up";
  return s.lag_seconds < 120 ? `${Math.round(s.lag_seconds)} s behind` : `${Math.round(s.lag_seconds / 60)} min behind`;
}

function lastError(s) {
  const e = s.last_error;
  if (!e) return "—";
  return `${formatTs(e.at, page.tz)}: ${e.http_status ? `HTTP ${e.http_status}: ` : ""}${e.message}`;
}

function target(s) {
  const d = s.destination || {};
  return `${(TYPES[d.type] || { label: d.type }).label} · ${d.url || d.bucket || ""}`;
}

/** "status=FAILED · action=vm.delete,vm.stop", or "" when the stream takes all events. */
function filtersText(f) {
  const set = FILTER_KEYS.filter((k) => [].concat(f?.[k] ?? []).some(Boolean));
  return set.map((k) => `${k}=${[].concat(f[k]).join(",")}`).join(" · ");
}

function row(s) {
  const paused = s.state === "paused";
  const filters = filtersText(s.filters);
  return h("tr", { dataset: { streamId: s.id } },
    h("td.stream-name", s.name),
    h("td", target(s)),
    h("td.stream-filters", { class: filters ? null : "is-all" }, filters || "all events"),
    h("td", h("span.stream-state", { class: `is-${s.state}`, text: s.state })),
    h("td", `${formatCount(s.delivered)} · ${lag(s)}`),
    h("td.stream-error", lastError(s)),
    h("td.stream-actions",
      h("button.btn.btn-small", { type: "button", dataset: { act: "test" }, onclick: () => act("test", s) }, "Test"),
      h("button.btn.btn-small", { type: "button", dataset: { act: paused ? "resume" : "pause" }, onclick: () => act(paused ? "resume" : "pause", s) }, paused ? "Resume" : "Pause"),
      h("button.btn.btn-small.btn-danger", { type: "button", dataset: { act: "delete" }, onclick: () => act("delete", s) }, "Delete")));
}

/** Load and show the list. */
export async function loadStreams() {
  try {
    const { data } = await api.streams.list();
    if (!data.length) return setChildren(E.list, h("p.streams-empty", "No streams yet. Create one below."));
    setChildren(E.list, h("table.streams-table",
      h("thead", h("tr", ["Name", "Destination", "Filters", "State", "Delivered · lag", "Last error", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", data.map(row))));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    setChildren(E.list, h("p.streams-empty", `The streams could not be loaded: ${err.message}`));
  }
}

async function act(what, s) {
  if (what === "delete" && !window.confirm(`Delete the stream "${s.name}"? Delivery stops; nothing already sent is recalled.`)) return;
  try {
    if (what === "test") {
      const r = await api.streams.test(s.id);
      say(r.delivered ? `Test event delivered to "${s.name}" (HTTP ${r.http_status ?? "ok"}).` : `Test event not delivered to "${s.name}": ${r.http_status ? `HTTP ${r.http_status}: ` : ""}${r.message}`, r.delivered ? "ok" : "error");
    } else if (what === "delete") {
      await api.streams.remove(s.id);
      say(`Stream "${s.name}" deleted.`, "ok");
    } else {
      await api.streams.update(s.id, { state: what === "pause" ? "paused" : "active" });
      say(`Stream "${s.name}" ${what === "pause" ? "paused" : "resumed"}.`, "ok");
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    say(`${what} failed: ${err.message}`, "error");
    toast(`Stream ${what} failed: ${err.message}`, "error");
  }
  await loadStreams();
}

function renderFields() {
  const spec = TYPES[E.type.value];
  setChildren(E.fields, spec.fields.map(([name, label, kind]) => {
    const id = `stream-f-${name}`;
    return h("div.field",
      h("label", { for: id }, kind === "optional" ? `${label} (optional)` : label),
      h("input", { id, name, type: kind === "secret" ? "password" : "text", autocomplete: "off", spellcheck: "false", required: kind === "" || kind === "secret" }));
  }));
}

/** Options of catalog entries, keeping the chosen one when it is still offered. */
function fillSelect(select, blank, items) {
  const chosen = select.value;
  setChildren(select, h("option", { value: "" }, blank), items.map((i) => h("option", { value: i.code }, i.label)));
  select.value = items.some((i) => i.code === chosen) ? chosen : "";
}

/** The scope and category selects from the catalog (a category within the chosen scope). */
function renderChoices() {
  fillSelect(E.scope, "All scopes", page.catalog ? page.catalog.scopes : []);
  const s = scopeOf(page.catalog, E.scope.value);
  fillSelect(E.category, s ? "All categories" : "Select a scope first", s ? s.categories : []);
  E.category.disabled = !s;
  renderActions();
}

/** The actions datalist for the chosen scope / category; each suggestion keeps the codes already typed before it. */
function renderActions() {
  const typed = E.action.value;
  const head = typed.slice(0, typed.lastIndexOf(",") + 1);
  const prefix = head ? `${head.trimEnd()} ` : "";
  const groups = actionGroups(page.catalog, { scope: E.scope.value, category: E.category.value }, null);
  setChildren(E.actionList, groups.flatMap(([group, acts]) => acts.map((a) => h("option", { value: `${prefix}${a.code}` }, `${a.label} · ${group}`))));
}

const actionCodes = () => [...new Set(E.action.value.split(/[\s,]+/).filter(Boolean))];

/** The filters the user chose, and only those. */
function chosenFilters() {
  const f = {};
  for (const [key, input] of [["scope", E.scope], ["category", E.category], ["status", E.statusFilter], ["workspace_id", E.workspace]]) {
    if (input.value.trim()) f[key] = input.value.trim();
  }
  if (actionCodes().length) f.action = actionCodes();
  return f;
}

/** "Backfill from" enables its date-time input (24 hours ago by default, never later than now). */
function syncStart() {
  E.since.disabled = !E.backfill.checked;
  E.since.required = E.backfill.checked;
  E.since.max = toInputValue(new Date(), page.tz);
  if (E.backfill.checked && !E.since.value) E.since.value = toInputValue(new Date(Date.now() - BACKFILL_DEFAULT_MS), page.tz);
  E.since.dataset.tz = page.tz; // the mode the input's value is written in
  E.sinceTz.textContent = tzLabel(page.tz);
}

/** The time-zone switch: the backfill input shows the same instant in the new mode. */
function retimeSince() {
  const at = fromInputValue(E.since.value, E.since.dataset.tz || page.tz);
  if (at) E.since.value = toInputValue(at, page.tz);
  syncStart();
}

function createdText(s, since) {
  const what = filtersText(s.filters) ? `the events with ${filtersText(s.filters)}` : "all events";
  const from = since ? `from ${formatTs(since, page.tz)} ${tzLabel(page.tz, since)} on (first what was already stored)` : "from now on";
  return `Stream "${s.name}" created: it delivers ${what} stored ${from}.`;
}

function resetForm() {
  E.form.reset();
  renderFields();
  renderChoices();
  syncStart();
}

async function create(e) {
  e.preventDefault();
  const destination = { type: E.type.value };
  for (const input of E.fields.querySelectorAll("input")) if (input.value.trim()) destination[input.name] = input.value.trim();
  const body = { name: E.name.value, destination };
  const filters = chosenFilters();
  if (Object.keys(filters).length) body.filters = filters;
  const since = E.backfill.checked ? fromInputValue(E.since.value, page.tz) : null;
  if (E.backfill.checked && !since) return say("Not created: choose the date and time to backfill from.", "error");
  if (since) body.start = toRfc3339(since);
  try {
    const s = await api.streams.create(body);
    say(createdText(s, since), "ok");
    resetForm();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    say(`Not created: ${err.message}${err.field ? ` (${err.field})` : ""}`, "error");
    return;
  }
  await loadStreams();
}

function toggle() {
  const open = E.card.hidden;
  E.card.hidden = !open;
  E.btn.setAttribute("aria-expanded", String(open));
  if (!open) return;
  renderChoices();
  syncStart();
  loadStreams();
}

export function initStreams() {
  setChildren(E.type, Object.entries(TYPES).map(([value, t]) => h("option", { value }, t.label)));
  renderFields();
  E.type.addEventListener("change", renderFields);
  E.scope.addEventListener("change", renderChoices);
  E.category.addEventListener("change", renderActions);
  E.action.addEventListener("input", renderActions);
  for (const radio of E.form.querySelectorAll("input[name=start]")) radio.addEventListener("change", syncStart);
  on("tz", retimeSince);
  E.form.addEventListener("submit", create);
  E.btn.addEventListener("click", toggle);
  el("streams-refresh").addEventListener("click", loadStreams);
}
