// The chips under the filter bar: one per active filter, with its page label; × removes that filter.

import { actionLabel, categoryOf, scopeOf } from "./catalog.js";
import { h, setChildren } from "./dom.js";
import { formatTs } from "./format.js";
import { icon } from "./icons.js";
import { DEFAULT_RANGE, RANGES, resolveWindow } from "./period.js";
import { LABELS, page, setFilters, TEXT_FILTERS } from "./state.js";

const chipsRow = document.getElementById("chips-row");
const chipsList = document.getElementById("chips");

/** [label, value text, the filter patch that removes it] of every active filter, in chip order. */
function chipList() {
  const f = page.filters;
  const chips = [];
  if (f.range !== DEFAULT_RANGE) {
    const text = f.range
      ? RANGES[f.range].label
      : (() => {
          const w = resolveWindow(f);
          return `${formatTs(w.start, page.tz).slice(0, 16)} → ${formatTs(w.end, page.tz).slice(0, 16)}`;
        })();
    chips.push([LABELS.period, text, { range: DEFAULT_RANGE, start: null, end: null }]);
  }
  if (f.q) chips.push([LABELS.search, f.q, { q: "" }]);
  if (f.scope) chips.push([LABELS.scope, (scopeOf(page.catalog, f.scope) || {}).label || f.scope, { scope: "", category: "" }]);
  if (f.category) chips.push([LABELS.category, (categoryOf(page.catalog, f.scope, f.category) || {}).label || f.category, { category: "" }]);
  for (const a of f.action) chips.push([LABELS.action, actionLabel(page.catalog, f.scope, a), { action: f.action.filter((x) => x !== a) }]);
  if (f.status) chips.push([LABELS.status, f.status, { status: "" }]);
  for (const [k, label] of TEXT_FILTERS) if (f[k]) chips.push([label, f[k], { [k]: "" }]);
  return chips;
}

export function renderChips() {
  const chips = chipList();
  chipsRow.hidden = chips.length === 0;
  setChildren(
    chipsList,
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
