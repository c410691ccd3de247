// The filter bar: its controls shown from the filter state (syncControls) and their events turned into filter
// changes (setFilters in state.js, which updates the URL; the page then reloads). Also the time-zone switch.

import { api } from "./api.js";
import { attachAutocomplete } from "./autocomplete.js";
import { actionGroups, scopeOf, scopeOptions } from "./catalog.js";
import { renderChips } from "./chips.js";
import { $$, debounce, h, setChildren, toast } from "./dom.js";
import { fromInputValue, toInputValue, tzLabel } from "./format.js";
import { resolveWindow } from "./period.js";
import { filtersFromUrl, page, resetFilters, setAddingAction, setFilters, setTz } from "./state.js";

const el = (id) => document.getElementById(id);
const E = {
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
};

function fillSelect(select, blank, groups) {
  const opts = [h("option", { value: "" }, blank)];
  for (const g of groups) {
    if (Array.isArray(g)) opts.push(h("optgroup", { label: g[0] }, g[1].map((a) => h("option", { value: a.code }, a.label))));
    else opts.push(h("option", { value: g.code }, g.label));
  }
  setChildren(select, opts);
}

/** Show the filter state in the controls (and the chips); a field being typed in keeps its text. */
export function syncControls() {
  const f = page.filters;
  if (document.activeElement !== E.q) E.q.value = f.q;
  for (const b of $$("#quick-ranges button")) b.setAttribute("aria-pressed", String(b.dataset.range === f.range));
  const win = resolveWindow(f);
  E.start.value = toInputValue(win.start, page.tz);
  E.end.value = toInputValue(win.end, page.tz);
  E.start.removeAttribute("aria-invalid");
  E.end.removeAttribute("aria-invalid");
  el("period-tz").textContent = tzLabel(page.tz);
  if (page.catalog) {
    fillSelect(E.scope, "All scopes", scopeOptions(page.catalog, page.visibleScopes, f.scope));
    E.scope.value = f.scope;
    const s = scopeOf(page.catalog, f.scope);
    fillSelect(E.category, s ? "All categories" : "Select a scope first", s ? s.categories : []);
    E.category.disabled = !s;
    E.category.value = f.category;
    E.categoryHint.hidden = Boolean(s);
    fillSelect(E.action, "All actions", actionGroups(page.catalog, f, page.visibleScopes));
    // several actions (OR), or adding one more: a disabled placeholder option says so
    const placeholder = page.addingAction ? "Add another action…" : f.action.length > 1 ? `${f.action.length} actions selected` : "";
    if (placeholder) E.action.options[0].after(h("option", { value: "__placeholder", disabled: true }, placeholder));
    E.action.value = placeholder ? "__placeholder" : f.action.length === 1 ? f.action[0] : "";
    E.actionOr.hidden = page.addingAction || f.action.length === 0;
  }
  E.status.value = f.status;
  if (document.activeElement !== E.email) E.email.value = f.actor_email;
  if (f.workspace_id && E.wsSelect.hidden === false && ![...E.wsSelect.options].some((o) => o.value === f.workspace_id)) {
    // a shared link may name a workspace this admin cannot see: show it (the API answers 403 and the page says so)
    E.wsSelect.append(h("option", { value: f.workspace_id }, `${f.workspace_id} (no access)`));
  }
  E.wsSelect.value = f.workspace_id;
  if (document.activeElement !== E.wsText) E.wsText.value = f.workspace_id;
  for (const b of $$("#tz-switch button")) b.setAttribute("aria-pressed", String(b.dataset.tz === page.tz));
  el("th-tz").textContent = `(${tzLabel(page.tz)})`;
  renderChips();
}

/** The actors response as a list of e-mails, whatever its exact shape. */
function normaliseActors(body) {
  const list = Array.isArray(body) ? body : (body && (body.data || body.actors || body.emails)) || [];
  return list.map((x) => (typeof x === "string" ? x : x && (x.email || x.actor_email))).filter(Boolean);
}

function onPeriodInput() {
  const win = resolveWindow(page.filters);
  const start = fromInputValue(E.start.value, page.tz) || win.start;
  const end = fromInputValue(E.end.value, page.tz) || win.end;
  if (start >= end) {
    E.start.setAttribute("aria-invalid", "true");
    E.end.setAttribute("aria-invalid", "true");
    toast("The start of the period must be before its end.", "error");
    return;
  }
  setFilters({ range: "", start, end });
}

/** The listeners of the filter bar, the back / forward buttons and the time-zone switch. */
export function initFilters() {
  window.addEventListener("popstate", filtersFromUrl);

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
  E.start.addEventListener("change", onPeriodInput);
  E.end.addEventListener("change", onPeriodInput);
  E.scope.addEventListener("change", () => setFilters({ scope: E.scope.value, category: "" }));
  E.category.addEventListener("change", () => setFilters({ category: E.category.value }));
  E.action.addEventListener("change", () => {
    const v = E.action.value;
    const adding = page.addingAction;
    setAddingAction(false);
    if (!v) setFilters({ action: [] });
    else setFilters({ action: adding ? [...new Set([...page.filters.action, v])] : [v] });
  });
  E.actionOr.addEventListener("click", () => {
    // "Password failure OR OTP failure": the next choice adds to the selected actions
    setAddingAction(true);
    syncControls();
    E.action.focus();
  });
  E.action.addEventListener("blur", () => {
    if (page.addingAction) {
      setAddingAction(false);
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
    if (!E.email.value.trim() && page.filters.actor_email) setFilters({ actor_email: "" });
  });
  el("clear-all").addEventListener("click", () => {
    resetFilters();
    E.q.value = "";
    E.email.value = "";
    setFilters({});
  });

  for (const b of $$("#tz-switch button")) b.addEventListener("click", () => setTz(b.dataset.tz));
}
