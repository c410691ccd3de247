// The event-count histogram over the period, from GET /v1/stats.

import { h, setChildren } from "./dom.js";
import { formatCount, formatTs } from "./format.js";

const HOUR = 3600e3;
const DAY = 24 * HOUR;

/** hour buckets up to 8 days, day buckets beyond (the API offers hour|day). */
export function intervalFor(win) {
  return win.end - win.start <= 8 * DAY ? "hour" : "day";
}

const TIME_KEYS = ["start", "t", "ts", "time", "bucket", "bucket_start", "at"];
const COUNT_KEYS = ["count", "n", "events", "value", "total"];

/** [{t: Date, count}] from the stats response, tolerant of its exact field names. */
export function normaliseStats(body) {
  const list = Array.isArray(body) ? body : (body && (body.buckets || body.data || body.series)) || [];
  const out = [];
  for (const item of list) {
    let t;
    let c;
    if (Array.isArray(item)) [t, c] = item;
    else if (item && typeof item === "object") {
      t = item[TIME_KEYS.find((k) => k in item)];
      c = item[COUNT_KEYS.find((k) => k in item)];
    }
    const d = new Date(t);
    if (!Number.isNaN(d.getTime()) && Number.isFinite(Number(c))) out.push({ t: d, count: Number(c) });
  }
  return out;
}

/** Buckets covering the whole window (UTC-aligned), zero where the API returned nothing. */
export function fillBuckets(points, win, interval) {
  const step = interval === "day" ? DAY : HOUR;
  const first = Math.floor(win.start.getTime() / step) * step;
  const byT = new Map(points.map((p) => [Math.floor(p.t.getTime() / step) * step, p.count]));
  const out = [];
  for (let t = first; t <= win.end.getTime() && out.length < 2000; t += step) {
    out.push({ t: new Date(t), end: new Date(t + step), count: byT.get(t) || 0 });
  }
  return out;
}

/**
 * Draw the bars into `root`. `onPick(start, end)` narrows the period to a clicked bucket.
 * Returns the total count.
 */
export function renderHistogram(root, buckets, { tz, interval, onPick }) {
  const max = Math.max(1, ...buckets.map((b) => b.count));
  const total = buckets.reduce((s, b) => s + b.count, 0);
  const label = (b) => (interval === "day" ? formatTs(b.t, tz).slice(0, 10) : formatTs(b.t, tz).slice(0, 16));
  const bars = h(
    "div.hist-bars",
    {
      class: buckets.length > 60 ? "dense" : undefined, role: "img", "aria-label": `${formatCount(total)} events, ${buckets.length} ${interval} buckets, peak ${formatCount(max)}` },
    buckets.map((b) =>
      h(
        "div.hist-bar",
        {
          title: `${label(b)} · ${formatCount(b.count)} event${b.count === 1 ? "" : "s"}`,
          onclick: () => onPick && b.count && onPick(b.t, b.end),
          class: b.count ? undefined : "is-zero",
        },
        h("span", { style: `height:${b.count ? Math.max(3, (b.count / max) * 100) : 0}%` }),
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
  return total;
}
