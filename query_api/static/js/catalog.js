// Lookups in the action catalog (GET /v1/catalog: scopes > categories > actions, each with a label).
// Pure functions of their arguments: the catalog itself is page state (state.js).

import { api } from "./api.js";

const SCOPE_LOOKBACK_DAYS = 400; // how far back a workspace admin's scopes with events are looked for
const SCOPE_TOP = 100; // the API's maximum of groups

export const scopeOf = (catalog, code) => (catalog ? catalog.scopes.find((s) => s.code === code) : null);

export function categoryOf(catalog, scope, code) {
  const s = scopeOf(catalog, scope);
  return s ? s.categories.find((c) => c.code === code) : null;
}

/** The label of an action code (looked up in the selected scope only, when one is). */
export function actionLabel(catalog, scope, code) {
  for (const s of catalog ? catalog.scopes : []) {
    if (scope && s.code !== scope) continue;
    for (const c of s.categories) for (const a of c.actions) if (a.code === code) return a.label;
  }
  return code;
}

/**
 * Actions offered by the Action select for the filters' scope / category, as [groupLabel, actions[]].
 * `visibleScopes` (a workspace admin's scopes with events, or null for all) limits them when no scope is set.
 */
export function actionGroups(catalog, filters, visibleScopes) {
  const out = [];
  const seen = new Set();
  for (const s of catalog ? catalog.scopes : []) {
    if (filters.scope && s.code !== filters.scope) continue;
    if (!filters.scope && visibleScopes && !visibleScopes.has(s.code)) continue; // admin: only scopes it can see
    for (const c of s.categories) {
      if (filters.category && c.code !== filters.category) continue;
      const acts = c.actions.filter((a) => !seen.has(a.code) && seen.add(a.code));
      if (acts.length) out.push([filters.scope ? c.label : `${s.label} · ${c.label}`, acts]);
    }
  }
  return out;
}

/** The Scope select's options: catalog scopes, for a workspace admin only those with events (labels from the catalog). */
export function scopeOptions(catalog, visibleScopes, current) {
  const all = catalog ? catalog.scopes : [];
  const seen = visibleScopes;
  if (!seen) return all;
  // a shared link may name a scope without events for this admin: keep it, marked, so the filter shown is the one applied
  return all
    .filter((s) => seen.has(s.code) || s.code === current)
    .map((s) => (seen.has(s.code) ? s : { code: s.code, label: `${s.label} (no events in your workspaces)` }));
}

/**
 * For a workspace admin, the scopes that have events in its view (GET /v1/stats group_by=scope over the last
 * SCOPE_LOOKBACK_DAYS days): organization-level scopes carry no workspace and are always empty for it. null
 * (offer every catalog scope) when the call fails or the answer may be cut at the API's group limit.
 */
export async function scopesWithEvents() {
  const end = new Date();
  const start = new Date(end.getTime() - SCOPE_LOOKBACK_DAYS * 86_400_000);
  try {
    const body = await api.stats({ interval: "day", start: start.toISOString(), end: end.toISOString(), group_by: "scope", top: SCOPE_TOP });
    const top = body && Array.isArray(body.top) ? body.top : null;
    return top && top.length < SCOPE_TOP ? new Set(top.map((t) => t.key)) : null;
  } catch {
    return null;
  }
}
