// The insights card: the event-count histogram of the view and its most frequent users and IP addresses
// (GET /v1/stats). A bar narrows the period to its bucket; a top entry filters on it.

import { ApiError, api } from "./api.js";
import { h, setChildren } from "./dom.js";
import { formatCount } from "./format.js";
import { intervalFor, normaliseStats, renderHistogram } from "./histogram.js";
import { renderMeta } from "./results_meta.js";
import { clearStats, page, setFilters, setStats, setTotal } from "./state.js";

const TOP_N = 5;

const el = (id) => document.getElementById(id);
const E = {
  hist: el("histogram"),
  histMeta: el("hist-meta"),
  histCard: document.querySelector(".hist-card"),
  topIps: el("top-ips"),
  topUsers: el("top-users"),
};

/**
 * Histogram and top lists of the view `params`. A reply is dropped once another view is loading (new
 * `page.params`), but not because of "Load more", which pages the same view.
 */
export async function loadStats(params) {
  const interval = intervalFor(page.win);
  E.histCard.classList.add("is-loading");
  try {
    // one call draws the histogram and the top IPs; a second (coarse buckets) gives the top users
    const [body, users] = await Promise.all([
      api.stats({ ...params, interval, group_by: "ip", top: TOP_N }),
      api.stats({ ...params, interval: "day", group_by: "actor_email", top: TOP_N }).catch(() => null),
    ]);
    if (params !== page.params) return;
    setStats({ buckets: normaliseStats(body), interval: body.interval || interval });
    redrawHistogram();
    drawTops(E.topIps, body.top, "ip");
    drawTops(E.topUsers, users ? users.top : [], "actor_email");
  } catch (err) {
    if (params !== page.params) return;
    clearStats();
    E.histMeta.textContent = "";
    if (err instanceof ApiError && err.status === 401) return;
    setChildren(E.hist, h("p.hist-error", `No histogram for this view: ${err.message}`));
    drawTops(E.topIps, [], "ip");
    drawTops(E.topUsers, [], "actor_email");
  } finally {
    if (params === page.params) E.histCard.classList.remove("is-loading");
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
                "aria-pressed": String(page.filters[key] === t.key),
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

/** Draw the last stats received (again: the time-zone switch relabels the axis); nothing before the first. */
export function redrawHistogram() {
  if (!page.lastStats) return;
  const { buckets, interval } = page.lastStats;
  const { total, failed } = renderHistogram(E.hist, buckets, {
    tz: page.tz,
    interval,
    onPick: (start, end) => setFilters({ range: "", start, end: end > new Date() ? new Date() : end }),
  });
  setTotal(total);
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
