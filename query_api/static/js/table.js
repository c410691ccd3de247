// Rows of the results table and the expandable detail panel.

import { h } from "./dom.js";
import { formatTs, shortUserAgent } from "./format.js";
import { icon } from "./icons.js";
import { changes, jsonView, short } from "./json_view.js";

export const COLUMNS = [
  "Timestamp",
  "User",
  "Scope",
  "Category",
  "Action",
  "Target",
  "Status",
  "Description",
  "IP address",
  "User agent",
];
export const COLSPAN = COLUMNS.length + 1;

const dash = () => h("span.muted", "—");

function cell(label, ...children) {
  return h("td", { "data-label": label }, ...children);
}

function userCell(ev) {
  const a = ev.actor || {};
  const main = a.email || a.id || "";
  const sub = a.email ? a.id : a.type && a.type !== "user" ? `${a.type} account` : "";
  return cell(
    "User",
    h("div.cell-main.clip", { title: a.id ? `${main}\nUser ID: ${a.id}` : undefined }, main || dash()),
    sub ? h("div.cell-sub.mono.clip", { title: sub }, sub) : null,
  );
}

function targetCell(ev) {
  const t = ev.target || {};
  if (!t.name && !t.id) return cell("Target", dash());
  const sub = [t.type, t.name && t.id ? t.id : null].filter(Boolean).join(" · ");
  return cell(
    "Target",
    h("div.cell-main.clip.clip-sm", { title: [t.name, t.id && `ID: ${t.id}`].filter(Boolean).join("\n") }, t.name || t.id),
    sub ? h("div.cell-sub.mono.clip.clip-sm", { title: sub }, sub) : null,
  );
}

export function statusBadge(status) {
  const ok = status === "SUCCESS";
  return h("span.badge", { class: ok ? "badge-success" : "badge-failed" }, h("span.dot", { "aria-hidden": "true" }), status || "?");
}

/** The summary <tr> of one event. `isNew` flashes rows that appeared on refresh. */
export function eventRow(ev, { tz, expanded, isNew }) {
  const ua = ev.actor && ev.actor.user_agent;
  const tr = h(
    "tr.event-row",
    {
      tabindex: "0",
      "aria-expanded": expanded ? "true" : "false",
      "aria-label": `${ev.action_label || ev.action} by ${(ev.actor && (ev.actor.email || ev.actor.id)) || "unknown"} at ${formatTs(ev.occurred_at, tz)}`,
      dataset: { id: ev.event_id },
      class: [isNew ? "is-new" : "", ev.status === "FAILED" ? "is-failed" : ""].filter(Boolean).join(" ") || undefined,
    },
    h("td.expander", { "aria-hidden": "true" }, icon("chevron", 14)),
    cell("Timestamp", h("time.mono.nowrap", { datetime: ev.occurred_at, title: ev.occurred_at }, formatTs(ev.occurred_at, tz))),
    userCell(ev),
    cell("Scope", ev.scope_label || ev.scope),
    cell("Category", ev.category_label || ev.category),
    cell("Action", h("span.action", { title: ev.action }, ev.action_label || ev.action)),
    targetCell(ev),
    cell("Status", statusBadge(ev.status)),
    cell("Description", h("div.desc", { title: ev.description || undefined }, ev.description || dash())),
    cell("IP address", ev.actor && ev.actor.ip ? h("span.mono.nowrap", ev.actor.ip) : dash()),
    cell("User agent", ua ? h("span.ua", { title: ua }, shortUserAgent(ua)) : dash()),
  );
  return tr;
}

function fact(label, value, action) {
  return [
    h("dt", label),
    h("dd", value === null || value === undefined || value === "" ? dash() : h("span.mono", String(value)), action || null),
  ];
}

/**
 * The detail <tr> under an expanded row. `full` is the event from GET /v1/events/{id} (or null while loading,
 * or an Error). `onFilter(key, value)` adds a filter; `onCopy(text)` copies.
 */
export function detailRow(ev, full, { tz, onFilter, onCopy }) {
  const td = h("td.detail-cell", { colspan: String(COLSPAN) });
  const tr = h("tr.detail-row", { dataset: { detailFor: ev.event_id } }, td);
  if (!full) {
    td.append(h("div.detail-loading", h("span.spinner", { "aria-hidden": "true" }), "Loading event detail…"));
    return tr;
  }
  if (full instanceof Error) {
    td.append(h("div.detail-error", { role: "alert" }, icon("alert"), ` Could not load the detail: ${full.message}`));
    return tr;
  }
  const a = full.actor || {};
  const t = full.target || {};
  const filterBtn = (key, value, label) =>
    value
      ? h("button.link-btn", { type: "button", onclick: () => onFilter(key, value), title: `Show only events with this ${label}` }, icon("filter", 12), "Filter")
      : null;
  const text = JSON.stringify(full, null, 2);
  const diff = changes(full.detail);
  td.append(
    h(
      "div.detail",
      h(
        "div.detail-facts",
        h("h3", "Event"),
        h(
          "dl",
          fact("Event ID", full.event_id),
          fact("Occurred", `${formatTs(full.occurred_at, tz)} (${full.occurred_at})`),
          fact("Received", full.received_at ? formatTs(full.received_at, tz) : null),
          fact("Organization", full.org_id),
          fact("Workspace", full.workspace_id, filterBtn("workspace_id", full.workspace_id, "workspace")),
          fact("Action code", `${full.scope} / ${full.category} / ${full.action}`),
          fact("User", a.email || a.id, filterBtn(a.email ? "actor_email" : "actor_id", a.email || a.id, "user")),
          fact("User ID", a.id),
          fact("Actor type", a.type),
          fact("IP address", a.ip, filterBtn("ip", a.ip, "IP address")),
          fact("User agent", a.user_agent),
          fact("Target", [t.type, t.name, t.id].filter(Boolean).join(" · "), filterBtn("target", t.id || t.name, "target")),
          fact("Source", full.source),
          fact("Request ID", full.request_id),
          fact("Published by", full.publisher && full.publisher.via ? [full.publisher.via, full.publisher.id].filter(Boolean).join(" · ") : null),
        ),
        diff.length
          ? h(
              "div.changes",
              h("h3", "Changes"),
              h(
                "table.changes-table",
                h("thead", h("tr", h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Before"), h("th", { scope: "col" }, "After"))),
                h(
                  "tbody",
                  diff.map((d) =>
                    h("tr", h("td.mono", d.key), h("td.mono.before", short(d.before)), h("td.mono.after", short(d.after))),
                  ),
                ),
              ),
            )
          : null,
      ),
      h(
        "div.detail-json",
        h(
          "div.json-head",
          h("h3", "JSON"),
          h("div.json-legend", h("span.legend-before", "before"), h("span.legend-after", "after")),
          h("button.btn.btn-sm.copy-btn", { type: "button", onclick: (e) => onCopy(text, e.currentTarget) }, icon("copy", 14), "Copy JSON"),
        ),
        jsonView(full),
      ),
    ),
  );
  return tr;
}

/** Skeleton rows shown while the first page loads. */
export function skeletonRows(n = 8) {
  return Array.from({ length: n }, () =>
    h("tr.skeleton", { "aria-hidden": "true" }, Array.from({ length: COLSPAN }, (_, i) => h("td", i ? h("span.bone") : null))),
  );
}
