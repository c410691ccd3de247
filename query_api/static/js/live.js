// Refresh, auto-refresh and Live: load the view again (a rolling period up to now), highlighting the new events,
// or keep a live tail open (live_tail.js). Auto-refresh (every 10 s) pauses while the tab is hidden, a load is
// running, the user pages deeper than the first page or reads a failed load; while Live is on its timer is off.
// Both toggles are remembered in localStorage.

import { toast } from "./dom.js";
import { initLiveTail, startLive, stopLive } from "./live_tail.js";
import { load, PAGE_SIZE } from "./results.js";
import { page, setTimer } from "./state.js";

const AUTO_REFRESH_MS = 10_000;
const AUTO_KEY = "auditlog.autorefresh";
const LIVE_KEY = "auditlog.live";

const auto = document.getElementById("auto-refresh");
const live = document.getElementById("live-toggle");

export function stopAuto() {
  clearInterval(page.timer);
  setTimer(null);
}

/** Start or stop the auto-refresh timer and the live tail as the toggles say (Live wins over auto-refresh). */
export function applyAuto() {
  stopAuto();
  auto.disabled = live.checked;
  auto.closest("label").title = live.checked ? "Off while Live is on: new events arrive as they are stored" : "Refresh every 10 seconds";
  if (live.checked) return startLive();
  stopLive();
  if (auto.checked) {
    setTimer(
      setInterval(() => {
        // keep the user's place: no auto-refresh while paging deeper or reading a failed load
        if (document.visibilityState === "visible" && !page.loading && page.rows.length <= PAGE_SIZE && !page.error) load({ markNew: true });
      }, AUTO_REFRESH_MS),
    );
  }
}

function remember(key, on) {
  try {
    localStorage.setItem(key, on ? "1" : "0");
  } catch {
    /* ignore */
  }
}

function recalled(key) {
  try {
    return localStorage.getItem(key) === "1";
  } catch {
    return false;
  }
}

/** The toggles as last left (off by default), and the listeners of Refresh and the toggles. */
export function initLive() {
  auto.checked = recalled(AUTO_KEY);
  live.checked = recalled(LIVE_KEY);
  auto.disabled = live.checked;
  initLiveTail();
  document.getElementById("refresh").addEventListener("click", () => load({ markNew: true }));
  auto.addEventListener("change", () => {
    remember(AUTO_KEY, auto.checked);
    applyAuto();
    toast(auto.checked ? "Auto-refresh every 10 seconds is on" : "Auto-refresh is off");
  });
  live.addEventListener("change", () => {
    remember(LIVE_KEY, live.checked);
    applyAuto();
    // the table catches up with what was stored since it was loaded; the stream brings what comes next
    if (live.checked && page.started && page.pages <= 1 && !page.loading) load({ markNew: true });
    toast(live.checked ? "Live: new events appear at the top as they are stored" : "Live is off");
  });
}
