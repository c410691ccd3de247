// The results table: loading the view (GET /v1/events, cursor paging), its rows, and the empty / error states.

import { ApiError, api, missingPermission } from "./api.js";
import { detailFor } from "./detail.js";
import { h, setChildren, toast } from "./dom.js";
import { icon } from "./icons.js";
import { loadStats } from "./insights.js";
import { renderMeta } from "./results_meta.js";
import { beginLoad, failLoad, hasFilters, isCurrentLoad, markLoading, page, receiveEvents } from "./state.js";
import { eventRow, skeletonRows } from "./table.js";

export const PAGE_SIZE = 50;

const el = (id) => document.getElementById(id);
const E = {
  main: el("main"),
  rows: el("rows"),
  state: el("state"),
  progress: el("progress"),
  refresh: el("refresh"),
};

export function setLoading(on) {
  markLoading(on);
  E.progress.hidden = !on;
  E.main.setAttribute("aria-busy", String(on));
  E.refresh.disabled = on;
  E.refresh.classList.toggle("is-spinning", on);
}

/** Placeholder rows until the first page arrives. */
export const showSkeleton = () => setChildren(E.rows, skeletonRows());

/**
 * Load the first page (or the next one with append). A rolling period is re-resolved to "now", so Refresh
 * brings new events; `markNew` highlights rows that were not on screen before.
 */
export async function load({ append = false, markNew = false } = {}) {
  if (!page.started) return;
  const { signal, seq } = beginLoad({ append, markNew });
  if (!append) loadStats(page.params);
  setLoading(true);
  if (!page.rows.length && !append) showSkeleton();
  E.state.hidden = true;
  try {
    const body = await api.events({ ...page.params, limit: PAGE_SIZE, cursor: append ? page.cursor : undefined }, { signal });
    if (!isCurrentLoad(seq)) return;
    receiveEvents(body, { append, markNew });
    if (!append && markNew && page.newIds.size) toast(`${page.newIds.size} new event${page.newIds.size === 1 ? "" : "s"}`);
  } catch (err) {
    if (err && err.name === "AbortError") return;
    if (!isCurrentLoad(seq)) return;
    failLoad(err, { append });
  } finally {
    if (isCurrentLoad(seq)) setLoading(false);
  }
  render();
  if (append && !page.error) toast(`Loaded ${page.rows.length} events`);
}

export function render() {
  // keep keyboard focus on the same event across re-renders (refresh, auto-refresh, time-zone switch)
  const focused = document.activeElement && document.activeElement.closest ? document.activeElement.closest("tr.event-row") : null;
  const focusId = focused && E.rows.contains(focused) ? focused.dataset.id : null;
  const frag = [];
  for (const ev of page.rows) {
    const expanded = page.expanded.has(ev.event_id);
    frag.push(eventRow(ev, { tz: page.tz, expanded, isNew: page.newIds.has(ev.event_id) }));
    if (expanded) frag.push(detailFor(ev));
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
  if (page.error) {
    E.state.hidden = false;
    setChildren(E.state, errorState(page.error));
    return;
  }
  if (!page.rows.length && !page.loading) {
    E.state.hidden = false;
    const filtered = hasFilters(page.filters);
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
      /permission/i.test(body) || !page.caller || page.caller.canRead
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

/** "Load more" pages the same view. */
export function initResults() {
  el("load-more").addEventListener("click", () => load({ append: true }));
}
