// The event-count histogram over the period, from GET /v1/stats
// ({interval, total, success, failed, buckets: [{start, total, success, failed}]}, dense, UTC-aligned).

import { h, setChildren } from "./dom.js";
import { formatCount, formatTs } from "./format.js";

const HOUR = 3600e3;
const DAY = 24 * HOUR;

/** hour buckets up to 8 days, day buckets beyond (the API offers hour|day). */
export function intervalFor(win) {
  return win.end - win.start <= 8 * DAY ? "hour" : "day";
}

/** [{t, end, total, failed}] from the stats response. */
export function normaliseStats(body) {
  const step = body && body.interval === "day" ? DAY : HOUR;
  const list = (body && Array.isArray(body.buckets) && body.buckets) || [];
  return list
    .map((b) => {
      const t = new Date(b.start);
      return { t, end: new Date(t.getTime() + step), total: Number(b.total) || 0, failed: Number(b.failed) || 0 };
    })
    .filter((b) => !Number.isNaN(b.t.getTime()));
}

/**
 * Draw stacked bars (failed in red) into `root`; `onPick(start, end)` narrows the period to a clicked bucket.
 * Returns the total count.
 */
export function renderHistogram(root, buckets, { tz, interval, onPick }) {
  const max = Math.max(1, ...buckets.map((b) => b.total));
  const total = buckets.reduce((s, b) => s + b.total, 0);
  const failed = buckets.reduce((s, b) => s + b.failed, 0);
  const label = (b) => (interval === "day" ? formatTs(b.t, tz).slice(0, 10) : formatTs(b.t, tz).slice(0, 16));
  const pct = (n) => `${n ? Math.max(2, (n / max) * 100) : 0}%`;
  const bars = h(
    "div.hist-bars",
    {
      class: buckets.length > 60 ? "dense" : undefined,
      role: "img",
      "aria-label": `${formatCount(total)} events (${formatCount(failed)} failed) in ${buckets.length} ${interval} buckets; busiest ${interval}: ${formatCount(max)}`,
    },
    buckets.map((b) =>
      h(
        "div.hist-bar",
        {
          title: `${label(b)} · ${formatCount(b.total)} event${b.total === 1 ? "" : "s"}${b.failed ? ` (${formatCount(b.failed)} failed)` : ""}`,
          onclick: () => onPick && b.total && onPick(b.t, b.end),
          class: b.total ? undefined : "is-zero",
        },
        h("span.hist-stack", { style: { height: pct(b.total) } }, b.failed ? h("span.hist-failed", { style: { height: `${(b.failed / b.total) * 100}%` } }) : null),
      ),
    ),
  );
  const axis = h(
    "div.hist-axis",
    buckets.length ? h("span", label(buckets[0])) : null,
    buckets.length > 2 ? h("span", label(buckets[Math.floor(buckets.length / 2)])) : null,
    buckets.length > 1 ? h("span", label(buckets[buckets.length - 1])) : null,
  );
  setChildren(root, h("div.hist-grid", h("div.hist-max", formatCount(max)), bars), axis);
  return { total, failed };
}
