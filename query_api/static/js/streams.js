// "Streams" (org owners with audit:stream): the organization's log streams (STREAMS.md). The list with state, lag
// and last error; create one per destination type; test, pause / resume, delete. Every value from the API is set
// as text (h() / textContent), and secrets are only ever sent, never shown (the API masks them).

import { ApiError, api } from "./api.js";
import { h, setChildren, toast } from "./dom.js";
import { formatCount, formatTs } from "./format.js";
import { page } from "./state.js";

/** Each destination type's fields: [name, label, kind] with kind "secret", "optional" or "" (required). */
const TYPES = {
  webhook: { label: "Webhook (NDJSON, signed)", fields: [["url", "URL", ""], ["secret", "Signing secret", "secret"]] },
  splunk_hec: { label: "Splunk HEC", fields: [["url", "HEC URL", ""], ["token", "HEC token", "secret"], ["index", "Index", "optional"], ["sourcetype", "Source type", "optional"]] },
  datadog: { label: "Datadog", fields: [["url", "Intake URL", ""], ["api_key", "API key", "secret"], ["service", "Service", "optional"]] },
  s3: { label: "S3 / S3-compatible", fields: [["bucket", "Bucket", ""], ["prefix", "Prefix", "optional"], ["region", "Region", ""], ["access_key_id", "Access key id", "secret"], ["secret_access_key", "Secret access key", "secret"], ["endpoint", "Endpoint URL", "optional"]] },
};

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

function row(s) {
  const paused = s.state === "paused";
  return h("tr", { dataset: { streamId: s.id } },
    h("td.stream-name", s.name),
    h("td", target(s)),
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
      h("thead", h("tr", ["Name", "Destination", "State", "Delivered · lag", "Last error", ""].map((t) => h("th", { scope: "col" }, t)))),
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

async function create(e) {
  e.preventDefault();
  const destination = { type: E.type.value };
  for (const input of E.fields.querySelectorAll("input")) if (input.value.trim()) destination[input.name] = input.value.trim();
  try {
    const s = await api.streams.create({ name: E.name.value, destination });
    say(`Stream "${s.name}" created: it delivers events stored from now on.`, "ok");
    E.form.reset();
    renderFields();
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
  if (open) loadStreams();
}

export function initStreams() {
  setChildren(E.type, Object.entries(TYPES).map(([value, t]) => h("option", { value }, t.label)));
  renderFields();
  E.type.addEventListener("change", renderFields);
  E.form.addEventListener("submit", create);
  E.btn.addEventListener("click", toggle);
  el("streams-refresh").addEventListener("click", loadStreams);
}
