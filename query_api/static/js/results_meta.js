// The counts around the results table: "Showing n of N events" above it, "Load more" / end of results below
// (or, when Live dropped the oldest rows, how to see them).
// Redrawn by the table (rows) and by the insights (the period's total comes with the histogram).

import { formatCount } from "./format.js";
import { page } from "./state.js";

const el = (id) => document.getElementById(id);
const resultsMeta = el("results-meta");
const foot = el("results-foot");
const footMeta = el("foot-meta");
const loadMore = el("load-more");

export function renderMeta() {
  const n = page.rows.length;
  if (page.error || (!n && !page.loading)) {
    resultsMeta.textContent = "";
  } else if (n) {
    const of = page.total !== null && page.total >= n ? ` of ${formatCount(page.total)}` : "";
    resultsMeta.textContent = `Showing ${formatCount(n)}${of} event${n === 1 && !of ? "" : "s"}, newest first`;
  }
  foot.hidden = !n;
  loadMore.hidden = !page.cursor;
  footMeta.textContent = page.cursor
    ? ""
    : page.trimmed
      ? `Live keeps the newest ${formatCount(n)} events here: switch Live off and Refresh to page through older ones.`
      : n
        ? "End of results for this period."
        : "";
}
