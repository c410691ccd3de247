// The audit-log page's entry point: wires the parts together and starts the page. Talks only to this app's
// HTTP API (API.md). The parts: session.js (sign-in, role), filters.js + chips.js (filter bar, state in the
// URL), results.js + detail.js + table.js (events table, expandable rows), insights.js + histogram.js
// (histogram, top users / IPs), live.js + live_tail.js + sse.js (refresh, auto-refresh, the Live tail),
// export.js, integrity.js, streams.js (log streams). The page's mutable state and the only functions that change it are in state.js
// (period.js: the quick ranges and a view's time window).

import { ApiError, api } from "./api.js";
import { clearToken, decodeClaims, describeCaller, getToken, isExpired } from "./auth.js";
import { scopesWithEvents } from "./catalog.js";
import { initDetail } from "./detail.js";
import { $$ } from "./dom.js";
import { formatTs, tzLabel } from "./format.js";
import { initExport } from "./export.js";
import { initFilters, syncControls } from "./filters.js";
import { icon } from "./icons.js";
import { redrawHistogram } from "./insights.js";
import { initIntegrity } from "./integrity.js";
import { applyAuto, initLive } from "./live.js";
import { initResults, load, render, setLoading, showSkeleton } from "./results.js";
import { applyCaller, initSession, showSignIn } from "./session.js";
import { initStreams } from "./streams.js";
import { failCatalog, markStarted, on, page, setCaller, setCatalog } from "./state.js";

/** Start the page with the stored token: the caller's role, then the catalog, then the view. */
async function start() {
  const claims = decodeClaims(getToken());
  setCaller(describeCaller(claims));
  if (!claims) {
    clearToken();
    return showSignIn("The stored token is not readable. Paste it again.");
  }
  if (isExpired(page.caller)) {
    clearToken();
    return showSignIn(`Your token expired at ${formatTs(page.caller.expiresAt, page.tz)} ${tzLabel(page.tz)}. Paste a new one.`);
  }
  applyCaller();
  markStarted();
  setLoading(true);
  showSkeleton();
  try {
    const [catalog, scopes] = await Promise.all([api.catalog(), page.caller.role === "workspace_admin" ? scopesWithEvents() : null]);
    setCatalog(catalog, scopes);
  } catch (err) {
    setLoading(false);
    if (err instanceof ApiError && err.status === 401) return;
    failCatalog(err);
    render();
    return;
  }
  syncControls();
  applyAuto();
  load();
}

function boot() {
  // a change of the filters (controls, chips, top lists, histogram, detail, back / forward) reloads the view
  on("filters", () => {
    syncControls();
    load();
  });
  // the time-zone switch redraws every time shown
  on("tz", () => {
    syncControls();
    render();
    redrawHistogram();
  });
  initSession({ onSignIn: start });
  initFilters();
  initResults();
  initDetail();
  initLive();
  initExport();
  initIntegrity();
  initStreams();

  // decorate static buttons with their icons
  for (const span of $$("[data-icon]")) span.replaceWith(icon(span.dataset.icon, 16));
  syncControls();
  if (getToken()) start();
  else showSignIn("");
}

boot();
